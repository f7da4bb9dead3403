"""The pure SBI pieces: crops, flip, forehead reorder, masks, blending and what each transform does to pixels."""
import os
import subprocess
import sys
from collections import Counter
from itertools import product

import numpy as np
import pytest

from src.data import sbi
from src.data.synthetic import draw_face_sample
from src.faces import geometry

from draws import assert_binomial, assert_pair_patterns, assert_uncorrelated


@pytest.fixture(scope="module")
def face():
    img, landmark, box = draw_face_sample(np.random.default_rng(0), (320, 256), 110)
    return img, geometry.reorder_forehead(landmark.astype(np.int32)), box.astype(np.float32)


def test_forehead_reorder_makes_a_left_to_right_arc(face):
    _, lm, _ = face
    assert np.all(np.diff(lm[68:, 0]) > 0)
    assert lm[68:, 1].max() < lm[17:27, 1].min()  # above the brows
    assert np.array_equal(geometry.reorder_forehead(lm[:68]), lm[:68])  # 68 points: nothing to reorder


def test_mirror_is_an_involution_that_swaps_sides():
    assert sorted(geometry.MIRROR) == list(range(81))
    assert np.array_equal(geometry.MIRROR[geometry.MIRROR], np.arange(81))
    pairs = {0: 16, 17: 26, 27: 27, 31: 35, 36: 45, 39: 42, 37: 44, 40: 47, 48: 54, 51: 51, 57: 57, 60: 64, 62: 62,
             65: 67, 68: 80, 74: 74}
    for a, b in pairs.items():
        assert geometry.MIRROR[a] == b and geometry.MIRROR[b] == a


def test_hflip_keeps_landmark_semantics(face):
    img, lm, box = face
    f_img, f_lm, f_box = geometry.hflip(img, lm, box)
    w = img.shape[1]
    assert np.array_equal(f_img, img[:, ::-1])
    assert np.array_equal(f_lm[36], [w - lm[45, 0], lm[45, 1]])  # the new left eye's outer corner
    # after the flip a frontal face still reads left to right: jaw 0 < 16, eye corners, mouth corners, forehead arc
    assert f_lm[0, 0] < f_lm[16, 0] and f_lm[36, 0] < f_lm[39, 0] < f_lm[42, 0] < f_lm[45, 0]
    assert f_lm[48, 0] < f_lm[54, 0] and np.all(np.diff(f_lm[68:, 0]) > 0)
    assert f_box[0, 0] == w - box[1, 0] and f_box[1, 0] == w - box[0, 0] and f_box[0, 0] < f_box[1, 0]
    assert f_box[2, 0] < f_box[3, 0] and f_box[5, 0] < f_box[6, 0]  # eyes and mouth corners stay image-left first
    assert np.array_equal(f_box[:, 1], box[[0, 1, 3, 2, 4, 6, 5], 1])
    back = geometry.hflip(f_img, f_lm, f_box)
    assert np.array_equal(back[1], lm) and np.allclose(back[2], box) and np.array_equal(back[0], img)


def test_landmark_crop_margins():
    lm = np.full((68, 2), 150, np.int32)
    lm[0], lm[1] = (100, 100), (200, 300)  # box 100 wide, 200 high
    assert geometry.landmark_bounds(lm, 1000, 1000) == (50, 0, 251, 381)  # w/2 each side, h above (clipped), 0.4h below
    lm[:, 1] += 400
    assert geometry.landmark_bounds(lm, 1000, 1000) == (50, 300, 251, 781)


def test_box_crop_val_margins_and_train_range():
    img = np.zeros((400, 400, 3), np.uint8)
    box = np.array([[100, 100], [180, 200], *[[0, 0]] * 5], np.float32)
    assert geometry.box_crop(img, box, None) == (90, 87, 191, 213)  # w/8, h/8 per side
    for seed in range(20):
        x0, y0, x1, y1 = geometry.box_crop(img, box, np.random.default_rng(seed))
        assert 100 - 16 <= x0 <= 100 - 4 and 100 - 20 <= y0 <= 100 - 5  # w/4 * U(0.2, 0.8)
        assert 180 + 4 <= x1 <= 180 + 17 and 200 + 5 <= y1 <= 200 + 21


def test_box_outside_image_is_a_bad_sample():
    img = np.zeros((100, 100, 3), np.uint8)
    box = np.array([[300, 300], [400, 400], *[[0, 0]] * 5], np.float32)
    with pytest.raises(geometry.BadSample, match="outside the image"):
        geometry.box_crop(img, box, None)


def test_choose_box_prefers_the_landmark_face():
    lm = np.array([[100, 100], [200, 220]])
    boxes = np.zeros((2, 7, 2), np.float32)
    boxes[0, :2] = [[0, 0], [50, 50]]
    boxes[1, :2] = [[95, 90], [205, 225]]
    assert np.array_equal(geometry.choose_box(lm, boxes), boxes[1])


@pytest.mark.parametrize("kind", sbi.MASK_TYPES)
def test_mask_types_cover_the_face(face, kind):
    img, lm, _ = face
    mask = sbi.face_mask(lm, img.shape[:2], kind)
    assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, 1.0}
    for i in (30, 37, 44, 51):  # nose tip, both eyes and the upper lip are inside every mask type
        assert mask[lm[i, 1], lm[i, 0]] == 1
    assert mask[5, 5] == 0


def test_mask_types_differ_as_described(face):
    img, lm, _ = face
    area = {k: sbi.face_mask(lm, img.shape[:2], k).sum() for k in sbi.MASK_TYPES}
    assert area["extended"] > area["components"]  # brows pushed up the forehead
    assert sbi.face_mask(lm, img.shape[:2], "hull")[lm[74, 1] + 2, lm[74, 0]] == 1  # forehead in the 81-point hull
    assert sbi.face_mask(lm[:68], img.shape[:2], "hull")[lm[74, 1] + 2, lm[74, 0]] == 0


def test_self_blend_changes_pixels_only_inside_the_mask(face):
    img, lm, _ = face
    for seed in range(12):
        real, fake, mask, kind = sbi.self_blend(img, lm, np.random.default_rng(seed))
        assert kind in sbi.MASK_TYPES and fake.dtype == np.uint8 and real.shape == fake.shape == img.shape
        assert 0 <= mask.min() and mask.max() <= 1 and mask.max() > 0.2
        outside = mask == 0
        assert np.array_equal(fake[outside], real[outside])
        assert np.abs(fake.astype(int) - real.astype(int))[mask >= mask.max() / 2].mean() > 0.3


def test_self_blend_is_reproducible(face):
    img, lm, _ = face
    a, b = (sbi.self_blend(img, lm, np.random.default_rng(3)) for _ in range(2))
    assert all(np.array_equal(x, y) for x, y in zip(a[:3], b[:3]))


def test_degenerate_landmarks_give_a_bad_sample_not_nan(face):
    img, lm, _ = face
    with pytest.raises(geometry.BadSample, match="empty"):
        sbi.self_blend(img, np.full_like(lm, -1000), np.random.default_rng(0), mask_type="hull")


def test_pair_transform_uses_identical_parameters():
    rng = np.random.default_rng(0)
    real = rng.integers(60, 190, (64, 64, 3), dtype=np.uint8)
    fake = real.copy()
    fake[20:40, 20:40] = 128
    aug, draws = sbi.pair_transform(), np.random.default_rng(1)
    for _ in range(30):
        out = sbi.augment(aug, draws, image=fake, image1=real)
        same = np.ones((64, 64), bool)
        same[12:52, 12:52] = False  # JPEG blocks touching the changed square (and chroma upsampling) may differ
        assert np.array_equal(out["image"][same], out["image1"][same])


def test_legacy_hsv_moves_levels_by_at_most_one_step():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    t = sbi.LegacyHueSaturationValue(0.3, p=1.0)
    roundtrip = t.apply(img, shifts=[0.1, 0.1, 0.1])  # shifts in [0, 1) truncate to no shift: only HSV rounding
    lowered = t.apply(img, shifts=[-0.1, -0.1, -0.1])  # shifts in (-1, 0) lower H, S and V by one level
    assert np.abs(roundtrip.astype(int) - img).mean() < 3
    gray = np.full((8, 8, 3), 100, np.uint8)
    assert np.array_equal(t.apply(gray, shifts=[-0.2, -0.2, -0.2]), gray - 1)  # V down one level
    assert np.array_equal(t.apply(gray, shifts=[0.2, 0.2, 0.2]), gray)
    assert np.abs(lowered.astype(int) - roundtrip).max() <= 12 and np.abs(lowered.astype(int) - roundtrip).mean() < 2


ALBUMENTATIONS_1_1 = """
import sys
import numpy as np
import albumentations as A
from albumentations.augmentations import functional as F
assert A.__version__ == "1.1.0", A.__version__
d = np.load(sys.argv[1])
rgb = [F.shift_rgb(img, *s) for img, s in zip(d["images"], d["rgb"])]
hsv = [F.shift_hsv(img, *s) for img, s in zip(d["images"], d["hsv"])]
np.savez(sys.argv[2], rgb=np.stack(rgb), hsv=np.stack(hsv))
"""


def test_legacy_shifts_equal_albumentations_1_1(reference_packages, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 24, 24, 3), dtype=np.uint8)
    rgb, hsv = rng.uniform(-20, 20, (40, 3)), rng.uniform(-0.3, 0.3, (40, 3))
    np.savez(tmp_path / "in.npz", images=images, rgb=rgb, hsv=hsv)
    subprocess.run([sys.executable, "-c", ALBUMENTATIONS_1_1, tmp_path / "in.npz", tmp_path / "out.npz"], check=True,
                   env={**os.environ, "PYTHONPATH": str(reference_packages)})
    ref = np.load(tmp_path / "out.npz")
    for i, img in enumerate(images):
        assert np.array_equal(sbi.LegacyRGBShift().apply(img, shifts=rgb[i].tolist()), ref["rgb"][i])
        assert np.array_equal(sbi.LegacyHueSaturationValue().apply(img, shifts=hsv[i].tolist()), ref["hsv"][i])


AFFINE_1_1 = """
import random
import sys
import numpy as np
import albumentations as A
assert A.__version__ == "1.1.0", A.__version__
d = np.load(sys.argv[1])
affine = A.Affine(translate_percent={"x": (-0.03, 0.03), "y": (-0.015, 0.015)}, scale=[0.95, 1 / 0.95], p=1)
out = []
for img, mask, u in zip(d["images"], d["masks"], d["draws"]):
    draws = iter([u[2], u[3], 0, 0, u[0], u[1], 0])  # 1.1 draws translate x, y, shear x, y, scale x, y, rotate
    random.uniform = lambda a, b: a + (b - a) * next(draws)  # as random.uniform, from the given draws
    out.append(affine(image=img, mask=mask))
np.savez(sys.argv[2], images=np.stack([o["image"] for o in out]), masks=np.stack([o["mask"] for o in out]))
"""


def test_affine_equals_albumentations_1_1(reference_packages, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 70, 90, 3), dtype=np.uint8)
    masks = (rng.random((60, 70, 90)) < 0.5).astype(np.float32)
    draws = np.stack([np.random.default_rng(seed).random(4) for seed in range(60)])  # what random_affine draws
    np.savez(tmp_path / "in.npz", images=images, masks=masks, draws=draws)
    subprocess.run([sys.executable, "-c", AFFINE_1_1, tmp_path / "in.npz", tmp_path / "out.npz"], check=True,
                   env={**os.environ, "PYTHONPATH": str(reference_packages)})
    ref = np.load(tmp_path / "out.npz")
    for seed in range(60):
        img, mask = sbi.random_affine(images[seed], masks[seed], np.random.default_rng(seed))
        assert np.array_equal(img, ref["images"][seed]) and np.array_equal(mask, ref["masks"][seed])


def test_blend_is_the_references_arithmetic():
    rng = np.random.default_rng(0)
    source, target = rng.integers(0, 256, (2, 300, 300, 3), dtype=np.uint8)
    mask = rng.random((300, 300), dtype=np.float32)
    m = mask[..., None]
    fake = sbi.blend(source, target, mask)
    assert fake.dtype == np.uint8 and np.array_equal(fake, (m * source + (1 - m) * target).astype(np.uint8))
    assert np.array_equal(sbi.blend(source, target, np.zeros_like(mask)), target)  # outside the mask: the target


def test_photometric_strengths_match_the_spec():
    import albumentations as A

    flat = np.full((16, 16, 3), 100, np.uint8)
    shifts, draws = A.Compose([sbi.LegacyRGBShift(20, p=1)]), np.random.default_rng(0)
    deltas = np.array([sbi.augment(shifts, draws, image=flat)["image"].astype(int)[0, 0] - 100 for _ in range(200)])
    assert np.abs(deltas).max() <= 20 and np.abs(deltas).max() >= 15  # +-20 levels per channel
    assert sbi.LegacyRGBShift().apply(flat, shifts=[-5.3, 5.3, 0.0])[0, 0].tolist() == [94, 105, 100]  # floor
    rbc = A.RandomBrightnessContrast((-0.3, 0.3), (-0.3, 0.3), p=1)
    assert rbc.apply(flat, alpha=1.3, beta=25.5)[0, 0, 0] == 155  # x * contrast + brightness * 255
    values = []
    for seed in range(300):
        rbc.set_random_seed(seed)
        values.append(int(rbc(image=flat)["image"][0, 0, 0]))
    assert 100 * 0.7 - 0.3 * 255 - 1 <= min(values) < 20 and 180 < max(values) <= 100 * 1.3 + 0.3 * 255 + 1


def test_downscale_blurs_by_its_ratio():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    down = sbi.RandomDownScale(p=1).apply(img, ratio=4)
    assert down.shape == img.shape and np.abs(np.diff(down.astype(int), axis=1)).mean() < np.abs(
        np.diff(img.astype(int), axis=1)).mean() / 2


def test_elastic_field_strength():
    dx, dy = sbi.elastic_field((400, 400), np.random.default_rng(0))
    expected = 50 * np.sqrt(1 / 3 / (4 * np.pi * 7**2))  # alpha * std of U(-1,1) smoothed by a sigma-7 Gaussian
    assert abs(dx.std() / expected - 1) < 0.15 and abs(dy.std() / expected - 1) < 0.15
    assert np.abs(dx).max() < 8


def test_affine_moves_within_range():
    mask = np.zeros((200, 300), np.float32)
    mask[80:120, 130:170] = 1
    for seed in range(20):
        _, moved = sbi.random_affine(np.zeros((200, 300, 3), np.uint8), mask, np.random.default_rng(seed))
        ys, xs = np.nonzero(moved)
        assert abs(xs.mean() - 149.5) <= 0.03 * 300 + 1 and abs(ys.mean() - 99.5) <= 0.015 * 200 + 1
        assert 0.9 * 1600 < moved.sum() < 1.12 * 1600


# ------------------------------------------------------------------------------------------------------------------
# joint behaviour of the random draws: every decision independent of the others


def applied(compose, n: int, **images) -> list[dict]:
    """{transform name: params} of each of n runs of `compose` through sbi.augment from one seeded rng."""
    compose.save_applied_params = True
    rng = np.random.default_rng(0)
    return [dict(sbi.augment(compose, rng, **images)["applied_transforms"]) for _ in range(n)]


def test_pair_transform_decisions_and_parameters_are_independent():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    runs = applied(sbi.pair_transform(), 4000, image=img, image1=img)
    assert_pair_patterns(runs)
    both = [r for r in runs if "RandomBrightnessContrast" in r and "ImageCompression" in r]
    assert_uncorrelated([r["RandomBrightnessContrast"]["alpha"] for r in both],
                        [r["ImageCompression"]["quality"] for r in both])
    shifted = [r for r in runs if "LegacyRGBShift" in r and "LegacyHueSaturationValue" in r]
    assert_uncorrelated([r["LegacyRGBShift"]["shifts"][0] for r in shifted],
                        [r["LegacyHueSaturationValue"]["shifts"][2] for r in shifted])
    rgb = np.array([r["LegacyRGBShift"]["shifts"] for r in runs if "LegacyRGBShift" in r])
    assert np.abs(np.corrcoef(rgb.T) - np.eye(3)).max() < 4.5 / np.sqrt(len(rgb))  # the 3 channels differ


def test_source_transform_decisions_and_parameters_are_independent():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    runs = applied(sbi.source_transform(), 4000, image=img)
    kind = [("RandomDownScale", r["RandomDownScale"]["ratio"]) if "RandomDownScale" in r else ("Sharpen", 0)
            for r in runs]
    counts = Counter(("LegacyRGBShift" in r, k) for r, k in zip(runs, kind))
    for shift, (k, p_kind) in product((False, True), ((("RandomDownScale", 2), .25), (("RandomDownScale", 4), .25),
                                                       (("Sharpen", 0), .5))):
        assert_binomial(counts[(shift, k)], len(runs), (0.3 if shift else 0.7) * p_kind)
    contrast = [r["RandomBrightnessContrast"]["alpha"] for r in runs]
    assert_uncorrelated(contrast, [float("LegacyRGBShift" in r) for r in runs])
    assert_uncorrelated(contrast, [r["LegacyHueSaturationValue"]["shifts"][2] for r in runs])
    assert_uncorrelated(contrast, [float(k[0] == "Sharpen") for k in kind])
    sharp = [r for r in runs if "Sharpen" in r]
    assert_uncorrelated([r["RandomBrightnessContrast"]["beta"] for r in sharp], [r["Sharpen"]["alpha"] for r in sharp])


def test_augment_is_reproducible_from_the_sample_rng():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    aug = sbi.source_transform()
    first = [sbi.augment(aug, np.random.default_rng(seed), image=img)["image"] for seed in range(20)]
    again = [sbi.augment(aug, np.random.default_rng(seed), image=img)["image"] for seed in range(20)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert len({a.tobytes() for a in first}) == 20

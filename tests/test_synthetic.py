"""The synthetic FF++ dataset: layout, splits, determinism, landmark semantics and that faces are drawn where marked."""
import json

import cv2
import numpy as np
import pytest

from src.data.synthetic import draw_face_sample, generate_dataset
from src.faces.geometry import FOREHEAD_ORDER

SMALL = dict(videos=6, frames=2, frame_size=(160, 128), face_size=60)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("synth") / "ff", seed=3, **SMALL)


def _frames(root, kind):
    base = root / "original_sequences" / "youtube" / "c23" / kind
    return sorted(base.glob("*/*.png" if kind == "frames" else "*/*.npy"))


def test_layout_shapes_and_dtypes(data):
    frames, landmarks, retina = (_frames(data, k) for k in ("frames", "landmarks", "retina"))
    assert [f.relative_to(f.parents[1]).as_posix() for f in frames][:2] == ["000/000.png", "000/001.png"]
    assert len(frames) == len(landmarks) == len(retina) == 12
    for f, lm_file, r in zip(frames, landmarks, retina):
        img, lm, box = cv2.imread(str(f)), np.load(lm_file), np.load(r)
        assert img.shape == (128, 160, 3)
        assert lm.dtype == np.int32 and lm.shape[1:] == (81, 2) and box.dtype == np.float32
        assert box.shape == (len(lm), 7, 2)
        assert np.all(lm >= 0) and np.all(lm < (160, 128)), "landmarks inside the frame"


def test_splits_cover_all_videos_without_overlap(data):
    splits = {k: json.loads((data / f"{k}.json").read_text()) for k in ("train", "val", "test")}
    assert all(len(pair) == 2 for pairs in splits.values() for pair in pairs) and splits["val"] and splits["test"]
    ids = [v for pairs in splits.values() for pair in pairs for v in pair]
    assert sorted(ids) == [f"{i:03d}" for i in range(6)]


def test_deterministic_given_seed(tmp_path):
    a, b, c = (generate_dataset(tmp_path / str(i), seed=s, **SMALL) for i, s in enumerate((0, 0, 1)))
    files = [_frames(root, "frames")[3] for root in (a, b, c)] + [_frames(root, "landmarks")[3] for root in (a, b, c)]
    raw = [f.read_bytes() for f in files]
    assert raw[0] == raw[1] and raw[3] == raw[4]
    assert raw[0] != raw[2] and raw[3] != raw[5]


def test_forehead_reorder_gives_left_to_right_arc_above_brows(data):
    for f in _frames(data, "landmarks"):
        lm = np.load(f)[0]
        arc = lm[FOREHEAD_ORDER]
        assert np.all(np.diff(arc[:, 0]) > 0)
        up = (lm[27] - lm[8]) / np.linalg.norm(lm[27] - lm[8])  # chin to nose top: the face's own "up"
        assert (arc @ up).min() > (lm[17:27] @ up).max()


def test_largest_face_first_and_a_second_face_occurs(tmp_path):
    root = generate_dataset(tmp_path, videos=16, frames=1, frame_size=(320, 192), face_size=60)
    n_faces = []
    for lm_file, r in zip(_frames(root, "landmarks"), _frames(root, "retina")):
        box = np.load(r)
        area = np.prod(box[:, 1] - box[:, 0], axis=1)
        assert np.all(np.diff(area) < 0) and len(np.load(lm_file)) == len(box)
        n_faces.append(len(box))
    assert 2 in n_faces


def _pixel(img, xy):
    return img[int(round(xy[1])), int(round(xy[0]))].astype(float)


def test_landmarks_sit_on_drawn_features():
    for seed in range(5):
        img, lm, retina = draw_face_sample(np.random.default_rng(seed), (256, 256), 120)
        assert lm.shape == (81, 2) and retina.shape == (7, 2)
        cheek = _pixel(img, lm[[3, 31, 41]].mean(0))
        for eye in (lm[36:42], lm[42:48]):
            assert _pixel(img, eye.mean(0)).mean() < cheek.mean() - 20, "pupil darker than skin"
        assert np.linalg.norm(_pixel(img, (lm[57] + lm[66]) / 2) - cheek) > 15, "lower lip differs from skin"
        assert np.allclose(retina[2:], [lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]], atol=1)


def test_68_point_option(tmp_path):
    root = generate_dataset(tmp_path, n_landmarks=68, **SMALL)
    assert all(np.load(f).shape[1:] == (68, 2) for f in _frames(root, "landmarks"))


@pytest.mark.parametrize("videos", [5, 4])
def test_bad_video_count_errors(tmp_path, videos):
    with pytest.raises(ValueError, match="even"):
        generate_dataset(tmp_path, videos=videos, frames=1)

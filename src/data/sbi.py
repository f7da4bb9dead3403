"""Self-Blended Images: the pure pieces of one SBI sample (Shiohara & Yamasaki, CVPR 2022).

Images are uint8 RGB HWC arrays, landmarks int32 (N, 2) arrays in dlib order (68 or 81 points), face boxes
(7, 2) arrays in RetinaFace layout: [x0, y0], [x1, y1], then eye, eye, nose, mouth corner, mouth corner.
Every random choice is drawn from the `rng` passed in, so a sample is reproducible from its seed, and each choice is
drawn independently of the others (albumentations compositions too: see `augment`).
"""
from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np

from src.faces.geometry import BadSample

MASK_TYPES = ("hull", "dfl_full", "extended", "components")
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


def _hull(mask: np.ndarray, *parts: np.ndarray) -> None:
    cv2.fillConvexPoly(mask, cv2.convexHull(np.concatenate(parts).astype(np.int32)), 1)


def _components(mask: np.ndarray, lm: np.ndarray) -> None:
    chin = lm[8:9]
    for part in ((lm[0:9], lm[17:18]), (lm[8:17], lm[26:27]), (lm[17:20], chin), (lm[24:27], chin),
                 (lm[19:25], chin), (lm[17:22], lm[27:28], lm[31:36], chin),
                 (lm[22:27], lm[27:28], lm[31:36], chin), (lm[27:31], lm[31:36])):
        _hull(mask, *part)


def face_mask(landmark: np.ndarray, shape: tuple[int, int], mask_type: str) -> np.ndarray:
    """A float32 {0, 1} mask of one of the four hull types of Face X-ray / SBI."""
    mask = np.zeros(shape, np.float32)
    lm = landmark.astype(np.int32)
    if mask_type == "hull":  # convex hull of every point given (with the forehead when there are 81)
        _hull(mask, lm)
    elif mask_type == "dfl_full":  # jaw + mouth, nose ridge, eyes + brows
        _hull(mask, lm[0:17], lm[48:68], lm[[0, 8, 16]])
        _hull(mask, lm[27:31], lm[33:34])
        _hull(mask, lm[17:27], lm[[0, 27, 16, 33]])
    elif mask_type == "components":
        _components(mask, lm)
    elif mask_type == "extended":  # components with the brows pushed halfway again up the forehead
        lm = lm[:68].copy()
        mid_l, mid_r = (lm[36] + lm[0]) // 2, (lm[16] + lm[45]) // 2
        below_l = np.stack([(lm[36] + mid_l) // 2, *lm[36:40]])
        below_r = np.stack([*lm[42:46], (lm[45] + mid_r) // 2])
        lm[17:22] += (lm[17:22] - below_l) // 2
        lm[22:27] += (lm[22:27] - below_r) // 2
        _components(mask, lm)
    else:
        raise ValueError(f"unknown mask type '{mask_type}'; choose one of {MASK_TYPES}")
    return mask


def augment(compose: A.Compose, rng: np.random.Generator, **images: np.ndarray) -> dict:
    """Run `compose` with every decision of every child drawn in turn from one stream seeded by `rng`.

    albumentations 2.x's `set_random_seed(s)` (and `Compose(seed=s)`) gives each child its own generator seeded with
    the same `s`, so all children draw the same first number: their apply decisions and parameters are coupled.
    One shared stream per call makes them independent, as albumentations 1.x's global random module did.
    """
    seed = int(rng.integers(2**63))
    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return compose(**images)


def _shift_lut(shift: float) -> np.ndarray:
    """albumentations 1.x's uint8 lookup table for adding `shift`: float32 levels + shift, clipped, truncated."""
    lut = np.arange(256, dtype=np.float32)
    lut += np.float32(shift)
    return np.clip(lut, 0, 255).astype(np.uint8)


class _ChannelShifts(A.ImageOnlyTransform):
    """Three shifts U(-limit, limit), one per channel, drawn in turn as albumentations 1.x drew them."""

    def __init__(self, limit: float, p: float = 0.5):
        super().__init__(p=p)
        self.limit = limit

    def get_params(self) -> dict:
        return {"shifts": [self.py_random.uniform(-self.limit, self.limit) for _ in range(3)]}


class LegacyRGBShift(_ChannelShifts):
    """RGBShift(+-limit) as albumentations 1.x applied it to uint8 images (the released teacher's).

    1.x added the float shift to each level and truncated (floor for the unclipped levels); 2.x truncates the shift
    first, so a negative shift is one level weaker than 1.x's.
    """

    def __init__(self, limit: float = 20, p: float = 0.5):
        super().__init__(limit, p)

    def apply(self, img: np.ndarray, shifts: list[float], **params) -> np.ndarray:
        return cv2.merge([cv2.LUT(c, _shift_lut(s)) for c, s in zip(cv2.split(img), shifts)])


class LegacyHueSaturationValue(_ChannelShifts):
    """HueSaturationValue(+-limit) as albumentations 1.x applied it to uint8 images (the released teacher's).

    1.x shifted H, S and V through an integer lookup table with truncation, so a shift in (-1, 0) lowers a level
    by one and a shift in [0, 1) changes nothing; the RGB->HSV->RGB round trip adds its own rounding. 2.x rounds
    instead, which makes +-0.3 an exact no-op. This reproduces the 1.x effective strength.
    """

    def __init__(self, limit: float = 0.3, p: float = 0.5):
        super().__init__(limit, p)

    def apply(self, img: np.ndarray, shifts: list[float], **params) -> np.ndarray:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        levels = np.arange(256, dtype=np.float64)
        luts = [np.mod(levels + shifts[0], 180), *(np.clip(levels + s, 0, 255) for s in shifts[1:])]
        channels = [cv2.LUT(c, lut.astype(np.uint8)) for c, lut in zip(cv2.split(hsv), luts)]
        return cv2.cvtColor(cv2.merge(channels), cv2.COLOR_HSV2RGB)


class RandomDownScale(A.ImageOnlyTransform):
    """Downscale by 2 or 4 with nearest neighbour, then back up with bilinear interpolation."""

    def get_params(self) -> dict:
        return {"ratio": self.py_random.choice((2, 4))}

    def apply(self, img: np.ndarray, ratio: int, **params) -> np.ndarray:
        h, w = img.shape[:2]
        small = cv2.resize(img, (int(w / ratio), int(h / ratio)), interpolation=cv2.INTER_NEAREST)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def source_transform() -> A.Compose:
    """Colour and quality changes that make the blended source differ from the target (the SBI paper, section 3.3)."""
    return A.Compose([
        LegacyRGBShift(20, p=0.3),
        LegacyHueSaturationValue(0.3, p=1.0),
        A.RandomBrightnessContrast((-0.1, 0.1), (-0.1, 0.1), p=1.0),
        A.OneOf([RandomDownScale(p=1.0), A.Sharpen(alpha=(0.2, 0.5), lightness=(0.5, 1.0), p=1.0)], p=1.0),
    ])


def pair_transform() -> A.Compose:
    """Train-time photometric augmentation, applied with identical parameters to `image` and `image1` (step 7)."""
    return A.Compose([
        LegacyRGBShift(20, p=0.3),
        LegacyHueSaturationValue(0.3, p=0.3),
        A.RandomBrightnessContrast((-0.3, 0.3), (-0.3, 0.3), p=0.3),
        A.ImageCompression(quality_range=(40, 100), p=0.5),
    ], additional_targets={"image1": "image"})


def random_affine(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Translate (x +-3 %, y +-1.5 %) and scale each axis in [0.95, 1/0.95] about the centre, image and mask alike,
    with albumentations 1.1's float64 matrix (its Affine's pixels exactly: `test_affine_equals_albumentations_1_1`)."""
    h, w = mask.shape
    sx, sy = rng.uniform(0.95, 1 / 0.95, 2)
    tx, ty = rng.uniform(-0.03, 0.03) * w, rng.uniform(-0.015, 0.015) * h
    cx, cy = w / 2 - 0.5, h / 2 - 0.5
    m = np.array([[sx, 0, (tx - sx * cx) + cx], [0, sy, (ty - sy * cy) + cy]])  # summed in 1.1's order
    img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return img, mask


def elastic_field(shape: tuple[int, int], rng: np.random.Generator, alpha: float = 50.0,
                  sigma: float = 7.0) -> tuple[np.ndarray, np.ndarray]:
    """Displacements U(-1, 1) smoothed by a Gaussian (sigma, radius 4 sigma, as scipy's) times alpha, per axis."""
    return tuple(cv2.GaussianBlur(rng.random(shape, np.float32) * 2 - 1, (0, 0), sigma,
                                  borderType=cv2.BORDER_REFLECT) * alpha for _ in range(2))


def elastic(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Elastic deformation (alpha 50, sigma 7) of the mask alone: the source image's would be discarded."""
    h, w = mask.shape
    dx, dy = elastic_field((h, w), rng)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, gx + dx, gy + dy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)


def _odd_kernel(rng: np.random.Generator) -> tuple[int, int]:
    k = int(rng.choice(np.arange(5, 26, 2)))
    return k, k


def blend_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft blend mask: resize to ~[192, 256]^2, blur, erode (keep only 1s), blur again, back to image size."""
    h, w = mask.shape
    small = cv2.resize(mask, (int(rng.integers(192, 257)), int(rng.integers(192, 257))))
    blurred = cv2.GaussianBlur(small, _odd_kernel(rng), 0)
    if blurred.max() <= 0:
        raise BadSample("empty blend mask")
    blurred = np.where(blurred / blurred.max() < 1, 0, 1).astype(np.float32)
    blurred = cv2.GaussianBlur(blurred, _odd_kernel(rng), int(rng.integers(5, 46)))
    if blurred.max() <= 0:
        raise BadSample("blend mask empty after erosion")
    return cv2.resize(blurred / blurred.max(), (w, h))


def self_blend(img: np.ndarray, landmark: np.ndarray, rng: np.random.Generator, mask_type: str = "random",
               source_aug: A.Compose | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """One self-blended fake from one face crop: returns (real, fake, soft mask in [0, 1], mask type)."""
    if rng.random() < 0.25:
        landmark = landmark[:68]
    kind = str(rng.choice(MASK_TYPES)) if mask_type == "random" else mask_type
    mask = face_mask(landmark, img.shape[:2], kind)
    source_aug = source_aug or source_transform()
    source = img
    if rng.random() < 0.5:
        source = augment(source_aug, rng, image=img)["image"]
    else:
        img = augment(source_aug, rng, image=img)["image"]
    source, mask = random_affine(source, mask, rng)
    mask = elastic(mask, rng)
    soft = blend_mask(mask, rng) * BLEND_RATIOS[rng.integers(len(BLEND_RATIOS))]
    return img, blend(source, img, soft), soft, kind


def blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mask * source + (1 - mask) * target in float32, truncated to uint8: the reference's arithmetic, to the bit."""
    m = mask[..., None]
    return (m * source + (1 - m) * target).astype(np.uint8)

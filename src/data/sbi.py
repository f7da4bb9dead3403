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

MASK_TYPES = ("hull", "dfl_full", "extended", "components")
FOREHEAD_ORDER = np.array([77, 75, 76, 68, 69, 70, 71, 80, 72, 73, 79, 74, 78])
# new[i] = old[MIRROR[i]] after a horizontal flip: every left/right landmark swaps with its mirror partner.
MIRROR = np.concatenate([
    np.arange(16, -1, -1), np.arange(26, 16, -1), np.arange(27, 31), np.arange(35, 30, -1),  # jaw, brows, nose
    [45, 44, 43, 42, 47, 46], [39, 38, 37, 36, 41, 40],  # eyes swap sides
    np.arange(54, 47, -1), np.arange(59, 54, -1), np.arange(64, 59, -1), np.arange(67, 64, -1),  # lips
    np.arange(80, 67, -1),  # forehead arc, left-to-right after reorder_forehead
])
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


class BadSample(Exception):
    """A sample that cannot be made from its files (missing, unreadable, empty mask, box outside the image)."""


def reorder_forehead(landmark: np.ndarray) -> np.ndarray:
    """The dlib 81-point model's forehead points 68-80 into a left-to-right arc; 68 points pass unchanged."""
    if len(landmark) != 81:
        return landmark
    landmark = landmark.copy()
    landmark[68:] = landmark[FOREHEAD_ORDER]
    return landmark


def retina_from_landmarks(lm: np.ndarray) -> np.ndarray:
    """RetinaFace-like (7, 2) float32: box (brow top to chin, jaw sides), eyes, nose tip, mouth corners."""
    jaw = lm[:17]
    top = lm[17:27, 1].min() - 0.08 * np.ptp(jaw[:, 0])
    box = [[jaw[:, 0].min(), top], [jaw[:, 0].max(), jaw[:, 1].max()]]
    return np.array(box + [lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]], np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes given as (x0, y0, x1, y1)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def choose_box(landmark: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Among the first two detector boxes, the one with the highest IoU against the landmarks' bounding box."""
    lm_box = np.array([*landmark.min(0), *landmark.max(0)], dtype=np.float64)
    scores = [iou(lm_box, b[:2].reshape(-1)) for b in boxes[:2]]
    return boxes[int(np.argmax(scores))].copy()


def flip_points(landmark: np.ndarray, box: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks (x' = W - x, indices mirrored) and box (corners and keypoints swapped) of the mirrored frame."""
    landmark = landmark[MIRROR[: len(landmark)]].copy()
    landmark[:, 0] = width - landmark[:, 0]
    flipped = box.copy()
    flipped[0, 0], flipped[1, 0] = width - box[1, 0], width - box[0, 0]
    flipped[2:] = box[[3, 2, 4, 6, 5]]
    flipped[2:, 0] = width - flipped[2:, 0]
    return landmark, flipped


def hflip(img: np.ndarray, landmark: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirror image (a view), landmarks and box (`flip_points`)."""
    return img[:, ::-1], *flip_points(landmark, box, img.shape[1])


def crop_bounds(box: tuple[float, float, float, float], margins: tuple[float, float, float, float],
                width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the crop around `box` grown by (left, top, right, bottom) margins, clipped."""
    x0, y0, x1, y1 = box
    left, top, right, bottom = margins
    return (max(0, int(x0 - left)), max(0, int(y0 - top)),
            min(width, int(x1 + right) + 1), min(height, int(y1 + bottom) + 1))


def landmark_bounds(landmark: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """First crop of a width x height frame: around the 68 landmarks, w/2 left and right, h above, 0.4h below."""
    x0, y0 = landmark[:68].min(0)
    x1, y1 = landmark[:68].max(0)
    w, h = x1 - x0, y1 - y0
    return crop_bounds((x0, y0, x1, y1), (w / 2, h, w / 2, 0.4 * h), width, height)


def sample_region(landmark: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): every pixel of a frame that its SBI samples can read, the first crop with and without the
    horizontal flip (the later crops, the blend and the augmentation all stay inside the first crop)."""
    x0, y0, x1, y1 = landmark_bounds(landmark, width, height)
    mirrored = landmark.copy()
    mirrored[:, 0] = width - landmark[:, 0]
    fx0, fy0, fx1, fy1 = landmark_bounds(mirrored, width, height)  # flipped columns j read columns W - 1 - j
    return min(x0, width - fx1), min(y0, fy0), max(x1, width - fx0), max(y1, fy1)


def box_crop(img: np.ndarray, box: np.ndarray, rng: np.random.Generator | None) -> tuple[int, int, int, int]:
    """Second crop: around the face box, w/4 and h/4 per side times U(0.2, 0.8) each (train) or 0.5 (rng None)."""
    (x0, y0), (x1, y1) = box[0], box[1]
    w, h = x1 - x0, y1 - y0
    scale = rng.uniform(0.2, 0.8, 4) if rng is not None else np.full(4, 0.5)
    margins = (w / 4 * scale[0], h / 4 * scale[1], w / 4 * scale[2], h / 4 * scale[3])
    bounds = crop_bounds((x0, y0, x1, y1), margins, img.shape[1], img.shape[0])
    if bounds[2] - bounds[0] < 2 or bounds[3] - bounds[1] < 2:
        raise BadSample(f"face box {box[:2].reshape(-1).round(1).tolist()} lies outside the image")
    return bounds


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

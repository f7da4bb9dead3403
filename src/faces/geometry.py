"""Face geometry on numpy arrays: landmark order, horizontal flips, face boxes and the crops around them.

Landmarks are int32 (N, 2) arrays in dlib order (68 or 81 points), face boxes (7, 2) arrays in RetinaFace layout:
[x0, y0], [x1, y1], then eye, eye, nose, mouth corner, mouth corner. Training (src/data) and scoring share these.
"""
from __future__ import annotations

import numpy as np

FOREHEAD_ORDER = np.array([77, 75, 76, 68, 69, 70, 71, 80, 72, 73, 79, 74, 78])
# new[i] = old[MIRROR[i]] after a horizontal flip: every left/right landmark swaps with its mirror partner.
MIRROR = np.concatenate([
    np.arange(16, -1, -1), np.arange(26, 16, -1), np.arange(27, 31), np.arange(35, 30, -1),  # jaw, brows, nose
    [45, 44, 43, 42, 47, 46], [39, 38, 37, 36, 41, 40],  # eyes swap sides
    np.arange(54, 47, -1), np.arange(59, 54, -1), np.arange(64, 59, -1), np.arange(67, 64, -1),  # lips
    np.arange(80, 67, -1),  # forehead arc, left-to-right after reorder_forehead
])

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

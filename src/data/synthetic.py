"""Procedural face videos in the FF++ SBI layout (see src/preprocess.py), for tests, the demo and benchmarks.

Each video is one random scene: background, one identity (proportions, colours), a pose, and sometimes a second,
smaller face; frames add small pose and expression jitter. Landmarks are the 68 iBUG points in dlib order plus 13
forehead points stored in the 81-point model's file order; retina arrays hold a RetinaFace-like box and 5 keypoints.
Nothing is downloaded and the output is a pure function of the arguments.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from src.common.layout import KINDS, video_dir
from src.common.logs import BadInput
from src.faces.detectors import FACES_FILE
from src.faces.geometry import FOREHEAD_ORDER, retina_from_landmarks  # arc = file[FOREHEAD_ORDER]

# Face frame: jaw width 1, x to the image right, y down, z towards the camera. Points past the 81 landmarks:
_HEAD, _HAIR, _NECK, _BODY = slice(81, 96), slice(96, 126), slice(126, 130), slice(130, 136)
_EYE = np.array([[-0.5, 0], [-0.17, -0.5], [0.17, -0.5], [0.5, 0], [0.17, 0.42], [-0.17, 0.42]])  # 36-41 / eye size
_LIPS_X = np.array([-1, -.6, -.25, 0, .25, .6, 1, .6, .25, 0, -.25, -.6, -.8, -.3, 0, .3, .8, .3, 0, -.3])  # 48-67
_LIPS_Y = np.array([  # 48-67: y per top-lip height, bottom-lip height and mouth opening
    [0, -.8, -1, -.8, -1, -.8, 0, 0, 0, 0, 0, 0, 0, -.08, -.08, -.08, 0, .08, .08, .08],
    [0, 0, 0, 0, 0, 0, 0, .7, .95, 1, .95, .7, 0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1]])
_HAIRS = np.array([[25, 20, 20], [60, 40, 30], [110, 75, 45], [200, 170, 110], [150, 150, 150], [140, 60, 30]])
_IRISES = np.array([[90, 55, 30], [45, 30, 20], [70, 110, 160], [80, 110, 70], [120, 90, 50]])


def to_file_order(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks (..., 81, 2) with a left-to-right forehead arc -> the 81-point model's file order."""
    out = landmarks.copy()
    out[..., FOREHEAD_ORDER, :] = landmarks[..., 68:81, :]
    return out


def make_splits(videos: int) -> dict[str, list[list[str]]]:
    """FF++-like train/val/test lists of [id_a, id_b] pairs (000,001), (002,003), ..., split about 72/14/14 %."""
    if videos % 2 or not 6 <= videos <= 1000:
        raise BadInput(f"videos must be even and in [6, 1000] (one pair each for train, val, test), got {videos}")
    pairs = [[f"{i:03d}", f"{i + 1:03d}"] for i in range(0, videos, 2)]
    n = max(1, round(0.14 * len(pairs)))
    return {"train": pairs[:-2 * n], "val": pairs[-2 * n:-n], "test": pairs[-n:]}


def _ellipse(cx: float, cy: float, rx: float, ry: float, t0: float, t1: float, n: int, q: float = 1.0) -> np.ndarray:
    t = np.radians(np.linspace(t0, t1, n))  # degrees, counter-clockwise on screen: 90 is the top
    c, s = np.cos(t), np.sin(t)
    return np.stack([cx + rx * np.sign(c) * np.abs(c) ** q, cy - ry * np.sign(s) * np.abs(s) ** q], 1)


def _identity(rng: np.random.Generator) -> dict:
    u = rng.uniform
    skin = np.array([235, 200, 175]) + u() * np.array([-140, -140, -130]) + u(-12, 12, 3)
    hair = _HAIRS[rng.integers(len(_HAIRS))] * u(0.8, 1.2)
    return dict(
        top=u(-0.2, -0.1), chin=u(0.55, 0.68), square=u(0.6, 1.0), skull=u(0.62, 0.75), volume=u(0.02, 0.1),
        eye_y=u(-0.24, -0.17), eye_x=u(0.17, 0.22), eye_w=u(0.16, 0.2), eye_h=u(0.06, 0.085),
        brow_gap=u(0.09, 0.13), arch=u(0.01, 0.04), nose_tip=u(0.04, 0.11), nose_w=u(0.08, 0.12),
        mouth_y=u(0.3, 0.37), mouth_w=u(0.14, 0.2), lip_top=u(0.025, 0.045), lip_bottom=u(0.035, 0.06),
        open=u(0, 0.04) * (u() < 0.6), forehead=u(0.42, 0.52), hairline=u(0.03, 0.1), neck=u(0.2, 0.27),
        skin=skin, hair=None if u() < 0.1 else hair, brow=hair * 0.7, iris=_IRISES[rng.integers(len(_IRISES))],
        sclera=np.array([235, 228, 220]) * u(0.85, 1), lips=skin * [0.85, 0.5, 0.55] + [30, 0, 5],
        clothes=u(20, 235, 3),
        light=np.array([u(-0.6, 0.6), u(-0.6, 0.2), 1.0]),
    )


def _shape(p: dict, rng: np.random.Generator) -> np.ndarray:
    """All face-frame points (136, 3) with this frame's expression: landmarks (forehead as an arc), then outlines."""
    ex, ey, ew, eh = p["eye_x"], p["eye_y"], p["eye_w"], p["eye_h"] * rng.uniform(0.8, 1.1)
    opened = max(0.0, p["open"] + rng.normal(0, 0.01))
    brow_y = ey - p["brow_gap"] - rng.uniform(0, 0.015) - p["arch"] * np.sin(np.linspace(0.2, 0.9, 5) * np.pi)
    brow = np.stack([np.linspace(-ex - 0.65 * ew, -ex + 0.5 * ew, 5), brow_y], 1)
    eye = _EYE * (ew, eh) + (-ex, ey)
    nostrils = np.stack([np.linspace(-1, 1, 5) * p["nose_w"], p["nose_tip"] + np.r_[35, 52, 60, 52, 35] / 1000], 1)
    chin, top, skull, neck = p["chin"] + opened / 2, p["top"], p["skull"], p["neck"]
    xy = np.concatenate([
        _ellipse(0, top, 0.5, chin - top, 180, 360, 17, p["square"]),  # jaw 0-16
        brow, brow[::-1] * (-1, 1),  # brows 17-26
        np.stack([np.zeros(4), np.linspace(ey - 0.03, p["nose_tip"], 4)], 1), nostrils,  # nose 27-35
        eye, eye[[3, 2, 1, 0, 5, 4]] * (-1, 1),  # eyes 36-47
        np.stack([_LIPS_X * p["mouth_w"], p["mouth_y"] + [p["lip_top"], p["lip_bottom"], opened] @ _LIPS_Y], 1),
        _ellipse(0, ey, 0.5, p["forehead"], 140, 40, 13),  # forehead arc 68-80, left to right
        _ellipse(0, top, 0.5, skull, 0, 180, 15),  # top of the head, right to left
        _ellipse(0, top, 0.5 + p["volume"], skull + p["volume"], 195, -15, 19),  # hair: outer edge, hairline
        _ellipse(0, ey, 0.48, p["forehead"] + p["hairline"], 15, 165, 11),
        [[-neck, chin - 0.2], [neck, chin - 0.2], [neck, chin + 0.45], [-neck, chin + 0.45]],
        [[-neck - 0.05, chin + 0.35], [neck + 0.05, chin + 0.35], [1.1, chin + 0.6], [1.3, 4], [-1.3, 4],
         [-1.1, chin + 0.6]],  # clothes
    ])
    xy += rng.normal(0, 0.003, xy.shape)
    z = 0.3 * np.sqrt(np.clip(1 - 4 * xy[:, 0] ** 2, 0, 1))
    z[27:31] += [0.03, 0.06, 0.09, 0.12]
    z[31:36] += [0.03, 0.05, 0.06, 0.05, 0.03]
    return np.column_stack([xy, z])


def _project(shape: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Yaw about the vertical axis, in-plane rotation, scale and shift: pose = (angle deg, yaw deg, px, cx, cy)."""
    a, b = np.radians(pose[:2])
    x, y = shape[:, 0] * np.cos(b) + shape[:, 2] * np.sin(b), shape[:, 1]
    return np.stack([x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a)], 1) * pose[2] + pose[3:]


def _fix(pts) -> np.ndarray:
    return np.round(np.asarray(pts) * 16).astype(np.int32)  # 4 fractional bits for cv2's shift=4


def _rgb(colour) -> list[float]:
    return np.broadcast_to(colour, 3).tolist()


def _poly(img: np.ndarray, pts: np.ndarray, colour) -> None:
    cv2.fillPoly(img, [_fix(pts)], _rgb(colour), cv2.LINE_AA, 4)


def _line(img: np.ndarray, pts: np.ndarray, colour, thickness: float) -> None:
    cv2.polylines(img, [_fix(pts)], False, _rgb(colour), max(1, round(thickness)), cv2.LINE_AA, 4)


def _eye(img: np.ndarray, eye: np.ndarray, p: dict, s: float) -> None:
    lo = np.floor(eye.min(0) - 1).astype(int).clip(0)
    hi = np.ceil(eye.max(0) + 2).astype(int).clip(max=img.shape[1::-1])
    roi, eye, r = img[lo[1]:hi[1], lo[0]:hi[0]], eye - lo, 0.23 * p["eye_w"] * s  # iris, clipped by the lids
    layer, mask = np.empty_like(roi), np.zeros(roi.shape[:2], np.uint8)
    layer[:] = p["sclera"]
    c = _fix(eye.mean(0))
    for radius, colour in ((r, p["iris"]), (0.4 * r, (15, 12, 12))):
        cv2.circle(layer, c, max(1, round(16 * radius)), _rgb(colour), -1, cv2.LINE_AA, 4)
    cv2.circle(layer, _fix(eye.mean(0) - 0.55 * r), max(1, round(2 * r)), (250, 250, 250), -1, cv2.LINE_AA, 4)
    _poly(mask, eye, 255)
    a = mask[..., None] / 255.0
    roi[:] = np.round(roi * (1 - a) + layer * a)
    _line(roi, eye[:4], (30, 20, 20), 0.015 * s)
    _line(roi, eye[[3, 4, 5, 0]], p["skin"] * 0.6, 0.006 * s)


def _draw_head(img: np.ndarray, pts: np.ndarray, p: dict, pose: np.ndarray, rng: np.random.Generator) -> None:
    s, lm, skin = pose[2], pts[:81], p["skin"]
    head = [np.r_[lm[:17], pts[_HEAD]]] + ([] if p["hair"] is None else [pts[_HAIR]])
    for outline, colour in zip(head, (skin, p["hair"])):
        _poly(img, outline, colour)
    for brow in (lm[17:22], lm[22:27]):
        _line(img, brow, p["brow"], 0.035 * s)
    for eye in (lm[36:42], lm[42:48]):
        _eye(img, eye, p, s)
    _line(img, lm[27:31], skin * 0.88, 0.015 * s)
    _line(img, lm[31:36], skin * 0.65, 0.012 * s)
    for i in (32, 34):
        cv2.ellipse(img, _fix(lm[i] - (0, 0.01 * s)), _fix((0.022 * s, 0.012 * s)), pose[0], 0, 360,
                    _rgb(skin * 0.4), -1, cv2.LINE_AA, 4)
    _poly(img, lm[48:60], p["lips"])
    _poly(img, lm[60:68], (70, 25, 30))
    _line(img, lm[60:65], (60, 20, 25), 0.008 * s)
    # Lambert shading of an ellipsoid head and blurred skin texture, inside the head (and hair) mask.
    lo = np.floor(np.min([h.min(0) for h in head], 0)).astype(int).clip(0)
    hi = np.ceil(np.max([h.max(0) for h in head], 0) + 1).astype(int).clip(max=img.shape[1::-1])
    mask = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), np.uint8)
    for h in head:
        _poly(mask, h - lo, 255)
    dy, dx = np.mgrid[lo[1]:hi[1], lo[0]:hi[0]].astype(np.float32) - pose[4:2:-1, None, None]
    a = np.radians(pose[0])
    u, v = (np.cos(a) * dx + np.sin(a) * dy) / s, (np.cos(a) * dy - np.sin(a) * dx) / s
    ry = (p["chin"] - p["top"] + p["skull"]) / 2
    nx, ny = u / 0.55, (v - p["chin"] + ry) / (ry + 0.05)
    n = np.stack([nx, ny, np.sqrt(np.clip(1 - nx ** 2 - ny ** 2, 0, 1))], -1)
    shade = 0.72 + 0.4 * np.clip(n @ (p["light"] / np.linalg.norm(p["light"])), 0, 1)
    tex = cv2.GaussianBlur(rng.standard_normal(mask.shape, np.float32), (0, 0), max(0.6, 0.012 * s))
    gain = 1 + mask / 255.0 * (shade * (1 + 0.025 * tex / (tex.std() + 1e-6)) - 1)
    roi = img[lo[1]:hi[1], lo[0]:hi[0]]
    roi[:] = np.clip(roi * gain[..., None], 0, 255)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = rng.uniform(0, 2 * np.pi)
    ramp = xx * np.cos(t) + yy * np.sin(t)
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    c0, c1 = rng.uniform(20, 235, (2, 3))
    img = np.ascontiguousarray((c0 + (c1 - c0) * ramp[..., None]).astype(np.uint8))
    size = max(w, h)
    for _ in range(rng.integers(4, 12)):
        colour, (x, y), r = _rgb(rng.uniform(0, 255, 3)), rng.uniform(0, 1, 2) * (w, h), rng.uniform(0.03, 0.3) * size
        thick = -1 if rng.random() < 0.6 else max(1, int(0.01 * size))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(img, (int(x - r), int(y - r / 2)), (int(x + r), int(y + r / 2)), colour, thick)
        elif kind == 1:
            cv2.circle(img, (int(x), int(y)), int(r), colour, thick, cv2.LINE_AA)
        else:
            cv2.line(img, (int(x - r), int(y)), (int(x + r), int(y + rng.uniform(-r, r))), colour, max(1, -thick))
    blotch = rng.normal(0, 10, (24 * h // size + 2, 24 * w // size + 2, 3)).astype(np.float32)
    blotch = cv2.resize(blotch, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 0.003 * size + 0.5) + blotch, 0, 255).astype(np.uint8)


class SyntheticVideo:
    """One random scene: a background, one or two identities and their base poses; `frame` renders jittered frames."""

    def __init__(self, rng: np.random.Generator, frame_size: tuple[int, int], face_size: float,
                 second_face_p: float = 0.3):
        self.size = np.array(frame_size, float)
        self.background = _background(rng, *frame_size)
        self.noise = rng.uniform(1.5, 4)
        self.faces: list[tuple[dict, np.ndarray]] = []
        boxes = []
        for k in range(1 + (rng.random() < second_face_p)):
            p = _identity(rng)
            scale = face_size * rng.uniform(0.85, 1.15) * (rng.uniform(0.45, 0.7) if k else 1)
            pose = np.array([rng.uniform(-15, 15), rng.uniform(-20, 20), scale, 0, 0])
            pts = _project(_shape(p, rng), pose)[:_NECK.start]
            lo, hi = pts.min(0) - 0.06 * scale, pts.max(0) + 0.06 * scale
            free = hi - lo <= self.size - 1
            for _ in range(50):
                c = np.where(free, rng.uniform(-lo, np.maximum(self.size - 1 - hi, -lo)), self.size / 2)
                if all(not (np.all(c + lo < b[1]) and np.all(b[0] < c + hi)) for b in boxes):
                    self.faces.append((p, np.r_[pose[:3], c]))
                    boxes.append((c + lo, c + hi))
                    break

    def frame(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RGB uint8 frame, landmarks (n, 81, 2) float with the forehead as an arc, retina (n, 7, 2); largest first."""
        faces = []
        for p, base in self.faces:
            pose = base + np.r_[rng.uniform(-2, 2), rng.uniform(-3, 3), 0, rng.uniform(-0.03, 0.03, 2) * base[2]]
            pose[2] *= rng.uniform(0.97, 1.03)
            pts = _project(_shape(p, rng), pose)
            lo, hi = pts[:_NECK.start].min(0), pts[:_NECK.start].max(0)
            shift = np.where(hi - lo <= self.size - 1, np.clip(0, -lo, self.size - 1 - hi), 0)  # back into the frame
            pose[3:] += shift
            faces.append((p, pose, pts + shift, retina_from_landmarks(pts[:81] + shift)))
        faces.sort(key=lambda f: -np.prod(np.ptp(f[3][:2], 0)))  # by box area, largest first
        img = self.background.copy()
        for p, _, pts, _ in faces[::-1]:
            _poly(img, pts[_BODY], p["clothes"])
            _poly(img, pts[_NECK], p["skin"] * 0.8)
        for p, pose, pts, _ in faces[::-1]:  # the largest face ends on top
            _draw_head(img, pts, p, pose, rng)
        img = np.clip(img + rng.standard_normal(img.shape, np.float32) * self.noise, 0, 255).astype(np.uint8)
        return img, np.stack([f[2][:81] for f in faces]), np.stack([f[3] for f in faces])


def write_video(path: Path, size: tuple[int, int], frames: int, face_size: float, seed: int = 0) -> Path:
    """One generated scene as a video file (MPEG-4 Part 2, 25 frames/s)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scene = SyntheticVideo(rng, size, face_size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    for _ in range(frames):
        writer.write(cv2.cvtColor(scene.frame(rng)[0], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def as_written(landmarks: np.ndarray, n_landmarks: int = 81) -> np.ndarray:
    """Float landmarks (..., 81, 2) in arc order -> int32 as a dlib 68/81-point file stores them."""
    return np.rint(to_file_order(landmarks)[..., :n_landmarks, :]).astype(np.int32)


def draw_face_sample(rng: np.random.Generator, frame_size: tuple[int, int] = (320, 256), face_size: float = 110,
                     n_landmarks: int = 81) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One RGB frame with one face: (H, W, 3) uint8, landmarks (n_landmarks, 2) int32 in file order, retina (7, 2)."""
    img, landmarks, retina = SyntheticVideo(rng, frame_size, face_size, second_face_p=0).frame(rng)
    return img, as_written(landmarks[0], n_landmarks), retina[0]


def generate_dataset(out: str | Path, videos: int = 48, frames: int = 8, frame_size: tuple[int, int] = (320, 256),
                     face_size: float = 110, n_landmarks: int = 81, compression: str = "c23", seed: int = 0) -> Path:
    """Write a synthetic dataset in the FF++ SBI layout to `out` (frames, landmarks, retina, split jsons); return it."""
    if n_landmarks not in (68, 81) or not 1 <= frames <= 1000:
        raise BadInput(f"need n_landmarks 68 or 81 and 1-1000 frames, got {n_landmarks} and {frames}")
    splits, out = make_splits(videos), Path(out)
    root = video_dir(out, compression)
    for v in range(videos):
        dirs = {kind: root / kind / f"{v:03d}" for kind in KINDS}
        for folder in dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, v])
        video = SyntheticVideo(rng, frame_size, face_size)
        for f in range(frames):
            img, landmarks, retina = video.frame(rng)
            cv2.imwrite(str(dirs["frames"] / f"{f:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            np.save(dirs["landmarks"] / f"{f:03d}.npy", as_written(landmarks, n_landmarks))
            np.save(dirs["retina"] / f"{f:03d}.npy", retina)
    for name, pairs in splits.items():
        (out / f"{name}.json").write_text(json.dumps(pairs))
    (root / FACES_FILE).write_text(json.dumps(dict(detector="synthetic", landmarks="synthetic",
                                                   landmark_points=n_landmarks, frames=frames)))
    return out

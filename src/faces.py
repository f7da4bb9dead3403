"""Faces from images and videos: frame sampling, face detection with landmarks, and the test-time face filter.

A detector maps one RGB uint8 frame to a list of `Face`, largest first. Boxes use the RetinaFace layout of the
SBI data (SBI_REFERENCE.md section 1): a (7, 2) float32 array of [x0, y0], [x1, y1], then the centres of the
image-left and image-right eye, the nose tip and the image-left and image-right mouth corner.

The dlib detector (the default) is the frontal HOG detector built into the `dlib-bin` wheel plus a shape
predictor file: the 81-point model (68 iBUG points + 13 forehead points) from the public
'shape_predictor_81_face_landmarks' repository when it is at `weights/shape_predictor_81_face_landmarks.dat`,
otherwise the 68-point model shipped by the `face-recognition-models` package. Its box is dlib's rectangle, whose
five keypoints are derived from the landmarks (eye centres 36-41 and 42-47, nose tip 30, mouth corners 48 and 54).
dlib's rectangle is tighter than a RetinaFace box (brows to chin rather than forehead to chin), so test crops
are smaller than the published protocol's: the published AUCs assume RetinaFace, which `--detector retinaface`
runs from its local weights file (src/retinaface.py).
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import cv2
import numpy as np

from .synthetic import retina_from_landmarks

_logger = logging.getLogger(__name__)

DETECTORS = ("dlib", "retinaface")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
PREDICTOR_81 = Path("weights/shape_predictor_81_face_landmarks.dat")
RETINAFACE_WEIGHTS = Path("weights/retinaface_resnet50_2020-07-20.zip")
SEEK_GAP = 48  # frames: a wanted frame further ahead than this is reached by seeking, nearer ones by grab()


@dataclass
class Face:
    box: np.ndarray  # (7, 2) float32, RetinaFace layout
    landmarks: np.ndarray | None  # (68 or 81, 2) int32 in dlib order, or None when the detector gives none
    score: float

    @property
    def area(self) -> float:
        (x0, y0), (x1, y1) = self.box[:2]
        return float(max(0.0, x1 - x0) * max(0.0, y1 - y0))


class UnreadableMedia(OSError):
    """An image or video that OpenCV cannot decode."""


class Detector(Protocol):
    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces of one RGB uint8 frame, largest first."""


def default_predictor() -> Path:
    """The 81-point shape predictor in weights/ if present, else the 68-point one of `face-recognition-models`."""
    if PREDICTOR_81.is_file():
        return PREDICTOR_81
    # find_spec locates the package without importing it (its __init__ needs pkg_resources, gone from setuptools 81).
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"no dlib shape predictor: put the 81-point model (from the public "
                                f"'shape_predictor_81_face_landmarks' repository) at {PREDICTOR_81}, or "
                                f"`pip install face-recognition-models` for the 68-point model")
    path = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    _logger.info("dlib landmarks: 68-point model %s (no forehead points; %s gives the 81-point model of the SBI "
                 "reference)", path, PREDICTOR_81)
    return path


class DlibDetector:
    """dlib's frontal face detector (HOG, upsampled `upsample` times) with a shape predictor for the landmarks."""

    def __init__(self, predictor: str | Path | None = None, upsample: int = 1):
        import dlib  # noqa: PLC0415 (only this detector needs it)

        path = Path(predictor) if predictor is not None else default_predictor()
        if not path.is_file():
            raise FileNotFoundError(f"dlib shape predictor {path} not found: the 81-point model comes from the public "
                                    f"'shape_predictor_81_face_landmarks' repository, the 68-point model with "
                                    f"`pip install face-recognition-models`")
        self.detector, self.predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path))
        self.upsample = upsample

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces of one RGB uint8 frame, largest first (ties: higher score first)."""
        h, w = rgb.shape[:2]
        rects, scores, _ = self.detector.run(rgb, self.upsample, 0.0)
        faces = []
        for rect, score in zip(rects, scores, strict=True):
            landmarks = np.array([[p.x, p.y] for p in self.predictor(rgb, rect).parts()], np.int32)
            box = np.empty((7, 2), np.float32)
            box[:2] = np.clip([[rect.left(), rect.top()], [rect.right(), rect.bottom()]], 0, [w - 1, h - 1])
            box[2:] = retina_from_landmarks(landmarks)[2:]
            faces.append(Face(box, landmarks, float(score)))
        return sorted(faces, key=lambda f: (-f.area, -f.score))


def add_detector_args(ap: argparse.ArgumentParser) -> None:
    """The face-detector options shared by src.preprocess, src.evaluate and src.predict."""
    ap.add_argument("--detector", choices=DETECTORS, default="dlib")
    ap.add_argument("--retinaface-weights", default=str(RETINAFACE_WEIGHTS),
                    help="RetinaFace ResNet-50 weights for --detector retinaface (default: %(default)s)")
    ap.add_argument("--shape-predictor", help=f"dlib landmark model (default: {PREDICTOR_81} if present, else the "
                                              f"68-point model)")


def make_detector(name: str = "dlib", predictor: str | Path | None = None, upsample: int = 1,
                  retinaface_weights: str | Path = RETINAFACE_WEIGHTS, landmarks: bool = False) -> Detector:
    """The detector called `name`; a missing model file is an error that names it and where to get it.

    RetinaFace gives boxes and 5 keypoints; with `landmarks` (preprocessing) dlib's landmarks are attached to the
    RetinaFace box they overlap, as the SBI reference's preprocessing combined the two.
    """
    if name == "dlib":
        return DlibDetector(predictor, upsample)
    if name == "retinaface":
        from .retinaface import RetinaFaceDetector  # noqa: PLC0415 (torchvision's ResNet only when asked for)

        return RetinaFaceDetector(retinaface_weights, DlibDetector(predictor, upsample) if landmarks else None)
    raise ValueError(f"unknown face detector '{name}'; choose one of {DETECTORS}")


def keep_large(faces: list[Face], ratio: float = 0.5) -> list[Face]:
    """Drop faces whose box area is below `ratio` times the largest one's (the test-time filter of section 6)."""
    if not faces:
        return faces
    largest = max(f.area for f in faces)
    return [f for f in faces if f.area >= ratio * largest]


def frame_indices(n_frames: int, count: int) -> list[int]:
    """`count` frame indices round(linspace(0, n - 1, count)), without repeats when the video is shorter."""
    return sorted({int(round(i)) for i in np.linspace(0, n_frames - 1, count)}) if n_frames > 0 else []


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 image; unreadable is an UnreadableMedia error."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UnreadableMedia(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def frame_count(path: str | Path) -> int:
    """Frames in a video as its container states (1 for an image, 0 when OpenCV cannot open it)."""
    if is_image(path):
        return 1
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    return max(n, 0)


def read_frames(path: str | Path, count: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) of `count` frames at linspace of a video, decoded once (an image is frame 0).

    Frames close ahead are reached with grab() (no conversion to RGB), far ones by seeking. An unreadable video or
    one without a frame count is an UnreadableMedia error; a video that ends early yields the frames it has, with a
    warning.
    """
    if is_image(path):
        yield 0, read_image(path)
        return
    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        if n <= 0:
            raise UnreadableMedia(f"cannot read video {path} (OpenCV opens no frames)")
        pos = 0
        for index in frame_indices(n, count):
            if index - pos > SEEK_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                pos = index
            while pos < index and cap.grab():
                pos += 1
            ok, bgr = cap.read()
            if not ok or pos != index:
                _logger.warning("%s: frame %d of %d could not be decoded; using the frames before it", path, index, n)
                return
            pos += 1
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def list_media(folder: str | Path) -> list[Path]:
    """Videos and images under `folder` (recursive), sorted."""
    exts = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in exts and p.is_file())

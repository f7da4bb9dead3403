"""Faces from images and videos: frame sampling, face detection with landmarks, and the test-time face filter.

A detector maps one RGB uint8 frame to a list of `Face`, largest first. Boxes use the RetinaFace layout of the
SBI data (src/preprocess.py): a (7, 2) float32 array of [x0, y0], [x1, y1], then the centres of the
image-left and image-right eye, the nose tip and the image-left and image-right mouth corner.

Two detectors. RetinaFace (src/retinaface.py, from its local weights file) is the published protocol's: its boxes
are the ones the SBI teacher was trained and tested on. dlib's frontal HOG detector (built into the `dlib-bin`
wheel) needs no weights file; its rectangle is tighter (brows to chin rather than forehead to chin), so its test
crops are smaller and its AUCs differ from the published ones. Its five keypoints are derived from the landmarks
(eye centres 36-41 and 42-47, nose tip 30, mouth corners 48 and 54).

Landmarks come from a dlib shape predictor file: the 81-point model (68 iBUG points + 13 forehead points) from the
public 'shape_predictor_81_face_landmarks' repository when it is at `weights/shape_predictor_81_face_landmarks.dat`,
otherwise the 68-point model shipped by the `face-recognition-models` package.

A preprocessed folder records which detector and landmark model made it in `faces.json` beside its frames/
(`write_face_source`); training copies it into every checkpoint, and evaluation defaults to the same detector.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator, Protocol

import cv2
import numpy as np

from src.common.layout import PREDICTOR_81, REFERENCE_FACES
from src.common.logs import BadInput, MissingFile, UserError
from src.faces.geometry import retina_from_landmarks

_logger = logging.getLogger(__name__)

DETECTORS = ("dlib", "retinaface")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
# The release's own file name first, then the .pth inside it (and that name zipped again)
RETINAFACE_FILES = tuple(Path("weights") / f"retinaface_resnet50_2020-07-20{end}"
                         for end in ("-f168fae3c.zip", ".pth", ".zip"))
FACES_FILE = "faces.json"  # beside frames/: the detector and landmark model that made a preprocessed folder
DETECTOR_FOR_DATA = {"retinaface": "retinaface", "dlib": "dlib", "synthetic": "dlib"}  # test-time detector
_REPORTED: set[str] = set()  # folders without FACES_FILE already logged
# frames: a wanted frame further ahead than this is reached by seeking, nearer ones by grab(). A seek decodes from the
# key frame before the target, and x264 (FF++, Celeb-DF) puts one every 250 frames or fewer: a nearer seek most often
# decodes more than grab() would (10 H.264 clips, 6 of 300 frames each: 20 CPU-s with seeks over 48 frames, 12 without)
SEEK_GAP = 250


@dataclass
class Face:
    box: np.ndarray  # (7, 2) float32, RetinaFace layout
    landmarks: np.ndarray | None  # (68 or 81, 2) int32 in dlib order, or None when the detector gives none
    score: float

    @property
    def area(self) -> float:
        (x0, y0), (x1, y1) = self.box[:2]
        return float(max(0.0, x1 - x0) * max(0.0, y1 - y0))


class UnreadableMedia(UserError, OSError):
    """An image or video that OpenCV cannot decode."""


class FaceDetector(Protocol):
    def detect(self, rgb: np.ndarray, image: bool = False) -> list[Face]:
        """Faces of one RGB uint8 frame, largest first (`image`: a single photo rather than a video frame)."""

    def detect_frames(self, frames: list[np.ndarray]) -> list[list[Face]]:
        """Faces of each of a video's frames (one size), largest first."""

    def describe(self) -> dict:
        """What a faces.json records of this detector."""


def default_predictor() -> Path:
    """The 81-point shape predictor in weights/ if present, else the 68-point one of `face-recognition-models`."""
    if PREDICTOR_81.is_file():
        return PREDICTOR_81
    # find_spec locates the package without importing it (its __init__ needs pkg_resources, gone from setuptools 81).
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFile(f"no dlib shape predictor: put the 81-point model (from the public "
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
            raise MissingFile(f"dlib shape predictor {path} not found: the 81-point model comes from the public "
                                    f"'shape_predictor_81_face_landmarks' repository, the 68-point model with "
                                    f"`pip install face-recognition-models`")
        self.detector, self.predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path))
        self.upsample, self.predictor_file = upsample, path.name
        # the model's point count: its shape on any rectangle (a shape_predictor does not expose it)
        self.points = self.predictor(np.zeros((8, 8, 3), np.uint8), dlib.rectangle(0, 0, 7, 7)).num_parts

    def describe(self) -> dict:
        return dict(detector="dlib", landmarks=self.predictor_file, landmark_points=self.points)

    def detect_frames(self, frames: list[np.ndarray]) -> list[list[Face]]:
        return [self.detect(rgb) for rgb in frames]

    def detect(self, rgb: np.ndarray, image: bool = False) -> list[Face]:
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


class RetinaFaceDetector:
    """The protocol's RetinaFace boxes and 5 keypoints (no landmarks): `max_size` 2048 for video frames, a photo's
    own longest side for single photos; frames go through the network `batch_size` at a time."""

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", batch_size: int = 1):
        from src.faces.retinaface import VIDEO_MAX_SIZE, RetinaFacePredictor  # noqa: PLC0415 (torchvision only when asked for)

        self.predict = RetinaFacePredictor(find_retinaface_weights(weights), device=device)
        self.device = self.predict.device
        self.max_size, self.batch_size = VIDEO_MAX_SIZE, batch_size

    def describe(self) -> dict:
        return dict(detector="retinaface", max_size=self.max_size)

    def detect(self, rgb: np.ndarray, image: bool = False) -> list[Face]:
        return self._faces(*self.predict([rgb], None if image else self.max_size)[0])

    def detect_frames(self, frames: list[np.ndarray]) -> list[list[Face]]:
        return [self._faces(*found) for i in range(0, len(frames), self.batch_size)
                for found in self.predict(frames[i:i + self.batch_size], self.max_size)]

    @staticmethod
    def _faces(boxes: np.ndarray, scores: np.ndarray) -> list[Face]:
        faces = [Face(box.astype(np.float32), None, float(score)) for box, score in zip(boxes, scores)]
        return sorted(faces, key=lambda f: -f.area)  # the reference's order: largest box first


def add_detector_args(ap: argparse.ArgumentParser, default: str | None = "retinaface") -> None:
    """The face-detector options shared by src.preprocess, src.evaluate and src.predict."""
    ap.add_argument("--detector", choices=DETECTORS, default=default,
                    help="face boxes: retinaface (the published protocol's) or dlib (no weights file; tighter boxes, "
                         "so AUCs differ from the published ones)" + (f" (default: {default})" if default else
                         " (default: the detector that made the checkpoint's training data)"))
    ap.add_argument("--retinaface-weights", help=f"RetinaFace ResNet-50 weights, the release's .zip or the .pth inside "
                                                 f"it (default: the first of {', '.join(map(str, RETINAFACE_FILES))})")
    ap.add_argument("--shape-predictor", help=f"dlib landmark model (default: {PREDICTOR_81} if present, else the "
                                              f"68-point model)")


def find_retinaface_weights(path: str | Path | None = None) -> Path:
    """`path`, or the first of RETINAFACE_FILES that exists (the release's name when none does, for the error)."""
    if path is not None:
        return Path(path)
    return next((p for p in RETINAFACE_FILES if p.is_file()), RETINAFACE_FILES[0])


def make_detector(name: str = "retinaface", predictor: str | Path | None = None, upsample: int = 1,
                  retinaface_weights: str | Path | None = None, device: str = "cpu") -> FaceDetector:
    """The detector called `name`; a missing model file is an error that names it and where to get it."""
    if name == "dlib":
        return DlibDetector(predictor, upsample)
    if name == "retinaface":
        return RetinaFaceDetector(retinaface_weights, device, batch_size=8 if str(device).startswith("cuda") else 1)
    raise BadInput(f"unknown face detector '{name}'; choose one of {DETECTORS}")


def read_face_source(folder: str | Path) -> dict:
    """The faces.json of a preprocessed folder; a folder without one was made by the SBI reference's code."""
    path = Path(folder) / FACES_FILE
    if not path.is_file():
        if str(folder) in _REPORTED:
            return dict(REFERENCE_FACES)
        _REPORTED.add(str(folder))
        _logger.info("%s has no %s: read as the SBI reference's preprocessing (RetinaFace boxes, dlib 81-point "
                     "landmarks)", folder, FACES_FILE)
        return dict(REFERENCE_FACES)
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"{path} is not valid JSON ({e}); re-run src.preprocess or delete it") from None
    if info.get("detector") not in DETECTOR_FOR_DATA:
        raise BadInput(f"{path}: unknown detector {info.get('detector')!r}; expected one of "
                         f"{list(DETECTOR_FOR_DATA)}")
    return info


def choose_detector(requested: str | None, faces: dict) -> str:
    """`requested`, or the detector that made the model's training data (`faces`); another one is warned about."""
    recorded = faces.get("detector")
    trained = DETECTOR_FOR_DATA.get(recorded)
    if trained is None:
        unknown = (f"the model's training data records the face detector {recorded!r}, which this project does not "
                   f"know (it knows {', '.join(DETECTOR_FOR_DATA)})")
        if requested is None:
            raise UserError(f"{unknown}: choose one with --detector {' or --detector '.join(DETECTORS)}")
        _logger.warning("%s: scoring with --detector %s", unknown, requested)
        return requested
    if requested is None:
        _logger.info("face detector: %s, as the model's training data (%s)", trained, recorded)
        return trained
    if requested != trained:
        _logger.warning("face detector %s, but the model's training data was made with %s: its boxes, and so the "
                        "crops, differ from training's, which moves the scores and AUCs (drop --detector to use %s)",
                        requested, recorded, trained)
    return requested


def keep_large(faces: list[Face], ratio: float = 0.5) -> list[Face]:
    """Drop faces whose box area is below `ratio` times the largest one's (the SBI test protocol's filter)."""
    if not faces:
        return faces
    largest = max(f.area for f in faces)
    return [f for f in faces if f.area >= ratio * largest]


def frame_indices(n_frames: int, count: int) -> list[int]:
    """`count` frame indices linspace(0, n - 1, count) rounded down, as the reference samples them, without repeats
    when the video is shorter."""
    return sorted(set(np.linspace(0, n_frames - 1, count, dtype=int).tolist())) if n_frames > 0 else []


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

    Frames ahead are reached with grab() (no conversion to RGB), those over SEEK_GAP ahead by seeking. A frame is
    yielded only where the capture says it stands at that index: a seek past the end of a truncated video lands short
    of it (and a read there may return an earlier frame), so the frames from there on are left out, with a warning
    that counts them. An unreadable video or one without a frame count is an UnreadableMedia error.
    """
    if is_image(path):
        yield 0, read_image(path)
        return
    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        if n <= 0:
            raise UnreadableMedia(f"cannot read video {path} (OpenCV opens no frames)")
        wanted, pos = frame_indices(n, count), 0
        for done, index in enumerate(wanted):
            if index - pos > SEEK_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                pos = int(cap.get(cv2.CAP_PROP_POS_FRAMES))  # where it landed: short of index past the end
            while pos < index and cap.grab():
                pos += 1
            ok, bgr = cap.read() if pos == index else (False, None)
            if not ok or int(cap.get(cv2.CAP_PROP_POS_FRAMES)) != index + 1:
                _logger.warning("%s: %d of the %d wanted frames (from frame %d on) could not be decoded: the video "
                                "ends early (it states %d frames); using the %d before them", path,
                                len(wanted) - done, len(wanted), index, n, done)
                return
            pos += 1
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def read_frame_batches(path: str | Path, count: int, batch: int = 8) -> Iterator[list[tuple[int, np.ndarray]]]:
    """`read_frames` in lists of up to `batch` frames, for detectors that take several frames at once."""
    frames = read_frames(path, count)
    while chunk := list(islice(frames, batch)):
        yield chunk


def list_media(folder: str | Path) -> list[Path]:
    """Videos and images under `folder` (recursive), sorted."""
    exts = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in exts and p.is_file())

"""Scoring media with a deepfake classifier, as the SBI test protocol does: the classifier loaded from any supported
file, faces detected in sampled frames, cropped with the test margins, scored; a file's score is the mean over frames
of the largest fake probability among the faces kept. Used by src.evaluate (test sets) and src.predict (your files)."""
from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple

import cv2
import numpy as np
import torch
from torch import nn

from src.common.config import resolve_path
from src.common.layout import REFERENCE_FACES
from src.common.logs import BadInput, UserError
from src.common.timing import Stopwatch
from src.faces.detectors import (
    FaceDetector,
    frame_count,
    frame_indices,
    is_image,
    keep_large,
    read_frame_batches,
)
from src.faces.geometry import BadSample, box_crop
from src.models.classifier import Classifier, load_classifier
from src.models.fast_mobilevit import fast_mobilevitv2

_logger = logging.getLogger(__name__)


@dataclass
class FaceScore:
    frame: int
    box: list[float]  # x0, y0, x1, y1
    score: float  # fake probability


@dataclass
class MediaScores:
    faces: list[FaceScore]
    n_frames: int  # frames decoded
    bad_faces: int = 0  # faces skipped because their box cannot be cropped (degenerate, outside the frame)
    n_wanted: int = 0  # frames the protocol asks of it (its stated frame count); 0: not known

    @property
    def truncated(self) -> bool:
        """Fewer frames decoded than the video states (cut short or damaged): scored on the frames read."""
        return self.n_frames < self.n_wanted

    def frame_scores(self) -> dict[int, float]:
        """Frame index -> max fake probability over its faces (frames with a face only)."""
        scores: dict[int, float] = {}
        for f in self.faces:
            scores[f.frame] = max(scores.get(f.frame, 0.0), f.score)
        return scores

    def score(self) -> float | None:
        """Mean over frames of the frame scores; None when no frame has a face."""
        frames = self.frame_scores()
        return float(np.mean(list(frames.values()))) if frames else None


def load_scorer(path: str | Path, runtime: str = "torch", threads: int | None = None) -> Classifier:
    """`load_classifier` with MobileViTv2 blocks in their exact faster form (models.fast_mobilevit, tested against
    timm), or with runtime 'onnx' an exported .onnx file in ONNX Runtime with `threads` (default: all cores); its
    crop size is its input's and its training data's faces record the one src.export wrote into its metadata."""
    file = resolve_path(str(path), "weights")
    if runtime == "torch":
        if file.suffix == ".onnx":
            raise UserError(f"{file} is an exported ONNX file: score it with --runtime onnx")
        model, crop, faces = load_classifier(file)
        return Classifier(fast_mobilevitv2(model), crop, faces)
    from src.deploy.classifier import OrtClassifier  # noqa: PLC0415 (ONNX Runtime only for --runtime onnx)

    if file.suffix != ".onnx":
        raise BadInput(f"--runtime onnx scores an exported .onnx file (python -m src.export), not {file}")
    model = OrtClassifier(file, threads)
    crop = int(model.session.get_inputs()[0].shape[-1])
    _logger.info("%s in ONNX Runtime (CPU): face crops at %d px", file, crop)
    return Classifier(model, crop, onnx_faces(model.session, file))


def onnx_faces(session: object, file: Path) -> dict:
    """The training data's faces record that src.export writes into an ONNX file's metadata ('faces', JSON); the
    SBI reference's for a file without one."""
    text = session.get_modelmeta().custom_metadata_map.get("faces")
    if text is None:
        _logger.info("%s does not record its training data's face detector (exported before src.export wrote it): "
                     "assuming the SBI reference's", file)
        return dict(REFERENCE_FACES)
    try:
        faces = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{file}: its 'faces' metadata is not valid JSON ({e}); export the model again") from None
    if not isinstance(faces, dict):
        raise UserError(f"{file}: its 'faces' metadata is {faces!r}, not a faces record; export the model again")
    return faces


def frames_wanted(path: str | Path, frames: int) -> int:
    """How many frames the protocol reads of `path`: `frames` at linspace of the count its container states."""
    return len(frame_indices(frame_count(path), frames))


def default_batch(device: str | torch.device) -> int:
    """Faces per model call: 32 on CUDA; 1 on the CPU, where MobileViTv2 and EfficientNet run slower per face in
    larger batches (their activations outgrow the caches)."""
    return 32 if torch.device(device).type == "cuda" else 1


@torch.no_grad()
def fake_probabilities(model: nn.Module, crops: np.ndarray, device: str | torch.device, batch_size: int | None = None,
                       bf16: bool = False) -> list[float]:
    """softmax[:, 1] of the model on RGB uint8 NHWC crops, in batches (None: `default_batch`; bf16 autocast on CUDA
    when asked)."""
    scores: list[float] = []
    batch_size = batch_size or default_batch(device)
    amp = torch.autocast("cuda", torch.bfloat16) if bf16 and torch.device(device).type == "cuda" else nullcontext()
    for i in range(0, len(crops), batch_size):
        batch = torch.from_numpy(crops[i:i + batch_size]).to(device, non_blocking=True)
        with amp:
            logits = model(batch.permute(0, 3, 1, 2).float().div_(255))
        scores.extend(logits.float().softmax(1)[:, 1].cpu().tolist())
    return scores


class Crops(NamedTuple):
    crops: np.ndarray  # (k, size, size, 3) uint8, the kept faces of every frame
    where: list[tuple[int, list[float]]]  # (frame index, box x0 y0 x1 y1) of each crop
    n_frames: int
    bad_faces: int  # faces whose box cannot be cropped (degenerate, outside the frame): skipped
    n_wanted: int  # frames asked for (`frames_wanted`)


def face_crops(path: str | Path, batches: Iterable[list[tuple[int, np.ndarray]]], detector: FaceDetector, size: int,
               wanted: int, watch: Stopwatch) -> Crops:
    """Detect the faces of decoded frame batches (of the `wanted` frames asked for), keep those of at least half the
    largest area, crop each with the test margins and resize it to `size`."""
    crops, where, n_frames, bad = [], [], 0, 0
    for chunk in batches:
        n_frames += len(chunk)
        watch.lap("decode")
        rgbs = [rgb for _, rgb in chunk]
        found = [detector.detect(rgbs[0], image=True)] if is_image(path) else detector.detect_frames(rgbs)
        watch.lap("detect")
        for (index, rgb), faces in zip(chunk, found, strict=True):
            for face in keep_large(faces):
                try:
                    x0, y0, x1, y1 = box_crop(rgb, face.box, None)  # the val/test margins
                except BadSample as e:
                    _logger.warning("%s, frame %d: face skipped (%s)", path, index, e)
                    bad += 1
                    continue
                crops.append(cv2.resize(rgb[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_LINEAR))
                where.append((index, face.box[:2].reshape(-1).tolist()))
        watch.lap("crop")
    return Crops(np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8), where, n_frames, bad, wanted)


def crop_scores(crops: Crops, model: nn.Module, device: str | torch.device, batch_size: int | None,
            bf16: bool) -> MediaScores:
    probs = fake_probabilities(model, crops.crops, device, batch_size, bf16)
    return MediaScores([FaceScore(i, box, p) for (i, box), p in zip(crops.where, probs, strict=True)], crops.n_frames,
                       crops.bad_faces, crops.n_wanted)


def score_media(path: str | Path, detector: FaceDetector, model: nn.Module, size: int, frames: int = 32,
                device: str | torch.device = "cpu", batch_size: int | None = None, timer: dict | None = None,
                bf16: bool = False, batches: Iterable[list[tuple[int, np.ndarray]]] | None = None) -> MediaScores:
    """Every kept face of `frames` frames of a video (or of an image) with its fake probability; `batches`: those
    frames already decoded (`read_frame_batches`), else read here."""
    watch = Stopwatch(timer)
    batches = read_frame_batches(path, frames) if batches is None else batches
    crops = face_crops(path, batches, detector, size, frames_wanted(path, frames), watch)
    scores = crop_scores(crops, model, device, batch_size, bf16)
    watch.lap("model")
    return scores

"""Fixtures and helpers shared by the test modules: generated data, clips of grey squares, spawned ranks."""
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from src.common.distributed import free_port, init_distributed, leave
from src.common.layout import REFERENCE_FACES
from src.data.synthetic import generate_dataset
from src.faces.detectors import Face

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
REFERENCE = Path(__file__).resolve().parents[1] / ".ref"


@pytest.fixture(scope="session")
def reference_packages() -> Path:
    """The folder holding requirements-ref.txt's packages (the README's test line installs them; CI must have them)."""
    if not (REFERENCE / "retinaface").is_dir() or not (REFERENCE / "albumentations").is_dir():
        message = (f"the reference packages are not in {REFERENCE}: "
                   f"pip install --no-deps --target .ref -r requirements-ref.txt")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REFERENCE


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Callable[..., Path]:
    """make(name, **keys) -> a config.json in a new folder: a small generated FF++ root (6 videos, 2 frames each),
    runs in that folder's output/, and `keys`. The data root is shared and read-only."""
    root = generate_dataset(tmp_path_factory.mktemp("tiny") / "data", videos=6, frames=2, frame_size=(160, 128),
                            face_size=60)

    def make(name: str, **keys) -> Path:
        path = tmp_path_factory.mktemp(name) / "config.json"
        path.write_text(json.dumps(dict(data_root=str(root), output_dir=str(path.parent / "output"), **keys)))
        return path

    return make


def write_video(path, frames: list[np.ndarray], fps: int = 10) -> None:
    """RGB frames to a video: MPEG-4 Part 2 in .mp4, Motion JPEG in .avi (both written by OpenCV's FFmpeg)."""
    h, w = frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if str(path).endswith(".mp4") else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


# A frame is three 64 x 64 squares of grey levels: two large faces (left, middle) and a small one (right) that the
# half-area filter must drop. Level 0 means no face there; a face's fake probability is its level / 255.
SQUARE, SMALL = 64, 16
CLIPS = {  # name -> per frame (left, middle, right) levels; 8 frames, of which frames 0, 2, 5, 7 are sampled
    "real/r0.avi": [(40, 60, 250)] * 4 + [(80, 20, 250)] * 4,
    "real/r1.avi": [(0, 100, 0), (200, 0, 0), (0, 30, 0), (0, 0, 0), (200, 0, 0), (90, 0, 0), (200, 0, 0), (0, 0, 0)],
    "fake/f0.avi": [(150, 0, 0)] * 4 + [(0, 230, 0)] * 4,
    "fake/f1.avi": [(120, 70, 250)] * 8,
    "fake/small.avi": [(0, 0, 250)] * 8,  # the small face alone is the largest one: kept
    "fake/empty.avi": [(0, 0, 0)] * 8,
}


def clip_frame(levels) -> np.ndarray:
    frame = np.zeros((SQUARE, 3 * SQUARE, 3), np.uint8)
    for k, level in enumerate(levels):
        frame[:, k * SQUARE:(k + 1) * SQUARE] = level
    return frame


class SquareDetector:
    """A face in each square whose grey level is not ~0; the right-hand one is small."""

    def describe(self):
        return {"detector": "squares"}

    def detect_frames(self, frames):
        return [self.detect(f) for f in frames]

    def detect(self, rgb, image=False):
        found = []
        for k in range(3):
            if rgb[SQUARE // 2, k * SQUARE + SQUARE // 2, 0] > 10:
                half = 24 if k < 2 else SMALL // 2
                c = (k * SQUARE + SQUARE // 2, SQUARE // 2)
                box = [[c[0] - half, c[1] - half], [c[0] + half, c[1] + half]] + [c] * 5
                found.append(Face(np.array(box, np.float32), None, 1.0))
        return sorted(found, key=lambda f: -f.area)


class GreyModel(nn.Module):
    """Fake probability = mean of the red channel of the crop: logits (0, logit(p))."""

    def forward(self, x):
        p = x[:, 0].mean((1, 2)).clamp(1e-4, 1 - 1e-4)
        return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], 1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    for name, levels in CLIPS.items():
        (root / name).parent.mkdir(exist_ok=True)
        write_video(root / name, [clip_frame(lv) for lv in levels])
    cv2.imwrite(str(root / "real/photo.png"), clip_frame((30, 90, 0)))  # an image is one frame
    return root


@pytest.fixture
def keep_torch_threads():
    """The test process's torch threads as they were (evaluate.main gives its process the cores its workers leave)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def student_checkpoint(path, student_image_size):
    """A stage-1-like checkpoint of a tiny test_resnet student at `path`; the model."""
    from src.models.networks import create_classifier

    model = create_classifier("test_resnet")
    torch.save({"model": model.state_dict(), "arch": "test_resnet", "epoch": 1, "val_auc": 0.5,
                "config": {"image_size": 48, "student_image_size": student_image_size}}, path)
    return model


def evaluate_cli(folder, out, monkeypatch, calls=None, *extra, weights=None):
    """results.json of the CLI on `folder` (SquareDetector, GreyModel) with `weights` (default: out/../model.pth)."""
    if weights is None:
        weights = out.parent / "model.pth"
        if not weights.is_file():
            weights.parent.mkdir(parents=True, exist_ok=True)
            weights.write_bytes(b"a model")

    def detector(*args, **kwargs):
        found = SquareDetector()
        if calls is not None:
            found.detect_frames = lambda frames: calls.append(len(frames)) or [found.detect(f) for f in frames]
        return found

    from src import evaluate
    from src.common.logs import cli
    from src.scoring import evaluation, score

    monkeypatch.setattr(evaluation, "make_detector", detector)
    monkeypatch.setattr(score, "load_classifier", lambda path: (GreyModel(), 32, REFERENCE_FACES))
    cli(lambda: evaluate.main(["--weights", str(weights), "--dataset", "folder", "--root", str(folder), "--frames", "4",
                               "--out", str(out), "--device", "cpu", "--workers", "0", *extra]))
    return json.loads((out / "results.json").read_text())


def run_ranks(fn, world: int = 2, *args) -> list:
    """fn(dist, *args) in `world` fresh processes joined over gloo; their results in rank order."""
    port = free_port()
    with ProcessPoolExecutor(world, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_rank, fn, rank, world, port, *args) for rank in range(world)]
        return [job.result(timeout=120) for job in jobs]


def _rank(fn, rank: int, world: int, port: int, *args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist = init_distributed(cpu=True)
    try:
        return fn(dist, *args)
    finally:
        leave(dist)

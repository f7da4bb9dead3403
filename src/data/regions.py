"""The face-region layout (format and usage: src/regions.py): per frame, only the pixels its SBI samples can read."""
from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from tqdm import tqdm

from src.common.layout import video_dir
from src.common.logs import MissingFile
from src.common.workers import fork_safe_opencv, one_thread
from src.data.dataset import REGIONS_SOURCE, check_regions_source, faces_digest, regions_match_frames
from src.faces.detectors import FACES_FILE
from src.faces.geometry import sample_region

_logger = logging.getLogger(__name__)


def write_region(frame: Path, folder: Path) -> bool:
    """The region of one frame into `folder`; False when the frame cannot be read (an empty region keeps its place)."""
    img = cv2.imread(str(frame), cv2.IMREAD_COLOR)  # as the dataset reads frames
    if img is None:
        _logger.warning("%s: unreadable frame: an empty region keeps its place (training replaces it)", frame)
        np.savez(folder / f"{frame.stem}.npz", image=np.zeros((0, 0, 3), np.uint8), where=np.zeros((2, 2), np.int32))
        return False
    h, w = img.shape[:2]
    try:
        landmarks = np.load(frame.parents[2] / "landmarks" / frame.parent.name / f"{frame.stem}.npy")
        x0, y0, x1, y1 = sample_region(landmarks[0].astype(np.int32), w, h)
    except (OSError, ValueError, IndexError):
        x0, y0, x1, y1 = 0, 0, 0, 0
    if x1 - x0 < 2 or y1 - y0 < 2:  # no crop: the whole frame, so that training reports this frame as it would
        x0, y0, x1, y1 = 0, 0, w, h
    np.savez(folder / f"{frame.stem}.npz", image=img[y0:y1, x0:x1], where=np.array([[x0, y0], [w, h]], np.int32))
    return True


def write_video(frames: Path) -> int:
    """regions/<vid> of the frames/<vid> folder `frames`; returns the number of regions written."""
    final = frames.parents[1] / "regions" / frames.name
    tmp = final.with_name(f".{frames.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    written = sum(write_region(p, tmp) for p in sorted(frames.glob("*.png")))
    shutil.rmtree(final, ignore_errors=True)  # regions of frames preprocessed again
    tmp.rename(final)
    return written


def make_regions(root: str | Path, compression: str = "c23", workers: int = 0) -> tuple[int, int]:
    """Write the regions of every video not done yet; returns (videos written, regions written)."""
    base = video_dir(root, compression)
    if not (base / "frames").is_dir():
        raise MissingFile(f"{base / 'frames'} not found: preprocess the videos first (python -m src.preprocess)")
    if (base / "regions").is_dir():
        check_regions_source(base, "run this again")
    else:
        (base / "regions").mkdir()
        (base / "regions" / REGIONS_SOURCE).write_text(json.dumps({FACES_FILE: faces_digest(base)}))
    todo = [d for d in sorted((base / "frames").iterdir()) if d.is_dir() and not d.name.startswith(".") and not (
        (base / "regions" / d.name).is_dir() and regions_match_frames(base, d.name))]
    if workers <= 1:
        return len(todo), _counted(map(write_video, todo), len(todo))
    fork_safe_opencv()
    with multiprocessing.get_context("fork").Pool(workers, initializer=one_thread) as pool:
        return len(todo), _counted(pool.imap_unordered(write_video, todo), len(todo))


def _counted(results: Iterable[int], total: int) -> int:
    """The sum of `results`, with a progress bar over videos."""
    written = 0
    with tqdm(total=total, desc="regions", unit="video", dynamic_ncols=True) as bar:
        for n in results:
            written += n
            bar.update(1)
    return written


def disk_mb(folder: Path) -> float:
    """Megabytes of the files under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20

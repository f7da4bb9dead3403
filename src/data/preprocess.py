"""FF++ videos to the SBI layout: frames, landmarks and face boxes per video (format and usage: src/preprocess.py)."""
from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from src.common.distributed import Dist, host_barrier
from src.common.layout import KINDS, MANIPULATIONS, videos_dir
from src.common.logs import BadInput, MissingFile
from src.common.workers import fork_safe_opencv, one_thread
from src.faces.detectors import (
    FACES_FILE,
    DlibDetector,
    FaceDetector,
    UnreadableMedia,
    frame_count,
    read_frame_batches,
)

_logger = logging.getLogger(__name__)


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    frames: int = 0
    no_face_frames: int = 0
    no_face_videos: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def sequence_dirs(root: str | Path, compression: str, sequences: list[str] | None = None) -> list[Path]:
    """The videos/ folders to process: originals ('youtube') and the four FF++ manipulations found, or `sequences`."""
    root = Path(root)

    def videos(name: str) -> Path:
        return videos_dir(root, name, compression)

    if sequences:
        missing = [str(videos(s)) for s in sequences if not videos(s).is_dir()]
        if missing:
            raise MissingFile(f"no videos folder {', '.join(missing)} (FF++ layout: "
                              f"{videos_dir('<root>', 'youtube', '<c>')}, {videos_dir('<root>', '<name>', '<c>')})")
        return [videos(s) for s in sequences]
    found = [videos(s) for s in ("youtube", *MANIPULATIONS) if videos(s).is_dir()]
    if videos("youtube") not in found:
        raise MissingFile(f"{videos('youtube')} not found: download FF++ with its script (-d original "
                                f"-c {compression} -t videos) into {root}")
    return found


def _extent(landmarks: np.ndarray) -> float:
    return float(np.prod(landmarks.max(0) - landmarks.min(0)))


def process_video(path: Path, out: Path, detector: FaceDetector, landmarker: DlibDetector, frames: int,
                  summary: Summary) -> None:
    """Write the frames with a face, their landmarks and boxes of one video under `out` (its sequence folder)."""
    vid, tmp = path.stem, {k: out / k / f".{path.stem}.partial" for k in KINDS}
    for folder in tmp.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    width, written = max(3, len(str(frame_count(path) - 1))), 0  # one width per video, so names sort by index
    try:
        for chunk in read_frame_batches(path, frames):
            for (index, rgb), faces in zip(chunk, detector.detect_frames([rgb for _, rgb in chunk]), strict=True):
                summary.frames += 1
                marks = faces if detector is landmarker else landmarker.detect(rgb)
                landmarks = sorted((f.landmarks for f in marks), key=_extent, reverse=True)
                if not faces or not landmarks:
                    summary.no_face_frames += 1
                    continue
                name = f"{index:0{width}d}"
                written += 1
                cv2.imwrite(str(tmp["frames"] / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                np.save(tmp["landmarks"] / f"{name}.npy", np.stack(landmarks).astype(np.int32))
                np.save(tmp["retina"] / f"{name}.npy", np.stack([f.box for f in faces]).astype(np.float32))
    except UnreadableMedia as e:
        _logger.warning("%s", e)
        summary.unreadable.append(str(path))
        for folder in tmp.values():
            shutil.rmtree(folder)
        return
    if written == 0:
        summary.no_face_videos.append(str(path))
    for kind, folder in tmp.items():  # frames/<vid> last: it marks the video as finished
        final = out / kind / vid
        shutil.rmtree(final, ignore_errors=True)
        folder.rename(final)
    summary.done += 1


def record_face_source(out: Path, info: dict) -> None:
    """Write `out`/faces.json, or check that the one there describes the same detector, landmarks and frames."""
    path = out / FACES_FILE
    if path.is_file():
        before = json.loads(path.read_text())
        if before != info:
            raise BadInput(f"{out} was preprocessed with {before}, not {info}: finish it with the same --detector, "
                             f"--shape-predictor and --frames, or delete its frames/, landmarks/, retina/, regions/ "
                             f"and {FACES_FILE} to start again")
    elif (out / "frames").is_dir() and any((out / "frames").iterdir()):
        raise BadInput(f"{out} holds frames but no {FACES_FILE}: it was made by other code (e.g. the SBI "
                         f"reference's) and is not mixed with this run's; preprocess into another root")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info, indent=2))


_POOL: dict = {}  # the detectors of a preprocessing run, inherited by its forked worker processes


def _process_one(job: tuple[Path, Path, int]) -> Summary:
    summary = Summary()
    process_video(*job[:2], _POOL["detector"], _POOL["landmarker"], job[2], summary)
    return summary


def merge(into: Summary, other: Summary) -> None:
    for f in fields(Summary):
        setattr(into, f.name, getattr(into, f.name) + getattr(other, f.name))


def preprocess(root: str | Path, compression: str, detector: FaceDetector, landmarker: DlibDetector, frames: int = 32,
               sequences: list[str] | None = None, workers: int = 0, dist: Dist = Dist()) -> dict[str, Summary]:
    """Process every unfinished video of the chosen sequences; returns a summary per sequence folder.

    `detector` gives the boxes (retina/), `landmarker` the landmarks (landmarks/); they may be one dlib detector.
    `workers` processes take one video each at a time (a detector on the CPU); under torchrun each process takes
    every world-th video, and its summaries are its own.
    """
    info = {**landmarker.describe(), **detector.describe(), "frames": frames}
    if workers > 1 and getattr(detector, "device", torch.device("cpu")).type == "cuda":
        _logger.info("RetinaFace runs on the GPU: one process per GPU (torchrun), no --workers")
        workers = 0
    summaries = {}
    for videos in sequence_dirs(root, compression, sequences):
        out, summary = videos.parent, Summary()
        if dist.is_main:
            record_face_source(out, info)
        host_barrier(dist)  # the ranks that finished the previous folder first wait here for the slowest
        paths = sorted(videos.glob("*.mp4"))
        if not paths:
            _logger.warning("%s holds no .mp4 video", videos)
        todo = [p for p in paths[dist.rank::dist.world] if not (out / "frames" / p.stem).is_dir()]
        summary.skipped = len(paths[dist.rank::dist.world]) - len(todo)
        bar = tqdm(total=len(todo), desc=str(videos.relative_to(root)), dynamic_ncols=True)
        if workers > 1:
            _POOL.update(detector=detector, landmarker=landmarker)
            fork_safe_opencv()
            with multiprocessing.get_context("fork").Pool(workers, initializer=one_thread) as pool:
                for done in pool.imap_unordered(_process_one, [(p, out, frames) for p in todo]):
                    merge(summary, done)
                    bar.update(1)
        else:
            for path in todo:
                process_video(path, out, detector, landmarker, frames, summary)
                bar.update(1)
        bar.close()
        summaries[str(out)] = summary
    return summaries

"""FF++ videos to the SBI layout: frames, landmarks and face boxes per video.

    python -m src.preprocess --root data/FaceForensics++ --compression c23 [--frames 32] [--detector retinaface]

Reads <root>/original_sequences/youtube/<c>/videos/*.mp4 and manipulated_sequences/<M>/<c>/videos/*.mp4 and
writes next to each videos/ folder, as the SBI reference's preprocessing does:
    frames/<vid>/<NNN>.png      the full frame, NNN its index in the video (zero-padded, 3 digits or more)
    landmarks/<vid>/<NNN>.npy   int32 (n_faces, 81 or 68, 2): every dlib face, largest landmark extent first
    retina/<vid>/<NNN>.npy      float32 (n_faces, 7, 2): every detector box (corners, then 5 keypoints), largest first
    faces.json                  which detector and landmark model made the folder (training records it)
Frames at linspace(0, n - 1, frames) rounded down. A frame is written when both dlib (landmarks) and the detector
(boxes) find a face; the others are counted and reported. With --detector dlib, dlib's rectangles are the boxes. A
video is finished when its frames/<vid> folder exists: it is written under a temporary name and renamed last, so an
interrupted run resumes cleanly (with the detector and landmark model of faces.json: mixing them is refused).
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from src.common.distributed import Dist, finish, host_barrier, host_gather, init_distributed, leave
from src.common.layout import COMPRESSIONS, MANIPULATIONS
from src.common.logs import BadInput, MissingFile, UserError, cli, setup_logging
from src.faces.detectors import (
    FACES_FILE,
    Detector,
    DlibDetector,
    UnreadableMedia,
    add_detector_args,
    fork_safe_opencv,
    frame_count,
    make_detector,
    one_thread,
    read_frame_batches,
)

_logger = logging.getLogger(__name__)
KINDS = ("landmarks", "retina", "frames")  # frames last: its folder marks a finished video


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
        base = root / "original_sequences" if name in ("youtube", "actors") else root / "manipulated_sequences"
        return base / name / compression / "videos"

    if sequences:
        missing = [str(videos(s)) for s in sequences if not videos(s).is_dir()]
        if missing:
            raise MissingFile(f"no videos folder {', '.join(missing)} (FF++ layout: <root>/original_sequences/"
                                    f"youtube/<c>/videos, <root>/manipulated_sequences/<name>/<c>/videos)")
        return [videos(s) for s in sequences]
    found = [videos(s) for s in ("youtube", *MANIPULATIONS) if videos(s).is_dir()]
    if videos("youtube") not in found:
        raise MissingFile(f"{videos('youtube')} not found: download FF++ with its script (-d original "
                                f"-c {compression} -t videos) into {root}")
    return found


def _extent(landmarks: np.ndarray) -> float:
    return float(np.prod(landmarks.max(0) - landmarks.min(0)))


def process_video(path: Path, out: Path, detector: Detector, landmarker: DlibDetector, frames: int,
                  summary: Summary) -> None:
    """Write the frames with a face, their landmarks and boxes of one video under `out` (its sequence folder)."""
    vid, tmp = path.stem, {k: out / k / f".{path.stem}.partial" for k in KINDS}
    for d in tmp.values():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
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
        for d in tmp.values():
            shutil.rmtree(d)
        return
    if written == 0:
        summary.no_face_videos.append(str(path))
    for kind, d in tmp.items():  # frames/<vid> last: it marks the video as finished
        final = out / kind / vid
        shutil.rmtree(final, ignore_errors=True)
        d.rename(final)
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


def preprocess(root: str | Path, compression: str, detector: Detector, landmarker: DlibDetector, frames: int = 32,
               sequences: list[str] | None = None, workers: int = 0, d: Dist = Dist()) -> dict[str, Summary]:
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
        if d.is_main:
            record_face_source(out, info)
        host_barrier(d)  # the ranks that finished the previous folder first wait here for the slowest
        paths = sorted(videos.glob("*.mp4"))
        if not paths:
            _logger.warning("%s holds no .mp4 video", videos)
        todo = [p for p in paths[d.rank::d.world] if not (out / "frames" / p.stem).is_dir()]
        summary.skipped = len(paths[d.rank::d.world]) - len(todo)
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


def report(summaries: dict[str, Summary]) -> None:
    """Print one line per sequence and list the videos without any face or unreadable."""
    for out, s in summaries.items():
        print(f"{out}: {s.done} videos processed, {s.skipped} already done; {s.frames} frames read, "
              f"{s.no_face_frames} without a face (not written); {len(s.no_face_videos)} videos without any face, "
              f"{len(s.unreadable)} unreadable")
        for kind, paths in (("no face", s.no_face_videos), ("unreadable", s.unreadable)):
            for p in paths:
                print(f"  {kind}: {p}")


def main(argv: list[str] | None = None) -> None:

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="FF++ root (holding original_sequences/)")
    ap.add_argument("--compression", choices=COMPRESSIONS, default="c23")
    ap.add_argument("--frames", type=int, default=32, help="frames per video, at linspace (default 32)")
    add_detector_args(ap)
    ap.add_argument("--sequences", nargs="+", help="e.g. youtube Deepfakes (default: youtube and the four FF++ "
                                                   "manipulations present)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="RetinaFace's device")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                    help="processes working on one video each with a CPU detector (default: %(default)s)")
    a = ap.parse_args(argv)
    setup_logging()
    d = init_distributed(cpu=not a.device.startswith("cuda"))  # under torchrun: each process a share of the videos
    try:
        landmarker = DlibDetector(a.shape_predictor)
        detector = landmarker if a.detector == "dlib" else make_detector(
            a.detector, retinaface_weights=a.retinaface_weights, device=d.device if d.world > 1 else a.device)
        summaries = preprocess(a.root, a.compression, detector, landmarker, a.frames, a.sequences, a.workers, d)
    except UserError as e:
        leave(d)
        ap.exit(2, f"error: {e}\n")
    for rank_summaries in host_gather(summaries, d)[1:]:
        for out, s in rank_summaries.items():
            merge(summaries[out], s)
    if d.is_main:
        report(summaries)
    finish(d)


if __name__ == "__main__":
    cli(main)

"""FF++ videos to the SBI layout (SBI_REFERENCE.md section 1): frames, landmarks and face boxes per video.

    python -m src.preprocess --root data/FaceForensics++ --compression c23 [--frames 32] [--detector dlib]

Reads <root>/original_sequences/youtube/<c>/videos/*.mp4 and manipulated_sequences/<M>/<c>/videos/*.mp4 and
writes next to each videos/ folder:
    frames/<vid>/<NNN>.png      the full frame, NNN its index in the video (zero-padded, 3 digits or more)
    landmarks/<vid>/<NNN>.npy   int32 (n_faces, 81 or 68, 2), largest face first
    retina/<vid>/<NNN>.npy      float32 (n_faces, 7, 2): box corners then 5 keypoints, largest face first
Frames without a face are not written (they are counted and reported). A video is finished when its frames/<vid>
folder exists: it is written under a temporary name and renamed last, so an interrupted run resumes cleanly.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .faces import Detector, UnreadableMedia, add_detector_args, frame_count, make_detector, read_frames

_logger = logging.getLogger(__name__)
MANIPULATIONS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
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
            raise FileNotFoundError(f"no videos folder {', '.join(missing)} (FF++ layout: <root>/original_sequences/"
                                    f"youtube/<c>/videos, <root>/manipulated_sequences/<name>/<c>/videos)")
        return [videos(s) for s in sequences]
    found = [videos(s) for s in ("youtube", *MANIPULATIONS) if videos(s).is_dir()]
    if videos("youtube") not in found:
        raise FileNotFoundError(f"{videos('youtube')} not found: download FF++ with its script (-d original "
                                f"-c {compression} -t videos) into {root}")
    return found


def process_video(path: Path, out: Path, detector: Detector, frames: int, summary: Summary) -> None:
    """Write the frames with a face, their landmarks and boxes of one video under `out` (its sequence folder)."""
    vid, tmp = path.stem, {k: out / k / f".{path.stem}.partial" for k in KINDS}
    for d in tmp.values():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    width, written = max(3, len(str(frame_count(path) - 1))), 0  # one width per video, so names sort by index
    try:
        for index, rgb in read_frames(path, frames):
            faces = detector.detect(rgb)
            summary.frames += 1
            if not faces:
                summary.no_face_frames += 1
                continue
            landmarks = [f.landmarks for f in faces if f.landmarks is not None]  # RetinaFace: dlib's, by overlap
            if not landmarks:
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


def preprocess(root: str | Path, compression: str, detector: Detector, frames: int = 32,
               sequences: list[str] | None = None) -> dict[str, Summary]:
    """Process every unfinished video of the chosen sequences; returns a summary per sequence folder."""
    summaries = {}
    for videos in sequence_dirs(root, compression, sequences):
        out, summary = videos.parent, Summary()
        paths = sorted(videos.glob("*.mp4"))
        if not paths:
            _logger.warning("%s holds no .mp4 video", videos)
        for path in tqdm(paths, desc=str(videos.relative_to(root)), dynamic_ncols=True):
            if (out / "frames" / path.stem).is_dir():
                summary.skipped += 1
                continue
            process_video(path, out, detector, frames, summary)
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
    from .engine import setup_logging  # noqa: PLC0415 (the CLI's logging only)

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="FF++ root (holding original_sequences/)")
    ap.add_argument("--compression", choices=("raw", "c23", "c40"), default="c23")
    ap.add_argument("--frames", type=int, default=32, help="frames per video, at linspace (default 32)")
    add_detector_args(ap)
    ap.add_argument("--sequences", nargs="+", help="e.g. youtube Deepfakes (default: youtube and the four FF++ "
                                                   "manipulations present)")
    a = ap.parse_args(argv)
    setup_logging()
    try:
        detector = make_detector(a.detector, a.shape_predictor, retinaface_weights=a.retinaface_weights,
                                 landmarks=True)
        summaries = preprocess(a.root, a.compression, detector, a.frames, a.sequences)
    except FileNotFoundError as e:
        ap.exit(2, f"error: {e}\n")
    report(summaries)


if __name__ == "__main__":
    main()

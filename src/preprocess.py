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
import argparse
import os

import torch

from src.common.distributed import finish, host_gather, init_distributed, leave
from src.common.layout import COMPRESSIONS
from src.common.logs import UserError, cli, setup_logging
from src.data.preprocess import Summary, merge, preprocess
from src.faces.detectors import DlibDetector, add_detector_args, make_detector


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
    dist = init_distributed(cpu=not a.device.startswith("cuda"))  # under torchrun: each process a share of the videos
    try:
        landmarker = DlibDetector(a.shape_predictor)
        detector = landmarker if a.detector == "dlib" else make_detector(
            a.detector, retinaface_weights=a.retinaface_weights, device=dist.device if dist.world > 1 else a.device)
        summaries = preprocess(a.root, a.compression, detector, landmarker, a.frames, a.sequences, a.workers, dist)
    except UserError:
        leave(dist)
        raise
    for rank_summaries in host_gather(summaries, dist)[1:]:
        for out, s in rank_summaries.items():
            merge(summaries[out], s)
    if dist.is_main:
        report(summaries)
    finish(dist)


if __name__ == "__main__":
    cli(main)

"""The face-region layout: per frame, only the pixels its SBI samples can read, so training decodes far less.

    python -m src.regions --root data/FaceForensics++ --compression c23 [--workers 4]

Reads frames/ and landmarks/ of <root>/original_sequences/youtube/<c>/ (made by src.preprocess or by the SBI
reference's code) and writes beside them:
    regions/<vid>/<NNN>.npz   "image": the part of the frame (uint8 BGR, uncompressed: nothing to decode) that the
                              first crop around the first face's landmarks covers, with and without the horizontal
                              flip (every later step stays inside that crop); "where": int32 [[x0, y0], [W, H]],
                              where the region lies in its frame and the frame's size
    regions/source.json       the digest of the faces.json the regions were cut with
Landmarks and boxes stay in their files, in frame coordinates. Training reads the regions with "data_layout":
"regions"; its samples are bit-identical to the full frames' (tests/test_regions.py). A frame whose landmarks give no
crop keeps its whole frame, an unreadable frame keeps its place with an empty region: both layouts list the same
frames, and training replaces such a frame in both alike. A video is done when regions/<vid> exists (written under a
temporary name, renamed last) and holds the frames of frames/<vid>, so an interrupted run resumes and a video
preprocessed again is cut again. Regions of another faces.json (the data preprocessed again) are refused.
"""
import argparse
import os

from src.common.layout import COMPRESSIONS, video_dir
from src.common.logs import cli, setup_logging
from src.data.regions import disk_mb, make_regions


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="FF++ root (holding original_sequences/)")
    ap.add_argument("--compression", choices=COMPRESSIONS, default="c23")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes (default: %(default)s)")
    a = ap.parse_args(argv)
    setup_logging()
    videos, regions = make_regions(a.root, a.compression, a.workers)
    base = video_dir(a.root, a.compression)
    print(f"{videos} videos, {regions} regions written to {base / 'regions'}; disk: regions "
          f"{disk_mb(base / 'regions'):.0f} MB, full frames {disk_mb(base / 'frames'):.0f} MB. Train on them with "
          f"\"data_layout\": \"regions\".")


if __name__ == "__main__":
    cli(main)

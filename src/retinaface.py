"""Time RetinaFace detection at the protocol's sizes (the detector itself is src/faces/retinaface.py)."""
import argparse

import torch

from src.common.logs import cli, parse_size
from src.faces.retinaface import VIDEO_MAX_SIZE, time_detection


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Time RetinaFace detection: frames per second at the protocol's sizes.")
    ap.add_argument("--size", type=parse_size, default=(1280, 720), help="frame WxH (default 1280x720, FF++'s)")
    ap.add_argument("--weights", help="RetinaFace weights (default: random weights, same speed)")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    for max_size, what in ((VIDEO_MAX_SIZE, "video setting"), (None, "photo setting")):
        fps = time_detection(a.size, max_size, a.frames, a.batch, a.device, a.weights)
        print(f"RetinaFace {a.size[0]}x{a.size[1]} at max_size {max_size or max(a.size)} ({what}), {a.device}, "
              f"batch {a.batch}: {fps:.2f} frames/s")


if __name__ == "__main__":
    cli(main)

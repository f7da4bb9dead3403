"""Fake probability of images and videos, per face and overall.

    python -m src.predict --weights weights/FFc23.tar photo.jpg clip.mp4 [--json] [--frames 32] [--save-vis DIR]

An input that is a folder stands for every image and video under it.

A video is scored as in evaluation (src/scoring/score.py, the SBI test protocol): frame score = max over its faces,
overall = mean over frames with a face; an image is one frame. An input without any face has no fake probability (null).
--save-vis DIR draws each face's box and fake probability: DIR/<name>.png for an image; for a video the frames it
scored, DIR/<name>/<frame>.png, and DIR/<name>_scores.png, the frame scores over time (or "no face found").
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from src.common.logs import cli, count_arg, setup_logging
from src.faces.detectors import add_detector_args
from src.scoring.predict import predict_inputs, print_human


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", metavar="INPUT", help="images, videos, or folders of them")
    ap.add_argument("--weights", required=True, help="FFc23.tar, a timm B4 state dict, or our checkpoint (glob ok), "
                                                     "or with --runtime onnx an exported .onnx file")
    ap.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                    help="onnx: score with the exported ONNX or int8 file of src.export in ONNX Runtime (CPU)")
    ap.add_argument("--json", action="store_true", help="print a JSON list, one object per input")
    ap.add_argument("--frames", type=count_arg(1), default=32, help="frames per video, at linspace (default 32)")
    add_detector_args(ap, default=None)
    ap.add_argument("--batch-size", type=count_arg(1), help="faces per model call (default: 32 on CUDA, 1 on the CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--save-vis", metavar="DIR", help="draw the faces and their fake probabilities into DIR")
    a = ap.parse_args(argv)
    setup_logging()
    results = predict_inputs(a.inputs, a.weights, a.runtime, a.frames, a.detector, a.shape_predictor,
                             a.retinaface_weights, a.batch_size, a.device, a.save_vis)
    if a.json:
        print(json.dumps(results, indent=2))
    else:
        print_human(results)
    if any(r["error"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    cli(main)

"""Video-level evaluation of any checkpoint on the standard deepfake test sets, with the SBI test protocol.

    python -m src.evaluate --weights weights/FFc23.tar --dataset cdf --root data/Celeb-DF-v2 [--frames 32] [--out DIR]

Per video: `frames` frames at linspace(0, n - 1, frames) rounded down, faces detected (by default with the detector
that made the model's training data: RetinaFace at 2048 px for FFc23.tar, as published), faces below half the
largest one's area dropped, each cropped with the test margins (w/8, h/8 per side), resized to the model's input and
scored; frame score = max over faces, video score = mean over frames with a face. A video without any face scores
0.5 and is listed; a face whose box cannot be cropped is skipped and counted (bad_faces). Writes results.json,
videos.csv and roc.png to `--out` (default output/evaluate_<dataset>_<time>/) and prints a table.

--workers processes decode, detect and crop videos ahead of the model, one thread each at nice +10, and the
scoring process gets the cores they leave; each scored video is appended to videos.jsonl, and the same command with
an interrupted run's --out scores only the missing ones (the same model file, by content, under the same settings:
anything else is refused); under torchrun each process scores every world-th video and rank 0 merges them; --runtime
onnx scores an exported file in ONNX Runtime. A video that decodes fewer frames than it states (truncated, damaged)
is scored on the frames it has and listed in results.json as truncated.

Dataset layouts (`--root`):
    ff      FF++ root: test.json, original_sequences/youtube/<c>/videos/<id>.mp4 (real) and
            manipulated_sequences/{Deepfakes,Face2Face,FaceSwap,NeuralTextures}/<c>/videos/<a>_<b>.mp4 (both orders)
    dfd     FF++ root: original_sequences/actors/<c>/videos/*.mp4 (real), manipulated_sequences/DeepFakeDetection/
            <c>/videos/*.mp4 (fake)
    cdf     Celeb-DF v2 root: List_of_testing_videos.txt ("<1 real|0 fake> <relative path>" per line)
    dfdc    DFDC test set: labels.csv (columns filename,label; 1 = fake) and videos/<filename>
    dfdcp   DFDC Preview root: dataset.json ({path: {"label": "real"|"fake", "set": "train"|"test"}}), set == test
    ffiw    FFIW10K-v1-release: source/val/videos/*.mp4 (real), target/val/videos/*.mp4 (fake)
    folder  any root with real/ and fake/ folders of videos or images (searched recursively)
"""
from __future__ import annotations

import argparse
import os

import torch

from src.common.layout import COMPRESSIONS
from src.common.logs import cli, count_arg, setup_logging
from src.faces.detectors import add_detector_args
from src.scoring.evaluation import evaluate_dataset
from src.scoring.testsets import READERS


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="FFc23.tar, a timm B4 state dict, our checkpoint (glob ok), or "
                                                     "with --runtime onnx an exported .onnx file")
    ap.add_argument("--dataset", required=True, type=str.lower, choices=list(READERS))
    ap.add_argument("--root", required=True, help="the dataset's root folder (layouts above)")
    ap.add_argument("--frames", type=count_arg(1), default=32, help="frames per video, at linspace (default 32)")
    ap.add_argument("--out", help="output folder (default output/evaluate_<dataset>_<time>); an interrupted run's "
                                  "folder resumes it")
    ap.add_argument("--compression", choices=COMPRESSIONS, default="c23", help="ff and dfd only")
    add_detector_args(ap, default=None)
    ap.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                    help="onnx: score with the exported ONNX or int8 file of src.export in ONNX Runtime (CPU)")
    ap.add_argument("--batch", "--batch-size", dest="batch_size", type=count_arg(1),
                    help="faces per model call (default: 32 on CUDA, 1 on the CPU, where larger batches run slower "
                         "per face)")
    ap.add_argument("--workers", type=count_arg(0), default=min(4, os.cpu_count() or 1),
                    help="processes that decode, detect and crop videos ahead of the model, one thread each; the "
                         "scoring process gets the cores they leave (default: %(default)s)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action="store_true", help="the classifier under bf16 autocast (CUDA)")
    ap.add_argument("--profile", action="store_true", help="print frames/s, the threads of each stage and the "
                                                           "seconds of decode, detect, crop, model")
    a = ap.parse_args(argv)
    setup_logging()
    evaluate_dataset(a.dataset, a.root, a.weights, a.frames, a.out, a.compression, a.detector, a.shape_predictor,
                     a.retinaface_weights, a.runtime, a.batch_size, a.workers, a.device, a.bf16, a.profile)


if __name__ == "__main__":
    cli(main)

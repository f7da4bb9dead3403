"""ONNX export of a detector, checked against PyTorch with ONNX Runtime.

    python -m src.export --weights W [--format onnx|onnx-int8] [--out F] [--config CONFIG]

W is anything src.evaluate loads (FFc23.tar, a timm B4 state dict, this project's checkpoints); the input size is
its face crop size (380 for the teacher files; a student resizes the crop inside, as in src.evaluate). The file
takes `x` [N, 3, H, W] RGB in [0, 1] with a dynamic batch axis N and gives `logits` [N, 2]; run it with
`src.deploy.ort_session`. MobileViTv2 blocks are exported as `FastMobileVitV2Block`: the same function without
unfolding the feature map into patches, with each GroupNorm's affine folded into the 1x1 convolutions after it and
the output projection folded into the next 1x1 convolution (exact: tests/test_deploy.py compares it with timm's
model; the int8 student runs in a quarter less time than timm's graph in ONNX Runtime). Mean pools over H and W become
GlobalAveragePool, which int8 runs on uint8 (the teacher's 32 SE blocks).

onnx       float32. The file is then run with ONNX Runtime on random inputs and on real ones (val crops of --config's
           data root, when it exists), and the max |difference| of the fake probability to PyTorch must be < 1e-4.
onnx-int8  the deployed path: that file statically quantised to int8, calibrated on 128 train crops of --config's
           data root. Not exact: the difference is printed, and the check is the val AUC (src.benchmark).
--config defaults to the checkpoint's own training config (this project's checkpoints carry it); FFc23.tar and plain
state dicts carry none, so int8 needs --config for them (the data their crops are to come from).

Each file records in its ONNX metadata the faces record of the model's training data ("faces": the detector and
landmark model, as src.evaluate reads it from the checkpoint) and the sha256 of the weights it was exported from
("weights_sha256", which src.benchmark checks). Beside it goes its model card, the file's name with .md
(BEST_int8.onnx -> BEST_int8.md): architecture and input, training data, teacher, validation AUC, how to run and
measure it, and the terms it inherits.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from src.common.checkpoint import file_sha256, load
from src.common.config import resolve_path
from src.common.logs import BadInput, cli, make_folder, setup_logging
from src.deploy.onnx import (
    FACES_KEY,
    FORMATS,
    OPSET,
    WEIGHTS_KEY,
    data_config,
    export,
    exported_path,
    model_card,
    network,
)
from src.models.classifier import load_classifier


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="FFc23.tar, a timm B4 state dict, or our checkpoint (glob ok)")
    ap.add_argument("--format", choices=FORMATS, default="onnx")
    ap.add_argument("--out", help="output file (default: next to the weights, .onnx or _int8.onnx); its model "
                                      "card goes beside it (.md)")
    ap.add_argument("--config", help="its data root gives the real check inputs (val) and the int8 calibration "
                                     "images (train); default: the checkpoint's own training config")
    a = ap.parse_args(argv)
    setup_logging()
    model, crop, faces = load_classifier(a.weights)
    weights = resolve_path(a.weights, "weights")
    ckpt = load(weights)
    cfg = data_config(weights, ckpt, crop, a.config)
    if cfg is None and a.format == "onnx-int8":
        raise BadInput(f"{weights} carries no training config: pass --config, whose data root gives the int8 "
                         f"calibration crops (e.g. configs/config_SBI.json for FF++)")
    out = Path(a.out or exported_path(weights, a.format))
    make_folder(out.parent, "--out")
    metadata = {FACES_KEY: json.dumps(faces), WEIGHTS_KEY: file_sha256(weights)}
    result = export(model, crop, out, a.format, cfg, metadata)
    source = "no config" if cfg is None else f"data root {cfg.data_root}, from {a.config or 'the checkpoint'}"
    calibration = None
    if a.format == "onnx-int8":
        from src.deploy.calibration import CALIBRATION_PAIRS  # noqa: PLC0415 (the SBI data pipeline: int8 only)

        calibration = f"{CALIBRATION_PAIRS * 2} train crops ({source})"
    card = out.with_suffix(".md")
    net = network(model)
    card.write_text(model_card(out, a.format, weights, ckpt, net.pretrained_cfg["architecture"], crop,
                               crop if net is model else model.size, faces, result, calibration))
    real = "no real inputs" if result["real"] is None else f"{result['real']:.2e} on real val crops"
    if calibration:
        print(f"int8 calibrated on {calibration}")
    print(f"wrote {result['path']} ({a.format}, {crop} px, opset {OPSET}, dynamic batch; training faces: "
          f"{faces.get('detector')}) and its model card {card}")
    print(f"max |fake probability difference| to PyTorch: {result['random']:.2e} on random inputs, {real} ({source})")


if __name__ == "__main__":
    cli(main)

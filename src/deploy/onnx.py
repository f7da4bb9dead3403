"""ONNX export of a detector (src.export's library): the float32 file checked against PyTorch in ONNX Runtime, its
static int8 form, the file's metadata and its model card."""
from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from src.common.checkpoint import file_sha256
from src.common.config import Config, build_config, load_config
from src.common.logs import BadInput
from src.deploy.classifier import OrtClassifier
from src.deploy.runtime import quantize_int8
from src.models.classifier import StudentInput
from src.models.fast_mobilevit import fast_mobilevitv2

for _name in ("onnxscript", "onnx_ir"):  # the exporter's graph passes log every step at INFO
    logging.getLogger(_name).setLevel(logging.WARNING)
OPSET = 20  # the newest opset that the installed ONNX Runtime (1.2x-1.3x) runs every op of these models in
TOLERANCE = 1e-4  # max |fake probability difference| of the float32 file to PyTorch
FORMATS = ("onnx", "onnx-int8")
FACES_KEY, WEIGHTS_KEY = "faces", "weights_sha256"  # the ONNX metadata each exported file carries


def _global_pools(model: onnx.ModelProto) -> None:
    """Mean over H and W of a 4-D tensor (ReduceMean, keepdims) -> GlobalAveragePool, which int8 runs on uint8."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.input, *graph.value_info]}
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        axes = constants.get(node.input[1]) if len(node.input) > 1 else attrs.get("axes")
        if (node.op_type == "ReduceMean" and attrs.get("keepdims", 1) and ranks.get(node.input[0]) == 4
                and axes is not None and sorted(int(a) % 4 for a in np.atleast_1d(axes)) == [2, 3]):
            node.op_type = "GlobalAveragePool"
            del node.input[1:]
            del node.attribute[:]


def export_onnx(model: nn.Module, size: int, path: str | Path, opset: int = OPSET) -> Path:
    """Write `model` (eval mode) as a float32 ONNX file with a dynamic batch axis; returns `path`."""
    model = fast_mobilevitv2(copy.deepcopy(model).float().cpu())
    x = torch.rand(2, 3, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(model, (x,), input_names=["x"], output_names=["logits"], opset_version=opset,
                                    dynamo=True, dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False)
    proto = program.model_proto
    _global_pools(proto)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return Path(path)


@torch.no_grad()
def max_prob_diff(model: nn.Module, deployed: nn.Module, images: torch.Tensor) -> float:
    """Max |softmax[:, 1] difference| of two models on `images`."""
    probs = [m(images).float().softmax(1)[:, 1] for m in (model, deployed)]
    return float((probs[0] - probs[1]).abs().max())


def export(model: nn.Module, size: int, out: str | Path, fmt: str = "onnx", cfg: Config | None = None,
           metadata: dict[str, str] | None = None) -> dict:
    """Export, run with ONNX Runtime and compare to PyTorch: returns {path, random, real} max probability differences.

    The float32 file must match within TOLERANCE (ValueError otherwise). onnx-int8 needs a `cfg` whose data root
    holds train crops for calibration; `cfg`'s val crops are the real check inputs. `metadata` goes into the file's
    ONNX metadata (metadata_props).
    """
    out = Path(out)
    model = model.eval()
    if cfg is not None:
        from src.deploy.calibration import (  # noqa: PLC0415 (the SBI data pipeline only for a config's crops)
            CALIBRATION_PAIRS,
            calibration_batches,
            real_crops,
        )
    real = real_crops(cfg, "val", 8, size) if cfg is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, size, out if fmt == "onnx" else Path(tmp) / "fp32.onnx")
        if fmt == "onnx-int8":
            calibration = real_crops(cfg, "train", CALIBRATION_PAIRS, size) if cfg is not None else None
            if calibration is None:
                raise BadInput(f"int8 calibration needs face crops: the data root of the config "
                                 f"({cfg and cfg.data_root}) does not exist; pass --config with the model's data")
            quantize_int8(fp32, out, calibration_batches(calibration))
    if metadata:
        proto = onnx.load(str(out))
        onnx.helper.set_model_props(proto, {**{e.key: e.value for e in proto.metadata_props}, **metadata})
        onnx.save(proto, str(out))
    deployed = OrtClassifier(out)
    g = torch.Generator().manual_seed(0)
    result = {"path": str(out), "random": max_prob_diff(model, deployed, torch.rand(4, 3, size, size, generator=g)),
              "real": None if real is None else max_prob_diff(model, deployed, real)}
    worst = max(v for k, v in result.items() if k != "path" and v is not None)
    if fmt == "onnx" and not worst < TOLERANCE:
        raise BadInput(f"{out}: ONNX Runtime differs from PyTorch by {worst:.2e} in probability "
                         f"(limit {TOLERANCE:g})")
    return result


def data_config(weights: Path, ckpt: dict, crop: int, config: str | None) -> Config | None:
    """The config whose data feeds checks of `weights` at `crop` px: `config`, else the checkpoint's own training
    config, else None (FFc23.tar and plain state dicts carry none)."""
    if config:
        return load_config(config, [f"image_size={crop}"])
    own = ckpt.get("config")
    return build_config({**own, "image_size": crop}, source=f"{weights} (its training config)") if isinstance(
        own, dict) else None


def exported_path(weights: str | Path, fmt: str) -> Path:
    """Where src.export writes `weights`' file by default: beside them, BEST.onnx or BEST_int8.onnx."""
    weights = Path(weights)
    return weights.with_name(weights.stem + (".onnx" if fmt == "onnx" else "_int8.onnx"))


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (src.export's: FACES_KEY, WEIGHTS_KEY)."""
    return {e.key: e.value for e in onnx.load(str(path), load_external_data=False).metadata_props}


def network(model: nn.Module) -> nn.Module:
    """The classifier itself: a student from src.evaluate without its crop resize (`StudentInput`)."""
    return model.model if isinstance(model, StudentInput) else model


TERMS = """## Terms

This project's code is under the Apache License 2.0 (its LICENSE file); that licence does not cover these weights,
which inherit the terms of what made them (the project's guide, section 2, "Licences"):
- The SBI release (`FFc23.tar`, and the SBI code): its README makes code and pretrained model available for research
  and asks for a licence agreement with the authors for commercial use; its LICENSE grants non-commercial research
  use only, and its DERIVATIVES clause makes derivatives and modifications the licensor's, to be used only for your
  own non-commercial internal research and not distributed. A student distilled from `FFc23.tar` was trained to
  reproduce its outputs and is arguably such a derivative: unless the SBI authors agree otherwise, use it for your
  own non-commercial research only; do not sell it, build it into a product or service, or publish it.
- The training data: FaceForensics++ under the Terms of Use signed to download it; the landmark model that shaped
  the blend masks (dlib 68 or 81 points) is trained on iBUG 300-W, whose licence excludes commercial use.
- MobileViTv2's ImageNet weights, where a student started from them: Apple's licence (ml-cvnets).
- Each test set a score is reported on: the terms of that set.
"""


def model_card(file: Path, fmt: str, weights: Path, ckpt: dict, arch: str, crop: int, size: int, faces: dict,
               result: dict, calibration: str | None) -> str:
    """The markdown model card of an exported file (the network's input `size`, fed `crop` px; an int8 file calibrated
    on `calibration`): what it is, what made it, how to run and measure it, its terms."""
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else None
    detail = ", ".join(f"{k} {v}" for k, v in faces.items() if k != "detector")
    kind = ("int8 (static quantisation: per-channel int8 weights, uint8 activations)" if fmt == "onnx-int8"
            else "float32")
    inside = f", resized inside the file to {size} px with antialiasing, as in training" if size != crop else ""
    if config is None:
        data = ("not recorded in the weights file (FFc23.tar or a plain state dict); read as the SBI release's: FF++ "
                "real videos, ")
        teacher = "none recorded"
        auc = "not recorded in the weights file"
    else:
        data = f"`{config.get('data_root')}`, compression {config.get('compression')} (its training config); "
        teacher = (f"its training config names `{config['teacher_weights']}` ({config.get('teacher_arch')}): the "
                   f"teacher if this checkpoint comes from stage 2 (main_distillation.py); the config does not record "
                   f"which stage made it, and a stage-1 checkpoint had no teacher" if config.get("teacher_weights")
                   else "none (its training config names no teacher_weights)")
        auc = (f"{ckpt['val_auc']:.4f} at epoch {ckpt.get('epoch')} (SBI pairs of its val split, as training validated)"
               if isinstance(ckpt.get("val_auc"), float) else "not recorded")
    real = "" if result["real"] is None else f", {result['real']:.2e} on real val crops"
    check = f"max \\|fake probability difference\\| to PyTorch: {result['random']:.2e} on random inputs{real}"
    rows = [("architecture", f"`{arch}` (timm)"),
            ("input", f"`x`: float32 [N, 3, {crop}, {crop}], RGB in [0, 1]: the {crop} px face crop that "
                      f"src.evaluate cuts{inside}"),
            ("output", "`logits` [N, 2]: softmax column 1 is the fake probability"),
            ("training data", data + f"faces found by **{faces.get('detector')}** ({detail}); the file's ONNX "
                                     f"metadata `{FACES_KEY}` holds this record"),
            ("teacher", teacher),
            ("validation AUC", auc),
            ("check against PyTorch", check + (f"; calibrated on {calibration}" if fmt == "onnx-int8" else ""))]
    if fmt == "onnx-int8":
        rows.append(("int8 AUC drop", "not measured by src.export; `python -m src.benchmark --student "
                                      f"{weights} --paths eager,onnx-int8` measures the val AUC of this file against "
                                      "the float32 checkpoint (`--config C` for another val set)"))
    lines = [f"# {file.name}", "",
             f"A deepfake detector (face crop in, fake probability out), {kind} ONNX (opset {OPSET}, dynamic batch), "
             f"written by this project's `python -m src.export` from `{weights}` (sha256 `{file_sha256(weights)}`, "
             f"also in the file's metadata `{WEIGHTS_KEY}`).", "",
             "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
             "## Run it", "", "```bash",
             f"python -m src.evaluate --weights {file} --runtime onnx --dataset cdf --root data/Celeb-DF-v2",
             f"python -m src.predict --weights {weights} clip.mp4   # your own files, with the checkpoint it came from",
             "```", "",
             "Without PyTorch: `src.deploy.ort_session(path).run(None, {\"x\": crops})[0]`, crops as above. Score with "
             f"the face detector of the training data ({faces.get('detector')}): src.evaluate reads it from the file.",
             "", TERMS]
    return "\n".join(lines)

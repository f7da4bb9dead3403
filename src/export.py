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
import copy
import json
import logging
import math
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from timm.models.byobnet import BottleneckBlock, ByobNet
from timm.models.mobilevit import LinearSelfAttention, MobileVitV2Block
from torch import nn

from src.common.checkpoint import file_sha256
from src.common.config import Config, build_config, load_config, resolve_path
from src.common.logs import BadInput, UserError, cli, make_folder, setup_logging
from src.deploy.runtime import ort_session, quantize_int8
from src.models.classifier import StudentInput, load_detector_model
from src.models.networks import student_view, torch_load

_logger = logging.getLogger(__name__)
for _name in ("onnxscript", "onnx_ir"):  # the exporter's graph passes log every step at INFO
    logging.getLogger(_name).setLevel(logging.WARNING)
OPSET = 20  # the newest opset that the installed ONNX Runtime (1.2x-1.3x) runs every op of these models in
TOLERANCE = 1e-4  # max |fake probability difference| of the float32 file to PyTorch
FORMATS = ("onnx", "onnx-int8")
FACES_KEY, WEIGHTS_KEY = "faces", "weights_sha256"  # the ONNX metadata each exported file carries
CALIBRATION_PAIRS = 64  # int8 ranges from 128 crops: 32 left the demo AUC up to 0.006 off float32, 128 within 0.0015


class Standardize(nn.Module):
    """GroupNorm with one group and no affine, written as ONNX's InstanceNormalization over [N, 1, C*H*W]: no Shape
    op and no multiply by ones, each of which costs a dequantised copy of the map in the int8 graph."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, C, H, W = x.shape
        return F.instance_norm(x.reshape(-1, 1, C * H * W), eps=self.eps).reshape(-1, C, H, W)


@torch.no_grad()
def _fold_affine(norm: nn.GroupNorm, conv: nn.Conv2d) -> nn.Conv2d:
    """A 1x1 convolution equal to `conv(norm's affine(x))`: conv(w * x + b) = (W diag(w)) x + (W b + bias)."""
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError(f"only a dense 1x1 convolution takes a norm's affine exactly, not {conv}")
    weight, fused = conv.weight[:, :, 0, 0], nn.Conv2d(conv.in_channels, conv.out_channels, 1, stride=conv.stride)
    fused.weight.copy_(weight[:, :, None, None] * (1 if norm.weight is None else norm.weight[:, None, None]))
    fused.bias.copy_((0 if norm.bias is None else weight @ norm.bias) + (0 if conv.bias is None else conv.bias))
    return fused


class FastLinearSelfAttention(nn.Module):
    """timm's `LinearSelfAttention` on the [B, C, H, W] feature map, without unfolding it into [B, C, P, N] patches.

    Patch position p of token n is pixel (h, w) with p = (h % ph, w % pw), so the softmax over tokens for each
    position is a softmax over a strided sub-grid, and the context vector (one per position) is tiled back over the
    map. The key projection is applied after the softmax-weighted sum over tokens (the weights add up to 1), to
    ph * pw vectors instead of every pixel. The affine of the `norm` before it is folded into the projections (the
    input is standardised only), which is exact for the key too, as the weights add up to 1. Same outputs in eval mode.
    """

    def __init__(self, attn: LinearSelfAttention, patch_size: tuple[int, int], norm: nn.GroupNorm):
        super().__init__()
        d = attn.embed_dim
        qkv = _fold_affine(norm, attn.qkv_proj)
        self.patch_size = patch_size
        self.query, self.key, self.value = (nn.Conv2d(d, n, 1) for n in (1, d, d))
        for conv, rows in ((self.query, slice(0, 1)), (self.key, slice(1, 1 + d)), (self.value, slice(1 + d, None))):
            conv.weight.data.copy_(qkv.weight[rows])
            conv.bias.data.copy_(qkv.bias[rows])
        self.out_proj = attn.out_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        ph, pw = self.patch_size
        nh, nw = H // ph, W // pw
        q = self.query(x).reshape(B, nh, ph, nw, pw).permute(0, 2, 4, 1, 3).reshape(B, ph * pw, nh * nw)
        scores = q.softmax(-1).reshape(B, ph, pw, nh, nw).permute(0, 3, 1, 4, 2).reshape(B, 1, H, W)
        pooled = (x * scores).reshape(B, C, nh, ph, nw, pw).sum((2, 4))  # [B, C, ph, pw]
        context = self.key(pooled).repeat(1, 1, nh, nw)  # [B, d, H, W]: position (h, w) gets (h % ph, w % pw)
        return self.out_proj(F.relu(self.value(x)) * context)


class FastMobileVitV2Block(nn.Module):
    """timm's `MobileVitV2Block` with `FastLinearSelfAttention`, and each GroupNorm's affine folded into the 1x1
    convolutions that read it: same outputs in eval mode."""

    def __init__(self, block: MobileVitV2Block):
        super().__init__()
        self.patch_size = block.patch_size
        self.conv_kxk, self.conv_1x1, self.transformer = block.conv_kxk, block.conv_1x1, block.transformer
        self.conv_proj = block.conv_proj
        self.conv_proj.conv = _fold_affine(block.norm, block.conv_proj.conv)
        self.norm = Standardize(block.norm.eps)
        for layer in self.transformer:
            layer.attn = FastLinearSelfAttention(layer.attn, self.patch_size, layer.norm1)
            layer.mlp.fc1 = _fold_affine(layer.norm2, layer.mlp.fc1)
            layer.norm1, layer.norm2 = Standardize(layer.norm1.eps), Standardize(layer.norm2.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        ph, pw = self.patch_size
        new_h, new_w = math.ceil(H / ph) * ph, math.ceil(W / pw) * pw
        if new_h != H or new_w != W:
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True)
        x = self.conv_1x1(self.conv_kxk(x))
        for layer in self.transformer:  # LinearTransformerBlock in eval mode (drop path and dropout are identities)
            x = x + layer.attn(layer.norm1(x))
            x = x + layer.mlp(layer.norm2(x))
        return self.conv_proj(self.norm(x))


def _fold_projection(block: FastMobileVitV2Block, nxt: nn.Module) -> None:
    """Fold `block`'s output projection (1x1 conv + BN, no activation) into `nxt`'s first 1x1 conv when `nxt` is a
    bottleneck without a residual, so that nothing else reads the projection (call under no_grad)."""
    proj = block.conv_proj
    if not (isinstance(nxt, BottleneckBlock) and nxt.shortcut is None and isinstance(proj, ConvNormAct)
            and isinstance(proj.bn.act, nn.Identity) and isinstance(proj.bn.drop, nn.Identity)):
        return
    first, second, bn = proj.conv, nxt.conv1_1x1.conv, proj.bn
    if any(c.kernel_size != (1, 1) or c.stride != (1, 1) or c.groups != 1 for c in (first, second)):
        return
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale + (scale * first.bias if first.bias is not None else 0)
    w2 = second.weight[:, :, 0, 0]
    fused = nn.Conv2d(first.in_channels, second.out_channels, 1)
    fused.weight.copy_((w2 @ (scale[:, None] * first.weight[:, :, 0, 0]))[:, :, None, None])
    fused.bias.copy_(w2 @ shift + (second.bias if second.bias is not None else 0))
    nxt.conv1_1x1.conv, block.conv_proj = fused, nn.Identity()


@torch.no_grad()
def fast_mobilevitv2(model: nn.Module) -> nn.Module:
    """`model` in eval mode with every `MobileVitV2Block` replaced in place by `FastMobileVitV2Block`.

    Each block's output projection is then folded into the next stage's first 1x1 convolution where nothing else
    reads it: one 1x1 convolution instead of two (9% fewer multiply-adds in mobilevitv2_200). Other models: as is.
    """
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, MobileVitV2Block):
                setattr(parent, name, FastMobileVitV2Block(child))
    for net in [m for m in model.modules() if isinstance(m, ByobNet)]:
        blocks = [block for stage in net.stages for block in stage]
        for block, nxt in zip(blocks, blocks[1:]):
            if isinstance(block, FastMobileVitV2Block):
                _fold_projection(block, nxt)
    return model.eval()


class OrtClassifier(nn.Module):
    """An ONNX classifier in ONNX Runtime behind the PyTorch model interface (e.g. for `engine.evaluate`)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        self.session = ort_session(path, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.session.run(None, {"x": x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(logits).to(x.device)


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


def real_crops(cfg: Config, split: str, pairs: int, size: int) -> torch.Tensor | None:
    """The first `pairs` (real, fake) crops of `split` at `size` px, or None when the data root does not exist."""
    if not Path(cfg.data_root).exists():
        return None
    from src.data.dataset import build_dataset, collate_pairs  # noqa: PLC0415 (the SBI pipeline only to calibrate)

    dataset = build_dataset(cfg, split)
    images = collate_pairs([dataset[i] for i in range(min(pairs, len(dataset)))])["images"]
    return student_view(images, size)


def calibration_batches(images: torch.Tensor, batch_size: int = 8) -> Iterator[np.ndarray]:
    """`images` as float32 numpy batches for int8 calibration."""
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size].float().numpy()


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
    """The markdown model card of an exported file (the network's input `size`, fed `crop` px): what it is, what made
    it, how to run and measure it, its terms."""
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
            ("check against PyTorch", check + (f"; calibrated on {CALIBRATION_PAIRS * 2} train crops ({calibration})"
                                               if fmt == "onnx-int8" else ""))]
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
    try:
        model, crop, faces = load_detector_model(a.weights)
        weights = resolve_path(a.weights, "weights")
        ckpt = torch_load(weights)
        cfg = data_config(weights, ckpt, crop, a.config)
        if cfg is None and a.format == "onnx-int8":
            raise BadInput(f"{weights} carries no training config: pass --config, whose data root gives the int8 "
                             f"calibration crops (e.g. configs/config_SBI.json for FF++)")
        out = Path(a.out or exported_path(weights, a.format))
        make_folder(out.parent, "--out")
        metadata = {FACES_KEY: json.dumps(faces), WEIGHTS_KEY: file_sha256(weights)}
        result = export(model, crop, out, a.format, cfg, metadata)
    except UserError as e:
        ap.exit(2, f"error: {e}\n")
    source = "no config" if cfg is None else f"data root {cfg.data_root}, from {a.config or 'the checkpoint'}"
    card = out.with_suffix(".md")
    net = network(model)
    card.write_text(model_card(out, a.format, weights, ckpt, net.pretrained_cfg["architecture"], crop,
                               crop if net is model else model.size, faces, result, source))
    real = "no real inputs" if result["real"] is None else f"{result['real']:.2e} on real val crops"
    if a.format == "onnx-int8":
        print(f"int8 calibrated on {CALIBRATION_PAIRS * 2} train crops ({source})")
    print(f"wrote {result['path']} ({a.format}, {crop} px, opset {OPSET}, dynamic batch; training faces: "
          f"{faces.get('detector')}) and its model card {card}")
    print(f"max |fake probability difference| to PyTorch: {result['random']:.2e} on random inputs, {real} ({source})")


if __name__ == "__main__":
    cli(main)

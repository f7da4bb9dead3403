"""Model construction and weight loading: the student, the frozen teacher and this project's checkpoints.

Every load is strict and checked: a model whose weights silently failed to load is the worst failure of this
pipeline. Files are read with `torch.load(..., weights_only=True)` only.

Input convention for every model here: RGB in [0, 1] with no mean/std normalisation (the SBI convention).
"""
from __future__ import annotations

import difflib
import logging
import sys
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from timm.models import model_entrypoint
from torch import nn

from src.common import checkpoint
from src.common.config import Config, resolve_path
from src.common.layout import REFERENCE_FACES
from src.common.logs import BadInput

_logger = logging.getLogger(__name__)

# efficientnet_pytorch's EfficientNet-b4 numbers its 32 blocks flat; timm nests them by stage.
_B4_STAGE_REPEATS = (2, 4, 4, 6, 6, 8, 2)
_B4_BLOCKS = [(stage, j) for stage, n in enumerate(_B4_STAGE_REPEATS) for j in range(n)]
_SBI_TOP_RENAMES = {
    "_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier",
}
_SBI_IR_RENAMES = {  # inverted-residual blocks (stages 1-6) -> timm InvertedResidual
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_SBI_DS_RENAMES = {  # stage 0 has no expansion -> timm DepthwiseSeparableConv
    "_depthwise_conv": "conv_dw", "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2",
}


def create_classifier(arch: str, num_classes: int = 2) -> nn.Module:
    """A randomly initialised timm classifier; an unknown name is an error suggesting close timm names."""
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean one of {close}?" if close else "; list names with timm.list_models('*pattern*')"
        raise BadInput(f"unknown timm architecture '{arch}'{hint}")
    return timm.create_model(arch, pretrained=False, num_classes=num_classes)


def save_random_checkpoint(arch: str, cfg: Config, path: Path) -> Path:
    """A checkpoint of this project holding `arch` with random weights (speed does not depend on them) at `path`."""
    torch.save({"model": create_classifier(arch).state_dict(), "arch": arch, "epoch": 0, "val_auc": 0.5,
                "config": cfg.to_dict()}, path)
    return path


def count_params(model: nn.Module) -> int:
    """Number of parameters of `model`."""
    return sum(p.numel() for p in model.parameters())


def _keys(obj: Any) -> str:
    """A short description of what a loaded file holds, for error messages."""
    if not isinstance(obj, dict):
        return f"a {type(obj).__name__}, not a dict"
    keys = list(obj)
    return f"keys {keys[:10]}" + (f" (+{len(keys) - 10} more)" if len(keys) > 10 else "")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _is_own_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("arch"), str) and _is_state_dict(obj.get("model"))


def _is_sbi_checkpoint(obj: Any) -> bool:
    sd = obj.get("model") if isinstance(obj, dict) else None
    return _is_state_dict(sd) and any(k.startswith("net._") for k in sd)


def _model_from_checkpoint(ckpt: dict, path: Path) -> nn.Module:
    """Rebuild and strictly load the classifier that one of this project's checkpoints names."""
    model = create_classifier(ckpt["arch"])
    checkpoint.strict_load(model, ckpt["model"], f"{path} (this project's checkpoint, arch '{ckpt['arch']}')")
    return model


def _convert_sbi_key(key: str) -> str:
    parts = key.removeprefix("net.").split(".")
    if parts[0] in _SBI_TOP_RENAMES and len(parts) == 2:
        return f"{_SBI_TOP_RENAMES[parts[0]]}.{parts[1]}"
    if parts[0] == "_blocks" and len(parts) == 4 and parts[1].isdigit() and int(parts[1]) < len(_B4_BLOCKS):
        stage, j = _B4_BLOCKS[int(parts[1])]
        renames = _SBI_DS_RENAMES if stage == 0 else _SBI_IR_RENAMES
        if parts[2] in renames:
            return f"blocks.{stage}.{j}.{renames[parts[2]]}.{parts[3]}"
    return key  # unknown keys pass through unchanged, so a strict load reports them


def convert_sbi_state_dict(state_dict: dict) -> dict:
    """Map the SBI checkpoint's efficientnet_pytorch B4 keys (under `net.`) to timm `tf_efficientnet_b4` keys."""
    return {_convert_sbi_key(k): v for k, v in state_dict.items()}


def load_teacher(path: str | Path, arch: str = "tf_efficientnet_b4") -> nn.Module:
    """A frozen, eval-mode teacher mapping [N,3,H,W] RGB in [0,1] to [N,2] logits, from any supported file.

    Formats: the public SBI checkpoints (FFc23.tar/FFraw.tar), this project's checkpoints (their own `arch`
    wins over `arch`), or a plain timm state dict for `arch`. `path` may be a glob (the newest match is used).
    """
    file = resolve_path(str(path), "teacher_weights")
    return classifier_from_checkpoint(checkpoint.load(file), file, arch, role="teacher")


def classifier_from_checkpoint(ckpt: Any, file: Path, arch: str = "tf_efficientnet_b4", role: str = "model"
                               ) -> nn.Module:
    """A frozen classifier from a checkpoint already read from `file`, in any format `load_teacher` takes; `role`
    (teacher, model) names it in messages."""
    if _is_own_checkpoint(ckpt):
        _logger.info("%s %s: this project's checkpoint of '%s' (arch argument ignored)", role, file, ckpt["arch"])
        model = _model_from_checkpoint(ckpt, file)
    elif _is_sbi_checkpoint(ckpt):
        _logger.info("%s %s: SBI EfficientNet-B4 checkpoint, converted to timm '%s'", role, file, arch)
        model = create_classifier(arch)
        source = f"{file} (SBI EfficientNet-B4 checkpoint as '{arch}')"
        checkpoint.strict_load(model, convert_sbi_state_dict(ckpt["model"]), source)
    elif _is_state_dict(ckpt):
        _logger.info("%s %s: plain timm state dict for '%s'", role, file, arch)
        model = create_classifier(arch)
        checkpoint.strict_load(model, ckpt, f"{file} (plain timm state dict for '{arch}')")
    else:
        raise BadInput(f"{role} weights {file} are in no known format (an SBI checkpoint with 'model' of net.* "
                         f"keys, this project's checkpoint with 'arch' and 'model', or a timm state dict); "
                         f"found {_keys(ckpt)}")
    model.eval()
    model.requires_grad_(False)
    return model


def training_faces(ckpt: Any) -> dict:
    """The faces.json record of a checkpoint's training data: what this project's checkpoints record, else the SBI
    reference's (FFc23.tar, plain state dicts, checkpoints from before it was recorded)."""
    config = ckpt.get("config") if _is_own_checkpoint(ckpt) else None
    return dict(config["faces"]) if isinstance(config, dict) and config.get("faces") else dict(REFERENCE_FACES)


def load_checkpoint_model(path: str | Path) -> tuple[nn.Module, dict]:
    """(model, checkpoint) from one of this project's checkpoints; trainable. `path` may be a glob."""
    file = resolve_path(str(path), "checkpoint")
    ckpt = checkpoint.load(file)
    if not _is_own_checkpoint(ckpt):
        raise BadInput(f"{file} is not a checkpoint of this project (it needs 'arch' and 'model' keys; found "
                         f"{_keys(ckpt)}). A teacher file such as FFc23.tar goes to teacher_weights, ImageNet weights "
                         f"to student_imagenet_weights; pass a checkpoint written by this project's training here.")
    return _model_from_checkpoint(ckpt, file), ckpt


def _read_state_dict(path: Path) -> dict:
    """A state dict from a timm `.safetensors` file or a `.pth/.bin` file (unwrapping `state_dict`/`model`)."""
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(str(path), device="cpu")
    ckpt = checkpoint.load(path)
    for key in ("state_dict", "model"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if not _is_state_dict(ckpt):
        raise BadInput(f"{path} holds no state dict of tensors; found {_keys(ckpt)}")
    return ckpt


def build_student(cfg: Config) -> nn.Module:
    """The student `cfg.model` with 2 classes, backbone from the local `cfg.student_imagenet_weights` file if set."""
    # Input: RGB in [0, 1] without mean/std normalisation (SBI). MobileViTv2's timm pretrained_cfg has mean 0 and
    # std 1, so its ImageNet weights expect exactly this input.
    model = create_classifier(cfg.model)
    if cfg.student_imagenet_weights is None:
        _logger.warning("student '%s': NO ImageNet weights (student_imagenet_weights is not set); training from a "
                        "random init is much worse than fine-tuning", cfg.model)
        return model
    file = resolve_path(cfg.student_imagenet_weights, "student_imagenet_weights")
    state_dict = _read_state_dict(file)
    # As timm's load_pretrained does with the create function's pretrained_filter_fn (by convention the
    # `checkpoint_filter_fn` of the module that registers the model); mobilevitv2 has none.
    filter_fn = getattr(sys.modules[model_entrypoint(cfg.model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    classifiers = model.pretrained_cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else classifiers
    head = {f"{c}.{p}" for c in classifiers for p in ("weight", "bias")}
    checkpoint.strict_load(model, {k: v for k, v in state_dict.items() if k not in head},
                f"student_imagenet_weights {file} for '{cfg.model}'", allow_missing=head)
    _logger.info("student '%s': loaded %s; only the classifier (%s) was re-initialised",
                 cfg.model, file, ", ".join(sorted(head)))
    return model


def student_view(images: torch.Tensor, size: int) -> torch.Tensor:
    """The batch as the student sees it: resized from the SBI crop with antialiasing (a no-op at equal size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)

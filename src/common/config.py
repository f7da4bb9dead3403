"""One JSON config, validated once at start.

Every key, its default, its type and its allowed range live in `Config` below. Unknown keys are errors that
suggest the closest valid key; wrong types and out-of-range values are errors naming key, value and range.
"""
from __future__ import annotations

import dataclasses
import difflib
import glob
import json
import logging
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from src.common.layout import COMPRESSIONS
from src.common.logs import BadInput, MissingFile

_logger = logging.getLogger(__name__)


class ConfigError(BadInput):
    """A config file or override that cannot be used as written."""


def _choice(*values: str) -> dict:
    return {"choices": values}


def _range(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> dict:
    return {"range": (lo, hi, lo_open)}


@dataclass
class Config:
    # --- data (the SBI recipe) ---
    data_root: str = "data/FaceForensics++"
    compression: str = field(default="c23", metadata=_choice(*COMPRESSIONS))
    synthetic_data: bool = False  # generate the data root with src.synthetic when it is missing
    synthetic_videos: int = field(default=96, metadata=_range(6, 100000))  # how many videos to generate then
    image_size: int = field(default=380, metadata=_range(32, 2048))  # SBI crop size, the teacher's input
    student_image_size: Optional[int] = field(default=256, metadata=_range(32, 2048))  # null: same as image_size
    frames_per_video: int = field(default=8, metadata=_range(1, 1000))
    data_layout: str = field(default="frames", metadata=_choice("frames", "regions"))  # regions: src.regions
    mask_type: str = field(default="random", metadata=_choice("random", "hull", "dfl_full", "extended", "components"))
    max_bad_fraction: float = field(default=0.01, metadata=_range(0.0, 1.0))
    faces: Optional[dict] = None  # recorded by training: data_root's faces.json (the detector that made the data)
    num_workers: int = field(default=4, metadata=_range(0, 256))
    # --- models ---
    model: str = "mobilevitv2_200"  # the student (or any timm classifier trained by train_student_only.py)
    student_imagenet_weights: Optional[str] = None  # local timm weights file (.safetensors/.pth/.bin)
    pretrained_student_weights: Optional[str] = None  # stage-1 checkpoint for stage 2 (glob allowed)
    teacher_arch: str = "tf_efficientnet_b4"  # for FFc23.tar and plain state dicts; our checkpoints name theirs
    teacher_weights: Optional[str] = "weights/FFc23.tar"  # glob allowed
    min_teacher_auc: float = field(default=0.6, metadata=_range(0.0, 1.0))
    allow_teacher_face_mismatch: bool = False  # distil although the teacher's training faces came from another detector
    # --- optimisation (the SBI recipe) ---
    epoch: int = field(default=100, metadata=_range(1, 100000))
    batch_size: int = field(default=32, metadata=_range(2, 65536))  # images: batch_size/2 real/fake pairs
    lr: float = field(default=1e-4, metadata=_range(0.0, 10.0, lo_open=True))
    optimizer: str = field(default="sgd", metadata=_choice("sgd", "adamw"))
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    weight_decay: float = field(default=0.0, metadata=_range(0.0, 1.0))
    lr_decay_fraction: float = field(default=0.25, metadata=_range(0.0, 1.0))  # linear decay over the last part
    sam_rho: float = field(default=0.05, metadata=_range(0.0, 10.0))
    sam_adaptive: bool = False
    grad_clip: Optional[float] = field(default=1.0, metadata=_range(0.0, 1e6, lo_open=True))  # null: no clip
    max_consecutive_nonfinite: int = field(default=20, metadata=_range(1, 1000000))
    seed: int = field(default=5, metadata=_range(0, 2**32 - 1))
    keep_top_k: int = field(default=5, metadata=_range(1, 1000))
    amp: Optional[str] = field(default=None, metadata=_choice("bf16"))  # bf16 autocast on CUDA; null: float32
    channels_last: bool = False
    compile: bool = False  # torch.compile the student (and the teacher in stage 2) on CUDA
    sync_bn: bool = False  # under torchrun: the student's BatchNorm normalises over the global batch (SyncBatchNorm)
    # --- distillation (the progressive schedule: src/train/schedule.py) ---
    temperature: float = field(default=3.0, metadata=_range(0.0, 100.0, lo_open=True))
    alpha_start: float = field(default=0.95, metadata=_range(0.0, 1.0))
    alpha_end: float = field(default=0.5, metadata=_range(0.0, 1.0))
    alpha_schedule: Optional[list] = None  # [[epoch, alpha], ...] replaces the design's table
    # --- output ---
    output_dir: str = "output"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def student_size(self) -> int:
        return self.student_image_size or self.image_size


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _allowed_types(annotation: str) -> tuple[type, ...]:
    hint = typing.get_type_hints(Config)[annotation]
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return tuple(typing.get_origin(a) or a for a in args)


def _check(key: str, value: Any) -> Any:
    f = FIELDS[key]
    allowed = _allowed_types(key)
    if value is None:
        if type(None) not in allowed:
            raise ConfigError(f"config key '{key}' must not be null (default: {f.default!r})")
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        raise ConfigError(f"config key '{key}' = {value!r} has type {type(value).__name__}; expected {names}")
    if "choices" in f.metadata and value not in f.metadata["choices"]:
        raise ConfigError(f"config key '{key}' = {value!r} is not allowed; choose one of {list(f.metadata['choices'])}")
    if "range" in f.metadata:
        lo, hi, lo_open = f.metadata["range"]
        if (lo is not None and (value < lo or (lo_open and value == lo))) or (hi is not None and value > hi):
            bracket = "(" if lo_open else "["
            raise ConfigError(f"config key '{key}' = {value!r} is out of range; allowed {bracket}{lo}, {hi}]")
    return value


def _closest(key: str) -> str:
    match = difflib.get_close_matches(key, FIELDS, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(sorted(FIELDS))}"


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a `--set key=value` override; the value is JSON, or a plain string when it is not valid JSON."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. --set lr=0.001)")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def validate_alpha_schedule(schedule: Any) -> None:
    """Raise ValueError naming the entry unless `schedule` is a non-empty list of [epoch, alpha] pairs."""
    if not isinstance(schedule, (list, tuple)) or not schedule:
        raise ValueError(
            f"must be a non-empty list of [epoch, alpha] pairs, e.g. [[1, 0.9], [21, 0.5]]; got {schedule!r}"
        )
    prev = 0
    for i, entry in enumerate(schedule):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ValueError(f"entry {i} = {entry!r} is not an [epoch, alpha] pair")
        epoch, alpha = entry
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"entry {i} = {entry!r}: epoch must be an integer >= 1 (epochs are 1-based)")
        if epoch <= prev:
            raise ValueError(f"entry {i} = {entry!r}: epochs must be strictly increasing (previous epoch {prev})")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"entry {i} = {entry!r}: alpha must be a number in [0, 1]")
        prev = epoch


def build_config(values: dict, source: str = "config") -> Config:
    """Validate a dict of config values (defaults fill the rest)."""
    for key in values:
        if key.startswith("_"):  # "_comment" style keys are documentation
            continue
        if key not in FIELDS:
            raise ConfigError(f"unknown key '{key}' in {source}{_closest(key)}")
    if values.get("amp") in ("fp16", "float16"):
        raise ConfigError("config key 'amp' = 'fp16' is refused: fp16 needs a gradient scaler, and scaling SAM's two "
                          "passes is unsafe (the perturbation and the inf/NaN skips act on scaled gradients). Use "
                          "'bf16' (same range as float32, no scaler) or null.")
    cfg = Config(**{k: _check(k, v) for k, v in values.items() if not k.startswith("_")})
    if cfg.batch_size % 2:
        raise ConfigError(f"config key 'batch_size' = {cfg.batch_size} must be even: a batch is real/fake pairs")
    if cfg.alpha_schedule is not None:
        try:
            validate_alpha_schedule(cfg.alpha_schedule)
        except ValueError as e:
            raise ConfigError(f"config key 'alpha_schedule': {e}") from None
    return cfg


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read one JSON config, apply `key=value` overrides, fill defaults and validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file '{path}' does not exist (try configs/config_SBI.json or configs/config_demo.json)"
        )
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file '{path}' is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold one JSON object")
    for text in overrides:
        key, value = parse_override(text)
        if key not in FIELDS:
            raise ConfigError(f"unknown key '{key}' in --set {text}{_closest(key)}")
        values[key] = value
    return build_config(values, source=str(path))


def resolve_path(pattern: str, what: str = "weights") -> Path:
    """A file path or glob -> the newest matching file (by modification time), logged; no match is an error."""
    matches = [Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if Path(p).is_file()]
    if not matches:
        raise MissingFile(f"{what}: '{pattern}' matches no file")
    chosen = max(matches, key=lambda p: p.stat().st_mtime)
    if len(matches) > 1 or glob.has_magic(pattern):
        _logger.info("%s: '%s' matched %d file(s); using the newest: %s", what, pattern, len(matches), chosen)
    return chosen

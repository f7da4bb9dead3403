"""The deepfake classifier as scoring and deployment load it: frozen, fed face crops at its training crop size, with
the faces record of its training data."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from src.common import checkpoint
from src.common.config import resolve_path
from src.common.logs import UserError
from src.models.networks import classifier_from_checkpoint, student_view, training_faces

_logger = logging.getLogger(__name__)
TEACHER_SIZE = 380  # input size of the SBI EfficientNet-B4 (FFc23.tar) and of plain timm state dicts


class StudentInput(nn.Module):
    """A student behind its training input path: face crops at image_size, resized with antialiasing to its size."""

    def __init__(self, model: nn.Module, size: int):
        super().__init__()
        self.model, self.size = model, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(student_view(x, self.size))


class Classifier(NamedTuple):
    model: nn.Module  # frozen, eval mode
    crop: int  # face crop size
    faces: dict  # the faces.json of its training data: which detector and landmark model made it


def load_classifier(path: str | Path) -> Classifier:
    """The model of FFc23.tar (380), a timm state dict (380) or one of our checkpoints, with its crop size and the
    face source of its training data (the SBI reference's for FFc23.tar and plain state dicts).

    A student trained at student_image_size sees what it saw in training and validation: the crop resized to
    image_size, then downsized with antialiasing inside the returned model.
    """
    file = resolve_path(str(path), "weights")
    ckpt = checkpoint.load(file)
    model = classifier_from_checkpoint(ckpt, file)  # every supported format, strictly loaded
    config = ckpt.get("config")
    crop, size = TEACHER_SIZE, None
    if isinstance(config, dict):
        if not config.get("image_size"):
            raise UserError(f"{file}: its config records no image_size (the face crop size it was trained on), which "
                            f"scoring needs; set config['image_size'] in the checkpoint, or give its model's state "
                            f"dict alone (scored at {TEACHER_SIZE} px)")
        crop, size = config["image_size"], config.get("student_image_size")
        if not config.get("faces"):
            _logger.info("%s does not record its training data's face detector: assuming the SBI reference's", file)
    if size and size != crop:
        model = StudentInput(model, size).eval()
    _logger.info("model %s: face crops at %d px%s", file, crop, f", model input {size} px" if size else "")
    return Classifier(model, int(crop), training_faces(ckpt))

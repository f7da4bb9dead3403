"""Real face crops for the export's checks and int8 calibration, from a config's data root (the SBI data pipeline,
which src.deploy.onnx imports only when a config gives it a data root)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from src.common.config import Config
from src.data.dataset import build_dataset, collate_pairs
from src.models.networks import student_view

CALIBRATION_PAIRS = 64  # int8 ranges from 128 crops: 32 left the demo AUC up to 0.006 off float32, 128 within 0.0015


def real_crops(cfg: Config, split: str, pairs: int, size: int) -> torch.Tensor | None:
    """The first `pairs` (real, fake) crops of `split` at `size` px, or None when the data root does not exist."""
    if not Path(cfg.data_root).exists():
        return None
    dataset = build_dataset(cfg, split)
    images = collate_pairs([dataset[i] for i in range(min(pairs, len(dataset)))])["images"]
    return student_view(images, size)


def calibration_batches(images: torch.Tensor, batch_size: int = 8) -> Iterator[np.ndarray]:
    """`images` as float32 numpy batches for int8 calibration."""
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size].float().numpy()

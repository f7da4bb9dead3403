"""An exported classifier in ONNX Runtime behind the PyTorch model interface."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from src.deploy.runtime import ort_session


class OrtClassifier(nn.Module):
    """An ONNX classifier in ONNX Runtime behind the PyTorch model interface (e.g. for training's `validate`)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        self.session = ort_session(path, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.session.run(None, {"x": x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(logits).to(x.device)

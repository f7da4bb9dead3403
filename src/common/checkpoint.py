"""Atomic checkpoint writes, the top-k saver (`{epoch}_{auc:.4f}_val.pth`, `BEST.pth`, `last.pth`) and the content
hash that ties a derived file (an evaluation, an exported model) to the weights it came from."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

_logger = logging.getLogger(__name__)
RANKED = re.compile(r"^(\d+)_(\d\.\d{4})_val\.pth$")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, fsync, then rename: a crash leaves the old file or none."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; give it the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save that never leaves a half-written file behind."""
    _atomic(Path(path), lambda f: torch.save(obj, f))


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    with open(src, "rb") as source:
        _atomic(Path(dst), lambda f: shutil.copyfileobj(source, f))


def load(path: str | Path) -> dict:
    """Load a checkpoint of this project (tensors and plain Python values only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


class CheckpointSaver:
    """Keeps the best `keep_top_k` epochs by val AUC (ties keep the earlier epoch), BEST.pth and last.pth."""

    def __init__(self, weights_dir: str | Path, keep_top_k: int = 5, ranked: list | None = None):
        self.dir, self.keep_top_k = Path(weights_dir), keep_top_k  # made by rank 0 (src.engine.prepare_run)
        self.ranked = [tuple(r) for r in ranked or []]  # (auc, epoch), best first

    def save(self, state: dict, epoch: int, auc: float) -> Path | None:
        """Write last.pth, and the ranked file and BEST.pth when this epoch makes the top k; returns the ranked path."""
        candidates = sorted(self.ranked + [(auc, epoch)], key=lambda r: (-r[0], r[1]))
        kept, dropped = candidates[: self.keep_top_k], candidates[self.keep_top_k:]
        path = None
        if (auc, epoch) in kept:
            path = self.path(epoch, auc)
            atomic_save(state, path)
        self.ranked = kept
        atomic_save({**state, "top_k": self.ranked}, self.dir / "last.pth")
        if kept[0] == (auc, epoch):
            atomic_copy(path, self.dir / "BEST.pth")
        for old_auc, old_epoch in dropped:
            self.path(old_epoch, old_auc).unlink(missing_ok=True)
        return path

    def path(self, epoch: int, auc: float) -> Path:
        return self.dir / f"{epoch}_{auc:.4f}_val.pth"

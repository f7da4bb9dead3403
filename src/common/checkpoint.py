"""Checkpoint I/O: the one loader (weights_only, clear errors), strict state-dict loading, atomic writes, the top-k
saver (`{epoch}_{auc:.4f}_val.pth`, `BEST.pth`, `last.pth`) and the content hash that ties a derived file (an
evaluation, an exported model) to the weights it came from."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import torch
from torch import nn

from src.common.logs import BadInput, MissingFile

_logger = logging.getLogger(__name__)
RANKED = re.compile(r"^(\d+)_(\d\.\d{4})_val\.pth$")
_SHOW = 5  # keys listed per kind in a load error


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


def atomic_link(src: Path, dst: Path) -> None:
    """Point `dst` at `src`'s content: a hard link put in place by rename (a copy where the filesystem refuses links).

    The checkpoint writes only ever rename over a name, never write through it, so the other names of a linked file
    keep their content.
    """
    tmp = dst.with_name(f".{dst.name}.link")
    tmp.unlink(missing_ok=True)  # left by a crash between the link and the rename
    try:
        os.link(src, tmp)
    except OSError:  # another filesystem, or one without hard links (EPERM, ENOTSUP)
        atomic_copy(src, dst)
        return
    os.replace(tmp, dst)


def load(source: str | Path | BinaryIO, name: str | Path | None = None) -> Any:
    """A checkpoint (tensors and plain Python values) from a path or a binary file, read with `torch.load(...,
    weights_only=True)` to the CPU; a missing, damaged or wrong-format file is an error naming `name` or `source`."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MissingFile(f"{name or source} not found") from None
    except Exception as e:  # noqa: BLE001 (a damaged file fails inside the unpickler with any exception type)
        first = (str(e).splitlines() or [""])[0]
        detail = f"{type(e).__name__}: {first}" if len(first) < 100 else type(e).__name__  # torch's own are long
        raise BadInput(f"{name or source} is not a readable PyTorch checkpoint (a plain file of tensors and numbers, "
                       f"read with weights_only=True; other pickled objects are refused, and a truncated or damaged "
                       f"file fails): {detail}. Copy or download the file again, or pass a checkpoint saved with "
                       f"torch.save") from None


def strict_load(model: nn.Module, state_dict: dict, source: str, allow_missing: Iterable[str] = ()) -> None:
    """Load `state_dict` into `model`; a missing (not in `allow_missing`), unexpected or mis-shaped key is an error.

    On error the model may be partly loaded: discard it. `source` names the file and format in the message.
    """
    own = model.state_dict()
    mismatched = [k for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    result = model.load_state_dict({k: v for k, v in state_dict.items() if k not in mismatched}, strict=False)
    skip = set(allow_missing) | set(mismatched)
    missing = [k for k in result.missing_keys if k not in skip]
    unexpected = list(result.unexpected_keys)
    if not (missing or unexpected or mismatched):
        return
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched]
    lines = [f"{source}: weights do not fit the model: {len(missing)} missing, {len(unexpected)} unexpected, "
             f"{len(mismatched)} shape-mismatched keys"]
    for kind, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", shapes)):
        if keys:
            more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
            lines.append(f"  {kind}: {', '.join(keys[:_SHOW])}{more}")
    lines.append("  hint: wrong architecture for this file, or a truncated/corrupted file?")
    raise BadInput("\n".join(lines))


class CheckpointSaver:
    """Keeps the best `keep_top_k` epochs by val AUC (ties keep the earlier epoch), BEST.pth and last.pth."""

    def __init__(self, weights_dir: str | Path, keep_top_k: int = 5, ranked: list | None = None):
        self.dir, self.keep_top_k = Path(weights_dir), keep_top_k  # made by rank 0 (src.train.run.prepare_run)
        self.ranked = [tuple(r) for r in ranked or []]  # (auc, epoch), best first

    def save(self, state: dict, epoch: int, auc: float) -> Path | None:
        """Write last.pth, and the ranked file and BEST.pth when this epoch makes the top k; returns the ranked path.

        The state (with the new ranking, for resume) is serialised once; the other names are hard links to that file.
        """
        candidates = sorted(self.ranked + [(auc, epoch)], key=lambda r: (-r[0], r[1]))
        kept, dropped = candidates[: self.keep_top_k], candidates[self.keep_top_k:]
        last = self.dir / "last.pth"
        path = self.path(epoch, auc) if (auc, epoch) in kept else None
        atomic_save({**state, "top_k": kept}, path or last)
        self.ranked = kept
        if path is not None:
            atomic_link(path, last)
            if kept[0] == (auc, epoch):
                atomic_link(path, self.dir / "BEST.pth")
        for old_auc, old_epoch in dropped:
            self.path(old_epoch, old_auc).unlink(missing_ok=True)
        return path

    def path(self, epoch: int, auc: float) -> Path:
        return self.dir / f"{epoch}_{auc:.4f}_val.pth"

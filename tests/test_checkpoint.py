"""Checkpoints: loading, atomic writes, the top-k files, BEST.pth and last.pth."""
import io

import pytest
import torch

from src.common import checkpoint
from src.common.checkpoint import CheckpointSaver, atomic_save
from src.common.logs import BadInput


def test_a_crash_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    atomic_save({"epoch": 1}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temporary file left behind


def test_saver_keeps_the_top_k_and_best(tmp_path):
    saver = CheckpointSaver(tmp_path, keep_top_k=2)
    for epoch, auc in enumerate([0.6, 0.8, 0.7, 0.8, 0.9], start=1):
        saver.save({"model": {"w": torch.tensor([float(epoch)])}, "epoch": epoch}, epoch, auc)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["2_0.8000_val.pth", "5_0.9000_val.pth", "BEST.pth", "last.pth"]  # tie: the earlier epoch stays
    assert checkpoint.load(tmp_path / "BEST.pth")["epoch"] == 5
    last = checkpoint.load(tmp_path / "last.pth")
    assert last["epoch"] == 5 and last["top_k"] == [(0.9, 5), (0.8, 2)]
    resumed = CheckpointSaver(tmp_path, keep_top_k=2, ranked=last["top_k"])
    resumed.save({"epoch": 6}, 6, 0.85)
    assert sorted(p.name for p in tmp_path.iterdir())[:2] == ["5_0.9000_val.pth", "6_0.8500_val.pth"]


def test_a_damaged_file_names_itself_and_the_fix():
    with pytest.raises(BadInput, match=r"weights.zip is not a readable PyTorch checkpoint.*download the file again"):
        checkpoint.load(io.BytesIO(b"half a checkpoint"), "weights.zip")

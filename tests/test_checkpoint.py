"""Checkpoints: loading, atomic writes, the top-k files, BEST.pth and last.pth."""
import errno
import io
import os

import pytest
import torch
from torch import nn

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


def saved_states(tmp_path, aucs, keep_top_k=3):
    """Save one small model state per epoch; {epoch: its state dict}."""
    saver, states = CheckpointSaver(tmp_path, keep_top_k), {}
    for epoch, auc in enumerate(aucs, start=1):
        torch.manual_seed(epoch)
        states[epoch] = nn.Linear(4, 2).state_dict()
        saver.save({"model": states[epoch], "epoch": epoch}, epoch, auc)
    return states


def assert_holds(path, state):
    model = nn.Linear(4, 2)
    checkpoint.strict_load(model, checkpoint.load(path)["model"], str(path))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_save_serialises_once_and_links_the_other_names(tmp_path, monkeypatch):
    calls, save = [], torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (calls.append(obj["epoch"]), save(obj, f)))
    states = saved_states(tmp_path, [0.6, 0.8, 0.7, 0.5, 0.9])
    assert calls == [1, 2, 3, 4, 5]  # one serialisation per save, also for the epochs that make the top k
    inode = {p.name: p.stat().st_ino for p in tmp_path.iterdir()}
    assert sorted(inode) == ["2_0.8000_val.pth", "3_0.7000_val.pth", "5_0.9000_val.pth", "BEST.pth", "last.pth"]
    assert inode["5_0.9000_val.pth"] == inode["BEST.pth"] == inode["last.pth"]
    assert len(set(inode.values())) == 3 and (tmp_path / "last.pth").stat().st_nlink == 3
    for name, epoch in [("2_0.8000_val.pth", 2), ("3_0.7000_val.pth", 3), ("5_0.9000_val.pth", 5), ("BEST.pth", 5)]:
        assert_holds(tmp_path / name, states[epoch])


def test_dropping_and_rewriting_a_name_leaves_the_linked_files(tmp_path):
    states = saved_states(tmp_path, [0.9, 0.8, 0.5, 0.85], keep_top_k=2)  # epoch 2: ranked and last.pth, then dropped
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["1_0.9000_val.pth", "4_0.8500_val.pth", "BEST.pth", "last.pth"]
    assert (tmp_path / "4_0.8500_val.pth").samefile(tmp_path / "last.pth")
    (tmp_path / "4_0.8500_val.pth").unlink()  # a ranked file deleted by hand
    atomic_save({"epoch": 5}, tmp_path / "BEST.pth")  # a rename over a linked name, as an interrupted epoch does
    assert_holds(tmp_path / "1_0.9000_val.pth", states[1])
    assert_holds(tmp_path / "last.pth", states[4])


def test_a_filesystem_without_hard_links_gets_copies(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    states = saved_states(tmp_path, [0.6, 0.9])
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["1_0.6000_val.pth", "2_0.9000_val.pth", "BEST.pth", "last.pth"]
    assert all(p.stat().st_nlink == 1 for p in files)
    assert (tmp_path / "BEST.pth").read_bytes() == (tmp_path / "2_0.9000_val.pth").read_bytes()
    for p in files[1:]:
        assert_holds(p, states[2])

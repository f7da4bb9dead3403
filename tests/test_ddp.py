"""DDP under torchrun, proved on the CPU with gloo: what the ranks validate, SAM's skipped steps, collective errors,
stopping by SIGTERM, and the device each process picks."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from src.common import checkpoint
from src.common.config import Config
from src.common.distributed import Dist, epoch_indices, free_port
from src.common.logs import UserError
from src.data.dataset import BadSampleTracker, DataQualityError, SBIDataset
from src.data.synthetic import generate_dataset
from src.train.engine import (
    _resume_sums,
    ddp,
    eager_where_compile_fails,
    epoch_stats,
    make_optimizer,
    new_sums,
    train_one_epoch,
)

from conftest import run_ranks


class Net(nn.Module):
    """A small conv net with BatchNorm; pass `poison` forward calls (1-based) return NaN logits."""

    def __init__(self, poison: tuple[int, ...] = ()):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(4, 2))
        self.poison, self.calls = poison, 0

    def forward(self, x):
        self.calls += 1
        out = self.body(x)
        return out * float("nan") if self.calls in self.poison else out


CFG = Config(image_size=16, student_image_size=None, epoch=1, batch_size=8, lr=0.1, grad_clip=None)


def batches(dist: Dist, n: int) -> list[dict]:
    g = torch.Generator().manual_seed(100 + dist.rank)  # each rank its own data, as a DistributedSampler gives
    return [{"images": torch.rand(4, 3, 16, 16, generator=g), "labels": torch.tensor([0, 0, 1, 1]), "failures": []}
            for _ in range(n)]


def _pass1_grads_after_a_skipped_pass2(dist: Dist) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    raw = Net(poison=(2,))  # step 1's pass 2 is not finite: the step is skipped
    optimizer, _ = make_optimizer(raw, CFG)
    seen = []
    first_step = optimizer.first_step

    def record():
        seen.append(raw.body[5].weight.grad.clone())
        first_step()

    optimizer.first_step = record
    sums = train_one_epoch(DDP(raw), batches(dist, 2), optimizer, CFG, 1, BadSampleTracker(1.0), None, dist)
    return {"skipped": sums["skipped"], "steps": sums["steps"], "grad": seen[1],
            "logged": epoch_stats(sums, None, dist)["skipped_steps"]}


@pytest.mark.slow
def test_a_skipped_second_pass_leaves_the_next_first_pass_local():
    r0, r1 = run_ranks(_pass1_grads_after_a_skipped_pass2)
    assert r0["skipped"] == r1["skipped"] == 1 and r0["steps"] == r1["steps"] == 1
    assert r0["logged"] == 1  # log.csv counts the skipped step once, not once per process
    assert not torch.allclose(r0["grad"], r1["grad"])  # step 2's pass 1: each rank's own gradient, not the mean


def _bad_data_on_rank_1(dist: Dist) -> str:
    tracker = BadSampleTracker(0.01)
    if dist.rank == 1:
        tracker.update([(f"{i}.png", "unreadable") for i in range(10)], 200)
    raw = Net()
    try:
        train_one_epoch(raw, batches(dist, 3), make_optimizer(raw, CFG)[0], CFG, 1, tracker, None, dist)
    except DataQualityError as e:
        return str(e)
    return "no error"


@pytest.mark.slow
def test_bad_data_on_one_rank_stops_every_rank_together():
    r0, r1 = run_ranks(_bad_data_on_rank_1)
    assert "another process" in r0 and "10 of 212 samples failed" in r1  # its first step added 2 good samples


def test_resume_gives_each_rank_its_own_sums():
    a, b = dict(new_sums(), batches=3, n=12, loss=1.0), dict(new_sums(), batches=3, n=12, loss=2.0)
    assert _resume_sums([a, b], Dist(1, 2)) == b
    # another world size: every rank at the saved step, the additive sums on rank 0
    assert _resume_sums([a, b], Dist(0, 1)) == dict(new_sums(), batches=3, n=24, loss=3.0)
    assert _resume_sums([a, b], Dist(1, 3)) == dict(new_sums(), batches=3)
    assert _resume_sums(a, Dist()) == a  # a last.pth of a single process


def _recording(seen: list[int]):
    """SBIDataset.__getitem__ noting each train frame it loads in `seen`."""
    get = SBIDataset.__getitem__

    def getitem(self, index):
        if self.train:
            seen.append(int(index))
        return get(self, index)

    return getitem


def _signalling(sig: signal.Signals, step: int):
    """engine.student_view sending `sig` to this process in the train step `step` (which still finishes)."""
    from src.train import engine

    calls, view = [], engine.student_view

    def student_view(images, size):
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), sig)
        return view(images, size)

    return student_view


def _train_recording(dist: Dist, config: str, stop_at: int) -> list[int]:
    """Stage 1 in this process of 2, where rank 1 gets SIGTERM in its train step `stop_at`: the frames it trained."""
    import train_student_only
    from src.train import engine

    seen = []
    SBIDataset.__getitem__ = _recording(seen)
    if dist.rank == 1:
        engine.student_view = _signalling(signal.SIGTERM, stop_at)
    train_student_only.main([config, "-n", "two"])  # a saved stop returns: the command exits 0
    return seen


@pytest.mark.slow
def test_resume_on_another_world_size_trains_every_sample_of_the_epoch_once(tmp_path, monkeypatch):
    import train_student_only
    from src.train import engine

    root = generate_dataset(tmp_path / "data", videos=6, frames=8, frame_size=(96, 80), face_size=40)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(dict(data_root=str(root), output_dir=str(tmp_path / "output"), image_size=32,
                                      student_image_size=None, model="test_efficientnet", num_workers=0, epoch=1,
                                      batch_size=4, lr=1e-3, optimizer="adamw")))
    seen0, seen1 = run_ranks(_train_recording, 2, str(config), 1)
    run = next((tmp_path / "output").glob("two_*"))
    assert "stopped by SIGTERM (rank 1) in epoch 1 after 1 steps" in (run / "train.log").read_text()
    seen, view = seen0 + seen1, engine.student_view
    monkeypatch.setattr(SBIDataset, "__getitem__", _recording(seen))
    monkeypatch.setattr(engine, "student_view", _signalling(signal.SIGINT, 1))
    train_student_only.main([str(config), "-n", "one", "--resume", str(run)])  # 1 process: 1 step, then stopped
    assert checkpoint.load(run / "weights" / "last.pth")["step"] == 2
    monkeypatch.setattr(engine, "student_view", view)
    train_student_only.main([str(config), "-n", "one", "--resume", str(run)])
    frames = len(SBIDataset(root, "train", 32))
    assert frames >= 4 * 4  # at least 4 steps of 2 pairs
    assert sorted(seen) == sorted(epoch_indices(frames, 1, 5, Dist(), 2))  # every sample once, none lost


def _compile_with_a_broken_compiler_on_rank_1(dist: Dist, cache: str) -> tuple[bool, list[str]]:
    import logging

    import torch._inductor.config as inductor

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # nothing compiled before: inductor needs its C++ compiler
    inductor.cpp.cxx = (None, "/nonexistent/c++") if dist.rank == 1 else inductor.cpp.cxx
    warnings = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("src.train.engine").addHandler(handler)
    torch.manual_seed(0)
    raw = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 14 * 14, 2))
    net = torch.compile(raw, backend="inductor" if dist.rank == 1 else "eager")  # rank 0: no C++ compiler needed
    chosen = eager_where_compile_fails({"student": (net, raw, torch.zeros(4, 3, 16, 16))}, dist)["student"]
    untouched = raw[1].num_batches_tracked.item() == 0 and all(p.grad is None for p in raw.parameters())
    return chosen is raw and untouched, warnings


@pytest.mark.slow
def test_compile_failing_at_the_first_call_on_one_rank_runs_every_rank_eager(tmp_path):
    (eager0, said0), (eager1, said1) = run_ranks(_compile_with_a_broken_compiler_on_rank_1, 2, str(tmp_path))
    assert eager0 and eager1
    assert len(said0) == len(said1) == 1 and "student: failed on another process" in said0[0]
    assert "InvalidCxxCompiler" in said1[0] and "running student eager on every process" in said1[0]


def _bn_statistics_follow_own_batches(dist: Dist) -> bool:
    torch.manual_seed(0)
    raw = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    data = batches(dist, 3)
    train_one_epoch(ddp(raw, dist), data, make_optimizer(raw, CFG)[0], CFG, 1, BadSampleTracker(1.0), None, dist)
    alone = nn.BatchNorm2d(3)
    for batch in data:  # the first layer: its statistics depend on this process's images only
        alone(batch["images"])
    return torch.allclose(raw[0].running_mean, alone.running_mean) and torch.allclose(raw[0].running_var,
                                                                                       alone.running_var)


@pytest.mark.slow
def test_ddp_leaves_each_process_its_own_bn_statistics():
    assert run_ranks(_bn_statistics_follow_own_batches) == [True, True]  # no broadcast of rank 0's at each forward


def test_each_process_picks_its_gpu_or_the_only_one_it_sees(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert Dist(5, 8, 2).device == torch.device("cuda", 2) and Dist(5, 8, 2, cpu=True).device.type == "cpu"
    with pytest.raises(UserError, match="sees only 4 GPUs"):
        _ = Dist(5, 8, 6).device
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # the scheduler shows each process one GPU
    assert Dist(5, 8, 6).device == torch.device("cuda", 0)


@pytest.mark.slow
def test_sigterm_to_torchrun_mid_epoch_saves_that_step_and_resume_continues(tmp_path):
    root = generate_dataset(tmp_path / "data", videos=6, frames=24, frame_size=(96, 80), face_size=40)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(dict(data_root=str(root), output_dir=str(tmp_path / "output"), image_size=32,
                                      student_image_size=None, model="test_efficientnet", num_workers=2, epoch=3,
                                      batch_size=4, lr=1e-3, optimizer="adamw")))
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")

    def torchrun(*args):
        return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                                 "--master_addr=127.0.0.1", f"--master_port={free_port()}", "train_student_only.py",
                                 str(config), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    job = torchrun("-n", "stopped")
    deadline = time.time() + 240
    while not list((tmp_path / "output").glob("stopped_*/log.csv")) and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGTERM)  # to torchrun alone: it forwards SIGTERM to each worker's process group
    err = job.communicate(timeout=120)[1]
    run = next((tmp_path / "output").glob("stopped_*"))
    assert "last.pth is written" in err and "stopped by SIGTERM (ranks 0, 1)" in err, err[-3000:]
    assert "ChildFailedError" not in err, err[-3000:]  # every process exited 0 after the saved stop
    last = checkpoint.load(run / "weights" / "last.pth")
    assert last["epoch"] == 1 and last["step"] > 0, (last["epoch"], last["step"])  # mid-epoch 2, not its start
    assert [s["batches"] for s in last["sums"]] == [last["step"]] * 2  # both ranks' running sums
    resumed = torchrun("-n", "ignored", "--resume", str(run))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-3000:]
    assert [line.split(",")[0] for line in (run / "log.csv").read_text().splitlines()] == ["epoch", "1", "2", "3"]

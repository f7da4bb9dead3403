"""Scale and resilience: torchrun with gloo on the CPU, SIGINT mid-epoch, precision options, output checks."""
import contextlib
import csv
import os
import signal
import subprocess
import sys
import warnings

import pytest
import torch

import train_student_only
from src.common import checkpoint
from src.common.config import ConfigError, load_config
from src.common.distributed import free_port
from src.common.logs import UserError
from src.data.dataset import build_dataset
from src.models.networks import load_checkpoint_model
from src.train import engine, stop
from src.train.engine import make_loader, validate
from src.train.losses import kd_loss


@pytest.fixture(scope="module")
def config(tiny_config):
    return tiny_config("resilience", image_size=48, student_image_size=32, model="test_efficientnet", num_workers=0,
                       epoch=2, batch_size=4, lr=1e-3, optimizer="adamw")


def runs(config, name):
    return sorted((config.parent / "output").glob(f"{name}_*"))


def test_torchrun_two_cpu_processes(config):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "train_student_only.py", str(config), "-n", "ddp"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = runs(config, "ddp")[-1]  # one folder: only rank 0 writes
    assert len(runs(config, "ddp")) == 1
    assert {p.name for p in run.iterdir()} == {"config.json", "log.csv", "train.log", "curves.png", "weights"}
    assert [line.split(",")[0] for line in (run / "log.csv").read_text().splitlines()] == ["epoch", "1", "2"]
    model, ckpt = load_checkpoint_model(run / "weights" / "BEST.pth")
    cfg = load_config(config)
    single = validate(model, make_loader(build_dataset(cfg, "val"), cfg), cfg.student_size)
    assert single["val_auc"] == pytest.approx(ckpt["val_auc"], abs=1e-6)  # gathered predictions: each sample once
    row = next(r for r in csv.DictReader(open(run / "log.csv")) if int(r["epoch"]) == ckpt["epoch"])
    # the loss moves with the BatchNorm statistics: every rank validated rank 0's, the ones saved
    assert single["val_loss"] == pytest.approx(float(row["val_loss"]), rel=1e-5)


def test_sigint_mid_epoch_writes_last_and_resumes_to_identical_weights(config, monkeypatch, caplog):
    sets = ["--set", "epoch=1", "--set", "channels_last=true", "--set", "batch_size=2"]  # 4 steps
    train_student_only.main([str(config), "-n", "straight", *sets])
    calls = []
    view = engine.student_view

    def interrupt_in_step_two(images, size):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives during step 2, which still finishes
        return view(images, size)

    monkeypatch.setattr(engine, "student_view", interrupt_in_step_two)
    with caplog.at_level("WARNING"):
        train_student_only.main([str(config), "-n", "stopped", *sets])  # returns: a saved stop exits 0
    assert "stopped by SIGINT in epoch 1 after 2 steps; last.pth is written. The run is not finished" in caplog.text
    monkeypatch.undo()
    run = runs(config, "stopped")[-1]
    last = checkpoint.load(run / "weights" / "last.pth")
    assert (last["epoch"], last["step"]) == (0, 2) and not (run / "log.csv").exists()
    train_student_only.main([str(config), "-n", "ignored", "--resume", str(run)])
    a = checkpoint.load(runs(config, "straight")[-1] / "weights" / "last.pth")["model"]
    b = checkpoint.load(run / "weights" / "last.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_stop_signal_reaching_workers_as_they_start_does_not_kill_them(config, monkeypatch):
    quiet = stop.quiet_worker

    def signalled_while_starting(worker_id):  # torchrun signals the process group as a new epoch's workers start
        os.kill(os.getpid(), signal.SIGTERM)
        quiet(worker_id)

    monkeypatch.setattr(stop, "quiet_worker", signalled_while_starting)
    cfg = load_config(config, ["num_workers=2"])
    dataset = build_dataset(cfg, "train")
    batches = list(make_loader(dataset, cfg, epoch=0))
    assert len(batches) == len(dataset) // (cfg.batch_size // 2)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()


def test_fp16_is_refused_and_bf16_is_ignored_on_cpu(config, caplog):
    with pytest.raises(ConfigError, match="fp16 needs a gradient scaler"):
        load_config(config, ["amp=fp16"])
    with caplog.at_level("INFO"):
        train_student_only.main([str(config), "-n", "bf16", "--set", "amp=bf16", "--set", "epoch=1"])
    assert "amp 'bf16' is ignored on the CPU" in caplog.text


def test_unwritable_output_folder_fails_at_start(config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write to the output folder"):
        train_student_only.main([str(config), "-n", "x", "--set", f"output_dir={blocker}"])


def test_resume_after_a_kill_between_log_row_and_checkpoint_keeps_one_row_per_epoch(config):
    train_student_only.main([str(config), "-n", "killed", "--set", "epoch=1"])
    run = runs(config, "killed")[-1]
    log = run / "log.csv"
    header, row = log.read_text().splitlines()
    log.write_text(f"{header}\n{row}\n2{row[1:]}\n")  # epoch 2's row written, its last.pth not: killed in between
    train_student_only.main([str(config), "-n", "ignored", "--resume", str(run), "--set", "epoch=2"])
    assert [line.split(",")[0] for line in log.read_text().splitlines()] == ["epoch", "1", "2"]


def test_bf16_autocast_is_chosen_for_cuda_only_and_losses_stay_float32():
    cfg = load_config("configs/config_demo.json", ["amp=bf16"])
    assert isinstance(engine.autocast(cfg, torch.device("cpu")), contextlib.nullcontext)
    with warnings.catch_warnings():  # without a GPU torch warns that it disables CUDA autocast
        warnings.simplefilter("ignore")
        chosen = engine.autocast(cfg, torch.device("cuda"))
    assert isinstance(chosen, torch.autocast) and chosen.fast_dtype == torch.bfloat16
    model = torch.nn.Linear(4, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the same autocast, on the CPU, to exercise the loss path
        logits = model(torch.rand(8, 4))
    t_logits = torch.rand(8, 2, dtype=torch.bfloat16)
    total, hard, soft = kd_loss(logits, t_logits, torch.arange(8) % 2, 0.5, 3.0)
    assert logits.dtype == torch.bfloat16 and total.dtype == hard.dtype == soft.dtype == torch.float32

"""The training engine and both entry scripts, end to end on generated data with tiny models."""
import csv
import dataclasses
import hashlib
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import torch
from torch import nn

import main_distillation
import train_student_only
from src.common import checkpoint
from src.common.config import Config, ConfigError
from src.common.distributed import Dist
from src.common.logs import UserError
from src.data.dataset import BadSampleTracker
from src.models.networks import classifier_from_checkpoint, create_classifier, student_view
from src.train.engine import NonFiniteError, make_optimizer, sync_batchnorm, train_one_epoch

TINY = "test_efficientnet"


@pytest.fixture(scope="module")
def config(tiny_config):
    """A config file for 2 quick epochs on 6 generated videos."""
    return tiny_config("engine", image_size=48, student_image_size=32, model=TINY, num_workers=0, epoch=2,
                       batch_size=8, lr=1e-3, optimizer="adamw", keep_top_k=1, teacher_arch=TINY, min_teacher_auc=0.0)


def run_dirs(config, name):
    return sorted((config.parent / "output").glob(f"{name}_*"))


@pytest.fixture(scope="module")
def stage1(config) -> Path:
    """The run folder of one stage-1 training on `config` (named s1), which the stage-2 tests start from."""
    train_student_only.main([str(config), "-n", "s1"])
    return run_dirs(config, "s1")[-1]


def test_stage1_writes_the_run_folder(stage1):
    run = stage1
    assert {p.name for p in run.iterdir()} == {"config.json", "log.csv", "train.log", "curves.png", "weights"}
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    columns = {"lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "skipped_steps", "seconds"}
    assert columns <= set(rows[0])
    weights = {p.name for p in (run / "weights").iterdir()}
    best = max(rows, key=lambda r: (float(r["val_auc"]), -int(r["epoch"])))
    assert weights == {f"{best['epoch']}_{float(best['val_auc']):.4f}_val.pth", "BEST.pth", "last.pth"}
    ckpt = checkpoint.load(run / "weights" / "BEST.pth")
    assert ckpt["arch"] == TINY and ckpt["config"]["image_size"] == 48 and ckpt["epoch"] == int(best["epoch"])
    assert {"model", "optimizer", "scheduler", "val_auc"} <= set(ckpt)
    faces = dict(detector="synthetic", landmarks="synthetic", landmark_points=81, frames=2)  # the data's faces.json
    assert ckpt["config"]["faces"] == faces and json.loads((run / "config.json").read_text())["faces"] == faces


def test_resume_continues_to_identical_weights(config):
    train_student_only.main([str(config), "-n", "straight"])
    train_student_only.main([str(config), "-n", "halves", "--set", "epoch=1"])
    half = run_dirs(config, "halves")[-1]
    train_student_only.main([str(config), "-n", "ignored", "--resume", str(half), "--set", "epoch=2"])
    a = checkpoint.load(run_dirs(config, "straight")[-1] / "weights" / "last.pth")
    b = checkpoint.load(half / "weights" / "last.pth")
    assert b["epoch"] == 2 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["epoch"] for r in csv.DictReader(open(half / "log.csv"))] == ["1", "2"]


def test_stage2_distils_from_the_stage1_checkpoint(config, stage1, monkeypatch):
    pattern = str(config.parent / "output" / "s1_*" / "weights" / "BEST.pth")
    calls = []

    def counting_teacher(*args, **kwargs):
        teacher = classifier_from_checkpoint(*args, **kwargs)
        teacher.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
        return teacher

    monkeypatch.setattr(main_distillation, "classifier_from_checkpoint", counting_teacher)
    main_distillation.main([str(config), "-n", "s2", "--set", f"teacher_weights={pattern}",
                            "--set", f"pretrained_student_weights={pattern}"])
    run = run_dirs(config, "s2")[-1]
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert {"alpha", "hard_loss", "soft_loss", "agreement"} <= set(rows[0])
    assert float(rows[0]["alpha"]) == pytest.approx(0.95) and float(rows[1]["alpha"]) == pytest.approx(0.9375)
    n_train_batches, n_val_batches = 1, 1  # 4 train and 4 val frames, 4 pairs per batch
    assert len(calls) == 2 * n_train_batches + n_val_batches  # teacher val check + one forward per train batch
    assert all(shape[-1] == 48 for shape in calls)  # the teacher sees image_size, the student student_image_size
    used = json.loads((run / "config.json").read_text())  # globs resolved once (on rank 0): the file itself
    assert used["teacher_weights"] == used["pretrained_student_weights"] and "*" not in used["teacher_weights"]
    assert Path(used["teacher_weights"]).is_file() and Path(used["teacher_weights"]).match("s1_*/weights/BEST.pth")


def test_stage2_refuses_a_student_without_stage1(config, stage1):
    with pytest.raises(ConfigError, match="Run stage 1 first"):
        main_distillation.main([str(config), "-n", "x", "--set", f"teacher_weights={stage1 / 'weights' / 'BEST.pth'}"])


def test_stage2_stops_when_the_teacher_cannot_tell_fakes(config, stage1):
    best = str(stage1 / "weights" / "BEST.pth")
    with pytest.raises(UserError, match="loaded wrongly"):
        main_distillation.main([str(config), "-n", "x", "--set", f"teacher_weights={best}", "--set",
                                f"pretrained_student_weights={best}", "--set", "min_teacher_auc=1.0"])


def test_a_refused_run_leaves_no_run_folder_and_a_resumed_one_keeps_its_files(config, stage1, tmp_path, monkeypatch):
    plain = tmp_path / "plain.pth"  # a plain state dict: a teacher of the reference's faces (RetinaFace), not synthetic
    torch.save(create_classifier(TINY).state_dict(), plain)
    best = str(stage1 / "weights" / "BEST.pth")
    output = config.parent / "output"
    before = set(output.iterdir())
    with pytest.raises(UserError, match="trained on faces found by retinaface"):
        main_distillation.main([str(config), "-n", "refused", "--set", f"teacher_weights={plain}"])
    with pytest.raises(UserError, match="loaded wrongly"):
        main_distillation.main([str(config), "-n", "refused", "--set", f"teacher_weights={best}", "--set",
                                f"pretrained_student_weights={best}", "--set", "min_teacher_auc=1.0"])
    monkeypatch.setattr("src.train.run.init_distributed", lambda: Dist(0, 2, cpu=True))  # two CPU processes
    with pytest.raises(ConfigError, match="sync_bn needs CUDA processes"):
        train_student_only.main([str(config), "-n", "refused", "--set", "sync_bn=true"])
    monkeypatch.undo()
    assert set(output.iterdir()) == before
    resumed = shutil.copytree(stage1, tmp_path / "resumed")
    files = _hashes(resumed)
    with pytest.raises(UserError, match="trained on faces found by retinaface"):
        main_distillation.main([str(config), "-n", "x", "--resume", str(resumed), "--set", f"teacher_weights={plain}"])
    assert _hashes(resumed) == files  # config.json keeps its teacher for a later plain --resume


def test_a_refused_run_starting_in_the_same_second_as_a_live_one_leaves_the_live_folder(config, tmp_path, monkeypatch):
    plain = tmp_path / "plain.pth"
    torch.save(create_classifier(TINY).state_dict(), plain)
    now = datetime(2026, 1, 2, 3, 4, 5)
    monkeypatch.setattr("src.train.run.datetime", type("Frozen", (), {"now": staticmethod(lambda: now)}))
    live = config.parent / "output" / "clash_20260102-030405"
    (live / "weights").mkdir(parents=True)  # a live run of the same name, started this second, before its first save
    before = set(live.parent.iterdir())
    with pytest.raises(UserError, match="trained on faces found by retinaface"):
        main_distillation.main([str(config), "-n", "clash", "--set", f"teacher_weights={plain}"])
    assert set(live.parent.iterdir()) == before and (live / "weights").is_dir()  # only its own clash_..._2 went


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in folder.rglob("*")}


@pytest.mark.parametrize("script", [train_student_only, main_distillation])
def test_help_lists_every_config_key_with_its_default(script, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--help"])
    out = capsys.readouterr().out
    for key, default in [("lr", "0.0001"), ("alpha_schedule", "null"), ("keep_top_k", "5"), ("compression", "c23")]:
        assert re.search(rf"^ +{key} +{re.escape(default)}( |$)", out, re.M), key
    assert all(re.search(rf"^ +{f.name} ", out, re.M) for f in dataclasses.fields(Config))
    assert re.search(r"^ +mask_type +random +random\|hull\|dfl_full\|extended\|components$", out, re.M)
    assert re.search(r"^ +lr +0.0001 +\(0.0, 10.0\]$", out, re.M) and "None" not in out  # JSON spelling: null


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)
        self.calls, self.poison = 0, None  # poison "pass1": every forward is NaN; "pass2": every second one

    def forward(self, x):
        out = self.fc(self.bn(x).mean((2, 3)))
        self.calls += 1
        if self.poison == "pass1" or (self.poison == "pass2" and self.calls % 2 == 0):
            out = out * float("nan")
        return out


def _batches(n):
    g = torch.Generator().manual_seed(0)
    return [{"images": torch.rand(4, 3, 8, 8, generator=g), "labels": torch.tensor([0, 0, 1, 1]), "failures": []}
            for _ in range(n)]


@pytest.mark.parametrize("poison", ["pass1", "pass2"])
def test_nonfinite_steps_are_skipped_with_weights_untouched(poison):
    model, cfg = Tiny(), Config(epoch=1, lr=0.1, student_image_size=8, max_consecutive_nonfinite=3)
    model.poison = poison
    optimizer, _ = make_optimizer(model, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train_one_epoch(model, _batches(2), optimizer, cfg, 1, BadSampleTracker(0.01))
    assert stats["skipped"] == 2 and stats["steps"] == 0
    after = model.state_dict()  # no step, no leftover SAM perturbation, BN statistics of the skipped steps undone
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(NonFiniteError, match="3 consecutive steps.*lr too high"):
        train_one_epoch(model, _batches(3), optimizer, cfg, 1, BadSampleTracker(0.01))


@pytest.mark.parametrize("sync_bn", [False, True])
def test_clean_steps_move_weights_and_bn_stats_once(sync_bn):
    model, cfg = Tiny(), Config(epoch=1, lr=0.1, student_image_size=8, sync_bn=sync_bn)
    if sync_bn:  # SyncBatchNorm as under torchrun (its forward here, without a process group, is BatchNorm's)
        model = sync_batchnorm(model, cfg, Dist(0, 2))
    optimizer, _ = make_optimizer(model, cfg)
    before, alone = model.fc.weight.clone(), nn.BatchNorm2d(3)
    batches = _batches(3)
    train_one_epoch(model, batches, optimizer, cfg, 1, BadSampleTracker(0.01))
    for batch in batches:  # BN is the first layer: its statistics of the three first passes only
        alone(batch["images"])
    assert not torch.equal(before, model.fc.weight) and model.bn.num_batches_tracked.item() == 3
    assert torch.allclose(model.bn.running_mean, alone.running_mean) and torch.allclose(model.bn.running_var,
                                                                                        alone.running_var)


def test_sync_bn_converts_the_student_under_several_processes_only():
    model = Tiny()
    weight = model.bn.weight
    assert sync_batchnorm(model, Config(sync_bn=True), Dist()).bn is sync_batchnorm(model, Config(), Dist(0, 2)).bn
    synced = sync_batchnorm(model, Config(sync_bn=True), Dist(0, 2))
    assert isinstance(synced.bn, nn.SyncBatchNorm) and synced.bn.weight is weight  # the optimizer's parameters
    assert synced.state_dict().keys() == Tiny().state_dict().keys()  # checkpoints load into either


def test_student_view_resizes_with_antialiasing():
    x = torch.zeros(1, 3, 64, 64)
    x[..., ::2] = 1  # a pattern that plain bilinear downsampling would alias
    assert student_view(x, 64) is x
    small = student_view(x, 16)
    assert small.shape == (1, 3, 16, 16) and torch.allclose(small, torch.full_like(small, 0.5), atol=0.05)

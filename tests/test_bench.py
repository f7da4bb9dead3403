"""The benchmark commands run on tiny settings and print every figure (their numbers are not asserted)."""
import json
import tempfile
from contextlib import nullcontext

import pytest
import torch

from src import bench_data, bench_train
from src.common.config import Config
from src.train.bench import measure
from src.train.engine import compiled


def test_bench_data_prints_both_mask_types_and_every_stage(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"image_size": 48, "batch_size": 4, "mask_type": "dfl_full"}))
    bench_data.main([str(config), "--synthetic", "160x128", "--face-size", "60", "--pairs", "4", "--workers", "1"])
    out = capsys.readouterr().out
    assert "1 process" in out and "1 workers" in out and all(s in out for s in bench_data.STAGES)
    assert out.count("ms") >= 2 * len(bench_data.STAGES) and "dfl_full" in out and "hull" in out



@pytest.mark.parametrize("fails", [False, True])
def test_bench_data_synthetic_removes_its_generated_data_even_on_ctrl_c(fails, tmp_path, monkeypatch):
    config, temp = tmp_path / "config.json", tmp_path / "temp"
    config.write_text(json.dumps({"image_size": 48, "batch_size": 4}))
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    if fails:
        monkeypatch.setattr(bench_data, "one_process", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt) if fails else nullcontext():
        bench_data.main([str(config), "--synthetic", "160x128", "--face-size", "60", "--pairs", "2", "--workers", "0"])
    assert not any(temp.iterdir())

@pytest.mark.slow
def test_bench_train_prints_both_stages_and_the_ratio(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": "test_efficientnet", "teacher_arch": "test_efficientnet",
                                  "image_size": 48, "student_image_size": 32}))
    bench_train.main([str(config), "--stage", "2", "--batch", "4", "--steps", "1", "--nproc", "2"])
    out = capsys.readouterr().out
    assert "stage 1:" in out and "stage 2:" in out and "s/step" in out and "images/s" in out and "peak" in out
    assert "SAM's own work per steady step" in out and "one parameter at a time" in out and "set-up" in out
    assert "stage 2 / stage 1 step time" in out and "expected" in out
    assert "teacher recipe" in out and "stage 1 student / teacher recipe" in out
    assert "2 gloo processes" in out and "scaling efficiency" in out


def test_bench_train_processes_stay_on_the_cpu_where_cuda_exists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine: --nproc still measures gloo CPUs
    cfg = Config(model="test_efficientnet", image_size=32, student_image_size=None, batch_size=4)
    out = measure(cfg, 1, 1, cpu=True)
    assert out["memory"] == "RSS" and out["step"] > 0 and out["student_fwd_bwd"] > 0


def test_compile_falls_back_to_the_module_where_it_fails(monkeypatch, caplog):
    module, cfg = torch.nn.Linear(2, 2), Config(compile=True)
    assert compiled(module, cfg, torch.device("cpu")) is module  # CPU: not compiled
    monkeypatch.setattr(torch, "compile", lambda m: (_ for _ in ()).throw(RuntimeError("no triton")))
    with caplog.at_level("WARNING"):
        assert compiled(module, cfg, torch.device("cuda")) is module
    assert "torch.compile failed (RuntimeError: no triton)" in caplog.text

"""src.gpu_check's rows on the CPU (--cpu-tiny: gloo, tiny models): fit under torchrun stopped by SIGTERM and
resumed, the step rows, RetinaFace scoring with 2 workers, and one table in which a failing row does not stop the
next."""
import dataclasses
import json

import pytest
import torch

from src import gpu_check
from src.faces.retinaface import RetinaFace
from src.train.fit_check import sigterm_and_resume


def test_without_cuda_it_says_so_and_exits_cleanly(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpu_check.main([])
    assert "no CUDA device" in capsys.readouterr().out


@pytest.mark.slow
def test_stage_2_under_torchrun_stops_by_sigterm_mid_epoch_and_resumes_to_the_end(tmp_path):
    mode = gpu_check.cpu_tiny_mode()
    result = sigterm_and_resume(2, mode.cfg, tmp_path, 2, mode.frame_size, mode.face_size, mode.fit_keys, cuda=False)
    assert result.startswith("2 x 4 images (gloo): SIGTERM in epoch 1 after step ")
    assert "resumed to epoch 1, val AUC" in result
    assert "last.pth is written" in (tmp_path / "stage2.log").read_text()


@pytest.mark.slow
def test_a_failing_row_prints_its_error_in_the_table_and_the_next_rows_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no RetinaFace weights under weights/ here
    gpu_check.main(["--cpu-tiny", "--rows", "evaluate,benchmark", "--work", str(tmp_path / "work")])
    out = capsys.readouterr().out
    table = out[out.index("| check |"):].split("\n\n")[0].splitlines()
    assert len(table) == 2 + 3  # header, rule, then every row, in one table
    assert table[2].startswith("| evaluate, RetinaFace, 2 workers | FAILED MissingFile: RetinaFace weights")
    assert all(line.startswith("| benchmark, eager") and "latency at batch 1" in line for line in table[3:])
    assert (tmp_path / "work/benchmark_fp32/benchmark.md").is_file() and "benchmark_bf16/benchmark.md" in table[4]
    assert json.loads((tmp_path / "work/benchmark_fp32/benchmark.json").read_text())["rows"]


def test_the_step_rows_time_both_stages_and_compile_comes_last(tmp_path):
    mode = gpu_check.cpu_tiny_mode()
    names = [name for name, _ in gpu_check.plan(mode, tmp_path, 2, 1, list(gpu_check.ROWS), True, None)]
    assert names[:2] == ["fit stage 1, torchrun, SIGTERM + resume", "fit stage 2, torchrun, SIGTERM + resume"]
    assert [n for n in names if n.startswith("step")][-2:] == names[-2:] == [
        "step, batch 32, bf16 + compile", "step, batch 4, bf16 + compile"]
    assert len([n for n in names if n.startswith("step")]) == 8
    cfg = dataclasses.replace(mode.cfg, batch_size=4)
    row = gpu_check.step_row(cfg, {"amp": "bf16", "channels_last": True}, 1, cuda=False)
    assert row.startswith("stage 1: ") and "; stage 2: " in row and row.count("s/step") == 2


def test_the_evaluate_row_scores_a_generated_video_with_2_workers(tmp_path):
    torch.save(RetinaFace().state_dict(), tmp_path / "retinaface.pth")  # random weights: the speed is the same
    row = gpu_check.evaluate_row(gpu_check.cpu_tiny_mode(), tmp_path, str(tmp_path / "retinaface.pth"))
    assert row.startswith("4 frames of 160x128") and "frames/s (RetinaFace on cpu, 2 workers)" in row

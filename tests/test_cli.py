"""Every command ends an expected failure (bad config, missing or wrong file, unreadable media) in one 'error: ...'
line and a non-zero exit, without a traceback; a bug keeps its traceback."""
import subprocess
import sys
from functools import partial

import numpy as np
import pytest

import main_distillation
import train_student_only
from src import (
    bench_data,
    bench_train,
    benchmark,
    demo,
    evaluate,
    export,
    gpu_check,
    predict,
    preprocess,
    preview,
    retinaface,
    synthetic,
)
from src.common.config import ConfigError
from src.common.logs import BadInput, MissingFile, UserError, cli
from src.faces.detectors import UnreadableMedia


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """A folder of broken inputs: noise.pth (random bytes), broken.json (not JSON), typed.json (a wrong type)."""
    folder = tmp_path_factory.mktemp("bad")
    (folder / "noise.pth").write_bytes(np.random.default_rng(0).bytes(4000))
    (folder / "broken.json").write_text('{"lr": 0.1,')
    (folder / "typed.json").write_text('{"lr": "fast"}')
    (folder / "clip.mp4").write_bytes(b"not a video")
    return folder


CASES = {  # command -> (argv builder, what the message names)
    "train_student_only": (train_student_only.main, lambda b: [str(b / "broken.json"), "-n", "x"], "not valid JSON"),
    "main_distillation": (main_distillation.main, lambda b: [str(b / "typed.json"), "-n", "x"], "'lr' = 'fast'"),
    "preprocess": (preprocess.main, lambda b: ["--root", str(b / "nowhere"), "--detector", "dlib"], "not found"),
    "evaluate": (evaluate.main, lambda b: ["--weights", str(b / "noise.pth"), "--dataset", "folder", "--root", str(b)],
                 "real/ nor a fake/"),
    "predict": (predict.main, lambda b: ["--weights", str(b / "noise.pth"), str(b / "clip.mp4")],
                "not a readable PyTorch checkpoint"),
    "export": (export.main, lambda b: ["--weights", str(b / "noise.pth")], "not a readable PyTorch checkpoint"),
    "benchmark": (benchmark.main, lambda b: ["--teacher", str(b / "noise.pth"), "--paths", "eager", "--out", str(b)],
                  "not a readable PyTorch checkpoint"),
    "preview": (preview.main, lambda b: [str(b / "missing.json")], "does not exist"),
    "bench_data": (bench_data.main, lambda b: [str(b / "typed.json")], "'lr' = 'fast'"),
    "bench_train": (bench_train.main, lambda b: [str(b / "broken.json")], "not valid JSON"),
    "synthetic": (synthetic.main, lambda b: ["--out", str(b / "s"), "--frames", "0"], "1-1000 frames"),
    "demo": (demo.main, lambda b: ["--config", str(b / "typed.json")], "'lr' = 'fast'"),
    "retinaface": (retinaface.main, lambda b: ["--weights", str(b / "missing.zip")], "not found"),
    "gpu_check": (gpu_check.main, lambda b: ["--config", str(b / "missing.json")], None),  # no CUDA: nothing read
}


@pytest.mark.parametrize("command", list(CASES))
def test_expected_failures_end_in_one_error_line(command, bad, capsys, monkeypatch):
    main, argv, names = CASES[command]
    monkeypatch.chdir(bad)
    if names is None:
        cli(partial(main, argv(bad)))  # gpu_check without CUDA: says so and exits cleanly
        assert "no CUDA device" in capsys.readouterr().out
        return
    with pytest.raises(SystemExit) as exit_info:
        cli(partial(main, argv(bad)))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "error: " in err and names in err and "Traceback" not in err, err[-2000:]


@pytest.mark.parametrize("bug", [ZeroDivisionError, ValueError, OSError, FileNotFoundError, KeyError])
def test_a_bug_keeps_its_traceback_even_as_a_value_or_os_error(bug):
    def main():
        raise bug("zip() argument 2 is shorter than argument 1")  # a bug of ours, not the user's mistake

    with pytest.raises(bug):
        cli(main)


@pytest.mark.parametrize("error", [UserError, MissingFile, BadInput, UnreadableMedia, ConfigError])
def test_the_projects_own_errors_end_in_one_line(error, capsys):
    def main():
        raise error("what is wrong, and the fix")

    with pytest.raises(SystemExit) as exit_info:
        cli(main)
    assert exit_info.value.code == 2 and capsys.readouterr().err == "error: what is wrong, and the fix\n"


def test_the_module_entry_point_is_the_wrapped_one(bad):
    result = subprocess.run([sys.executable, "-m", "src.preview", str(bad / "broken.json")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.stderr


def test_an_output_folder_is_made_with_its_parents_or_refused_naming_the_option(tmp_path):
    from src.common.logs import make_folder

    assert make_folder(tmp_path / "a/b/c", "--out").is_dir()  # src.export --out into a folder not made yet
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"cannot make the folder .*file/x \(Not a directory\): choose another --out"):
        make_folder(tmp_path / "file/x", "--out")

"""Every command in the README's and the guide's code blocks parses with that command's own argument parser, so a
renamed or missing flag breaks the build (parsed only, never run)."""
import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest
import torch

from conftest import SquareDetector, clip_frame, student_checkpoint, write_video

ROOT = Path(__file__).resolve().parents[1]
THIRD_PARTY = {"download-FaceForensics.py"}  # the FF++ authors' download script, sent on request


class Parsed(Exception):
    """Raised in place of running the command, once its arguments parsed."""


def commands() -> list[tuple[str, str, list[str]]]:
    """(file, module, argv) of each python/torchrun command in the bash code blocks of the README and the guide."""
    found = []
    for name in ("README.md", "KNOWLEDGE_DISTILLATION_GUIDE.md"):
        for block in re.findall(r"```bash\n(.*?)```", (ROOT / name).read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for part in line.split("#")[0].split("&&"):
                    words = [w for w in shlex.split(part) if not (w.startswith("[") or w.endswith("]"))]
                    if words[:2] == ["python", "-m"] and words[2].startswith("src."):
                        found.append((name, words[2], words[3:]))
                    elif words and words[0] in ("python", "torchrun") and any(w.endswith(".py") for w in words):
                        i = next(i for i, w in enumerate(words) if w.endswith(".py"))
                        if words[i] not in THIRD_PARTY:
                            found.append((name, words[i][:-3], words[i + 1:]))
    return found


def test_the_readme_walks_from_preprocessing_to_the_benchmark_in_order():
    readme = [m for source, m, _ in commands() if source == "README.md"]
    walk = ["src.preprocess", "src.regions", "src.preview", "train_student_only", "main_distillation", "src.evaluate",
            "src.export", "src.benchmark"]
    firsts = [readme.index(m) for m in walk]  # a missing step raises here
    assert firsts == sorted(firsts), [readme[i] for i in sorted(firsts)]
    assert "download-FaceForensics.py" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("source, module, argv", commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_each_documented_command_parses(source, module, argv, monkeypatch):
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse(self, args, namespace)  # a wrong flag exits here with argparse's message (SystemExit 2)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(Parsed):
        importlib.import_module(module).main(argv)


def test_the_project_stands_alone_citing_no_design_file_outside_it():
    files = [*ROOT.glob("*.md"), *ROOT.glob("*.py"), *(ROOT / "src").rglob("*.py"), *(ROOT / "configs").glob("*.json")]
    cited = {f.name for f in files for name in ("PIPELINE_DESIGN", "SBI_REFERENCE", "shared/docs")
             if name in f.read_text()}
    assert not cited and len(files) > 30


def test_benchmark_on_cuda_says_loudly_what_it_skips(monkeypatch, caplog):
    from src import benchmark

    def stop(*args):
        raise Parsed

    monkeypatch.setattr(benchmark, "resolve", stop)  # right after the paths are chosen
    with caplog.at_level("WARNING"), pytest.raises(Parsed):
        benchmark.main(["--device", "cuda"])
    assert "onnx, onnx-int8 and the int8 AUC check are skipped" in caplog.text and "--device cpu" in caplog.text


def test_the_guides_python_snippet_scores_a_clip_in_eval_mode(tmp_path, monkeypatch, capsys):
    from src.faces import detectors as faces
    from src.models.classifier import StudentInput

    model = student_checkpoint(tmp_path / "BEST.pth", 40)  # crops at 48 px, the student at 40 inside
    write_video(tmp_path / "clip.mp4", [clip_frame((40, 90, 0))] * 8)
    monkeypatch.setattr(faces, "make_detector", lambda name: SquareDetector())  # no RetinaFace weights here
    snippet, = re.findall(r"```python\n(.*?)```", (ROOT / "KNOWLEDGE_DISTILLATION_GUIDE.md").read_text(), re.S)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(snippet.replace("output/distill_mobilevit_*/weights/BEST.pth", "BEST.pth"), scope)
    assert isinstance(scope["model"], StudentInput) and not scope["model"].training and scope["crop"] == 48
    assert torch.equal(scope["model"].model.state_dict()["fc.weight"], model.state_dict()["fc.weight"])
    assert len(scope["result"].faces) == 16 and 0 < scope["result"].score() < 1  # two faces in each of the 8 frames
    assert str(scope["result"].score()) in capsys.readouterr().out


def test_the_code_runs_on_python_3_10_and_refuses_older():
    import subprocess
    import sys

    from src import PYTHON

    # vermin knows the version that introduced each syntax feature, module and stdlib function (hashlib.file_digest:
    # 3.11), so code that needs a newer Python than the README promises fails here
    files = [str(p) for p in [*ROOT.glob("*.py"), *(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]]
    vermin = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]
    found = subprocess.run([*vermin, "--no-tips", "--violations", "--eval-annotations", "-t=%d.%d-" % PYTHON, *files],
                           capture_output=True, text=True)
    assert found.returncode == 0, found.stdout[-3000:]
    assert PYTHON == (3, 10) and "Python 3.10+" in (ROOT / "README.md").read_text()
    old = subprocess.run([sys.executable, "-c", "import sys; sys.version_info = (3, 9, 18); import src"], cwd=ROOT,
                         capture_output=True, text=True)
    assert old.returncode == 1 and "needs Python 3.10 or newer" in old.stderr


def test_every_test_the_docs_cite_exists():
    text = (ROOT / "README.md").read_text() + (ROOT / "KNOWLEDGE_DISTILLATION_GUIDE.md").read_text()
    cited = set(re.findall(r"tests/(test_\w+\.py)::(\w+)", text))
    missing = [f"{f}::{name}" for f, name in sorted(cited) if not (ROOT / "tests" / f).is_file()
               or not re.search(rf"^def {name}\b", (ROOT / "tests" / f).read_text(), re.M)]
    assert len(cited) > 20 and not missing, missing

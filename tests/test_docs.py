"""Every command in the README's and the guide's code blocks parses with that command's own argument parser, so a
renamed or missing flag breaks the build (parsed only, never run)."""
import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
                        found.append((name, words[i][:-3], words[i + 1:]))
    return found


def test_the_docs_hold_the_walk_from_preprocessing_to_the_benchmark():
    modules = {m for _, m, _ in commands()}
    assert {"src.preprocess", "train_student_only", "main_distillation", "src.evaluate", "src.export",
            "src.benchmark", "src.regions"} <= modules


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
    files = [*ROOT.glob("*.md"), *ROOT.glob("*.py"), *(ROOT / "src").glob("*.py"), *(ROOT / "configs").glob("*.json")]
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

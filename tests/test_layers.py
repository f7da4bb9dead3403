"""The package's layers: imports point one way (commands, then scoring/deploy/train, then data/faces/models, then
common), and inference loads no training or SBI-data code."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYER = {"common": 0, "models": 1, "faces": 1, "data": 1, "scoring": 2, "deploy": 2, "train": 2}
# The only imports between packages of one layer (scoring may use deploy's runtime, never the reverse)
SIDEWAYS = {("data", "faces"), ("data", "models"), ("scoring", "deploy")}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the src modules it imports anywhere in its file (function-local imports too)."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "src":
                assert node.level == 0, f"{name}: a relative import ({node.module})"
                submodules = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                found |= submodules or ({node.module} & set(modules))
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
        graph[name] = found - {name}
    return graph


def layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    if len(parts) == 2 and parts[1] not in LAYER:  # src/<command>.py
        return 3, parts[1]
    return LAYER[parts[1]], parts[1]


def allowed(source: str, target: str) -> bool:
    (a, pa), (b, pb) = layer(source), layer(target)
    if a == 3:  # a command may use any library below it, and src.benchmark's rows (gpu_check)
        return True
    return pa == pb or b < a or (a == b and (pa, pb) in SIDEWAYS)


def test_imports_point_down_the_layers():
    broken = {(s, t) for s, targets in imports().items() for t in targets if not allowed(s, t)}
    assert not broken, f"imports against the layers: {sorted(broken)}"


def test_no_import_cycles():
    graph = imports()
    done, stack = set(), set()

    def visit(node, path):
        assert node not in stack, f"import cycle: {' -> '.join(path)}"
        if node in done:
            return
        stack.add(node)
        for nxt in graph.get(node, ()):
            visit(nxt, [*path, nxt])
        stack.discard(node)
        done.add(node)

    for node in graph:
        visit(node, [node])


def loaded(module: str) -> list[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow
def test_inference_loads_no_training_code():
    for module, banned in [("src.predict", ("albumentations", "sklearn", "src.data", "src.train", "src.evaluate")),
                           ("src.export", ("albumentations", "sklearn", "src.data", "src.train", "src.evaluate")),
                           ("src.evaluate", ("albumentations", "src.data", "src.train"))]:
        found = [m for m in loaded(module) if m.startswith(banned)]
        assert not found, f"import {module} loads {found}"

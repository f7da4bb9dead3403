"""The package's layers: every module is a documented command or in a layer's package, imports point one way
(commands, then scoring/deploy/train, then data/faces/models, then common), and inference imports no training code
and SBI-data code only for int8 calibration's real crops, lazily."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# The documented `python -m src.<command>` tools (README): the only modules of src/ itself
COMMANDS = {"preprocess", "regions", "preview", "evaluate", "predict", "export", "benchmark", "summary", "demo",
            "synthetic", "retinaface", "bench_data", "bench_train", "gpu_check"}
LAYER = {"common": 0, "models": 1, "faces": 1, "data": 1, "scoring": 2, "deploy": 2, "train": 2}
# The only imports between packages of one layer (scoring may use deploy's runtime, never the reverse)
SIDEWAYS = {("data", "faces"), ("data", "models"), ("scoring", "deploy")}
INFERENCE = {"scoring", "deploy"}  # never import the training loop, nor the SBI data but for int8's real crops
CALIBRATION = "src.deploy.calibration"  # the one inference module on src.data; deploy.onnx's export() loads it lazily


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level(tree: ast.Module) -> list[ast.AST]:
    """The nodes run when the module is imported: all but function bodies."""
    nodes, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            nodes.append(node)
            todo.extend(ast.iter_child_nodes(node))
    return nodes


def imports(lazy: bool = True) -> dict[str, set[str]]:
    """Module -> the src modules it imports anywhere in its file (with `lazy`, function-local imports too)."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found, tree = set(), ast.parse(path.read_text())
        for node in ast.walk(tree) if lazy else module_level(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "src":
                assert node.level == 0, f"{name}: a relative import ({node.module})"
                submodules = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                found |= submodules or ({node.module} & set(modules))
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
        graph[name] = found - {name}
    return graph


def package(module: str) -> str:
    """src.<package>.x -> <package>; a command's own name for src.<command>."""
    return module.split(".")[1] if "." in module else ""


def layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in COMMANDS:  # src/<command>.py
        return 3, parts[1]
    assert parts[1] in LAYER, (
        f"{module} is neither a documented command ({', '.join(sorted(COMMANDS))}) nor in a layer's package: "
        f"move it into src/<package>/, or document the command in README and add it to COMMANDS")
    return LAYER[parts[1]], parts[1]


def allowed(source: str, target: str) -> bool:
    (a, pa), (b, pb) = layer(source), layer(target)
    if a == 3:  # a command may use any library below it, and no other command
        return b < 3
    return pa == pb or b < a or (a == b and (pa, pb) in SIDEWAYS)


def test_every_module_is_a_command_or_in_a_layer():
    modules = set(imports()) - {"src"}
    for module in modules:
        layer(module)
    missing = {c for c in COMMANDS if f"src.{c}" not in modules}
    assert not missing, f"documented commands without a file: {sorted(missing)}"


def test_imports_point_down_the_layers():
    broken = {(s, t) for s, targets in imports().items() for t in targets if not allowed(s, t)}
    assert not broken, (f"imports against the layers: {sorted(broken)}; imports point down (commands, then scoring/"
                        f"deploy/train, then data/faces/models, then common), and a command imports only libraries "
                        f"(src/<package>/), never another command: move shared code into a library")


def test_inference_imports_no_training_and_data_only_for_calibration():
    broken = {(s, t) for s, targets in imports().items() if package(s) in INFERENCE for t in targets
              if package(t) == "train" or package(t) == "data" and s != CALIBRATION}
    assert not broken, f"scoring or deploy importing src.train, or src.data outside {CALIBRATION}: {sorted(broken)}"
    eager = {s for s, targets in imports(lazy=False).items() if CALIBRATION in targets}
    assert not eager, (f"{sorted(eager)} import {CALIBRATION} (so the SBI data pipeline) when imported: import it "
                       f"inside the function that needs real crops")


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

"""Teacher vs student speed and memory side by side (src.benchmark's library): the models as fed, their runners taking
turns, the ONNX files each path measures, peak memory in fresh processes, and the results table.

PyTorch is imported inside functions: the memory probes of the ONNX Runtime paths run without it, in spawned processes
that import this module (and src.benchmark, their main module), so neither may import it at the top.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from src.common.logs import BadInput, MissingFile
from src.deploy.runtime import ort_session, quantize_int8

if TYPE_CHECKING:
    from torch import nn

_logger = logging.getLogger(__name__)
PATHS = ("eager", "onnx", "onnx-int8")
DEPLOYED = "onnx-int8"
TARGET_LATENCY_RATIO = 0.6  # the design: student 30 ms where the teacher takes 50 ms
AUC_TOLERANCE = 0.005


@dataclass(frozen=True)
class Settings:
    """How a run times the models and what its table says of it (src.benchmark's options)."""

    device: str
    threads: int  # PyTorch's and ONNX Runtime's
    runs: int = 30  # timed runs at batch 1
    warmup: int = 5
    batch: int = 32  # the throughput figure's batch
    batch_runs: int = 3
    train_batch: int = 8  # the training-step memory figure's batch
    bf16: bool = False  # the eager path under bf16 autocast


@dataclass(frozen=True)
class Model:
    """One side of the comparison: role, timm architecture, network input size, fed input size (the face crop, which
    the network resizes to its size when they differ), weights file (None: random weights)."""

    role: str
    arch: str
    size: int
    crop: int
    weights: str | None = None


def build(m: Model, net: nn.Module | None = None) -> nn.Module:
    """The eval-mode network of `m` (`net`, else loaded on the CPU) fed as src.export's file is: crops at m.crop px,
    resized to m.size inside (`StudentInput`) when they differ."""
    from src.deploy.onnx import network
    from src.models.classifier import StudentInput, load_classifier
    from src.models.networks import create_classifier

    if net is None:
        net = create_classifier(m.arch) if m.weights is None else network(load_classifier(m.weights)[0])
    return (net if m.crop == m.size else StudentInput(net, m.size)).eval()


def resolve(role: str, arch: str, size: int, weights: str | None, crop: int | None = None) -> tuple[Model, nn.Module]:
    """(`Model`, its network from `build`) of a role: from the weights file when given (its own architecture, size and
    crop), else random weights of `arch` at `size` fed at `crop` px (None: `size`)."""
    if weights is None:
        m = Model(role, arch, size, crop or size)
        return m, build(m)
    from src.common.config import resolve_path
    from src.deploy.onnx import network
    from src.models.classifier import load_classifier

    file = str(resolve_path(weights, f"{role} weights"))
    model, own, _ = load_classifier(file)
    net = network(model)
    m = Model(role, net.pretrained_cfg["architecture"], own if net is model else model.size, own, file)
    return m, build(m, net)


def _rss_mb(field: str) -> float:
    """This process's resident memory in MB from /proc/self/status: VmRSS now, VmHWM its peak (Linux)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _rss_baseline() -> float:
    """Reset the peak to the current resident memory, and return that (getrusage's peak would include the parent's)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_mb("VmRSS")


def peak_memory(m: Model, path: str, onnx_file: str | None, device: str, bf16: bool, train_batch: int,
                threads: int) -> tuple[float, float | None]:
    """Peak memory in MB of inference at batch 1 and (eager) of one training step, measured in this fresh process."""
    if path != "eager":
        base = _rss_baseline()
        session = ort_session(onnx_file, threads)
        session.run(None, {"x": np.random.rand(1, 3, m.crop, m.crop).astype(np.float32)})
        return _rss_mb("VmHWM") - base, None
    import torch
    import torch.nn.functional as F

    from src.models import classifier  # noqa: F401 (the loading code that build uses, imported before the baseline)

    torch.set_num_threads(threads)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    base = 0.0 if cuda else _rss_baseline()

    def peak() -> float:
        return torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb("VmHWM") - base

    net = build(m).to(dev)
    with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
        net(torch.rand(1, 3, m.crop, m.crop, device=dev))
    inference = peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # the weights stay resident, so they count in both figures
    net.train().requires_grad_(True)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    with torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
        logits = net(torch.rand(train_batch, 3, m.crop, m.crop, device=dev))
    F.cross_entropy(logits.float(), torch.arange(train_batch, device=dev) % 2).backward()
    optimizer.step()
    return inference, peak()


def take_turns(runners: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each runner after `warmup` calls; the runners take turns, so all see the same load."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def eager_runner(net: nn.Module, size: int, batch: int, device: str, bf16: bool) -> Callable[[], None]:
    import torch

    dev = torch.device(device)
    x = torch.rand(batch, 3, size, size, device=dev)

    def run() -> None:
        with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
            net(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return run


def ort_runner(session, size: int, batch: int) -> Callable[[], object]:
    x = np.random.rand(batch, 3, size, size).astype(np.float32)
    return lambda: session.run(None, {"x": x})


def random_weight_files(net: nn.Module, m: Model, paths: list[str], folder: Path) -> dict[str, str]:
    """{path: ONNX file} of a random-weight role: exported into `folder`, int8 calibrated on random crops."""
    from src.deploy.onnx import export_onnx

    fp32 = export_onnx(net, m.crop, folder / f"{m.role}.onnx")
    files = {"onnx": str(fp32)}
    if DEPLOYED in paths:
        batches = (np.random.rand(2, 3, m.crop, m.crop).astype(np.float32) for _ in range(4))
        files[DEPLOYED] = str(quantize_int8(fp32, folder / f"{m.role}_int8.onnx", batches))
    return {p: f for p, f in files.items() if p in paths}


def shipped_files(m: Model, paths: list[str]) -> dict[str, str]:
    """{path: ONNX file} of a role with weights: the files src.export wrote beside them, checked to come from them."""
    from src.common.checkpoint import file_sha256
    from src.deploy.onnx import WEIGHTS_KEY, exported_path, onnx_metadata

    files, sha = {}, file_sha256(m.weights)
    for p in paths:
        if p == "eager":
            continue
        file = exported_path(m.weights, p)
        export = f"python -m src.export --weights {m.weights} --format {p}"
        if not file.is_file():
            raise MissingFile(f"no {file.name} beside {m.weights} for the {p} path: write it with `{export}` "
                                    f"(FFc23.tar's int8 needs --config C too), or leave the path out of --paths")
        if onnx_metadata(file).get(WEIGHTS_KEY) != sha:
            raise BadInput(f"{file} was not exported from {m.weights} (it does not record that file's sha256): "
                             f"export it again with `{export}`")
        files[p] = str(file)
    return files


def timings(nets: dict[str, nn.Module], models: dict[str, Model], paths: list[str], files: dict[str, dict[str, str]],
            opts: Settings) -> dict[tuple[str, str], dict]:
    """{(path, role): latency at batch 1 (median, p90) and throughput at batch N}, teacher and student taking turns
    (`files`: {role: {path: ONNX file}})."""
    sessions = {(p, role): ort_session(file, opts.threads) for role, by_path in files.items()
                for p, file in by_path.items()}

    def runner(p: str, role: str, batch: int) -> Callable[[], object]:
        crop = models[role].crop
        if p == "eager":
            return eager_runner(nets[role], crop, batch, opts.device, opts.bf16)
        return ort_runner(sessions[p, role], crop, batch)

    out = {}
    for p in paths:
        _logger.info("%s: latency at batch 1 (%d runs), throughput at batch %d (%d runs)", p, opts.runs, opts.batch,
                     opts.batch_runs)
        latency = take_turns({role: runner(p, role, 1) for role in models}, opts.runs, opts.warmup)
        batch = take_turns({role: runner(p, role, opts.batch) for role in models}, opts.batch_runs, 1)
        for role in models:
            out[p, role] = dict(latency_bs1_ms=1e3 * statistics.median(latency[role]),
                                latency_bs1_p90_ms=1e3 * float(np.percentile(latency[role], 90)),
                                throughput=opts.batch / statistics.median(batch[role]))
    return out


def measure(models: dict[str, Model], nets: dict[str, nn.Module], paths: list[str], shipped: dict[str, dict[str, str]],
            opts: Settings) -> list[dict]:
    """One row per path and model (`nets`: their networks as fed; `shipped`: {role: {path: ONNX file}} of the roles
    with weights, the others exported here): the file measured, params, input (fed, network), latency at batch 1,
    throughput at batch N, peak memory."""
    import torch

    from src.models.networks import count_params

    torch.set_num_threads(opts.threads)
    params = {role: count_params(net) for role, net in nets.items()}
    with tempfile.TemporaryDirectory() as tmp:
        files = {role: shipped[role] if role in shipped else random_weight_files(nets[role], m, paths, Path(tmp))
                 for role, m in models.items()} if paths != ["eager"] else {role: {} for role in models}
        times = timings({r: n.to(opts.device) for r, n in nets.items()}, models, paths, files, opts)
        keys = [(p, role) for p in paths for role in models]
        tasks = [(models[role], p, files[role].get(p), opts.device, opts.bf16, opts.train_batch, opts.threads)
                 for p, role in keys]
        _logger.info("peak memory: %d fresh processes", len(tasks))
        with multiprocessing.get_context("spawn").Pool(2, maxtasksperchild=1) as pool:  # a fresh process per task
            memory = pool.starmap(peak_memory, tasks, chunksize=1)
    label = {p: p + ("-bf16" if p == "eager" and opts.bf16 else "") for p in paths}

    def measured(p: str, role: str) -> str:
        return "random weights" if models[role].weights is None else Path(
            models[role].weights if p == "eager" else files[role][p]).name

    return [dict(model=role, path=label[p], file=measured(p, role), arch=models[role].arch, params=params[role],
                 input=models[role].crop, network_input=models[role].size, **times[p, role],
                 peak_memory_mb=inference, train_memory_mb=train)
            for (p, role), (inference, train) in zip(keys, memory)]


def ratios(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per path: student/teacher latency at batch 1, throughput at batch N and peak inference memory."""
    by = {(r["path"], r["model"]): r for r in rows}
    return {p: {"latency_bs1": by[p, "student"]["latency_bs1_ms"] / by[p, "teacher"]["latency_bs1_ms"],
                "throughput_bs32": by[p, "student"]["throughput"] / by[p, "teacher"]["throughput"],
                "peak_memory": by[p, "student"]["peak_memory_mb"] / by[p, "teacher"]["peak_memory_mb"]}
            for p in dict.fromkeys(r["path"] for r in rows)}


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _px(row: dict) -> str:
    """A row's input: `380→256 px` when the network resizes the fed crop to its own size."""
    fed, size = row["input"], row["network_input"]
    return f"{fed} px" if fed == size else f"{fed}→{size} px"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table with padded columns."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(c.rjust(w) if c[:1].isdigit() else c.ljust(w) for c, w in zip(cells, widths)) + " |"
             for cells in [header, *rows]]
    return [lines[0], "|" + "|".join("-" * (w + 2) for w in widths) + "|", *lines[1:]]


def markdown(rows: list[dict], ratio: dict, checks: list[dict], opts: Settings) -> str:
    """The results table with the ratios, the target and the int8 AUC check, as markdown."""
    lines = table(["model", "path", "file", "arch", "params", "input", "bs1 median", "bs1 p90",
                   f"bs{opts.batch} img/s", "peak MB inference bs1", f"peak MB train step bs{opts.train_batch}"],
                  [[r["model"], r["path"], r["file"], r["arch"], f"{r['params'] / 1e6:.1f}M", _px(r),
                    f"{r['latency_bs1_ms']:.1f} ms", f"{r['latency_bs1_p90_ms']:.1f} ms", f"{r['throughput']:.1f}",
                    _mb(r["peak_memory_mb"]), _mb(r["train_memory_mb"])] for r in rows]
                  + [["ratio", p, "", "student / teacher", "", "", f"{q['latency_bs1']:.2f}x", "",
                      f"{q['throughput_bs32']:.2f}x", f"{q['peak_memory']:.2f}x", ""] for p, q in ratio.items()])
    lines += ["", f"{opts.device}, {opts.threads} threads. Latency: {opts.runs} runs after {opts.warmup} warm-up, "
              "teacher and student taking turns. Peak memory: each in a fresh process; on the CPU the rise of peak "
              "resident memory over the process after its imports. Train step: forward, backward, SGD step."]
    if any(r["file"] == "random weights" for r in rows):
        lines.append("random weights: no file given, so the ONNX paths ran files exported here (int8 calibrated on "
                     "random crops): the architecture's speed, not a shipped file's")
    if DEPLOYED in ratio:
        q = ratio[DEPLOYED]
        lines.append(f"target ({DEPLOYED}, batch 1): student/teacher latency {q['latency_bs1']:.2f}x "
                     f"(<= {TARGET_LATENCY_RATIO}: {'yes' if q['latency_bs1'] <= TARGET_LATENCY_RATIO else 'NO'}); "
                     f"throughput at batch {opts.batch} {q['throughput_bs32']:.2f}x the teacher's "
                     f"(student ahead: {'yes' if q['throughput_bs32'] > 1 else 'NO'})")
    if checks:
        lines += ["", f"int8 numerics: val AUC of the weights (eager fp32) and of their files, on the val split of "
                  f"each one's data root; |{DEPLOYED} - eager| <= {AUC_TOLERANCE} passes", ""]
        lines += table(["model", "weights", "files", "data root", "images", "eager fp32", "onnx fp32", DEPLOYED,
                        "abs diff", "ok"],
                       [[c["model"], c["weights"], ", ".join(c["files"].values()),
                         *([f"skipped: {c['skipped']}", *[""] * 6] if "skipped" in c else
                           [c["data_root"], str(c["images"]),
                            *(f"{c['auc'][k]:.4f}" if k in c["auc"] else "-" for k in ("eager", "onnx", DEPLOYED)),
                            f"{c['diff']:.4f}", "yes" if c["ok"] else "NO"])] for c in checks])
    return "\n".join(lines) + "\n"


def write_report(out: Path, rows: list[dict], ratio: dict, checks: list[dict], opts: Settings,
                 models: dict[str, Model], options: dict) -> str:
    """benchmark.md and benchmark.json ("rows", "ratios", "auc_check", "settings": `options`, "models") in `out`;
    the markdown."""
    text = markdown(rows, ratio, checks, opts)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.md").write_text(text)
    (out / "benchmark.json").write_text(json.dumps(dict(rows=rows, ratios=ratio, auc_check=checks, settings=options,
                                                        models={r: asdict(m) for r, m in models.items()}), indent=2))
    return text

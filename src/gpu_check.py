"""GPU readiness in one command: what a cluster run does, each as a row of one table, in a few minutes.

    python -m src.gpu_check [--config configs/config_SBI.json] [--steps 5] [--skip-compile] [--work DIR]
                            [--retinaface-weights W] [--rows fit,steps,evaluate,benchmark] [--cpu-tiny]

Rows, on generated data (src.data.synthetic) and random weights (nothing is downloaded), at the config's sizes
(mobilevitv2_200 at 256 px from 380 px crops, the tf_efficientnet_b4 teacher at 380 px):

    fit        stage 1 (2 epochs) and stage 2 (1 epoch) under torchrun, one process per GPU (NCCL from 2 GPUs),
               4 images per GPU (the 8-GPU recipe's 32), bf16, compile, sync_bn, DataLoader workers: SIGTERM to
               torchrun mid-epoch, last.pth checked, --resume to the end
    steps      the SAM step of both stages at batch 32 and at 4 (one GPU of the 8-GPU recipe), for float32 (TF32),
               bf16, bf16 + channels_last and bf16 + compile (last: slow to start; --skip-compile leaves it out):
               s/step, images/s, peak memory
    evaluate   src.evaluate's scoring of a generated 1280x720 video with RetinaFace on the GPU and 2 workers:
               frames/s (RetinaFace needs its weights file: without it the row says so)
    benchmark  src.benchmark on CUDA, eager float32 and bf16: student/teacher latency, throughput, memory

A row that fails prints its error in the table and the next rows run. Without CUDA it says so and exits with
status 0; --cpu-tiny runs the same rows on the CPU, with gloo and tiny models and sizes (the tests run it).

The rows' work is the libraries': the torchrun drill in src/train/fit_check.py, the SAM step in src/train/bench.py,
the scoring in src/scoring, the benchmark in src/deploy/benchmark.py. This command picks sizes and prints the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from src.common.config import Config, load_config
from src.common.logs import cli
from src.data.synthetic import write_video
from src.models.networks import save_random_checkpoint
from src.train.fit_check import PER_GPU, sigterm_and_resume

VARIANTS = (("float32 (TF32)", {}), ("bf16", {"amp": "bf16"}),
            ("bf16 + channels_last", {"amp": "bf16", "channels_last": True}),
            ("bf16 + compile", {"amp": "bf16", "compile": True}))
ROWS = ("fit", "steps", "evaluate", "benchmark")


@dataclasses.dataclass(frozen=True)
class Mode:
    """What the rows run on: models and sizes, the generated data and video, and the keys `fit` adds."""

    cfg: Config  # models and sizes of the step rows
    frame_size: tuple[int, int]  # generated training frames
    face_size: int
    video_size: tuple[int, int]  # the evaluate row's video
    video_frames: int
    detect_size: int | None  # RetinaFace's longest side (None: the protocol's 2048)
    fit_keys: dict
    cuda: bool


def gpu_mode(cfg: Config) -> Mode:
    """The check on CUDA at the config's sizes, with the cluster's training keys."""
    return Mode(cfg, (640, 480), 200, (1280, 720), 64, None, {"amp": "bf16", "compile": True, "sync_bn": True,
                                                        "num_workers": 2}, cuda=True)


def cpu_tiny_mode() -> Mode:
    """The same rows on the CPU with gloo, tiny models and sizes."""
    cfg = Config(model="test_efficientnet", teacher_arch="test_efficientnet", image_size=48, student_image_size=32)
    return Mode(cfg, (160, 128), 60, (160, 128), 8, 160, {"num_workers": 2}, cuda=False)


def step_row(cfg: Config, change: dict, steps: int, cuda: bool) -> str:
    """Both stages' SAM step with `change` applied: seconds, images/s and peak memory."""
    from src.train.bench import measure  # noqa: PLC0415

    cells = []
    for stage in (1, 2):
        r = measure(dataclasses.replace(cfg, **change), stage, steps, cpu=not cuda)
        cells.append(f"stage {stage}: {r['step']:.3f} s/step, {cfg.batch_size / r['step']:.0f} img/s, "
                     f"peak {r['memory']} {r['peak_mb']:.0f} MB")
        if cuda:
            torch.cuda.empty_cache()
    return "; ".join(cells)


def evaluate_row(mode: Mode, work: Path, retinaface_weights: str | None) -> str:
    """src.evaluate's scoring of a generated video with RetinaFace on the check's device and 2 workers: frames/s."""
    from src.faces.detectors import make_detector  # noqa: PLC0415
    from src.scoring.evaluation import evaluate_items  # noqa: PLC0415
    from src.scoring.score import load_scorer  # noqa: PLC0415
    from src.scoring.testsets import dataset_items  # noqa: PLC0415

    device = "cuda" if mode.cuda else "cpu"
    detector = make_detector("retinaface", retinaface_weights=retinaface_weights, device=device)
    detector.max_size = mode.detect_size or detector.max_size
    write_video(work / "videos" / "real" / "v.mp4", mode.video_size, mode.video_frames, min(mode.video_size) / 4)
    model, size, _ = load_scorer(save_random_checkpoint(mode.cfg.model, mode.cfg, work / "scored.pth"))
    items = dataset_items("folder", work / "videos")
    start = time.perf_counter()
    results = evaluate_items(items, detector, model.to(device), size, mode.video_frames // 2, device, None,
                             defaultdict(float), workers=2, bf16=mode.cuda)
    wall = time.perf_counter() - start
    if results[0].error:
        raise RuntimeError(results[0].error)
    n = results[0].scores.n_frames
    return (f"{n} frames of {mode.video_size[0]}x{mode.video_size[1]}, {len(results[0].scores.faces)} faces: "
            f"{n / wall:.1f} frames/s (RetinaFace on {device}, 2 workers)")


def benchmark_row(mode: Mode, work: Path, bf16: bool) -> str:
    """src.benchmark's eager path on random weights: student/teacher latency at batch 1, throughput and memory."""
    from src.deploy.benchmark import Settings, measure, ratios, resolve, write_report  # noqa: PLC0415

    c = mode.cfg
    models, nets = {}, {}
    for role, arch, size, crop in (("teacher", c.teacher_arch, c.image_size, None),
                                   ("student", c.model, c.student_size, c.image_size)):  # fed the crop, as shipped
        models[role], nets[role] = resolve(role, arch, size, None, crop)
    settings = (Settings("cuda", os.cpu_count(), bf16=bf16) if mode.cuda  # src.benchmark's defaults
                else Settings("cpu", 1, runs=2, warmup=1, batch=2, batch_runs=1, train_batch=2, bf16=bf16))
    rows = measure(models, nets, ["eager"], {}, settings)
    q = ratios(rows)
    out = work / f"benchmark_{'bf16' if bf16 else 'fp32'}"
    write_report(out, rows, q, [], settings, models, dataclasses.asdict(settings))
    q = next(iter(q.values()))
    return (f"student/teacher: latency at batch 1 {q['latency_bs1']:.2f}x, throughput {q['throughput_bs32']:.2f}x, "
            f"peak memory {q['peak_memory']:.2f}x ({out / 'benchmark.md'})")


def run_rows(rows: list[tuple[str, Callable[[], str]]], cuda: bool = False) -> list[str]:
    """Print one table, a row as each finishes; a row that fails shows its error and the next one runs."""
    print("| check | result | seconds |\n|---|---|---|", flush=True)
    lines = []
    for name, row in rows:
        start = time.time()
        try:
            result = row()
        except (Exception, SystemExit) as e:  # noqa: BLE001 (a failing row is a row, not the end of the check)
            traceback.print_exc()
            result = f"FAILED {type(e).__name__}: {' '.join(str(e).split())[:300]}"
        if cuda:
            torch.cuda.empty_cache()
        lines.append(f"| {name} | {result} | {time.time() - start:.0f} |")
        print(lines[-1], flush=True)
    return lines


def plan(mode: Mode, work: Path, nproc: int, steps: int, chosen: list[str], compile_: bool,
         retinaface_weights: str | None) -> list[tuple[str, Callable[[], str]]]:
    """The rows of `chosen`, in the check's order (compile's step rows last: slow to start)."""
    rows: list[tuple[str, Callable[[], str]]] = []
    if "fit" in chosen:
        rows += [(f"fit stage {s}, torchrun, SIGTERM + resume", lambda s=s: sigterm_and_resume(
            s, mode.cfg, work, nproc, mode.frame_size, mode.face_size, mode.fit_keys, mode.cuda)) for s in (1, 2)]
    def steps_of(variants: tuple) -> list[tuple[str, Callable[[], str]]]:
        return [(f"step, batch {b}, {name}", lambda b=b, change=change: step_row(
            dataclasses.replace(mode.cfg, batch_size=b), change, steps, mode.cuda))
            for name, change in variants for b in (32, PER_GPU)] if "steps" in chosen else []

    rows += steps_of(VARIANTS[:-1])
    if "evaluate" in chosen:
        rows.append(("evaluate, RetinaFace, 2 workers", lambda: evaluate_row(mode, work, retinaface_weights)))
    if "benchmark" in chosen:
        rows += [(f"benchmark, eager {p}", lambda bf16=bf16: benchmark_row(mode, work, bf16))
                 for p, bf16 in (("float32", False), ("bf16", True))]
    if compile_:
        rows += steps_of(VARIANTS[-1:])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/config_SBI.json", help="models and sizes (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement, after one warm-up")
    ap.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile step rows")
    ap.add_argument("--work", help="folder for the generated data, runs and logs (default: a new temporary one)")
    ap.add_argument("--retinaface-weights", help="RetinaFace weights for the evaluate row (default: src.evaluate's)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--cpu-tiny", action="store_true", help="the same rows on the CPU with gloo and tiny sizes")
    args = ap.parse_args(argv)
    chosen = [r.strip() for r in args.rows.split(",")]
    if unknown := set(chosen) - set(ROWS):
        ap.error(f"unknown row(s) {sorted(unknown)}; choose from {', '.join(ROWS)}")
    if not args.cpu_tiny and not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False), so there is nothing "
              "to measure. Run it on a GPU machine (--cpu-tiny runs its rows on the CPU at tiny sizes).")
        return
    mode = cpu_tiny_mode() if args.cpu_tiny else gpu_mode(load_config(args.config))
    nproc = max(1, torch.cuda.device_count()) if mode.cuda else 2
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    c = mode.cfg
    device = f"{torch.cuda.get_device_name()} x {nproc}" if mode.cuda else "CPU, 2 gloo processes"
    print(f"{device}, torch {torch.__version__}, Python {sys.version.split()[0]}; {c.model} at {c.student_size} px "
          f"from {c.image_size} px crops, teacher {c.teacher_arch}; work folder {work}\n", flush=True)
    start = time.time()
    run_rows(plan(mode, work, nproc, args.steps, chosen, not args.skip_compile, args.retinaface_weights), mode.cuda)
    print(f"\ngpu_check: {time.time() - start:.0f} s")


if __name__ == "__main__":
    cli(main)

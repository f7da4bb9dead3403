"""Training-step cost: seconds per SAM step, images per second and peak memory, for stage 1 or stage 2.

    python -m src.bench_train configs/config_SBI.json [--stage 1|2] [--batch 4] [--steps 5] [--set key=value]

Runs the engine's own step (two forward+backward passes) on random inputs with random weights, so only compute
is measured. Each measurement runs in a fresh process so that its peak memory is its own. --stage 2 also
measures stage 1 with the same student, batch and sizes, and prints the ratio next to the expected
1 + teacher forward / (2 x student forward+backward).
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import torch

from .config import Config, load_config
from .dataset import BadSampleTracker
from .engine import make_optimizer, student_view, train_one_epoch
from .models import create_classifier


def _peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA allocation, or on the CPU this process's peak resident memory (torch itself included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _timed(fn, steps: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def measure(cfg: Config, stage: int, steps: int) -> dict:
    """Seconds per training step (and its parts) of `stage`, in this process."""
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = create_classifier(cfg.model).to(device)
    teacher = create_classifier(cfg.teacher_arch).to(device).eval().requires_grad_(False) if stage == 2 else None
    optimizer, _ = make_optimizer(model, cfg)
    images = torch.rand(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device)
    batch = {"images": images, "labels": torch.arange(cfg.batch_size, device=device) % 2, "failures": []}
    tracker = BadSampleTracker(1.0)

    def step() -> None:
        train_one_epoch(model, [batch], optimizer, cfg, 1, tracker, teacher)
        if device.type == "cuda":
            torch.cuda.synchronize()

    out = {"step": _timed(step, steps), "peak_mb": _peak_memory_mb(device)}
    x = student_view(images, cfg.student_size)
    out["student_fwd_bwd"] = _timed(lambda: model(x).sum().backward(), steps)
    if teacher is not None:
        with torch.no_grad():
            out["teacher_fwd"] = _timed(lambda: teacher(images), steps)
    return out


def in_fresh_process(cfg: Config, stage: int, steps: int) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (cfg, stage, steps))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=1)
    parser.add_argument("--batch", type=int, help="images per step (default: the config's batch_size)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set + ([f"batch_size={args.batch}"] if args.batch else []))
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{cfg.model} at {cfg.student_size} px (crops at {cfg.image_size} px), batch {cfg.batch_size} images, "
          f"{device}, {args.steps} steps")
    stages = (1, 2) if args.stage == 2 else (1,)
    results = {s: in_fresh_process(cfg, s, args.steps) for s in stages}
    for s, r in results.items():
        extra = f", teacher {cfg.teacher_arch} forward {r['teacher_fwd']:.3f} s" if s == 2 else ""
        print(f"stage {s}: {r['step']:.3f} s/step, {cfg.batch_size / r['step']:.1f} images/s, "
              f"peak {'CUDA memory' if torch.cuda.is_available() else 'RSS'} {r['peak_mb']:.0f} MB (student forward+backward {r['student_fwd_bwd']:.3f} s{extra})")
    if args.stage == 2:
        r1, r2 = results[1], results[2]
        expected = 1 + r2["teacher_fwd"] / (2 * r2["student_fwd_bwd"])
        print(f"stage 2 / stage 1 step time: {r2['step'] / r1['step']:.2f} "
              f"(expected 1 + teacher forward / (2 x student forward+backward) = {expected:.2f})")


if __name__ == "__main__":
    main()

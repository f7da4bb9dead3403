"""GPU readiness in one command: training-step time and memory at the real sizes, per precision and layout, the
deployed models' latency, and RetinaFace frames/s, on one CUDA device, in a few minutes.

    python -m src.gpu_check [--config configs/config_SBI.json] [--batch 32] [--steps 5] [--skip-compile]

Stage 1 and stage 2 run the engine's own SAM step (src.bench_train) on random inputs with random weights, at the
config's sizes (mobilevitv2_200 at 256 px from 380 px crops; the tf_efficientnet_b4 teacher at 380 px), for
float32 (TF32 matmuls and convolutions), bf16 autocast, bf16 + channels_last and bf16 + torch.compile (slow to
start: last, and --skip-compile leaves it out). Then `src.benchmark` on CUDA (eager, float32 and bf16) and
RetinaFace at the protocol's 2048 px on 1280x720 frames, one at a time and in batches of 8. Without CUDA it says
so and exits with status 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch

from .config import load_config
from .logs import cli

VARIANTS = (("float32 (TF32)", {}), ("bf16", {"amp": "bf16"}),
            ("bf16 + channels_last", {"amp": "bf16", "channels_last": True}),
            ("bf16 + compile", {"amp": "bf16", "compile": True}))


HEADER = ("| variant | stage 1 s/step | img/s | peak MB | stage 2 s/step | img/s | peak MB | stage 2 / 1 | seconds |\n"
          "|---|---|---|---|---|---|---|---|---|")


def step_rows(cfg, steps: int, variants: tuple) -> list[str]:
    """One markdown row per variant: stage 1 and stage 2 seconds per step, images/s, peak memory, their ratio."""
    from .bench_train import measure  # noqa: PLC0415

    rows = []
    for name, change in variants:
        start, cells, steps_s = time.time(), [], []
        for stage in (1, 2):
            try:
                r = measure(dataclasses.replace(cfg, **change), stage, steps)
                cells += [f"{r['step']:.3f}", f"{cfg.batch_size / r['step']:.0f}", f"{r['peak_mb']:.0f}"]
                steps_s.append(r["step"])
            except Exception as e:  # noqa: BLE001 (an unsupported variant is a row, not the end of the check)
                cells += [f"{type(e).__name__}: {str(e)[:60]}", "-", "-"]
            torch.cuda.empty_cache()
        ratio = f"{steps_s[1] / steps_s[0]:.2f}" if len(steps_s) == 2 else "-"
        rows.append(f"| {name} | {' | '.join(cells)} | {ratio} | {time.time() - start:.0f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/config_SBI.json", help="sizes and models (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=32, help="images per training step (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement, after one warm-up")
    ap.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile variant")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False), so there is nothing "
              "to measure. Run it on a GPU machine; the CPU figures come from src.bench_train and src.benchmark.")
        return
    cfg = load_config(args.config, [f"batch_size={args.batch}", "num_workers=0"])
    start = time.time()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {cfg.model} at {cfg.student_size} px from "
          f"{cfg.image_size} px crops, teacher {cfg.teacher_arch}; batch {cfg.batch_size} images, SAM (2 passes)\n")
    print(HEADER)
    for row in step_rows(cfg, args.steps, VARIANTS[:-1]):
        print(row, flush=True)

    from .retinaface import time_detection  # noqa: PLC0415

    print("\n| RetinaFace, 1280x720 frames | frames/s |\n|---|---|")
    for max_size, batch in ((2048, 1), (2048, 8), (None, 8)):
        fps = time_detection((1280, 720), max_size, frames=16, batch=batch, device="cuda")
        print(f"| max_size {max_size or 1280}, batch {batch} | {fps:.1f} |", flush=True)

    from . import benchmark  # noqa: PLC0415

    for bf16 in (False, True):
        print(f"\nsrc.benchmark on CUDA, eager {'bf16' if bf16 else 'float32'}:", flush=True)
        with tempfile.TemporaryDirectory() as out:
            benchmark.main(["--device", "cuda", "--paths", "eager", "--runs", "30", "--out", out]
                           + (["--bf16"] if bf16 else []))
    if not args.skip_compile:
        print(f"\n{HEADER}")
        for row in step_rows(cfg, args.steps, VARIANTS[-1:]):
            print(row, flush=True)
    print(f"\ngpu_check: {time.time() - start:.0f} s")


if __name__ == "__main__":
    cli(main)

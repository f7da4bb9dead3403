"""Training-step cost: seconds per SAM step, images per second and peak memory, for stage 1 or stage 2.

    python -m src.bench_train configs/config_SBI.json [--stage 1|2] [--batch 4] [--steps 5] [--nproc 2]

Runs the engine's own step (two forward+backward passes) on random inputs with random weights, so only compute
is measured: one epoch of 2 + steps steps, timed per step; the step time is the median of the steady steps (not
the first, not the last), apart from the epoch's set-up. Each measurement runs in a fresh process so that its peak
memory is its own. Stage 1 also prints SAM's own work per step (the step less two student forward+backward passes
and the resize to student_image_size), with the fused multi-tensor operations the engine uses and, for comparison,
with the same operations one parameter at a time (SAM(foreach=False)). --stage 2 also
measures stage 1 with the same student, batch and sizes, and prints the ratio next to the expected
1 + teacher forward / (2 x student forward+backward), and the peak memory against the SBI teacher recipe
(stage 1 of teacher_arch at image_size). --nproc N compares N processes with one, with the same work per process,
so the scaling efficiency shows the cost of DDP's synchronisation: on CUDA one process per GPU over NCCL, else CPU
processes of one thread each over gloo.
"""
import argparse
import dataclasses

import torch

from src.common.config import load_config
from src.common.logs import cli
from src.train.bench import in_fresh_processes


def _line(name: str, r: dict, images: int) -> str:
    return (f"{name}: {r['step']:.3f} s/step, {images / r['step']:.1f} images/s, peak {r['memory']} "
            f"{r['peak_mb']:.0f} MB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=1)
    parser.add_argument("--batch", type=int, help="images per step, global (default: the config's batch_size)")
    parser.add_argument("--steps", type=int, default=5, help="timed steady steps per epoch (plus a first and a last)")
    parser.add_argument("--nproc", type=int, default=1, help="also measure N processes: NCCL, one per GPU, on CUDA; "
                                                               "gloo on the CPU")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set + ([f"batch_size={args.batch}"] if args.batch else []))
    b = cfg.batch_size
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{cfg.model} at {cfg.student_size} px (crops at {cfg.image_size} px), batch {b} images, {device}, "
          f"{args.steps} steps, amp {cfg.amp}, channels_last {cfg.channels_last}, compile {cfg.compile}")
    r1 = in_fresh_processes(cfg, 1, args.steps, sam_clock=True)
    print(_line("stage 1", r1, b) + f" (student forward+backward {r1['student_fwd_bwd']:.3f} s, resize to "
          f"{cfg.student_size} px {r1['resize']:.3f} s; the epoch's set-up and end, once: {r1['setup']:.3f} s)")
    loops = in_fresh_processes(cfg, 1, args.steps, foreach=False, sam_clock=True)
    print(f"SAM's own work per steady step (perturb, clip, restore and base step, BatchNorm snapshots): one "
          f"parameter at a time {loops['sam']:.3f} s of {loops['step']:.3f} s ({loops['sam'] / loops['step']:.1%}); "
          f"fused, the engine's: {r1['sam']:.3f} s of {r1['step']:.3f} s ({r1['sam'] / r1['step']:.1%})")
    if args.stage == 2:
        r2 = in_fresh_processes(cfg, 2, args.steps)
        print(_line("stage 2", r2, b) + f" (student forward+backward {r2['student_fwd_bwd']:.3f} s, teacher "
              f"{cfg.teacher_arch} forward {r2['teacher_fwd']:.3f} s)")
        expected = 1 + r2["teacher_fwd"] / (2 * r2["student_fwd_bwd"])
        print(f"stage 2 / stage 1 step time: {r2['step'] / r1['step']:.2f} "
              f"(expected 1 + teacher forward / (2 x student forward+backward) = {expected:.2f})")
        recipe = dataclasses.replace(cfg, model=cfg.teacher_arch, student_image_size=None)
        rt = in_fresh_processes(recipe, 1, args.steps)
        print(_line(f"SBI teacher recipe ({cfg.teacher_arch} at {cfg.image_size} px, stage 1)", rt, b))
        print(f"peak memory, stage 1 student / teacher recipe: {r1['peak_mb'] / rt['peak_mb']:.2f}; "
              f"stage 2 / teacher recipe: {r2['peak_mb'] / rt['peak_mb']:.2f}")
    if args.nproc > 1:
        if b % (2 * args.nproc):
            raise SystemExit(f"--nproc {args.nproc} needs a batch that is a multiple of {2 * args.nproc}")
        cuda = torch.cuda.is_available()  # one process per GPU over NCCL; else CPU processes over gloo
        if cuda and args.nproc > torch.cuda.device_count():
            raise SystemExit(f"--nproc {args.nproc} needs as many GPUs; this machine has {torch.cuda.device_count()}")
        threads, backend = (None, "nccl") if cuda else (1, "gloo")
        one = in_fresh_processes(dataclasses.replace(cfg, batch_size=b // args.nproc), args.stage, args.steps,
                                 threads=threads, cpu=not cuda)
        many = in_fresh_processes(cfg, args.stage, args.steps, world=args.nproc, threads=threads, cpu=not cuda)
        print(f"stage {args.stage}{'' if cuda else ', 1 thread per process'}: 1 process x {b // args.nproc} images "
              f"{one['step']:.3f} s/step; {args.nproc} {backend} processes x {b // args.nproc} images "
              f"{many['step']:.3f} s/step "
              f"({b / many['step']:.1f} images/s), scaling efficiency {one['step'] / many['step']:.0%}, "
              f"peak memory per process {many['peak_mb']:.0f} MB")


if __name__ == "__main__":
    cli(main)

"""The whole pipeline on generated faces, on the CPU, in minutes: teacher, stage 1, stage 2, then a results table.

    python -m src.demo [--config configs/config_demo.json]

Runs the same commands a user runs on FF++ (printed as they start): the teacher (the config's teacher_arch) is trained
with the SBI recipe by train_student_only.py --model, and each stage picks up the previous one's BEST.pth through
the config's globs.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from src.common.checkpoint import load
from src.common.config import load_config, resolve_path
from src.common.logs import cli
from src.models.networks import count_params, create_classifier


def run(*args: str) -> None:
    command = [sys.executable, *args]
    print(f"\n$ {shlex.join(['python', *args])}", flush=True)
    subprocess.run(command, check=True)


def summary_row(label: str, pattern: str) -> str:
    ckpt = load(resolve_path(pattern, label))
    params = count_params(create_classifier(ckpt["arch"])) / 1e6
    size = ckpt["config"]["student_image_size"] or ckpt["config"]["image_size"]
    return (f"| {label:<19} | {ckpt['arch']:<16} | {params:5.2f}M | {size:>4} px "
            f"| {ckpt['val_auc']:7.4f} | {ckpt['epoch']:5d} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/config_demo.json")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--teacher-lr", type=float, default=0.002, help="the small CNN teacher takes a higher lr")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    run("train_student_only.py", args.config, "-n", "demo_teacher", "--model", cfg.teacher_arch,
        "--set", "student_image_size=null", "--set", f"epoch={args.teacher_epochs}", "--set", f"lr={args.teacher_lr}")
    run("train_student_only.py", args.config, "-n", "demo_pretrain")
    run("main_distillation.py", args.config, "-n", "demo_distill")
    out = cfg.output_dir
    print("\n| model               | arch             | params | input   | val AUC | epoch |")
    print("|---------------------|------------------|--------|---------|---------|-------|")
    print(summary_row("teacher", cfg.teacher_weights))
    print(summary_row("student (stage 1)", cfg.pretrained_student_weights))
    print(summary_row("student (distilled)", f"{out}/demo_distill_*/weights/BEST.pth"))
    print("\nval AUC: the best epoch's, over the val reals and their SBI fakes (generated faces, not FF++).")


if __name__ == "__main__":
    cli(main)

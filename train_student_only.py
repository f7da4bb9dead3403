"""Stage 1: fine-tune the student (or any timm classifier) on SBI with cross-entropy and SAM.

    python train_student_only.py configs/config_SBI.json -n pretrain_mobilevit [--model ARCH] [--resume RUN_DIR]
"""
from __future__ import annotations

import argparse

from src.common.logs import cli
from src.models.networks import build_student, create_classifier
from src.train.engine import train_stage
from src.train.run import prepare_run, run_parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = run_parser(__doc__)
    parser.add_argument("--model", help="timm architecture to train instead of the config's `model`")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    overrides = args.set + ([f"model={args.model}"] if args.model else [])
    run = prepare_run(args.config, args.name, overrides, args.resume)
    with run.removed_if_refused():
        model = create_classifier(run.state["arch"]) if run.resumed else build_student(run.cfg)
        train_stage(run, model, run.state["arch"] if run.resumed else run.cfg.model)


if __name__ == "__main__":
    cli(main)

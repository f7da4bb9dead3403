"""Stage 2: distil the frozen SBI teacher into the stage-1 student with alpha*CE + (1-alpha)*KL(T)*T^2 and SAM.

    python main_distillation.py configs/config_SBI.json -n distill_mobilevit [--resume RUN_DIR]
"""
from __future__ import annotations

import argparse
import logging

from torch import nn

from src.common import checkpoint
from src.common.config import ConfigError, resolve_path
from src.common.logs import cli
from src.data.dataset import check_teacher_faces
from src.models.networks import (
    build_student,
    classifier_from_checkpoint,
    create_classifier,
    load_checkpoint_model,
    training_faces,
)
from src.train.engine import train_stage
from src.train.run import Run, prepare_run, run_parser

_logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = run_parser(__doc__)
    parser.add_argument("--allow-imagenet-start", action="store_true",
                        help="distil into the ImageNet student without stage 1 (unstable: see the guide)")
    return parser.parse_args(argv)


def _teacher_and_student(run: Run, allow_imagenet_start: bool = False) -> tuple[nn.Module, nn.Module, str]:
    """The teacher, the student to distil into and its architecture, or a refusal (UserError)."""
    cfg = run.cfg
    if not cfg.teacher_weights:
        raise ConfigError("config key 'teacher_weights' is not set: point it at the SBI teacher "
                          "(e.g. weights/FFc23.tar)")
    file = resolve_path(cfg.teacher_weights, "teacher_weights")
    ckpt = checkpoint.load(file)  # read once: the teacher and the faces it was trained on
    teacher = classifier_from_checkpoint(ckpt, file, cfg.teacher_arch, role="teacher")
    check_teacher_faces(training_faces(ckpt), cfg)
    if run.resumed:
        return teacher, create_classifier(run.state["arch"]), run.state["arch"]
    if cfg.pretrained_student_weights:
        model, ckpt = load_checkpoint_model(cfg.pretrained_student_weights)
        arch = ckpt["arch"]
        if arch != cfg.model:
            raise ConfigError(f"pretrained_student_weights holds a '{arch}' but the config's model is '{cfg.model}': "
                             f"set model to '{arch}' or point pretrained_student_weights at a {cfg.model} checkpoint")
        _logger.info("student: %s from stage 1 (epoch %s, val AUC %.4f)", arch, ckpt["epoch"], ckpt["val_auc"])
        return teacher, model, arch
    if allow_imagenet_start:
        _logger.warning("--allow-imagenet-start: distilling into a student that skipped stage 1; expect NaN skips")
        return teacher, build_student(cfg), cfg.model
    raise ConfigError("config key 'pretrained_student_weights' is not set. Run stage 1 first "
                     "(python train_student_only.py CONFIG -n pretrain_mobilevit) and point it at "
                     "output/pretrain_mobilevit_*/weights/BEST.pth, or pass --allow-imagenet-start to distil "
                     "from ImageNet weights anyway (the KD loss tends to explode then: see the guide).")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run = prepare_run(args.config, args.name, args.set, args.resume)
    with run.removed_if_refused():
        teacher, model, arch = _teacher_and_student(run, args.allow_imagenet_start)
        train_stage(run, model, arch, teacher)


if __name__ == "__main__":
    cli(main)

"""Teacher vs student speed and memory, measured side by side in one run, on the files a user ships.

    python -m src.export --weights W --format onnx-int8 [--config C]     # first, for each model: W_int8.onnx beside W
    python -m src.benchmark --teacher W --student W [--paths eager,onnx,onnx-int8] [--config C] [--device cpu|cuda]
    python -m src.benchmark [--student-arch A --student-size N ...]      # random weights: architectures before training

With weights W, each path runs exactly the file a user ships: eager PyTorch runs W, and the ONNX Runtime paths run
the files src.export wrote beside it (W.onnx, W_int8.onnx), which must record W's sha256 (else: export again). The
student takes the face crop its file takes (e.g. 380 px) and resizes it to its own size inside (input `380→256 px`).
Without W, a role has random weights of --*-arch at --*-size (speed does not depend on the weights): the benchmark
exports it into a temporary folder, int8 calibrated on random crops, to compare architectures before training any;
those rows say "random weights". --student-input N feeds a random-weight student N px instead of the teacher's crop
(its own size: the bare network). For each model and path: parameters, input size, latency at batch 1 (median and
p90 of --runs runs after warm-up), throughput at batch 32, and peak memory at inference (batch 1) and for one training
step (eager only: forward, backward and SGD step at --train-batch). Paths:

    eager      PyTorch, float32 (bf16 autocast with --bf16)
    onnx       the float32 ONNX file (src.export --format onnx) in ONNX Runtime, all graph optimisations
    onnx-int8  the deployed file (src.export --format onnx-int8), in ONNX Runtime

Teacher and student take turns run by run, so both see the same machine load; the student/teacher ratio of each
figure is printed per path. Peak memory: each model and path in a fresh process; on the CPU the rise of the peak
resident memory over the process after its imports (ONNX Runtime paths import no PyTorch), on CUDA
torch.cuda.max_memory_allocated. int8 changes the numerics, so for each role with weights the benchmark also
computes the val AUC of W in float32 eager and of its ONNX files on the val split of --config (default: W's own
training config; FFc23.tar carries none): |int8 - eager| <= 0.005 passes (--no-auc-check skips it). Writes
benchmark.md and benchmark.json ("rows", "ratios", "auc_check") to --out.

PyTorch is imported inside functions: the memory probes of the ONNX Runtime paths run without it.
"""
from __future__ import annotations

import argparse
import logging
import os
from datetime import datetime
from pathlib import Path

from src.common.logs import cli, setup_logging
from src.deploy.benchmark import (
    AUC_TOLERANCE,
    DEPLOYED,
    PATHS,
    Model,
    Settings,
    measure,
    ratios,
    resolve,
    shipped_files,
    write_report,
)


def auc_check(m: Model, files: dict[str, str], config: str | None, threads: int) -> dict:
    """Val AUC of the weights in float32 eager and of their ONNX `files` on the val split of `config` (default: the
    checkpoint's own training config)."""
    import torch

    from src.common.checkpoint import load
    from src.data.dataset import build_dataset
    from src.deploy.classifier import OrtClassifier
    from src.deploy.onnx import data_config, network
    from src.models.classifier import load_classifier
    from src.train.engine import make_loader, validate

    row = dict(model=m.role, weights=m.weights, files={p: Path(f).name for p, f in files.items()})
    model, crop, _ = load_classifier(m.weights)
    cfg = data_config(Path(m.weights), load(m.weights), crop, config)
    if cfg is None:
        return dict(row, skipped="it carries no training config: pass --config")
    cfg.num_workers = 0
    if not Path(cfg.data_root).exists():
        return dict(row, skipped=f"data root {cfg.data_root} does not exist")
    val = make_loader(build_dataset(cfg, "val"), cfg)
    with torch.no_grad():
        runs = [("eager", model), *((p, OrtClassifier(f, threads)) for p, f in files.items())]
        aucs = {name: validate(net, val, crop)["val_auc"] for name, net in runs}
    diff = abs(aucs[DEPLOYED] - aucs["eager"])
    return dict(row, arch=network(model).pretrained_cfg["architecture"], data_root=cfg.data_root,
                images=2 * len(val.dataset), auc=aucs, diff=diff, ok=diff <= AUC_TOLERANCE)


def main(argv: list[str] | None = None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", help="teacher weights (FFc23.tar, timm state dict or our checkpoint; glob ok), with "
                                      "the ONNX files src.export wrote beside them; default: random weights")
    ap.add_argument("--student", help="student weights (our checkpoint; glob ok), with the ONNX files src.export "
                                      "wrote beside them; default: random weights")
    ap.add_argument("--teacher-arch", default="tf_efficientnet_b4", help="random weights: the teacher's architecture")
    ap.add_argument("--student-arch", default="mobilevitv2_200", help="random weights: the student's architecture")
    ap.add_argument("--teacher-size", type=int, default=380, help="random weights: the teacher's input size")
    ap.add_argument("--student-size", type=int, default=256, help="random weights: the student's own input size")
    ap.add_argument("--student-input", type=int, help="random weights: the student's fed input size, resized to its "
                    "own inside (default: --teacher-size, the crop, as shipped; its own size: the bare network)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action="store_true", help="eager path under bf16 autocast")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {','.join(PATHS)} "
                    "(ONNX Runtime paths: CPU only)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (PyTorch and ONNX Runtime)")
    ap.add_argument("--runs", type=int, default=Settings.runs, help="timed runs at batch 1")
    ap.add_argument("--warmup", type=int, default=Settings.warmup)
    ap.add_argument("--batch", type=int, default=Settings.batch, help="batch size of the throughput figure")
    ap.add_argument("--batch-runs", type=int, default=Settings.batch_runs, help="timed runs at that batch")
    ap.add_argument("--train-batch", type=int, default=Settings.train_batch,
                    help="batch of the training-step memory figure")
    ap.add_argument("--config", help="its val split is the int8 AUC check's for both models (default: each "
                                     "checkpoint's own training config; FFc23.tar carries none)")
    ap.add_argument("--no-auc-check", action="store_true", help="skip the int8 AUC check")
    ap.add_argument("--out", help="output folder (default output/benchmark_<time>)")
    args = ap.parse_args(argv)
    setup_logging()
    paths = [p.strip() for p in args.paths.split(",")]
    if unknown := set(paths) - set(PATHS):
        ap.error(f"unknown path(s) {sorted(unknown)}; choose from {', '.join(PATHS)}")
    if args.student and args.student_input:
        ap.error("--student-input feeds a random-weight student; a --student file's ONNX files take its own crop")
    if args.device == "cuda" and (dropped := [p for p in paths if p != "eager"]):
        paths = ["eager"] if "eager" in paths else []  # this project's onnxruntime is the CPU package
        logging.getLogger(__name__).warning(
            "--device cuda measures the eager path only: %s and the int8 AUC check are skipped (ONNX Runtime runs on "
            "the CPU here); --device cpu measures them", ", ".join(dropped))
    resolved = {role: resolve(role, arch, size, w, c) for role, arch, size, w, c in (
        ("teacher", args.teacher_arch, args.teacher_size, args.teacher, None),
        ("student", args.student_arch, args.student_size, args.student,
         None if args.student else args.student_input or args.teacher_size))}
    models = {role: m for role, (m, _) in resolved.items()}
    shipped = {role: shipped_files(m, paths) for role, m in models.items() if m.weights is not None}
    out = Path(args.out or f"output/benchmark_{datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings(args.device, args.threads, args.runs, args.warmup, args.batch, args.batch_runs,
                        args.train_batch, args.bf16)
    rows = measure(models, {role: net for role, (_, net) in resolved.items()}, paths, shipped, settings)
    ratio = ratios(rows)
    checks = [] if args.no_auc_check or DEPLOYED not in paths else [
        auc_check(models[role], files, args.config, args.threads) for role, files in shipped.items()]
    options = {k: v for k, v in vars(args).items() if k not in ("teacher", "student", "out")}
    text = write_report(out, rows, ratio, checks, settings, models, options)
    print(text + f"wrote {out / 'benchmark.md'} and {out / 'benchmark.json'}")


if __name__ == "__main__":
    cli(main)

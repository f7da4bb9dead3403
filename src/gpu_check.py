"""GPU readiness in one command: what a cluster run does, each as a row of one table, in a few minutes.

    python -m src.gpu_check [--config configs/config_SBI.json] [--steps 5] [--skip-compile] [--work DIR]
                            [--retinaface-weights W] [--rows fit,steps,evaluate,benchmark] [--cpu-tiny]

Rows, on generated data (src.synthetic) and random weights (nothing is downloaded), at the config's sizes
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
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from src.common import checkpoint
from src.common.config import Config, load_config
from src.common.logs import cli
from src.data.synthetic import SyntheticVideo, generate_dataset
from src.models.networks import create_classifier

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = (("float32 (TF32)", {}), ("bf16", {"amp": "bf16"}),
            ("bf16 + channels_last", {"amp": "bf16", "channels_last": True}),
            ("bf16 + compile", {"amp": "bf16", "compile": True}))
ROWS = ("fit", "steps", "evaluate", "benchmark")
PER_GPU = 4  # images per GPU and step in the 8-GPU recipe (32 over 8)
STEPS_PER_EPOCH = 8  # fit's epochs: long enough for a signal to land mid-epoch


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cause(log: str) -> str:
    """The line of a failed command's output that says why (the worker's error, not torchrun's summary)."""
    lines = [x.strip() for x in log.splitlines() if re.search(r"^error: |\w+(Error|Exception): ", x.strip())
             and "ChildFailedError" not in x]
    return lines[-1] if lines else (log.strip().splitlines() or ["no output"])[-1]


def _end(job: subprocess.Popen) -> None:
    """Stop a torchrun job that is still running: SIGTERM, which torchrun passes to its processes, then SIGKILL."""
    if job.poll() is None:
        job.terminate()
        try:
            job.wait(timeout=60)
        except subprocess.TimeoutExpired:
            job.kill()


def random_checkpoint(arch: str, cfg: Config, path: Path) -> Path:
    """A checkpoint of this project holding `arch` with random weights (stage 2's start, the scored model)."""
    torch.save({"model": create_classifier(arch).state_dict(), "arch": arch, "epoch": 0, "val_auc": 0.5,
                "config": cfg.to_dict()}, path)
    return path


def fit_row(stage: int, mode: Mode, work: Path, nproc: int) -> str:
    """`fit` of `stage` under torchrun: SIGTERM to torchrun mid-epoch, last.pth checked, --resume to the end."""
    frames = STEPS_PER_EPOCH * PER_GPU // 2 * nproc // 8  # per video: 12 videos, of which 8 train
    data = work / f"data_{frames}"
    if not data.is_dir():
        generate_dataset(data, videos=12, frames=frames, frame_size=mode.frame_size, face_size=mode.face_size)
    c = mode.cfg
    keys = dict(data_root=str(data), output_dir=str(work / "output"), model=c.model, teacher_arch=c.teacher_arch,
                image_size=c.image_size, student_image_size=c.student_image_size, frames_per_video=frames,
                batch_size=PER_GPU * nproc, epoch=2 if stage == 1 else 1, min_teacher_auc=0.0, **mode.fit_keys)
    if stage == 2:
        keys["teacher_weights"] = str(work / "teacher.pth")  # random weights, as if trained on RetinaFace crops:
        keys["allow_teacher_face_mismatch"] = True  # generated faces are not, and the check needs no good labels
        torch.save(create_classifier(c.teacher_arch).state_dict(), keys["teacher_weights"])
        keys["pretrained_student_weights"] = str(random_checkpoint(c.model, c, work / "student.pth"))
    config = work / f"stage{stage}.json"
    config.write_text(json.dumps(keys))
    script, name = ("train_student_only.py", "main_distillation.py")[stage - 1], f"stage{stage}"
    earlier = set((work / "output").glob(f"{name}_*"))  # runs of an earlier check in the same --work

    def torchrun(log: Path, *args: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", str(ROOT / script), str(config), "-n", name, *args]
        with open(log, "w") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def ready(run: Path) -> bool:  # after an epoch's end (stage 1) or the teacher's check (stage 2): steps come next
        if stage == 1:
            return (run / "log.csv").is_file()
        return (run / "train.log").is_file() and "teacher val AUC" in (run / "train.log").read_text()

    log = work / f"{name}.log"
    job, deadline = torchrun(log), time.time() + 600
    try:
        while not ((runs := sorted(set((work / "output").glob(f"{name}_*")) - earlier)) and ready(runs[-1])):
            if job.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{script} stopped or took 600 s before its first step (exit status {job.poll()}): "
                                   f"{_cause(log.read_text())} (log: {log})")
            time.sleep(0.2)
        job.send_signal(signal.SIGTERM)  # to torchrun, as a scheduler sends it: torchrun forwards it to each process
        rc = job.wait(timeout=300)
    finally:
        _end(job)
    run = runs[-1]
    if not (run / "weights" / "last.pth").is_file():
        raise RuntimeError(f"SIGTERM left no last.pth in {run} (torchrun exit status {rc}): {_cause(log.read_text())}")
    last = checkpoint.load(run / "weights" / "last.pth")
    if last["step"] == 0:
        raise RuntimeError(f"SIGTERM reached {script} after epoch {last['epoch']}'s end, not mid-epoch (log: {log})")
    resumed = work / f"{name}_resume.log"
    job = torchrun(resumed, "--resume", str(run))
    try:
        if job.wait(timeout=600):
            raise RuntimeError(f"{script} --resume exited with status {job.returncode}: {_cause(resumed.read_text())} "
                               f"(log: {resumed})")
    finally:
        _end(job)
    epochs = [int(r.split(",")[0]) for r in (run / "log.csv").read_text().splitlines()[1:]]
    if epochs != list(range(1, keys["epoch"] + 1)):
        raise RuntimeError(f"the resumed run logged epochs {epochs}, not 1-{keys['epoch']} ({run / 'log.csv'})")
    best = checkpoint.load(run / "weights" / "BEST.pth")
    backend = ("nccl" if mode.cuda else "gloo") if nproc > 1 else "no process group"
    return (f"{nproc} x {PER_GPU} images ({backend}): SIGTERM in epoch {last['epoch'] + 1} after step {last['step']} "
            f"(torchrun exit {rc}), resumed to epoch {epochs[-1]}, val AUC {best['val_auc']:.3f}")


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


def write_video(path: Path, size: tuple[int, int], frames: int, face_size: float) -> Path:
    """A generated face video (MPEG-4 Part 2)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    scene = SyntheticVideo(rng, size, face_size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    for _ in range(frames):
        writer.write(cv2.cvtColor(scene.frame(rng)[0], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


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
    model, size, _ = load_scorer(random_checkpoint(mode.cfg.model, mode.cfg, work / "scored.pth"))
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
    """src.benchmark's eager path: student/teacher latency at batch 1, throughput and memory ratios."""
    from src import benchmark  # noqa: PLC0415

    c, out = mode.cfg, work / f"benchmark_{'bf16' if bf16 else 'fp32'}"
    argv = ["--device", "cuda" if mode.cuda else "cpu", "--paths", "eager", "--out", str(out),
            "--teacher-arch", c.teacher_arch, "--student-arch", c.model, "--teacher-size", str(c.image_size),
            "--student-size", str(c.student_size)]
    argv += ["--runs", "30"] if mode.cuda else ["--runs", "2", "--warmup", "1", "--batch", "2", "--batch-runs", "1",
                                                  "--train-batch", "2", "--threads", "1"]
    with contextlib.redirect_stdout(io.StringIO()):  # its own table goes to its folder
        benchmark.main(argv + (["--bf16"] if bf16 else []))
    q = json.loads((out / "benchmark.json").read_text())["ratios"]
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
        rows += [(f"fit stage {s}, torchrun, SIGTERM + resume", lambda s=s: fit_row(s, mode, work, nproc))
                 for s in (1, 2)]
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

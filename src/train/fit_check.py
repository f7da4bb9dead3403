"""The cluster drill of src.gpu_check: one stage under torchrun on generated data, stopped by SIGTERM mid-epoch (as a
scheduler stops a job), its last.pth checked, then resumed with --resume to the end."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from src.common import checkpoint
from src.common.config import Config
from src.common.distributed import free_port
from src.data.synthetic import generate_dataset
from src.models.networks import create_classifier, save_random_checkpoint

ROOT = Path(__file__).resolve().parents[2]
PER_GPU = 4  # images per GPU and step in the 8-GPU recipe (32 over 8)
STEPS_PER_EPOCH = 8  # the drill's epochs: long enough for a signal to land mid-epoch


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


def sigterm_and_resume(stage: int, cfg: Config, work: Path, nproc: int, frame_size: tuple[int, int], face_size: int,
                       extra_keys: dict, cuda: bool) -> str:
    """Stage `stage` of `cfg`'s models and sizes with the training `extra_keys` under torchrun, `nproc` processes of
    PER_GPU images, on data generated into `work` (random weights for stage 2's teacher and student): SIGTERM to
    torchrun mid-epoch, last.pth checked, --resume to the end. What happened, in one line; RuntimeError if not that."""
    frames = STEPS_PER_EPOCH * PER_GPU // 2 * nproc // 8  # per video: 12 videos, of which 8 train
    data = work / f"data_{frames}"
    if not data.is_dir():
        generate_dataset(data, videos=12, frames=frames, frame_size=frame_size, face_size=face_size)
    keys = dict(data_root=str(data), output_dir=str(work / "output"), model=cfg.model, teacher_arch=cfg.teacher_arch,
                image_size=cfg.image_size, student_image_size=cfg.student_image_size, frames_per_video=frames,
                batch_size=PER_GPU * nproc, epoch=2 if stage == 1 else 1, min_teacher_auc=0.0, **extra_keys)
    if stage == 2:
        keys["teacher_weights"] = str(work / "teacher.pth")  # random weights, as if trained on RetinaFace crops:
        keys["allow_teacher_face_mismatch"] = True  # generated faces are not, and the check needs no good labels
        torch.save(create_classifier(cfg.teacher_arch).state_dict(), keys["teacher_weights"])
        keys["pretrained_student_weights"] = str(save_random_checkpoint(cfg.model, cfg, work / "student.pth"))
    config = work / f"stage{stage}.json"
    config.write_text(json.dumps(keys))
    script, name = ("train_student_only.py", "main_distillation.py")[stage - 1], f"stage{stage}"
    earlier = set((work / "output").glob(f"{name}_*"))  # runs of an earlier check in the same work folder

    def torchrun(log: Path, *args: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(ROOT / script), str(config), "-n", name, *args]
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
    backend = ("nccl" if cuda else "gloo") if nproc > 1 else "no process group"
    return (f"{nproc} x {PER_GPU} images ({backend}): SIGTERM in epoch {last['epoch'] + 1} after step {last['step']} "
            f"(torchrun exit {rc}), resumed to epoch {epochs[-1]}, val AUC {best['val_auc']:.3f}")

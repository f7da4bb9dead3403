"""Training-step cost: seconds per SAM step (and its parts) and peak memory, measured in fresh processes."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator

import torch

from src.common.config import Config
from src.common.distributed import finish, free_port, init_distributed
from src.data.dataset import BadSampleTracker
from src.models.networks import create_classifier, student_view
from src.train.engine import (
    autocast,
    compiled,
    ddp,
    make_optimizer,
    speed_settings,
    sync_batchnorm,
    train_one_epoch,
)
from src.train.sam import SAM, BNStats


def _peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA allocation, or on the CPU this process's peak resident memory (torch itself included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _timed(fn, steps: int, device: torch.device) -> float:
    """Seconds per call of `fn` after one warm-up call (CUDA work is waited for)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


class _Stamped:
    """`batch`, `n` times, noting when each is asked for (after the device finished the step before)."""

    def __init__(self, batch: dict, n: int, device: torch.device):
        self.batch, self.n, self.device, self.times = batch, n, device, []

    def __iter__(self):
        for _ in range(self.n):
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            yield self.batch


@contextlib.contextmanager
def _clocked(methods: list[tuple[object, str]], spans: list, device: torch.device) -> Iterator[None]:
    """Each (object or class, method name) notes (start, seconds) of its calls in `spans` while inside; on CUDA each
    call is waited for, before and after."""

    def clock(fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            spans.append((start, time.perf_counter() - start))
            return out
        return timed

    own = [(obj, name, vars(obj).get(name)) for obj, name in methods]
    for obj, name, _ in own:
        setattr(obj, name, clock(getattr(obj, name)))
    try:
        yield
    finally:
        for obj, name, original in own:
            if original is None:
                delattr(obj, name)
            else:
                setattr(obj, name, original)


def _epoch_timed(run, batch: dict, steps: int, device: torch.device, optimizer: SAM | None = None
                 ) -> tuple[float, float, float | None]:
    """Seconds per steady step, seconds of the epoch's set-up and end, and (with `optimizer`) seconds per steady
    step in SAM's own work, of `run(loader)` over one epoch of steps + 2 steps (medians over the steady steps)."""
    loader, spans = _Stamped(batch, steps + 2, device), []
    sam_work = [(optimizer, "first_step"), (optimizer, "clip_grad_norm_"), (optimizer, "second_step"),
                (BNStats, "save"), (BNStats, "restore")] if optimizer is not None else []
    start = time.perf_counter()
    with _clocked(sam_work, spans, device):
        run(loader)
    if device.type == "cuda":
        torch.cuda.synchronize()
    total, t = time.perf_counter() - start, loader.times
    # steps 2 .. steps + 1 (the first warms up, the last also ends the epoch); medians: robust to a busy machine
    steady = list(zip(t[1:-1], t[2:]))
    step = statistics.median(end - begin for begin, end in steady)
    own = None
    if sam_work:
        own = statistics.median(sum(s for at, s in spans if begin <= at < end) for begin, end in steady)
    return step, total - (t[-1] - t[1]) - 2 * step, own


def measure(cfg: Config, stage: int, steps: int, rank: int = 0, world: int = 1, port: int = 0,
            threads: int | None = None, cpu: bool = False, foreach: bool = True, sam_clock: bool = False) -> dict:
    """Seconds per training step (and its parts) of `stage`, in this process (rank `rank` of `world`).

    The step is the engine's, with the config's amp, channels_last, compile and sync_bn; `cpu` keeps it off CUDA;
    foreach=False: SAM's and the base optimizer's work one parameter at a time; sam_clock: also time SAM's own work
    (out["sam"], seconds per step; on CUDA each of its calls is then waited for)."""
    if threads:
        torch.set_num_threads(threads)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_RANK=str(rank))
    dist = init_distributed(cpu=cpu)
    torch.manual_seed(0)
    device, memory = dist.device, torch.channels_last if cfg.channels_last else torch.contiguous_format
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()  # several measurements in one process (src.gpu_check)
    speed_settings(cfg, device)
    model = sync_batchnorm(create_classifier(cfg.model).to(device, memory_format=memory), cfg, dist)
    teacher = None
    if stage == 2:
        teacher = create_classifier(cfg.teacher_arch).to(device, memory_format=memory).eval().requires_grad_(False)
        teacher = compiled(teacher, cfg, device)
    optimizer, _ = make_optimizer(model, cfg, foreach)
    net = compiled(model, cfg, device)
    wrapped = ddp(net, dist)
    n = cfg.batch_size // dist.world
    images = torch.rand(n, 3, cfg.image_size, cfg.image_size, device=device).contiguous(memory_format=memory)
    batch = {"images": images, "labels": torch.arange(n, device=device) % 2, "failures": []}
    tracker = BadSampleTracker(1.0)
    def epoch(loader: _Stamped) -> None:
        train_one_epoch(wrapped, loader, optimizer, cfg, 1, tracker, teacher, dist)

    step, setup, sam = _epoch_timed(epoch, batch, steps, device, optimizer if sam_clock else None)
    out = {"step": step, "setup": setup, "sam": sam, "peak_mb": _peak_memory_mb(device),
           "memory": "CUDA memory" if device.type == "cuda" else "RSS"}
    if dist.world > 1:
        finish(dist)
        return out
    x, amp = student_view(images, cfg.student_size), autocast(cfg, device)

    def student_fwd_bwd() -> None:
        with amp:
            logits = net(x)
        logits.float().sum().backward()

    out["student_fwd_bwd"] = _timed(student_fwd_bwd, steps, device)
    out["resize"] = _timed(lambda: student_view(images, cfg.student_size), steps, device)
    if teacher is not None:
        with torch.no_grad(), amp:
            out["teacher_fwd"] = _timed(lambda: teacher(images), steps, device)
    return out


def in_fresh_processes(cfg: Config, stage: int, steps: int, world: int = 1, threads: int | None = None,
                       cpu: bool = False, foreach: bool = True, sam_clock: bool = False) -> dict:
    """`measure` in `world` new processes; the slowest rank's step time, the largest peak memory."""
    port = free_port()
    with ProcessPoolExecutor(world, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(measure, cfg, stage, steps, rank, world, port, threads, cpu, foreach, sam_clock)
                for rank in range(world)]
        results = [job.result() for job in jobs]
    return {**results[0], "step": max(r["step"] for r in results), "peak_mb": max(r["peak_mb"] for r in results)}

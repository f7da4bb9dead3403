"""Scoring a test set with the SBI test protocol: videos decoded, detected and cropped by worker processes ahead of
the classifier, resumable, sharded under torchrun; `evaluate_dataset` is the run of src.evaluate."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import cv2
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from src.common.checkpoint import file_sha256
from src.common.config import resolve_path
from src.common.distributed import broadcast, finish, host_barrier, init_distributed, leave
from src.common.logs import UserError, make_folder, setup_logging
from src.common.timing import Stopwatch
from src.common.workers import fork_safe_opencv, one_thread
from src.faces.detectors import (
    FaceDetector,
    UnreadableMedia,
    choose_detector,
    find_retinaface_weights,
    make_detector,
    read_frame_batches,
)
from src.scoring.metrics import summarize
from src.scoring.records import check_settings, open_records, read_records, to_record
from src.scoring.report import plot_roc, print_profile, print_table, write_outputs
from src.scoring.score import crop_scores, face_crops, frames_wanted, load_scorer
from src.scoring.testsets import Item, VideoResult, dataset_items

_logger = logging.getLogger(__name__)


class VideoCrops(IterableDataset):
    """The face crops of each video of `items`, decoded, detected and cropped where the DataLoader runs it (a worker
    process); with `detector` None, its decoded frames only (the main process detects: RetinaFace on a GPU). Each
    worker takes the next video of `order` when it starts one (a counter the workers share), so no video waits behind
    a long one in a busy worker's queue while another worker has nothing to do. One pass: make a new one for each."""

    def __init__(self, items: list[Item], detector: FaceDetector | None, frames: int, size: int, order: list[int]):
        self.items, self.detector, self.frames, self.size, self.order = items, detector, frames, size, order
        self.taken = multiprocessing.Value("q", 0)  # shared memory: forked workers count on the same one

    def __iter__(self) -> Iterator[dict]:
        while (k := self.take()) < len(self.order):
            yield self.crops(self.order[k])

    def take(self) -> int:
        with self.taken.get_lock():
            self.taken.value += 1
            return self.taken.value - 1

    def crops(self, i: int) -> dict:
        path, timer = self.items[i].path, defaultdict(float)
        watch = Stopwatch(timer)
        try:
            wanted, batches = frames_wanted(path, self.frames), read_frame_batches(path, self.frames)
            if self.detector is None:
                batches = list(batches)
                watch.lap("decode")
                return dict(index=i, batches=batches, wanted=wanted, timer=timer)
            return dict(index=i, crops=face_crops(path, batches, self.detector, self.size, wanted, watch), timer=timer)
        except UnreadableMedia as e:
            return dict(index=i, error=str(e), timer=timer)


FEEDER_NICE = 10  # how far the workers sit below the scoring process in CPU priority


def feeder(worker_id: int) -> None:
    """A worker that decodes, detects and crops ahead of the scoring process: one thread, and below that process in
    CPU priority, so the classifier (the pipeline's last stage) gets a core whenever crops wait for it and the
    workers take every cycle it leaves."""
    one_thread(worker_id)
    os.nice(FEEDER_NICE)


def _as_is(sample: dict) -> dict:
    return sample


def largest_first(items: list[Item]) -> list[int]:
    """Indices of `items` by file size, largest first, so that the long videos start early and the short ones fill
    the end, where a worker would otherwise be left alone with a long one (a missing file's error is quick: last)."""
    def size(i: int) -> int:
        try:
            return items[i].path.stat().st_size
        except OSError:
            return 0

    return sorted(range(len(items)), key=lambda i: -size(i))


def evaluate_items(items: list[Item], detector: FaceDetector, model: nn.Module, size: int, frames: int = 32,
                   device: str | torch.device = "cpu", batch_size: int | None = None, timer: dict | None = None,
                   workers: int = 0, bf16: bool = False,
                   on_result: Callable[[VideoResult], None] | None = None) -> list[VideoResult]:
    """Score every video; unreadable ones are kept (score 0.5) with their error.

    `workers` DataLoader processes decode, detect and crop videos ahead while this process scores the crops of
    the previous ones (a detector on CUDA runs here instead, on the frames the workers decoded). The workers take the
    videos largest file first, each the next one whenever it is free, and each video is scored and passed to
    `on_result` as soon as its crops arrive, so a long video does not hold the others back; the list returned is in
    the order of `items`.
    """
    in_workers = getattr(detector, "device", torch.device("cpu")).type != "cuda"
    if workers:
        fork_safe_opencv()
    order = largest_first(items) if workers else list(range(len(items)))
    loader = DataLoader(VideoCrops(items, detector if in_workers else None, frames, size, order), batch_size=None,
                        num_workers=workers, collate_fn=_as_is, worker_init_fn=feeder,
                        multiprocessing_context="fork" if workers else None, in_order=False)
    results, n_frames, start = {}, 0, time.perf_counter()
    bar = tqdm(total=len(items), desc="videos", unit="video", dynamic_ncols=True)
    for out in loader:
        item = items[out["index"]]
        if timer is not None:
            for stage, seconds in out["timer"].items():
                timer[stage] += seconds
        if "error" in out:
            _logger.warning("%s", out["error"])
            result = VideoResult(item, None, out["error"])
        else:
            watch = Stopwatch(timer)
            crops = (out["crops"] if in_workers else
                     face_crops(item.path, out["batches"], detector, size, out["wanted"], watch))
            watch.lap("crop")
            result = VideoResult(item, crop_scores(crops, model, device, batch_size, bf16))
            watch.lap("model")
            n_frames += crops.n_frames
        results[out["index"]] = result
        if on_result is not None:
            on_result(result)
        bar.update(1)
        bar.set_postfix(frames_per_s=f"{n_frames / (time.perf_counter() - start):.2f}")
    bar.close()
    return [results[i] for i in range(len(items))]


def scoring_threads(workers: int) -> int | None:
    """Threads for the scoring process: the cores (its share of them under torchrun) that its `workers` leave, at
    least one; None without workers (each library's default: the cores)."""
    if not workers:
        return None
    cores = len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, cores - workers)


def thread_budget(workers: int, model: nn.Module) -> str:
    """The threads of each process and stage, for --profile."""
    session = getattr(model, "session", None)
    scoring = (f"ONNX Runtime {session.get_session_options().intra_op_num_threads}" if session is not None else
               f"torch {torch.get_num_threads()}")
    cores = len(os.sched_getaffinity(0))
    if workers:
        return (f"{cores} cores; {workers} worker process{'es' if workers != 1 else ''} of 1 thread each (OpenCV, its "
                f"FFmpeg decoding, torch) at nice +{FEEDER_NICE}; the scoring process: {scoring}")
    decoding = os.environ.get("OPENCV_FFMPEG_THREADS", min(cores, 16))  # OpenCV's default: one per core, up to 16
    return f"{cores} cores, one process: FFmpeg decoding {decoding}, OpenCV {cv2.getNumThreads()}, scoring {scoring}"


def evaluate_dataset(dataset: str, root: str, weights: str, frames: int = 32, out: str | None = None,
                     compression: str = "c23", detector_name: str | None = None, shape_predictor: str | None = None,
                     retinaface_weights: str | None = None, runtime: str = "torch", batch_size: int | None = None,
                     workers: int = 0, device: str = "cpu", bf16: bool = False, profile: bool = False) -> None:
    """src.evaluate's run: score the test videos of `dataset` into `out` (an interrupted run there resumes), then
    write and print the results (rank 0 under torchrun); a UserError before the scoring leaves the process group."""
    dist = init_distributed(cpu=not device.startswith("cuda"))  # under torchrun: each process a shard of the videos
    device = dist.device if dist.world > 1 else torch.device(device)
    threads = scoring_threads(workers)
    if threads:
        torch.set_num_threads(threads)
    try:
        items = dataset_items(dataset, root, compression)
        weights = resolve_path(weights, "weights")
        model, size, faces = load_scorer(weights, runtime, threads)
        detector = make_detector(choose_detector(detector_name, faces), shape_predictor,
                                 retinaface_weights=retinaface_weights, device=device)
        model = model.to(device)
        out = Path(broadcast(out or f"output/evaluate_{dataset}_{datetime.now():%Y%m%d-%H%M%S}", dist))
        described = detector.describe()
        retinaface = find_retinaface_weights(retinaface_weights) if described["detector"] == "retinaface" else None
        settings = dict(dataset=dataset, root=str(root), weights=str(weights), model_sha256=file_sha256(weights),
                        frames=frames, compression=compression, runtime=runtime,
                        bf16=bf16 and device.type == "cuda", detector=described,
                        retinaface_sha256=file_sha256(retinaface) if retinaface else None)
        if dist.is_main:
            check_settings(make_folder(out, "--out"), settings)
    except UserError:
        leave(dist)
        raise
    host_barrier(dist)
    setup_logging(out / ("evaluate.log" if dist.world == 1 else f"evaluate.rank{dist.rank}.log"))
    done = read_records(out)
    todo = [i for i in items[dist.rank::dist.world] if str(i.path) not in done]
    _logger.info("%s: %d videos (%d real) from %s; results to %s%s", dataset, len(items),
                 sum(i.label == 0 for i in items), root, out,
                 f"; resuming: {len(done)} already scored by the same model file" if done else "")
    timer, start = defaultdict(float), time.perf_counter()
    with open_records(out / ("videos.jsonl" if dist.world == 1 else f"videos.rank{dist.rank}.jsonl")) as log:
        def record(r: VideoResult) -> None:
            log.write(json.dumps(to_record(r)) + "\n")
            log.flush()

        new = evaluate_items(todo, detector, model, size, frames, device, batch_size, timer, workers, bf16, record)
    wall = time.perf_counter() - start
    host_barrier(dist)  # shards are uneven: a rank may wait here for hours
    if dist.is_main:
        done = read_records(out)
        missing = [str(i.path) for i in items if str(i.path) not in done]
        if missing:
            raise UserError(f"{len(missing)} videos were not scored, e.g. {missing[0]}: run the command again")
        results = [done[str(i.path)] for i in items]
        summary = {**settings, "training_faces": faces, **summarize(results)}
        write_outputs(out, summary, results)
        plot_roc(out, results)
        print_table(summary)
        print(f"wrote {out / 'results.json'}, {out / 'videos.csv'} and {out / 'roc.png'}")
    if profile:
        print_profile(timer, sum(r.scores.n_frames for r in new if r.scores),
                      sum(len(r.scores.faces) for r in new if r.scores), wall, workers,
                      thread_budget(workers, model))
    finish(dist)


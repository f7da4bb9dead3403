"""Video-level evaluation of any checkpoint on the standard deepfake test sets, with the SBI test protocol.

    python -m src.evaluate --weights weights/FFc23.tar --dataset cdf --root data/Celeb-DF-v2 [--frames 32] [--out DIR]

Per video: `frames` frames at linspace(0, n - 1, frames) rounded down, faces detected (by default with the detector
that made the model's training data: RetinaFace at 2048 px for FFc23.tar, as published), faces below half the
largest one's area dropped, each cropped with the test margins (w/8, h/8 per side), resized to the model's input and
scored; frame score = max over faces, video score = mean over frames with a face. A video without any face scores
0.5 and is listed; a face whose box cannot be cropped is skipped and counted (bad_faces). Writes results.json,
videos.csv and roc.png to `--out` (default output/evaluate_<dataset>_<time>/) and prints a table.

--workers processes decode, detect and crop videos ahead of the model, one thread each, and the scoring process
gets the cores they leave; each scored video is appended to videos.jsonl, and the same command with an interrupted
run's --out scores only the missing ones (the same model file, by content, under the same settings: anything else is
refused); under torchrun each process scores every world-th video and rank 0 merges them; --runtime onnx scores an
exported file in ONNX Runtime. A video that decodes fewer frames than it states (truncated, damaged) is scored on
the frames it has and listed in results.json as truncated.

Dataset layouts (`--root`):
    ff      FF++ root: test.json, original_sequences/youtube/<c>/videos/<id>.mp4 (real) and
            manipulated_sequences/{Deepfakes,Face2Face,FaceSwap,NeuralTextures}/<c>/videos/<a>_<b>.mp4 (both orders)
    dfd     FF++ root: original_sequences/actors/<c>/videos/*.mp4 (real), manipulated_sequences/DeepFakeDetection/
            <c>/videos/*.mp4 (fake)
    cdf     Celeb-DF v2 root: List_of_testing_videos.txt ("<1 real|0 fake> <relative path>" per line)
    dfdc    DFDC test set: labels.csv (columns filename,label; 1 = fake) and videos/<filename>
    dfdcp   DFDC Preview root: dataset.json ({path: {"label": "real"|"fake", "set": "train"|"test"}}), set == test
    ffiw    FFIW10K-v1-release: source/val/videos/*.mp4 (real), target/val/videos/*.mp4 (fake)
    folder  any root with real/ and fake/ folders of videos or images (searched recursively)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Callable

import cv2
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from src.common.checkpoint import file_sha256
from src.common.config import resolve_path
from src.common.distributed import broadcast, finish, host_barrier, init_distributed, leave
from src.common.layout import COMPRESSIONS
from src.common.logs import UserError, cli, count_arg, make_folder, setup_logging
from src.common.timing import Stopwatch
from src.faces.detectors import (
    Detector,
    UnreadableMedia,
    add_detector_args,
    choose_detector,
    find_retinaface_weights,
    fork_safe_opencv,
    make_detector,
    one_thread,
    read_frame_batches,
)
from src.scoring.metrics import summarize
from src.scoring.records import check_settings, open_records, read_records, to_record
from src.scoring.report import plot_roc, print_profile, print_table, write_outputs
from src.scoring.score import crop_scores, face_crops, frames_wanted, load_scorer
from src.scoring.testsets import READERS, Item, VideoResult, dataset_items

_logger = logging.getLogger(__name__)


class VideoCrops(Dataset):
    """Item i: the face crops of video i, decoded, detected and cropped where the DataLoader runs it (a worker
    process); with `detector` None, its decoded frames only (the main process detects: RetinaFace on a GPU)."""

    def __init__(self, items: list[Item], detector: Detector | None, frames: int, size: int):
        self.items, self.detector, self.frames, self.size = items, detector, frames, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
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


def _as_is(sample: dict) -> dict:
    return sample


def evaluate_items(items: list[Item], detector: Detector, model: nn.Module, size: int, frames: int = 32,
                   device: str | torch.device = "cpu", batch_size: int | None = None, timer: dict | None = None,
                   workers: int = 0, bf16: bool = False,
                   on_result: Callable[[VideoResult], None] | None = None) -> list[VideoResult]:
    """Score every video; unreadable ones are kept (score 0.5) with their error.

    `workers` DataLoader processes decode, detect and crop videos ahead while this process scores the crops of
    the previous ones (a detector on CUDA runs here instead, on the frames the workers decoded). Results come in
    the order of `items`, each passed to `on_result` as soon as it is scored.
    """
    in_workers = getattr(detector, "device", torch.device("cpu")).type != "cuda"
    if workers:
        fork_safe_opencv()
    loader = DataLoader(VideoCrops(items, detector if in_workers else None, frames, size), batch_size=None,
                        num_workers=workers, collate_fn=_as_is, worker_init_fn=one_thread)
    results, n_frames, start = [], 0, time.perf_counter()
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
        results.append(result)
        if on_result is not None:
            on_result(result)
        bar.update(1)
        bar.set_postfix(frames_per_s=f"{n_frames / (time.perf_counter() - start):.2f}")
    bar.close()
    return results


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
                f"FFmpeg decoding, torch); the scoring process: {scoring}")
    decoding = os.environ.get("OPENCV_FFMPEG_THREADS", min(cores, 16))  # OpenCV's default: one per core, up to 16
    return f"{cores} cores, one process: FFmpeg decoding {decoding}, OpenCV {cv2.getNumThreads()}, scoring {scoring}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="FFc23.tar, a timm B4 state dict, our checkpoint (glob ok), or "
                                                     "with --runtime onnx an exported .onnx file")
    ap.add_argument("--dataset", required=True, type=str.lower, choices=list(READERS))
    ap.add_argument("--root", required=True, help="the dataset's root folder (layouts above)")
    ap.add_argument("--frames", type=count_arg(1), default=32, help="frames per video, at linspace (default 32)")
    ap.add_argument("--out", help="output folder (default output/evaluate_<dataset>_<time>); an interrupted run's "
                                  "folder resumes it")
    ap.add_argument("--compression", choices=COMPRESSIONS, default="c23", help="ff and dfd only")
    add_detector_args(ap, default=None)
    ap.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                    help="onnx: score with the exported ONNX or int8 file of src.export in ONNX Runtime (CPU)")
    ap.add_argument("--batch", "--batch-size", dest="batch_size", type=count_arg(1),
                    help="faces per model call (default: 32 on CUDA, 1 on the CPU, where larger batches run slower "
                         "per face)")
    ap.add_argument("--workers", type=count_arg(0), default=min(4, os.cpu_count() or 1),
                    help="processes that decode, detect and crop videos ahead of the model, one thread each; the "
                         "scoring process gets the cores they leave (default: %(default)s)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action="store_true", help="the classifier under bf16 autocast (CUDA)")
    ap.add_argument("--profile", action="store_true", help="print frames/s, the threads of each stage and the "
                                                           "seconds of decode, detect, crop, model")
    a = ap.parse_args(argv)
    setup_logging()
    d = init_distributed(cpu=not a.device.startswith("cuda"))  # under torchrun: each process a shard of the videos
    device = d.device if d.world > 1 else torch.device(a.device)
    threads = scoring_threads(a.workers)
    if threads:
        torch.set_num_threads(threads)
    try:
        items = dataset_items(a.dataset, a.root, a.compression)
        weights = resolve_path(a.weights, "weights")
        model, size, faces = load_scorer(weights, a.runtime, threads)
        detector = make_detector(choose_detector(a.detector, faces), a.shape_predictor,
                                 retinaface_weights=a.retinaface_weights, device=device)
        model = model.to(device)
        out = Path(broadcast(a.out or f"output/evaluate_{a.dataset}_{datetime.now():%Y%m%d-%H%M%S}", d))
        described = detector.describe()
        retinaface = find_retinaface_weights(a.retinaface_weights) if described["detector"] == "retinaface" else None
        settings = dict(dataset=a.dataset, root=str(a.root), weights=str(weights), model_sha256=file_sha256(weights),
                        frames=a.frames, compression=a.compression, runtime=a.runtime,
                        bf16=a.bf16 and device.type == "cuda", detector=described,
                        retinaface_sha256=file_sha256(retinaface) if retinaface else None)
        if d.is_main:
            check_settings(make_folder(out, "--out"), settings)
    except UserError as e:
        leave(d)
        ap.exit(2, f"error: {e}\n")
    host_barrier(d)
    setup_logging(out / ("evaluate.log" if d.world == 1 else f"evaluate.rank{d.rank}.log"))
    done = read_records(out)
    todo = [i for i in items[d.rank::d.world] if str(i.path) not in done]
    _logger.info("%s: %d videos (%d real) from %s; results to %s%s", a.dataset, len(items),
                 sum(i.label == 0 for i in items), a.root, out,
                 f"; resuming: {len(done)} already scored by the same model file" if done else "")
    timer, start = defaultdict(float), time.perf_counter()
    with open_records(out / ("videos.jsonl" if d.world == 1 else f"videos.rank{d.rank}.jsonl")) as log:
        def record(r: VideoResult) -> None:
            log.write(json.dumps(to_record(r)) + "\n")
            log.flush()

        new = evaluate_items(todo, detector, model, size, a.frames, device, a.batch_size, timer, a.workers, a.bf16,
                             record)
    wall = time.perf_counter() - start
    host_barrier(d)  # shards are uneven: a rank may wait here for hours
    if d.is_main:
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
    if a.profile:
        print_profile(timer, sum(r.scores.n_frames for r in new if r.scores),
                      sum(len(r.scores.faces) for r in new if r.scores), wall, a.workers,
                      thread_budget(a.workers, model))
    finish(d)


if __name__ == "__main__":
    cli(main)

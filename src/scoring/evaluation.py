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
import csv
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, TextIO

import cv2
import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from src.common.checkpoint import file_sha256
from src.common.config import resolve_path
from src.common.distributed import broadcast, finish, host_barrier, init_distributed, leave
from src.common.layout import COMPRESSIONS, MANIPULATIONS, split_videos, video_dir
from src.common.logs import BadInput, MissingFile, UserError, cli, count_arg, make_folder, read_json, setup_logging
from src.common.plots import pyplot
from src.common.timing import Stopwatch
from src.faces.detectors import (
    Detector,
    UnreadableMedia,
    add_detector_args,
    choose_detector,
    find_retinaface_weights,
    fork_safe_opencv,
    list_media,
    make_detector,
    one_thread,
    read_frame_batches,
)
from src.scoring.score import FaceScore, MediaScores, crop_scores, face_crops, frames_wanted, load_scorer

_logger = logging.getLogger(__name__)
STAGES = ("decode", "detect", "crop", "model")


class Item(NamedTuple):
    path: Path
    label: int  # 0 real, 1 fake
    group: str  # "real", the manipulation's name (FF++) or "fake"


@dataclass
class VideoResult:
    item: Item
    scores: MediaScores | None  # None: unreadable
    error: str = ""

    @property
    def score(self) -> float:
        """The video score; 0.5 for a video without a face or unreadable."""
        score = self.scores.score() if self.scores else None
        return 0.5 if score is None else score


# ----------------------------------------------------------------------------------------------------------------
# datasets: lists of (path, label, group) in each release's own layout


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise MissingFile(f"{path} not found: {what}")
    return path


def _videos(folder: Path, what: str) -> list[Path]:
    return sorted(_need(folder, what).glob("*.mp4"))


def ff_items(root: Path, compression: str) -> list[Item]:
    """FF++ test split: its 140 real videos and, per manipulation, the 140 fakes of its pairs (a_b and b_a)."""
    pairs = read_json(root / "test.json", "FF++'s official test split")
    reals = [Item(video_dir(root, compression) / "videos" / f"{v}.mp4", 0, "real")
             for v in split_videos(root, "test")]
    fakes = [Item(root / "manipulated_sequences" / m / compression / "videos" / f"{x}_{y}.mp4", 1, m)
             for m in MANIPULATIONS for a, b in pairs for x, y in ((a, b), (b, a))]
    return reals + fakes


def dfd_items(root: Path, compression: str) -> list[Item]:
    """DeepFakeDetection (shipped with FF++): actors' real videos vs DeepFakeDetection fakes."""
    real = _videos(root / "original_sequences/actors" / compression / "videos", "DFD's real videos (FF++ -d DFD)")
    fake = _videos(root / "manipulated_sequences/DeepFakeDetection" / compression / "videos", "DFD's fake videos")
    return [Item(p, 0, "real") for p in real] + [Item(p, 1, "fake") for p in fake]


def cdf_items(root: Path) -> list[Item]:
    """Celeb-DF v2 test list: label = 1 - first column."""
    lines = _need(root / "List_of_testing_videos.txt", "Celeb-DF v2's test list").read_text().split("\n")
    items = []
    for line in filter(str.strip, lines):
        flag, rel = line.split(maxsplit=1)
        label = 1 - int(flag)
        items.append(Item(root / rel.strip(), label, ("real", "fake")[label]))
    return items


def dfdc_items(root: Path) -> list[Item]:
    """DFDC test set: labels.csv (filename, label) with the videos in videos/."""
    path = _need(root / "labels.csv", "DFDC test set's labels (filename,label)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"filename", "label"} <= set(reader.fieldnames or ()):
            raise UserError(f"{path} has the columns {reader.fieldnames}; the DFDC test set's labels.csv has a "
                            f"header line with 'filename' and 'label' (1 = fake)")
        rows = list(reader)
    bad = next((r for r in rows if r["label"] not in ("0", "1", "0.0", "1.0")), None)
    if bad is not None:
        raise UserError(f"{path}: label {bad['label']!r} for {bad['filename']}; labels are 0 (real) or 1 (fake)")
    return [Item(root / "videos" / r["filename"], int(float(r["label"])), ("real", "fake")[int(float(r["label"]))])
            for r in rows]


def dfdcp_items(root: Path) -> list[Item]:
    """DFDC Preview: the entries of dataset.json with set == test."""
    meta = read_json(root / "dataset.json", "DFDC Preview's metadata")
    return [Item(root / rel, int(m["label"] == "fake"), m["label"]) for rel, m in sorted(meta.items())
            if m["set"] == "test"]


def ffiw_items(root: Path) -> list[Item]:
    """FFIW-10K val split: source (real) and target (fake) videos."""
    real = _videos(root / "source/val/videos", "FFIW10K-v1-release's real val videos")
    fake = _videos(root / "target/val/videos", "FFIW10K-v1-release's fake val videos")
    return [Item(p, 0, "real") for p in real] + [Item(p, 1, "fake") for p in fake]


def folder_items(root: Path) -> list[Item]:
    """Videos and images under real/ and fake/ (one of them may be missing)."""
    if not (root / "real").is_dir() and not (root / "fake").is_dir():
        raise MissingFile(f"{root} has neither a real/ nor a fake/ folder (of videos or images)")
    return [Item(p, label, group) for label, group in enumerate(("real", "fake")) for p in list_media(root / group)]


READERS: dict[str, Callable[..., list[Item]]] = {
    "ff": ff_items, "dfd": dfd_items, "cdf": cdf_items, "dfdc": dfdc_items, "dfdcp": dfdcp_items,
    "ffiw": ffiw_items, "folder": folder_items,
}
# lists of <category>/<file> paths, whose videos the SBI reference's README puts in <category>/videos/<file> (dfdc's
# are in videos/ in both layouts; ff, dfd and ffiw read FF++'s and FFIW's own videos/ folders)
CATEGORY_LISTS = ("cdf", "dfdcp")


def _check_sbi_layout(name: str, root: Path, missing: list[Path]) -> None:
    """Refuse, with the fix, videos of a list of <category>/<file> paths found in <category>/videos/<file>."""
    for path in missing:
        category, *rest = path.relative_to(root).parts
        found = root.joinpath(category, "videos", *rest)
        if found.is_file():
            raise MissingFile(
                f"the videos of '{name}' are in the SBI reference code's layout, not the release's that --dataset "
                f"{name} reads: {path} is missing but {found} exists; move each category's files up out of its "
                f"videos/ folder (e.g. mv {root / category}/videos/* {root / category}/) or point --root at a copy "
                f"in the release's layout")


def dataset_items(name: str, root: str | Path, compression: str = "c23") -> list[Item]:
    """The test videos of dataset `name`; a listed video missing from disk is an error."""
    if name not in READERS:
        raise BadInput(f"unknown dataset '{name}'; choose one of {list(READERS)}")
    root = Path(root)
    items = READERS[name](root, compression) if name in ("ff", "dfd") else READERS[name](root)
    missing = [i.path for i in items if not i.path.is_file()]
    if missing and name in CATEGORY_LISTS:
        _check_sbi_layout(name, root, missing)
    if missing:
        raise MissingFile(f"{len(missing)} of the {len(items)} videos of '{name}' are missing, e.g. "
                                f"{', '.join(map(str, missing[:3]))}")
    if not items:
        raise MissingFile(f"dataset '{name}' under {root} lists no video")
    return items


# ----------------------------------------------------------------------------------------------------------------
# scoring


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


# ----------------------------------------------------------------------------------------------------------------
# metrics and reports


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate: where the ROC's false positive rate meets 1 - TPR, interpolated linearly."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = int(np.argmax(fnr <= fpr))  # first ROC point past the crossing; point 0 is (0, 0), so i >= 1
    before, after = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
    return float(fpr[i - 1] + before / (before - after) * (fpr[i] - fpr[i - 1]))


def metrics(labels: Iterable[int], scores: Iterable[float]) -> dict:
    """AUC, AP, EER (None with a single class) and accuracy at 0.5 of fake probabilities."""
    labels, scores = np.asarray(list(labels)), np.asarray(list(scores), dtype=np.float64)
    acc = float(((scores > 0.5) == labels).mean()) if len(labels) else None
    if len(np.unique(labels)) < 2:
        return dict(auc=None, ap=None, eer=None, acc=acc)
    return dict(auc=float(roc_auc_score(labels, scores)), ap=float(average_precision_score(labels, scores)),
                eer=eer(labels, scores), acc=acc)


def summarize(results: list[VideoResult]) -> dict:
    """results.json: video/frame-level metrics over all videos and, for FF++, per manipulation (with the reals)."""
    def block(rs: list[VideoResult]) -> dict:
        video = metrics([r.item.label for r in rs], [r.score for r in rs])
        frames = [(r.item.label, s) for r in rs if r.scores for s in r.scores.frame_scores().values()]
        frame_auc = metrics(*zip(*frames, strict=True))["auc"] if frames else None
        return dict(video_auc=video["auc"], frame_auc=frame_auc, ap=video["ap"], eer=video["eer"], acc=video["acc"],
                    n_videos=len(rs), n_frames=len(frames),
                    bad_faces=sum(r.scores.bad_faces for r in rs if r.scores),
                    no_face_videos=[str(r.item.path) for r in rs if r.scores and r.scores.score() is None],
                    unreadable_videos=[str(r.item.path) for r in rs if r.scores is None],
                    truncated_videos=[dict(path=str(r.item.path), frames_wanted=r.scores.n_wanted,
                                           frames_read=r.scores.n_frames)
                                      for r in rs if r.scores and r.scores.truncated])

    summary = block(results)
    groups = sorted({r.item.group for r in results if r.item.label == 1})
    if set(groups) & set(MANIPULATIONS):
        reals = [r for r in results if r.item.label == 0]
        summary["per_manipulation"] = {g: block(reals + [r for r in results if r.item.group == g]) for g in groups}
    return summary


def write_outputs(out: Path, summary: dict, results: list[VideoResult]) -> None:
    """results.json and videos.csv (one row per video) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    with open(out / "videos.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group", "score", "frames_wanted", "frames_read", "frames_with_face", "faces",
                    "bad_faces", "error"])
        for r in results:
            s = r.scores
            w.writerow([r.item.path, r.item.label, r.item.group, f"{r.score:.6f}", s.n_wanted if s else 0,
                        s.n_frames if s else 0, len(s.frame_scores()) if s else 0, len(s.faces) if s else 0,
                        s.bad_faces if s else 0, r.error])


def _fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:.4f}"


def print_table(summary: dict) -> None:
    """The metrics as a markdown table: all videos, then each manipulation with the reals."""
    rows = {"all": summary, **summary.get("per_manipulation", {})}
    print("| set            | videos | no face | video AUC | frame AUC |   AP   |  EER   |  acc   |")
    print("|----------------|--------|---------|-----------|-----------|--------|--------|--------|")
    for name, m in rows.items():
        print(f"| {name:<14} | {m['n_videos']:>6} | {len(m['no_face_videos']):>7} | {_fmt(m['video_auc']):>9} | "
              f"{_fmt(m['frame_auc']):>9} | {_fmt(m['ap'])} | {_fmt(m['eer'])} | {_fmt(m['acc'])} |")
    for kind in ("no_face_videos", "unreadable_videos"):
        if summary[kind]:
            _logger.warning("%d video(s) %s scored 0.5 (listed in results.json '%s')", len(summary[kind]),
                            "without any face" if kind == "no_face_videos" else "unreadable", kind)
    if summary["truncated_videos"]:
        _logger.warning("%d video(s) decoded fewer frames than they state (cut short or damaged): scored on the "
                        "frames read, where the SBI reference's code scores such a video 0.5 (listed in results.json "
                        "'truncated_videos')", len(summary["truncated_videos"]))


def print_profile(timer: dict, n_frames: int, n_faces: int, wall: float, workers: int, budget: str) -> None:
    """Frames per second end to end, the thread budget, and the seconds of each stage (summed over the worker
    processes)."""
    print(f"profile: {n_frames} frames, {n_faces} faces in {wall:.2f} s: {n_frames / max(wall, 1e-9):.2f} frames/s end "
          f"to end ({workers} worker process{'es' if workers != 1 else ''}; stage seconds summed over processes)")
    print(f"  threads: {budget}")
    for stage in STAGES:
        seconds = timer[stage]
        print(f"  {stage:<6} {seconds:8.2f} s  {1000 * seconds / max(n_frames, 1):8.1f} ms/frame  "
              f"{n_frames / max(seconds, 1e-9):9.1f} frames/s")


def plot_roc(out: Path, results: list[VideoResult]) -> None:
    """roc.png: video-level ROC curves, all fakes and each manipulation (AUC in the legend), and a histogram of the
    video scores, real vs fake; videos without a score (no face, unreadable: 0.5) are counted in text, not drawn in
    the 0.5 bin. A dataset of one class gets a sentence in place of the curves."""
    plt = pyplot()

    fig, (ax_roc, ax_hist) = plt.subplots(1, 2, figsize=(11, 4.5))
    reals = [r for r in results if r.item.label == 0]
    groups = sorted({r.item.group for r in results if r.item.label == 1})
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="video-level ROC", xlim=(-0.02, 1.02),
               ylim=(-0.02, 1.02))
    if reals and groups:
        for group in ["all"] + (groups if len(groups) > 1 else []):
            rs = reals + [r for r in results if r.item.label == 1 and group in ("all", r.item.group)]
            labels, scores = [r.item.label for r in rs], [r.score for r in rs]
            fpr, tpr, _ = roc_curve(labels, scores)
            style = dict(color="black", linewidth=2, zorder=3) if group == "all" else dict(linewidth=1.2)
            ax_roc.plot(fpr, tpr, label=f"{group} (AUC {roc_auc_score(labels, scores):.4f})", **style)
        ax_roc.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax_roc.legend(loc="lower right")
    else:
        ax_roc.text(0.5, 0.5, f"only {'real' if reals else 'fake'} videos ({len(results)}):\nno ROC curve without "
                    f"both classes", ha="center", va="center", transform=ax_roc.transAxes)
    unscored = {"unreadable": [r for r in results if r.scores is None],
                "no face": [r for r in results if r.scores is not None and r.scores.score() is None]}
    scored = [r for r in results if r.scores is not None and r.scores.score() is not None]
    for label, name in ((0, "real"), (1, "fake")):
        values = [r.score for r in scored if r.item.label == label]
        if values:
            ax_hist.hist(values, bins=20, range=(0, 1), alpha=0.6, label=name)
    notes = [f"{what}: {sum(r.item.label == 0 for r in rs)} real, {sum(r.item.label == 1 for r in rs)} fake"
             for what, rs in unscored.items() if rs]
    if notes:  # at the top, above the bars
        ax_hist.set_ylim(top=max([p.get_height() for p in ax_hist.patches], default=1) * (1.15 + 0.12 * len(notes)))
        ax_hist.text(0.5, 0.97, "not drawn, scored 0.5:\n" + "\n".join(notes), ha="center", va="top",
                     transform=ax_hist.transAxes, bbox=dict(facecolor="white", alpha=0.8, edgecolor="grey"))
    ax_hist.set(xlabel="video score (fake probability)", ylabel="videos", title="video scores", xlim=(0, 1))
    ax_hist.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
    if scored:
        ax_hist.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=80)
    plt.close(fig)


def to_record(r: VideoResult) -> dict:
    """One line of videos.jsonl: a scored video, enough to rebuild its VideoResult."""
    s = r.scores
    return dict(path=str(r.item.path), label=r.item.label, group=r.item.group, error=r.error,
                n_frames=s.n_frames if s else 0, n_wanted=s.n_wanted if s else 0, bad_faces=s.bad_faces if s else 0,
                faces=[[f.frame, f.box, f.score] for f in s.faces] if s else None)


def read_records(out: Path) -> dict[str, VideoResult]:
    """The videos already scored in `out` (every videos*.jsonl, from any number of processes), by path.

    A line cut short by a kill is ignored: that video is scored again."""
    done = {}
    for path in sorted(out.glob("videos*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            scores = None if r["faces"] is None else MediaScores([FaceScore(*f) for f in r["faces"]], r["n_frames"],
                                                                  r["bad_faces"], r["n_wanted"])
            done[r["path"]] = VideoResult(Item(Path(r["path"]), r["label"], r["group"]), scores, r["error"])
    return done


def open_records(path: Path) -> TextIO:
    """videos.jsonl opened for appending; a last line cut short by a kill is ended first, so that it stays alone on
    its line (and is ignored)."""
    cut = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n"
    log = open(path, "a")  # noqa: SIM115 (the caller closes it)
    if cut:
        log.write("\n")
    return log


def _short(value: object) -> str:
    return value[:12] if isinstance(value, str) and len(value) == 64 else json.dumps(value)


def check_settings(out: Path, settings: dict) -> None:
    """Write out/evaluate.json, or check that the run being resumed there scored with the same model file (by
    content) and settings; scores in `out` without an evaluate.json are refused (nothing ties them to a model)."""
    path, fresh = out / "evaluate.json", f"start afresh with another --out (or delete {out})"
    if not path.is_file():
        if any(out.glob("videos*.jsonl")):
            raise UserError(f"{out} holds scored videos (videos*.jsonl) but no evaluate.json, so nothing says which "
                            f"model and settings scored them: {fresh}")
        path.write_text(json.dumps(settings, indent=2))
        return
    before = json.loads(path.read_text())
    changed = [k for k in settings if k != "weights" and before.get(k) != settings[k]]
    if changed:
        what = "; ".join(f"{k} {_short(before.get(k))} there, {_short(settings[k])} now" for k in changed)
        if "model_sha256" in changed:
            what += f" (weights {before.get('weights')} there, {settings['weights']} now)"
        raise UserError(f"{out} holds an evaluation scored with another model or settings ({what}): resume it with "
                        f"the same model file and settings, or {fresh}")


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

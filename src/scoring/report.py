"""An evaluation's outputs: results.json, videos.csv, the printed table and profile, roc.png."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from src.common.plots import pyplot
from src.scoring.metrics import roc
from src.scoring.testsets import VideoResult

_logger = logging.getLogger(__name__)
STAGES = ("decode", "detect", "crop", "model")


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
            fpr, tpr, auc = roc(labels, scores)
            style = dict(color="black", linewidth=2, zorder=3) if group == "all" else dict(linewidth=1.2)
            ax_roc.plot(fpr, tpr, label=f"{group} (AUC {auc:.4f})", **style)
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

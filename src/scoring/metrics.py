"""Video- and frame-level metrics of a scored test set: AUC, AP, EER, accuracy (the only module using scikit-learn)."""
from __future__ import annotations

from typing import Iterable

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from src.common.layout import MANIPULATIONS
from src.scoring.testsets import VideoResult


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


def roc(labels: list[int], scores: list[float]) -> tuple[np.ndarray, np.ndarray, float]:
    """The ROC curve's false and true positive rates, and its AUC."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr, roc_auc_score(labels, scores)


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

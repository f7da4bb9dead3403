"""Fake probabilities of images and videos, per face and overall, and their pictures: the library of src.predict."""
from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from src.common.logs import UserError
from src.common.plots import pyplot
from src.faces.detectors import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    FaceDetector,
    UnreadableMedia,
    choose_detector,
    is_image,
    list_media,
    make_detector,
    read_frame_batches,
)
from src.scoring.score import FaceScore, MediaScores, load_scorer, score_media


def draw_faces(rgb: np.ndarray, faces: list[FaceScore]) -> np.ndarray:
    """A BGR copy of `rgb` with each face's box and fake probability (red above 0.5, green below), else a note."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    thick = max(2, round(max(rgb.shape[:2]) / 400))
    if not faces:
        cv2.putText(bgr, "no face found", (4 * thick, 12 * thick), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick,
                    (0, 220, 255), thick)
    for f in faces:
        x0, y0, x1, y1 = (round(v) for v in f.box)
        colour = (40, 40, 230) if f.score > 0.5 else (60, 200, 60)
        cv2.rectangle(bgr, (x0, y0), (x1, y1), colour, thick)
        cv2.putText(bgr, f"fake {f.score:.2f}", (x0, max(y0 - 3 * thick, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, colour, thick)
    return bgr


def save_visuals(path: str | Path, scores: MediaScores, frames: Iterable[list[tuple[int, np.ndarray]]],
                 folder: Path) -> None:
    """The scored frames of `path` (its decoded frame batches, `frames`) with their faces drawn, and for a video its
    frame scores over time, or "no face found" where none was."""
    path, folder = Path(path), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if is_image(path):
        for _, rgb in chain.from_iterable(frames):
            cv2.imwrite(str(folder / f"{path.stem}.png"), draw_faces(rgb, scores.faces))
        return
    (folder / path.stem).mkdir(exist_ok=True)
    read = []
    for index, rgb in chain.from_iterable(frames):
        cv2.imwrite(str(folder / path.stem / f"{index:06d}.png"),
                    draw_faces(rgb, [f for f in scores.faces if f.frame == index]))
        read.append(index)
    plt = pyplot()

    per_frame = sorted(scores.frame_scores().items())
    score = scores.score()
    fig, ax = plt.subplots(figsize=(6, 2.5))
    if score is None:  # no 0.5 line nor any point: nothing here is a fake probability
        ax.text(0.5, 0.5, f"no face found in {len(read)} frame(s): no fake probability", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xlim(min(read, default=0), max(read, default=0) + 1)
    else:
        ax.axhline(0.5, color="grey", linestyle=":")
        ax.plot([i for i, _ in per_frame], [p for _, p in per_frame], marker="o")
    ax.set(xlabel="frame", ylabel="fake probability", ylim=(0, 1),
           title=f"{path.name}: {'no face found' if score is None else f'fake probability {score:.3f}'}")
    fig.tight_layout()
    fig.savefig(folder / f"{path.stem}_scores.png", dpi=80)
    plt.close(fig)


def predict(paths: list[str], detector: FaceDetector, model: nn.Module, size: int, frames: int = 32,
            device: str | torch.device = "cpu", batch_size: int | None = None, save_vis: str | Path | None = None
            ) -> list[dict]:
    """One dict per input: input, fake_probability (None without a face), frames read, faces, error."""
    out = []
    for path in paths:
        try:
            decoded = list(read_frame_batches(path, frames)) if save_vis else None  # decoded once, drawn after
            s = score_media(path, detector, model, size, frames, device, batch_size, batches=decoded)
            if save_vis:
                save_visuals(path, s, decoded, Path(save_vis))
        except UnreadableMedia as e:
            out.append(dict(input=path, fake_probability=None, frames=0, bad_faces=0, faces=[], error=str(e)))
            continue
        out.append(dict(input=path, fake_probability=s.score(), frames=s.n_frames, bad_faces=s.bad_faces,
                        faces=[dict(frame=f.frame, box=f.box, fake_probability=f.score) for f in s.faces], error=None))
    return out


def print_human(results: list[dict]) -> None:
    """One line per input with the verdict, then one line per face."""
    for r in results:
        p = r["fake_probability"]
        if r["error"]:
            print(f"{r['input']}: ERROR {r['error']}")
            continue
        if p is None:
            print(f"{r['input']}: no face found in {r['frames']} frame(s)")
            continue
        verdict = "FAKE" if p > 0.5 else "real"
        print(f"{r['input']}: fake probability {p:.3f} ({verdict}); "
              f"{len(r['faces'])} face(s) in {r['frames']} frame(s)")
        for f in r["faces"]:
            box = ", ".join(f"{v:.0f}" for v in f["box"])
            print(f"  frame {f['frame']:>5}  face at ({box}): {f['fake_probability']:.3f}")


def expand_inputs(inputs: list[str]) -> list[str]:
    """The inputs with each folder replaced by the images and videos under it; a missing input or a folder without
    any is an error."""
    paths = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = list_media(path)
            if not found:
                raise UserError(f"{path} is a folder without any image or video in it (searched recursively for "
                                f"{' '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
            paths += map(str, found)
        elif path.is_file():
            paths.append(name)
        else:
            raise UserError(f"no such file or folder: {name}")
    return paths


def predict_inputs(inputs: list[str], weights: str, runtime: str = "torch", frames: int = 32,
                   detector_name: str | None = None, shape_predictor: str | None = None,
                   retinaface_weights: str | None = None, batch_size: int | None = None, device: str = "cpu",
                   save_vis: str | None = None) -> list[dict]:
    """src.predict's run: `predict` on the inputs (each folder's images and videos) with the classifier in `weights`
    and, unless `detector_name` says otherwise, the face detector of its training data."""
    inputs = expand_inputs(inputs)
    model, size, faces = load_scorer(weights, runtime)
    detector = make_detector(choose_detector(detector_name, faces), shape_predictor,
                             retinaface_weights=retinaface_weights, device=device)
    device = torch.device(device)
    return predict(inputs, detector, model.to(device), size, frames, device, batch_size, save_vis)

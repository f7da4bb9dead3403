"""An evaluation's resume records: each scored video appended to videos.jsonl, read back, and the settings a resume
must match (evaluate.json)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO

from src.common.logs import UserError
from src.scoring.score import FaceScore, MediaScores
from src.scoring.testsets import Item, VideoResult


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

"""The paper-style table of several src.evaluate results: reading results.json, grouping, the markdown table."""
from __future__ import annotations

import glob
import json
import sys
from collections import Counter
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from src.common.logs import UserError

METRICS = {"auc": "video_auc", "ap": "ap", "eer": "eer"}  # --metric -> results.json key (fractions)
NUMBERS = ("video_auc", "frame_auc", "ap", "eer", "acc", "n_videos")  # compared between copies of one result
NUMBER = (float, type(None))  # a metric: None with a single class
REQUIRED = {"dataset": str, "root": str, "weights": str, "frames": int, "compression": str, "detector": dict,
            "video_auc": NUMBER, "ap": NUMBER, "eer": NUMBER, "n_videos": int}
KINDS = {str: "a string", int: "an integer", dict: "an object", NUMBER: "a number or null"}
NAMES = {"ff": "FF++", "cdf": "CDF", "dfd": "DFD", "dfdc": "DFDC", "dfdcp": "DFDCP", "ffiw": "FFIW", "folder": "folder"}
# video-level AUC (%) of the SBI EfficientNet-B4 checkpoints as the SBI GitHub repository's README publishes them
# (RetinaFace at 2048 px, 32 frames, DFD raw); the guide's section 9 prints the same table
PUBLISHED = {
    "FFraw.tar": {"cdf": 93.82, "dfd": 97.87, "dfdc": 73.01, "dfdcp": 85.70, "ffiw": 84.52},
    "FFc23.tar": {"cdf": 92.87, "dfd": 98.16, "dfdc": 71.96, "dfdcp": 85.51, "ffiw": 83.22},
}
PUBLISHED_SOURCE = "published (SBI repository README)"
PUBLISHED_PROTOCOL = dict(frames=32, detector={"detector": "retinaface", "max_size": 2048})


@dataclass
class Result:
    file: Path
    data: dict

    @property
    def model(self) -> str:
        """What identifies the model: its weights file's sha256, else its --weights path."""
        return self.data.get("model_sha256") or self.data["weights"]

    @property
    def column(self) -> tuple:
        """The test set and protocol: dataset, root, compression (ff and dfd only), frames, detector."""
        d = self.data
        compression = d["compression"] if d["dataset"] in ("ff", "dfd") else ""
        return d["dataset"], d["root"], compression, d["frames"], json.dumps(d["detector"], sort_keys=True)


def run_files(args: list[str]) -> list[Path]:
    """The results.json of each argument: an evaluate run folder, a results.json, or a glob of either (whose folders
    without a results.json, evaluations not finished, are skipped with a note)."""
    files = []
    for arg in args:
        if Path(arg).exists():
            file = Path(arg) / "results.json" if Path(arg).is_dir() else Path(arg)
            if not file.is_file():
                raise UserError(f"{arg} has no results.json (an evaluation not finished?): rerun its src.evaluate "
                                f"command to finish it, or leave it out")
            files.append(file)
            continue
        matches = [Path(p) for p in sorted(glob.glob(arg))]  # folders, and results.json files (not a summary's)
        paths = [p / "results.json" for p in matches if p.is_dir()] + [p for p in matches if p.name == "results.json"]
        found = [p for p in paths if p.is_file()]
        if not found:
            raise UserError(f"no results.json found for '{arg}': give src.evaluate run folders (e.g. "
                            f"output/evaluate_*) or their results.json files")
        if len(found) < len(paths):
            print(f"note: '{arg}': skipped {len(paths) - len(found)} folder(s) without a results.json, e.g. "
                  f"{next(p.parent for p in paths if not p.is_file())}", file=sys.stderr)
        files += found
    return list(dict.fromkeys(files))


def read_result(file: Path) -> Result:
    """One results.json of src.evaluate, checked for the keys the table reads."""
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{file} is not valid JSON ({e}): rerun its evaluation or leave it out") from None
    if not isinstance(data, dict):
        raise UserError(f"{file} is not a results.json of src.evaluate (not a JSON object): leave it out")
    for key, kind in REQUIRED.items():
        if key not in data:
            raise UserError(f"{file} is not a results.json of src.evaluate (no '{key}'): rerun its evaluation with "
                            f"the current src.evaluate or leave it out")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise UserError(f"{file}: '{key}' is {data[key]!r}, not {KINDS[kind]}: rerun its evaluation or leave it "
                            f"out")
    if data["dataset"] not in NAMES:
        raise UserError(f"{file}: unknown dataset '{data['dataset']}' (src.evaluate's are {', '.join(NAMES)}): leave "
                        f"it out")
    return Result(file, data)


def model_name(weights: str) -> str:
    """A short name: the run folder of output/<run>/weights/BEST.pth (with the file name if not BEST.pth), else the
    file name."""
    p = Path(weights)
    if p.parent.name == "weights" and len(p.parts) >= 3:
        run = p.parts[-3]
        return run if p.name == "BEST.pth" else f"{run}/{p.name}"
    return p.name


def detector_text(detector: dict) -> str:
    """'retinaface' for the protocol's RetinaFace at 2048 px, else the name with its settings."""
    extra = {k: v for k, v in detector.items() if k != "detector"}
    if detector.get("detector") == "retinaface" and extra == {"max_size": 2048}:
        return "retinaface"
    return " ".join([str(detector.get("detector"))] + [f"{k}={v}" for k, v in sorted(extra.items())])


def column_headers(columns: list[tuple]) -> dict[tuple, str]:
    """The dataset's name (with its compression for ff and dfd), and what differs when several columns share it or
    when the column departs from the published protocol (its frames, its detector): a written table says it too."""
    base = {c: NAMES.get(c[0], c[0]) + (f" {c[2]}" if c[2] else "") for c in columns}
    headers = {}
    for c in columns:
        twins = [d for d in columns if base[d] == base[c]]
        differ = []
        if len({d[1] for d in twins}) > 1:
            differ.append(c[1])
        if len({d[3] for d in twins}) > 1 or c[3] != PUBLISHED_PROTOCOL["frames"]:
            differ.append(f"{c[3]} frames")
        if len({d[4] for d in twins}) > 1 or json.loads(c[4]) != PUBLISHED_PROTOCOL["detector"]:
            differ.append(detector_text(json.loads(c[4])))
        headers[c] = base[c] + (f" ({', '.join(differ)})" if differ else "")
    return headers


def is_published_protocol(column: tuple) -> bool:
    dataset, _, compression, frames, detector = column
    return (frames == PUBLISHED_PROTOCOL["frames"] and json.loads(detector) == PUBLISHED_PROTOCOL["detector"]
            and (dataset != "dfd" or compression == "raw"))


def check_copies(results: list[Result]) -> list[Result]:
    """One result per model and column: copies with the same numbers are merged, different numbers refused."""
    kept: dict[tuple, Result] = {}
    for r in results:
        key = (r.model, r.column)
        if key not in kept:
            kept[key] = r
            continue
        first = kept[key]
        if any(first.data.get(k) != r.data.get(k) for k in NUMBERS):
            settings = sorted(k for k in set(first.data) | set(r.data)
                              if k not in NUMBERS and not isinstance(first.data.get(k, r.data.get(k)), (dict, list))
                              and first.data.get(k) != r.data.get(k))
            raise UserError(f"{first.file} and {r.file} hold different numbers for the same model "
                            f"({model_name(r.data['weights'])}) on the same test set"
                            f"{' (they differ in ' + ', '.join(settings) + ')' if settings else ''}: "
                            f"keep one of them (move the other run folder away)")
    return list(kept.values())


def pick_teacher(results: list[Result], pattern: str) -> str | None:
    """The model key of the teacher: the one model whose --weights path matches `pattern` (None if none does)."""
    found = list(dict.fromkeys(r.model for r in results if fnmatch(r.data["weights"], pattern)))
    if len(found) > 1:
        names = sorted({r.data["weights"] for r in results if r.model in found})
        raise UserError(f"--teacher '{pattern}' matches {len(found)} models ({', '.join(names)}): name one with a "
                        f"narrower --teacher")
    return found[0] if found else None


def build_table(results: list[Result], metric: str, teacher: str | None) -> tuple[list[str], list[list[str]]]:
    """The header and rows (model, figures, then one cell per column; values in %, '' where none)."""
    key = METRICS[metric]
    columns = sorted({r.column for r in results},  # the paper's order; within a dataset, the published protocol first
                     key=lambda c: (list(NAMES).index(c[0]), not is_published_protocol(c), c))
    headers = column_headers(columns)
    cell = {(r.model, r.column): r.data[key] for r in results}
    models = list(dict.fromkeys(r.model for r in results))
    if teacher is not None:
        models = [teacher] + [m for m in models if m != teacher]
    weights = {r.model: r.data["weights"] for r in reversed(results)}
    names = {m: model_name(weights[m]) for m in models}
    counts = Counter(names.values())
    for m in models:  # two models of one name (a glob that matched another run later): tell them apart
        if counts[names[m]] > 1:
            names[m] += f" ({weights[m]})" if m == weights[m] else f" (sha256 {m[:8]})"

    def pct(value: float | None) -> str:
        return "" if value is None else f"{100 * value:.2f}"

    rows = []
    published = [f for f in PUBLISHED if any(Path(weights[m]).name == f for m in models)] or ["FFc23.tar"]
    if metric == "auc":
        for file in published:
            rows.append([file, PUBLISHED_SOURCE] + [f"{PUBLISHED[file][c[0]]:.2f}" if c[0] in PUBLISHED[file]
                                                     and is_published_protocol(c) else "" for c in columns])
    for m in models:
        rows.append([names[m], "teacher, evaluated here" if m == teacher else "evaluated here"]
                    + [pct(cell.get((m, c))) for c in columns])
        diffs = [None if teacher in (None, m) or cell.get((m, c)) is None or cell.get((teacher, c)) is None
                 else cell[(m, c)] - cell[(teacher, c)] for c in columns]
        if any(d is not None for d in diffs):
            rows.append([names[m], "minus teacher (points)"] + ["" if d is None else f"{100 * d:+.2f}" for d in diffs])
    return ["model", "figures"] + [headers[c] for c in columns], rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell or "–" for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"

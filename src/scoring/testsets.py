"""The test sets: each release's list of test videos (path, label, group) read in its own layout, and a video's
result."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

from src.common.layout import MANIPULATIONS, split_videos, videos_dir
from src.common.logs import BadInput, MissingFile, UserError, read_json
from src.faces.detectors import list_media
from src.scoring.score import MediaScores


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


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise MissingFile(f"{path} not found: {what}")
    return path


def _videos(folder: Path, what: str) -> list[Path]:
    return sorted(_need(folder, what).glob("*.mp4"))


def ff_items(root: Path, compression: str) -> list[Item]:
    """FF++ test split: its 140 real videos and, per manipulation, the 140 fakes of its pairs (a_b and b_a)."""
    pairs = read_json(root / "test.json", "FF++'s official test split")
    reals = [Item(videos_dir(root, "youtube", compression) / f"{v}.mp4", 0, "real") for v in split_videos(root, "test")]
    fakes = [Item(videos_dir(root, m, compression) / f"{x}_{y}.mp4", 1, m)
             for m in MANIPULATIONS for a, b in pairs for x, y in ((a, b), (b, a))]
    return reals + fakes


def dfd_items(root: Path, compression: str) -> list[Item]:
    """DeepFakeDetection (shipped with FF++): actors' real videos vs DeepFakeDetection fakes."""
    real = _videos(videos_dir(root, "actors", compression), "DFD's real videos (FF++ -d DFD)")
    fake = _videos(videos_dir(root, "DeepFakeDetection", compression), "DFD's fake videos")
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

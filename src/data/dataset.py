"""The SBI dataset: real FF++ frames in, (real, self-blended fake) pairs out."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from src.common.config import Config
from src.common.layout import SPLITS, split_videos, video_dir
from src.common.logs import MissingFile, UserError
from src.common.timing import Stopwatch
from src.data.sbi import augment, pair_transform, self_blend, source_transform
from src.data.synthetic import generate_dataset
from src.faces.detectors import DETECTOR_FOR_DATA, FACES_FILE, read_face_source
from src.faces.geometry import BadSample, box_crop, choose_box, flip_points, landmark_bounds, reorder_forehead

_logger = logging.getLogger(__name__)
MAX_TRIES = 10  # replacements tried for one item, and blend resamples tried for one frame
_WARNED_68: set[str] = set()  # data roots whose 68-point landmarks were already reported
REGIONS_SOURCE = "source.json"  # in regions/: the faces.json that the regions' frames and landmarks were made with


class DataQualityError(UserError, RuntimeError):
    """More samples failed than the config allows (`max_bad_fraction`)."""


@dataclass
class Sample:
    real: np.ndarray  # float32 CHW in [0, 1]
    fake: np.ndarray
    mask: np.ndarray  # float32 HW in [0, 1], the blend weight of the source
    mask_type: str
    failures: list  # (path, reason) of the frames that failed before this one was made


def list_frames(root: str | Path, split: str, compression: str, frames_per_video: int,
                layout: str = "frames") -> list[Path]:
    """Per video of the split, `frames_per_video` frames at round(linspace); frames without landmarks are dropped.

    `layout` names the folder of images beside landmarks/ and retina/: frames/ or regions/."""
    base = video_dir(root, compression)
    if layout == "regions" and (base / "regions").is_dir():
        check_regions_source(base, f"make them again: python -m src.regions --root {root} --compression {compression}")
    frames, missing_video, missing_files, stale = [], 0, 0, []
    for vid in split_videos(root, split):
        paths = sorted((base / layout / vid).glob("*.png" if layout == "frames" else "*.npz"))
        if layout == "regions" and paths and not regions_match_frames(base, vid):
            stale.append(vid)
        if not paths:
            missing_video += 1
            continue
        if frames_per_video < len(paths):
            paths = [paths[round(i)] for i in np.linspace(0, len(paths) - 1, frames_per_video)]
        for p in paths:
            if _aux_path(p, "landmarks").is_file() and _aux_path(p, "retina").is_file():
                frames.append(p)
            else:
                missing_files += 1
    if stale:
        raise UserError(f"the face regions of {len(stale)} video(s) of the {split} split (e.g. "
                        f"{base / 'regions' / stale[0]}) list other frames than frames/ (preprocessed again since?): "
                        f"run python -m src.regions --root {root} --compression {compression} again (it makes those "
                        f"videos again)")
    if missing_video or missing_files:
        _logger.warning("%s split: %d video(s) without frames, %d frame(s) without landmark/retina file (dropped)",
                        split, missing_video, missing_files)
    if not frames:
        hint = f"; make it with python -m src.regions --root {root} --compression {compression}" \
            if layout == "regions" else ""
        raise MissingFile(f"the {split} split has no usable frames: looked in {base / layout} for the videos "
                                f"of {Path(root) / (split + '.json')} (and their landmarks/ and retina/ files){hint}")
    return frames


def faces_digest(base: Path) -> str | None:
    """sha256 of `base`/faces.json; None without one (the SBI reference's preprocessing)."""
    path = base / FACES_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def check_regions_source(base: Path, fix: str) -> None:
    """Refuse regions/ cut from another preprocessing of `base` than its faces.json says (`fix`: how to redo them)."""
    path = base / "regions" / REGIONS_SOURCE
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    if FACES_FILE not in recorded or recorded[FACES_FILE] != faces_digest(base):
        raise UserError(f"{base / 'regions'} was cut from another preprocessing than {base / FACES_FILE} records (or "
                        f"by an older src.regions): delete {base / 'regions'} and {fix}")


def regions_match_frames(base: Path, vid: str) -> bool:
    """Whether regions/<vid> holds one region per frame of frames/<vid> (trivially so without frames/)."""
    if not (base / "frames").is_dir():
        return True
    return sorted(p.stem for p in (base / "regions" / vid).glob("*.npz")) == sorted(
        p.stem for p in (base / "frames" / vid).glob("*.png"))


def _aux_path(frame: Path, kind: str) -> Path:
    return frame.parents[2] / kind / frame.parent.name / (frame.stem + ".npy")


def _load_points(path: Path, what: str, shapes: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BadSample(f"unreadable {what} file ({type(e).__name__}: {e})") from None
    if arr.ndim != 3 or len(arr) == 0 or arr.shape[1] not in shapes or arr.shape[2] != 2:
        raise BadSample(f"{what} file has shape {arr.shape}; expected (n_faces>=1, {' or '.join(map(str, shapes))}, 2)")
    return arr


def _resize_chw(img: np.ndarray, size: int) -> np.ndarray:
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    return np.divide(chw, 255, out=chw)


class SBIDataset(Dataset):
    """Real frames of one FF++ split; item i is a (real, fake) pair made by self-blending frame i.

    Train items are random (seeded by seed, epoch and index: see `set_epoch`); val/test items are fixed per index.
    """

    def __init__(self, root: str | Path, split: str, image_size: int, compression: str = "c23",
                 frames_per_video: int = 8, mask_type: str = "random", seed: int = 5, layout: str = "frames"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not '{split}'")
        self.frames, self.layout = list_frames(root, split, compression, frames_per_video, layout), layout
        self.faces = read_face_source(video_dir(root, compression))  # which detector and landmarks made the data
        self.train, self.image_size, self.mask_type = split == "train", image_size, mask_type
        self.seed, self.epoch = seed, 0
        self.source_aug, self.pair_aug = source_transform(), pair_transform()
        self.profile = None  # a defaultdict(float) here collects seconds per stage (src.bench_data)
        n_points = _load_points(_aux_path(self.frames[0], "landmarks"), "landmark", (68, 81)).shape[1]
        if n_points == 68 and str(root) not in _WARNED_68:  # once per run, not once per split
            _WARNED_68.add(str(root))
            _logger.warning("68-point landmarks in %s: no forehead points, so blend masks stop at the brows "
                            "(the released SBI teacher used the 81-point model)", video_dir(root, compression))

    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int) -> None:
        """Train samples of each epoch differ; call before the DataLoader iterates (workers copy the dataset)."""
        self.epoch = epoch

    def _rng(self, index: int, attempt: int = 0) -> np.random.Generator:
        """Item `index`'s stream; its `attempt`-th replacement (after a bad frame) draws from a stream of its own."""
        key = (self.seed, self.epoch, index) if self.train else (self.seed, index)
        return np.random.default_rng((*key, attempt) if attempt else key)

    def _image(self, path: Path) -> tuple[np.ndarray, list[int]]:
        """The BGR image of a frame or face region, and where it lies in its frame: x0, y0, frame width, height."""
        if self.layout == "frames":
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise BadSample("missing or unreadable frame")
            return img, [0, 0, img.shape[1], img.shape[0]]
        try:
            with np.load(path, allow_pickle=False) as region:
                img, where = region["image"], region["where"]
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise BadSample(f"unreadable face region ({type(e).__name__}: {e}): run python -m src.regions again") \
                from None
        if img.size == 0:  # src.regions keeps an unreadable frame's place, as the frames layout lists it
            raise BadSample("missing or unreadable frame")
        return img, where.reshape(4).tolist()

    def make(self, index: int, rng: np.random.Generator) -> Sample:
        """Build the pair of frame `index` (raises BadSample when its files cannot make one)."""
        path, watch = self.frames[index], Stopwatch(self.profile)
        img, (ox, oy, width, height) = self._image(path)  # BGR; to RGB after the first crop (cheaper)
        landmark = _load_points(_aux_path(path, "landmarks"), "landmark", (68, 81))[0].astype(np.int32)
        box = choose_box(landmark, _load_points(_aux_path(path, "retina"), "retina", (7,)).astype(np.float32))
        landmark = reorder_forehead(landmark)
        watch.lap("decode")
        flip = self.train and rng.random() < 0.5
        if flip:  # the mirrored frame's first crop is these columns of the frame, read right to left
            landmark, box = flip_points(landmark, box, width)
        x0, y0, x1, y1 = landmark_bounds(landmark, width, height)
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise BadSample("landmarks lie outside the image")
        left, right = (width - x1, width - x0) if flip else (x0, x1)
        if left < ox or y0 < oy or right - ox > img.shape[1] or y1 - oy > img.shape[0]:
            raise BadSample("its face region does not hold the crop its landmarks need (regions made from other "
                            "landmarks?): run python -m src.regions again")
        face = img[y0 - oy:y1 - oy, left - ox:right - ox]
        img, landmark, box = cv2.cvtColor(face[:, ::-1] if flip else face, cv2.COLOR_BGR2RGB), landmark - [x0, y0], \
            box - [x0, y0]
        watch.lap("crops")
        for _ in range(MAX_TRIES):  # an empty blend mask is resampled, never divided by
            try:
                real, fake, mask, kind = self_blend(img, landmark, rng, self.mask_type, self.source_aug)
                break
            except BadSample as e:
                reason = str(e)
        else:
            raise BadSample(f"{reason} in {MAX_TRIES} tries")
        watch.lap("blend")
        if self.train:
            out = augment(self.pair_aug, rng, image=fake, image1=real)
            fake, real = out["image"], out["image1"]
        watch.lap("augment")
        x0, y0, x1, y1 = box_crop(real, box, rng if self.train else None)
        crop = np.s_[y0:y1, x0:x1]
        sample = Sample(_resize_chw(real[crop], self.image_size), _resize_chw(fake[crop], self.image_size),
                        cv2.resize(mask[crop], (self.image_size,) * 2), kind, [])
        watch.lap("resize")
        return sample

    def __getitem__(self, index: int) -> Sample:
        """The pair of frame `index`, or of a replacement frame if that one is bad (the failure travels along).

        The replacement (train: a random frame; val/test: the next one) and its sample are drawn from the item's own
        key and the attempt, (seed, epoch, index, attempt), so it is no copy of the replacing frame's own item."""
        failures, frame = [], index
        for attempt in range(MAX_TRIES):
            rng = self._rng(index, attempt)
            if attempt:
                frame = int(rng.integers(len(self))) if self.train else (index + attempt) % len(self)
            try:
                sample = self.make(frame, rng)
                sample.failures = failures
                return sample
            except BadSample as e:
                failures.append((str(self.frames[frame]), str(e)))
        raise DataQualityError(f"{MAX_TRIES} bad samples in a row, e.g. {failures[-1][0]}: {failures[-1][1]}")


def collate_pairs(batch: list[Sample]) -> dict:
    """B pairs -> 2B images: B reals (label 0) then B fakes (label 1)."""
    images = np.stack([s.real for s in batch] + [s.fake for s in batch])
    return {"images": torch.from_numpy(images),
            "labels": torch.tensor([0] * len(batch) + [1] * len(batch)),
            "failures": [f for s in batch for f in s.failures]}


class BadSampleTracker:
    """Counts failed samples per epoch, logs each bad file once, and says when they pass `max_fraction`."""

    def __init__(self, max_fraction: float):
        self.max_fraction, self.seen, self.failed, self.total = max_fraction, set(), 0, 0

    def update(self, failures: list, n_ok: int) -> None:
        self.failed += len(failures)
        self.total += len(failures) + n_ok
        for path, reason in failures:
            if path not in self.seen:
                self.seen.add(path)
                _logger.warning("bad sample skipped and replaced: %s (%s)", path, reason)

    def exceeded(self, final: bool = False) -> bool:
        """More failures than allowed: from 200 samples on, or at any count when `final` (the epoch's end)."""
        return (final or self.total >= 200) and self.failed > self.max_fraction * self.total

    def check(self, final: bool = False) -> None:
        if self.exceeded(final):
            raise DataQualityError(
                f"{self.failed} of {self.total} samples failed ({self.failed / self.total:.1%} > max_bad_fraction "
                f"{self.max_fraction:.1%}); the warnings above name the files. Fix or re-run preprocessing for them, "
                f"or raise max_bad_fraction in the config.")

    def end_epoch(self) -> int:
        """Reset for the next epoch and return the number of failed samples (call `check(final=True)` first)."""
        failed, self.failed, self.total = self.failed, 0, 0
        return failed


def ensure_data(cfg: Config) -> Path:
    """The data root; generated with src.synthetic on first use when the config marks its data as synthetic."""
    root = Path(cfg.data_root)
    if root.exists():
        return root
    if cfg.synthetic_data:
        _logger.info("synthetic data root %s is missing: generating it", root)
        return generate_dataset(root, videos=cfg.synthetic_videos, compression=cfg.compression, seed=cfg.seed)
    raise MissingFile(f"data root '{root}' does not exist. Preprocess FaceForensics++ into it first "
                            f"(see KNOWLEDGE_DISTILLATION_GUIDE.md, 'Data'), or set data_root in the config.")


def check_teacher_faces(teacher: dict, cfg: Config) -> None:
    """Refuse (or with allow_teacher_face_mismatch warn) when the faces.json record of the teacher's training data
    (`teacher`) and the data's name different face detectors: the teacher would score crops unlike its training's."""
    base = video_dir(ensure_data(cfg), cfg.compression)
    data = read_face_source(base)
    if DETECTOR_FOR_DATA.get(teacher["detector"]) == DETECTOR_FOR_DATA.get(data["detector"]):
        return
    message = (f"the teacher {cfg.teacher_weights} was trained on faces found by {teacher['detector']}, "
               f"but {base / FACES_FILE} "
               f"says the student's data was made with {data['detector']}: the face boxes, so the crops the teacher "
               f"scores, differ from its training's and its soft labels are less reliable")
    if not cfg.allow_teacher_face_mismatch:
        raise UserError(f"{message}. Preprocess data_root with --detector {teacher['detector']}, or distil anyway "
                        f"with --set allow_teacher_face_mismatch=true")
    _logger.warning("%s (distilling anyway: allow_teacher_face_mismatch)", message)


def build_dataset(cfg: Config, split: str) -> SBIDataset:
    return SBIDataset(ensure_data(cfg), split, cfg.image_size, cfg.compression, cfg.frames_per_video,
                      cfg.mask_type, cfg.seed, cfg.data_layout)

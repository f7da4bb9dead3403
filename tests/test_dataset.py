"""The SBI dataset on generated FF++-layout data: pairs, determinism, 68 points, and bad-data handling."""
import json
import logging
import shutil
from collections import Counter
from itertools import product

import numpy as np
import pytest
import torch

import main_distillation
from src.common.config import Config, ConfigError
from src.common.layout import REFERENCE_FACES
from src.common.logs import UserError
from src.data.dataset import (
    BadSampleTracker,
    DataQualityError,
    SBIDataset,
    check_teacher_faces,
    collate_pairs,
    ensure_data,
    list_frames,
    video_dir,
)
from src.data.synthetic import generate_dataset
from src.faces.detectors import FACES_FILE
from src.models.networks import create_classifier, training_faces

from draws import assert_binomial, assert_pair_patterns

SIZE = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("ff") / "data", videos=6, frames=3, frame_size=(160, 128),
                            face_size=60)


@pytest.fixture()
def copy(root, tmp_path):
    """A private copy of the data that a test may damage."""
    return shutil.copytree(root, tmp_path / "data")


def test_items_are_float_pairs_and_collate_puts_reals_first(root):
    ds = SBIDataset(root, "train", SIZE)
    s = ds[0]
    assert s.real.shape == s.fake.shape == (3, SIZE, SIZE) and s.real.dtype == s.fake.dtype == np.float32
    assert 0 <= s.real.min() and s.real.max() <= 1 and np.abs(s.fake - s.real).max() > 0
    batch = collate_pairs([ds[i] for i in range(3)])
    assert batch["images"].shape == (6, 3, SIZE, SIZE) and batch["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(batch["images"][3].numpy(), ds[0].fake)


def test_split_uses_linspace_frames_of_its_videos(root):
    frames = list_frames(root, "val", "c23", 2)
    ids = {v for pair in json.loads((root / "val.json").read_text()) for v in pair}
    assert {f.parent.name for f in frames} == ids
    assert sorted({f.name for f in frames}) == ["000.png", "002.png"]  # round(linspace(0, 2, 2))


def test_val_samples_are_fixed_and_train_samples_vary_by_epoch(root):
    val_a, val_b = SBIDataset(root, "val", SIZE), SBIDataset(root, "val", SIZE)
    val_b.set_epoch(7)
    for i in range(len(val_a)):
        assert np.array_equal(val_a[i].fake, val_b[i].fake) and np.array_equal(val_a[i].real, val_b[i].real)
    train = SBIDataset(root, "train", SIZE)
    train.set_epoch(1)
    first = train[0].fake
    assert np.array_equal(first, train[0].fake)
    train.set_epoch(2)
    assert not np.array_equal(first, train[0].fake)


class Recorder:
    """Stands in for a composition of the dataset and keeps what each call applied."""

    def __init__(self, compose):
        self.compose, self.calls = compose, []
        compose.save_applied_params = True

    def set_random_state(self, *generators) -> None:
        self.compose.set_random_state(*generators)

    def __call__(self, **images) -> dict:
        out = self.compose(**images)
        self.calls.append(dict(out["applied_transforms"]))
        return out


def test_random_decisions_of_a_train_sample_are_independent(root):
    ds = SBIDataset(root, "train", 32)
    ds.pair_aug, ds.source_aug = Recorder(ds.pair_aug), Recorder(ds.source_aug)
    kinds = []
    for epoch in range(600 // len(ds) + 1):
        ds.set_epoch(epoch)
        kinds += [ds[i].mask_type for i in range(len(ds))]
    pair, source = ds.pair_aug.calls, ds.source_aug.calls
    assert len(pair) == len(source) == len(kinds) >= 600  # no bad samples: one blend and one pair augmentation each
    assert_pair_patterns(pair)
    jpeg = Counter((k, "ImageCompression" in p) for k, p in zip(kinds, pair))
    for kind, on in product(("hull", "dfl_full", "extended", "components"), (False, True)):
        assert_binomial(jpeg[(kind, on)], len(kinds), 0.25 * 0.5)
    shifts = Counter(("LegacyRGBShift" in s, "LegacyRGBShift" in p) for s, p in zip(source, pair))
    for a, b in product((False, True), repeat=2):
        assert_binomial(shifts[(a, b)], len(pair), (0.3 if a else 0.7) * (0.3 if b else 0.7))


def test_68_point_landmarks_work_with_one_warning(tmp_path, caplog):
    root = generate_dataset(tmp_path / "d68", videos=6, frames=2, frame_size=(160, 128), face_size=60,
                            n_landmarks=68)
    with caplog.at_level(logging.WARNING):
        ds = SBIDataset(root, "train", SIZE)
        SBIDataset(root, "val", SIZE)
        kinds = {ds[i].mask_type for i in range(len(ds))}
    assert sum("68-point" in r.message for r in caplog.records) == 1
    assert kinds


def _frame(root, split="train", i=0):
    return list_frames(root, split, "c23", 8)[i]


@pytest.mark.parametrize("damage, reason", [
    (lambda f: f.write_bytes(b"not a png"), "unreadable frame"),
    (lambda f: f.unlink(), "unreadable frame"),
    (lambda f: (f.parents[2] / "landmarks" / f.parent.name / f"{f.stem}.npy").write_bytes(b"junk"),
     "unreadable landmark"),
    (lambda f: (f.parents[2] / "landmarks" / f.parent.name / f"{f.stem}.npy").unlink(), "unreadable landmark"),
    (lambda f: np.save(f.parents[2] / "retina" / f.parent.name / f"{f.stem}.npy",
                       np.full((1, 7, 2), 5000, np.float32)), "outside the image"),
    (lambda f: np.save(f.parents[2] / "landmarks" / f.parent.name / f"{f.stem}.npy",
                       np.full((1, 81, 2), -500, np.int32)), "outside the image"),
])
def test_bad_sample_is_replaced_and_reported(copy, damage, reason):
    ds = SBIDataset(copy, "val", SIZE)
    bad = ds.frames[0]
    damage(bad)
    s = ds[0]
    assert len(s.failures) == 1 and s.failures[0][0] == str(bad) and reason in s.failures[0][1]
    assert np.isfinite(s.fake).all() and np.array_equal(s.fake, ds.make(1, ds._rng(0, 1)).fake)  # the next frame
    assert not np.array_equal(s.fake, ds[1].fake)  # in a blend of its own


def test_a_replacement_is_reproducible_and_no_copy_of_another_item(copy):
    ds = SBIDataset(copy, "train", SIZE)
    ds.frames[0].write_bytes(b"not a png")
    for epoch in range(3):
        ds.set_epoch(epoch)
        replaced = ds[0]
        assert replaced.failures and np.array_equal(replaced.fake, ds[0].fake)
        assert not any(np.array_equal(replaced.fake, ds[i].fake) for i in range(1, len(ds)))


def test_tracker_aborts_past_the_allowed_fraction(caplog):
    tracker = BadSampleTracker(0.01)
    tracker.update([("a.png", "unreadable frame")], 199)
    with caplog.at_level(logging.WARNING):
        tracker.update([("a.png", "unreadable frame")], 100)  # the same file is logged once
    assert caplog.text.count("a.png") == 1 and not tracker.exceeded(final=True)
    assert tracker.end_epoch() == 2
    tracker.update([("b.png", "x")], 20)
    assert not tracker.exceeded() and tracker.exceeded(final=True)  # mid-epoch, only from 200 samples on
    tracker.update([("c.png", "y"), ("d.png", "z")], 180)
    with pytest.raises(DataQualityError, match=r"3 of 203 samples failed .*max_bad_fraction"):
        tracker.check()


def test_empty_split_names_where_it_looked(copy):
    (copy / "val.json").write_text(json.dumps([["900", "901"]]))
    with pytest.raises(FileNotFoundError, match=r"val split has no usable frames.*frames"):
        SBIDataset(copy, "val", SIZE)


def test_missing_real_data_root_points_to_preprocessing(tmp_path):
    with pytest.raises(FileNotFoundError, match="Preprocess FaceForensics"):
        ensure_data(Config(data_root=str(tmp_path / "nowhere")))


def test_synthetic_data_root_is_generated_on_first_use(tmp_path):
    root = ensure_data(Config(data_root=str(tmp_path / "demo"), synthetic_data=True, synthetic_videos=6,
                              compression="raw"))
    assert (video_dir(root, "raw") / "frames").is_dir() and (root / "train.json").is_file()


def test_data_without_faces_json_is_read_as_the_references_with_one_log_line(copy, caplog):
    assert SBIDataset(copy, "train", SIZE).faces["detector"] == "synthetic"  # the generator records its own
    (video_dir(copy, "c23") / FACES_FILE).unlink()
    with caplog.at_level(logging.INFO):
        sets = [SBIDataset(copy, split, SIZE) for split in ("train", "val")]
    assert all(s.faces == REFERENCE_FACES for s in sets) and caplog.text.count("SBI reference's preprocessing") == 1


def test_distillation_refuses_a_teacher_trained_on_other_faces_unless_allowed(tiny_config, tmp_path, caplog):
    state = create_classifier("test_efficientnet").state_dict()
    torch.save(state, tmp_path / "plain.pth")  # a plain state dict: read as trained on the reference's RetinaFace data
    config = tiny_config("faces", teacher_arch="test_efficientnet", teacher_weights=str(tmp_path / "plain.pth"))
    with pytest.raises(UserError, match=r"trained on faces found by retinaface.*made with synthetic.*--detector "
                                        r"retinaface.*--set allow_teacher_face_mismatch=true"):
        main_distillation.main([str(config), "-n", "x"])
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigError, match="Run stage 1 first"):
        main_distillation.main([str(config), "-n", "x", "--set", "allow_teacher_face_mismatch=true"])
    assert "distilling anyway" in caplog.text
    own = dict(arch="test_efficientnet", model=state, config=dict(faces=dict(detector="dlib")))  # this project's
    check_teacher_faces(training_faces(own), Config(**json.loads(config.read_text())))  # dlib boxes, as the data's

"""The face-region layout: the same SBI samples, bit for bit, from a fraction of the pixels."""
import shutil

import numpy as np
import pytest

from src.config import ConfigError, load_config
from src.dataset import SBIDataset, video_dir
from src.regions import disk_mb, make_regions
from src.synthetic import generate_dataset


@pytest.fixture(scope="module", params=[(81, 2), (68, 0)])  # (landmark points, worker processes)
def root(request, tmp_path_factory):
    """Large faces in small frames, so that crops touch the border; some frames hold a second face."""
    points, workers = request.param
    root = generate_dataset(tmp_path_factory.mktemp(f"regions{points}") / "data", videos=8, frames=3,
                            frame_size=(200, 150), face_size=95, n_landmarks=points, seed=3)
    assert make_regions(root, "c23", workers=workers) == (8, 24)
    return root


def test_samples_are_bit_identical_to_the_full_frames(root):
    base = video_dir(root, "c23")
    assert sorted(p.relative_to(base / "regions").with_suffix("") for p in (base / "regions").rglob("*.npz")) == \
        sorted(p.relative_to(base / "frames").with_suffix("") for p in (base / "frames").rglob("*.png"))
    for split in ("train", "val"):
        frames, regions = SBIDataset(root, split, 48), SBIDataset(root, split, 48, layout="regions")
        assert [(p.parent.name, p.stem) for p in frames.frames] == [(p.parent.name, p.stem) for p in regions.frames]
        for epoch in range(4 if split == "train" else 1):
            frames.set_epoch(epoch)
            regions.set_epoch(epoch)
            for i in range(len(frames)):
                a, b = frames[i], regions[i]
                assert np.array_equal(a.real, b.real) and np.array_equal(a.fake, b.fake)
                assert np.array_equal(a.mask, b.mask) and a.mask_type == b.mask_type


def test_the_data_covers_borders_and_second_faces(root):
    base = video_dir(root, "c23")
    offsets = [np.load(p)["where"] for p in sorted((base / "regions").rglob("*.npz"))]
    assert any(o[0, 0] == 0 or o[0, 1] == 0 for o in offsets)  # regions (so crops) reaching the frame's border
    assert any(len(np.load(p)) == 2 for p in (base / "landmarks").rglob("*.npy"))  # frames with a second face
    assert disk_mb(base / "regions") < 2 * disk_mb(base / "frames")  # uncompressed, yet about as small (FF++: less)


def test_stale_regions_are_reported_and_the_layout_is_validated(root, tmp_path):
    copy = shutil.copytree(root, tmp_path / "data")
    base = video_dir(copy, "c23")
    ds = SBIDataset(copy, "val", 48, layout="regions")
    landmarks = base / "landmarks" / ds.frames[0].parent.name / f"{ds.frames[0].stem}.npy"
    moved = np.load(landmarks)
    moved[..., 0] += 40  # preprocessed again, the regions not: they no longer hold the crop
    np.save(landmarks, moved)
    failures = ds[0].failures
    assert failures and "face region does not hold the crop" in failures[0][1] and "src.regions" in failures[0][1]
    shutil.rmtree(base / "regions")
    with pytest.raises(FileNotFoundError, match="python -m src.regions"):
        SBIDataset(copy, "val", 48, layout="regions")
    with pytest.raises(ConfigError, match="data_layout"):
        load_config("configs/config_demo.json", ["data_layout=crops"])

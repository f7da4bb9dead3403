"""The face-region layout: the same SBI samples, bit for bit, from a fraction of the pixels."""
import shutil

import cv2
import numpy as np
import pytest

from src.common.config import ConfigError, load_config
from src.common.layout import video_dir
from src.common.logs import UserError
from src.data.dataset import SBIDataset
from src.data.regions import disk_mb, make_regions
from src.data.synthetic import generate_dataset
from src.faces.detectors import FACES_FILE


@pytest.fixture(scope="module", params=[(81, 2), (68, 0)])  # (landmark points, worker processes)
def root(request, tmp_path_factory):
    """Large faces in small frames, so that crops touch the border; some frames hold a second face."""
    points, workers = request.param
    root = generate_dataset(tmp_path_factory.mktemp(f"regions{points}") / "data", videos=8, frames=3,
                            frame_size=(200, 150), face_size=95, n_landmarks=points, seed=3)
    assert make_regions(root, "c23", workers=workers) == (8, 24)
    return root


def assert_layouts_identical(root, epochs: int = 4) -> list:
    """Both layouts list the same frames and give bit-identical samples; returns the failures met."""
    base, failures = video_dir(root, "c23"), []
    assert sorted(p.relative_to(base / "regions").with_suffix("") for p in (base / "regions").rglob("*.npz")) == \
        sorted(p.relative_to(base / "frames").with_suffix("") for p in (base / "frames").rglob("*.png"))
    for split in ("train", "val"):
        frames, regions = SBIDataset(root, split, 48), SBIDataset(root, split, 48, layout="regions")
        assert [(p.parent.name, p.stem) for p in frames.frames] == [(p.parent.name, p.stem) for p in regions.frames]
        for epoch in range(epochs if split == "train" else 1):
            frames.set_epoch(epoch)
            regions.set_epoch(epoch)
            for i in range(len(frames)):
                a, b = frames[i], regions[i]
                assert np.array_equal(a.real, b.real) and np.array_equal(a.fake, b.fake)
                assert np.array_equal(a.mask, b.mask) and a.mask_type == b.mask_type
                assert [r for _, r in a.failures] == [r for _, r in b.failures]
                failures += a.failures
    return failures


def test_samples_are_bit_identical_to_the_full_frames(root):
    assert not assert_layouts_identical(root)


def test_an_unreadable_frame_keeps_its_place_in_both_layouts(root, tmp_path):
    copy = shutil.copytree(root, tmp_path / "data")
    shutil.rmtree(video_dir(copy, "c23") / "regions")
    for split in ("train", "val"):
        png = SBIDataset(copy, split, 48).frames[1]
        png.write_bytes(png.read_bytes()[:300])  # a truncated PNG
        assert cv2.imread(str(png)) is None
    assert make_regions(copy, "c23") == (8, 22)  # 24 frames, 2 of them unreadable
    failures = assert_layouts_identical(copy, epochs=2)
    assert failures and {reason for _, reason in failures} == {"missing or unreadable frame"}


def test_regions_of_another_preprocessing_are_refused(root, tmp_path):
    copy = shutil.copytree(root, tmp_path / "data")
    base = video_dir(copy, "c23")
    faces = (base / FACES_FILE).read_text()
    (base / FACES_FILE).write_text(faces.replace("synthetic", "dlib", 1))  # preprocessed again, otherwise
    with pytest.raises(UserError, match=r"another preprocessing.*delete .*regions and make them again: python -m "
                                        r"src.regions"):
        SBIDataset(copy, "val", 48, layout="regions")
    with pytest.raises(UserError, match="delete .*regions and run this again"):
        make_regions(copy, "c23")
    (base / FACES_FILE).write_text(faces)
    vid = SBIDataset(copy, "val", 48).frames[0].parent.name
    for kind, ext in (("frames", "png"), ("landmarks", "npy"), ("retina", "npy")):  # that video preprocessed again,
        (base / kind / vid / f"000.{ext}").unlink()  # with a frame fewer
    with pytest.raises(UserError, match=f"regions/{vid}.* other frames than frames/.*src.regions"):
        SBIDataset(copy, "val", 48, layout="regions")
    assert make_regions(copy, "c23") == (1, 2)  # that video cut again
    assert not assert_layouts_identical(copy, epochs=1)


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

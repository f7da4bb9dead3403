"""Tests for src/faces and src/data/preprocess.py: dlib on a real face, frame sampling, the face filter, the layout."""
import json
import logging
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skimage_data

from src.data.preprocess import preprocess
from src.faces import detectors as faces
from src.faces.detectors import (
    DlibDetector,
    Face,
    UnreadableMedia,
    default_predictor,
    keep_large,
    make_detector,
    read_frames,
)
from src.faces.geometry import box_crop

from conftest import run_ranks, write_video


def gray_frames(n: int, step: int, size=(48, 32)) -> list[np.ndarray]:
    return [np.full((size[1], size[0], 3), step * k, np.uint8) for k in range(n)]


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()  # public domain: NASA portrait of Eileen Collins, 512 x 512 RGB


@pytest.fixture(scope="module")
def dlib_detector():
    return DlibDetector()


def test_dlib_finds_the_astronaut_face_with_landmarks_and_crop(astronaut, dlib_detector):
    assert dlib_detector.describe() == dict(detector="dlib", landmarks="shape_predictor_68_face_landmarks.dat",
                                            landmark_points=68)  # what preprocessing records in faces.json
    found = dlib_detector.detect(astronaut)
    assert found, "dlib found no face in the astronaut image"
    face = found[0]
    (x0, y0), (x1, y1) = face.box[:2]
    assert 150 < (x0 + x1) / 2 < 290 and 60 < (y0 + y1) / 2 < 190  # her face, not the flag or the suit
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.int32
    lm, w, h = face.landmarks, x1 - x0, y1 - y0
    assert np.all(lm >= [x0 - 0.2 * w, y0 - 0.2 * h]) and np.all(lm <= [x1 + 0.2 * w, y1 + 0.2 * h])
    left_eye, right_eye, nose, mouth_l, mouth_r = face.box[2:]
    assert left_eye[0] < nose[0] < right_eye[0] and max(left_eye[1], right_eye[1]) < nose[1] < mouth_l[1]
    assert mouth_l[0] < mouth_r[0]
    cx0, cy0, cx1, cy1 = box_crop(astronaut, face.box, None)
    assert cx0 <= x0 and cy0 <= y0 and cx1 >= x1 and cy1 >= y1  # the test crop holds the box and the features
    assert np.all(face.box[2:] >= [cx0, cy0]) and np.all(face.box[2:] < [cx1, cy1])


def test_keep_large_drops_faces_below_half_the_largest_area():
    def face(size):
        return Face(np.array([[0, 0], [size, size]] + [[0, 0]] * 5, np.float32), None, 1.0)

    kept = keep_large([face(100), face(80), face(70), face(10)])
    assert [f.area for f in kept] == [10000, 6400]  # 4900 < 10000 / 2
    assert keep_large([]) == []


def test_predictor_files_and_errors(tmp_path, monkeypatch):
    assert default_predictor().name == "shape_predictor_68_face_landmarks.dat" and default_predictor().is_file()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights/shape_predictor_81_face_landmarks.dat").write_bytes(b"")
    assert default_predictor() == faces.PREDICTOR_81
    with pytest.raises(FileNotFoundError, match="shape_predictor_81_face_landmarks.*face-recognition-models"):
        DlibDetector(tmp_path / "missing.dat")
    with pytest.raises(FileNotFoundError, match="retinaface_resnet50_2020-07-20.*--detector dlib"):
        make_detector("retinaface")  # weights/retinaface_resnet50_2020-07-20.zip is missing here


@pytest.mark.parametrize("seek_gap", [0, 1000])  # every frame reached by seeking, or by grab()
def test_read_frames_decodes_linspace_frames(tmp_path, monkeypatch, seek_gap):
    write_video(tmp_path / "v.avi", gray_frames(60, 4))
    monkeypatch.setattr(faces, "SEEK_GAP", seek_gap)
    got = list(read_frames(tmp_path / "v.avi", 5))
    assert [i for i, _ in got] == [0, 14, 29, 44, 59]  # linspace(0, 59, 5) rounded down, as the reference
    for i, rgb in got:
        assert rgb.shape == (32, 48, 3) and abs(rgb.mean() - 4 * i) < 2  # the right frame, in RGB
    assert [i for i, _ in read_frames(tmp_path / "v.avi", 100)] == list(range(60))  # never a frame twice


def test_read_frames_images_and_unreadable_files(tmp_path):
    img = np.zeros((20, 30, 3), np.uint8)
    img[..., 0] = 255  # red, to catch a BGR/RGB swap
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    [(index, rgb)] = read_frames(tmp_path / "a.png", 32)
    assert index == 0 and np.array_equal(rgb, img)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(UnreadableMedia, match="bad.mp4"):
        list(read_frames(tmp_path / "bad.mp4", 4))


def numbered_frame(index: int) -> np.ndarray:
    """A 64 x 48 RGB frame showing `index` (< 512) in binary: nine 16 px blocks, white for a 1 bit."""
    img = np.zeros((48, 64, 3), np.uint8)
    for bit in range(9):
        if index >> bit & 1:
            row, col = divmod(bit, 3)
            img[16 * row:16 * row + 16, 16 * col:16 * col + 16] = 255
    return img


def shown_index(rgb: np.ndarray) -> int:
    """The index `numbered_frame` drew (read from the blocks' centres, so compression does not change it)."""
    return sum(1 << bit for bit in range(9)
               if rgb[16 * (bit // 3) + 4:16 * (bit // 3) + 12, 16 * (bit % 3) + 4:16 * (bit % 3) + 12].mean() > 128)


def _boxes(data, start: int, end: int):
    while start < end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        yield kind, start, size
        start += size


def truncated_mp4(path: Path, frames: int, keep: int) -> None:
    """An MPEG-4 video of `frames` numbered frames, cut after its first `keep` frames' bytes as a partial download:
    the sample table is moved in front of the frames first (as in streamed files such as FF++'s), so the cut file
    opens and still states `frames` frames."""
    write_video(path, [numbered_frame(i) for i in range(frames)])
    top = {kind: bytearray(path.read_bytes()[pos:pos + size]) for kind, pos, size in _boxes(path.read_bytes(), 0,
                                                                                             path.stat().st_size)}
    moov = top.pop(b"moov")

    def table(kind: bytes, skip: int) -> tuple[int, np.ndarray]:  # where a sample table's entries start, and them
        at = moov.index(kind) + skip
        return at + 4, np.frombuffer(moov, ">u4", struct.unpack(">I", moov[at:at + 4])[0], at + 4)

    at, chunks = table(b"stco", 8)
    assert len(chunks) == 1  # OpenCV writes all frames as one chunk
    start = int(chunks[0]) + len(moov)  # the frames now lie after the sample table
    moov[at:at + 4] = struct.pack(">I", start)
    sizes = table(b"stsz", 12)[1]
    order = list(top)
    data = b"".join(top[k] for k in order[:order.index(b"mdat")]) + moov + b"".join(
        top[k] for k in order[order.index(b"mdat"):])
    path.write_bytes(data[:start + int(sizes[:keep].sum())])


REAL_CAPTURE = cv2.VideoCapture


class StaleCapture:
    """OpenCV's capture, but a failed read returns the last decoded frame again: what a truncated H.264 FF++ clip
    gave after a seek past its decodable end (frame 157 returned as frames 224 and 337)."""

    def __init__(self, path: str):
        self.cap, self.last = REAL_CAPTURE(path), None

    def read(self):
        ok, bgr = self.cap.read()
        self.last = bgr if ok else self.last
        return (True, self.last) if self.last is not None else (ok, bgr)

    def __getattr__(self, name: str):
        return getattr(self.cap, name)


@pytest.mark.parametrize("capture", [REAL_CAPTURE, StaleCapture])
def test_a_truncated_video_gives_only_its_own_frames(tmp_path, monkeypatch, caplog, capture):
    videos = tmp_path / "original_sequences/youtube/c23/videos"
    videos.mkdir(parents=True)
    truncated_mp4(videos / "000.mp4", 400, keep=200)
    monkeypatch.setattr(faces.cv2, "VideoCapture", capture)
    assert faces.frame_count(videos / "000.mp4") == 400
    for seek_gap, count in ((1000, 8), (1000, 32), (0, 32), (0, 8)):  # every frame reached by grab(), or by seeking
        monkeypatch.setattr(faces, "SEEK_GAP", seek_gap)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            got = list(read_frames(videos / "000.mp4", count))
        assert [i for i, _ in got] == [shown_index(rgb) for _, rgb in got] == [
            i for i in faces.frame_indices(400, count) if i < 200]  # each frame is its own, up to the cut
        assert f"{count - len(got)} of the {count} wanted frames" in caplog.text
    always = BrightFaceDetector(level=0)  # preprocessing, reaching its frames by seeking
    (summary,) = preprocess(tmp_path, "c23", always, always, frames=8).values()
    written = sorted((videos.parent / "frames/000").glob("*.png"))
    assert summary.frames == len(written) >= 3 and all(
        shown_index(cv2.imread(str(p))) == int(p.stem) for p in written)  # no frame saved under another's name


class BrightFaceDetector:
    """Faces in every frame brighter than `level` (a stand-in for dlib, or with `landmarks` False for RetinaFace):
    preprocessing's bookkeeping. Two faces; the second has the larger landmark extent but the smaller box."""

    def __init__(self, level: int = 128, landmarks: bool = True, name: str = "dlib"):
        self.level, self.landmarks, self.name = level, landmarks, name

    def describe(self):
        return {"detector": self.name, **({"landmarks": "bright.dat", "landmark_points": 68} if self.landmarks else {})}

    def detect_frames(self, frames):
        return [self.detect(f) for f in frames]

    def detect(self, rgb, image=False):
        if rgb.mean() < self.level:
            return []
        small = np.stack([np.linspace(10, 30, 68), np.linspace(8, 24, 68)], 1).astype(np.int32)
        wide = small * 2
        return [Face(np.array([[8, 6], [34, 28]] + [[20, 15]] * 5, np.float32), small if self.landmarks else None, 1.),
                Face(np.array([[8, 6], [20, 20]] + [[15, 15]] * 5, np.float32), wide if self.landmarks else None, 1.)]


def test_preprocess_writes_the_sbi_layout_and_resumes(tmp_path):
    videos = tmp_path / "original_sequences/youtube/c23/videos"
    videos.mkdir(parents=True)
    write_video(videos / "000.mp4", gray_frames(10, 25))  # frames 6-9 are brighter than 128
    write_video(videos / "001.mp4", gray_frames(10, 5))  # never a face
    dlib = BrightFaceDetector()
    (summary,) = preprocess(tmp_path, "c23", dlib, dlib, frames=4).values()  # frames 0, 3, 6, 9
    assert (summary.done, summary.frames, summary.no_face_frames) == (2, 8, 6)
    assert summary.no_face_videos == [str(videos / "001.mp4")]
    base = videos.parent
    assert sorted(p.name for p in (base / "frames/000").iterdir()) == ["006.png", "009.png"]
    lm, retina = np.load(base / "landmarks/000/006.npy"), np.load(base / "retina/000/006.npy")
    assert lm.shape == (2, 68, 2) and lm.dtype == np.int32 and retina.shape == (2, 7, 2)
    assert np.ptp(lm[0], 0).prod() > np.ptp(lm[1], 0).prod()  # landmarks: largest extent first, as the reference
    assert retina[0, 1, 0] == 34  # boxes: largest area first
    assert json.loads((base / "faces.json").read_text()) == {**dlib.describe(), "frames": 4}
    leftovers = [p for kind in ("frames", "landmarks", "retina") for p in (base / kind).iterdir() if p.name[0] == "."]
    assert not leftovers  # no partial folders
    (again,) = preprocess(tmp_path, "c23", dlib, dlib, frames=4).values()
    assert (again.done, again.skipped) == (0, 2)
    with pytest.raises(ValueError, match="preprocessed with .*'dlib'.*not .*'retinaface'.*delete .*regions/"):
        preprocess(tmp_path, "c23", BrightFaceDetector(landmarks=False, name="retinaface"), dlib, frames=4)
    with pytest.raises(ValueError, match="'frames': 4.*not.*'frames': 8"):
        preprocess(tmp_path, "c23", dlib, dlib, frames=8)


def test_preprocess_takes_boxes_and_landmarks_from_two_detectors_as_the_reference(tmp_path):
    videos = tmp_path / "original_sequences/youtube/c23/videos"
    videos.mkdir(parents=True)
    write_video(videos / "000.mp4", gray_frames(10, 25))  # frames 0, 3, 6, 9 at levels 0, 75, 150, 225
    retina, dlib = BrightFaceDetector(level=60, landmarks=False, name="retinaface"), BrightFaceDetector(level=200)
    (summary,) = preprocess(tmp_path, "c23", retina, dlib, frames=4).values()
    assert (summary.frames, summary.no_face_frames) == (4, 3)  # written only where both find a face: frame 9
    base = videos.parent
    assert sorted(p.name for p in (base / "frames/000").iterdir()) == ["009.png"]
    assert json.loads((base / "faces.json").read_text()) == dict(detector="retinaface", landmarks="bright.dat",
                                                               landmark_points=68, frames=4)


def _bright_root(tmp_path, name):
    videos = tmp_path / name / "original_sequences/youtube/c23/videos"
    videos.mkdir(parents=True)
    for k in range(3):
        write_video(videos / f"00{k}.mp4", gray_frames(10, 20 + 3 * k))
    return tmp_path / name


def _written(root):
    base = root / "original_sequences/youtube/c23"
    return {p.relative_to(base).as_posix(): (np.load(p) if p.suffix == ".npy" else p.read_bytes())
            for p in sorted(base.rglob("*")) if p.is_file() and "videos" not in p.parts}


def _preprocess_rank(dist, root):
    dlib = BrightFaceDetector()
    return preprocess(root, "c23", dlib, dlib, frames=4, dist=dist)[str(root / "original_sequences/youtube/c23")].done


def test_worker_processes_and_torchrun_shards_write_what_one_process_writes(tmp_path):

    dlib = BrightFaceDetector()
    one = preprocess(_bright_root(tmp_path, "one"), "c23", dlib, dlib, frames=4)
    pool = preprocess(_bright_root(tmp_path, "pool"), "c23", dlib, dlib, frames=4, workers=2)
    assert [(s.done, s.frames, s.no_face_frames) for s in one.values()] == \
        [(s.done, s.frames, s.no_face_frames) for s in pool.values()] == [(3, 12, 7)]
    shards = run_ranks(_preprocess_rank, 2, _bright_root(tmp_path, "ranks"))
    assert shards == [2, 1]  # videos 0 and 2 on rank 0, video 1 on rank 1
    expected = _written(tmp_path / "one")
    for other in ("pool", "ranks"):
        got = _written(tmp_path / other)
        assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in expected)


def test_retinaface_weights_are_found_under_the_releases_own_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    assert faces.find_retinaface_weights() == faces.RETINAFACE_FILES[0]  # none there: the name the error gives
    (tmp_path / "weights/retinaface_resnet50_2020-07-20.pth").write_bytes(b"")  # the .pth inside the zip
    assert faces.find_retinaface_weights().name == "retinaface_resnet50_2020-07-20.pth"
    (tmp_path / "weights/retinaface_resnet50_2020-07-20-f168fae3c.zip").write_bytes(b"")  # the release file itself
    assert faces.find_retinaface_weights().name == "retinaface_resnet50_2020-07-20-f168fae3c.zip"
    assert faces.find_retinaface_weights("elsewhere.pth") == Path("elsewhere.pth")

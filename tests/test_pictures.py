"""The pictures: evaluate's roc.png and predict's --save-vis."""
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from matplotlib.figure import Figure

from src import predict
from src.scoring.report import plot_roc
from src.scoring.score import FaceScore, MediaScores
from src.scoring.testsets import Item, VideoResult

from conftest import SQUARE, SquareDetector, clip_frame, student_checkpoint, write_video


def video(group: str, score: float | None, unreadable: bool = False) -> VideoResult:
    """A scored video of `group` ("real" or a fake group); score None: no face found."""
    label = int(group != "real")
    if unreadable:
        return VideoResult(Item(Path(f"{group}.mp4"), label, group), None, "cannot read")
    faces = [] if score is None else [FaceScore(0, [0, 0, 1, 1], score)]
    return VideoResult(Item(Path(f"{group}.mp4"), label, group), MediaScores(faces, 4))


@pytest.fixture
def roc_figure(monkeypatch, tmp_path):
    """plot_roc's figure, drawn into tmp_path/roc.png with any warning raised as an error."""
    drawn = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: drawn.append(fig) or save(fig, *a, **k))

    def draw(results):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plot_roc(tmp_path, results)
        assert (tmp_path / "roc.png").is_file()
        return drawn[-1].axes

    return draw


def legend(ax) -> list[str]:
    return [t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()]


def test_roc_draws_all_fakes_beside_each_manipulation_and_one_group_as_all(roc_figure):
    reals = [video("real", s) for s in (0.1, 0.3, 0.6)]
    ax_roc, _ = roc_figure(reals + [video("Deepfakes", s) for s in (0.7, 0.9)] + [video("FaceSwap", s)
                                                                               for s in (0.2, 0.8)])
    assert legend(ax_roc) == ["all", "Deepfakes", "FaceSwap"]
    ax_roc, _ = roc_figure(reals + [video("fake", s) for s in (0.7, 0.9)])
    assert legend(ax_roc) == ["all"]
    assert ax_roc.get_legend().get_texts()[0].get_text() == "all (AUC 1.0000)"


def test_roc_histogram_counts_videos_without_a_score_in_text_not_in_the_middle_bin(roc_figure):
    results = [video("real", 0.1), video("real", 0.2), video("real", None), video("fake", 0.9),
               video("fake", None), video("fake", None), video("fake", 0, unreadable=True)]
    _, ax_hist = roc_figure(results)
    assert sum(p.get_height() for p in ax_hist.patches) == 3  # the scored videos only
    assert not any(p.get_height() for p in ax_hist.patches if 0.45 <= p.get_x() < 0.5)
    text = " ".join(t.get_text() for t in ax_hist.texts)
    assert "unreadable: 0 real, 1 fake" in text and "no face: 1 real, 2 fake" in text
    ticks = ax_hist.get_yticks()
    assert len(ticks) > 1 and np.all(ticks == np.round(ticks))


def test_one_class_dataset_gets_a_sentence_instead_of_curves_without_a_warning(roc_figure):
    ax_roc, ax_hist = roc_figure([video("real", s) for s in (0.1, 0.4)] + [video("real", None)])
    assert not ax_roc.lines and ax_roc.get_legend() is None
    assert "only real videos (3)" in ax_roc.texts[0].get_text()
    ax_roc, _ = roc_figure([video("fake", None)])  # one class, and no video with a score at all
    assert "only fake videos (1)" in ax_roc.texts[0].get_text()


def test_save_vis_on_a_video_without_a_face_says_so_and_decodes_each_input_once(tmp_path, monkeypatch):
    write_video(tmp_path / "empty.avi", [clip_frame((0, 0, 0))] * 8)
    write_video(tmp_path / "faces.avi", [clip_frame((40, 200, 0))] * 8)
    student_checkpoint(tmp_path / "student.pth", 40)
    decoded, titles = [], []  # (path, frame position) of every frame decoded
    capture = cv2.VideoCapture

    class Counting:  # a capture that records each decode (opening one to read its frame count decodes nothing)
        def __init__(self, path):
            self.path, self.cap = path, capture(path)

        def read(self):
            decoded.append((self.path, self.cap.get(cv2.CAP_PROP_POS_FRAMES)))
            return self.cap.read()

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", Counting)
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: titles.append(
        (fig.axes[0].get_title(), [t.get_text() for t in fig.axes[0].texts], len(fig.axes[0].lines))) or
        save(fig, *a, **k))
    monkeypatch.setattr("src.scoring.predict.make_detector", lambda *a, **k: SquareDetector())
    predict.main(["--weights", str(tmp_path / "student.pth"), "--frames", "4", "--device", "cpu", "--save-vis",
                  str(tmp_path / "vis"), str(tmp_path / "empty.avi"), str(tmp_path / "faces.avi")])
    assert len(decoded) == len(set(decoded)) == 8 and {p for p, _ in decoded} == {str(tmp_path / "empty.avi"),
                                                                                  str(tmp_path / "faces.avi")}
    (empty_title, empty_texts, _), (title, texts, lines) = titles
    assert empty_title == "empty.avi: no face found" and "no face found in 4 frame(s)" in empty_texts[0]
    assert title.startswith("faces.avi: fake probability 0.") and not texts and lines == 2  # scores, 0.5 line
    assert (tmp_path / "vis/empty_scores.png").is_file() and len(list((tmp_path / "vis/faces").glob("*.png"))) == 4
    drawn = cv2.imread(str(tmp_path / "vis/faces/000000.png"))
    assert drawn.shape == (SQUARE, 3 * SQUARE, 3)

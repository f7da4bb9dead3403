"""Tests for evaluation and prediction (src/scoring behind src/evaluate.py and src/predict.py): aggregation, metrics,
reports, dataset lists and the CLIs."""
import csv
import json
import multiprocessing
import shutil

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from src import evaluate, predict
from src.common.layout import MANIPULATIONS, REFERENCE_FACES
from src.common.logs import cli
from src.faces.detectors import Face, choose_detector
from src.models.classifier import StudentInput, load_classifier
from src.models.fast_mobilevit import FastMobileVitV2Block
from src.models.networks import create_classifier, student_view
from src.scoring import evaluation, score
from src.scoring.evaluation import evaluate_items
from src.scoring.metrics import eer, metrics, summarize
from src.scoring.score import (
    FaceScore,
    MediaScores,
    default_batch,
    fake_probabilities,
    load_scorer,
    score_media,
)
from src.scoring.testsets import Item, VideoResult, dataset_items

from conftest import CLIPS, SQUARE, GreyModel, SquareDetector, evaluate_cli, run_ranks, student_checkpoint

SAMPLED = [0, 2, 4, 7]  # linspace(0, 7, 4) rounded down, as the reference samples


def expected_score(levels_per_frame) -> float | None:
    """Frame = max over the faces kept by the half-area filter, video = mean over frames with a face."""
    frame_scores = []
    for levels in levels_per_frame:
        kept = [lv / 255 for lv in levels[:2] if lv] or [lv / 255 for lv in levels[2:] if lv]
        if kept:
            frame_scores.append(max(kept))
    return float(np.mean(frame_scores)) if frame_scores else None


def expected(root) -> dict:
    scores = {str(root / name): expected_score([levels[i] for i in SAMPLED]) for name, levels in CLIPS.items()}
    scores[str(root / "real/photo.png")] = 90 / 255
    return scores


def test_video_scores_are_mean_over_frames_of_max_over_faces(folder):
    items = dataset_items("folder", folder)
    assert {i.path.name: i.label for i in items} == {"r0.avi": 0, "r1.avi": 0, "photo.png": 0, "f0.avi": 1,
                                                       "f1.avi": 1, "small.avi": 1, "empty.avi": 1}
    results = evaluate_items(items, SquareDetector(), GreyModel(), 32, frames=4)
    want = expected(folder)
    for r in results:
        assert want[str(r.item.path)] is None or r.score == pytest.approx(want[str(r.item.path)], abs=0.01), r.item
    assert next(r for r in results if r.item.path.name == "empty.avi").score == 0.5
    assert [sorted(r.scores.frame_scores()) for r in results if r.item.path.name == "r1.avi"] == [[0, 2, 4]]


def test_metrics_match_scikit_learn_and_no_face_videos_are_listed(folder):
    results = evaluate_items(dataset_items("folder", folder), SquareDetector(), GreyModel(), 32, frames=4)
    s = summarize(results)
    labels, scores = [r.item.label for r in results], [r.score for r in results]
    assert s["video_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert s["ap"] == pytest.approx(average_precision_score(labels, scores))
    assert s["acc"] == pytest.approx(np.mean((np.array(scores) > 0.5) == labels))
    frame_labels = [r.item.label for r in results for _ in r.scores.frame_scores()]
    frame_scores = [v for r in results for v in r.scores.frame_scores().values()]
    assert s["frame_auc"] == pytest.approx(roc_auc_score(frame_labels, frame_scores))
    assert s["no_face_videos"] == [str(folder / "fake/empty.avi")] and s["n_videos"] == 7
    assert "per_manipulation" not in s


def test_eer_interpolates_where_fpr_meets_fnr():
    assert eer(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert eer(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9])) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    scores = rng.normal(labels * 2.0, 1.0)  # two unit Gaussians 2 apart: EER = Phi(-1)
    assert eer(labels, scores) == pytest.approx(0.1587, abs=0.02)
    assert metrics([1, 1], [0.7, 0.2]) == dict(auc=None, ap=None, eer=None, acc=0.5)


def test_per_manipulation_results_pair_each_fake_group_with_all_reals():
    mk = lambda label, group, score: VideoResult(  # noqa: E731
        Item(f"{group}{score}", label, group),
        MediaScores([FaceScore(0, [0, 0, 1, 1], score)], 1))
    results = [mk(0, "real", 0.2), mk(0, "real", 0.6), mk(1, "Deepfakes", 0.9), mk(1, "FaceSwap", 0.4)]
    s = summarize(results)
    assert set(s["per_manipulation"]) == {"Deepfakes", "FaceSwap"}
    assert s["per_manipulation"]["Deepfakes"]["video_auc"] == 1.0 and s["per_manipulation"]["FaceSwap"]["n_videos"] == 3
    assert s["per_manipulation"]["FaceSwap"]["video_auc"] == 0.5


def test_cli_writes_results_json_csv_and_profile(folder, tmp_path, monkeypatch, capsys, keep_torch_threads):
    monkeypatch.setattr(evaluation, "make_detector", lambda *a, **k: SquareDetector())
    monkeypatch.setattr(score, "load_classifier", lambda path: (GreyModel(), 32, REFERENCE_FACES))
    (tmp_path / "model.pth").write_bytes(b"a model")
    evaluate.main(["--weights", str(tmp_path / "model.pth"), "--dataset", "folder", "--root", str(folder), "--frames",
                   "4", "--out", str(tmp_path / "out"), "--profile", "--device", "cpu"])
    res = json.loads((tmp_path / "out/results.json").read_text())
    assert {"video_auc", "frame_auc", "ap", "eer", "acc", "n_videos", "no_face_videos"} <= set(res)
    rows = list(csv.DictReader(open(tmp_path / "out/videos.csv")))
    want = expected(folder)
    assert len(rows) == 7 and all(abs(float(r["score"]) - (want[r["path"]] or 0.5)) < 0.01 for r in rows)
    printed = capsys.readouterr().out
    assert "| all " in printed and all(stage in printed for stage in ("decode", "detect", "crop", "model", "frames/s"))


def touch(root, *paths):
    """Empty files at `paths` under `root` (a dataset's list is read, and checked, before any video is decoded)."""
    for p in paths:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b"")


def test_dataset_lists_read_the_release_layouts(tmp_path):
    (tmp_path / "List_of_testing_videos.txt").write_text("1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id0_0000.mp4\n")
    touch(tmp_path, "YouTube-real/00170.mp4", "Celeb-synthesis/id0_0000.mp4")
    assert [(i.path.name, i.label) for i in dataset_items("cdf", tmp_path)] == [("00170.mp4", 0), ("id0_0000.mp4", 1)]
    (tmp_path / "labels.csv").write_text("filename,label\naaa.mp4,1\nbbb.mp4,0\n")
    touch(tmp_path, "videos/aaa.mp4", "videos/bbb.mp4")
    assert [(i.path.name, i.label) for i in dataset_items("dfdc", tmp_path)] == [("aaa.mp4", 1), ("bbb.mp4", 0)]
    (tmp_path / "dataset.json").write_text(json.dumps({"m/a.mp4": {"label": "fake", "set": "test"},
                                                       "o/b.mp4": {"label": "real", "set": "test"},
                                                       "o/c.mp4": {"label": "real", "set": "train"}}))
    touch(tmp_path, "m/a.mp4", "o/b.mp4")
    assert [(i.path.name, i.label) for i in dataset_items("dfdcp", tmp_path)] == [("a.mp4", 1), ("b.mp4", 0)]
    touch(tmp_path, "source/val/videos/1.mp4", "target/val/videos/2.mp4")
    assert [(i.path.name, i.label) for i in dataset_items("ffiw", tmp_path)] == [("1.mp4", 0), ("2.mp4", 1)]
    (tmp_path / "test.json").write_text(json.dumps([["001", "002"]]))
    touch(tmp_path, "original_sequences/youtube/c23/videos/001.mp4", "original_sequences/youtube/c23/videos/002.mp4",
          *(f"manipulated_sequences/{m}/c23/videos/{v}.mp4" for m in MANIPULATIONS for v in ("001_002", "002_001")))
    ff = dataset_items("ff", tmp_path)
    assert len(ff) == 10 and sum(i.label for i in ff) == 8 and {i.group for i in ff} == {"real", *MANIPULATIONS}
    (tmp_path / "videos/aaa.mp4").unlink()
    with pytest.raises(FileNotFoundError, match="1 of the 2 videos.*aaa.mp4"):
        dataset_items("dfdc", tmp_path)
    with pytest.raises(FileNotFoundError, match="List_of_testing_videos.txt"):
        dataset_items("cdf", tmp_path / "nowhere")


def test_videos_in_the_sbi_code_layout_are_refused_with_the_fix(tmp_path, capsys):
    """The SBI reference's README puts each category's videos in <category>/videos/: named, with the fix."""
    (tmp_path / "List_of_testing_videos.txt").write_text("1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id0_id1_0.mp4\n")
    touch(tmp_path, "Celeb-real/videos/id0_0000.mp4", "Celeb-synthesis/videos/id0_id1_0.mp4")
    with pytest.raises(SystemExit) as exit_info:
        cli(lambda: evaluate.main(["--weights", "any", "--dataset", "cdf", "--root", str(tmp_path), "--device", "cpu"]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert all(text in err for text in (f"{tmp_path}/Celeb-real/id0_0000.mp4 is missing",
                                        f"{tmp_path}/Celeb-real/videos/id0_0000.mp4 exists", "SBI", "videos/",
                                        f"mv {tmp_path}/Celeb-real/videos/* {tmp_path}/Celeb-real/"))
    (tmp_path / "dataset.json").write_text(json.dumps({"method_A/1/1_A/a.mp4": {"label": "fake", "set": "test"},
                                                       "original_videos/1/b.mp4": {"label": "real", "set": "test"}}))
    touch(tmp_path, "original_videos/videos/1/b.mp4")  # a.mp4 is nowhere: b.mp4 shows the layout
    with pytest.raises(FileNotFoundError) as found:
        dataset_items("dfdcp", tmp_path)
    assert all(text in str(found.value) for text in (f"{tmp_path}/original_videos/1/b.mp4 is missing",
                                                      f"{tmp_path}/original_videos/videos/1/b.mp4 exists", "videos/"))
    (tmp_path / "original_videos/videos/1/b.mp4").unlink()  # in neither layout: the plain error
    with pytest.raises(FileNotFoundError, match="2 of the 2 videos of 'dfdcp' are missing"):
        dataset_items("dfdcp", tmp_path)


def test_load_classifier_feeds_the_student_as_in_training(tmp_path):
    student_checkpoint(tmp_path / "a.pth", 40)
    student_checkpoint(tmp_path / "b.pth", None)
    model, size, faces = load_classifier(tmp_path / "a.pth")  # crops at image_size 48, antialiased to 40 inside
    assert size == 48 and not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.rand(2, 3, 48, 48)
    assert torch.equal(model(x), model.model(student_view(x, 40)))
    assert faces == REFERENCE_FACES  # a checkpoint that does not record its data's detector: the reference's
    model, size, _ = load_classifier(tmp_path / "b.pth")
    assert size == 48 and not isinstance(model, StudentInput)


def test_scoring_runs_mobilevitv2_in_its_faster_exact_form_one_face_per_call_on_the_cpu(tmp_path):
    model = create_classifier("mobilevitv2_050")
    torch.save({"model": model.state_dict(), "arch": "mobilevitv2_050", "epoch": 1, "val_auc": 0.5,
                "config": {"image_size": 80, "student_image_size": 64}}, tmp_path / "s.pth")
    timm_graph, crop, _ = load_classifier(tmp_path / "s.pth")
    fast, _, _ = load_scorer(tmp_path / "s.pth")
    crops = np.random.default_rng(0).integers(0, 256, (3, crop, crop, 3), np.uint8)
    a, b = (fake_probabilities(m, crops, "cpu") for m in (timm_graph, fast))
    assert isinstance(fast, StudentInput) and any(isinstance(m, FastMobileVitV2Block) for m in fast.modules())
    assert np.abs(np.subtract(a, b)).max() < 1e-5
    assert (default_batch("cpu"), default_batch("cuda:1")) == (1, 32)


def test_predict_json_gives_overall_and_per_face_probabilities(folder, tmp_path, monkeypatch, capsys):
    student_checkpoint(tmp_path / "student.pth", 40)
    monkeypatch.setattr("src.scoring.predict.make_detector", lambda *a, **k: SquareDetector())
    predict.main(["--weights", str(tmp_path / "student.pth"), "--json", "--frames", "4", "--device", "cpu",
                  "--save-vis", str(tmp_path / "vis"), str(folder / "real/photo.png"), str(folder / "real/r1.avi"),
                  str(folder / "fake/empty.avi")])
    photo, video, empty = json.loads(capsys.readouterr().out)
    assert len(photo["faces"]) == 2 and photo["fake_probability"] == max(f["fake_probability"] for f in photo["faces"])
    per_frame = {}
    for f in video["faces"]:
        per_frame[f["frame"]] = max(per_frame.get(f["frame"], 0), f["fake_probability"])
    assert sorted(per_frame) == [0, 2, 4]
    assert video["fake_probability"] == pytest.approx(np.mean(list(per_frame.values())))
    assert empty["fake_probability"] is None and empty["faces"] == [] and empty["frames"] == 4
    vis = {p.relative_to(tmp_path / "vis").as_posix() for p in (tmp_path / "vis").rglob("*.png")}
    assert {"photo.png", "r1_scores.png", "empty_scores.png", "r1/000000.png", "r1/000007.png"} <= vis
    drawn = cv2.imread(str(tmp_path / "vis/photo.png"))
    assert drawn.shape == (SQUARE, 3 * SQUARE, 3) and (drawn != cv2.imread(str(folder / "real/photo.png"))).any()


class OffFrameDetector(SquareDetector):
    """SquareDetector's faces plus one whose box lies outside the frame (a degenerate crop)."""

    def detect(self, rgb, image=False):
        off = Face(np.array([[500, 500], [560, 560]] + [[530, 530]] * 5, np.float32), None, 1.0)
        return [off] + super().detect(rgb)


def test_a_face_that_cannot_be_cropped_is_skipped_and_counted(folder, tmp_path, monkeypatch):
    items = [i for i in dataset_items("folder", folder) if i.path.name in ("f1.avi", "photo.png")]
    results = evaluate_items(items, OffFrameDetector(), GreyModel(), 32, frames=4)
    want = expected(folder)
    assert all(r.score == pytest.approx(want[str(r.item.path)], abs=0.01) for r in results)
    assert summarize(results)["bad_faces"] == 4 + 1  # one per frame of the video, one in the photo


def test_the_detector_defaults_to_the_one_that_made_the_training_data(caplog):
    assert choose_detector(None, REFERENCE_FACES) == "retinaface"  # FFc23.tar: the SBI reference's data
    assert choose_detector(None, {"detector": "synthetic"}) == "dlib"
    with caplog.at_level("WARNING"):
        assert choose_detector("dlib", REFERENCE_FACES) == "dlib"
    assert "training data was made with retinaface" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        choose_detector("retinaface", REFERENCE_FACES)
    assert not caplog.text


def test_cli_without_retinaface_weights_says_where_to_get_them(tmp_path, monkeypatch, capsys):
    student_checkpoint(tmp_path / "student.pth", 40)  # records no face source: the reference's, so RetinaFace
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli(lambda: predict.main(["--weights", "student.pth", "--device", "cpu", "photo.png"]))
    assert exit_info.value.code == 2
    (tmp_path / "photo.png").write_bytes(b"")
    with pytest.raises(SystemExit):
        cli(lambda: predict.main(["--weights", "student.pth", "--device", "cpu", "photo.png"]))
    err = capsys.readouterr().err
    assert "retinaface_resnet50_2020-07-20-f168fae3c.zip" in err and "different AUCs" in err


# ------------------------------------------------------------------------------------------------------------------
# at dataset scale: worker processes, resume, torchrun shards, ONNX Runtime, pictures


def test_worker_processes_give_the_one_at_a_time_scores(folder):
    items = dataset_items("folder", folder)
    torch.manual_seed(0)
    model = create_classifier("test_resnet").eval()
    one = [score_media(i.path, SquareDetector(), model, 32, frames=4) for i in items]
    for workers in (0, 2):
        results = evaluate_items(items, SquareDetector(), model, 32, frames=4, workers=workers)
        assert [r.item for r in results] == items  # in the order of the list
        for r, s in zip(results, one):
            assert [(f.frame, f.box) for f in r.scores.faces] == [(f.frame, f.box) for f in s.faces]
            assert max((abs(f.score - g.score) for f, g in zip(r.scores.faces, s.faces)), default=0) <= 1e-5


def test_workers_take_the_largest_video_first_and_a_slow_one_does_not_hold_the_others_back(folder, monkeypatch):
    """The workers take the videos largest file first, each the next one whenever it is free, and each video is scored
    as its crops arrive: the largest video's worker waits until every other video is scored, which only happens when
    none of them waits for it, in its queue or to be scored (else the test fails after 30 s); the list returned keeps
    the order of the items."""
    items = dataset_items("folder", folder)
    by_size = sorted(items, key=lambda i: -i.path.stat().st_size)
    assert by_size != items
    seen = []
    evaluate_items(items, SquareDetector(), GreyModel(), 32, frames=4, workers=1,
                   on_result=lambda r: seen.append(r.item))
    assert seen == by_size  # one worker: in the order it took them
    crops, largest, others_scored = evaluation.face_crops, by_size[0].path, multiprocessing.Event()

    def after_the_others(path, *args):
        if path == largest:
            others_scored.wait(timeout=30)
        return crops(path, *args)

    def record(result):
        seen.append(result.item)
        if len(seen) == len(items) - 1:
            others_scored.set()

    monkeypatch.setattr(evaluation, "face_crops", after_the_others)  # the forked workers inherit it
    seen.clear()
    results = evaluate_items(items, SquareDetector(), GreyModel(), 32, frames=4, workers=2, on_result=record)
    assert sorted(seen, key=items.index) == items and seen[-1] == by_size[0]
    assert [r.item for r in results] == items
    assert [r.score for r in results] == [r.score for r in evaluate_items(items, SquareDetector(), GreyModel(), 32,
                                                                            frames=4)]


def test_largest_first_puts_a_file_it_cannot_read_last(tmp_path):
    for name, size in (("small.mp4", 10), ("big.mp4", 30)):
        (tmp_path / name).write_bytes(b"x" * size)
    items = [Item(tmp_path / n, 0, "real") for n in ("gone.mp4", "big.mp4", "small.mp4")]
    assert evaluation.largest_first(items) == [1, 2, 0]


def test_the_cli_with_workers_gives_the_one_process_results(folder, tmp_path, monkeypatch, keep_torch_threads):
    one = evaluate_cli(folder, tmp_path / "one", monkeypatch)
    two = evaluate_cli(folder, tmp_path / "two", monkeypatch, None, "--workers", "2")
    assert two == one
    assert (tmp_path / "two/videos.csv").read_text() == (tmp_path / "one/videos.csv").read_text()


def test_an_interrupted_evaluation_resumes_where_it_stopped(folder, tmp_path, monkeypatch):
    straight = evaluate_cli(folder, tmp_path / "a", monkeypatch)
    assert (tmp_path / "a/roc.png").is_file() and (tmp_path / "a/evaluate.json").is_file()
    lines = (tmp_path / "a/videos.jsonl").read_text().splitlines()
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a/evaluate.json", tmp_path / "b")
    (tmp_path / "b/videos.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])  # killed mid-line
    calls = []
    resumed = evaluate_cli(folder, tmp_path / "b", monkeypatch, calls)
    assert resumed == straight and len(calls) == len(lines) - 3  # the cut line's video is scored again
    with pytest.raises(SystemExit):
        evaluate_cli(folder, tmp_path / "b", monkeypatch, None, "--frames", "2")  # other settings: refused


def _evaluate_rank(dist, folder, out):
    with pytest.MonkeyPatch.context() as mp:
        return evaluate_cli(folder, out, mp)


def test_two_processes_give_the_results_of_one(folder, tmp_path, monkeypatch):

    one = evaluate_cli(folder, tmp_path / "one", monkeypatch)
    two, also = run_ranks(_evaluate_rank, 2, folder, tmp_path / "two")
    assert two == also == one and len(list((tmp_path / "two").glob("videos.rank*.jsonl"))) == 2


def test_onnx_runtime_scores_the_exported_file_as_pytorch(folder, tmp_path):
    from src.deploy.onnx import export as export_onnx

    torch.manual_seed(0)
    model = create_classifier("test_resnet").eval()
    export_onnx(model, 32, tmp_path / "m.onnx")
    onnx_model, crop, _ = score.load_scorer(tmp_path / "m.onnx", "onnx")
    items = dataset_items("folder", folder)
    eager = evaluate_items(items, SquareDetector(), model, 32, frames=4)
    ort = evaluate_items(items, SquareDetector(), onnx_model, crop, frames=4)
    assert crop == 32 and max(abs(a.score - b.score) for a, b in zip(eager, ort)) < 1e-4
    with pytest.raises(ValueError, match="exported .onnx file"):
        score.load_scorer(__file__, "onnx")

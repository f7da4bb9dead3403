"""Numbers an evaluation can be trusted with: a resume keyed to the model file and its settings, truncated videos
listed, the training data's detector carried through ONNX, threads budgeted to the cores, and bad input refused in
one line (src/evaluate.py, src/predict.py and their libraries in src/scoring)."""
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from src import evaluate, predict
from src.common.layout import REFERENCE_FACES
from src.common.logs import cli
from src.common.workers import one_thread
from src.faces.detectors import choose_detector, frame_count, read_frames
from src.models.networks import create_classifier
from src.scoring import score
from src.scoring.evaluation import scoring_threads
from src.scoring.score import load_scorer

from conftest import CLIPS, GreyModel, SquareDetector, clip_frame, evaluate_cli, write_video

DLIB_FACES = dict(detector="dlib", landmarks="shape_predictor_68_face_landmarks.dat", landmark_points=68)


class NamedDetector(SquareDetector):
    """SquareDetector's faces under the name it was made as."""

    def __init__(self, name):
        self.name = name

    def describe(self):
        return {"detector": self.name}


def run_cli(main, root_or_inputs, out, monkeypatch, *extra, weights, faces=REFERENCE_FACES):
    """`main` (evaluate's or predict's) with NamedDetector and, unless `faces` is None, GreyModel for the weights;
    returns the detector names it asked for."""
    chosen = []

    def detector(name, *args, **kwargs):
        chosen.append(name)
        return NamedDetector(name)

    library = "src.scoring.evaluation" if main is evaluate.main else "src.scoring.predict"
    monkeypatch.setattr(f"{library}.make_detector", detector)
    if faces is not None:
        monkeypatch.setattr(score, "load_classifier", lambda path: (GreyModel(), 32, faces))
    if main is evaluate.main:
        cli(partial(main, ["--weights", str(weights), "--dataset", "folder", "--root", str(root_or_inputs), "--frames",
                           "4", "--out", str(out), "--device", "cpu", "--workers", "0", *extra]))
    else:
        cli(partial(main, ["--weights", str(weights), "--frames", "4", "--device", "cpu", "--json", *extra,
                           *root_or_inputs]))
    return chosen


def model_file(path, content: bytes, mtime: float | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def refusal(capsys) -> str:
    """The one error line a refused command printed."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error: ") == 1, err
    return err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------------------------------
# item 1: a resume is keyed to the model file's content and every setting that moves a score


def test_a_resume_with_another_model_file_behind_the_same_glob_is_refused(folder, tmp_path, monkeypatch, capsys):
    pattern = tmp_path / "run_*/BEST.pth"
    model_file(tmp_path / "run_a/BEST.pth", b"model A", mtime=1_000_000)
    finished, cut = tmp_path / "finished", tmp_path / "cut"
    straight = evaluate_cli(folder, finished, monkeypatch, weights=pattern)
    shutil.copytree(finished, cut)
    lines = (cut / "videos.jsonl").read_text().splitlines(keepends=True)
    (cut / "videos.jsonl").write_text("".join(lines[:2]))  # killed after two videos
    assert straight["model_sha256"] == hashlib.sha256(b"model A").hexdigest()

    model_file(tmp_path / "run_b/BEST.pth", b"model B", mtime=2_000_000)  # a newer run: the glob's newest match
    for out in (cut, finished):  # an interrupted run, and a finished one that would be reused whole
        with pytest.raises(SystemExit) as exit_info:
            evaluate_cli(folder, out, monkeypatch, weights=pattern)
        line = refusal(capsys)
        assert exit_info.value.code == 2 and "model_sha256" in line and "run_a" in line and "run_b" in line
        assert f"another --out (or delete {out})" in line
    assert (cut / "videos.jsonl").read_text() == "".join(lines[:2])  # nothing scored by model B

    copy = shutil.copy(tmp_path / "run_a/BEST.pth", tmp_path / "elsewhere.pth")  # the same content, another name
    calls = []
    resumed = evaluate_cli(folder, cut, monkeypatch, calls, weights=copy)
    assert len(calls) == len(lines) - 2 and {**resumed, "weights": None} == {**straight, "weights": None}


def test_a_resume_under_other_scoring_settings_is_refused(folder, tmp_path, monkeypatch, capsys):
    weights = model_file(tmp_path / "model.pth", b"model")
    r1, r2 = model_file(tmp_path / "r1.pth", b"retinaface 1"), model_file(tmp_path / "r2.pth", b"retinaface 2")
    out = tmp_path / "out"
    chosen = run_cli(evaluate.main, folder, out, monkeypatch, "--retinaface-weights", str(r1), weights=weights)
    assert chosen == ["retinaface"]  # the model's data (REFERENCE_FACES): RetinaFace, whose file is recorded
    settings = json.loads((out / "evaluate.json").read_text())
    assert settings["retinaface_sha256"] == hashlib.sha256(b"retinaface 1").hexdigest() and settings["bf16"] is False
    with pytest.raises(SystemExit):
        run_cli(evaluate.main, folder, out, monkeypatch, "--retinaface-weights", str(r2), weights=weights)
    assert "retinaface_sha256" in refusal(capsys)

    (out / "evaluate.json").write_text(json.dumps({**settings, "bf16": True}))  # as a CUDA run with --bf16 writes
    with pytest.raises(SystemExit):
        run_cli(evaluate.main, folder, out, monkeypatch, "--retinaface-weights", str(r1), weights=weights)
    assert "bf16 true there, false now" in refusal(capsys)

    (out / "evaluate.json").unlink()  # scores that nothing ties to a model or settings
    with pytest.raises(SystemExit):
        run_cli(evaluate.main, folder, out, monkeypatch, "--retinaface-weights", str(r1), weights=weights)
    line = refusal(capsys)
    assert "no evaluate.json" in line and f"another --out (or delete {out})" in line


def test_a_resume_adds_no_blank_line_to_videos_jsonl(folder, tmp_path, monkeypatch):
    evaluate_cli(folder, tmp_path / "a", monkeypatch)
    records = tmp_path / "a/videos.jsonl"
    lines = records.read_text().splitlines(keepends=True)
    records.write_text("".join(lines[:3]))  # killed between two videos
    evaluate_cli(folder, tmp_path / "a", monkeypatch)
    text = records.read_text()
    assert text.endswith("\n") and "" not in text.splitlines() and len(text.splitlines()) == len(lines)


# ------------------------------------------------------------------------------------------------------------------
# item 3: a video that decodes fewer frames than it states is scored on those and listed


def test_a_truncated_video_is_scored_on_its_frames_and_listed(tmp_path, monkeypatch, caplog):
    root = tmp_path / "data"
    frames = [clip_frame(levels) for levels in CLIPS["fake/f0.avi"]]
    for name in ("real/whole.avi", "fake/cut.avi"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / name, frames)
    cut = root / "fake/cut.avi"
    cut.write_bytes(cut.read_bytes()[:int(0.8 * cut.stat().st_size)])  # Motion JPEG cut inside its 5th frame
    read = len(list(read_frames(cut, 4)))
    assert frame_count(cut) == 8 and 0 < read < 4  # states 8 frames, decodes fewer of the 4 asked for
    with caplog.at_level("WARNING"):
        run_cli(evaluate.main, root, tmp_path / "out", monkeypatch, weights=model_file(tmp_path / "m.pth", b"m"),
                faces=DLIB_FACES)
    res = json.loads((tmp_path / "out/results.json").read_text())
    assert res["truncated_videos"] == [dict(path=str(cut), frames_wanted=4, frames_read=read)]
    assert "1 video(s) decoded fewer frames than they state" in caplog.text
    rows = {r["path"]: r for r in csv.DictReader(open(tmp_path / "out/videos.csv"))}
    assert (rows[str(cut)]["frames_wanted"], rows[str(cut)]["frames_read"]) == ("4", str(read))
    assert (rows[str(root / "real/whole.avi")]["frames_wanted"], rows[str(root / "real/whole.avi")]["frames_read"]) \
        == ("4", "4")


# ------------------------------------------------------------------------------------------------------------------
# item 4: an ONNX file carries its training data's faces record, so eager and ONNX pick the same detector


def tiny_onnx(path, faces: dict | None = None):
    """An ONNX classifier of 32 px crops, logits (0, mean red); with `faces` in its metadata as src.export writes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
    w = numpy_helper.from_array(np.array([[0, 1], [0, 0], [0, 0]], np.float32), "w")
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["logits"])]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [logits], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    if faces is not None:
        helper.set_model_props(model, {"faces": json.dumps(faces)})
    onnx.save(model, path)
    return path


def test_an_onnx_file_scores_with_its_training_data_detector_as_eager_does(folder, tmp_path, monkeypatch, caplog):
    exported = tiny_onnx(tmp_path / "dlib.onnx", DLIB_FACES)
    assert load_scorer(exported, "onnx").faces == DLIB_FACES
    with caplog.at_level("INFO"):
        assert load_scorer(tiny_onnx(tmp_path / "old.onnx"), "onnx").faces == REFERENCE_FACES
    assert "does not record its training data's face detector" in caplog.text

    chosen = run_cli(evaluate.main, folder, tmp_path / "onnx", monkeypatch, "--runtime", "onnx", weights=exported,
                     faces=None)
    res = json.loads((tmp_path / "onnx/results.json").read_text())
    assert chosen == ["dlib"] and res["detector"] == {"detector": "dlib"} and res["training_faces"] == DLIB_FACES
    assert res["model_sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest() and res["runtime"] == "onnx"

    torch.save({"model": create_classifier("test_resnet").state_dict(), "arch": "test_resnet", "epoch": 1,
                "val_auc": 0.5, "config": {"image_size": 32, "faces": DLIB_FACES}}, tmp_path / "student.pth")
    chosen += run_cli(evaluate.main, folder, tmp_path / "eager", monkeypatch, weights=tmp_path / "student.pth",
                      faces=None)
    chosen += run_cli(predict.main, [str(folder / "real/photo.png")], None, monkeypatch, "--runtime", "onnx",
                      weights=exported, faces=None)
    assert chosen == ["dlib"] * 3  # eager, ONNX, and predict's ONNX


# ------------------------------------------------------------------------------------------------------------------
# item 8: threads budgeted to the cores


def test_workers_leave_the_scoring_process_the_other_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert [scoring_threads(w) for w in (0, 2, 7, 12)] == [None, 6, 1, 1]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun, two processes on this node: 4 cores each
    assert scoring_threads(2) == 2


def test_a_worker_decodes_video_with_one_ffmpeg_thread(tmp_path, monkeypatch, keep_torch_threads):
    write_video(tmp_path / "v.mp4", [clip_frame(levels) for levels in CLIPS["fake/f1.avi"]])
    monkeypatch.delenv("OPENCV_FFMPEG_THREADS", raising=False)
    one_thread()  # what each evaluate (and preprocess) worker runs first
    cap = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    assert cap.get(cv2.CAP_PROP_N_THREADS) == 1 and torch.get_num_threads() == 1
    cap.release()


def test_profile_prints_the_thread_budget(folder, tmp_path, monkeypatch, capsys, keep_torch_threads):
    run_cli(evaluate.main, folder, tmp_path / "out", monkeypatch, "--workers", "1", "--profile",
            weights=model_file(tmp_path / "m.pth", b"m"), faces=DLIB_FACES)
    cores = len(os.sched_getaffinity(0))
    assert (f"threads: {cores} cores; 1 worker process of 1 thread each (OpenCV, its FFmpeg decoding, torch) at "
            f"nice +10; the scoring process: torch {max(1, cores - 1)}") in capsys.readouterr().out


def test_workers_run_one_thread_below_the_scoring_process_in_priority():
    code = ("import os, torch; from src.scoring.evaluation import feeder; before = os.nice(0); feeder(0); "
            "print(os.nice(0) == min(19, before + 10), torch.get_num_threads(), os.environ['OPENCV_FFMPEG_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["True", "1", "1"]  # 10 below, as far as nice goes (19) when run under nice


# ------------------------------------------------------------------------------------------------------------------
# items 9 and 10: bad input ends in one clear line


@pytest.mark.parametrize("main, argv, message", [
    (evaluate.main, ["--frames", "0"], "argument --frames: must be at least 1, got 0"),
    (evaluate.main, ["--frames", "-3"], "argument --frames: must be at least 1, got -3"),
    (evaluate.main, ["--frames", "many"], "argument --frames: 'many' is not a whole number"),
    (evaluate.main, ["--batch", "-1"], "argument --batch/--batch-size: must be at least 1, got -1"),
    (evaluate.main, ["--workers", "-1"], "argument --workers: must be at least 0, got -1"),
    (predict.main, ["--frames", "0"], "argument --frames: must be at least 1, got 0"),
    (predict.main, ["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
])
def test_counts_are_checked_by_the_argument_parser(main, argv, message, capsys):
    base = ["--dataset", "folder", "--root", "r"] if main is evaluate.main else ["x.png"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--weights", "w", *base, *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def _checkpoint(path, config):
    torch.save({"model": create_classifier("test_resnet").state_dict(), "arch": "test_resnet", "epoch": 1,
                "val_auc": 0.5, "config": config}, path)
    return path


def _bad_input(case, folder, tmp):
    """argv of `case`'s command for one kind of bad input, and what its error line must say."""
    if case == "no image_size":
        weights = _checkpoint(tmp / "s.pth", {"student_image_size": 40})
        return evaluate.main, ["--weights", str(weights), "--dataset", "folder", "--root", str(folder)], \
            "records no image_size"
    if case == "unknown detector":
        weights = _checkpoint(tmp / "s.pth", {"image_size": 32, "faces": {"detector": "mtcnn"}})
        return predict.main, ["--weights", str(weights), str(folder / "real/photo.png")], \
            "face detector 'mtcnn', which this project does not know"
    if case == "dfdc labels":
        (tmp / "labels.csv").write_text("filename,fake\naaa.mp4,1\n")
        return evaluate.main, ["--weights", "w", "--dataset", "dfdc", "--root", str(tmp)], \
            "has the columns ['filename', 'fake']; the DFDC test set's labels.csv has a header line with 'filename'"
    if case == "out under a file":
        weights = _checkpoint(tmp / "s.pth", {"image_size": 32, "faces": {"detector": "dlib"}})
        (tmp / "junk.pth").write_bytes(b"a file")
        return evaluate.main, ["--weights", str(weights), "--dataset", "folder", "--root", str(folder), "--out",
                               str(tmp / "junk.pth/x")], f"cannot make the folder {tmp / 'junk.pth/x'}"
    (tmp / "empty").mkdir()
    return predict.main, ["--weights", "w", str(tmp / "empty")], "is a folder without any image or video in it"


@pytest.mark.parametrize("case", ["no image_size", "unknown detector", "dfdc labels", "out under a file",
                                  "empty folder"])
def test_bad_input_ends_in_one_error_line(case, folder, tmp_path, capsys):
    main, argv, message = _bad_input(case, folder, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli(partial(main, [*argv, "--device", "cpu"]))
    line = refusal(capsys)
    assert exit_info.value.code == 2 and line.startswith("error: ") and message in line, line


def test_an_unknown_training_detector_is_overridden_with_a_warning_and_predict_reads_folders(
        folder, tmp_path, monkeypatch, capsys, caplog):
    with caplog.at_level("WARNING"):
        assert choose_detector("dlib", {"detector": "mtcnn"}) == "dlib"
    assert "'mtcnn', which this project does not know" in caplog.text
    run_cli(predict.main, [str(folder / "real")], None, monkeypatch, weights=model_file(tmp_path / "m.pth", b"m"),
            faces=DLIB_FACES)
    scored = [r["input"] for r in json.loads(capsys.readouterr().out)]
    assert scored == [str(folder / "real" / name) for name in ("photo.png", "r0.avi", "r1.avi")]

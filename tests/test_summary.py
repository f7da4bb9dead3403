"""Tests for src/summary.py and src/scoring/summary.py: the paper-style table of several evaluations."""
import csv
import json
import re
from pathlib import Path

import pytest

from src import summary
from src.common.logs import cli
from src.scoring.summary import NAMES, PUBLISHED
from src.scoring.testsets import READERS

from conftest import evaluate_cli

TEACHER, STUDENT = "weights/FFc23.tar", "output/distill_mobilevit_20260101-120000/weights/BEST.pth"
RETINAFACE = {"detector": "retinaface", "max_size": 2048}


def write_run(run: Path, weights: str, dataset: str, auc: float, sha: str | None = None, **keys) -> Path:
    """An evaluate run folder with a results.json as src.evaluate writes it (metrics as fractions)."""
    data = dict(dataset=dataset, root=f"data/{dataset}", weights=weights, frames=32,
                compression="raw" if dataset == "dfd" else "c23", runtime="torch", detector=RETINAFACE,
                training_faces=RETINAFACE, video_auc=auc, frame_auc=auc - 0.01, ap=auc - 0.02, eer=1 - auc, acc=0.8,
                n_videos=100)
    if sha:
        data["model_sha256"] = sha
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({**data, **keys}))
    return run


def table(capsys) -> list[list[str]]:
    """The printed markdown table's rows, as lists of cells (header first, the separator dropped)."""
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def error_line(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli(lambda: summary.main(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    return err.strip()


def test_table_puts_models_in_rows_test_sets_in_columns_with_the_published_row_and_the_drop(tmp_path, capsys):
    out = tmp_path / "output"
    write_run(out / "evaluate_cdf_1", TEACHER, "cdf", 0.921, "a" * 64)
    write_run(out / "evaluate_dfd_1", TEACHER, "dfd", 0.981, "a" * 64)
    write_run(out / "evaluate_ff_1", TEACHER, "ff", 0.995, "a" * 64)
    write_run(out / "evaluate_cdf_2", STUDENT, "cdf", 0.85, "b" * 64)
    write_run(out / "evaluate_ff_2", STUDENT, "ff", 0.97, "b" * 64)
    summary.main([str(p) for p in sorted(out.glob("evaluate_*"))])
    rows = table(capsys)
    assert rows == [
        ["model", "figures", "FF++ c23", "CDF", "DFD raw"],
        ["FFc23.tar", "published (SBI repository README)", "–", "92.87", "98.16"],
        ["FFc23.tar", "teacher, evaluated here", "99.50", "92.10", "98.10"],
        ["distill_mobilevit_20260101-120000", "evaluated here", "97.00", "85.00", "–"],
        ["distill_mobilevit_20260101-120000", "minus teacher (points)", "-2.50", "-7.10", "–"],
    ]
    with open(out / "summary_auc.csv", newline="") as f:  # next to the run folders by default
        assert list(csv.reader(f))[3] == ["distill_mobilevit_20260101-120000", "evaluated here", "97.00", "85.00", ""]
    assert (out / "summary_auc.md").read_text().splitlines()[2].startswith("| FFc23.tar | published")

    summary.main([str(out / "evaluate_*"), "--metric", "eer", "--out", str(tmp_path / "t")])  # a quoted glob works
    rows = table(capsys)
    assert [r[1] for r in rows[1:]] == ["teacher, evaluated here", "evaluated here", "minus teacher (points)"]
    assert rows[3][3] == "+7.10" and (tmp_path / "t/summary_eer.csv").is_file()  # EER: a positive drop is worse


def test_other_frames_or_detector_on_one_test_set_get_a_column_that_names_the_difference(tmp_path, capsys):
    write_run(tmp_path / "a", TEACHER, "cdf", 0.92)
    write_run(tmp_path / "b", STUDENT, "cdf", 0.85)
    write_run(tmp_path / "c", STUDENT, "cdf", 0.80, frames=8, detector={"detector": "dlib", "landmarks": "x.dat"})
    write_run(tmp_path / "d", STUDENT, "dfd", 0.90)  # dfd at c23: not the published protocol (raw)
    (tmp_path / "d/results.json").write_text((tmp_path / "d/results.json").read_text().replace('"raw"', '"c23"'))
    summary.main([str(tmp_path / p) for p in "abcd"])
    header, published, teacher, student, drop = table(capsys)
    assert header[2:] == ["CDF (32 frames, retinaface)", "CDF (8 frames, dlib landmarks=x.dat)", "DFD c23"]
    assert published[2:] == ["92.87", "–", "–"]  # only where evaluated as published
    assert teacher[2:] == ["92.00", "–", "–"] and student[2:] == ["85.00", "80.00", "90.00"]
    assert drop[2:] == ["-7.00", "–", "–"]  # against the teacher under the same protocol only


def test_a_model_is_its_weights_content_and_the_teacher_can_be_named(tmp_path, capsys):
    glob_weights = "output/distill_*/weights/BEST.pth"  # one --weights glob that matched two runs over time
    write_run(tmp_path / "a", glob_weights, "cdf", 0.85, "b" * 64)
    write_run(tmp_path / "b", glob_weights, "cdf", 0.75, "c" * 64)
    write_run(tmp_path / "c", "output/sbi_teacher/weights/BEST.pth", "cdf", 0.90, "d" * 64)
    summary.main([str(tmp_path / p) for p in "abc"] + ["--teacher", "*sbi_teacher*"])
    rows = table(capsys)
    assert [r[:2] for r in rows[2:]] == [
        ["sbi_teacher", "teacher, evaluated here"],
        ["distill_* (sha256 bbbbbbbb)", "evaluated here"], ["distill_* (sha256 bbbbbbbb)", "minus teacher (points)"],
        ["distill_* (sha256 cccccccc)", "evaluated here"], ["distill_* (sha256 cccccccc)", "minus teacher (points)"]]
    assert [r[2] for r in rows[2:]] == ["90.00", "85.00", "-5.00", "75.00", "-15.00"]
    line = error_line([str(tmp_path / p) for p in "abc"] + ["--teacher", "output/*"], capsys)
    assert "--teacher 'output/*' matches 3 models" in line and "narrower --teacher" in line


def test_two_results_of_one_model_and_test_set_must_agree(tmp_path, capsys):
    write_run(tmp_path / "a", STUDENT, "cdf", 0.85, "b" * 64)
    write_run(tmp_path / "copy", STUDENT, "cdf", 0.85, "b" * 64)
    summary.main([str(tmp_path / "a"), str(tmp_path / "copy")])  # the same numbers twice: one row
    assert len(table(capsys)) == 3
    write_run(tmp_path / "b", STUDENT, "cdf", 0.80, "b" * 64, bf16=True)
    line = error_line([str(tmp_path / "a"), str(tmp_path / "b")], capsys)
    assert f"{tmp_path / 'a/results.json'} and {tmp_path / 'b/results.json'} hold different numbers" in line
    assert "(they differ in bf16)" in line and "keep one of them" in line


def test_each_bad_input_gets_one_error_line(tmp_path, capsys):
    assert "no results.json found for" in error_line([str(tmp_path / "evaluate_*")], capsys)
    (tmp_path / "unfinished").mkdir()
    assert "unfinished has no results.json (an evaluation not finished?)" in error_line(
        [str(tmp_path / "unfinished")], capsys)
    write_run(tmp_path / "good", STUDENT, "cdf", 0.85)
    summary.main([str(tmp_path / "*")])  # a glob skips the folders without one, with a note
    assert "skipped 1 folder(s) without a results.json, e.g. " in capsys.readouterr().err
    bad = tmp_path / "bad/results.json"
    bad.parent.mkdir()
    for text, says in (("{not json", "is not valid JSON"), ("[1, 2]", "not a JSON object"),
                       ('{"dataset": "cdf"}', "(no 'root')"),
                       ((tmp_path / "good/results.json").read_text().replace('"frames": 32', '"frames": "32"'),
                        "'frames' is '32', not an integer"),
                       ((tmp_path / "good/results.json").read_text().replace('"cdf"', '"mtcnn"'),
                        "unknown dataset 'mtcnn'")):
        bad.write_text(text)
        line = error_line([str(tmp_path / "good"), str(tmp_path / "bad")], capsys)
        assert line.startswith(f"error: {bad}") and says in line, line


def test_published_figures_and_dataset_names_match_the_guide_and_the_evaluator():
    guide = (Path(__file__).resolve().parents[1] / "KNOWLEDGE_DISTILLATION_GUIDE.md").read_text()
    for file, figures in PUBLISHED.items():
        row = re.search(rf"^\| `{re.escape(file)}` .*\|$", guide, re.M).group(0)
        assert [float(v) for v in row.strip("|").split("|")[2:]] == [figures[d] for d in
                                                                    ("cdf", "dfd", "dfdc", "dfdcp", "ffiw")]
    assert set(NAMES) == set(READERS)



def test_the_table_reads_what_src_evaluate_writes(folder, tmp_path, monkeypatch, capsys):
    results = evaluate_cli(folder, tmp_path / "output/evaluate_folder", monkeypatch)
    capsys.readouterr()
    summary.main([str(tmp_path / "output/evaluate_folder")])
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("| model.pth |")]
    assert lines == [f"| model.pth | evaluated here | {100 * results['video_auc']:.2f} |"]
    assert "no model's --weights matches --teacher '*FFc23.tar'" in printed
    assert (tmp_path / "output/summary_auc.csv").is_file()


def test_a_column_off_the_published_protocol_says_so_in_the_written_table(tmp_path, capsys):
    dlib = {"detector": "dlib", "landmarks": "shape_predictor_68_face_landmarks.dat", "landmark_points": 68}
    write_run(tmp_path / "evaluate_cdf_1", TEACHER, "cdf", 0.9, "a" * 64, frames=8, detector=dlib)
    summary.main([str(tmp_path / "evaluate_cdf_1"), "--out", str(tmp_path)])
    header = table(capsys)[0]
    assert header[2].startswith("CDF (8 frames, dlib ") and "landmark_points=68" in header[2]
    assert "CDF (8 frames, dlib " in (tmp_path / "summary_auc.md").read_text()

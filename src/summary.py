"""The paper-style table of several evaluations: models as rows, test sets as columns.

    python -m src.summary output/evaluate_* [--metric auc|ap|eer] [--teacher PATTERN] [--out DIR]

Reads the results.json of each src.evaluate run folder given (a results.json file or a quoted glob works too) and
prints one table of video-level AUC in % (--metric ap or eer for those): a row per model evaluated here, the SBI
teacher's published row (the SBI GitHub repository's README, released checkpoints) and, under each other model, its
difference from the teacher evaluated here ("minus teacher", in points; negative AUC or AP = worse, positive EER =
worse). The teacher is the model whose --weights path matches --teacher (default: *FFc23.tar). The table is also
written as summary_<metric>.md and summary_<metric>.csv to --out (default: the folder that holds the run folders).

A model is its weights file's content (results.json's model_sha256) or, in a results.json without it, its --weights
path; its name is the run folder of the weights (output/<run>/weights/BEST.pth) or the file name. A column is one test
set under one protocol: dataset, root, compression (ff and dfd), frames and detector. Results made with other frames,
another detector or compression on the same dataset go into a column of their own whose header names the difference;
the published row fills only the columns evaluated as published (32 frames, RetinaFace at 2048 px, DFD raw). Two
results.json of the same model and column with different numbers are refused.
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from src.common.logs import cli
from src.scoring.summary import METRICS, build_table, check_copies, markdown, pick_teacher, read_result, run_files


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="RUN", help="src.evaluate run folders, results.json files, or globs")
    ap.add_argument("--metric", choices=list(METRICS), default="auc", help="video-level AUC (default), AP or EER")
    ap.add_argument("--teacher", default="*FFc23.tar", metavar="PATTERN",
                    help="glob on the --weights path that marks the teacher row (default: %(default)s)")
    ap.add_argument("--out", help="folder for summary_<metric>.md and .csv (default: the run folders' parent)")
    a = ap.parse_args(argv)
    results = check_copies([read_result(f) for f in run_files(a.runs)])
    teacher = pick_teacher(results, a.teacher)
    header, rows = build_table(results, a.metric, teacher)
    table = markdown(header, rows)
    print(f"video-level {a.metric.upper()} (%)")
    print(table, end="")
    if teacher is None:
        print(f"no model's --weights matches --teacher '{a.teacher}': no 'minus teacher' rows")
    if a.metric == "auc":
        print("published: the SBI GitHub repository's README (released checkpoints); shown only in columns "
              "evaluated as published (32 frames, RetinaFace at 2048 px, DFD raw)")
    out = Path(a.out or os.path.commonpath([r.file.resolve().parent.parent for r in results]))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"summary_{a.metric}.md").write_text(table)
    with open(out / f"summary_{a.metric}.csv", "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    print(f"wrote {out / f'summary_{a.metric}.md'} and {out / f'summary_{a.metric}.csv'}")


if __name__ == "__main__":
    cli(main)

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
from src.common.logs import cli
from src.scoring.summary import main

if __name__ == "__main__":
    cli(main)

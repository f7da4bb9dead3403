"""Logging set-up shared by every command: INFO to stderr, and to a run's log file."""
from __future__ import annotations

import logging
from pathlib import Path


def setup_logging(log_file: Path | None = None) -> None:
    """INFO to stderr (and to `log_file`), once per process."""
    root = logging.getLogger()
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    if log_file is not None:  # one run's train.log at a time (tests and the demo start several runs per process)
        for old in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(old)
            old.close()
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)

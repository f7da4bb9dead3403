"""What every command shares: logging (INFO to stderr, and to a run's log file) and its handling of user errors."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable


class UserError(Exception):
    """A failure of the user's data or settings whose message says what to do (bad data, non-finite training)."""


# config errors are ValueErrors; missing files and unreadable media are OSErrors
EXPECTED = (ValueError, OSError, UserError)


def cli(main: Callable[[], object]) -> None:
    """Run a command's `main`: an expected failure (a bad config, a missing or wrong file, unreadable media, bad
    data) ends in one 'error: ...' line and exit status 2; any other exception is a bug and keeps its traceback."""
    try:
        main()
    except EXPECTED as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


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

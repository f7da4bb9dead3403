"""What every command shares: logging (INFO to stderr, and to a run's log file) and its handling of user errors."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable


class UserError(Exception):
    """A failure of the user's data, files or settings whose message says what to do: a command ends it in one
    'error: ...' line. Every other exception is a bug of ours and keeps its traceback."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the user named, or the walk needs, is not there; the message says where it comes from."""


class BadInput(UserError, ValueError):
    """A value, a file's content or a combination of settings that is refused; the message names the fix."""


def cli(main: Callable[[], object]) -> None:
    """Run a command's `main`: a `UserError` (a bad config, a missing or wrong file, unreadable media, bad data) ends
    in one 'error: ...' line and exit status 2; any other exception is a bug and keeps its traceback."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def make_folder(path: Path, option: str) -> Path:
    """`path` made with its parents; where it cannot be (a file in the way, no permission, no space) an error that
    names `option`, the command-line option that chose it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make the folder {path} ({e.strerror}): choose another {option}") from None
    return path


def read_json(path: Path, what: str) -> object:
    """The JSON content of `path`, `what` naming the file in the errors (missing, or not valid JSON)."""
    if not path.is_file():
        raise MissingFile(f"{path} not found: {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"{path} is not valid JSON ({e}): {what}") from None


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


def count_arg(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def parse_size(text: str) -> tuple[int, int]:
    """An argparse type: a frame size 'WxH', e.g. '1280x720' -> (1280, 720)."""
    w, h = text.lower().split("x")
    return int(w), int(h)

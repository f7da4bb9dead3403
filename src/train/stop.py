"""Stopping a training run on SIGINT/SIGTERM after a whole step, with last.pth written: the protocol.

1. `fit`'s epoch loop runs inside `stop_on_signals()`: on the main thread it sets handlers on SIGINT and SIGTERM
   and resets the state below. Before the loop (data building, the compile probe, the teacher's val AUC) a signal
   gets Python's default handling: SIGINT raises KeyboardInterrupt (a traceback), SIGTERM kills the process at once
   (no message; a shell shows exit status 143); no last.pth is written and the run folder stays, with its
   config.json and train.log (delete it, or start again with the same command).
2. The first signal is recorded (its name and time); the step in progress finishes.
3. `train_one_epoch` reads `requested()` once per step and folds it into the step's one all-reduced flag, so every
   rank stops after the same step.
4. Rank 0 writes last.pth inside `saving()`, with every rank's running sums for the resume; the other ranks wait
   for rank 0's last.pth at a barrier. Then `Interrupted` is raised and the entry script exits 0, its log saying:
   the same command, plus --resume. During any checkpoint write (also an epoch's) a first signal is recorded as in
   2 and a repeated one is ignored: a write is never cut short.
5. A repeated signal within GRACE_S is the same request (torchrun and a scheduler both forward one); a later one
   raises KeyboardInterrupt at once (last.pth keeps the last save).
6. DataLoader workers never die from the signal: `QuietLoader` forks them with the signals blocked, and
   `quiet_worker` ignores them (SIG_IGN) before it unblocks them.
7. torchrun itself, when signalled, forwards the signal to its processes, waits its shutdown timeout and exits with
   its own SignalException, whatever its processes return.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from typing import Iterator

from torch.utils.data import DataLoader

_logger = logging.getLogger(__name__)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: the step in progress was finished, last.pth written and the stop logged (rank 0).

    The commands exit 0 then: a saved stop is not a failure for torchrun (which would restart or report the
    processes) nor for a scheduler."""


_stop = {"signal": None, "at": 0.0, "saving": False}
GRACE_S = 10.0  # a repeated signal this soon after the first is the same request (torchrun and a scheduler both send)
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def requested() -> str | None:
    """The name of the stop signal received since `stop_on_signals()` began, or None."""
    return _stop["signal"]


def _request_stop(signum: int, frame) -> None:
    if _stop["signal"] is None:
        _stop.update(signal=signal.Signals(signum).name, at=time.monotonic())
        _logger.warning("%s: finishing the current step, then writing last.pth (again after %.0f s to stop at once)",
                        _stop["signal"], GRACE_S)
    elif _stop["saving"] or time.monotonic() - _stop["at"] < GRACE_S:
        _logger.warning("%s again: already stopping (a checkpoint write is never cut short)",
                        signal.Signals(signum).name)
    else:  # a deliberate second Ctrl-C: stop at once (last.pth still holds the last saved state)
        raise KeyboardInterrupt


@contextlib.contextmanager
def saving() -> Iterator[None]:
    """A checkpoint write: a repeated stop signal waits for its end."""
    _stop["saving"] = True
    try:
        yield
    finally:
        _stop["saving"] = False


def quiet_worker(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the training process (torchrun signals whole process groups: a
    worker killed mid-step would crash the step before last.pth is written). A signal that arrived while the worker
    started, blocked since its fork, is dropped here."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class QuietLoader(DataLoader):
    """A DataLoader whose workers are forked with SIGINT/SIGTERM blocked, so that a stop signal reaching them before
    quiet_worker runs (a new epoch's workers starting) does not kill them; the training process gets it as usual."""

    def __iter__(self):
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT/SIGTERM ask the training loop to stop after the current step instead of killing it mid-write."""
    _stop.update(signal=None, at=0.0, saving=False)
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _request_stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

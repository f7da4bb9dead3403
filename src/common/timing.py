"""Time spent per stage of a pipeline (data loading, scoring), for the --profile tables."""
import time


class Stopwatch:
    """Adds the time since the previous lap to `totals[name]`; does nothing when totals is None."""

    def __init__(self, totals: dict | None):
        self.totals, self.last = totals, time.perf_counter()

    def lap(self, name: str) -> None:
        if self.totals is not None:
            now = time.perf_counter()
            self.totals[name] += now - self.last
            self.last = now

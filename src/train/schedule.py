"""Schedules: the distillation alpha per epoch (the design's progressive table) and the SBI learning-rate factor."""
from __future__ import annotations

from typing import Callable, Sequence

from src.common.config import validate_alpha_schedule

# (epoch, alpha): the design's progressive distillation schedule; alpha weighs the hard loss.
DESIGN_ALPHA_TABLE = ((1, 0.95), (5, 0.90), (10, 0.85), (15, 0.75), (20, 0.65), (21, 0.50))


def alpha_at(
    epoch: int, alpha_start: float = 0.95, alpha_end: float = 0.5, schedule: Sequence[Sequence[float]] | None = None,
) -> float:
    """Hard-loss weight at a 1-based epoch: piecewise linear through `schedule`, constant outside it.

    Without a schedule, the design's table rescaled so that it runs from alpha_start to alpha_end.
    """
    if schedule is None:
        top, bottom = DESIGN_ALPHA_TABLE[0][1], DESIGN_ALPHA_TABLE[-1][1]
        scale = (alpha_start - alpha_end) / (top - bottom)
        schedule = [(e, alpha_end + (a - bottom) * scale) for e, a in DESIGN_ALPHA_TABLE]
    else:
        validate_alpha_schedule(schedule)
    if epoch <= schedule[0][0]:
        return float(schedule[0][1])
    for (e0, a0), (e1, a1) in zip(schedule, schedule[1:]):
        if epoch <= e1:
            t = (epoch - e0) / (e1 - e0)
            return float((1 - t) * a0 + t * a1)
    return float(schedule[-1][1])


def sbi_lr_lambda(n_epochs: int, decay_fraction: float = 0.25) -> Callable[[int], float]:
    """LambdaLR factor for a 0-based epoch: 1 until int(n_epochs * (1 - decay_fraction)), then linear to 0."""
    start = int(n_epochs * (1 - decay_fraction))

    def lr_factor(epoch: int) -> float:
        if epoch <= start or start >= n_epochs:
            return 1.0
        return max(0.0, 1 - (epoch - start) / (n_epochs - start))

    return lr_factor

"""Statistical checks of random draws shared by the SBI and dataset tests."""
from collections import Counter
from itertools import product
from math import prod

import numpy as np


def assert_binomial(count: int, n: int, p: float) -> None:
    """`count` of n trials lies within 4.5 standard deviations of n * p (a false alarm about once in 150,000)."""
    assert abs(count - n * p) <= 4.5 * np.sqrt(n * p * (1 - p)) + 1, (count, n, p)


def assert_uncorrelated(a: list[float], b: list[float]) -> None:
    assert len(a) > 100 and abs(np.corrcoef(a, b)[0, 1]) < 4.5 / np.sqrt(len(a)), np.corrcoef(a, b)[0, 1]


PAIR_PROBS = {"LegacyRGBShift": 0.3, "LegacyHueSaturationValue": 0.3, "RandomBrightnessContrast": 0.3,
              "ImageCompression": 0.5}


def assert_pair_patterns(runs: list[dict]) -> None:
    """Each of the 16 apply patterns of the pair transform is as frequent as independent draws make it."""
    counts = Counter(tuple(name in r for name in PAIR_PROBS) for r in runs)
    for pattern in product((False, True), repeat=4):
        assert_binomial(counts[pattern], len(runs), prod(q if on else 1 - q
                                                         for on, q in zip(pattern, PAIR_PROBS.values())))

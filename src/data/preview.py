"""A grid of SBI samples: real, fake, blend mask and |fake - real| amplified, one row each (usage: src/preview.py)."""
from __future__ import annotations

import cv2
import numpy as np

COLUMNS = ("real", "fake", "blend mask", "|fake - real| x4")
LABEL_H = 22


def _tile(img: np.ndarray, text: str) -> np.ndarray:
    img = np.ascontiguousarray(img)
    cv2.rectangle(img, (0, 0), (img.shape[1], LABEL_H), (0, 0, 0), -1)
    cv2.putText(img, text, (4, LABEL_H - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def preview_grid(dataset, indices: list[int], seed: int = 0) -> np.ndarray:
    """RGB uint8 grid of the samples at `indices` (train samples drawn with `seed`)."""
    rows = []
    for i in indices:
        s = dataset.make(i, np.random.default_rng((seed, i)))
        real, fake = (np.rint(x.transpose(1, 2, 0) * 255).astype(np.uint8) for x in (s.real, s.fake))
        mask = cv2.cvtColor(np.rint(s.mask * 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)
        diff = np.clip(np.abs(fake.astype(np.int16) - real) * 4, 0, 255).astype(np.uint8)
        peak = s.mask.max()
        labels = (f"#{i} real", f"fake: {s.mask_type}", f"mask max {peak:.2f}", f"diff mean {diff.mean() / 4:.1f}")
        rows.append(np.hstack([_tile(t, text) for t, text in zip((real, fake, mask, diff), labels)]))
    return np.vstack(rows)

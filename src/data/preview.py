"""A PNG grid of SBI samples: real, fake, blend mask and |fake - real| amplified, one row per sample.

    python -m src.preview configs/config_demo.json [--n 8] [--split train] [--out output/preview.png]

One look shows blends that came out empty or misplaced, which otherwise cost days of training.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from src.common.config import load_config
from src.common.logs import cli
from src.data.dataset import SPLITS, build_dataset

_logger = logging.getLogger(__name__)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--n", type=int, default=8, help="number of samples (rows)")
    parser.add_argument("--split", default="train", choices=SPLITS)
    parser.add_argument("--out", default="output/preview.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = load_config(args.config, args.set)
    dataset = build_dataset(cfg, args.split)
    indices = np.random.default_rng(args.seed).choice(len(dataset), min(args.n, len(dataset)), replace=False)
    grid = preview_grid(dataset, sorted(indices.tolist()), args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {out}: {len(indices)} {args.split} samples, columns: {', '.join(COLUMNS)}")


if __name__ == "__main__":
    cli(main)

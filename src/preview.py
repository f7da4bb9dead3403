"""A PNG grid of SBI samples: real, fake, blend mask and |fake - real| amplified, one row per sample.

    python -m src.preview configs/config_demo.json [--n 8] [--split train] [--out output/preview.png]

One look shows blends that came out empty or misplaced, which otherwise cost days of training.
"""
import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from src.common.config import load_config
from src.common.layout import SPLITS
from src.common.logs import cli
from src.data.dataset import build_dataset
from src.data.preview import COLUMNS, preview_grid


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

"""SBI data-pipeline throughput: pairs per second in one process and with N DataLoader workers, with the time split.

    python -m src.bench_data configs/config_SBI.json [--pairs 128] [--workers 2]
    python -m src.bench_data configs/config_SBI.json --synthetic 1280x720 --face-size 200   # no FF++ needed

The SBI pipeline is CPU-bound and is what starves a GPU in this field. The figures are printed for the
configured mask type and for the single convex-hull mask (the public reference's default), to compare like with like,
and for both data layouts, full frames and face regions (src.regions), when the regions exist (--synthetic makes
them), with the disk space of each. The generated data lives in a temporary folder, removed at the end.
"""
import argparse
import tempfile

import torch

from src.common.config import Config, load_config
from src.common.layout import video_dir
from src.common.logs import cli, parse_size
from src.data.bench import STAGES, one_process, with_workers
from src.data.dataset import build_dataset
from src.data.regions import disk_mb, make_regions
from src.data.synthetic import generate_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--pairs", type=int, default=128, help="pairs to time per measurement")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the parallel figure")
    parser.add_argument("--split", default="train")
    parser.add_argument("--synthetic", metavar="WxH", type=parse_size,
                        help="benchmark on generated frames of this size instead of the config's data")
    parser.add_argument("--face-size", type=int, default=200, help="face width in px for --synthetic")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    torch.set_num_threads(1)
    if not args.synthetic:
        report(cfg, args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_data_") as root:  # removed on the way out, error or Ctrl-C too
        cfg.data_root = root
        generate_dataset(root, videos=8, frames=16, frame_size=args.synthetic, face_size=args.face_size,
                         compression=cfg.compression)
        make_regions(root, cfg.compression)
        report(cfg, args)


def report(cfg: Config, args: argparse.Namespace) -> None:
    """Print the pairs/s table of cfg's data for each mask type and layout, and each layout's disk space."""
    base, batch = video_dir(cfg.data_root, cfg.compression), cfg.batch_size // 2
    layouts = [layout for layout in ("frames", "regions") if (base / layout).is_dir()]
    print(f"SBI pairs/s, {args.split} split, image_size {cfg.image_size}, batch {batch} pairs, data {cfg.data_root}"
          + (" (generated, removed at the end)" if args.synthetic else ""))
    print(f"{'layout':<9}{'mask type':<12}{'1 process':>10}{f'{args.workers} workers':>12}  "
          + "".join(f"{s:>9}" for s in STAGES))
    for mask_type in dict.fromkeys((cfg.mask_type, "hull")):
        for layout in layouts:  # the same frames, one layout after the other
            cfg.mask_type, cfg.data_layout = mask_type, layout
            dataset = build_dataset(cfg, args.split)
            rate, profile = one_process(dataset, args.pairs, batch)
            parallel = with_workers(dataset, args.workers, args.pairs, batch)
            print(f"{layout:<9}{mask_type:<12}{rate:>10.1f}{parallel:>12.1f}  "
                  + "".join(f"{profile[s] * 1e3:>7.1f}ms" for s in STAGES))
    print("stage columns: milliseconds per pair in one process; disk: "
          + ", ".join(f"{layout} {disk_mb(base / layout):.0f} MB" for layout in layouts))


if __name__ == "__main__":
    cli(main)

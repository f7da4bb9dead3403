"""Write a synthetic face dataset in the FF++ SBI layout (the generator is src/data/synthetic.py)."""
import argparse

from src.common.layout import COMPRESSIONS, video_dir
from src.common.logs import BadInput, cli, parse_size
from src.data.synthetic import generate_dataset, make_splits


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a synthetic face dataset in the FF++ SBI layout.")
    ap.add_argument("--out", required=True)
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--frame-size", type=parse_size, default=(320, 256), help="WxH, e.g. 1280x720")
    ap.add_argument("--face-size", type=float, default=110, help="approximate face (jaw) width in pixels")
    ap.add_argument("--landmarks", type=int, choices=(81, 68), default=81)
    ap.add_argument("--compression", choices=COMPRESSIONS, default="c23")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        out = generate_dataset(a.out, a.videos, a.frames, a.frame_size, a.face_size, a.landmarks, a.compression, a.seed)
    except BadInput as e:
        ap.error(str(e))
    n = {k: 2 * len(v) for k, v in make_splits(a.videos).items()}
    print(f"wrote {a.videos} videos x {a.frames} frames ({a.frame_size[0]}x{a.frame_size[1]}, {a.landmarks} "
          f"landmarks) to {video_dir(out, a.compression)}; "
          f"train/val/test videos {n['train']}/{n['val']}/{n['test']}")


if __name__ == "__main__":
    cli(main)

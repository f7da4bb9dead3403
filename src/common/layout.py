"""The FF++ folder layout: its splits, manipulations, and where the real videos and the official split files lie."""
from pathlib import Path

from src.common.logs import read_json

SPLITS = ("train", "val", "test")
MANIPULATIONS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")


def video_dir(root: str | Path, compression: str) -> Path:
    return Path(root) / "original_sequences" / "youtube" / compression


def split_videos(root: str | Path, split: str) -> list[str]:
    """The 3-digit video ids of an official split file (a list of [id_a, id_b] pairs)."""
    names = ", ".join(s + ".json" for s in SPLITS)
    pairs = read_json(Path(root) / f"{split}.json", f"FF++'s official splits ({names}, in dataset/splits/ of the "
                                                   f"FaceForensics repository)")
    return sorted({vid for pair in pairs for vid in pair})

"""The FF++ folder layout: its splits, manipulations, and where the real videos and the official split files lie;
and what a preprocessed folder without a faces.json holds."""
from pathlib import Path

from src.common.logs import read_json

SPLITS = ("train", "val", "test")
COMPRESSIONS = ("raw", "c23", "c40")  # FF++'s quality folders; c23 is the published protocol's
MANIPULATIONS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
PREDICTOR_81 = Path("weights/shape_predictor_81_face_landmarks.dat")
# What a folder without faces.json holds: the SBI reference's preprocessing (RetinaFace boxes, dlib 81 points)
REFERENCE_FACES = dict(detector="retinaface", max_size=2048, landmarks=PREDICTOR_81.name, landmark_points=81)


ORIGINALS = ("youtube", "actors")  # FF++'s real sequences; actors are DeepFakeDetection's
KINDS = ("landmarks", "retina", "frames")  # a preprocessed sequence's folders; frames last: it marks a finished video


def sequence_dir(root: str | Path, sequence: str, compression: str) -> Path:
    """A sequence's folder: an original (youtube, actors) or a manipulation (Deepfakes, ..., DeepFakeDetection)."""
    group = "original_sequences" if sequence in ORIGINALS else "manipulated_sequences"
    return Path(root) / group / sequence / compression


def videos_dir(root: str | Path, sequence: str, compression: str) -> Path:
    """Where FF++'s download script puts a sequence's mp4 files."""
    return sequence_dir(root, sequence, compression) / "videos"


def video_dir(root: str | Path, compression: str) -> Path:
    """The youtube originals' folder, which holds the preprocessed kinds (KINDS) the SBI dataset reads."""
    return sequence_dir(root, "youtube", compression)


def split_videos(root: str | Path, split: str) -> list[str]:
    """The 3-digit video ids of an official split file (a list of [id_a, id_b] pairs)."""
    names = ", ".join(s + ".json" for s in SPLITS)
    pairs = read_json(Path(root) / f"{split}.json", f"FF++'s official splits ({names}, in dataset/splits/ of the "
                                                   f"FaceForensics repository)")
    return sorted({vid for pair in pairs for vid in pair})

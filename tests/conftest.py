import json
import os
from pathlib import Path
from typing import Callable

import pytest

from src.synthetic import generate_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
REFERENCE = Path(__file__).resolve().parents[1] / ".ref"


@pytest.fixture(scope="session")
def reference_packages() -> Path:
    """The folder holding requirements-ref.txt's packages (the README's test line installs them; CI must have them)."""
    if not (REFERENCE / "retinaface").is_dir() or not (REFERENCE / "albumentations").is_dir():
        message = (f"the reference packages are not in {REFERENCE}: "
                   f"pip install --no-deps --target .ref -r requirements-ref.txt")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REFERENCE


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Callable[..., Path]:
    """make(name, **keys) -> a config.json in a new folder: a small generated FF++ root (6 videos, 2 frames each),
    runs in that folder's output/, and `keys`. The data root is shared and read-only."""
    root = generate_dataset(tmp_path_factory.mktemp("tiny") / "data", videos=6, frames=2, frame_size=(160, 128),
                            face_size=60)

    def make(name: str, **keys) -> Path:
        path = tmp_path_factory.mktemp(name) / "config.json"
        path.write_text(json.dumps(dict(data_root=str(root), output_dir=str(path.parent / "output"), **keys)))
        return path

    return make

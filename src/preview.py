"""python -m src.preview: a PNG grid of SBI samples (src/data/preview.py)."""
from src.common.logs import cli
from src.data.preview import main

if __name__ == "__main__":
    cli(main)

"""python -m src.preprocess: FF++ videos to the SBI layout (src/data/preprocess.py)."""
from src.common.logs import cli
from src.data.preprocess import main

if __name__ == "__main__":
    cli(main)

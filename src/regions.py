"""python -m src.regions: write the face-region layout (src/data/regions.py)."""
from src.common.logs import cli
from src.data.regions import main

if __name__ == "__main__":
    cli(main)

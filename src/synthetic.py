"""python -m src.synthetic: write a synthetic face dataset in the FF++ SBI layout (src/data/synthetic.py)."""
from src.common.logs import cli
from src.data.synthetic import main

if __name__ == "__main__":
    cli(main)

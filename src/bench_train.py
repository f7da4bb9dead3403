"""python -m src.bench_train: training-step cost (src/train/bench.py)."""
from src.common.logs import cli
from src.train.bench import main

if __name__ == "__main__":
    cli(main)

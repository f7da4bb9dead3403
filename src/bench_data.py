"""python -m src.bench_data: SBI data-pipeline throughput (src/data/bench.py)."""
from src.common.logs import cli
from src.data.bench import main

if __name__ == "__main__":
    cli(main)

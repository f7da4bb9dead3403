"""The command of src.scoring.evaluation: `python -m src.evaluate --help`."""
from src.common.logs import cli
from src.scoring.evaluation import main

if __name__ == "__main__":
    cli(main)

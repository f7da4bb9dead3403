"""The command of src.scoring.predict: `python -m src.predict --help`."""
from src.common.logs import cli
from src.scoring.predict import main

if __name__ == "__main__":
    cli(main)

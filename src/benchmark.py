"""python -m src.benchmark: see src.deploy.benchmark."""
from src.common.logs import cli
from src.deploy.benchmark import main

if __name__ == "__main__":
    cli(main)

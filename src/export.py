"""python -m src.export: see src.deploy.onnx."""
from src.common.logs import cli
from src.deploy.onnx import main

if __name__ == "__main__":
    cli(main)

"""Deployment: ONNX export, int8 and the speed benchmark; the package itself loads only the torch-free runtime (ONNX
Runtime sessions, int8 quantisation), so that an exported file runs without PyTorch: `src.deploy.ort_session(path)`."""
from src.deploy.runtime import ort_session, quantize_int8

__all__ = ["ort_session", "quantize_int8"]

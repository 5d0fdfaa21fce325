"""The converters' versions, readable without importing them: the converters import onnx
(~0.55 s in a fresh process), and the store checks a cached model's converter version on every
load (``store._check``), so reading it from the converter module made every Embedder load
import onnx. Each converter module takes its CONVERTER_VERSION from here."""

from __future__ import annotations

from .cpu import int8_weight_bits

CAMPPLUS = "2"
GE2E = "1"
#: campplus-int8: the FP32 converter's version, then the INT8 recipe's; "-w7" where the recipe
#: quantises weights to 7 bits (x86 without VNNI, see speakerid.models.cpu). A model built on
#: another CPU kind is then stale here and is rebuilt for this one on its next use.
#: int8.2: head.conv1 stays FP32; int8.3: channels equalised before quantising (speakerid.models.quantize)
QUANTIZE_8BIT = f"{CAMPPLUS}+int8.3"
QUANTIZE = QUANTIZE_8BIT if int8_weight_bits() == 8 else f"{QUANTIZE_8BIT}-w7"

#: By converter module name (ModelSpec.converter of the registry).
CONVERTER_VERSIONS = {"campplus": CAMPPLUS, "ge2e": GE2E, "quantize": QUANTIZE}

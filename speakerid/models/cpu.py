"""What this CPU offers ONNX Runtime's int8 kernels (MLAS), read from /proc/cpuinfo.

The INT8 recipe of ``campplus-int8`` depends on it (speakerid.models.quantize). On x86 without
VNNI, MLAS multiplies uint8 activations by int8 weights with ``vpmaddubsw``, which adds each pair
of products into a saturating int16: with full-range weights (|w| <= 127) a pair can reach
2 x 255 x 127 = 64,770 and is clipped at 32,767. VNNI (``vpdpbusd``) adds into int32 and never
clips. Weights quantised to 7 bits (symmetric, |w| <= 64: at most 32,640 per pair) cannot saturate, at the
cost of one bit of weight precision (ONNX Runtime's ``reduce_range``).

Measured with CAM++ converter 1 on an AVX2-only AMD EPYC (benchmarks/results/int8_avx2.md, ``python
benchmarks/bench_int8.py --runs 20 --weight-bits 8 --types uint8/uint8,int8/int8``): cosine to the
FP32 embedding over 20 librispeech-251 utterances, min / mean, and speed-up on 1 thread. 7-bit
weights (this recipe): 0.9881 / 0.9932, 1.27x. Full-range int8 weights: 0.9825 / 0.9920, 1.22x.
uint8 weights: 0.9954 / 0.9969 but 1.03x. int8 activations: 0.9946 / 0.9964 at 0.84x.
"""

from __future__ import annotations

import functools
from pathlib import Path

#: Kinds whose int8 dot products add into int32 (no saturation).
VNNI_KINDS = ("amx", "avx512_vnni", "avx_vnni")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (Linux /proc/cpuinfo; empty elsewhere). Read once
    per process, on import of speakerid.models.versions: only the first processor's lines are
    read, whatever the number of cores."""
    try:
        with Path("/proc/cpuinfo").open(encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_kind(flags: frozenset[str] | None = None) -> str:
    """The int8 capability of this CPU, as ONNX Runtime's int8 kernels (MLAS) see it:
    "amx" (AMX-INT8), "avx512_vnni", "avx_vnni", "avx512", "avx2" or "other"."""
    f = cpu_flags() if flags is None else flags
    for kind, flag in (("amx", "amx_int8"), ("avx512_vnni", "avx512_vnni"), ("avx_vnni", "avx_vnni"),
                       ("avx512", "avx512bw"), ("avx2", "avx2")):
        if flag in f:
            return kind
    return "other"


def int8_weight_bits(kind: str | None = None) -> int:
    """Bits of the int8 weights that cannot saturate on this CPU kind: 8 with VNNI or AMX, 7 on
    x86 without them (AVX2, AVX-512 without VNNI). "other" (not x86, e.g. ARM, whose int8 dot
    products add into int32) keeps 8."""
    k = cpu_kind() if kind is None else kind
    return 7 if k in ("avx512", "avx2") else 8

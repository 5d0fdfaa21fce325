"""Per-thread scratch buffers for the front end's hot loops (VAD STFT and encoder, fbank).

A fresh numpy array of more than ~128 KB is a new mmap'd region under glibc (or heap memory that
free() hands back to the system), so it may be page-faulted in again on every call; whether it is
depends on the heap's state, so a quiet micro-benchmark can show no difference. On an AVX2 EPYC VM
the sequence VAD's numpy STFT of 105 windows once took 2.7 ms with fresh arrays and 0.8 ms with
glibc told to keep freed memory (MALLOC_MMAP_THRESHOLD_). Against the code before these buffers,
10 s of speech, same machine (benchmarks/ab_frontend.py, two alternations): fbank 12.3-14.4 ->
8.7-10.8 ms, gated VAD 8.6-11.5 -> 7.5-9.2 ms (the VAD also gained its encoder's 2-D products).
A :class:`Scratch` keeps one growing buffer per name and thread (``threading.local``), so one VAD
or front end can serve several worker threads.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

#: numpy >= 2.0 writes an FFT into a given array (``out=``).
FFT_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


class Scratch(threading.local):
    """Named buffers, one set per thread; a buffer grows to the largest request and stays.
    What :meth:`get` returns is valid until the next :meth:`get` of that name on that thread."""

    def __init__(self) -> None:
        self.bufs: dict[str, np.ndarray] = {}

    def get(self, key: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        size = math.prod(shape)
        buf = self.bufs.get(key)
        if buf is None or buf.size < size or buf.dtype != np.dtype(dtype):
            buf = self.bufs[key] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


def fresh(key: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """:meth:`Scratch.get`'s signature, a new array each time (no scratch given)."""
    return np.empty(shape, dtype=dtype)

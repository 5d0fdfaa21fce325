"""numpy's BLAS on one thread while speakerid runs its own workers.

numpy's OpenBLAS splits a matrix product over all the cores once it is larger than ~2.6e5
multiply-adds, which every product of the front end is (the mel filterbank, 32 frames x 257 x
80; the VAD encoder, ~400 x 387 x 128), and its threads then spin for a while, waiting for more
work. When speakerid already keeps each core busy with a worker of its own (one ONNX Runtime
thread each), those threads only take cycles from the other workers: indexing librispeech-251 on
2 cores reached 80 % of its ceiling with BLAS on 2 threads, 86 % on one
(benchmarks/bench_build.py, OPENBLAS_NUM_THREADS=1 against the default, one run). The limit is
process-wide (threadpoolctl), so it is set only for the span of work that runs its own workers
and is restored afterwards.

The Embedder's own front end (decode, VAD, fbank) also runs under that limit: its products are
too small to gain from a second thread, and when the other core is busy (another process, or
ONNX Runtime's workers) the spinning BLAS threads wait for it. On a 2-core AVX-512 EPYC (Zen 4)
with both cores busy, a whole embed of a 10 s clip took 290-351 ms with BLAS on 2 threads and
187-226 ms on one, its VAD 20-121 against 7.4-16.6 ms (medians of 20); with the other core idle,
the embed's CPU time was 1.83-1.99x the bare model's against 1.03-1.09x (BENCHMARKS.md, Stop 22).

The limit is counted: the first of any number of concurrent blocks sets it, the last one out
restores what was there before (threads entering and leaving in any order never leave the process
at one thread). Setting it costs ~8 us (one threadpoolctl controller, made once).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("speakerid")

__all__ = ["one_blas_thread", "set_one_blas_thread"]

_lock = threading.Lock()
_depth = 0
_limiter: Any = None
_controller: Any = None


def _blas_controller() -> Any:
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


def _free_openblas() -> None:
    """threadpoolctl >= 3.6 lets only one thread (the first to set a limit) change OpenBLAS's
    shared pool and silently ignores the others; the count above already decides who sets and
    who restores, so that thread is forgotten around each change."""
    try:
        from threadpoolctl import OpenBLASController
    except ImportError:  # older threadpoolctl: any thread may set the limit
        return
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


@contextlib.contextmanager
def one_blas_thread(active: bool = True) -> Iterator[None]:
    """BLAS limited to one thread inside the block (when ``active``), as it was after the last
    concurrent block ends."""
    global _depth, _limiter
    if not active:
        yield
        return
    with _lock:
        if _depth == 0:
            _free_openblas()
            _limiter = _blas_controller().limit(limits=1, user_api="blas")
            _free_openblas()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _free_openblas()
                _limiter.restore_original_limits()
                _free_openblas()
                _limiter = None


def set_one_blas_thread() -> None:
    """BLAS limited to one thread for the rest of the process: for processes whose whole life
    is speakerid's workers (a Ray actor, the REST service)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    log.debug("numpy BLAS limited to 1 thread")

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
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger("speakerid")

__all__ = ["one_blas_thread", "set_one_blas_thread"]


@contextlib.contextmanager
def one_blas_thread(active: bool = True) -> Iterator[None]:
    """BLAS limited to one thread inside the block (when ``active``), as it was after it."""
    if not active:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def set_one_blas_thread() -> None:
    """BLAS limited to one thread for the rest of the process: for processes whose whole life
    is speakerid's workers (a Ray actor, the REST service)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    log.debug("numpy BLAS limited to 1 thread")

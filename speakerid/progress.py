"""The one progress protocol of the library.

Long work (model pulls, embedding many clips, index builds, benchmarks) reports through a
single callback::

    progress(stage: str, done: int, total: int | None, **extra) -> None

``stage`` names what is going on ("pull campplus", "embedding", "indexing"...), ``done`` and
``total`` count its units (``total`` None when unknown). ``extra`` may carry ``audio_s``, the
seconds of audio finished so far, from which a front end shows audio seconds per second. A
stage is finished when ``done == total``. Callbacks must be cheap and thread-safe enough for
calls from worker threads; the library never draws anything itself (the CLI has the one rich
adapter) and logs what is worth a line through ``logging.getLogger("speakerid")``.
"""

from __future__ import annotations

import logging
from typing import Protocol

__all__ = ["Progress", "log", "report"]

log = logging.getLogger("speakerid")


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int | None, /, **extra: float) -> None: ...


def report(progress: Progress | None, stage: str, done: int, total: int | None, **extra: float) -> None:
    """Call ``progress`` if there is one."""
    if progress is not None:
        progress(stage, done, total, **extra)

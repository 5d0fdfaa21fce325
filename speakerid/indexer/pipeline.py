"""The indexing pipeline behind :func:`speakerid.indexer.build_index` and
:func:`~speakerid.indexer.add_files`: hash and prepare clips in worker threads, encode them
(in the workers or in the calling thread, see :mod:`speakerid.indexer`), add them to the index
in corpus order, save checkpoints, stop cleanly on Ctrl-C.

Progress goes through the one protocol (:mod:`speakerid.progress`): ``"indexing"`` (files done
of all files, with ``audio_s`` embedded so far and ``failed``) after every batch, and
``"checkpoint"`` (files done) just before each checkpoint save.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._io import sha256_file
from .._threads import one_blas_thread
from ..calibration import refresh_open_set
from ..corpus import Item
from ..embedder import Embedder, Embedding, Prepared
from ..identify import model_verification_threshold
from ..index import SpeakerIndex
from ..index.clips import warm_conversion
from ..progress import Progress, report

log = logging.getLogger("speakerid")

#: Individual warnings kept per kind; the rest are counted in one line.
MAX_WARNINGS_PER_KIND = 20
#: A checkpoint may take at most this fraction of the build's time (big indexes save slowly).
CHECKPOINT_MAX_FRACTION = 0.1


class _Warnings:
    """Warnings grouped by kind: the first MAX_WARNINGS_PER_KIND verbatim, then a count."""

    def __init__(self, initial: Iterable[str] = ()) -> None:
        self.lines = list(initial)
        self._extra: dict[str, tuple[int, str]] = {}
        self._seen: dict[str, int] = {}

    def add(self, kind: str, message: str, summary: str) -> None:
        n = self._seen.get(kind, 0) + 1
        self._seen[kind] = n
        if n <= MAX_WARNINGS_PER_KIND:
            self.lines.append(message)
        else:
            self._extra[kind] = (n - MAX_WARNINGS_PER_KIND, summary)

    def final(self) -> tuple[str, ...]:
        return (*self.lines, *(f"... and {n} more: {s}" for n, s in self._extra.values()))


@dataclass
class _Result:
    """What a worker made of one item."""

    i: int
    sha256: str = ""
    prepared: Prepared | None = None
    embedding: Embedding | None = None
    error: str | None = None
    #: "known" or "duplicate" when the item is not embedded.
    skipped: str | None = None
    #: For a duplicate: the index of the item whose content it repeats.
    first: int = -1
    #: Seconds spent decoding, preparing (and, in the workers, encoding) it.
    work_s: float = 0.0


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _Counts:
    embedded: int = 0
    known: int = 0
    duplicate: int = 0
    failed: int = 0
    audio_s: float = 0.0
    speech_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.embedded + self.known + self.duplicate + self.failed


class _StopFlag:
    """While active (main thread only), the first Ctrl-C sets a flag instead of raising."""

    def __init__(self) -> None:
        self.set = False
        self._old: Any = None
        self._active = False

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
                self._active = True
            except ValueError:  # not the main interpreter
                pass
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        if self.set:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc: object) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._old)


class _Pipeline:
    """Hash + prepare in worker threads; encode and add to the index in the calling thread."""

    def __init__(
        self,
        index: SpeakerIndex,
        embedder: Embedder,
        items: Sequence[Item],
        *,
        workers: int,
        progress: Progress | None,
        checkpoint_every_s: float,
        checkpoint_work_s: float,
        calibrate: bool,
        warnings: _Warnings,
        save_only_if_added: bool = False,
        encode_in_workers: bool | None = None,
    ) -> None:
        self.index, self.embedder, self.items = index, embedder, items
        self.workers, self.progress, self.warnings = workers, progress, warnings
        self.checkpoint_every_s = checkpoint_every_s
        self.checkpoint_work_s = checkpoint_work_s
        self.calibrate = calibrate
        #: add_files: write nothing (not even failures) unless a clip was added.
        self.save_only_if_added = save_only_if_added
        self._pending_failures: list[tuple[str, str]] = []
        #: Seconds of embedding work whose results are not saved yet.
        self.unsaved_work_s = 0.0
        #: The floor of every calibration in this run (read once: it hashes the model file).
        self.floor: float | None = None
        if calibrate:
            self.floor = model_verification_threshold(index.spec.model)
        #: Speakers given clips since the threshold was last calibrated (or its changes counted).
        self.changed_speakers: set[str] = set()
        self.counts = _Counts()
        #: Content (and paths) already in the index when the run started: the index's lookup
        #: files, O(log n) a query (issue 11: the two dicts over every clip this replaces took
        #: ~1.0 s to build per add_files call on a 1e6-clip gallery); later adds do not change it.
        self._known = index.clip_lookup()
        self._claimed: dict[str, int] = {}
        self._claim_lock = threading.Lock()
        partials = embedder.batches_clips
        # Models on fixed-length partials (GE2E) encode here, the ready clips batched; whole-window
        # models (CAM++) encode in the workers, one clip per call: their windows differ in length
        # (padding would change the statistics pooling), and even equal-length CAM++ windows gain
        # nothing stacked on 1 thread (4 x 3 s: 1.03x, 4 x 10 s: 0.93x the four single runs).
        self.encode_in_workers = (not partials) if encode_in_workers is None else encode_in_workers
        self.batch_max = 64 if partials and not self.encode_in_workers else 16

    # runs in worker threads
    def _work(self, i: int) -> _Result:
        item = self.items[i]
        try:
            sha = sha256_file(item.path)
        except FileNotFoundError:
            return _Result(i, error=f"AudioNotFoundError: audio file not found: {item.path}")
        except IsADirectoryError:
            return _Result(i, error=f"NotAFileError: not a regular file: {item.path}")
        except OSError as exc:
            return _Result(i, error=f"AudioDecodeError: cannot read {item.path}: {exc.strerror or exc}")
        with self._claim_lock:
            if self._known.contains_sha256(sha):
                return _Result(i, sha, skipped="known")
            first = self._claimed.setdefault(sha, i)
            if first != i:
                return _Result(i, sha, skipped="duplicate", first=first)
        t0 = time.perf_counter()
        try:
            prepared = self.embedder.prepare(item.path)
            if self.encode_in_workers:
                emb = self.embedder.encode([prepared])[0]
                return _Result(i, sha, embedding=emb, work_s=time.perf_counter() - t0)
            return _Result(i, sha, prepared=prepared, work_s=time.perf_counter() - t0)
        except Exception as exc:  # any failure of one file is recorded, never fatal
            return _Result(i, sha, error=_describe(exc), work_s=time.perf_counter() - t0)

    def _say(self) -> None:
        c = self.counts
        report(self.progress, "indexing", c.done, len(self.items), audio_s=c.audio_s, failed=c.failed)

    def _note_skip(self, r: _Result) -> None:
        item = self.items[r.i]
        if r.skipped == "known":
            self.counts.known += 1
            was = self._known.speakers_of([r.sha256]).get(r.sha256, item.speaker)
            if was != item.speaker:
                self.warnings.add(
                    "relabel", f"{item.path}: its content is already indexed as speaker {was!r}, "
                    f"not {item.speaker!r}; left as {was!r}", "clips already indexed under another speaker",
                )
        else:
            self.counts.duplicate += 1
            first = self.items[r.first]
            same = first.speaker == item.speaker
            self.warnings.add(
                "dup", f"{item.path}: same content as {first.path}"
                + ("" if same else f" (speaker {first.speaker!r}, here {item.speaker!r})") + "; processed once",
                "duplicate files processed once",
            )

    def _apply(self, results: list[_Result]) -> None:
        """Encode the prepared results and add them (and the failures) to the index."""
        ready = [r for r in results if r.prepared is not None]
        embs: list[Any] = []
        t_encode = time.perf_counter()
        if ready:  # encoder in this thread: the ready clips in one call (partials batched)
            try:
                embs = self.embedder.encode([r.prepared for r in ready])  # type: ignore[misc]
            except Exception:  # one bad clip: encode them one by one to find it
                embs = []
                for r in ready:
                    try:
                        embs.extend(self.embedder.encode([r.prepared]))  # type: ignore[list-item]
                    except Exception as exc:
                        embs.append(exc)
        self.unsaved_work_s += sum(r.work_s for r in results) + (time.perf_counter() - t_encode if ready else 0.0)
        good: list[tuple[_Result, Any]] = [(r, r.embedding) for r in results if r.embedding is not None]
        for r, e in zip(ready, embs):
            if isinstance(e, BaseException):
                r.error = _describe(e)
            else:
                good.append((r, e))
        for r, e in good:  # the index refuses such vectors: fail the clip, not the build
            if not (np.isfinite(e.vector).all() and np.linalg.norm(e.vector) > 1e-6):
                r.error = f"SpeakeridError: {e.source}: model {self.embedder.model} gave a zero or non-finite embedding"
        good = sorted(((r, e) for r, e in good if r.error is None), key=lambda re: re[0].i)
        if good:
            self.index.add(
                np.stack([e.vector for _, e in good]),
                speakers=[self.items[r.i].speaker for r, _ in good],
                paths=[os.path.abspath(self.items[r.i].path) for r, _ in good],
                sha256s=[r.sha256 for r, _ in good],
                durations_s=[e.duration_s for _, e in good],
                speech_s=[e.speech_s for _, e in good],
            )
        self.changed_speakers.update(self.items[r.i].speaker for r, _ in good)
        indexed_as = self._known.sha256_of_paths([os.path.abspath(self.items[r.i].path) for r, _ in good])
        for r, e in good:
            self.counts.embedded += 1
            self.counts.audio_s += e.duration_s
            self.counts.speech_s += e.speech_s
            path = os.path.abspath(self.items[r.i].path)
            if indexed_as.get(path, r.sha256) != r.sha256:
                self.warnings.add(
                    "changed", f"{path} changed since it was indexed; its old embedding is kept too "
                    "(remove the speaker and rebuild to drop it)", "files changed since they were indexed",
                )
        failed = [(os.path.abspath(self.items[r.i].path), r.error) for r in results if r.error is not None]
        if failed:
            self._pending_failures.extend(failed)  # type: ignore[arg-type]
            if not self.save_only_if_added:
                self._record_failures()
            self.counts.failed += len(failed)
            self.counts.failures.extend(failed)  # type: ignore[arg-type]
        for r in results:
            if r.skipped is not None:
                self._note_skip(r)

    def _record_failures(self) -> None:
        if self._pending_failures:
            self.index.record_failures(self._pending_failures)
            self._pending_failures = []

    def run(self) -> bool:
        """Process every item; returns False if stopped by Ctrl-C (what was done is saved)."""
        n = len(self.items)
        inflight = max(4, 3 * self.workers)
        batch_max = self.batch_max
        next_cp = time.monotonic() + self.checkpoint_every_s
        earliest_cp = time.monotonic()  # the work rule waits this long after a checkpoint
        pending: deque[Future[_Result]] = deque()
        todo = iter(range(n))
        warm_conversion()  # pyarrow's import of pandas, before the workers run (see there)
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="speakerid-prepare")
        stop = _StopFlag()
        try:
            with stop, one_blas_thread(self.workers > 1):
                self._say()
                while True:
                    while len(pending) < inflight and (i := next(todo, None)) is not None:
                        pending.append(pool.submit(self._work, i))
                    if not pending or stop.set:
                        break
                    results = [pending.popleft().result()]
                    while pending and pending[0].done() and len(results) < batch_max:
                        results.append(pending.popleft().result())
                    self._apply(results)
                    self._say()
                    now = time.monotonic()
                    if now >= next_cp or (self.unsaved_work_s >= self.checkpoint_work_s and now >= earliest_cp):
                        if self.save():
                            took = time.monotonic() - now
                            log.debug("checkpoint of %s: %d clips in %.3f s", self.index.path, len(self.index), took)
                        else:
                            took = 0.0
                        after = time.monotonic()
                        next_cp = after + max(self.checkpoint_every_s, took / CHECKPOINT_MAX_FRACTION)
                        earliest_cp = after + took / CHECKPOINT_MAX_FRACTION
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
        return not stop.set

    def save(self, *, final: bool = False, force_calibration: bool = False) -> bool:
        """Recalibrate the threshold if the gallery changed, then save atomically (a
        checkpoint, reported as such, unless ``final``).

        Every saved version thus carries a threshold calibrated on its own gallery, however
        the build ends (even killed between two checkpoints). With ``save_only_if_added``
        nothing is written (returns False) until a clip was added.
        """
        if self.save_only_if_added and self.counts.embedded == 0:
            self.unsaved_work_s = 0.0
            return False
        if not final:
            report(self.progress, "checkpoint", self.counts.done, len(self.items))
        self._record_failures()
        if self.calibrate and (self.changed_speakers or force_calibration):
            refresh_open_set(self.index, len(self.changed_speakers), force=force_calibration, floor=self.floor)
            self.changed_speakers = set()
        self.index.save()
        self.unsaved_work_s = 0.0
        return True

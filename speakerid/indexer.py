"""Corpus indexing: embed each speaker's clips in a pipeline and add them to an index.

Which clips belong to whom is :func:`speakerid.corpus.discover`'s job (speaker folders,
VoxCeleb layout, or a CSV/Parquet manifest).

Pipeline (:func:`build_index`, :func:`add_files`). ``workers`` threads hash each file
(sha256 of its bytes), skip it when that content is already in the index or earlier in the
run, and run :meth:`Embedder.prepare` (decode, VAD, front end). Where the encoder runs
depends on the model, and both ways give :meth:`Embedder.embed_detailed`'s result bit for bit:

* CAM++ (and other Kaldi-fbank models) take a whole variable-length window per run; padding
  clips to batch them would change the statistics pooling, so each clip is one run, and each
  worker encodes its own clips (ONNX Runtime releases the GIL; one intra-op thread each). On
  2 cores this is ~1.25x faster than one encoder thread fed by the workers, which the
  encoder alone bounds at ~200x real time (benchmarks/results/build.md).
* GE2E / AutoSpeech take fixed-length partials: the calling thread encodes the partials of
  all the clips prepared so far in batches of ``PARTIAL_BATCH`` (:meth:`Embedder.encode`).

The calling thread adds results to the index in corpus order.

Durability. The index is saved atomically (see :mod:`speakerid.index`) as a checkpoint when
either rule fires: ``checkpoint_work_s`` seconds of embedding work (decode + VAD + encoder,
summed over the workers) are not saved yet, or ``checkpoint_every_s`` seconds have passed.
Both are stretched so that checkpoints take at most CHECKPOINT_MAX_FRACTION of the time
(each one rewrites the whole index and recalibrates its threshold, so big indexes save
slowly). A build killed at any point (even ``kill -9``) re-run with the same arguments skips
every clip saved before the kill, so it redoes at most ``checkpoint_work_s`` seconds of work
(plus the clips in flight) while checkpoints are cheap. Ctrl-C stops the pipeline, saves what
is done and raises :class:`BuildInterrupted` (a KeyboardInterrupt carrying the report); a
second Ctrl-C stops at once without saving (the last checkpoint stands).

Concurrency. A build holds the index's writer lock from start to end; by default a second
writer fails at once with IndexLockedError naming the holder's pid (``wait_s`` makes it wait).

Files that cannot be embedded (undecodable, no speech...) are counted in the report and
never stop a build. :func:`build_index` records them in the index's failures table (they are
tried again on the next run). :func:`add_files` records them only along with clips it adds:
a call that adds nothing (every clip failed or was already indexed) writes no new version,
and does not create a missing index.

Calibration warnings (names that look like one voice enrolled twice, a gallery too small to
calibrate the open-set threshold) end up in the report's ``warnings``, after the per-file ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import EmbedOptions
from .corpus import AUDIO_EXTENSIONS, Corpus, Item, discover
from .embedder import Embedder, Embedding, Prepared
from .errors import ConfigError, ModelMismatchError
from .index import POINTER, IndexSpec, IndexType, SpeakerIndex
from .models.registry import DEFAULT_MODEL

__all__ = [
    "AUDIO_EXTENSIONS", "BuildInterrupted", "BuildReport", "BuildStatus", "Corpus", "Item",
    "add_files", "build_index", "discover", "remove_speaker",
]

#: Individual warnings kept per kind; the rest are counted in one line.
MAX_WARNINGS_PER_KIND = 20
#: A checkpoint may take at most this fraction of the build's time (big indexes save slowly).
CHECKPOINT_MAX_FRACTION = 0.1
#: Default ``checkpoint_work_s``: save once this many seconds of embedding work (summed over
#: the workers: ~1 s of wall time on 2) are unsaved. Measured at the librispeech-251 size (251
#: clips, 0.4 MB a version): a checkpoint costs ~10 ms of CPU (save with its fsyncs 7.5 ms,
#: calibration 2.4 ms) and 25-60 ms of wall time inside a running build, where it competes
#: with the workers (which keep preparing clips meanwhile): a full build made 19 of them.
CHECKPOINT_WORK_S = 2.0
#: Where the encoder runs: None (auto: in the worker threads for models with one run per clip,
#: in the calling thread, batched across clips, for models on partials), True or False.
ENCODE_IN_WORKERS: bool | None = None

log = logging.getLogger("speakerid")


# --- reports and progress -------------------------------------------------------------------


@dataclass(frozen=True)
class BuildStatus:
    """A snapshot of a running build, given to the ``progress`` callback."""

    #: "embedding" (after each file), "checkpoint", "calibrating", "saving" or "done".
    phase: str
    files_total: int
    files_done: int
    files_embedded: int
    files_skipped: int
    files_failed: int
    #: Audio seconds of the files embedded so far.
    audio_s: float
    #: Seconds since the pipeline started (model loading excluded).
    elapsed_s: float

    @property
    def real_time_factor(self) -> float:
        """Audio seconds embedded per second of wall time (150 = 150x faster than real time)."""
        return self.audio_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


Progress = Callable[[BuildStatus], None]


@dataclass(frozen=True)
class BuildReport:
    """What a build or add did. ``files_total`` = skipped_known + duplicate + embedded + failed
    (+ files not reached when interrupted)."""

    index_path: str
    model: str
    files_total: int
    #: Files whose content (sha256) was already in the index.
    files_skipped_known: int
    #: Files whose content appeared earlier in the same run (embedded once).
    files_duplicate: int
    files_embedded: int
    files_failed: int
    #: Audio and speech seconds of the embedded files.
    audio_s: float
    speech_s: float
    #: Wall time of the whole call (model loading and saving included).
    elapsed_s: float
    #: audio_s / elapsed_s: how many times faster than real time.
    real_time_factor: float
    warnings: tuple[str, ...] = ()
    #: (path, "ErrorType: message") of each file that failed in this run.
    failures: tuple[tuple[str, str], ...] = ()
    speakers: int = 0
    utterances: int = 0
    threshold: float | None = None
    interrupted: bool = False


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a build: what was done is saved; ``report`` says how far it got."""

    def __init__(self, report: BuildReport) -> None:
        super().__init__("build interrupted; finished files were saved")
        self.report = report


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


# --- the pipeline ---------------------------------------------------------------------------


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


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
            from .identify import model_verification_threshold

            self.floor = model_verification_threshold(index.spec.model)
        #: Clips were added since the threshold was last calibrated.
        self.gallery_changed = False
        self.counts = _Counts()
        utt = index.utterances()
        shas = utt["sha256"].to_pylist()
        #: Content already in the index when the run started (read-only during the run).
        self._speaker_of = dict(zip(shas, utt["speaker"].to_pylist()))
        self._sha_of_path = dict(zip(utt["path"].to_pylist(), shas))
        self._claimed: dict[str, int] = {}
        self._claim_lock = threading.Lock()
        partials = embedder.batches_clips
        self.encode_in_workers = (not partials) if ENCODE_IN_WORKERS is None else ENCODE_IN_WORKERS
        self.batch_max = 64 if partials and not self.encode_in_workers else 16
        self.t0 = time.monotonic()

    # runs in worker threads
    def _work(self, i: int) -> _Result:
        item = self.items[i]
        try:
            sha = _sha256(item.path)
        except FileNotFoundError:
            return _Result(i, error=f"AudioNotFoundError: audio file not found: {item.path}")
        except IsADirectoryError:
            return _Result(i, error=f"NotAFileError: not a regular file: {item.path}")
        except OSError as exc:
            return _Result(i, error=f"AudioDecodeError: cannot read {item.path}: {exc.strerror or exc}")
        with self._claim_lock:
            if sha in self._speaker_of:
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

    def status(self, phase: str) -> BuildStatus:
        c = self.counts
        return BuildStatus(
            phase=phase, files_total=len(self.items), files_done=c.done, files_embedded=c.embedded,
            files_skipped=c.known + c.duplicate, files_failed=c.failed, audio_s=c.audio_s,
            elapsed_s=time.monotonic() - self.t0,
        )

    def _say(self, phase: str) -> None:
        if self.progress is not None:
            self.progress(self.status(phase))

    def _note_skip(self, r: _Result) -> None:
        item = self.items[r.i]
        if r.skipped == "known":
            self.counts.known += 1
            was = self._speaker_of[r.sha256]
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
        self.gallery_changed = self.gallery_changed or bool(good)
        for r, e in good:
            self.counts.embedded += 1
            self.counts.audio_s += e.duration_s
            self.counts.speech_s += e.speech_s
            path = os.path.abspath(self.items[r.i].path)
            if self._sha_of_path.get(path, r.sha256) != r.sha256:
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
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="speakerid-prepare")
        stop = _StopFlag()
        try:
            with stop:
                self._say("embedding")
                while True:
                    while len(pending) < inflight and (i := next(todo, None)) is not None:
                        pending.append(pool.submit(self._work, i))
                    if not pending or stop.set:
                        break
                    results = [pending.popleft().result()]
                    while pending and pending[0].done() and len(results) < batch_max:
                        results.append(pending.popleft().result())
                    self._apply(results)
                    self._say("embedding")
                    now = time.monotonic()
                    if now >= next_cp or (self.unsaved_work_s >= self.checkpoint_work_s and now >= earliest_cp):
                        if self.save("checkpoint"):
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

    def save(self, phase: str, *, force_calibration: bool = False) -> bool:
        """Recalibrate the threshold if the gallery changed, then save atomically.

        Every saved version thus carries a threshold calibrated on its own gallery, however
        the build ends (even killed between two checkpoints). With ``save_only_if_added``
        nothing is written (returns False) until a clip was added.
        """
        if self.save_only_if_added and self.counts.embedded == 0:
            self.unsaved_work_s = 0.0
            return False
        self._record_failures()
        if self.calibrate and (self.gallery_changed or force_calibration):
            self._say("calibrating")
            _calibrate(self.index, self.floor)
            self.gallery_changed = False
        self._say(phase)
        self.index.save()
        self.unsaved_work_s = 0.0
        return True


# --- public entry points --------------------------------------------------------------------


def _check_workers(workers: int | None) -> int:
    if workers is None:
        return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    return workers


def _check_interval(value: float, name: str = "checkpoint_every_s") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _open_for_writing(
    index_dir: Path,
    model: str | None,
    index_type: IndexType | None,
    embedder: Embedder | None,
    wait_s: float | None,
    create_empty: bool = True,
) -> tuple[SpeakerIndex, Embedder]:
    """Open (or create) the index writable and get an embedder of its model.

    An existing index keeps its model: a different ``model`` (or embedder) raises
    ModelMismatchError, a different ``index_type`` ConfigError. A missing index is created;
    ``create_empty=False`` defers writing it to the first save.
    """
    if embedder is not None and model is not None and model != embedder.model:
        raise ConfigError(f"model={model!r} but the embedder given runs {embedder.model!r}")
    model = model or (embedder.model if embedder is not None else None)
    if (index_dir / POINTER).exists():
        index = SpeakerIndex.open(index_dir, model=model, writable=True, wait_s=wait_s)
        try:
            if index_type is not None and index_type != index.spec.index_type:
                raise ConfigError(
                    f"index at {index_dir} is of type {index.spec.index_type!r}, not {index_type!r} "
                    "(build a new index to change its type)"
                )
            if embedder is None:
                embedder = Embedder(index.spec.model, embed=EmbedOptions(threads=1))
            s = index.spec
            if (embedder.weights_sha256, embedder.dim) != (s.weights_sha256, s.dim):
                raise ModelMismatchError(
                    f"index at {index_dir} was built with {s.model} weights {s.weights_sha256[:12]} "
                    f"({s.dim}-d), but that model now has weights {embedder.weights_sha256[:12]} "
                    f"({embedder.dim}-d); rebuild the index into a new folder"
                )
        except BaseException:
            index.close()
            raise
        return index, embedder
    if embedder is None:
        embedder = Embedder(model or DEFAULT_MODEL, embed=EmbedOptions(threads=1))
    spec = IndexSpec(
        model=embedder.model, weights_sha256=embedder.weights_sha256, dim=embedder.dim,
        index_type=index_type or "flat",
    )
    # exist_ok: another process may have created it meanwhile (then its checks apply)
    return SpeakerIndex.create(index_dir, spec, exist_ok=True, wait_s=wait_s, save=create_empty), embedder


def _calibrate(index: SpeakerIndex, floor: float | None | str = "model") -> None:
    from .identify import calibrate_open_set

    calibrate_open_set(index, floor=floor)  # type: ignore[arg-type]


def _index_items(
    items: Sequence[Item],
    index_dir: str | os.PathLike[str],
    *,
    model: str | None,
    index_type: IndexType | None,
    workers: int | None,
    progress: Progress | None,
    checkpoint_every_s: float,
    checkpoint_work_s: float,
    rebuild_threshold: bool,
    wait_s: float | None,
    embedder: Embedder | None,
    warnings: Sequence[str],
    adding: bool = False,
) -> BuildReport:
    t_start = time.monotonic()
    n_workers = _check_workers(workers)
    interval = _check_interval(checkpoint_every_s)
    work_s = _check_interval(checkpoint_work_s, "checkpoint_work_s")
    for it in items:
        if not isinstance(it, Item):
            raise ConfigError(f"items must be Item(path, speaker), got {type(it).__name__}")
        if not it.speaker.strip():
            raise ConfigError(f"{it.path}: empty speaker name")
    index, embedder = _open_for_writing(
        Path(index_dir), model, index_type, embedder, wait_s, create_empty=not adding
    )
    with index:  # an exception (or a second Ctrl-C) leaves the last checkpoint as it was
        pipe = _Pipeline(
            index, embedder, items, workers=n_workers, progress=progress, checkpoint_every_s=interval,
            checkpoint_work_s=work_s, calibrate=rebuild_threshold, warnings=_Warnings(warnings),
            save_only_if_added=adding,
        )
        finished = pipe.run()
        pipe.save("saving", force_calibration=index.info()["threshold_method"] is None)
        c = pipe.counts
        elapsed = time.monotonic() - t_start
        # what the threshold rests on applies to the gallery as it now stands
        final_warnings = pipe.warnings.final()
        final_warnings += tuple(w for w in index.info()["threshold_warnings"] if w not in final_warnings)
        report = BuildReport(
            index_path=str(index.path), model=embedder.model, files_total=len(items),
            files_skipped_known=c.known, files_duplicate=c.duplicate, files_embedded=c.embedded,
            files_failed=c.failed, audio_s=c.audio_s, speech_s=c.speech_s, elapsed_s=elapsed,
            real_time_factor=c.audio_s / elapsed if elapsed > 0 else 0.0,
            warnings=final_warnings, failures=tuple(c.failures),
            speakers=len(index.speakers()), utterances=len(index), threshold=index.threshold,
            interrupted=not finished,
        )
        pipe._say("done")
    if not finished:
        raise BuildInterrupted(report)
    return report


def build_index(
    source: str | os.PathLike[str],
    index_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    index_type: IndexType | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    checkpoint_every_s: float = 30.0,
    rebuild_threshold: bool = True,
    wait_s: float | None = 0.0,
    embedder: Embedder | None = None,
    checkpoint_work_s: float = CHECKPOINT_WORK_S,
) -> BuildReport:
    """Index a speakers folder or manifest (see :func:`discover`) into ``index_dir``.

    Creates the index, or adds to the existing one: files whose content is already indexed
    are skipped, so re-running after an interruption or after adding files embeds only
    what is new. ``model`` (default: the existing index's, else ``campplus``) and
    ``index_type`` (default: the existing index's, else ``flat``) must match an existing
    index. ``workers`` threads prepare clips (default: all cores); ``progress`` receives a
    :class:`BuildStatus` after every file. ``wait_s``: how long to wait for another writer
    (default 0: fail at once with IndexLockedError; None: forever). With
    ``rebuild_threshold`` the open-set threshold is recalibrated when the gallery changed.
    ``embedder`` reuses a loaded model (give it ``EmbedOptions(threads=1)``: the workers
    already use every core). Progress is saved every ``checkpoint_work_s`` seconds of
    embedding work and at least every ``checkpoint_every_s`` seconds (see the module notes).
    Files that fail are recorded in the index's failures table.
    """
    corpus = discover(source)
    return _index_items(
        corpus, index_dir, model=model, index_type=index_type, workers=workers, progress=progress,
        checkpoint_every_s=checkpoint_every_s, checkpoint_work_s=checkpoint_work_s,
        rebuild_threshold=rebuild_threshold, wait_s=wait_s, embedder=embedder, warnings=corpus.warnings,
    )


def add_files(
    index_dir: str | os.PathLike[str],
    items: Sequence[Item],
    *,
    model: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    checkpoint_every_s: float = 30.0,
    rebuild_threshold: bool = True,
    wait_s: float | None = 0.0,
    embedder: Embedder | None = None,
    checkpoint_work_s: float = CHECKPOINT_WORK_S,
) -> BuildReport:
    """Embed ``items`` into the index at ``index_dir`` (created with ``model`` if missing).

    The same pipeline as :func:`build_index` (incremental, checkpointed), with one difference:
    a call that adds no clip (every one failed, or was already indexed) writes nothing, not
    even a new version with its failures, and leaves a missing index uncreated. Failures of
    a call that does add clips are recorded with them; the report lists them either way.
    """
    items = list(items)
    if not items:
        raise ConfigError("no clips to add")
    return _index_items(
        items, index_dir, model=model, index_type=None, workers=workers, progress=progress,
        checkpoint_every_s=checkpoint_every_s, checkpoint_work_s=checkpoint_work_s,
        rebuild_threshold=rebuild_threshold, wait_s=wait_s, embedder=embedder, warnings=(), adding=True,
    )


def remove_speaker(
    index_dir: str | os.PathLike[str],
    name: str,
    *,
    rebuild_threshold: bool = True,
    wait_s: float | None = 0.0,
) -> int:
    """Remove every clip of speaker ``name``, recalibrate the threshold, save; returns the count."""
    with SpeakerIndex.open(index_dir, writable=True, wait_s=wait_s) as index:
        n = index.remove_speaker(name)
        if rebuild_threshold:
            _calibrate(index)
        index.save()
    return n

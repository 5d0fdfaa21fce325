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

``encode_in_workers`` (True / False) overrides that choice (benchmarks/bench_build.py compares
both). The calling thread adds results to the index in corpus order (the pipeline itself is
in :mod:`speakerid.indexer.pipeline`).

Progress goes through the one protocol (:mod:`speakerid.progress`): ``progress("indexing",
files_done, files_total, audio_s=..., failed=...)`` after every batch of files,
``progress("checkpoint", files_done, files_total)`` before each checkpoint save, and
``progress("saving", 0, 1)`` / ``(1, 1)`` around the final save.

Durability. The index is saved atomically (see :mod:`speakerid.index.storage`) as a checkpoint when
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

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..calibration import refresh_open_set
from ..config import EmbedOptions
from ..corpus import AUDIO_EXTENSIONS, Corpus, Item, discover
from ..embedder import Embedder
from ..errors import ConfigError
from ..index import POINTER, IndexSpec, IndexType, SpeakerIndex, open_with_embedder
from ..models.registry import DEFAULT_MODEL
from ..progress import Progress, report
from .pipeline import CHECKPOINT_MAX_FRACTION, MAX_WARNINGS_PER_KIND, _Pipeline, _Warnings

__all__ = [
    "AUDIO_EXTENSIONS", "BuildInterrupted", "BuildReport", "CHECKPOINT_MAX_FRACTION", "CHECKPOINT_WORK_S",
    "Corpus", "Item", "MAX_WARNINGS_PER_KIND", "add_files", "build_index", "discover", "remove_speaker",
]

#: Default ``checkpoint_work_s``: save once this many seconds of embedding work (summed over
#: the workers: ~1 s of wall time on 2) are unsaved. Measured at the librispeech-251 size (251
#: clips, 0.4 MB a version): a checkpoint costs ~10 ms of CPU (save with its fsyncs 7.5 ms,
#: calibration 2.4 ms) and 25-60 ms of wall time inside a running build, where it competes
#: with the workers (which keep preparing clips meanwhile): a full build made 19 of them.
CHECKPOINT_WORK_S = 2.0


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

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types (each failure as {"path", "error"})."""
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        d["failures"] = [{"path": p, "error": e} for p, e in self.failures]
        return d


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a build: what was done is saved; ``report`` says how far it got."""

    def __init__(self, report: BuildReport) -> None:
        super().__init__("build interrupted; finished files were saved")
        self.report = report


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
    if (index_dir / POINTER).exists():
        index, embedder = open_with_embedder(
            index_dir, model=model, embedder=embedder, writable=True, wait_s=wait_s,
            embed=None if embedder is not None else EmbedOptions(threads=1),
        )
        if index_type is not None and index_type != index.spec.index_type:
            index.close()
            raise ConfigError(
                f"index at {index_dir} is of type {index.spec.index_type!r}, not {index_type!r} "
                "(build a new index to change its type)"
            )
        return index, embedder
    if embedder is None:
        embedder = Embedder(model or DEFAULT_MODEL, embed=EmbedOptions(threads=1))
    spec = IndexSpec(
        model=embedder.model, weights_sha256=embedder.weights_sha256, dim=embedder.dim,
        index_type=index_type or "flat",
    )
    # exist_ok: another process may have created it meanwhile (then its checks apply)
    return SpeakerIndex.create(index_dir, spec, exist_ok=True, wait_s=wait_s, save=create_empty), embedder


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
    encode_in_workers: bool | None,
    warnings: Sequence[str],
    adding: bool = False,
) -> BuildReport:
    t_start = time.monotonic()
    n_workers = _check_workers(workers)
    interval = _check_interval(checkpoint_every_s)
    work_s = _check_interval(checkpoint_work_s, "checkpoint_work_s")
    if encode_in_workers is not None and not isinstance(encode_in_workers, bool):
        raise ConfigError(f"encode_in_workers must be None, True or False, got {encode_in_workers!r}")
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
            save_only_if_added=adding, encode_in_workers=encode_in_workers,
        )
        finished = pipe.run()
        result = _finish(pipe, index, embedder, len(items), finished, t_start, progress)
    if not finished:
        raise BuildInterrupted(result)
    return result



def _finish(
    pipe: _Pipeline, index: SpeakerIndex, embedder: Embedder, n_items: int, finished: bool, t_start: float,
    progress: Progress | None,
) -> BuildReport:
    """The final save of a build (either engine) and its report."""
    report(progress, "saving", 0, 1)
    pipe.save(final=True, force_calibration=index.threshold_method is None)
    report(progress, "saving", 1, 1)
    c = pipe.counts
    elapsed = time.monotonic() - t_start
    # what the threshold rests on applies to the gallery as it now stands
    final_warnings = pipe.warnings.final()
    final_warnings += tuple(w for w in index.threshold_warnings if w not in final_warnings)
    return BuildReport(
        index_path=str(index.path), model=embedder.model, files_total=n_items,
        files_skipped_known=c.known, files_duplicate=c.duplicate, files_embedded=c.embedded,
        files_failed=c.failed, audio_s=c.audio_s, speech_s=c.speech_s, elapsed_s=elapsed,
        real_time_factor=c.audio_s / elapsed if elapsed > 0 else 0.0,
        warnings=final_warnings, failures=tuple(c.failures),
        speakers=len(index.speakers()), utterances=len(index), threshold=index.threshold,
        interrupted=not finished,
    )

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
    encode_in_workers: bool | None = None,
) -> BuildReport:
    """Index a speakers folder or manifest (see :func:`discover`) into ``index_dir``.

    Creates the index, or adds to the existing one: files whose content is already indexed
    are skipped, so re-running after an interruption or after adding files embeds only
    what is new. ``model`` (default: the existing index's, else ``campplus``) and
    ``index_type`` (default: the existing index's, else ``flat``) must match an existing
    index. ``workers`` threads prepare clips (default: all cores); ``progress`` is called as
    ``progress(stage, done, total, **extra)`` (see the module notes). ``wait_s``: how long to
    wait for another writer (default 0: fail at once with IndexLockedError; None: forever).
    With ``rebuild_threshold`` the open-set threshold is recalibrated when the gallery
    changed. ``embedder`` reuses a loaded model (give it ``EmbedOptions(threads=1)``: the
    workers already use every core). Progress is saved every ``checkpoint_work_s`` seconds of
    embedding work and at least every ``checkpoint_every_s`` seconds (see the module notes).
    ``encode_in_workers`` says where the encoder runs (None: the model's best way, see the
    module notes). Files that fail are recorded in the index's failures table.
    """
    corpus = discover(source)
    return _index_items(
        corpus, index_dir, model=model, index_type=index_type, workers=workers, progress=progress,
        checkpoint_every_s=checkpoint_every_s, checkpoint_work_s=checkpoint_work_s,
        rebuild_threshold=rebuild_threshold, wait_s=wait_s, embedder=embedder,
        encode_in_workers=encode_in_workers, warnings=corpus.warnings,
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
    encode_in_workers: bool | None = None,
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
        rebuild_threshold=rebuild_threshold, wait_s=wait_s, embedder=embedder,
        encode_in_workers=encode_in_workers, warnings=(), adding=True,
    )


def remove_speaker(
    index_dir: str | os.PathLike[str],
    name: str,
    *,
    rebuild_threshold: bool = True,
    wait_s: float | None = 0.0,
) -> int:
    """Remove every clip of speaker ``name``, recalibrate the threshold when due
    (:func:`speakerid.calibration.refresh_open_set`), save; returns the count."""
    with SpeakerIndex.open(index_dir, writable=True, wait_s=wait_s) as index:
        n = index.remove_speaker(name)
        if rebuild_threshold:
            refresh_open_set(index, 1)
        index.save()
    return n

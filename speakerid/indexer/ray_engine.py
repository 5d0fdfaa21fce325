"""Distributed indexing on Ray: ``speakerid index build DIR --engine ray [--address auto]``.

Ray does the distribution; nothing here schedules work by itself. The corpus (a list of
``{"i", "path"}`` rows, :func:`ray.data.from_items`) flows through one Ray Data
``map_batches`` stage run by an actor pool (``concurrency`` actors of one CPU each, one
:class:`~speakerid.embedder.Embedder` per actor, loaded once). Each actor does what a worker
thread of the local engine does (:mod:`speakerid.indexer.pipeline`): sha256 of the file's
bytes, skip it when that content is already in the index, decode + VAD + front end + encoder.

The driver (this process) holds the index's writer lock from start to end and commits
through the local engine's own commit path (``_Pipeline._apply`` and ``_Pipeline.save``:
``SpeakerIndex.add``, ``record_failures``, calibration, ``save``), so the result is the same
index format with the same guarantees: results are committed in corpus order (the driver
re-orders what the actors return), hence the same ids as the local engine; content already
indexed is never re-embedded (resume after a kill re-embeds only what the last checkpoint
missed); a file that fails is recorded in the failures table and never stops the build;
content repeated within the run is kept once (the later copies count as duplicates).
Checkpoints follow the local engine's rules (``checkpoint_work_s`` / ``checkpoint_every_s``).

Cluster. ``address=None`` uses the Ray runtime already initialised in this process, else
starts a local one (``num_cpus`` of them); ``"auto"`` joins the cluster this machine belongs
to; ``"ray://host:10001"`` connects a Ray Client. Every worker node needs speakerid (same
version) and the model in its cache (``speakerid models pull``, or a shared ``SPEAKERID_HOME``,
which is forwarded to the workers), and must see the audio files under the same paths (a
shared file system). An actor whose model weights differ from the index's is refused
(ModelMismatchError) before anything is added.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import sha256_file
from .._threads import set_one_blas_thread
from ..config import EmbedOptions
from ..corpus import Item, discover
from ..embedder import Embedder, Embedding
from ..errors import ConfigError, ModelMismatchError
from ..index import IndexType
from ..progress import Progress
from . import CHECKPOINT_WORK_S, BuildInterrupted, BuildReport, _check_interval, _finish, _open_for_writing
from .pipeline import CHECKPOINT_MAX_FRACTION, _Pipeline, _Result, _StopFlag, _Warnings

log = logging.getLogger("speakerid")

__all__ = ["RAY_BATCH", "build_index_ray", "ray_available"]

#: Clips per map_batches call. Small, so that the actors stay balanced on clips of very
#: different lengths (librispeech-251: 1.6 s to 17 s) and the first results come soon; but each
#: call costs the driver (Ray Data's scheduling, results) CPU that the actors' cores pay for: a
#: 2x librispeech-251 build on 2 cores took 9.0 s of driver CPU in 53.1 s with 4 clips a call,
#: 5.6 s in 51.5 s with 16. Over the local engine (benchmarks/bench_ray.py, whole builds): 4 clips,
#: 13.1 % on librispeech-251 but 18.3 % on 4 times as much (driver-bound); 16 clips, 15.3 % /
#: 7.0 % (a later first clip); 8 clips, 12.6 % / 8.2 %.
RAY_BATCH = 8


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "the ray engine needs Ray Data: pip install 'speakerid[ray]' (ray[data])"
        ) from exc
    return ray


class _EmbedActor:
    """One per Ray actor: an Embedder of the index's model and the content already indexed."""

    def __init__(self, model: str, weights_sha256: str, known: Any, paths: Any) -> None:
        import ray

        set_one_blas_thread()  # an actor per core, each on one ORT thread (speakerid._threads)
        self.embedder = Embedder(model, embed=EmbedOptions(threads=1))
        if self.embedder.weights_sha256 != weights_sha256:
            raise ModelMismatchError(
                f"a Ray worker on {os.uname().nodename} has model {model} with weights "
                f"{self.embedder.weights_sha256[:12]}, the index was built with {weights_sha256[:12]}"
            )
        # ObjectRefs nested in a dict are not resolved by Ray: get them here (once per actor)
        self.known = ray.get(known["ref"])
        self.paths = ray.get(paths["ref"])

    def _one(self, i: int) -> dict[str, Any]:
        path = self.paths[i]
        row: dict[str, Any] = {"i": i, "sha256": "", "error": "", "skipped": "", "work_s": 0.0,
                               "duration_s": 0.0, "speech_s": 0.0, "source": "", "warnings": ""}
        try:
            sha = sha256_file(path)
        except FileNotFoundError:
            return {**row, "error": f"AudioNotFoundError: audio file not found: {path}"}
        except IsADirectoryError:
            return {**row, "error": f"NotAFileError: not a regular file: {path}"}
        except OSError as exc:
            return {**row, "error": f"AudioDecodeError: cannot read {path}: {exc.strerror or exc}"}
        row["sha256"] = sha
        if sha in self.known:
            return {**row, "skipped": "known"}
        t0 = time.perf_counter()
        try:
            emb = self.embedder.encode([self.embedder.prepare(path)])[0]
        except Exception as exc:  # any failure of one file is recorded, never fatal
            return {**row, "error": f"{type(exc).__name__}: {exc}", "work_s": time.perf_counter() - t0}
        return {**row, "vector": emb.vector, "work_s": time.perf_counter() - t0, "duration_s": emb.duration_s,
                "speech_s": emb.speech_s, "source": emb.source, "warnings": "\n".join(emb.warnings)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self._one(int(i)) for i in batch["i"]]
        zero = np.zeros(self.embedder.dim, np.float32)
        out: dict[str, np.ndarray] = {
            "vector": np.stack([r.get("vector", zero) for r in rows]).astype(np.float32),
        }
        for key in ("i", "sha256", "error", "skipped", "work_s", "duration_s", "speech_s", "source", "warnings"):
            out[key] = np.array([r[key] for r in rows], dtype=object if isinstance(rows[0][key], str) else None)
        return out


def _connect(ray: Any, address: str | None, num_cpus: int | None) -> bool:
    """Initialise Ray unless it already is; True when this call started it."""
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in ("SPEAKERID_HOME",) if k in os.environ}
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "runtime_env": {"env_vars": env} if env else None}
    if address is None:
        kwargs["num_cpus"] = num_cpus
    ray.init(address=address, **kwargs)
    return True


def _results_of(batch: dict[str, np.ndarray], model: str) -> list[_Result]:
    """The actors' rows as the local engine's results (embeddings rebuilt)."""
    out = []
    for j in range(len(batch["i"])):
        r = _Result(int(batch["i"][j]), sha256=str(batch["sha256"][j]), work_s=float(batch["work_s"][j]))
        if batch["error"][j]:
            r.error = str(batch["error"][j])
        elif batch["skipped"][j]:
            r.skipped = str(batch["skipped"][j])
        else:
            warns = str(batch["warnings"][j])
            r.embedding = Embedding(
                vector=np.asarray(batch["vector"][j], np.float32), model=model,
                duration_s=float(batch["duration_s"][j]), speech_s=float(batch["speech_s"][j]),
                source=str(batch["source"][j]), warnings=tuple(warns.split("\n")) if warns else (),
            )
        out.append(r)
    return out


def build_index_ray(
    source: str | os.PathLike[str] | Sequence[Item],
    index_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    index_type: IndexType | None = None,
    address: str | None = None,
    concurrency: int | None = None,
    num_cpus: int | None = None,
    progress: Progress | None = None,
    checkpoint_every_s: float = 30.0,
    checkpoint_work_s: float = CHECKPOINT_WORK_S,
    rebuild_threshold: bool = True,
    wait_s: float | None = 0.0,
    embedder: Embedder | None = None,
    batch_size: int = RAY_BATCH,
) -> BuildReport:
    """:func:`speakerid.indexer.build_index` with the embedding done by a Ray actor pool.

    ``source`` is a corpus (folder or manifest, see :func:`discover`) or a list of Items.
    ``address``: see the module notes (None: the running or a new local Ray). ``concurrency``
    actors (default: every CPU of the cluster) of one CPU each; ``num_cpus`` sizes a local
    cluster started here. The other arguments are those of ``build_index``; the result is
    the same index, with the same report.
    """
    t_start = time.monotonic()
    interval = _check_interval(checkpoint_every_s)
    work_s = _check_interval(checkpoint_work_s, "checkpoint_work_s")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise ConfigError(f"concurrency must be a positive integer, got {concurrency!r}")
    if isinstance(source, (str, os.PathLike)):
        corpus = discover(source)
        items, warnings = list(corpus), list(corpus.warnings)
    else:
        items, warnings = list(source), []
    for it in items:
        if not isinstance(it, Item):
            raise ConfigError(f"items must be Item(path, speaker), got {type(it).__name__}")
    ray = _import_ray()
    started = _connect(ray, address, num_cpus)
    try:
        index, embedder = _open_for_writing(Path(index_dir), model, index_type, embedder, wait_s)
        with index:
            pipe = _Pipeline(
                index, embedder, items, workers=1, progress=progress, checkpoint_every_s=interval,
                checkpoint_work_s=work_s, calibrate=rebuild_threshold, warnings=_Warnings(warnings),
            )
            finished = _run(ray, pipe, concurrency, batch_size)
            result = _finish(pipe, index, embedder, len(items), finished, t_start, progress)
    finally:
        if started:
            ray.shutdown()
    if not finished:
        raise BuildInterrupted(result)
    return result


def _run(ray: Any, pipe: _Pipeline, concurrency: int | None, batch_size: int) -> bool:
    """Stream the corpus through the actor pool; commit in corpus order with checkpoints.
    Returns False if stopped by Ctrl-C (what was committed is saved by the caller)."""
    items, index = pipe.items, pipe.index
    n = len(items)
    pipe._say()
    if n == 0:
        return True
    known = frozenset(index.known_sha256())
    paths = [os.path.abspath(it.path) for it in items]  # the workers' cwd is not ours
    if concurrency is None:
        concurrency = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.from_items([{"i": i} for i in range(n)], override_num_blocks=max(1, math.ceil(n / batch_size)))
    ds = ds.map_batches(
        _EmbedActor, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=1,
        fn_constructor_kwargs={"model": index.spec.model, "weights_sha256": index.spec.weights_sha256,
                               "known": {"ref": ray.put(known)}, "paths": {"ref": ray.put(paths)}},
    )
    waiting: dict[int, _Result] = {}
    next_i = 0
    first_of: dict[str, int] = {}
    next_cp = time.monotonic() + pipe.checkpoint_every_s
    earliest_cp = time.monotonic()
    stop = _StopFlag()
    with stop:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            for r in _results_of(batch, index.spec.model):
                waiting[r.i] = r
            ready: list[_Result] = []
            while next_i in waiting:
                r = waiting.pop(next_i)
                next_i += 1
                if r.sha256 and r.skipped is None:  # content seen earlier in this run: keep it once
                    first = first_of.setdefault(r.sha256, r.i)
                    if first != r.i:
                        r.skipped, r.first, r.embedding, r.error = "duplicate", first, None, None
                ready.append(r)
            if ready:
                pipe._apply(ready)
                pipe._say()
            if stop.set:
                break
            now = time.monotonic()
            if now >= next_cp or (pipe.unsaved_work_s >= pipe.checkpoint_work_s and now >= earliest_cp):
                took = 0.0
                if pipe.save():
                    took = time.monotonic() - now
                    log.debug("checkpoint of %s: %d clips in %.3f s", index.path, len(index), took)
                after = time.monotonic()
                next_cp = after + max(pipe.checkpoint_every_s, took / CHECKPOINT_MAX_FRACTION)
                earliest_cp = after + took / CHECKPOINT_MAX_FRACTION
    return not stop.set

"""Embedding many files or in-memory clips through the embedding cache.

A content (file bytes, or samples and their rate) seen under several keys is embedded once;
contents already in the cache are not embedded at all. Files that do not exist are listed in
``missing`` and clips that give no embedding in ``errors``: neither stops a run. Progress goes
to one :class:`speakerid.progress.Progress` callback, under a hashing and an embedding stage
(the latter with ``audio_s`` and ``failed``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._io import sha256_file
from ..errors import ConfigError, SpeakeridError
from ..progress import Progress, report
from .embcache import CACHEABLE_ERRORS, CacheEntry, EmbeddingCache, samples_sha256

if TYPE_CHECKING:
    from ..embedder import Embedder, Embedding, Source

__all__ = ["EmbedOutcome", "embed_files", "embed_samples"]


@dataclass
class EmbedOutcome:
    """What :func:`embed_files` / :func:`embed_samples` produced, keyed by the caller's keys."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    duration_s: dict[str, float] = field(default_factory=dict)
    speech_s: dict[str, float] = field(default_factory=dict)
    #: key -> "ErrorType: message" for clips that gave no embedding
    errors: dict[str, str] = field(default_factory=dict)
    #: keys whose file does not exist (or is not a readable regular file)
    missing: list[str] = field(default_factory=list)
    #: distinct contents: found in the cache / embedded now
    cached_n: int = 0
    embedded_n: int = 0
    embed_s: float = 0.0

    def stats(self) -> dict[str, float | int]:
        return {
            "requested": len(self.vectors) + len(self.errors) + len(self.missing),
            "embedded_ok": len(self.vectors),
            "failed": len(self.errors),
            "missing": len(self.missing),
            "distinct_cached": self.cached_n,
            "distinct_embedded": self.embedded_n,
            "embed_seconds": round(self.embed_s, 3),
        }


def _error_text(exc: SpeakeridError, source: str) -> str:
    msg = str(exc)
    if source and msg.startswith(f"{source}: "):  # the path is the caller's business
        msg = msg[len(source) + 2 :]
    return f"{type(exc).__name__}: {msg}"


def _check_cache(cache: EmbeddingCache | None, embedder: Embedder) -> None:
    if cache is not None and (cache.model != embedder.model or cache.weights_sha256 != embedder.weights_sha256):
        raise ConfigError(
            f"embedding cache is for {cache.model} ({cache.weights_sha256[:12]}), "
            f"the embedder is {embedder.model} ({embedder.weights_sha256[:12]})"
        )


def _split_cached(
    keyed: dict[str, tuple[str, Source]], cache: EmbeddingCache | None
) -> tuple[dict[str, CacheEntry], dict[str, Source]]:
    """(sha -> cached entry, sha -> first source of each content not in the cache)."""
    todo: dict[str, Source] = {}
    hits: dict[str, CacheEntry] = {}
    for sha, src in keyed.values():
        if sha in hits or sha in todo:
            continue
        entry = cache.get(sha) if cache is not None else None
        if entry is not None:
            hits[sha] = entry
        else:
            todo[sha] = src
    return hits, todo


class _Counter:
    """Counts finished clips and their audio for the progress callback (thread-safe)."""

    def __init__(self, progress: Progress | None, stage: str, total: int) -> None:
        self.progress, self.stage, self.total = progress, stage, total
        self.done = self.failed = 0
        self.audio_s = 0.0
        self.lock = threading.Lock()

    def add(self, audio_s: float, failed: bool) -> None:
        with self.lock:
            self.done += 1
            self.failed += int(failed)
            self.audio_s += audio_s
            report(self.progress, self.stage, self.done, self.total, audio_s=self.audio_s, failed=self.failed)


def _embed_missing(
    todo: dict[str, Source],
    sample_rate_hz: int | None,
    embedder: Embedder,
    cache: EmbeddingCache | None,
    workers: int,
    counter: _Counter,
) -> dict[str, CacheEntry]:
    """Embed each distinct content of ``todo``, putting what is worth keeping in the cache."""
    from ..embedder import Embedding

    shas = list(todo)

    def entry_of(i: int, res: Embedding | SpeakeridError) -> CacheEntry:
        if isinstance(res, Embedding):
            return CacheEntry(res.vector, res.duration_s, res.speech_s)
        return CacheEntry(None, 0.0, 0.0, _error_text(res, str(todo[shas[i]])))

    def on_done(i: int, res: Embedding | SpeakeridError) -> None:
        if cache is not None and (isinstance(res, Embedding) or isinstance(res, CACHEABLE_ERRORS)):
            cache.put(shas[i], entry_of(i, res))
        counter.add(res.duration_s if isinstance(res, Embedding) else 0.0, not isinstance(res, Embedding))

    report(counter.progress, counter.stage, 0, len(shas), audio_s=0.0, failed=0)
    try:
        results = embedder.embed_batch(
            [todo[s] for s in shas], workers=workers, sample_rate_hz=sample_rate_hz, errors="return", on_done=on_done
        ) if shas else []
    finally:  # an interrupted run keeps every embedding it finished
        if cache is not None:
            cache.flush()
    return {sha: entry_of(i, res) for i, (sha, res) in enumerate(zip(shas, results, strict=True))}


def _run(
    keyed: dict[str, tuple[str, Source]],
    sample_rate_hz: int | None,
    embedder: Embedder,
    cache: EmbeddingCache | None,
    out: EmbedOutcome,
    workers: int,
    progress: Progress | None,
    stage: str,
) -> None:
    """Embed every key -> (sha, source) not in the cache, one embedding per distinct sha."""
    _check_cache(cache, embedder)
    hits, todo = _split_cached(keyed, cache)
    out.cached_n += len(hits)
    t0 = time.perf_counter()
    hits.update(_embed_missing(todo, sample_rate_hz, embedder, cache, workers, _Counter(progress, stage, len(todo))))
    out.embed_s += time.perf_counter() - t0
    out.embedded_n += len(todo)
    for key, (sha, _) in keyed.items():
        e = hits[sha]
        out.sha256[key] = sha
        if e.vector is None:
            out.errors[key] = e.error or "unknown error"
        else:
            out.vectors[key] = e.vector
            out.duration_s[key] = e.duration_s
            out.speech_s[key] = e.speech_s


def embed_files(
    paths: Iterable[str | os.PathLike[str]],
    embedder: Embedder,
    cache: EmbeddingCache | None = None,
    *,
    workers: int = 1,
    progress: Progress | None = None,
    stage: str = "embedding",
    hash_stage: str = "hashing",
) -> EmbedOutcome:
    """Embed files (keyed by ``str(path)``), reusing and filling ``cache``.

    Files that do not exist are listed in ``missing`` (never an error); files that fail to
    embed are in ``errors``. A content seen under several paths is embedded once. Progress is
    reported under ``hash_stage`` (reading the files' content hashes), then ``stage``.
    """
    out = EmbedOutcome()
    keyed: dict[str, tuple[str, Source]] = {}
    unique = list(dict.fromkeys(str(p) for p in paths))
    for i, key in enumerate(unique):
        p = Path(key)
        if not p.is_file():
            out.missing.append(key)
        else:
            try:
                keyed[key] = (sha256_file(p), p)
            except OSError:
                out.missing.append(key)
        if i % 64 == 63 or i == len(unique) - 1:
            report(progress, hash_stage, i + 1, len(unique))
    _run(keyed, None, embedder, cache, out, workers, progress, stage)
    return out


def embed_samples(
    items: Sequence[tuple[str, np.ndarray]],
    sample_rate_hz: int,
    embedder: Embedder,
    cache: EmbeddingCache | None = None,
    *,
    workers: int = 1,
    progress: Progress | None = None,
    stage: str = "embedding",
) -> EmbedOutcome:
    """Embed in-memory clips given as ``(key, samples)``, reusing and filling ``cache``."""
    keyed: dict[str, tuple[str, Source]] = {}
    for key, x in items:
        if key in keyed:
            raise ConfigError(f"duplicate key {key!r}")
        keyed[key] = (samples_sha256(x, sample_rate_hz), x)
    out = EmbedOutcome()
    _run(keyed, sample_rate_hz, embedder, cache, out, workers, progress, stage)
    return out

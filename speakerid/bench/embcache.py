"""On-disk embedding cache, so benchmarks never embed the same audio twice.

An entry is keyed by the *content* of what was embedded (sha256 of a file's bytes, or of
in-memory samples and their rate), the model name, the sha256 of the model's weights and a
short hash of the model as built (converter version, ONNX file sha256) and of the audio / VAD /
embedding options that change the result. Renaming or copying a file keeps its entry; editing
it, changing the model's weights or its converter, or turning the VAD off makes a new one.
Clips whose content cannot give an embedding (no speech, too short, undecodable) are
cached as failures too, so they are not tried again.

Layout (under ``$SPEAKERID_HOME/embcache`` unless a directory is given)::

    <root>/<model>/<weights sha256[:16]>-<options key>/shard-<ns>-<rand>.parquet

Each shard is one Parquet file (columns sha256, vector, duration_s, speech_s, error) written to
a temporary name, fsynced and renamed into place, so readers only ever see whole shards and
several processes may add to one cache at once. Shards carry the full key in their metadata;
one that does not match (or cannot be read) is ignored. When a cache holds many shards,
opening it merges them into one (the merged shard is written before the old ones go). Shards
are owner-only files (embeddings are biometric data).

Embedding files or clips *through* the cache is :mod:`speakerid.bench.embedding`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._io import atomic_file, fsync_dir
from ..errors import AudioDecodeError, ConfigError, EmptyAudioError, NoSpeechError, SpeakeridError
from ..models.spec import ONNX_FILE

if TYPE_CHECKING:
    from ..embedder import Embedder

__all__ = [
    "CACHEABLE_ERRORS",
    "CACHE_FORMAT",
    "CacheEntry",
    "EmbeddingCache",
    "default_root",
    "options_key",
    "samples_sha256",
]

CACHE_FORMAT = "1"
#: Opening a cache with more shards than this merges them into one.
COMPACT_AT_SHARDS = 32
#: New entries are written to disk every this many (a killed run keeps what it had embedded).
FLUSH_EVERY = 256
#: Failures whose cause is the clip's content (and so are worth caching).
CACHEABLE_ERRORS: tuple[type[SpeakeridError], ...] = (AudioDecodeError, EmptyAudioError, NoSpeechError)


def default_root() -> Path:
    """``$SPEAKERID_HOME/embcache`` (default ``~/.cache/speakerid/embcache``)."""
    from ..models import store

    return store.home() / "embcache"


def samples_sha256(samples: np.ndarray, sample_rate_hz: int) -> str:
    """Content key of in-memory audio: its float32 samples and rate."""
    x = np.ascontiguousarray(samples, dtype=np.float32)
    h = hashlib.sha256(f"samples:{int(sample_rate_hz)}:{x.shape}:".encode())
    h.update(x.tobytes())
    return h.hexdigest()


def options_key(embedder: Embedder) -> str:
    """12 hex digits naming what changes an embedding besides the weights (threads do not): the
    options, and the model as built, by its converter version and its ONNX file's sha256 (the
    same weights make another graph under another converter version, and campplus-int8 differs
    by CPU kind and calibration)."""
    spec = embedder.spec
    opts = {
        "model": {"converter_version": spec.converter_version,
                  "onnx_sha256": spec.checksums.get(ONNX_FILE, {}).get("sha256", "")},
        "audio": asdict(embedder.audio_options),
        "vad": asdict(embedder.vad_options),
        "embed": {k: v for k, v in asdict(embedder.embed_options).items() if k != "threads"},
    }
    return hashlib.sha256(json.dumps(opts, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CacheEntry:
    """A cached embedding (``vector``) or the reason there is none (``error``)."""

    vector: np.ndarray | None
    duration_s: float
    speech_s: float
    error: str | None = None


_SCHEMA = pa.schema(
    [
        ("sha256", pa.string()),
        ("vector", pa.list_(pa.float32())),
        ("duration_s", pa.float64()),
        ("speech_s", pa.float64()),
        ("error", pa.string()),
    ]
)


def _vector_column(vectors: Sequence[np.ndarray | None]) -> pa.Array:
    """A list<float32> column from vectors (None for a failure), built without Python floats."""
    lengths = np.array([0 if v is None else len(v) for v in vectors], dtype=np.int32)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    present = [np.asarray(v, np.float32).ravel() for v in vectors if v is not None]
    values = np.concatenate(present) if present else np.zeros(0, np.float32)
    mask = pa.array(np.array([v is None for v in vectors], dtype=bool))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=mask)


def _entries_of(table: pa.Table) -> list[CacheEntry]:
    """The rows of a shard as entries; vectors are views of one float32 block per shard."""
    col = table["vector"].combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    durs = table["duration_s"].to_numpy(zero_copy_only=False)
    speech = table["speech_s"].to_numpy(zero_copy_only=False)
    errors = table["error"].to_pylist()
    out = []
    for i in range(len(col)):
        vec = values[offsets[i] : offsets[i + 1]] if valid[i] else None
        d = float(durs[i]) if np.isfinite(durs[i]) else 0.0
        sp = float(speech[i]) if np.isfinite(speech[i]) else 0.0
        out.append(CacheEntry(vec, d, sp, errors[i]))
    return out


class EmbeddingCache:
    """Embeddings of one (model, weights, options), on disk; safe to share between threads.

    ``get`` reads what was loaded at open plus what this instance added; ``put`` buffers, and
    ``flush`` (also called every :data:`FLUSH_EVERY` puts) writes the buffer as a new shard.
    """

    def __init__(
        self,
        model: str,
        weights_sha256: str,
        options: str = "",
        root: str | os.PathLike[str] | None = None,
        *,
        flush_every: int = FLUSH_EVERY,
    ) -> None:
        for name, value in (("model", model), ("weights_sha256", weights_sha256)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"embedding cache: {name} must be a non-empty string, got {value!r}")
        if any(c in model for c in "/\\\0") or model in (".", ".."):
            raise ConfigError(f"embedding cache: model name {model!r} cannot name a directory")
        self.model, self.weights_sha256, self.options = model, weights_sha256, options
        base = Path(root) if root is not None else default_root()
        tag = weights_sha256[:16] + (f"-{options}" if options else "")
        self.directory = base / model / tag
        self.flush_every = max(1, int(flush_every))
        self.warnings: list[str] = []
        self._entries: dict[str, CacheEntry] = {}
        self._pending: dict[str, CacheEntry] = {}
        self._lock = threading.Lock()
        self._load()

    @classmethod
    def for_embedder(
        cls, embedder: Embedder, root: str | os.PathLike[str] | None = None, **kwargs: int
    ) -> EmbeddingCache:
        return cls(embedder.model, embedder.weights_sha256, options_key(embedder), root, **kwargs)

    # -- reading -----------------------------------------------------------------------------

    def _meta(self) -> dict[bytes, bytes]:
        return {
            b"speakerid_embcache": CACHE_FORMAT.encode(),
            b"model": self.model.encode(),
            b"weights_sha256": self.weights_sha256.encode(),
            b"options": self.options.encode(),
        }

    def _shards(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("shard-*.parquet"))

    def _read_shard(self, path: Path) -> pa.Table | None:
        try:
            table = pq.read_table(path)
        except FileNotFoundError:  # merged away by another process meanwhile
            return None
        except (OSError, pa.ArrowException) as e:
            self.warnings.append(f"{path}: unreadable cache shard ignored ({e})")
            return None
        meta = table.schema.metadata or {}
        want = self._meta()
        if any(meta.get(k) != v for k, v in want.items()):
            self.warnings.append(f"{path}: cache shard of another model/weights/options ignored")
            return None
        try:
            return table.select(_SCHEMA.names).cast(_SCHEMA)
        except (KeyError, pa.ArrowException) as e:
            self.warnings.append(f"{path}: cache shard with unexpected columns ignored ({e})")
            return None

    def _load(self) -> None:
        shards = self._shards()
        read: list[Path] = []
        for path in shards:
            table = self._read_shard(path)
            if table is None:
                continue
            read.append(path)
            for sha, entry in zip(table["sha256"].to_pylist(), _entries_of(table), strict=True):
                self._entries[sha] = entry
        if len(read) > COMPACT_AT_SHARDS:
            self._compact(read)

    def _compact(self, shards: Sequence[Path]) -> None:
        try:
            self._write_shard(self._entries)
        except OSError as e:
            self.warnings.append(f"{self.directory}: could not merge cache shards ({e})")
            return
        for p in shards:
            p.unlink(missing_ok=True)
        fsync_dir(self.directory)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, sha256: object) -> bool:
        with self._lock:
            return sha256 in self._entries

    def get(self, sha256: str) -> CacheEntry | None:
        with self._lock:
            return self._entries.get(sha256)

    # -- writing -----------------------------------------------------------------------------

    def put(self, sha256: str, entry: CacheEntry) -> None:
        """Remember an entry (written by the next flush; every ``flush_every`` puts at the latest)."""
        with self._lock:
            self._entries[sha256] = entry
            self._pending[sha256] = entry
            full = len(self._pending) >= self.flush_every
        if full:
            self.flush()

    def flush(self) -> None:
        """Write buffered entries as one new shard (atomic: temp file, fsync, rename)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            self._write_shard(pending)
        except BaseException:
            with self._lock:
                self._pending = {**pending, **self._pending}
            raise

    def _write_shard(self, entries: dict[str, CacheEntry]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        items = list(entries.items())
        table = pa.table(
            {
                "sha256": pa.array([k for k, _ in items], pa.string()),
                "vector": _vector_column([e.vector for _, e in items]),
                "duration_s": pa.array([e.duration_s for _, e in items], pa.float64()),
                "speech_s": pa.array([e.speech_s for _, e in items], pa.float64()),
                "error": pa.array([e.error for _, e in items], pa.string()),
            },
            schema=_SCHEMA.with_metadata(self._meta()),
        )
        path = self.directory / f"shard-{time.time_ns():020d}-{secrets.token_hex(4)}.parquet"
        with atomic_file(path) as f:  # owner-only: embeddings are biometric data
            pq.write_table(table, f)
        return path

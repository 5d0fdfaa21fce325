"""The gallery's two row tables, clips (utterances.parquet) and failed files
(failures.parquet): checking new rows and making them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError
from .storage import FAILURES_SCHEMA, TS, UTTERANCES_SCHEMA, now

__all__ = ["checked_columns", "clip_rows", "failure_rows", "warm_conversion", "with_failures", "without_paths"]

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def checked_columns(n: int, speakers: Sequence[str], paths: Sequence[str], sha256s: Sequence[str],
                    durations_s: Sequence[float], speech_s: Sequence[float]) -> dict[str, Any]:
    """The columns of n new clips, checked (ConfigError), durations as float64 arrays."""
    cols: dict[str, Any] = {"speakers": list(speakers), "paths": list(paths), "sha256s": list(sha256s),
                            "durations_s": list(durations_s), "speech_s": list(speech_s)}
    for k, v in cols.items():
        if len(v) != n:
            raise ConfigError(f"{k} has {len(v)} items for {n} vectors")
    for s in cols["speakers"]:
        if not isinstance(s, str) or not s.strip():
            raise ConfigError(f"speaker names must be non-empty strings, got {s!r}")
    for p in cols["paths"]:
        if not isinstance(p, str):
            raise ConfigError(f"paths must be strings, got {p!r}")
    for h in cols["sha256s"]:
        if not isinstance(h, str) or not _SHA_RE.match(h):
            raise ConfigError(f"sha256s must be 64 lowercase hex digits, got {h!r}")
    dur = cols["durations_s"] = np.asarray(cols["durations_s"], dtype=np.float64)
    sp = cols["speech_s"] = np.asarray(cols["speech_s"], dtype=np.float64)
    if not (np.isfinite(dur).all() and np.isfinite(sp).all() and (dur >= 0).all() and (sp >= 0).all()):
        raise ConfigError("durations_s and speech_s must be finite and >= 0")
    return cols


def warm_conversion() -> None:
    """Make pyarrow's one-time import of pandas now, if pandas is installed.

    pyarrow (26) imports pandas at its first conversion of Python or numpy data (``pa.array``,
    ``pa.table``), whatever the data. In an index build that conversion is the first
    :func:`clip_rows`, on the main thread while the workers embed: on an AMD EPYC (Zen 5) the
    first call took 199-212 ms against ~0.3 ms for each later one. The indexer calls this before
    its workers start."""
    pa.array([], pa.int64())


def clip_rows(ids: np.ndarray, cols: dict[str, Any], model: str) -> pa.Table:
    """utterances.parquet rows of new clips (``cols`` from :func:`checked_columns`), added now."""
    n = len(ids)
    return pa.table(
        {
            "id": ids,
            "speaker": cols["speakers"],
            "path": cols["paths"],
            "sha256": cols["sha256s"],
            "duration_s": cols["durations_s"],
            "speech_s": cols["speech_s"],
            "model": [model] * n,
            "added_at": pa.array([now()] * n, TS),
        },
        schema=UTTERANCES_SCHEMA,
    )


def failure_rows(failures: Iterable[tuple[str, str] | Mapping[str, str]]) -> dict[str, str]:
    """path -> error of (path, error) pairs or {"path", "error"} dicts (the last of a path wins)."""
    rows: dict[str, str] = {}
    for f in failures:
        try:
            path, error = (f["path"], f["error"]) if isinstance(f, Mapping) else f
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"a failure is (path, error) or {{'path', 'error'}}, got {f!r}") from None
        if not isinstance(path, str) or not isinstance(error, str):
            raise ConfigError(f"a failure is (path: str, error: str), got {f!r}")
        rows[path] = error
    return rows


def without_paths(table: pa.Table, paths: Sequence[str]) -> pa.Table:
    """``table`` without the rows of ``paths``."""
    if not table.num_rows:
        return table
    return table.filter(pc.invert(pc.is_in(table["path"], pa.array(list(paths), pa.string()))))


def with_failures(table: pa.Table, rows: dict[str, str]) -> pa.Table:
    """The failures ``table`` with ``rows`` (path -> error) recorded now, replacing older ones."""
    new = pa.table(
        {"path": list(rows), "error": list(rows.values()), "at": pa.array([now()] * len(rows), TS)},
        schema=FAILURES_SCHEMA,
    )
    return pa.concat_tables([without_paths(table, list(rows)), new])

"""Embedding export to Parquet: one row per input, failures kept in an ``error`` column."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ._io import PRIVATE_FILE, atomic_file
from .embedder import Embedder, Embedding
from .errors import ConfigError, SpeakeridError
from .progress import Progress, report

SCHEMA = pa.schema([
    ("path", pa.string()),
    ("duration_s", pa.float64()),
    ("speech_s", pa.float64()),
    ("model", pa.string()),
    ("embedding", pa.list_(pa.float32())),
    ("error", pa.string()),
    ("warnings", pa.list_(pa.string())),
])


def _row(path: Path, res: Embedding | SpeakeridError, model: str) -> dict:
    if isinstance(res, Embedding):
        return {"path": str(path), "duration_s": res.duration_s, "speech_s": res.speech_s, "model": model,
                "embedding": res.vector.tolist(), "error": None, "warnings": list(res.warnings)}
    return {"path": str(path), "duration_s": None, "speech_s": None, "model": model, "embedding": None,
            "error": f"{type(res).__name__}: {res}", "warnings": []}


def write_embeddings(
    files: Sequence[Path], out_file: Path, embedder: Embedder, *, workers: int = 1,
    progress: Progress | None = None,
) -> dict:
    """Embed ``files`` and write them atomically (owner-only) to ``out_file``.

    Rows keep the input order. ``progress("embedding", done, total, audio_s=..., failed=...)``
    is called as clips finish. Returns the row and failure counts, the failures and warnings.
    """
    out_file = Path(out_file)
    if out_file.suffix.lower() != ".parquet":
        raise ConfigError(f"the output must be a .parquet file, got {out_file}")
    if not files:
        raise ConfigError("no input files")
    results: list[Embedding | SpeakeridError | None] = [None] * len(files)
    audio_s = 0.0
    failed = done_count = 0

    def done(i: int, res) -> None:
        nonlocal audio_s, failed, done_count
        results[i] = res
        done_count += 1
        if isinstance(res, Embedding):
            audio_s += res.duration_s
        else:
            failed += 1
        report(progress, "embedding", done_count, len(files), audio_s=audio_s, failed=failed)

    report(progress, "embedding", 0, len(files), audio_s=0.0, failed=0)
    embedder.embed_batch(list(files), workers=workers, errors="return", on_done=done)
    rows = [_row(p, r, embedder.model) for p, r in zip(files, results)]  # type: ignore[arg-type]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_file, PRIVATE_FILE) as f:
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), f)
    failures = [(r["path"], r["error"]) for r in rows if r["error"] is not None]
    warnings = [(r["path"], w) for r in rows for w in r["warnings"]]
    return {"rows": len(rows), "failed": failed, "audio_s": audio_s, "failures": failures, "warnings": warnings}

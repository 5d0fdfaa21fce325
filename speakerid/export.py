"""Embedding export to Parquet: one row per input, failures kept in an ``error`` column."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .embedder import Embedder, Embedding
from .errors import ConfigError, SpeakeridError

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
    files: Sequence[Path], out_file: Path, embedder: Embedder, *, workers: int = 1, console=None
) -> dict:
    """Embed ``files`` and write them atomically to ``out_file``; returns row and failure counts.

    Rows keep the input order. With a rich ``console``, a progress bar shows clips, audio time
    and failures as they finish.
    """
    out_file = Path(out_file)
    if out_file.suffix.lower() != ".parquet":
        raise ConfigError(f"--out must name a .parquet file, got {out_file}")
    if not files:
        raise ConfigError("no input files")
    results: list[Embedding | SpeakeridError | None] = [None] * len(files)
    progress = None
    if console is not None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[audio]}"), TimeRemainingColumn(), console=console,
                            transient=True, disable=len(files) < 2 or not console.is_terminal)
    audio_s = 0.0
    failed = 0

    def done(i: int, res) -> None:
        nonlocal audio_s, failed
        results[i] = res
        if isinstance(res, Embedding):
            audio_s += res.duration_s
        else:
            failed += 1
        if progress is not None:
            progress.update(task, advance=1, audio=f"{audio_s / 60:.1f} min audio, {failed} failed")

    if progress is not None:
        progress.start()
        task = progress.add_task("embed", total=len(files), audio="")
    try:
        embedder.embed_batch(list(files), workers=workers, errors="return", on_done=done)
    finally:
        if progress is not None:
            progress.stop()
    rows = [_row(p, r, embedder.model) for p, r in zip(files, results)]  # type: ignore[arg-type]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_file.parent, prefix=f".{out_file.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
        os.replace(tmp, out_file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    failures = [(r["path"], r["error"]) for r in rows if r["error"] is not None]
    warnings = [(r["path"], w) for r in rows for w in r["warnings"]]
    return {"rows": len(rows), "failed": failed, "audio_s": audio_s, "failures": failures, "warnings": warnings}

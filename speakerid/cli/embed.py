"""`speakerid verify` and `speakerid embed`."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ._common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    MODEL_OPT,
    CliError,
    app,
    err,
    expand_inputs,
    finish,
    make_embedder,
    out,
    print_json,
    report_failures,
    say_long_audio,
    threshold_arg,
    warn,
)
from ._progress import RichProgress


@app.command()
def verify(
    a: Path = typer.Argument(..., help="First clip."),
    b: Path = typer.Argument(..., help="Second clip."),
    model: str = MODEL_OPT,
    threshold: float | None = typer.Option(None, help="Cosine threshold (default: the model's calibrated one)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    no_vad: bool = typer.Option(False, "--no-vad", help="Embed the whole clips, silence included."),
) -> None:
    """Are A and B the same speaker? Prints the cosine similarity and match/unmatch."""
    from ..verify import verify as run_verify

    threshold = threshold_arg(threshold)
    say_long_audio([a, b])
    res = run_verify(a, b, embedder=make_embedder(model, no_vad), threshold=threshold)
    warnings = [f"{e.source}: {w}" for e in (res.a, res.b) for w in e.warnings]
    for w in warnings:
        warn(w)
    if as_json:
        print_json({
            "a": str(a), "b": str(b), "model": res.model, "similarity": round(res.score, 6),
            "threshold": res.threshold, "match": res.match,
            "speech_s": [round(res.a.speech_s, 3), round(res.b.speech_s, 3)], "warnings": warnings,
        })
        return
    out.print(f"similar: {res.score:.8f}")
    out.print(f"verification: {'match' if res.match else 'unmatch'} (threshold: {res.threshold:.3f}, model: {res.model})")


@app.command()
def embed(
    paths: list[Path] = typer.Argument(..., help="Audio files or directories (walked recursively)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Parquet file to write."),
    model: str = MODEL_OPT,
    workers: int = typer.Option(os.cpu_count() or 1, help="Clips embedded at once."),
    no_vad: bool = typer.Option(False, "--no-vad", help="Embed the whole clips, silence included."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (rows, failures, warnings)."),
) -> None:
    """Embed clips into a Parquet file: one row per input, failures in the error column.

    Exits 1 when some clips failed (they are listed, and kept as rows with an error)."""
    from ..export import write_embeddings

    if workers < 1:
        raise CliError(f"--workers must be at least 1, got {workers}")
    files = expand_inputs(paths)
    emb = make_embedder(model, no_vad, threads=1 if workers > 1 else None)
    with RichProgress(err) as bar:
        summary = write_embeddings(files, out_file, emb, workers=workers, progress=bar)
    for path, w in summary["warnings"]:
        warn(f"{path}: {w}")
    if as_json:
        print_json({"out": str(out_file), "rows": summary["rows"], "failed": summary["failed"],
                    "audio_s": round(summary["audio_s"], 3),
                    "failures": [{"path": p, "error": e} for p, e in summary["failures"]],
                    "warnings": [{"path": p, "warning": w} for p, w in summary["warnings"]]})
    else:
        err.print(f"wrote {summary['rows']} rows to {out_file} ({summary['failed']} failed)", markup=False,
                  soft_wrap=True)
    report_failures(summary["failures"], summary["rows"])
    finish(EXIT_SOME_FAILED if summary["failed"] else EXIT_OK)



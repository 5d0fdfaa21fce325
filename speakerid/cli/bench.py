"""`speakerid bench verify|identify`."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ._common import (
    MODEL_OPT,
    app,
    command_line,
    err,
    out,
)

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks on VoxCeleb1 protocols (verification, identification).")
app.add_typer(bench_app, name="bench")


@bench_app.command("verify")
def bench_verify(
    root: Path = typer.Option(..., "--root", help="VoxCeleb1 wav root (holds id10001/...)."),
    trials: Path = typer.Option(..., "--trials", help="Trial list: 'label path path' lines (veri_test2.txt...)."),
    model: str = MODEL_OPT,
    out_dir: Path | None = typer.Option(None, "--out", help="Report directory (default bench-results/verify-LIST-MODEL)."),
    asnorm_cohort: Path | None = typer.Option(None, "--asnorm-cohort", help="Folder of other speakers' audio: adds AS-norm."),
    asnorm_top_n: int = typer.Option(300, "--asnorm-top-n", help="AS-norm: cohort scores averaged per side."),
    workers: int = typer.Option(os.cpu_count() or 1, help="Clips embedded at once."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Embedding cache root (default $SPEAKERID_HOME/embcache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Embed everything, read and write no cache."),
    no_vad: bool = typer.Option(False, "--no-vad", help="Embed the whole clips, silence included."),
) -> None:
    """Verification EER and minDCF (0.01, 0.05) on a VoxCeleb trial list; writes results.json, report.md, plots."""
    from ..bench.console import verify_command

    verify_command(root=root, trials=trials, model=model, out=out_dir, asnorm_cohort=asnorm_cohort,
                   asnorm_top_n=asnorm_top_n, workers=workers, cache_dir=cache_dir, no_cache=no_cache,
                   no_vad=no_vad, command=command_line(), out_console=out, err_console=err)


@bench_app.command("identify")
def bench_identify(
    root: Path = typer.Option(..., "--root", help="VoxCeleb1 wav root (holds id10001/...)."),
    split: Path = typer.Option(..., "--split", help="iden_split.txt: '1|2|3 path' lines (1 enrols, 3 queries)."),
    model: str = MODEL_OPT,
    out_dir: Path | None = typer.Option(None, "--out", help="Report directory (default bench-results/identify-SPLIT-MODEL)."),
    scoring: str = typer.Option("centroid", help="Speaker scoring rule: centroid | best | topn."),
    workers: int = typer.Option(os.cpu_count() or 1, help="Clips embedded at once."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Embedding cache root (default $SPEAKERID_HOME/embcache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Embed everything, read and write no cache."),
    no_vad: bool = typer.Option(False, "--no-vad", help="Embed the whole clips, silence included."),
) -> None:
    """Closed-set top-1/top-5 and open-set FNIR at FPIR 1 % on a VoxCeleb identification split."""
    from ..bench.console import identify_command

    identify_command(root=root, split=split, model=model, out=out_dir, scoring=scoring, workers=workers,
                     cache_dir=cache_dir, no_cache=no_cache, no_vad=no_vad, command=command_line(),
                     out_console=out, err_console=err)



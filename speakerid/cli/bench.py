"""`speakerid bench verify|identify`: run a benchmark, write its report, show a summary.

Everything drawn (progress bars, tables) is here; the benchmarks themselves are the library's
:mod:`speakerid.bench`. With ``--json`` stdout is one JSON object, the run's results (as in
results.json); bars and messages go to stderr either way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ._common import MODEL_OPT, CliError, app, command_line, err, make_embedder, out, print_json
from ._progress import RichProgress

if TYPE_CHECKING:
    from ..bench.embcache import EmbeddingCache
    from ..bench.results import IdentifyResults, VerifyResults
    from ..embedder import Embedder

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks on VoxCeleb1 protocols (verification, identification).")
app.add_typer(bench_app, name="bench")

ROOT_OPT = typer.Option(..., "--root", help="VoxCeleb1 wav root (holds id10001/...).")
WORKERS = typer.Option(os.cpu_count() or 1, help="Clips embedded at once.")
CACHE_DIR_OPT = typer.Option(None, "--cache-dir", help="Embedding cache root (default $SPEAKERID_HOME/embcache).")
NO_CACHE_OPT = typer.Option(False, "--no-cache", help="Embed everything, read and write no cache.")
NO_VAD_OPT = typer.Option(False, "--no-vad", help="Embed the whole clips, silence included.")
JSON_OPT = typer.Option(False, "--json", help="Print the results as one JSON object (as in results.json).")


def _setup(model: str, no_vad: bool, workers: int, cache_dir: Path | None,
           no_cache: bool) -> tuple[Embedder, EmbeddingCache | None]:
    from ..bench.embcache import EmbeddingCache

    if workers < 1:
        raise CliError(f"--workers must be >= 1, got {workers}")
    emb = make_embedder(model, no_vad, threads=1 if workers > 1 else None)
    return emb, None if no_cache else EmbeddingCache.for_embedder(emb, cache_dir)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def _thr(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def _print_json(results: VerifyResults | IdentifyResults, command: str) -> None:
    data = results.to_dict()
    data["command"] = command
    print_json(data)


def _verify_summary(r: VerifyResults, out_dir: Path) -> None:
    t, f, e = r.trials, r.files, r.files.embedding
    table = Table(title=f"{Path(r.trials_file).name}: {t.scored:,} trials, model {r.model}")
    for c in ("scoring", "EER", "EER thr", "minDCF 0.01", "thr", "minDCF 0.05", "thr"):
        table.add_column(c, justify="left" if c == "scoring" else "right")
    for name, m in r.systems.items():
        table.add_row(name, _pct(m.eer), _thr(m.eer_threshold), f"{m.min_dcf_001:.4f}", _thr(m.min_dcf_001_threshold),
                      f"{m.min_dcf_005:.4f}", _thr(m.min_dcf_005_threshold))
    table.add_row("[italic]AutoSpeech (seed)[/italic]", _pct(r.seed_reference.verification_eer), "", "", "", "", "")
    out.print(table)
    out.print(
        f"trials: {t.target:,} target, {t.nontarget:,} non-target; skipped {t.skipped_missing_file:,} "
        f"(missing file), {t.skipped_failed_embedding:,} (failed embedding); files: {f.distinct:,} distinct, "
        f"{f.missing:,} missing, {f.failed:,} failed, {e.distinct_embedded:,} embedded, {e.distinct_cached:,} cached"
    )
    out.print(f"seed reference is on {r.seed_reference.verification_protocol}")
    out.print(f"report: {out_dir / 'report.md'}")


@bench_app.command("verify")
def bench_verify(
    root: Path = ROOT_OPT,
    trials: Path = typer.Option(..., "--trials", help="Trial list: 'label path path' lines (veri_test2.txt...)."),
    model: str = MODEL_OPT,
    out_dir: Path | None = typer.Option(None, "--out", help="Report directory (default bench-results/verify-LIST-MODEL)."),
    asnorm_cohort: Path | None = typer.Option(None, "--asnorm-cohort", help="Folder of other speakers' audio: adds AS-norm."),
    asnorm_top_n: int = typer.Option(300, "--asnorm-top-n", help="AS-norm: cohort scores averaged per side."),
    workers: int = WORKERS,
    cache_dir: Path | None = CACHE_DIR_OPT,
    no_cache: bool = NO_CACHE_OPT,
    no_vad: bool = NO_VAD_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Verification EER and minDCF (0.01, 0.05) on a VoxCeleb trial list; writes results.json, report.md, plots."""
    from ..bench.common import audio_files
    from ..bench.report import check_output_dir, write_verify_report
    from ..bench.verification import run_verify
    from ..bench.voxceleb import check_root, parse_trials

    out_dir = out_dir if out_dir is not None else Path("bench-results") / f"verify-{trials.stem}-{model}"
    check_output_dir(out_dir)
    check_root(root)
    parse_trials(trials)  # fail on a bad list before loading the model
    if asnorm_cohort is not None:
        audio_files(asnorm_cohort, "the AS-norm cohort")
    emb, cache = _setup(model, no_vad, workers, cache_dir, no_cache)
    with RichProgress(err) as bar:
        run = run_verify(root, trials, emb, cache=cache, workers=workers, asnorm_cohort=asnorm_cohort,
                         asnorm_top_n=asnorm_top_n, progress=bar)
    write_verify_report(out_dir, run, command=command_line())
    if as_json:
        _print_json(run.results, command_line())
    else:
        _verify_summary(run.results, out_dir)


def _identify_summary(r: IdentifyResults, out_dir: Path) -> None:
    c, o, s, q, seed = r.closed_set, r.open_set, r.speakers, r.queries, r.seed_reference
    table = Table(title=f"{Path(r.split_file).name}: {q.scored:,} queries, {c.speakers:,} speakers")
    for col in ("system", "top-1", "top-5", "FNIR @ FPIR 1 %", "FAR @ index threshold"):
        table.add_column(col, justify="left" if col == "system" else "right")
    fnir = "–" if o is None else _pct(o.fnir_at_fpir)
    far = "–" if o is None or o.index_default is None else _pct(o.index_default.false_accept_rate)
    table.add_row(f"{r.model} ({r.scoring})", _pct(c.top1), _pct(c.top5), fnir, far)
    table.add_row("[italic]AutoSpeech (seed)[/italic]", _pct(seed.identification_top1), "", "", "")
    out.print(table)
    if s.skipped_count:
        names = ", ".join(x.speaker for x in s.skipped[:10])
        more = " ..." if s.skipped_count > 10 else ""
        out.print(f"skipped {s.skipped_count} speaker(s) with no usable train file: {names}{more}", markup=False)
    f, e = r.files, r.files.embedding
    out.print(
        f"files: {f.distinct:,} distinct, {f.missing:,} missing, {f.failed:,} failed, "
        f"{e.distinct_embedded:,} embedded, {e.distinct_cached:,} cached"
    )
    out.print(f"seed reference is on {seed.identification_protocol}")
    out.print(f"report: {out_dir / 'report.md'}")


@bench_app.command("identify")
def bench_identify(
    root: Path = ROOT_OPT,
    split: Path = typer.Option(..., "--split", help="iden_split.txt: '1|2|3 path' lines (1 enrols, 3 queries)."),
    model: str = MODEL_OPT,
    out_dir: Path | None = typer.Option(None, "--out", help="Report directory (default bench-results/identify-SPLIT-MODEL)."),
    scoring: str = typer.Option("centroid", help="Speaker scoring rule: centroid | best | topn."),
    workers: int = WORKERS,
    cache_dir: Path | None = CACHE_DIR_OPT,
    no_cache: bool = NO_CACHE_OPT,
    no_vad: bool = NO_VAD_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Closed-set top-1/top-5 and open-set FNIR at FPIR 1 % on a VoxCeleb identification split."""
    from ..bench.identification import run_identify
    from ..bench.report import check_output_dir, write_identify_report
    from ..bench.voxceleb import check_root, parse_iden_split
    from ..identify import SCORINGS

    if scoring not in SCORINGS:
        raise CliError(f"--scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    out_dir = out_dir if out_dir is not None else Path("bench-results") / f"identify-{split.stem}-{model}"
    check_output_dir(out_dir)
    check_root(root)
    parse_iden_split(split)
    emb, cache = _setup(model, no_vad, workers, cache_dir, no_cache)
    with RichProgress(err) as bar:
        run = run_identify(root, split, emb, cache=cache, workers=workers, scoring=scoring, progress=bar)
    write_identify_report(out_dir, run, command=command_line())
    if as_json:
        _print_json(run.results, command_line())
    else:
        _identify_summary(run.results, out_dir)

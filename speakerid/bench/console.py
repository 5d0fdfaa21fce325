"""What ``speakerid bench ...`` does around the library: progress bars, summaries, output.

Only the CLI calls this module; it writes to the rich consoles it is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import ConfigError
from .asnorm import DEFAULT_TOP_N
from .common import audio_files

if TYPE_CHECKING:
    from ..embcache import EmbeddingCache
    from ..embedder import Embedder

__all__ = ["RichProgress", "identify_command", "verify_command"]


class RichProgress:
    """A ``progress(stage, done, total)`` callback drawing one rich bar per stage."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<17}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=max(total, 1))
        self.progress.update(self.tasks[stage], completed=done, total=max(total, 1))


def _setup(
    model: str, no_vad: bool, workers: int, cache_dir: Path | None, no_cache: bool, progress_line: Any
) -> tuple[Embedder, EmbeddingCache | None]:
    from ..config import EmbedOptions, VadOptions
    from ..embcache import EmbeddingCache
    from ..embedder import Embedder

    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    emb = Embedder(
        model,
        vad=VadOptions(enabled=not no_vad),
        embed=EmbedOptions(threads=1 if workers > 1 else None),
        progress=progress_line,
    )
    cache = None if no_cache else EmbeddingCache.for_embedder(emb, cache_dir)
    return emb, cache


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def verify_command(
    *,
    root: Path,
    trials: Path,
    model: str,
    out: Path | None,
    asnorm_cohort: Path | None,
    asnorm_top_n: int = DEFAULT_TOP_N,
    workers: int = os.cpu_count() or 1,
    cache_dir: Path | None = None,
    no_cache: bool = False,
    no_vad: bool = False,
    command: str | None = None,
    out_console: Console,
    err_console: Console,
) -> Path:
    from ..report import check_output_dir, require_matplotlib, write_verify_report
    from .verification import run_verify
    from .voxceleb import check_root, parse_trials

    require_matplotlib()

    out_dir = out if out is not None else Path("bench-results") / f"verify-{trials.stem}-{model}"
    check_output_dir(out_dir)
    check_root(root)
    parse_trials(trials)  # fail on a bad list before loading the model
    if asnorm_cohort is not None:
        audio_files(asnorm_cohort, "the AS-norm cohort")
    emb, cache = _setup(model, no_vad, workers, cache_dir, no_cache, lambda m: err_console.print(f"[dim]{m}[/dim]"))
    with RichProgress(err_console) as bar:
        run = run_verify(
            root, trials, emb, cache=cache, workers=workers, asnorm_cohort=asnorm_cohort,
            asnorm_top_n=asnorm_top_n, progress=bar,
        )
    write_verify_report(out_dir, run, command=command)
    r = run.results
    t, f = r["trials"], r["files"]
    table = Table(title=f"{Path(r['trials_file']).name}: {t['scored']:,} trials, model {r['model']}")
    for c in ("scoring", "EER", "EER thr", "minDCF 0.01", "thr", "minDCF 0.05", "thr"):
        table.add_column(c, justify="left" if c == "scoring" else "right")
    for name, m in r["systems"].items():
        table.add_row(
            name, _pct(m["eer"]), f"{m['eer_threshold']:.4f}", f"{m['min_dcf_0.01']:.4f}",
            "–" if m["min_dcf_0.01_threshold"] is None else f"{m['min_dcf_0.01_threshold']:.4f}",
            f"{m['min_dcf_0.05']:.4f}",
            "–" if m["min_dcf_0.05_threshold"] is None else f"{m['min_dcf_0.05_threshold']:.4f}",
        )
    seed = r["seed_reference"]
    table.add_row("[italic]AutoSpeech (seed)[/italic]", _pct(seed["verification"]["eer"]), "", "", "", "", "")
    out_console.print(table)
    out_console.print(
        f"trials: {t['target']:,} target, {t['nontarget']:,} non-target; skipped {t['skipped_missing_file']:,} "
        f"(missing file), {t['skipped_failed_embedding']:,} (failed embedding); files: {f['distinct']:,} distinct, "
        f"{f['missing']:,} missing, {f['failed']:,} failed, {f['embedding']['distinct_embedded']:,} embedded, "
        f"{f['embedding']['distinct_cached']:,} cached"
    )
    out_console.print(f"seed reference is on {seed['verification']['protocol']}")
    out_console.print(f"report: {out_dir / 'report.md'}")
    return out_dir


def identify_command(
    *,
    root: Path,
    split: Path,
    model: str,
    out: Path | None,
    scoring: str,
    workers: int = os.cpu_count() or 1,
    cache_dir: Path | None = None,
    no_cache: bool = False,
    no_vad: bool = False,
    command: str | None = None,
    out_console: Console,
    err_console: Console,
) -> Path:
    from ..identify import SCORINGS
    from ..report import check_output_dir, require_matplotlib, write_identify_report
    from .identification import run_identify
    from .voxceleb import check_root, parse_iden_split

    require_matplotlib()
    if scoring not in SCORINGS:
        raise ConfigError(f"--scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    out_dir = out if out is not None else Path("bench-results") / f"identify-{split.stem}-{model}"
    check_output_dir(out_dir)
    check_root(root)
    parse_iden_split(split)
    emb, cache = _setup(model, no_vad, workers, cache_dir, no_cache, lambda m: err_console.print(f"[dim]{m}[/dim]"))
    with RichProgress(err_console) as bar:
        run = run_identify(root, split, emb, cache=cache, workers=workers, scoring=scoring, progress=bar)
    write_identify_report(out_dir, run, command=command)
    r = run.results
    c, o, s, q = r["closed_set"], r["open_set"], r["speakers"], r["queries"]
    seed = r["seed_reference"]
    table = Table(title=f"{Path(r['split_file']).name}: {q['scored']:,} queries, {c['speakers']:,} speakers")
    for col in ("system", "top-1", "top-5", "FNIR @ FPIR 1 %", "FAR @ index threshold"):
        table.add_column(col, justify="left" if col == "system" else "right")
    fnir = "–" if o is None else _pct(o["fnir_at_fpir"])
    far = "–" if o is None or "index_default" not in o else _pct(o["index_default"]["false_accept_rate"])
    table.add_row(f"{r['model']} ({r['scoring']})", _pct(c["top1"]), _pct(c["top5"]), fnir, far)
    table.add_row("[italic]AutoSpeech (seed)[/italic]", _pct(seed["identification"]["top1"]), "", "", "")
    out_console.print(table)
    if s["skipped_count"]:
        names = ", ".join(x["speaker"] for x in s["skipped"][:10])
        out_console.print(
            f"skipped {s['skipped_count']} speaker(s) with no usable train file: {names}"
            + (" ..." if s["skipped_count"] > 10 else "")
        )
    f = r["files"]
    out_console.print(
        f"files: {f['distinct']:,} distinct, {f['missing']:,} missing, {f['failed']:,} failed, "
        f"{f['embedding']['distinct_embedded']:,} embedded, {f['embedding']['distinct_cached']:,} cached"
    )
    out_console.print(f"seed reference is on {seed['identification']['protocol']}")
    out_console.print(f"report: {out_dir / 'report.md'}")
    return out_dir

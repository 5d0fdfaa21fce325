"""`speakerid diarize`: who spoke when, named from a speaker index."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import SpeakeridError
from ._common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_SOME_FAILED,
    app,
    err,
    expand_inputs,
    finish,
    out,
    print_json,
    report_failures,
    warn,
)
from ._progress import RichProgress


def _options(config: Path | None):
    from ..config import load_yaml
    from ..diarize import DiarizeOptions

    return DiarizeOptions() if config is None else load_yaml(config, DiarizeOptions)


def _plot_path(plot: Path, audio: Path, many: bool) -> Path:
    return plot.with_name(f"{plot.stem}.{audio.stem}{plot.suffix or '.png'}") if many else plot


def _print_timeline(tl, audio: Path) -> None:
    out.print(f"{audio}: {tl.duration_s:.1f} s, {len(tl.labels())} speakers", markup=False)
    for t in tl.turns:
        score = "" if t.score is None else f"  {t.score:.3f}"
        out.print(f"  {t.start_s:8.2f} {t.end_s:8.2f}  {t.speaker}{score}", markup=False)


@app.command()
def diarize(
    paths: list[Path] = typer.Argument(..., help="Recordings (files, or directories walked recursively)."),
    index: Path | None = typer.Option(None, "--index", "-i", help="Name speakers from this index (CAM++)."),
    num_speakers: int | None = typer.Option(None, "--num-speakers", help="Exactly this many speakers."),
    min_speakers: int | None = typer.Option(None, "--min-speakers", help="At least this many speakers."),
    max_speakers: int | None = typer.Option(None, "--max-speakers", help="At most this many speakers."),
    rttm: Path | None = typer.Option(None, "--rttm", help="Write the turns of every recording to this RTTM file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: one record per turn."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG timeline (one lane per speaker)."),
    config: Path | None = typer.Option(None, "--config", help="YAML file of diarization options (DiarizeOptions)."),
) -> None:
    """Who spoke when in each recording; with --index, enrolled speakers by name, others unknown-N.

    Exits 1 when some recordings failed (listed on stderr), 2 when every one did."""
    from ..diarize import Diarizer
    from ..diarize.options import check_speaker_counts

    check_speaker_counts(num_speakers, min_speakers, max_speakers,  # before loading anything
                         names=("--num-speakers", "--min-speakers", "--max-speakers"))
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from ..errors import PlotUnavailableError

            raise PlotUnavailableError("--plot needs matplotlib: pip install 'speakerid[bench]'") from None
    files = expand_inputs(paths)
    d = Diarizer(_options(config))
    gallery = d.open_index(index) if index is not None else None
    done, failures = [], []
    with RichProgress(err) as bar:
        for f in files:
            try:
                tl = d(f, index=gallery, num_speakers=num_speakers, min_speakers=min_speakers,
                       max_speakers=max_speakers, progress=bar)
            except SpeakeridError as exc:
                if len(files) == 1:
                    raise
                failures.append((str(f), str(exc)))
                continue
            done.append((f, tl))
    _write(done, rttm, plot, as_json, len(files) > 1, failures)
    report_failures(failures, len(files), "recordings")
    finish(EXIT_OK if not failures else EXIT_SOME_FAILED if done else EXIT_ERROR)


def _write(done: list, rttm: Path | None, plot: Path | None, as_json: bool, many: bool, failures: list) -> None:
    from ..diarize.plot import plot_timeline

    for f, tl in done:
        for w in tl.warnings:
            warn(f"{f}: {w}")
        if plot is not None:
            plot_timeline(tl, _plot_path(plot, f, many), title=f.name)
    if rttm is not None:
        rttm.parent.mkdir(parents=True, exist_ok=True)
        rttm.write_text("".join(tl.to_rttm(f.stem) for f, tl in done), encoding="utf-8")
    if as_json:
        records = [{"file": str(f), **tl.to_dict()} for f, tl in done]
        if many:
            print_json({"files": records, "failures": [{"path": p, "error": e} for p, e in failures]})
        elif records:
            print_json(records[0])
    else:
        for f, tl in done:
            _print_timeline(tl, f)

"""Benchmark reports: results.json, report.md, the per-trial or per-query scores (Parquet) and,
with matplotlib, a DET curve and a score histogram (PNG).

Without matplotlib (it comes with the ``bench`` extra) everything but the two PNGs is written;
report.md says how to get them and one warning goes to the ``speakerid`` logger.

Output directories are written atomically (:func:`speakerid._io.atomic_dir`): everything is
built in a hidden temporary sibling of ``--out`` and renamed into place at the end, so a run
that fails leaves nothing in ``--out``. An existing ``--out`` is replaced only when it holds a
previous benchmark's output (a ``results.json`` written by speakerid); anything else there is
refused, never deleted. Results are owner-only, like every file of biometric data.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._io import atomic_dir, write_json
from ..errors import ConfigError, SpeakeridError
from ..metrics import det_curve, open_set_det_curve, open_set_rates
from . import plots
from .markdown import DET_FILE, HIST_FILE, identify_markdown, verify_markdown

if TYPE_CHECKING:
    from .identification import IdentifyRun
    from .verification import VerifyRun

__all__ = [
    "check_output_dir",
    "load_results",
    "staged_output",
    "write_identify_report",
    "write_verify_report",
]

log = logging.getLogger("speakerid")

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"


# --- atomic output directory -----------------------------------------------------------------


def _is_previous_output(d: Path) -> bool:
    try:
        data = json.loads((d / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "speakerid_bench" in data


def check_output_dir(out_dir: str | os.PathLike[str]) -> Path:
    """``out_dir`` as a Path if a run may write it (absent, empty, or a previous run's output)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not _is_previous_output(out):
        raise ConfigError(
            f"--out {out} is not empty and does not hold a previous benchmark's output: choose another directory"
        )
    return out


@contextmanager
def staged_output(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it becomes ``out_dir`` (atomic rename).

    On any exception the temporary directory is removed and ``out_dir`` is left as it was.
    """
    out = check_output_dir(out_dir)
    with ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic_dir(out))
        except OSError as e:
            raise ConfigError(f"cannot write --out {out}: {e}") from None
        yield tmp
        check_output_dir(out)  # may have changed meanwhile


def _write_results(path: Path, results: Any, command: str | None) -> None:
    data = results.to_dict()
    if command:
        data["command"] = command
    write_json(path, data)


def _no_plots(out_dir: str | os.PathLike[str]) -> None:
    log.warning("%s: plots not drawn, matplotlib is not installed (%s for %s and %s)",
                out_dir, plots.INSTALL_HINT, DET_FILE, HIST_FILE)


def load_results(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The results.json of a finished run."""
    p = Path(out_dir) / RESULTS_FILE
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise SpeakeridError(f"{p}: cannot read benchmark results: {e}") from None
    if not isinstance(data, dict):
        raise SpeakeridError(f"{p}: not a benchmark results file")
    return data


# --- verification ----------------------------------------------------------------------------


def _verify_plots(tmp: Path, run: VerifyRun) -> None:
    r = run.results
    title = f"Verification: {Path(r.trials_file).name} ({r.model})"
    curves, points = [], []
    for name, s in run.scores.items():
        fpr, fnr, _ = det_curve(s, run.labels)
        m = r.systems[name]
        curves.append((f"{name} (EER {100 * m.eer:.2f} %)", fpr, fnr))
        points.append((f"{name} EER", m.eer, m.eer))
    plots.det_plot(tmp / DET_FILE, curves, title=f"DET: {title}", points=points)
    cos, m = run.scores["cosine"], r.systems["cosine"]
    plots.score_histogram(
        tmp / HIST_FILE,
        [("cosine target", cos[run.labels == 1]), ("cosine non-target", cos[run.labels == 0])],
        title=f"Cosine scores: {title}",
        xlabel="cosine similarity",
        thresholds={"EER": m.eer_threshold, "minDCF 0.01": m.min_dcf_001_threshold},
    )


def _verify_scores(path: Path, run: VerifyRun) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, Any] = {
        "label": pa.array(run.labels, pa.int8()),
        "a": [t.a for t in run.trials],
        "b": [t.b for t in run.trials],
        "line": pa.array([t.line for t in run.trials], pa.int64()),
    }
    cols.update({name: pa.array(s, pa.float64()) for name, s in run.scores.items()})
    pq.write_table(pa.table(cols), path)


def write_verify_report(out_dir: str | os.PathLike[str], run: VerifyRun, *, command: str | None = None) -> Path:
    """Write results.json, report.md, scores.parquet and (with matplotlib) det.png and scores.png."""
    drawn = plots.available()
    with staged_output(out_dir) as tmp:
        _write_results(tmp / RESULTS_FILE, run.results, command)
        _verify_scores(tmp / "scores.parquet", run)
        if drawn:
            _verify_plots(tmp, run)
        (tmp / REPORT_FILE).write_text(verify_markdown(run.results, command=command, plots=drawn))
    if not drawn:
        _no_plots(out_dir)
    return Path(out_dir)


# --- identification --------------------------------------------------------------------------


def _identify_plots(tmp: Path, run: IdentifyRun) -> None:
    r = run.results
    title = f"Identification: {Path(r.split_file).name} ({r.model})"
    if len(run.nonmated_top):
        fpir, fnir, _ = open_set_det_curve(run.mated_true, run.mated_top1, run.nonmated_top)
        pts = []
        for name, t in run.thresholds.items():
            at = open_set_rates(run.mated_true, run.mated_top1, run.nonmated_top, t)
            pts.append((f"{name} ({t:.3f})", at.fpir, at.fnir))
        plots.det_plot(tmp / DET_FILE, [(r.scoring, fpir, fnir)], title=f"Open-set DET: {title}",
                       xlabel="FPIR (%)", ylabel="FNIR (%)", points=pts)
    else:
        plots.placeholder_plot(tmp / DET_FILE, "one enrolled speaker: no non-mated searches")
    plots.score_histogram(
        tmp / HIST_FILE,
        [("mated (own speaker)", run.mated_true), ("non-mated (best other speaker)", run.nonmated_top)],
        title=f"Identification scores ({r.scoring}): {r.model}",
        xlabel="speaker score (cosine)",
        thresholds=dict(run.thresholds),
    )


def _identify_queries(path: Path, run: IdentifyRun) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    nonmated = run.nonmated_top if len(run.nonmated_top) else np.full(len(run.query_paths), np.nan)
    pq.write_table(
        pa.table({
            "path": run.query_paths,
            "speaker": run.query_speakers,
            "top1_speaker": run.top_speakers,
            "true_score": pa.array(run.mated_true, pa.float64()),
            "top1_correct": pa.array(run.mated_top1, pa.bool_()),
            "nonmated_top_score": pa.array(nonmated, pa.float64()),
        }),
        path,
    )


def write_identify_report(
    out_dir: str | os.PathLike[str], run: IdentifyRun, *, command: str | None = None
) -> Path:
    """Write results.json, report.md, queries.parquet and (with matplotlib) det.png and scores.png."""
    drawn = plots.available()
    with staged_output(out_dir) as tmp:
        _write_results(tmp / RESULTS_FILE, run.results, command)
        _identify_queries(tmp / "queries.parquet", run)
        if drawn:
            _identify_plots(tmp, run)
        (tmp / REPORT_FILE).write_text(identify_markdown(run.results, command=command, plots=drawn))
    if not drawn:
        _no_plots(out_dir)
    return Path(out_dir)

"""Benchmark reports: results.json, report.md, a DET curve and a score histogram (PNG).

matplotlib is imported here only, lazily, with the Agg backend (object API, no pyplot state),
so the rest of speakerid never needs it; it comes with the ``bench`` extra.

Output directories are written atomically: everything is built in a hidden temporary
sibling of ``--out`` and renamed into place at the end, so a run that fails leaves nothing in
``--out``. An existing ``--out`` is replaced only when it holds a previous benchmark's output
(a ``results.json`` written by speakerid); anything else there is refused, never deleted.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, SpeakeridError
from .metrics import det_curve

if TYPE_CHECKING:
    from .bench.identification import IdentifyRun
    from .bench.verification import VerifyRun

__all__ = [
    "check_output_dir",
    "det_plot",
    "probit",
    "require_matplotlib",
    "score_histogram",
    "staged_output",
    "write_identify_report",
    "write_verify_report",
]

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
DET_FILE = "det.png"
HIST_FILE = "scores.png"
#: DET axes ticks (probabilities).
_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95)
#: DET axes limits (probabilities); rates below the lower one (e.g. 0) are drawn on the frame.
_LIMITS = (0.0005, 0.97)


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
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as e:
        raise ConfigError(f"cannot write --out {out}: {e}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        check_output_dir(out)  # may have changed meanwhile
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if out.exists():
            old = parent / f".{out.name}.old-{secrets.token_hex(4)}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _clean(x: Any) -> Any:
    """JSON has no NaN/inf: they become null."""
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(_clean(data), indent=2, default=_json_default, allow_nan=False) + "\n")


# --- plots -----------------------------------------------------------------------------------


def probit(p: Any) -> np.ndarray:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    lo, hi = 0.02425, 1 - 0.02425
    out = np.empty_like(p)
    m = p < lo
    q = np.sqrt(-2 * np.log(p[m]))
    out[m] = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
        (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    m = p > hi
    q = np.sqrt(-2 * np.log(1 - p[m]))
    out[m] = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
        (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    m = (p >= lo) & (p <= hi)
    q = p[m] - 0.5
    r = q * q
    out[m] = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (
        ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    return out


def require_matplotlib() -> None:
    """ConfigError (with the install command) when matplotlib is missing; call before long runs."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            "benchmark reports need matplotlib: pip install 'speakerid[bench]' (or pip install matplotlib)"
        ) from None


def _figure(width: float = 6.0, height: float = 5.0) -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _thin(x: np.ndarray, y: np.ndarray, step: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Keep a point each ``step`` of path length (probit units), so big lists plot quickly."""
    if len(x) <= 2:
        return x, y
    seg = np.hypot(np.diff(x), np.diff(y))
    cum = np.concatenate(([0.0], np.cumsum(seg)))
    _, first = np.unique(np.floor(cum / step), return_index=True)
    keep = np.union1d(first, [0, len(x) - 1])
    return x[keep], y[keep]


def det_plot(
    path: Path,
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    title: str,
    xlabel: str = "False alarm rate (%)",
    ylabel: str = "Miss rate (%)",
    points: Sequence[tuple[str, float, float]] = (),
) -> None:
    """DET curves on normal-deviate (probit) axes; ``curves`` are (label, fpr, fnr)."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    floor = _LIMITS[0]
    for label, fpr, fnr in curves:
        x, y = probit(np.clip(fpr, floor, 1 - floor)), probit(np.clip(fnr, floor, 1 - floor))
        x, y = _thin(x, y)
        ax.plot(x, y, label=label, linewidth=1.5)
    for label, fp, fn in points:
        ax.plot([probit(max(fp, floor))[()]], [probit(max(fn, floor))[()]], "o", markersize=5, label=label)
    lo = probit(_LIMITS[0])[()]
    hi = probit(_LIMITS[1])[()]
    ax.plot([lo, hi], [lo, hi], color="0.8", linewidth=0.8, linestyle="--")
    ticks = probit(np.array(_TICKS))
    labels = [f"{100 * t:g}" for t in _TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, color="0.9")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")


def score_histogram(
    path: Path,
    series: Sequence[tuple[str, np.ndarray]],
    *,
    title: str,
    xlabel: str,
    thresholds: dict[str, float] | None = None,
) -> None:
    """Overlaid density histograms of score sets, with vertical lines at ``thresholds``."""
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    finite = [s[np.isfinite(s)] for _, s in series]
    allv = np.concatenate([f for f in finite if len(f)]) if any(len(f) for f in finite) else np.zeros(1)
    bins = np.linspace(float(allv.min()), float(allv.max()) + 1e-9, 60)
    for (label, _), s in zip(series, finite):
        if len(s):
            ax.hist(s, bins=bins, density=True, alpha=0.55, label=f"{label} (n={len(s):,})")
    for i, (name, t) in enumerate((thresholds or {}).items()):
        if t is not None and math.isfinite(t):
            ax.axvline(t, color=f"C{i + 2}", linestyle="--", linewidth=1, label=f"{name}: {t:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")


# --- reports ---------------------------------------------------------------------------------


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def _num(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _files_section(r: dict[str, Any]) -> list[str]:
    f = r["files"]
    e = f["embedding"]
    lines = [
        "## Files",
        "",
        f"{f['distinct']:,} distinct files: {e['distinct_embedded']:,} embedded in this run, "
        f"{e['distinct_cached']:,} taken from the embedding cache, {f['missing']:,} missing, "
        f"{f['failed']:,} failed to embed.",
        "",
    ]
    if f["missing_list"]:
        lines += [f"Missing (first {len(f['missing_list'])}): " + ", ".join(f"`{p}`" for p in f["missing_list"]), ""]
    if f["failed_list"]:
        lines += ["Failed to embed:", ""] + [f"- `{x['path']}`: {x['error']}" for x in f["failed_list"]] + [""]
    return lines


def _header(r: dict[str, Any], title: str, list_key: str, command: str | None) -> list[str]:
    lines = [
        f"# {title}",
        "",
        f"- model: `{r['model']}` (weights sha256 `{r['weights_sha256'][:16]}…`)",
        f"- {list_key.replace('_', ' ')}: `{r[list_key]}`",
        f"- wav root: `{r['root']}`",
        f"- made: {r['environment']['created_at']}, {r['timing']['total_s']:.1f} s "
        f"({r['environment']['cpus']} CPUs, Python {r['environment']['python']})",
    ]
    if command:
        lines.append(f"- command: `{command}`")
    return lines + [""]


def write_verify_report(out_dir: str | os.PathLike[str], run: VerifyRun, *, command: str | None = None) -> Path:
    """Write results.json, report.md, det.png, scores.png and scores.parquet atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    r = dict(run.results)
    if command:
        r["command"] = command
    title = f"Verification: {Path(r['trials_file']).name}"
    with staged_output(out_dir) as tmp:
        write_json(tmp / RESULTS_FILE, r)
        curves, points = [], []
        for name, s in run.scores.items():
            fpr, fnr, _ = det_curve(s, run.labels)
            m = r["systems"][name]
            curves.append((f"{name} (EER {_pct(m['eer'])})", fpr, fnr))
            points.append((f"{name} EER", m["eer"], m["eer"]))
        det_plot(tmp / DET_FILE, curves, title=f"DET: {title} ({r['model']})", points=points)
        series = []
        for name, s in run.scores.items():
            series += [(f"{name} target", s[run.labels == 1]), (f"{name} non-target", s[run.labels == 0])]
        cos = r["systems"]["cosine"]
        score_histogram(
            tmp / HIST_FILE,
            series[:2],
            title=f"Cosine scores: {title} ({r['model']})",
            xlabel="cosine similarity",
            thresholds={"EER": cos["eer_threshold"], "minDCF 0.01": cos["min_dcf_0.01_threshold"]},
        )
        cols: dict[str, Any] = {
            "label": pa.array(run.labels, pa.int8()),
            "a": [t.a for t in run.trials],
            "b": [t.b for t in run.trials],
            "line": pa.array([t.line for t in run.trials], pa.int64()),
        }
        cols.update({name: pa.array(s, pa.float64()) for name, s in run.scores.items()})
        pq.write_table(pa.table(cols), tmp / "scores.parquet")

        t = r["trials"]
        lines = _header(r, title, "trials_file", command)
        lines += [
            "## Results",
            "",
            "| scoring | EER | EER threshold | minDCF (P_tar 0.01) | threshold | minDCF (P_tar 0.05) | threshold |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, m in r["systems"].items():
            label = "cosine" if name == "cosine" else f"AS-norm (top {r['asnorm']['top_n']})"
            lines.append(
                f"| {label} | {_pct(m['eer'])} | {_num(m['eer_threshold'])} | {_num(m['min_dcf_0.01'])} | "
                f"{_num(m['min_dcf_0.01_threshold'])} | {_num(m['min_dcf_0.05'])} | {_num(m['min_dcf_0.05_threshold'])} |"
            )
        seed = r["seed_reference"]
        lines += [
            f"| *{seed['system']}* | *{_pct(seed['verification']['eer'])}* | | | | | |",
            "",
            f"minDCF: C_miss = C_fa = 1, normalised by min(P_tar, 1 - P_tar). The seed's EER is on "
            f"{seed['verification']['protocol']}; compare only with a run on that list.",
            "",
            f"Trials: {t['listed']:,} listed, {t['scored']:,} scored ({t['target']:,} target, "
            f"{t['nontarget']:,} non-target); {t['skipped_missing_file']:,} skipped for a missing file, "
            f"{t['skipped_failed_embedding']:,} for a file that could not be embedded.",
            "",
        ]
        if r.get("asnorm"):
            a = r["asnorm"]
            lines += [
                f"AS-norm cohort: `{a['dir']}`, {a['embedded']:,} embeddings ({a['failed']} failed), "
                f"top {a['top_n']}; {a['files_also_in_trials']} cohort files are also in the trials"
                + (" (**the cohort should not overlap the trials**)" if a["files_also_in_trials"] else "")
                + ".",
                "",
            ]
        lines += _files_section(r)
        lines += ["## Plots", "", f"![DET curve]({DET_FILE})", "", f"![Score histogram]({HIST_FILE})", ""]
        (tmp / REPORT_FILE).write_text("\n".join(lines))
    return Path(out_dir)


def write_identify_report(
    out_dir: str | os.PathLike[str], run: IdentifyRun, *, command: str | None = None
) -> Path:
    """Write results.json, report.md, det.png, scores.png and queries.parquet atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    r = dict(run.results)
    if command:
        r["command"] = command
    title = f"Identification: {Path(r['split_file']).name}"
    with staged_output(out_dir) as tmp:
        write_json(tmp / RESULTS_FILE, r)
        if len(run.nonmated_top):
            # open-set DET: FNIR (true speaker not accepted at rank 1) against FPIR, per threshold
            thr = np.unique(np.concatenate([run.mated_true, run.nonmated_top]))
            hit_scores = np.sort(np.where(run.mated_top1, run.mated_true, -np.inf))
            non = np.sort(run.nonmated_top)
            fpir = 1 - np.searchsorted(non, thr, side="left") / len(non)
            # a mated search is missed unless its own speaker is rank 1 with score >= threshold
            fnir = np.searchsorted(hit_scores, thr, side="left") / len(hit_scores)
            pts = [
                (f"{name} ({t:.3f})", float(np.mean(run.nonmated_top >= t)),
                 float(np.mean(~(run.mated_top1 & (run.mated_true >= t)))))
                for name, t in run.thresholds.items()
            ]
            det_plot(tmp / DET_FILE, [(r["scoring"], fpir, fnir)], title=f"Open-set DET: {title} ({r['model']})",
                     xlabel="FPIR (%)", ylabel="FNIR (%)", points=pts)
        else:
            _placeholder_plot(tmp / DET_FILE, "one enrolled speaker: no non-mated searches")
        score_histogram(
            tmp / HIST_FILE,
            [("mated (own speaker)", run.mated_true), ("non-mated (best other speaker)", run.nonmated_top)],
            title=f"Identification scores ({r['scoring']}): {r['model']}",
            xlabel="speaker score (cosine)",
            thresholds=run.thresholds,
        )
        pq.write_table(
            pa.table({
                "path": run.query_paths,
                "speaker": run.query_speakers,
                "top1_speaker": run.top_speakers,
                "true_score": pa.array(run.mated_true, pa.float64()),
                "top1_correct": pa.array(run.mated_top1, pa.bool_()),
                "nonmated_top_score": pa.array(
                    run.nonmated_top if len(run.nonmated_top) else np.full(len(run.query_paths), np.nan),
                    pa.float64(),
                ),
            }),
            tmp / "queries.parquet",
        )

        c, o, s, q = r["closed_set"], r["open_set"], r["speakers"], r["queries"]
        seed = r["seed_reference"]
        lines = _header(r, title, "split_file", command)
        lines += [
            "## Closed set",
            "",
            "| system | top-1 | top-5 | speakers |",
            "|---|---:|---:|---:|",
            f"| {r['model']} ({r['scoring']}) | {_pct(c['top1'])} | {_pct(c['top5'])} | {c['speakers']:,} |",
            f"| *{seed['system']}* | *{_pct(seed['identification']['top1'])}* | | |",
            "",
            f"The seed's top-1 is on {seed['identification']['protocol']}; compare only with a run on that split.",
            "",
        ]
        if o is not None:
            lines += [
                "## Open set",
                "",
                "Every query is searched once against the whole gallery (mated) and once with its own "
                "speaker masked (non-mated, an unenrolled voice).",
                "",
                "| operating point | threshold | FPIR (false accepts) | FNIR |",
                "|---|---:|---:|---:|",
                f"| FPIR ≤ {_pct(o['fpir_target'], 0)} | {_num(o['threshold_at_fpir'])} | {_pct(o['fpir_achieved'])} "
                f"| {_pct(o['fnir_at_fpir'])} |",
            ]
            for name in ("index_default", "model_verification"):
                if name in o:
                    x = o[name]
                    lines.append(
                        f"| {name.replace('_', ' ')} ({x['method']}) | {_num(x['threshold'])} | "
                        f"{_pct(x['false_accept_rate'])} | {_pct(x['fnir'])} |"
                    )
            lines.append("")
        lines += [
            "## Data",
            "",
            f"Split lines: {r['split_lines']['train']:,} train, {r['split_lines']['dev']:,} dev (unused), "
            f"{r['split_lines']['test']:,} test. Speakers: {s['listed']:,} listed, {s['enrolled']:,} enrolled "
            f"from {s['enrolled_clips']:,} clips, {s['skipped_count']:,} skipped (no usable train file). "
            f"Queries: {q['listed']:,} listed, {q['scored']:,} scored, {q['skipped_speaker_not_enrolled']:,} of "
            f"skipped speakers, {q['skipped_missing_or_failed']:,} missing or failed.",
            "",
        ]
        for x in s["skipped"]:
            lines.append(f"- skipped `{x['speaker']}`: {x['reason']} ({x['test_listed']} test files not queried)")
        if s["skipped"]:
            lines.append("")
        lines += _files_section(r)
        lines += ["## Plots", "", f"![Open-set DET curve]({DET_FILE})", "", f"![Score histogram]({HIST_FILE})", ""]
        (tmp / REPORT_FILE).write_text("\n".join(lines))
    return Path(out_dir)


def _placeholder_plot(path: Path, message: str) -> None:
    fig = _figure(5, 2)
    fig.text(0.5, 0.5, message, ha="center", va="center")
    fig.savefig(path, format="png")


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

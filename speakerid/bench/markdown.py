"""report.md of a benchmark run, from its results."""

from __future__ import annotations

from pathlib import Path

from .plots import INSTALL_HINT
from .results import FileCounts, IdentifyResults, OpenSet, VerifyResults

__all__ = ["DET_FILE", "HIST_FILE", "identify_markdown", "verify_markdown"]

DET_FILE = "det.png"
HIST_FILE = "scores.png"


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def _num(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _header(r: VerifyResults | IdentifyResults, title: str, list_name: str, list_path: str,
            command: str | None) -> list[str]:
    env = r.environment
    lines = [
        f"# {title}",
        "",
        f"- model: `{r.model}` (weights sha256 `{r.weights_sha256[:16]}…`)",
        f"- {list_name}: `{list_path}`",
        f"- wav root: `{r.root}`",
        f"- made: {env.created_at}, {r.timing.total_s:.1f} s ({env.cpus} CPUs, Python {env.python})",
    ]
    if command:
        lines.append(f"- command: `{command}`")
    return lines + [""]


def _files_section(f: FileCounts) -> list[str]:
    e = f.embedding
    lines = [
        "## Files",
        "",
        f"{f.distinct:,} distinct files: {e.distinct_embedded:,} embedded in this run, "
        f"{e.distinct_cached:,} taken from the embedding cache, {f.missing:,} missing, "
        f"{f.failed:,} failed to embed.",
        "",
    ]
    if f.missing_list:
        lines += [f"Missing (first {len(f.missing_list)}): " + ", ".join(f"`{p}`" for p in f.missing_list), ""]
    if f.failed_list:
        lines += ["Failed to embed:", ""] + [f"- `{x.path}`: {x.error}" for x in f.failed_list] + [""]
    return lines


def _plots_section(plots: bool, det_alt: str, data_file: str) -> list[str]:
    if plots:
        return ["## Plots", "", f"![{det_alt}]({DET_FILE})", "", f"![Score histogram]({HIST_FILE})", ""]
    return [
        "## Plots",
        "",
        f"Not drawn: matplotlib is not installed. `{INSTALL_HINT}` and run again for {DET_FILE} and "
        f"{HIST_FILE}; the scores they are drawn from are in {data_file}.",
        "",
    ]


def _verify_table(r: VerifyResults) -> list[str]:
    lines = [
        "## Results",
        "",
        "| scoring | EER | EER threshold | minDCF (P_tar 0.01) | threshold | minDCF (P_tar 0.05) | threshold |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in r.systems.items():
        label = f"AS-norm (top {r.asnorm.top_n})" if name == "asnorm" and r.asnorm is not None else name
        lines.append(
            f"| {label} | {_pct(m.eer)} | {_num(m.eer_threshold)} | {_num(m.min_dcf_001)} | "
            f"{_num(m.min_dcf_001_threshold)} | {_num(m.min_dcf_005)} | {_num(m.min_dcf_005_threshold)} |"
        )
    seed = r.seed_reference
    return lines + [f"| *{seed.system}* | *{_pct(seed.verification_eer)}* | | | | | |", ""]


def verify_markdown(r: VerifyResults, *, command: str | None, plots: bool) -> str:
    t, seed = r.trials, r.seed_reference
    lines = _header(r, f"Verification: {Path(r.trials_file).name}", "trials file", r.trials_file, command)
    lines += _verify_table(r)
    lines += [
        f"minDCF: C_miss = C_fa = 1, normalised by min(P_tar, 1 - P_tar). The seed's EER is on "
        f"{seed.verification_protocol}; compare only with a run on that list.",
        "",
        f"Trials: {t.listed:,} listed, {t.scored:,} scored ({t.target:,} target, "
        f"{t.nontarget:,} non-target); {t.skipped_missing_file:,} skipped for a missing file, "
        f"{t.skipped_failed_embedding:,} for a file that could not be embedded.",
        "",
    ]
    if r.asnorm is not None:
        a = r.asnorm
        lines += [
            f"AS-norm cohort: `{a.dir}`, {a.embedded:,} embeddings ({a.failed} failed), "
            f"top {a.top_n}; {a.files_also_in_trials} cohort files are also in the trials"
            + (" (**the cohort should not overlap the trials**)" if a.files_also_in_trials else "")
            + ".",
            "",
        ]
    lines += _files_section(r.files)
    lines += _plots_section(plots, "DET curve", "scores.parquet")
    return "\n".join(lines)


def _open_set_section(o: OpenSet) -> list[str]:
    lines = [
        "## Open set",
        "",
        "Every query is searched once against the whole gallery (mated) and once with its own "
        "speaker masked (non-mated, an unenrolled voice).",
        "",
        "| operating point | threshold | FPIR (false accepts) | FNIR |",
        "|---|---:|---:|---:|",
        f"| FPIR ≤ {_pct(o.fpir_target, 0)} | {_num(o.threshold_at_fpir)} | {_pct(o.fpir_achieved)} "
        f"| {_pct(o.fnir_at_fpir)} |",
    ]
    for name, x in (("index default", o.index_default), ("model verification", o.model_verification)):
        if x is not None:
            lines.append(
                f"| {name} ({x.method}) | {_num(x.threshold)} | {_pct(x.false_accept_rate)} | {_pct(x.fnir)} |"
            )
    return lines + [""]


def _data_section(r: IdentifyResults) -> list[str]:
    n, s, q = r.split_lines, r.speakers, r.queries
    lines = [
        "## Data",
        "",
        f"Split lines: {n.train:,} train, {n.dev:,} dev (unused), {n.test:,} test. Speakers: {s.listed:,} "
        f"listed, {s.enrolled:,} enrolled from {s.enrolled_clips:,} clips, {s.skipped_count:,} skipped (no "
        f"usable train file). Queries: {q.listed:,} listed, {q.scored:,} scored, "
        f"{q.skipped_speaker_not_enrolled:,} of skipped speakers, {q.skipped_missing_or_failed:,} missing or "
        "failed.",
        "",
    ]
    lines += [f"- skipped `{x.speaker}`: {x.reason} ({x.test_listed} test files not queried)" for x in s.skipped]
    return lines + ([""] if s.skipped else [])


def identify_markdown(r: IdentifyResults, *, command: str | None, plots: bool) -> str:
    c, seed = r.closed_set, r.seed_reference
    lines = _header(r, f"Identification: {Path(r.split_file).name}", "split file", r.split_file, command)
    lines += [
        "## Closed set",
        "",
        "| system | top-1 | top-5 | speakers |",
        "|---|---:|---:|---:|",
        f"| {r.model} ({r.scoring}) | {_pct(c.top1)} | {_pct(c.top5)} | {c.speakers:,} |",
        f"| *{seed.system}* | *{_pct(seed.identification_top1)}* | | |",
        "",
        f"The seed's top-1 is on {seed.identification_protocol}; compare only with a run on that split.",
        "",
    ]
    if r.open_set is not None:
        lines += _open_set_section(r.open_set)
    lines += _data_section(r)
    lines += _files_section(r.files)
    lines += _plots_section(plots, "Open-set DET curve", "queries.parquet")
    return "\n".join(lines)

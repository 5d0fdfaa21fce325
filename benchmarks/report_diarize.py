"""benchmarks/results/diarize*.json -> benchmarks/results/diarize.md (the tables of BENCHMARKS.md).

    python benchmarks/report_diarize.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def quality_row(name: str, s: dict) -> str:
    return (f"| {name} | {pct(s['der_c0'])} | {pct(s['der_c025'])} | {pct(s['jer_c0'])} | {pct(s['jer_c025'])} | "
            f"{pct(s['miss'])} / {pct(s['false_alarm'])} / {pct(s['confusion'])} | {pct(s['count_exact'])} | "
            f"{pct(s['named_accuracy'])} ({pct(s['named_accuracy_c025'])}) | "
            f"{pct(s['false_name_rate'])} ({pct(s['false_name_rate_c025'])}) | "
            f"{s['identity_errors']['wrong']} / {s['identity_errors']['named']} |")


def main() -> None:
    main_res = json.loads((RESULTS / "diarize.json").read_text())
    fine_p = RESULTS / "diarize_step2.5.json"  # not re-run with the current code: optional
    fine = json.loads(fine_p.read_text()) if fine_p.exists() else None
    prev_p, prev_fine_p = RESULTS / "diarize_af508ef.json", RESULTS / "diarize_af508ef_step2.5.json"
    prev = json.loads(prev_p.read_text()) if prev_p.exists() else None
    prev_fine = json.loads(prev_fine_p.read_text()) if prev_fine_p.exists() else None
    sweep = json.loads((RESULTS / "diarize_sweep.json").read_text())
    speed_p = RESULTS / "diarize_speed.json"
    speed = json.loads(speed_p.read_text()) if speed_p.exists() else None
    head = ("| configuration | DER c0 | DER c0.25 | JER c0 | JER c0.25 | miss / FA / confusion (c0) | count exact | "
            "named accuracy (c0.25) | false names (c0.25) | wrong-identity clusters |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = ["# Diarization (benchmarks/eval_diarize.py, bench_diarize.py)", "",
             f"Synthetic set: {main_res['synthetic']['files']} conversations of benchmarks/build_conversations.py "
             f"(seed 0; 2-7 speakers, gallery of {main_res['gallery_speakers']} enrolled speakers, index threshold "
             f"{main_res['index_threshold']:.3f}). DER/JER: pyannote.metrics, overlap scored; c0.25 is the NIST "
             "0.25 s collar (+-0.25 s, pyannote collar=0.5). Pooled over files by reference speech (JER: mean of "
             "files). Named accuracy / false names: strict 10 ms frames (in brackets: frames within 0.25 s of a "
             "reference boundary left out). Wrong-identity clusters: named clusters whose name is not a speaker "
             "of the conversation.", "", "## Quality", "", head,
             quality_row("default (step 5 s, naming check)", main_res["synthetic"]),
             quality_row("default, speaker count given", main_res["synthetic_oracle_count"]),
             ]
    nocheck = next((r for r in sweep["sweep"] if r["field"] == "combo" and r["value"] == dict.fromkeys(
        ("check_margin", "reassign_margin", "name_speech_threshold"))), None)
    if nocheck:
        lines.append(quality_row("without the naming check (its three options None)", nocheck))
    if fine:
        lines.append(quality_row("step_s=2.5", fine["synthetic"]))
    if prev:
        lines.append(quality_row("previous defaults (af508ef: hard votes, no taper)", prev["synthetic"]))
    if prev_fine:
        lines.append(quality_row("previous defaults, step_s=2.5", prev_fine["synthetic"]))
    lines.append("")
    causes = [(label, r["synthetic"]["false_name_causes"]) for label, r in (("default", main_res), ("step_s=2.5", fine))
              if r and "false_name_causes" in r["synthetic"]]
    if nocheck and "false_name_causes" in nocheck:
        causes.append(("without the naming check", nocheck["false_name_causes"]))
    if causes:
        keys = list(causes[0][1])
        lines += ["Where the false-name time lies (share of all named time, strict; \"near\": within 0.25 s of a "
                  "reference boundary):", "", "| cause | " + " | ".join(lb for lb, _ in causes) + " |",
                  "|---|" + "---|" * len(causes)]
        for k in keys:
            lines.append(f"| {k} | " + " | ".join(pct(c[k]) for _, c in causes) + " |")
        lines.append("| total | " + " | ".join(pct(sum(c.values())) for _, c in causes) + " |")
        lines.append("")
    lines += ["conversation-sample (real, 30 s, 2 speakers, no index):", "",
              "| configuration | DER c0 | DER c0.25 | JER c0 | miss / FA / confusion | speakers found |",
              "|---|---|---|---|---|---|"]
    for label, res in (("default", main_res), ("step_s=2.5", fine), ("previous defaults", prev)):
        if res is None:
            continue
        for mode, s in res["sample"].items():
            lines.append(f"| {label}, {mode} | {pct(s['der_c0'])} | {pct(s['der_c025'])} | {pct(s['jer_c0'])} | "
                         f"{pct(s['miss'])} / {pct(s['false_alarm'])} / {pct(s['confusion'])} | {s['found']} |")
    lines += ["", "## Clustering and options (synthetic set, one option changed from the defaults)", "",
              head.replace("configuration", "option")]
    for r in sweep["sweep"]:
        label = (", ".join(f"{k}={v}" for k, v in r["value"].items()) if r["field"] == "combo"
                 else f"{r['field']}={r['value']}")
        lines.append(quality_row(label, r))
    old_p = RESULTS / "diarize_sweep_nocheck.json"
    if old_p.exists():
        lines += ["", "Before the naming check (the defaults of 85d4771-5991bbd, one option changed):", "",
                  head.replace("configuration", "option")]
        for r in json.loads(old_p.read_text())["sweep"]:
            lines.append(quality_row(f"{r['field']}={r['value']}", r))
    if speed:
        lines += ["", "## Speed and memory (`speakerid diarize FILE --json` in a fresh process)", "",
                  "| recording | wall s | x real time | peak RSS |", "|---|---|---|---|"]
        for key in ("10min", "2h"):
            if key in speed:
                r = speed[key]
                lines.append(f"| {key} ({r['audio_s'] / 60:.0f} min) | {r['wall_s']:.1f} | {r['x_real_time']:.1f}x | "
                             f"{r['peak_rss_mb']:.0f} MB |")
        if "compare" in speed:
            c = speed["compare"]
            lines += ["", f"Same 10-minute file, runs alternating between this tree and {c['tree']} "
                      f"(median of {c['repeats']} each): {c['median_x_real_time']['this']:.1f}x and "
                      f"{c['median_x_real_time']['compare']:.1f}x real time (ratio "
                      f"{c['speed_ratio_this_over_compare']:.2f}); CPU time (user + system) "
                      f"{c['median_cpu_s']['this']:.0f} s and {c['median_cpu_s']['compare']:.0f} s."]
        idx_p = RESULTS / "diarize_speed_index.json"
        idx = json.loads(idx_p.read_text()) if idx_p.exists() else {}
        for key in ("10min", "2h"):
            if key in idx:
                r = idx[key]
                lines.append(f"\nWith `--index` (names, so the naming check's 1 s chunk embeddings are made), {key}: "
                             f"{r['wall_s']:.1f} s, {r['x_real_time']:.1f}x real time, peak RSS "
                             f"{r['peak_rss_mb']:.0f} MB (wall time as loaded as the machine was then; the "
                             "alternating ratio below is what holds).")
        if "note" in idx:
            lines.append(f"({idx['note']}.)")
        if "compare" in idx:
            c = idx["compare"]
            lines += ["", f"With `--index` (names, so the naming check's 1 s chunk embeddings are made), runs "
                      f"alternating between this tree and {c['tree']}, median of "
                      f"{c['repeats']} each, at load average {idx.get('load_average', '?')}: "
                      f"{c['median_x_real_time']['this']:.1f}x and "
                      f"{c['median_x_real_time']['compare']:.1f}x real time (ratio "
                      f"{c['speed_ratio_this_over_compare']:.2f}); CPU time {c['median_cpu_s']['this']:.0f} s and "
                      f"{c['median_cpu_s']['compare']:.0f} s (ratio {c['cpu_ratio_this_over_compare']:.2f}); peak RSS "
                      f"{max(x['peak_rss_mb'] for x in c['runs']['this']):.0f} MB and "
                      f"{max(x['peak_rss_mb'] for x in c['runs']['compare']):.0f} MB. Without `--index` the check "
                      "is off and the pass is the same as before."]
        lines += ["", f"Machine: {speed['cpus']} cores shared with other work; model loading and interpreter "
                  "start included."]
    (RESULTS / "diarize.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

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
    fine = json.loads((RESULTS / "diarize_step2.5.json").read_text())
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
             quality_row("default (step 5 s)", main_res["synthetic"]),
             quality_row("default, speaker count given", main_res["synthetic_oracle_count"]),
             quality_row("step_s=2.5", fine["synthetic"]), ""]
    lines += ["conversation-sample (real, 30 s, 2 speakers, no index):", "",
              "| configuration | DER c0 | DER c0.25 | JER c0 | miss / FA / confusion | speakers found |",
              "|---|---|---|---|---|---|"]
    for label, res in (("default", main_res), ("step_s=2.5", fine)):
        for mode, s in res["sample"].items():
            lines.append(f"| {label}, {mode} | {pct(s['der_c0'])} | {pct(s['der_c025'])} | {pct(s['jer_c0'])} | "
                         f"{pct(s['miss'])} / {pct(s['false_alarm'])} / {pct(s['confusion'])} | {s['found']} |")
    lines += ["", "## Clustering and options (synthetic set, one option changed from the defaults)", "",
              head.replace("configuration", "option")]
    for r in sweep["sweep"]:
        lines.append(quality_row(f"{r['field']}={r['value']}", r))
    if speed:
        lines += ["", "## Speed and memory (`speakerid diarize FILE --json` in a fresh process)", "",
                  "| recording | wall s | x real time | peak RSS |", "|---|---|---|---|"]
        for key in ("10min", "2h"):
            if key in speed:
                r = speed[key]
                lines.append(f"| {key} ({r['audio_s'] / 60:.0f} min) | {r['wall_s']:.1f} | {r['x_real_time']:.1f}x | "
                             f"{r['peak_rss_mb']:.0f} MB |")
        lines += ["", f"Machine: {speed['cpus']} cores shared with other work; model loading and interpreter "
                  "start included."]
    (RESULTS / "diarize.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Diarization quality: DER / JER, named accuracy and false names, on the synthetic
conversations of build_conversations.py and on ../shared/data/conversation-sample.

    python benchmarks/build_conversations.py --out bench-results/conversations --n 60 --seed 0
    nice -n 10 python benchmarks/eval_diarize.py --set bench-results/conversations \
        --out benchmarks/results/diarize.json

The segmentation + embedding pass of each file is cached (``<set>/.scans/``, keyed by the options
it depends on), so sweeps over clustering and naming options (``--sweep``) re-run only the
cheap stages. The gallery is ``<set>/enrol`` indexed with CAM++ into ``<set>/index``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import pickle
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diarize_scoring import CAUSES, der_jer, false_name_causes, naming  # noqa: E402

from speakerid.diarize import DiarizeOptions, Diarizer, read_rttm  # noqa: E402
from speakerid.diarize.options import check_speaker_counts  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "conversation-sample"
SCAN_FIELDS = ("window_s", "step_s", "min_embed_speech_s", "batch_windows", "piece_s", "check_chunk_s", "check_hop_s")
#: Bumped when Scan changes (2: the segmentation's posteriors are kept; 3: chunk embeddings).
SCAN_VERSION = 3


def scan_key(opts: DiarizeOptions) -> str:
    key = {f: getattr(opts, f) for f in SCAN_FIELDS if f != "check_hop_s" or opts.check_hop_s is not None}
    key |= {"scan_version": SCAN_VERSION}
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]


def cached_scan(d: Diarizer, wav: Path, cache: Path):
    st = wav.stat()
    p = cache / scan_key(d.options) / f"{wav.stem}.{st.st_size}.{st.st_mtime_ns}.pkl"
    if p.is_file():
        return pickle.loads(p.read_bytes())
    scan = d.scan(wav)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(pickle.dumps(scan))
    return scan


def gallery(set_dir: Path):
    from speakerid.index import SpeakerIndex
    from speakerid.indexer import build_index

    idx = set_dir / "index"
    stamp = idx.with_name("index.manifest-mtime")
    mtime = str((set_dir / "manifest.json").stat().st_mtime_ns)
    if (idx / "CURRENT").exists() and (not stamp.exists() or stamp.read_text() != mtime):
        import shutil

        shutil.rmtree(idx)  # the set was rebuilt: so was its gallery
    if not (idx / "CURRENT").exists():
        build_index(set_dir / "enrol", idx, model="campplus", workers=2)
        stamp.write_text(mtime)
    return SpeakerIndex.open(idx)


def evaluate(d: Diarizer, set_dir: Path, gal, limit: int | None, oracle_count: bool = False) -> dict:
    manifest = json.loads((set_dir / "manifest.json").read_text())
    rows = []
    sums = {"solo_s": 0.0, "solo_named_s": 0.0, "named_s": 0.0, "false_named_s": 0.0}
    sums |= {f"{k}_c025": 0.0 for k in list(sums)}
    causes = dict.fromkeys(CAUSES, 0.0)
    for c in manifest["conversations"][:limit]:
        wav = set_dir / f"{c['name']}.wav"
        scan = cached_scan(d, wav, set_dir / ".scans")
        counts = check_speaker_counts(len(c["speakers"]), None, None) if oracle_count else (None, 1, None)
        hyp = d.finish(scan, gallery=gal, counts=counts)
        ref = read_rttm((set_dir / f"{c['name']}.rttm").read_text())
        r0, r25 = der_jer(ref, hyp, 0.0), der_jer(ref, hyp, 0.5)
        enrolled = {s for s, e in zip(c["speakers"], c["enrolled"]) if e}
        nm = naming(ref, hyp, enrolled, scan.duration_s)
        nm |= {f"{k}_c025": v for k, v in naming(ref, hyp, enrolled, scan.duration_s, 0.25).items()}
        for k in sums:
            sums[k] += nm[k]
        for k, v in false_name_causes(ref, hyp, set(c["speakers"]), scan.duration_s).items():
            causes[k] += v
        rows.append({"name": c["name"], "speakers": len(c["speakers"]), "found": len(hyp.labels()),
                     "overlap_share": c["overlap_share"], "duration_s": c["duration_s"],
                     "der_c0": r0["der"], "jer_c0": r0["jer"], "der_c025": r25["der"], "jer_c025": r25["jer"],
                     "miss": r0["miss"], "false_alarm": r0["false_alarm"], "confusion": r0["confusion"],
                     "speech_s": r0["speech_s"], **nm,
                     "named": sorted({t.speaker for t in hyp.turns if t.known}), "present": c["speakers"]})
    out = summarise(rows, sums)
    out["false_name_causes"] = {k: v / max(sums["named_s"], 1e-9) for k, v in causes.items()}
    return out


def identity_errors(rows: list[dict]) -> dict:
    """Named clusters whose name is not a speaker of the conversation (an identity error, not a
    boundary or overlap one), and unenrolled speakers who got a name."""
    wrong = sum(len(set(r["named"]) - set(r["present"])) for r in rows)
    return {"named": sum(len(r["named"]) for r in rows), "wrong": wrong}


def summarise(rows: list[dict], sums: dict) -> dict:
    w = np.array([r["speech_s"] for r in rows])

    def pooled(key: str) -> float:
        return float(np.sum([r[key] for r in rows] * w) / w.sum())

    return {
        "files": len(rows),
        "der_c0": pooled("der_c0"), "jer_c0": float(np.mean([r["jer_c0"] for r in rows])),
        "der_c025": pooled("der_c025"), "jer_c025": float(np.mean([r["jer_c025"] for r in rows])),
        "miss": pooled("miss"), "false_alarm": pooled("false_alarm"), "confusion": pooled("confusion"),
        "count_exact": float(np.mean([r["found"] == r["speakers"] for r in rows])),
        "count_abs_err": float(np.mean([abs(r["found"] - r["speakers"]) for r in rows])),
        "named_accuracy": sums["solo_named_s"] / max(sums["solo_s"], 1e-9),
        "false_name_rate": sums["false_named_s"] / max(sums["named_s"], 1e-9),
        "named_accuracy_c025": sums["solo_named_s_c025"] / max(sums["solo_s_c025"], 1e-9),
        "false_name_rate_c025": sums["false_named_s_c025"] / max(sums["named_s_c025"], 1e-9),
        "identity_errors": identity_errors(rows),
        "rows": rows,
    }


def sample(d: Diarizer) -> dict:
    ref = read_rttm((SAMPLE / "sample.rttm").read_text())
    scan = d.scan(SAMPLE / "sample.wav")
    out = {}
    for label, counts in (("auto", (None, 1, None)), ("num_speakers=2", (2, 2, 2))):
        hyp = d.finish(scan, counts=counts)
        r0, r25 = der_jer(ref, hyp, 0.0), der_jer(ref, hyp, 0.5)
        out[label] = {"der_c0": r0["der"], "jer_c0": r0["jer"], "der_c025": r25["der"], "jer_c025": r25["jer"],
                      "miss": r0["miss"], "false_alarm": r0["false_alarm"], "confusion": r0["confusion"],
                      "found": len(hyp.labels())}
    return out


def brief(s: dict) -> str:
    return (f"DER {s['der_c0']:.1%} (c0.25 {s['der_c025']:.1%}) JER {s['jer_c0']:.1%} "
            f"miss {s['miss']:.1%} fa {s['false_alarm']:.1%} conf {s['confusion']:.1%} "
            f"count exact {s['count_exact']:.0%} |err| {s['count_abs_err']:.2f} "
            f"named {s['named_accuracy']:.1%} (c0.25 {s['named_accuracy_c025']:.1%}) "
            f"false names {s['false_name_rate']:.2%} (c0.25 {s['false_name_rate_c025']:.2%}) "
            f"wrong-identity clusters {s['identity_errors']['wrong']}/{s['identity_errors']['named']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", type=Path, default=Path("bench-results/conversations"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--options", default="{}", help="JSON of DiarizeOptions fields")
    ap.add_argument("--sweep", default=None, help='JSON {"field": [values...]}: one run per value; '
                    '{"combo": [{"field": value, ...}, ...]}: one run per set of fields')
    a = ap.parse_args()
    base = DiarizeOptions(**json.loads(a.options))
    d = Diarizer(base)
    gal = gallery(a.set)
    results = {"options": dataclasses.asdict(base), "set": str(a.set), "machine": platform.machine(),
               "gallery_speakers": len(gal.speakers()), "index_threshold": gal.threshold}
    if a.sweep:
        sweep = json.loads(a.sweep)
        results["sweep"] = []
        for field, values in sweep.items():
            for v in values:
                d.options = dataclasses.replace(base, **(v if field == "combo" else {field: v}))
                s = evaluate(d, a.set, gal, a.limit)
                print(f"{field}={v}: {brief(s)}", flush=True)
                results["sweep"].append({"field": field, "value": v, **{k: x for k, x in s.items() if k != "rows"}})
        d.options = base
    else:
        t = time.perf_counter()
        results["synthetic"] = evaluate(d, a.set, gal, a.limit)
        results["synthetic_oracle_count"] = {k: v for k, v in evaluate(d, a.set, gal, a.limit, True).items()
                                             if k != "rows"}
        results["sample"] = sample(d)
        results["elapsed_s"] = time.perf_counter() - t
        print("synthetic:", brief(results["synthetic"]))
        print("oracle count:", brief(results["synthetic_oracle_count"]))
        print("sample:", json.dumps(results["sample"]))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()

"""Open-set identification on librispeech-251, split in time, for each scoring rule.

Protocol (speakerid.bench.protocols): an utterance of at least 4 s is cut at its midpoint, the first
half enrols and the second half is the query; shorter utterances enrol whole and give no query
(they stay in the gallery as distractors). 251 identities, 235 queries.

Two enrolment conditions:

* ``one-clip``: the first half is one enrolment clip (all scoring rules then coincide);
* ``segments``: the first half is cut into up to 3 consecutive segments of >= 1.5 s, each
  enrolled as its own clip (a speaker enrolled from several recordings), so the rules differ.

Closed set: top-1 / top-5 over all 251 identities. Open set: 50 queryable speakers (seeded) are
left out of the gallery; the gallery's threshold is calibrated on the gallery alone
(speakerid.identify.calibrate_open_set_threshold, FAR 1 %), then we count how many of the 50
unenrolled queries are accepted (false accepts) and how many of the 185 enrolled ones are
accepted as the right speaker, and compare with the plain verification thresholds. Repeated
over ``--seeds`` choices of the 50 (seed 0 is the headline).

    python benchmarks/eval_identify.py --models campplus,ge2e
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from speakerid import Embedder
from speakerid.audio import load
from speakerid.bench.protocols import read_speakers_csv, split_in_time
from speakerid.calibration import DEFAULT_FAR, calibrate_open_set_threshold
from speakerid.config import EmbedOptions
from speakerid.errors import SpeakeridError
from speakerid.identify import identify, model_verification_threshold, rank_speakers
from speakerid.index import IndexSpec, SpeakerIndex
from speakerid.metrics import fnir_at_fpir

SR = 16000
HERE = Path(__file__).resolve().parent
SEGMENTS_MAX = 3
SEGMENT_MIN_S = 1.5
LEAVE_OUT = 50
#: scoring label -> (scoring, top_n)
RULES = {"centroid": ("centroid", 3), "best": ("best", 3), "top2": ("topn", 2), "top3": ("topn", 3)}


def segments(x: np.ndarray) -> list[np.ndarray]:
    n = int(min(SEGMENTS_MAX, max(1, len(x) // int(SEGMENT_MIN_S * SR))))
    edges = np.linspace(0, len(x), n + 1).astype(int)
    return [x[a:b] for a, b in zip(edges[:-1], edges[1:])]


def embed_corpus(model: str, data: Path, workers: int) -> dict:
    """Every embedding the protocol needs, computed once (the in-run cache)."""
    emb = Embedder(model, embed=EmbedOptions(threads=1))
    jobs: list[tuple[str, str, np.ndarray]] = []  # (speaker, role, samples)
    speakers = []
    for u in read_speakers_csv(data):
        x = load(u.path)
        speakers.append(u.speaker)
        halves = split_in_time(x, SR)
        if halves is None:
            jobs.append((u.speaker, "whole", x))
            continue
        jobs.append((u.speaker, "half", halves[0]))
        jobs.append((u.speaker, "query", halves[1]))
        jobs += [(u.speaker, f"seg{i}", s) for i, s in enumerate(segments(halves[0]))]
    t0 = time.perf_counter()
    res = emb.embed_batch([j[2] for j in jobs], workers=workers, sample_rate_hz=SR, errors="return")
    seconds = time.perf_counter() - t0
    vecs: dict[tuple[str, str], np.ndarray] = {}
    failed = []
    for (spk, role, _), r in zip(jobs, res):
        if isinstance(r, SpeakeridError):
            failed.append({"speaker": spk, "role": role, "error": str(r)})
        else:
            vecs[(spk, role)] = r.vector
    return {
        "embedder": emb,
        "speakers": speakers,
        "vecs": vecs,
        "failed": failed,
        "embed_seconds": seconds,
        "clips": len(jobs),
    }


def enrol_clips(vecs: dict, speakers: list[str], condition: str) -> list[tuple[str, np.ndarray]]:
    out = []
    for s in speakers:
        if (s, "whole") in vecs:
            out.append((s, vecs[(s, "whole")]))
        elif condition == "one-clip":
            out.append((s, vecs[(s, "half")]))
        else:
            segs = [vecs[(s, f"seg{i}")] for i in range(SEGMENTS_MAX) if (s, f"seg{i}") in vecs]
            out += [(s, v) for v in segs] if segs else [(s, vecs[(s, "half")])]
    return out


def build(tmp: Path, emb: Embedder, clips: list[tuple[str, np.ndarray]]) -> SpeakerIndex:
    spec = IndexSpec(model=emb.model, weights_sha256=emb.weights_sha256, dim=emb.dim)
    ix = SpeakerIndex.create(Path(tempfile.mkdtemp(dir=tmp)) / "ix", spec)
    n = len(clips)
    ix.add(
        np.stack([v for _, v in clips]),
        [s for s, _ in clips],
        [f"{s}/{i}" for i, (s, _) in enumerate(clips)],
        [hashlib.sha256(f"{s}/{i}".encode()).hexdigest() for i, (s, _) in enumerate(clips)],
        [0.0] * n,
        [0.0] * n,
    )
    return ix


def rate(x: list[bool]) -> float:
    return float(np.mean(x)) if x else float("nan")


def open_set_row(ix: SpeakerIndex, q: np.ndarray, queried: list[str], out_set: set[str], seed: int,
                 scoring: str, top_n: int, thresholds: dict[str, float | None]) -> dict:
    """Calibrate ``ix`` for one scoring rule, identify every query and count the verdicts at the
    calibrated threshold and at the other ``thresholds`` (the unenrolled are ``out_set``)."""
    t0 = time.perf_counter()
    thr = calibrate_open_set_threshold(ix, DEFAULT_FAR, scoring=scoring, top_n=top_n)
    cal_s = time.perf_counter() - t0
    res = identify(ix, q, 1, threshold=-1.0, scoring=scoring, top_n=top_n)
    best = np.array([r.matches[0].score for r in res])
    right = np.array([r.matches[0].speaker == s for r, s in zip(res, queried)])
    unk = np.array([s in out_set for s in queried])
    row = {
        "seed": seed,
        "gallery_speakers": len(ix.speakers()),
        "gallery_clips": len(ix),
        "calibrated_threshold": thr,
        "calibration_s": round(cal_s, 4),
        "threshold_method": ix.threshold_method,
        "nonmated_top_scores": best[unk].round(5).tolist(),
        "mated_true_scores": best[~unk].round(5).tolist(),
        "mated_is_top1": right[~unk].tolist(),
    }
    for name, t in {"calibrated": thr, **thresholds}.items():
        if t is None:
            continue
        acc = best >= t
        row[name] = {
            "threshold": t,
            "unenrolled_accepted": rate(list(acc[unk])),
            "enrolled_correct": rate(list((acc & right)[~unk])),
            "enrolled_wrong_accept": rate(list((acc & ~right)[~unk])),
            "enrolled_rejected": rate(list(~acc[~unk])),
        }
    return row


def summarise(rows: list[dict]) -> dict:
    """Seed 0, mean, min and max of each rate over the seeds, and the oracle FNIR pooled over
    them; the per-query scores are dropped from ``rows`` afterwards (they made the summary)."""
    summ: dict = {}
    for name in ("calibrated", "verification", "eer"):
        if name not in rows[0]:
            continue
        for key in ("unenrolled_accepted", "enrolled_correct", "enrolled_wrong_accept"):
            v = [row[name][key] for row in rows]
            summ[f"{name}.{key}"] = {"seed0": v[0], "mean": float(np.mean(v)), "min": min(v), "max": max(v)}
    thr = [row["calibrated_threshold"] for row in rows]
    summ["calibrated_threshold"] = {"seed0": thr[0], "mean": float(np.mean(thr)), "min": min(thr), "max": max(thr)}
    pooled = fnir_at_fpir(
        np.concatenate([row["mated_true_scores"] for row in rows]),
        np.concatenate([row["mated_is_top1"] for row in rows]).astype(bool),
        np.concatenate([row["nonmated_top_scores"] for row in rows]),
        DEFAULT_FAR,
    )
    summ["oracle_pooled"] = {"fpir": pooled.fpir, "fnir": pooled.fnir, "threshold": pooled.threshold}
    for row in rows:  # keep the file small
        for key in ("nonmated_top_scores", "mated_true_scores", "mated_is_top1"):
            del row[key]
    return summ


def evaluate(model: str, data: Path, seeds: int, workers: int, eer_threshold: float | None) -> dict:
    c = embed_corpus(model, data, workers)
    emb, speakers, vecs = c["embedder"], c["speakers"], c["vecs"]
    queried = [s for s in speakers if (s, "query") in vecs]
    q = np.stack([vecs[(s, "query")] for s in queried])
    verif = model_verification_threshold(model)
    others: dict[str, float | None] = {"verification": verif}
    if eer_threshold is not None and (verif is None or abs(eer_threshold - verif) > 1e-3):
        others["eer"] = eer_threshold  # only when the model's default is not the EER one
    out: dict = {
        "speakers": len(speakers),
        "queries": len(queried),
        "embedded_clips": c["clips"],
        "embedding_failures": c["failed"],
        "embed_seconds": round(c["embed_seconds"], 1),
        "verification_threshold": verif,
        "eer_threshold": eer_threshold,
        "conditions": {},
    }
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for condition in ("one-clip", "segments"):
            clips = enrol_clips(vecs, speakers, condition)
            cond: dict = {"enrol_clips": len(clips), "rules": {}}
            full = build(tmp, emb, clips)
            for label, (scoring, top_n) in RULES.items():
                ranked = rank_speakers(full, q, 5, scoring, top_n=top_n)
                top1 = rate([r[0].speaker == s for r, s in zip(ranked, queried)])
                top5 = rate([s in [m.speaker for m in r] for r, s in zip(ranked, queried)])
                cond["rules"][label] = {"top1": top1, "top5": top5, "open_set": []}
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                out_set = set(rng.choice(queried, LEAVE_OUT, replace=False).tolist())
                ix = build(tmp, emb, [(s, v) for s, v in clips if s not in out_set])
                for label, (scoring, top_n) in RULES.items():
                    row = open_set_row(ix, q, queried, out_set, seed, scoring, top_n, others)
                    cond["rules"][label]["open_set"].append(row)
            for r in cond["rules"].values():
                r["summary"] = summarise(r["open_set"])
            out["conditions"][condition] = cond
    return out


def table(results: dict) -> str:
    lines = []
    for model, r in results.items():
        lines.append(f"\n### {model}\n")
        lines.append(
            f"{r['speakers']} identities, {r['queries']} queries; verification threshold "
            f"{r['verification_threshold']}, pairwise EER threshold {r['eer_threshold']}.\n"
        )
        lines.append(
            "| enrolment | scoring | top-1 | top-5 | calibrated thr (seed 0; mean) | unenrolled accepted "
            "(seed 0; mean [min-max]) | enrolled correct (seed 0; mean) | oracle FNIR @ FPIR 1 % (pooled) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for cond, c in r["conditions"].items():
            for label, x in c["rules"].items():
                s = x["summary"]
                ua, ec, th = s["calibrated.unenrolled_accepted"], s["calibrated.enrolled_correct"], s["calibrated_threshold"]
                lines.append(
                    f"| {cond} ({c['enrol_clips']} clips) | {label} | {x['top1']:.3f} | {x['top5']:.3f} | "
                    f"{th['seed0']:.3f}; {th['mean']:.3f} | {ua['seed0']:.2f}; {ua['mean']:.3f} [{ua['min']:.2f}-{ua['max']:.2f}] | "
                    f"{ec['seed0']:.3f}; {ec['mean']:.3f} | {s['oracle_pooled']['fnir']:.3f} |"
                )
        lines.append("\nPlain verification thresholds instead of the calibrated one (same galleries, mean over seeds):\n")
        lines.append("| enrolment | scoring | threshold | unenrolled accepted (mean [min-max]) | enrolled correct (mean) |")
        lines.append("|---|---|---|---|---|")
        for cond, c in r["conditions"].items():
            for label, x in c["rules"].items():
                s = x["summary"]
                for name in ("verification", "eer"):
                    if f"{name}.unenrolled_accepted" not in s:
                        continue
                    ua, ec = s[f"{name}.unenrolled_accepted"], s[f"{name}.enrolled_correct"]
                    t = x["open_set"][0][name]["threshold"]
                    lines.append(
                        f"| {cond} | {label} | {name} {t:.3f} | {ua['mean']:.3f} [{ua['min']:.2f}-{ua['max']:.2f}] | {ec['mean']:.3f} |"
                    )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared/data/librispeech-251")
    ap.add_argument("--models", default="campplus,ge2e")
    ap.add_argument("--seeds", type=int, default=10, help="choices of the 50 left-out speakers")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "identify_librispeech.json")
    args = ap.parse_args()
    verify_json = HERE / "results" / "verify_librispeech.json"
    eer_thr = {}
    if verify_json.is_file():
        eer_thr = {m: v["eer_threshold"] for m, v in json.loads(verify_json.read_text())["results"].items()}
    results = {}
    for model in args.models.split(","):
        t0 = time.perf_counter()
        results[model] = evaluate(model, args.data, args.seeds, args.workers, eer_thr.get(model))
        results[model]["seconds"] = round(time.perf_counter() - t0, 1)
        print(model, f"{results[model]['seconds']} s", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "protocol": "librispeech-251 split-in-time (>= 4 s cut at midpoint; < 4 s enrol whole, no query)",
        "segments": f"first half cut into up to {SEGMENTS_MAX} segments of >= {SEGMENT_MIN_S} s",
        "leave_out": LEAVE_OUT,
        "seeds": args.seeds,
        "far": DEFAULT_FAR,
        "calibration": "calibrate_open_set_threshold (defaults: floored at the model verification threshold) on the gallery's own clips",
        "python": platform.python_version(),
        "command": "python benchmarks/eval_identify.py " + " ".join(sys.argv[1:]),
    }
    args.out.write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()

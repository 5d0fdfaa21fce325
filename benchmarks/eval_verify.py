"""Verification EER/minDCF on librispeech-251 with the split-in-time protocol.

Every utterance of at least 4 s is cut at its midpoint: the first half enrols, the second
queries (speakerid.bench.protocols). Target trials: each speaker's enrol half against its own query
half. Non-target trials: every enrol half against every other speaker's query half. The EER
threshold is what README calls the calibrated default threshold of each model.

    python benchmarks/eval_verify.py --data ../shared/data/librispeech-251 --models campplus,ge2e
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from speakerid import Embedder
from speakerid.audio import load
from speakerid.bench.protocols import read_speakers_csv, split_in_time
from speakerid.metrics import eer, min_dcf


def embed_halves(model: str, data: Path, vad: bool = True):
    from speakerid.config import VadOptions

    emb = Embedder(model, vad=VadOptions(enabled=vad))
    enrol, query, speakers, skipped = [], [], [], []
    for u in read_speakers_csv(data):
        x = load(u.path)
        halves = split_in_time(x, 16000)
        if halves is None:
            skipped.append(u.speaker)
            continue
        enrol.append(emb.embed(halves[0], 16000))
        query.append(emb.embed(halves[1], 16000))
        speakers.append(u.speaker)
    return np.stack(enrol), np.stack(query), speakers, skipped


def trials(enrol: np.ndarray, query: np.ndarray):
    scores = enrol @ query.T
    n = len(enrol)
    labels = np.eye(n, dtype=bool)
    return scores.ravel(), labels.ravel().astype(int)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/librispeech-251")
    ap.add_argument("--models", default="campplus,ge2e")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "verify_librispeech.json")
    args = ap.parse_args()
    results = {}
    for model in args.models.split(","):
        t0 = time.perf_counter()
        enrol, query, speakers, skipped = embed_halves(model, args.data)
        s, lab = trials(enrol, query)
        e = eer(s, lab)
        d1, d5 = min_dcf(s, lab, p_target=0.01), min_dcf(s, lab, p_target=0.05)
        results[model] = {
            "speakers": len(speakers), "skipped_short": len(skipped),
            "target_trials": int(lab.sum()), "nontarget_trials": int((1 - lab).sum()),
            "eer": e.eer, "eer_threshold": e.threshold,
            "min_dcf_0.01": d1.min_dcf, "min_dcf_0.01_threshold": d1.threshold,
            "min_dcf_0.05": d5.min_dcf, "min_dcf_0.05_threshold": d5.threshold,
            "seconds": time.perf_counter() - t0,
        }
        print(model, json.dumps(results[model]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"protocol": "librispeech-251 split-in-time (>= 4 s, midpoint)", "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

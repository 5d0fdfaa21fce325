"""INT8 against FP32 CAM++ under the dev conditions, over several seeds: EER changes finer than one trial.

One seed of benchmarks/eval_conditions.py gives 235 target trials per condition, so one target
trial that changes side moves the EER by ~0.43 points, 8.6 times the INT8 goal of |change| <= 0.05
points: on one seed the goal can only read "no trial changed side". Each seed draws every
degradation anew (crop offsets, babble talkers and offsets, noise, rooms, the cross row's
conditions), so K seeds give K x 235 target trials. Per condition this pools them:

* EER and minDCF 0.01 of FP32 and INT8 over the pooled trials of all seeds, and the change;
* the change on each seed alone, its mean and standard error over the seeds (seeds are
  independent draws; the two models score the same clips, so the change is paired).

``clean`` and ``telephone`` are the same clips under every seed (conditions.UNSEEDED: nothing is
drawn): they stay at one seed's resolution. The goal is read two ways: the issue's |change| <=
0.05 points, and "no worse": the change <= +0.05 (INT8 better than FP32 is no loss). The system
is the bare one (VAD off; eval_conditions.SYSTEMS["bare"]), 1 ORT thread, embeddings through the
benchmarks' embedding cache (a rerun only scores).

    python benchmarks/eval_int8.py --seeds 0-7 --out benchmarks/results/int8_seeds_avx512vnni.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_int8 import cpu_report  # noqa: E402
from conditions import CONDITIONS, UNSEEDED, Corpus, build_all  # noqa: E402
from eval_conditions import (  # noqa: E402
    SYSTEMS, by_role, cross_queries, embed_system, gallery_scores, prepared, verification_trials,
)

from speakerid import Embedder  # noqa: E402
from speakerid.bench.embcache import EmbeddingCache  # noqa: E402
from speakerid.config import EmbedOptions  # noqa: E402
from speakerid.metrics import eer, min_dcf  # noqa: E402

HERE = Path(__file__).resolve().parent
#: The reference, then the models compared with it (any store or user model: a variant added with
#: ``speakerid models add NAME --onnx ... --frontend fbank --config ...`` is measured the same way).
MODELS = ("campplus", "campplus-int8")
GOAL_EER_POINTS = 0.05


def parse_seeds(text: str) -> list[int]:
    """"0-7" or "0,3,5" -> the seeds."""
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    if not out or len(set(out)) != len(out):
        raise SystemExit(f"--seeds: give distinct seeds, e.g. 0-7 (got {text!r})")
    return out


def seed_trials(embedders: dict[str, Embedder], caches: dict[str, EmbeddingCache], corpus: Corpus,
                conditions: list[str], seed: int, workers: int) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """model -> condition -> (scores, labels) of one seed's verification trials (and "cross")."""
    clips = build_all(corpus, conditions, seed)
    samples = prepared(clips)
    bare = SYSTEMS["bare"]
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for model, emb in embedders.items():
        vectors: dict = {}
        rows = {}
        for condition, cl in clips.items():
            v, refused, _ = embed_system(emb, caches[model], samples, None, bare, [c.key for c in cl], workers)
            if refused:  # the bare system embeds every clip of >= MIN_EMBED_MS; a refusal is a bug
                raise RuntimeError(f"{model} refused {len(refused)} clips of {condition}: {refused[:3]}")
            vectors.update(v)
            r = by_role(v, condition)
            _, _, s_gq, half = gallery_scores(r, r, corpus, emb.dim)
            rows[condition] = verification_trials(s_gq, half)
        if "clean" in clips and len(clips) > 2:
            q = cross_queries(vectors, corpus, conditions, seed)
            _, _, s_gq, half = gallery_scores(by_role(vectors, "clean"), q, corpus, emb.dim)
            rows["cross"] = verification_trials(s_gq, half)
        out[model] = rows
    return out


def summarise(per_seed: list[dict], seeds: list[int], fp32: str, int8: str) -> dict:
    """condition -> pooled and per-seed figures of ``int8`` against ``fp32``."""
    rows = {}
    for cond in per_seed[0][fp32]:
        pooled = {}
        for m in (fp32, int8):
            s = np.concatenate([t[m][cond][0] for t in per_seed])
            lab = np.concatenate([t[m][cond][1] for t in per_seed])
            pooled[m] = {"eer": eer(s, lab).eer, "min_dcf_001": min_dcf(s, lab, p_target=0.01).min_dcf,
                         "target_trials": int(lab.sum()), "nontarget_trials": int(lab.size - lab.sum())}
        each = [100 * (eer(*t[int8][cond]).eer - eer(*t[fp32][cond]).eer) for t in per_seed]
        rows[cond] = {
            "fp32": pooled[fp32], "int8": pooled[int8], "eer_change_points": 100 * (pooled[int8]["eer"] - pooled[fp32]["eer"]),
            "per_seed_change_points": each, "mean_change_points": float(np.mean(each)),
            # None on one seed (JSON has no NaN)
            "se_change_points": float(np.std(each, ddof=1) / np.sqrt(len(each))) if len(each) > 1 else None,
        }
    return annotate(rows, len(seeds))


def annotate(rows: dict, n_seeds: int) -> dict:
    """The resolution of each row and the goal's verdicts (also rewritten by --report-only)."""
    for cond, r in rows.items():
        same = cond in UNSEEDED  # one set of clips under every seed
        r["same_clips_every_seed"] = same
        r["one_target_trial_points"] = 100.0 * (n_seeds if same else 1) / r["fp32"]["target_trials"]
        r["goal_met"] = abs(r["eer_change_points"]) <= GOAL_EER_POINTS + 1e-9
        r["no_worse"] = r["eer_change_points"] <= GOAL_EER_POINTS + 1e-9
    return rows


def markdown(res: dict) -> str:
    ref, others = res["models"][0], res["models"][1:]
    out = [f"# INT8 CAM++ against FP32 over {len(res['seeds'])} seeds of the dev conditions\n",
           f"Made by `{res['command']}` ({res['created']}). CPU kind **{res['cpu_kind']}** ({res['cpu']}); "
           f"campplus-int8 weights on {res['int8_weight_bits']} bits here. Seeds {res['seeds']}; bare system "
           "(VAD off), 1 ORT thread. EER and minDCF over the trials of all seeds pooled; the change in EER points, "
           "and its mean and standard error over the seeds taken one by one. One target trial is the EER "
           f"resolution. Goal: |pooled change| <= {GOAL_EER_POINTS} points; \"no worse\": change <= "
           f"+{GOAL_EER_POINTS}. Took {res['seconds']:.0f} s.\n"]
    for model in others:
        out += table(res["rows"][model], ref, model)
    return "\n".join(out)


def table(rows: dict, ref: str, model: str) -> list[str]:
    out = [f"## {model} against {ref}\n",
           f"| condition | target trials | one trial (points) | EER {ref} | EER {model} | change (points) | per seed: "
           f"mean +- SE | minDCF {ref} / {model} | goal | no worse |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for cond, r in rows.items():
        a, b = r["fp32"], r["int8"]
        note = " (same clips every seed)" if r["same_clips_every_seed"] else ""
        out.append(f"| {cond}{note} | {a['target_trials']} | {r['one_target_trial_points']:.3f} | {100 * a['eer']:.3f} % | "
                   f"{100 * b['eer']:.3f} % | {r['eer_change_points']:+.3f} | {r['mean_change_points']:+.3f} +- "
                   f"{'-' if r['se_change_points'] is None else format(r['se_change_points'], '.3f')} | "
                   f"{a['min_dcf_001']:.4f} / {b['min_dcf_001']:.4f} | "
                   f"{'met' if r['goal_met'] else 'NOT met'} | {'yes' if r['no_worse'] else '**no**'} |")
    met = sum(r["goal_met"] for r in rows.values())
    no_worse = sum(r["no_worse"] for r in rows.values())
    worst = max(rows.items(), key=lambda kv: abs(kv[1]["eer_change_points"]))
    loss = max(rows.items(), key=lambda kv: kv[1]["eer_change_points"])
    out.append(f"\nGoal met on {met} of {len(rows)} rows; largest |change| {worst[1]['eer_change_points']:+.3f} "
               f"points ({worst[0]}). No worse than +{GOAL_EER_POINTS} on {no_worse} of {len(rows)}; largest loss "
               f"{loss[1]['eer_change_points']:+.3f} points ({loss[0]}).\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared/data/librispeech-251")
    ap.add_argument("--seeds", default="0-7")
    ap.add_argument("--models", default=",".join(MODELS), help="the reference first, then the models compared with it")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: $SPEAKERID_HOME/embcache")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "int8_seeds.json")
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md (and verdicts) from --out's JSON")
    args = ap.parse_args()
    if args.report_only:
        res = json.loads(args.out.read_text())
        res["rows"] = {m: annotate(rows, len(res["seeds"])) for m, rows in res["rows"].items()}
        write(res, args.out)
        return
    seeds = parse_seeds(args.seeds)
    conditions = args.conditions.split(",")
    t0 = time.perf_counter()
    corpus = Corpus.load(args.data)
    models = args.models.split(",")
    if len(models) < 2:
        raise SystemExit("--models: give the reference and at least one model to compare with it")
    embedders = {m: Embedder(m, vad=SYSTEMS["bare"], embed=EmbedOptions(threads=1)) for m in models}
    caches = {m: EmbeddingCache.for_embedder(e, args.cache_dir) for m, e in embedders.items()}
    per_seed = []
    for seed in seeds:
        t = time.perf_counter()
        per_seed.append(seed_trials(embedders, caches, corpus, conditions, seed, args.workers))
        print(f"seed {seed}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    c = cpu_report()
    res = {"command": "python benchmarks/eval_int8.py " + " ".join(sys.argv[1:]), "created": time.strftime("%Y-%m-%d"),
           "seeds": seeds, "cpu_kind": c["kind"], "cpu": c["model_name"], "int8_weight_bits": c["weight_bits"],
           "onnxruntime": c["onnxruntime"], "seconds": time.perf_counter() - t0, "models": models,
           "rows": {m: summarise(per_seed, seeds, models[0], m) for m in models[1:]}}
    write(res, args.out)


def write(res: dict, out: Path) -> None:
    """``out`` (JSON) and the report beside it (.md), which is also printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    report = markdown(res)
    out.with_suffix(".md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()

"""Score normalisation and open-set calibration in identification, across conditions and gallery sizes.

Clips: benchmarks/conditions.py (librispeech-251 split in time, both halves degraded under each
condition, seed 0), embedded by the bare pipeline (VAD off, the "bare" system of benchmarks/eval_conditions.py, through
the embedding cache), so that each clip's speech seconds (``Embedding.speech_s``) are its length.

Per condition, gallery size G and draw (DRAWS seeded draws): G of the 251 speakers are enrolled
(one enrolment half each, or the short utterance whole), the other queried speakers are strangers.
Every query half is identified with :func:`speakerid.identify.identify` against that gallery,
calibrated by :func:`speakerid.calibration.calibrate_open_set` (FAR 1 %) on the gallery alone, with
the calibration crops (each enrolled clip cut to CROP_S seconds at seeded offsets and embedded the
same way) when a variant uses the duration model. Variants (score normalisation x threshold):

* ``raw/fixed``: cosine, the calibrated threshold as it was before (no query duration);
* ``raw/qmf``: cosine, the duration-aware threshold at the query's speech seconds;
* ``asnorm/fixed``, ``asnorm/qmf``: the same on AS-normalised scores (gallery as cohort).

Reported per condition and G: open-set false accepts (strangers accepted / strangers, target 1 %),
top-1 of enrolled queries (closed set, all G speakers), FNIR at FPIR 1 % (oracle threshold over the
pooled draws: a measure of separation, independent of calibration) and the miss rate at the
calibrated threshold (an enrolled query not accepted as its own speaker). Rows ``mixed-length``
(clean gallery; each query clean, 3 s or 2 s, seeded) and ``cross`` (clean gallery, each query
under one degraded condition, seeded) test what a fixed threshold cannot follow.

    nice -n 10 python benchmarks/eval_norm.py --models campplus
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditions import SR, Corpus, build_all, crop, rng_for  # noqa: E402
from eval_conditions import SYSTEMS, embed_system, model_input, prepared, probabilities  # noqa: E402

from speakerid import Embedder  # noqa: E402
from speakerid.bench.embcache import EmbeddingCache, default_root  # noqa: E402
from speakerid.calibration import DEFAULT_FAR, CalibrationCrops, calibrate_open_set  # noqa: E402
from speakerid.config import EmbedOptions  # noqa: E402
from speakerid.identify import identify  # noqa: E402
from speakerid.index import IndexSpec, SpeakerIndex  # noqa: E402
from speakerid.metrics import fnir_at_fpir  # noqa: E402
from speakerid.models.store import vad_sequence_onnx_path  # noqa: E402
from speakerid.scorenorm import DEFAULT_COHORT_TOP_N  # noqa: E402
from speakerid.vad import SileroVad  # noqa: E402

HERE = Path(__file__).resolve().parent
#: Calibration crops of each enrolled clip (seconds of audio before the VAD).
CROP_S = (2.0, 3.0)
#: The bare pipeline (VAD off), so that the speech seconds are the clip's length. On the conditions
#: used here the default VAD keeps the whole clip (results/conditions.md: "new" = "bare" on every
#: one of them), and running Silero on every clip and crop took longer than the embedding.
SYSTEM = "bare"
#: The conditions of the table by default: five of benchmarks/conditions.py's (length, babble and
#: channel), to keep the embedding of clips and crops under half an hour on 2 shared cores.
ROW_CONDITIONS = ("clean", "crop-2s", "crop-3s", "babble-5dB", "telephone")
GALLERY_SIZES = (25, 50, 100, 200)
DRAWS = 10
#: Cohort sizes tried for AS-norm (top-1 and oracle FNIR only; the calibrated rows use the default).
COHORT_SWEEP = (10, 25, 50, 100, 200, 400)
#: (score_norm, query duration given?) per variant.
VARIANTS = {"raw/fixed": ("none", False), "raw/qmf": ("none", True), "raw/qmf-nocrops": ("none", True),
            "asnorm/fixed": ("asnorm", False), "asnorm/qmf": ("asnorm", True)}


# --- embedding --------------------------------------------------------------------------------------


def embed_all(model: str, conditions: list[str], seed: int, workers: int) -> dict:
    """key -> (unit vector or None, speech seconds) for every clip and calibration crop.

    Keys: "<condition>/<speaker>/<role>" and "<condition>/<speaker>/<role>@<crop s>".
    """
    corpus = Corpus.load(HERE.parents[1] / "shared/data/librispeech-251")
    clips = build_all(corpus, conditions, seed)
    samples = prepared(clips)
    for cl in clips.values():  # the calibration crops of each enrolled clip
        for c in cl:
            if c.role == "query":
                continue
            x = samples[c.key]
            for d in CROP_S:
                if len(x) >= 1.25 * d * SR:  # a crop close to the whole clip says nothing new
                    samples[f"{c.key}@{d:g}"] = crop(x, d, rng_for(seed, "calibration-crop", c.key, f"{d:g}"))
    opts = SYSTEMS[SYSTEM]
    probs = None
    if opts.enabled:
        vad = SileroVad(vad_sequence_onnx_path(), threads=1)
        print(f"VAD on {len(samples)} clips...", file=sys.stderr)
        probs = probabilities(vad, samples, opts.level_dbfs)
    emb = Embedder(model, vad=SYSTEMS["bare"], embed=EmbedOptions(threads=1))
    cache = EmbeddingCache.for_embedder(emb, None)
    keys = list(samples)
    print(f"embedding {len(keys)} clips (cached ones are not)...", file=sys.stderr)
    vectors, _, _ = embed_system(emb, cache, samples, probs, opts, keys, workers)
    out = {}
    for k in keys:
        _, ms = model_input(samples[k], None if probs is None else probs[k], opts)
        out[k] = (vectors[k], ms / 1000.0)
    return {"speakers": list(corpus.speakers), "queried": [s for s in corpus.speakers if s in corpus.halves],
            "vectors": out, "weights_sha256": emb.weights_sha256, "dim": emb.dim, "model": emb.model}


def load_vectors(model: str, conditions: list[str], seed: int, workers: int, refresh: bool) -> dict:
    path = default_root() / f"eval_norm-{model}-seed{seed}.pkl"
    if path.exists() and not refresh:
        data = pickle.loads(path.read_bytes())
        if set(conditions) <= set(data["conditions"]):
            return data
    data = embed_all(model, conditions, seed, workers)
    data["conditions"] = conditions
    path.write_bytes(pickle.dumps(data))
    return data


# --- scoring ----------------------------------------------------------------------------------------


def row_sources(name: str, data: dict, seed: int) -> tuple[str, dict[str, str]]:
    """(the gallery's condition, speaker -> query key) of a table row."""
    queried, conds = data["queried"], data["conditions"]
    if name == "mixed-length":
        lengths = ["clean", "crop-3s", "crop-2s"]
        return "clean", {s: f"{lengths[int(rng_for(seed, 'mixed', s).integers(3))]}/{s}/query" for s in queried}
    if name == "cross":
        degraded = [c for c in conds if c != "clean"]
        return "clean", {s: f"{degraded[int(rng_for(seed, 'cross', s).integers(len(degraded)))]}/{s}/query"
                         for s in queried}
    return name, {s: f"{name}/{s}/query" for s in queried}


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def build_gallery(data: dict, cond: str, speakers: list[str], tmp: Path):
    """(index, crops) of ``speakers`` enrolled under ``cond`` (refused clips are not enrolled)."""
    vec = data["vectors"]
    spec = IndexSpec(model=data["model"], weights_sha256=data["weights_sha256"], dim=data["dim"])
    ix = SpeakerIndex.create(Path(tempfile.mkdtemp(dir=tmp)) / "ix", spec, save=False)
    rows, names, speech = [], [], []
    c_rows, c_names, c_speech = [], [], []
    for s in speakers:
        key = next(k for k in (f"{cond}/{s}/enrol", f"{cond}/{s}/whole") if k in vec)
        v, sp = vec[key]
        if v is None:
            continue
        rows.append(_unit(v))
        names.append(s)
        speech.append(sp)
        for d in CROP_S:
            cv, csp = vec.get(f"{key}@{d:g}", (None, 0.0))
            if cv is not None:
                c_rows.append(_unit(cv))
                c_names.append(s)
                c_speech.append(csp)
    ids = [f"{n}/{i}" for i, n in enumerate(names)]
    ix.add(np.stack(rows), names, ids, [f"{i:064x}" for i in range(len(ids))], speech, speech)
    crops = CalibrationCrops(np.stack(c_rows), tuple(c_names), np.array(c_speech)) if c_rows else None
    return ix, crops


def score_row(name: str, data: dict, seed: int, tmp: Path) -> dict:
    """Every figure of one row, per gallery size."""
    cond, qkey = row_sources(name, data, seed)
    vec = data["vectors"]
    speakers = data["speakers"]
    out = {}
    for G in GALLERY_SIZES:
        acc: dict = {v: {"fa": [], "mated_ok": [], "mated_score": [], "top1": [], "nonmated": [], "thr": []}
                     for v in VARIANTS}
        sweep: dict = {n: {"top1": [], "mated_ok": [], "mated_score": [], "nonmated": []} for n in COHORT_SWEEP}
        for draw in range(DRAWS):
            chosen = rng_for(seed, "gallery", str(G), str(draw)).choice(len(speakers), G, replace=False)
            gal = [speakers[i] for i in sorted(chosen)]
            ix, crops = build_gallery(data, cond, gal, tmp)
            enrolled = set(ix.speakers())
            qs = [(s, vec[k]) for s, k in qkey.items() if vec[k][0] is not None]
            q = np.stack([_unit(v) for _, (v, _) in qs])
            truth = [s for s, _ in qs]
            speech = [sp for _, (_, sp) in qs]
            mated = np.array([t in enrolled for t in truth])
            calibrate_open_set(ix, score_models=True)
            nocrops = identify(ix, q, 1, query_speech_s=speech)
            calibrate_open_set(ix, crops=crops, asnorm=True)
            fixed: dict[str, float] = {}
            for v, (norm, dur) in VARIANTS.items():
                res = nocrops if v == "raw/qmf-nocrops" else identify(
                    ix, q, 1, score_norm=norm, query_speech_s=speech if dur else None)
                best = [r.best.speaker for r in res]
                a = acc[v]
                a["fa"] += [bool(r.accepted) for r, m in zip(res, mated) if not m]
                # the oracle FNIR pools the draws' scores; a duration-aware threshold shifts each
                # query's score by its threshold's offset from the draw's fixed one
                if not dur:
                    fixed[norm] = res[0].threshold
                shift = [(r.threshold - fixed[norm]) if dur else 0.0 for r in res]
                a["nonmated"] += [r.best.decision_score - d for r, m, d in zip(res, mated, shift) if not m]
                a["thr"] += [r.threshold for r in res]
                for r, t, m, b, d in zip(res, truth, mated, best, shift):
                    if m:
                        a["top1"].append(b == t)
                        a["mated_ok"].append(bool(r.accepted and b == t))
                        a["mated_score"].append(r.best.decision_score - d)
            for n in COHORT_SWEEP:
                res = identify(ix, q, 1, threshold=-1e9, score_norm="asnorm", cohort_top_n=n)
                w = sweep[n]
                for r, t, m in zip(res, truth, mated):
                    if m:
                        w["top1"].append(r.best.speaker == t)
                        w["mated_score"].append(r.best.decision_score)
                    else:
                        w["nonmated"].append(r.best.decision_score)
            ix.close()
        row: dict = {"strangers": len(acc["raw/fixed"]["fa"]), "mated": len(acc["raw/fixed"]["top1"])}
        for v, a in acc.items():
            top1 = np.array(a["top1"])
            fn = fnir_at_fpir(np.array(a["mated_score"]), top1, np.array(a["nonmated"]), DEFAULT_FAR)
            row[v] = {"fa": float(np.mean(a["fa"])), "miss_at_thr": 1.0 - float(np.mean(a["mated_ok"])),
                      "top1": float(np.mean(top1)), "fnir_at_fpir_001": fn.fnir,
                      "threshold_mean": float(np.mean(a["thr"]))}
        for n, w in sweep.items():
            top1 = np.array(w["top1"])
            fn = fnir_at_fpir(np.array(w["mated_score"]), top1, np.array(w["nonmated"]), DEFAULT_FAR)
            row[f"asnorm-n{n}"] = {"top1": float(np.mean(top1)), "fnir_at_fpir_001": fn.fnir}
        out[str(G)] = row
        print(f"{name} G={G}: FA " + ", ".join(f"{v} {100 * row[v]['fa']:.2f}" for v in VARIANTS)
              + f" | top-1 raw {100 * row['raw/fixed']['top1']:.2f} asnorm {100 * row['asnorm/fixed']['top1']:.2f}",
              file=sys.stderr)
    return out


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def markdown(results: dict, meta: dict) -> str:
    rows = list(results)
    sizes = [str(g) for g in meta["gallery_sizes"]]
    out = [f"# Score normalisation and duration-aware thresholds ({meta['model']})\n",
           f"Made by `{meta['command']}` ({meta['created']}); protocol: benchmarks/eval_norm.py. "
           f"Target FA {100 * meta['far']:g} %; {meta['draws']} gallery draws per size; AS-norm cohort top-"
           f"{meta['cohort_top_n']}; calibration crops {', '.join(f'{c:g} s' for c in meta['crop_s'])}. "
           "All figures in %.\n"]
    out += ["## Open-set false accepts at the calibrated threshold (target 1 %)\n",
            "Mean over the rows (conditions), then the worst row and the rows within 0.5 points of the target.\n",
            "| variant | " + " | ".join(f"G={g} mean / worst / within" for g in sizes) + " |",
            "|---|" + "---:|" * len(sizes)]
    for v in meta["variants"]:
        cells = []
        for g in sizes:
            fa = np.array([results[r][g][v]["fa"] for r in rows])
            cells.append(f"{pct(fa.mean())} / {pct(fa[np.argmax(np.abs(fa - meta['far']))])} / "
                         f"{int((np.abs(fa - meta['far']) <= 0.005).sum())} of {len(fa)}")
        out.append(f"| {v} | " + " | ".join(cells) + " |")
    out += ["", "## Top-1 and FNIR at FPIR 1 % (oracle threshold), mean over the rows\n",
            "| scores | " + " | ".join(f"G={g} top-1 / FNIR" for g in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for v in ["raw/fixed", "raw/qmf", "asnorm/fixed", "asnorm/qmf", *(f"asnorm-n{n}" for n in COHORT_SWEEP)]:
        cells = [f"{pct(np.mean([results[r][g][v]['top1'] for r in rows]))} / "
                 f"{pct(np.mean([results[r][g][v]['fnir_at_fpir_001'] for r in rows]))}" for g in sizes]
        out.append(f"| {v} | " + " | ".join(cells) + " |")
    for g in sizes:
        out += ["", f"## G = {g}: per row\n",
                "| row | strangers | FA raw/fixed | FA raw/qmf | FA asnorm/fixed | FA asnorm/qmf | top-1 raw | top-1 asnorm "
                "| FNIR raw | FNIR asnorm | miss@thr raw/fixed | miss@thr raw/qmf | miss@thr asnorm/qmf |",
                "|---|" + "---:|" * 12]
        for r in rows:
            x = results[r][g]
            out.append(f"| {r} | {x['strangers']} | {pct(x['raw/fixed']['fa'])} | {pct(x['raw/qmf']['fa'])} | "
                       f"{pct(x['asnorm/fixed']['fa'])} | {pct(x['asnorm/qmf']['fa'])} | {pct(x['raw/fixed']['top1'])} | "
                       f"{pct(x['asnorm/fixed']['top1'])} | {pct(x['raw/fixed']['fnir_at_fpir_001'])} | "
                       f"{pct(x['asnorm/fixed']['fnir_at_fpir_001'])} | {pct(x['raw/fixed']['miss_at_thr'])} | "
                       f"{pct(x['raw/qmf']['miss_at_thr'])} | {pct(x['asnorm/qmf']['miss_at_thr'])} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="campplus")
    ap.add_argument("--conditions", default=",".join(ROW_CONDITIONS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--embed-only", action="store_true")
    ap.add_argument("--refresh", action="store_true", help="re-embed (the embedding cache still serves)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "norm.json")
    args = ap.parse_args()
    for model in args.models.split(","):
        t0 = time.perf_counter()
        data = load_vectors(model, args.conditions.split(","), args.seed, args.workers, args.refresh)
        print(f"{model}: {len(data['vectors'])} vectors in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if args.embed_only:
            continue
        rows = [*data["conditions"], "mixed-length", "cross"]
        results = {}
        with tempfile.TemporaryDirectory() as td:
            for name in rows:
                results[name] = score_row(name, data, args.seed, Path(td))
        meta = {"command": "python benchmarks/eval_norm.py " + " ".join(sys.argv[1:]), "created": time.strftime("%Y-%m-%d"),
                "model": model, "system": SYSTEM, "gallery_sizes": GALLERY_SIZES, "draws": DRAWS, "far": DEFAULT_FAR,
                "crop_s": CROP_S, "cohort_top_n": DEFAULT_COHORT_TOP_N, "variants": list(VARIANTS)}
        out = args.out if len(args.models.split(",")) == 1 else args.out.with_name(f"{args.out.stem}-{model}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(results, meta))
        print(markdown(results, meta))


if __name__ == "__main__":
    main()

"""Accuracy under hard conditions (benchmarks/conditions.py): the bare model, the old and the new defaults.

Protocol: librispeech-251 split in time (speakerid.bench.protocols): each utterance of at least
4 s gives an enrolment half and a query half (235 speakers), shorter ones enrol whole (16 gallery
distractors). Under each condition both halves are degraded, independently. Per model, system
(a VadOptions; the embedder is speakerid.Embedder, 1 ORT thread) and condition:

* EER and minDCF (P_target 0.01, C_miss = C_fa = 1): each enrolment half against each query
  half, as benchmarks/eval_verify.py (235 target / 54,990 non-target trials);
* top-1: each query against all 251 enrolled clips;
* FNIR at FPIR 1 %: the same searches, each query's own speaker masked for the non-mated one;
* open-set false accepts: 50 queried speakers (seeded; SEEDS draws) are left out of the gallery,
  its threshold is calibrated on the gallery alone (speakerid.identify.calibrate_open_set_threshold,
  FAR 1 %, its defaults), and FA is the share of the 50 left-out queries whose best score reaches
  it (target 1 %), mean over the draws.

A clip the embedder refuses (TooShortError...) scores -1 against everything: its target trial is a
miss, and the number refused is reported. The ``cross`` row enrols clean halves and queries each
speaker under one degraded condition (seeded), with no new embedding.

How the systems are run, cheaply. Silero's speech probabilities do not depend on the VadOptions,
so they are computed once per clip; each system's segments come from them through
speakerid.vad._Segmenter (the Embedder's own state machine), its short-speech rule is applied as
speakerid.Embedder applies it, and the resulting model input is embedded with the VAD off through
the embedding cache (speakerid.bench.embcache, keyed by content, model, weights and options). For
clips under a minute (all of these) this is Embedder.embed with the system's options bit for bit
(``--check N`` asserts it on N clips per condition and system); a clip that a system leaves whole
is the bare model's cached embedding, so only trimmed clips cost an encoder run, and a rerun
only scores.

    nice -n 10 python benchmarks/eval_conditions.py --models campplus,ge2e \
        --systems bare,old,new,old-whole,trim-1000-raw,trim-1000,trim-1500,trim-2000-t35,trim-3000 --check 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditions import CONDITIONS, SR, VAD_CONDITIONS, Clip, Corpus, build_all, rng_for  # noqa: E402

from speakerid import Embedder  # noqa: E402
from speakerid.audio import prepare  # noqa: E402
from speakerid.bench.embcache import EmbeddingCache  # noqa: E402
from speakerid.bench.embedding import embed_samples  # noqa: E402
from speakerid.config import AudioOptions, EmbedOptions, VadOptions  # noqa: E402
from speakerid.embedder import MIN_EMBED_MS, SILENCE_DBFS  # noqa: E402
from speakerid.errors import SpeakeridError  # noqa: E402
from speakerid.identify import DEFAULT_FAR, calibrate_open_set_threshold  # noqa: E402
from speakerid.index import IndexSpec, SpeakerIndex  # noqa: E402
from speakerid.metrics import eer, fnir_at_fpir, min_dcf, topk_accuracy  # noqa: E402
from speakerid.models.store import vad_sequence_onnx_path  # noqa: E402
from speakerid.vad import SileroVad, _Segmenter, vad_gain  # noqa: E402

HERE = Path(__file__).resolve().parent
LEAVE_OUT = 50
SEEDS = 5
#: The defaults before issue 12 (Silero's segments, TooShortError under 500 ms of speech).
OLD = VadOptions(enabled=True, threshold=0.5, min_speech_ms=500.0, min_segment_ms=250.0, min_silence_ms=100.0,
                 speech_pad_ms=30.0, keep_pauses_ms=0.0, short_speech="error", level_dbfs=None)


def _old(**kw: float | str) -> VadOptions:
    return VadOptions(**{**asdict(OLD), **kw})


def _trim(keep_ms: float, **kw: float | str | None) -> VadOptions:
    base = {"keep_pauses_ms": keep_ms, "speech_pad_ms": 200.0, "short_speech": "whole", "level_dbfs": -26.0}
    return _old(**{**base, **kw})


SYSTEMS: dict[str, VadOptions] = {
    "bare": VadOptions(enabled=False, min_speech_ms=0.0),  # the whole clip, exactly as upstream
    "old": OLD,
    "new": VadOptions(),  # the library's defaults now
    # candidates measured while choosing the defaults: Silero's segments with the whole clip under
    # min speech; then trimming only non-speech longer than keep_pauses_ms (VAD level -26 dBFS
    # unless "raw"), the whole clip under min speech (ms...), other thresholds (t...)
    "old-whole": _old(short_speech="whole"),
    "trim-1000-raw": _trim(1000.0, level_dbfs=None),
    "trim-1000": _trim(1000.0),
    "trim-1500": _trim(1500.0),
    "trim-1000-ms1500": _trim(1000.0, min_speech_ms=1500.0),
    "trim-1500-ms1500": _trim(1500.0, min_speech_ms=1500.0),
    "trim-1000-t35": _trim(1000.0, threshold=0.35),
    "trim-1500-t35-ms1500": _trim(1500.0, threshold=0.35, min_speech_ms=1500.0),
    "trim-2000": _trim(2000.0),
    "trim-2000-t35": _trim(2000.0, threshold=0.35),
    "trim-3000": _trim(3000.0),
}


# --- embedding ------------------------------------------------------------------------------------


def prepared(clips: dict[str, list[Clip]]) -> dict[str, np.ndarray]:
    """key -> the clip's 16 kHz samples, as the Embedder sees them."""
    return {c.key: prepare(c.samples, c.sample_rate_hz) for cl in clips.values() for c in cl}


def probabilities(vad: SileroVad, samples: dict[str, np.ndarray], level_dbfs: float | None) -> dict[str, np.ndarray]:
    """key -> Silero's speech probabilities at the gain VadOptions.level_dbfs gives (as a
    VadStream fed the Embedder's 60 s blocks applies it)."""
    out = {}
    for key, x in samples.items():
        g = vad_gain(x[: int(AudioOptions().block_s * SR)], level_dbfs)
        out[key] = vad.probabilities(x if g == 1.0 else np.clip(x * np.float32(g), -1.0, 1.0))
    return out


def model_input(x: np.ndarray, probs: np.ndarray | None, opts: VadOptions) -> tuple[np.ndarray | None, float]:
    """What Embedder(vad=opts) gives its front end for ``x`` (None: it refuses the clip), and the
    speech found (ms; the clip's length with the VAD off). Mirrors Embedder._check_speech."""
    if opts.enabled:
        seg = _Segmenter(opts)
        seg.feed(probs)
        seg.finish(len(x))
        segs = seg.pop()
        kept = np.concatenate([x[a:b] for a, b in segs]) if segs else x[:0]
    else:
        kept = x
    ms = 1000.0 * len(kept) / SR
    whole = opts.enabled and opts.short_speech == "whole"
    dbfs = 10.0 * np.log10(max(float(np.dot(x, x)) / max(len(x), 1), 1e-20))
    if len(kept) == 0 and not (whole and dbfs >= SILENCE_DBFS):
        return None, ms
    if ms >= max(opts.min_speech_ms, MIN_EMBED_MS):
        return kept, ms
    if opts.short_speech == "error" or 1000.0 * len(x if whole else kept) / SR < MIN_EMBED_MS:
        return None, ms
    return (x if whole else kept), ms


def embed_system(emb: Embedder, cache: EmbeddingCache, samples: dict, probs: dict | None, opts: VadOptions,
                 keys: list[str], workers: int) -> tuple[dict, list[str], int]:
    """key -> vector (None: refused), the keys refused, and the number embedded under min speech.
    ``emb`` is the bare model (VAD off); ``probs`` those of ``opts.level_dbfs`` (None: VAD off)."""
    inputs = {k: model_input(samples[k], None if probs is None else probs[k], opts) for k in keys}
    out = embed_samples([(k, x) for k, (x, _) in inputs.items() if x is not None], SR, emb, cache, workers=workers)
    vectors = {k: out.vectors.get(k) for k in keys}
    short = sum(1 for k, (x, ms) in inputs.items() if x is not None and ms < opts.min_speech_ms)
    refused = [f"{k}: {inputs[k][1]:.0f} ms of speech" for k in keys if vectors[k] is None]
    return vectors, refused, short


def check(model: str, opts: VadOptions, clips: dict[str, list[Clip]], n: int, vectors: dict) -> float:
    """Largest |difference| between these vectors and Embedder.embed on ``n`` clips per condition
    (AssertionError when one refuses a clip that the other embeds)."""
    emb = Embedder(model, vad=opts, embed=EmbedOptions(threads=1))
    worst = 0.0
    for cl in clips.values():
        for c in cl[:: max(1, len(cl) // n)][:n]:
            try:
                v = emb.embed(c.samples, c.sample_rate_hz)
            except SpeakeridError:
                v = None
            w = vectors[c.key]
            if (v is None) != (w is None):
                raise AssertionError(f"{c.key}: Embedder {'refused' if v is None else 'embedded'} it, this run did not")
            if v is not None:
                worst = max(worst, float(np.abs(v - w).max()))
    return worst


# --- scoring --------------------------------------------------------------------------------------


def _matrix(vectors: dict, keys: list[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors with zeros for refused clips, mask of the refused)."""
    m = np.zeros((len(keys), dim), np.float32)
    bad = np.zeros(len(keys), bool)
    for i, k in enumerate(keys):
        v = vectors.get(k)
        if v is None:
            bad[i] = True
        else:
            m[i] = v
    return m, bad


def score_matrix(enrol: np.ndarray, enrol_bad: np.ndarray, query: np.ndarray, query_bad: np.ndarray) -> np.ndarray:
    s = (enrol @ query.T).astype(np.float64)
    s[enrol_bad, :] = -1.0
    s[:, query_bad] = -1.0
    return s


def open_set_fa(emb: Embedder, gallery: np.ndarray, gallery_bad: np.ndarray, names: list[str],
                s_qg: np.ndarray, queried: list[str], tmp: Path) -> tuple[float, float]:
    """Mean false-accept share of LEAVE_OUT unenrolled queries at the calibrated threshold, and
    the mean threshold, over SEEDS draws. ``s_qg``: queries x gallery scores."""
    fas, thrs = [], []
    spec = IndexSpec(model=emb.model, weights_sha256=emb.weights_sha256, dim=emb.dim)
    for seed in range(SEEDS):
        out = set(rng_for(seed, "leave-out").choice(queried, LEAVE_OUT, replace=False).tolist())
        keep = [i for i, s in enumerate(names) if s not in out and not gallery_bad[i]]
        ix = SpeakerIndex.create(Path(tempfile.mkdtemp(dir=tmp)) / "ix", spec, save=False)
        ids = [f"{names[i]}/{i}" for i in keep]
        ix.add(gallery[keep], [names[i] for i in keep], ids,
               [hashlib.sha256(x.encode()).hexdigest() for x in ids], [0.0] * len(keep), [0.0] * len(keep))
        thr = calibrate_open_set_threshold(ix)
        ix.close()
        unk = [j for j, s in enumerate(queried) if s in out]
        best = s_qg[np.ix_(unk, keep)].max(axis=1)
        fas.append(float(np.mean(best >= thr)))
        thrs.append(float(thr))
    return float(np.mean(fas)), float(np.mean(thrs))


def gallery_scores(enrol_vecs: dict, query_vecs: dict, corpus: Corpus, dim: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(gallery matrix, its refused mask, gallery x queries scores) and the gallery rows of the
    queried speakers' enrolment halves (vectors keyed by (speaker, role))."""
    queried = [s for s in corpus.speakers if s in corpus.halves]
    names = list(corpus.speakers)
    g_keys = [(s, "enrol" if s in corpus.halves else "whole") for s in names]
    gallery, g_bad = _matrix(enrol_vecs, g_keys, dim)
    query, q_bad = _matrix(query_vecs, [(s, "query") for s in queried], dim)
    return gallery, g_bad, score_matrix(gallery, g_bad, query, q_bad), [names.index(s) for s in queried]


def verification_trials(s_gq: np.ndarray, half: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of each enrolment half against each query half: the targets are the diagonal."""
    return s_gq[half].ravel(), np.eye(len(half), dtype=int).ravel()


def metrics(emb: Embedder, enrol_vecs: dict, query_vecs: dict, corpus: Corpus, tmp: Path) -> dict:
    """The table's figures for one system and condition (vectors keyed by (speaker, role))."""
    queried = [s for s in corpus.speakers if s in corpus.halves]
    names = list(corpus.speakers)
    gallery, g_bad, s_gq, half = gallery_scores(enrol_vecs, query_vecs, corpus, emb.dim)
    scores, labels = verification_trials(s_gq, half)
    e = eer(scores, labels)
    d = min_dcf(scores, labels, p_target=0.01)
    s_qg = s_gq.T
    truth = np.array(half)
    top1 = topk_accuracy(s_qg, truth, ks=(1,))[1]
    mated = s_qg[np.arange(len(queried)), truth]
    ranked_first = mated > np.max(np.where(np.arange(len(names))[None, :] == truth[:, None], -np.inf, s_qg), axis=1)
    masked = np.where(np.arange(len(names))[None, :] == truth[:, None], -np.inf, s_qg).max(axis=1)
    fn = fnir_at_fpir(mated, ranked_first, masked, DEFAULT_FAR)
    fa, thr = open_set_fa(emb, gallery, g_bad, names, s_qg, queried, tmp)
    return {
        "eer": e.eer, "eer_threshold": e.threshold, "min_dcf_001": d.min_dcf, "top1": top1,
        "fnir_at_fpir_001": fn.fnir, "open_set_fa": fa, "calibrated_threshold_mean": thr,
        "target_trials": int(labels.sum()), "nontarget_trials": int(labels.size - labels.sum()),
    }


def by_role(vectors: dict, condition: str) -> dict:
    """"<condition>/<speaker>/<role>" keys -> (speaker, role) keys, for one condition."""
    out = {}
    for key, v in vectors.items():
        cond, speaker, role = key.split("/")
        if cond == condition:
            out[(speaker, role)] = v
    return out


def cross_queries(vectors: dict, corpus: Corpus, conditions: list[str], seed: int) -> dict:
    """Each queried speaker's query under one degraded condition (seeded)."""
    degraded = [c for c in conditions if c != "clean"]
    out = {}
    for s in corpus.halves:
        c = degraded[int(rng_for(seed, "cross", s).integers(len(degraded)))]
        out[(s, "query")] = vectors[f"{c}/{s}/query"]
    return out


# --- running ----------------------------------------------------------------------------------


def run_system(emb: Embedder, cache: EmbeddingCache, system: str, clips: dict[str, list[Clip]], samples: dict,
               probs: dict, corpus: Corpus, args, tmp: Path) -> dict:
    """One system's rows (``emb``: the bare model, whose cache serves every system; ``probs``:
    level_dbfs -> key -> VAD probabilities)."""
    opts = SYSTEMS[system]
    p = probs[opts.level_dbfs] if opts.enabled else None
    vectors: dict = {}
    rows: dict = {}
    t0 = time.perf_counter()
    for condition, cl in clips.items():
        v, refused, short = embed_system(emb, cache, samples, p, opts, [c.key for c in cl], args.workers)
        vectors.update(v)
        r = by_role(v, condition)
        rows[condition] = {**metrics(emb, r, r, corpus, tmp), "refused": len(refused), "refused_list": refused[:10],
                           "too_short": short}
        print(f"{emb.model} {system} {condition}: EER {100 * rows[condition]['eer']:.2f} %", file=sys.stderr)
    if "clean" in clips and len(clips) > 2:
        clean = by_role(vectors, "clean")
        rows["cross"] = metrics(emb, clean, cross_queries(vectors, corpus, list(clips), args.seed), corpus, tmp)
        rows["cross"].update(refused=0, too_short=0)
    out = {"options": asdict(opts), "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    if args.check and opts.enabled:
        out["check_max_abs_diff"] = check(emb.model, opts, clips, args.check, vectors)
    return out


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def summary(by_sys: dict, systems: list[str]) -> list[str]:
    """EER of every system on every condition, and its worst / mean change against the first."""
    conds = list(by_sys[systems[0]]["rows"])
    base = by_sys[systems[0]]["rows"]
    out = ["| system | " + " | ".join(conds) + f" | worst vs {systems[0]}* | mean vs {systems[0]}* | refused | too_short |",
           "|---|" + "---:|" * (len(conds) + 4)]
    for n in systems:
        rows = by_sys[n]["rows"]
        d = [100 * (rows[c]["eer"] - base[c]["eer"]) for c in conds if c not in (*VAD_CONDITIONS, "cross")]
        out.append(f"| {n} | " + " | ".join(f"{100 * rows[c]['eer']:.2f}" for c in conds)
                   + f" | {max(d):+.2f} | {np.mean(d):+.2f} | {sum(r['refused'] for r in rows.values())} | "
                   f"{sum(r['too_short'] for r in rows.values())} |")
    return out


def detail(by_sys: dict, systems: list[str]) -> list[str]:
    out = ["| condition | system | EER | minDCF 0.01 | top-1 | open-set FA @ calibrated thr (thr) "
           "| FNIR @ FPIR 1 % | refused | too_short |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cond in by_sys[systems[0]]["rows"]:
        for s in systems:
            r = by_sys[s]["rows"][cond]
            out.append(f"| {cond} | {s} | {pct(r['eer'])} | {r['min_dcf_001']:.4f} | {pct(r['top1'])} | "
                       f"{pct(r['open_set_fa'])} ({r['calibrated_threshold_mean']:.3f}) | "
                       f"{pct(r['fnir_at_fpir_001'])} | {r['refused']} | {r['too_short']} |")
    return out


def markdown(results: dict, systems: list[str], meta: dict) -> str:
    out = [f"# Accuracy under hard conditions\n\nMade by `{meta['command']}` ({meta['created']}). "
           f"Protocol, conditions and systems: benchmarks/eval_conditions.py, benchmarks/conditions.py "
           f"(seed {meta['seed']}). EER in %; * over the conditions where a VAD has nothing to remove "
           f"(all but {', '.join(VAD_CONDITIONS)} and cross), in EER points.\n"]
    shown = [s for s in ("bare", "old", "new") if s in systems] or systems
    for model, by_sys in results.items():
        out += [f"\n## {model}\n", "EER (%) by system:\n", *summary(by_sys, systems), "", *detail(by_sys, shown)]
        checked = {s: r["check_max_abs_diff"] for s, r in by_sys.items() if "check_max_abs_diff" in r}
        if checked:
            out.append("\nAgainst Embedder.embed with the same options (largest |difference| of an embedding "
                       f"value, {meta['check']} clips per condition): "
                       + ", ".join(f"{s} {v:.1e}" for s, v in checked.items()) + ".")
    out.append("\nSystems (VadOptions):\n")
    out += [f"* `{s}`: {json.dumps(asdict(SYSTEMS[s]))}" for s in systems]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared/data/librispeech-251")
    ap.add_argument("--models", default="campplus,ge2e")
    ap.add_argument("--systems", default="bare,old,new", help=f"of {', '.join(SYSTEMS)}; the first is the baseline")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--check", type=int, default=0, help="clips per condition checked against Embedder.embed")
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: $SPEAKERID_HOME/embcache")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "conditions.json")
    args = ap.parse_args()
    systems = args.systems.split(",")
    corpus = Corpus.load(args.data)
    clips = build_all(corpus, args.conditions.split(","), args.seed)
    samples = prepared(clips)
    vad = SileroVad(vad_sequence_onnx_path(), threads=1)
    levels = {SYSTEMS[s].level_dbfs for s in systems if SYSTEMS[s].enabled}
    probs = {level: probabilities(vad, samples, level) for level in levels}
    meta = {"command": "python benchmarks/eval_conditions.py " + " ".join(sys.argv[1:]), "seed": args.seed,
            "created": time.strftime("%Y-%m-%d"), "leave_out": LEAVE_OUT, "seeds": SEEDS, "far": DEFAULT_FAR,
            "check": args.check}
    results: dict = {}
    with tempfile.TemporaryDirectory() as td:
        for model in args.models.split(","):
            emb = Embedder(model, vad=SYSTEMS["bare"], embed=EmbedOptions(threads=1))
            cache = EmbeddingCache.for_embedder(emb, args.cache_dir)
            results[model] = {s: run_system(emb, cache, s, clips, samples, probs, corpus, args, Path(td))
                              for s in systems}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")
            args.out.with_suffix(".md").write_text(markdown(results, systems, meta))
    print(markdown(results, systems, meta))


if __name__ == "__main__":
    main()

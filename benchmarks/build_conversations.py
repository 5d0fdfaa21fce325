"""Synthetic conversations with exact labels, built from librispeech-251 (seeded).

Each of librispeech-251's speakers has one utterance. Speakers with at least
``ENROL_MIN_UTTERANCE_S`` of audio may be *enrolled*: the first ``ENROL_S`` seconds of their
utterance become their enrolment clip (``enrol/<speaker>/enrol.wav``) and only the rest is used
in conversations, so enrolment and conversation never share audio. Other speakers (and the
enrolment-capable ones left out of the gallery) are *unenrolled*: their whole utterance is
conversation material.

A conversation has 2 to 7 speakers (at least one unenrolled in about half of them), turns of
0.5 to 15 s (log-uniform, cut from the speaker's material, which wraps around when a speaker
talks longer than their material), pauses of 0.1 to 1.5 s, overlapped speech (a per-conversation
target of 0 to 30 % of the speech), and per-speaker level differences of -9 to +3 dB.

Labels are exact at the sample level: a reference turn is where a speaker's audio is placed,
trimmed to the speech in it: Silero VAD (speakerid.vad) on each speaker's clean material, pauses
under 0.25 s bridged as annotators do, 30 ms padding. (An energy threshold was tried first: it
either kept pauses or, with a noise-floor rule, cut quiet speech on noisy utterances.)

    python benchmarks/build_conversations.py --out bench-results/conversations --n 60 --seed 0

Writes ``conv_NNN.wav`` / ``conv_NNN.rttm``, ``enrol/<speaker>/enrol.wav`` and
``manifest.json`` (speakers, enrolled flags, overlap share, duration of each conversation).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "librispeech-251"
ENROL_S = 5.0
ENROL_MIN_UTTERANCE_S = 11.0
GALLERY_SIZE = 120
BRIDGE_S = 0.25


@functools.lru_cache(maxsize=1)
def _vad():
    from speakerid.config import VadOptions
    from speakerid.models import store
    from speakerid.vad import SileroVad

    # Silero's own segmentation (30 ms padding, every pause of BRIDGE_S or more cut, no level
    # change), whatever the embedding defaults of VadOptions are
    wanted = {"min_segment_ms": 100.0, "min_silence_ms": BRIDGE_S * 1000, "speech_pad_ms": 30.0,
              "keep_pauses_ms": 0.0, "level_dbfs": None}
    names = {f.name for f in dataclasses.fields(VadOptions)}
    opts = VadOptions(**{k: v for k, v in wanted.items() if k in names})
    return SileroVad(store.vad_sequence_onnx_path(), opts, threads=1)


def speech_mask(x: np.ndarray) -> np.ndarray:
    """Per-sample speech mask of one utterance (Silero VAD, pauses under BRIDGE_S bridged)."""
    mask = np.zeros(len(x), bool)
    for a, b in _vad().segments(x):
        mask[a:b] = True
    return mask


def trim(x: np.ndarray) -> np.ndarray:
    m = speech_mask(x)
    idx = np.flatnonzero(m)
    return x[idx[0] : idx[-1] + 1] if len(idx) else x


def load_speakers(data: Path) -> list[dict]:
    with open(data / "speakers.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["file"])
    return rows


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    e = np.flatnonzero(np.diff(m))
    return list(zip(e[::2], e[1::2]))


class Material:
    """A speaker's conversation audio, read cyclically."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x / max(np.sqrt(np.mean(x**2)), 1e-4) * 0.05  # common RMS
        self.mask = speech_mask(self.x)
        self.pos = 0

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = (self.pos + np.arange(n)) % len(self.x)
        self.pos = int((self.pos + n) % len(self.x))
        return self.x[idx], self.mask[idx]


def conversation(rng: np.random.Generator, speakers: list[str], material: dict[str, Material],
                 duration_s: float, overlap_target: float) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    gains = {s: 10 ** (rng.uniform(-9, 3) / 20) for s in speakers}
    placed: list[tuple[str, int, np.ndarray, np.ndarray]] = []
    t = int(rng.uniform(0.2, 1.0) * SR)
    prev = None
    first_round = list(speakers)  # everyone speaks early on
    while t < duration_s * SR:
        if first_round:
            spk = first_round.pop(0)
        else:  # then at random, never the same speaker twice in a row
            spk = str(rng.choice([s for s in speakers if s != prev]))
        dur = float(np.exp(rng.uniform(np.log(0.5), np.log(15.0))))
        audio, mask = material[spk].take(int(dur * SR))
        placed.append((spk, t, audio * gains[spk], mask))
        end = t + len(audio)
        if prev is not None and rng.random() < min(0.9, overlap_target * 3.0):
            back = int(min(rng.uniform(0.3, 3.5), dur * 0.9) * SR)
            t = end - back
        else:
            t = end + int(rng.uniform(0.1, 1.5) * SR)
        prev = spk
    total = max(t0 + len(a) for _, t0, a, _ in placed) + int(0.5 * SR)
    mix = np.zeros(total, np.float32)
    labels = []
    for spk, t0, a, m in placed:
        mix[t0 : t0 + len(a)] += a
        labels.extend((spk, (t0 + s) / SR, (t0 + e) / SR) for s, e in runs(m))
    peak = np.max(np.abs(mix))
    if peak > 0.95:
        mix *= 0.95 / peak
    return mix, labels


def overlap_share(labels: list[tuple[str, float, float]], duration_s: float) -> float:
    grid = np.zeros(int(duration_s * 100) + 1, np.int16)
    for _, s, e in labels:
        grid[int(s * 100) : int(e * 100)] += 1
    speech = (grid > 0).sum()
    return float((grid > 1).sum() / speech) if speech else 0.0


def merge_labels(labels: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    out: list[list] = []
    for spk, s, e in sorted(labels, key=lambda r: (r[0], r[1])):
        if out and out[-1][0] == spk and s <= out[-1][2] + 1e-9:
            out[-1][2] = max(out[-1][2], e)
        else:
            out.append([spk, s, e])
    return [tuple(r) for r in sorted(out, key=lambda r: r[1])]


def build(out: Path, n: int, seed: int, data: Path = DATA) -> dict:
    rng = np.random.default_rng(seed)
    rows = load_speakers(data)
    audio = {}
    for r in rows:
        x, sr = sf.read(data / r["file"], dtype="float32")
        if sr != SR:
            raise SystemExit(f"{r['file']}: expected {SR} Hz")
        audio[r["speaker"]] = trim(x)
    capable = [s for s, x in audio.items() if len(x) >= ENROL_MIN_UTTERANCE_S * SR]
    gallery = sorted(rng.choice(capable, size=min(GALLERY_SIZE, len(capable)), replace=False).tolist())
    others = sorted(set(audio) - set(gallery))
    (out / "enrol").mkdir(parents=True, exist_ok=True)
    material = {}
    for s in audio:
        x = audio[s]
        if s in gallery:
            cut = int(ENROL_S * SR)
            (out / "enrol" / s).mkdir(exist_ok=True)
            sf.write(out / "enrol" / s / "enrol.wav", x[:cut], SR, subtype="PCM_16")
            x = x[cut:]
        material[s] = Material(x)
    convs = []
    for i in range(n):
        k = int(rng.integers(2, 8))
        n_unknown = int(rng.integers(0, min(k, 3) + 1)) if rng.random() < 0.6 else 0
        n_unknown = min(n_unknown, k - 1) if k > 1 else 0
        spk = list(rng.choice(gallery, size=k - n_unknown, replace=False)) + list(
            rng.choice(others, size=n_unknown, replace=False))
        spk = [str(s) for s in rng.permutation(spk)]
        duration = float(rng.uniform(30, 60) + 12 * k)
        target = float(rng.uniform(0.0, 0.3))
        mix, labels = conversation(rng, spk, material, duration, target)
        labels = merge_labels(labels)
        name = f"conv_{i:03d}"
        sf.write(out / f"{name}.wav", mix, SR, subtype="PCM_16")
        (out / f"{name}.rttm").write_text("".join(
            f"SPEAKER {name} 1 {s:.3f} {e - s:.3f} <NA> <NA> {spk_} <NA> <NA>\n" for spk_, s, e in labels))
        dur = len(mix) / SR
        convs.append({"name": name, "speakers": spk, "enrolled": [s in gallery for s in spk],
                      "duration_s": round(dur, 3), "overlap_share": round(overlap_share(labels, dur), 4),
                      "overlap_target": round(target, 3)})
    manifest = {"seed": seed, "n": n, "gallery": gallery, "enrol_s": ENROL_S, "conversations": convs,
                "source": str(data)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench-results/conversations"))
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA)
    a = ap.parse_args()
    m = build(a.out, a.n, a.seed, a.data)
    ov = [c["overlap_share"] for c in m["conversations"]]
    ks = [len(c["speakers"]) for c in m["conversations"]]
    print(f"{a.n} conversations in {a.out}: {sum(c['duration_s'] for c in m['conversations']) / 60:.1f} min, "
          f"speakers {min(ks)}-{max(ks)}, overlap {min(ov):.1%}-{max(ov):.1%} (mean {np.mean(ov):.1%}), "
          f"gallery {len(m['gallery'])}")


if __name__ == "__main__":
    main()

"""Real-speech conversations for the diarization tests, with their reference turns."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def utterances(directory: Path, n: int, min_s: float = 12.0, skip: int = 0) -> list[tuple[str, np.ndarray]]:
    """(speaker, samples) of ``n`` speakers whose utterance is at least ``min_s`` long
    (by file name, after skipping ``skip`` of them), alternating sexes for distinct voices."""
    with open(directory / "speakers.csv", newline="") as f:
        rows = sorted((r for r in csv.DictReader(f) if float(r["duration_s"]) >= min_s), key=lambda r: r["file"])
    by_sex = {"F": [r for r in rows if r["sex"] == "F"], "M": [r for r in rows if r["sex"] == "M"]}
    picked = [r for pair in zip(by_sex["F"], by_sex["M"]) for r in pair][skip : skip + n]
    out = []
    for r in picked:
        x, sr = sf.read(directory / r["file"], dtype="float32")
        if sr != SR:
            raise RuntimeError(f"{r['file']}: expected 16 kHz")
        out.append((r["speaker"], x))
    return out


def _speech_runs(x: np.ndarray) -> list[tuple[int, int]]:
    """Speech of one speaker's clean piece (Silero VAD, pauses under 0.25 s bridged)."""
    from speakerid.config import VadOptions
    from speakerid.models import store
    from speakerid.vad import SileroVad

    vad = SileroVad(store.vad_sequence_onnx_path(), reference_vad_options(VadOptions, 250.0))
    return vad.segments(x)


def reference_vad_options(cls, bridge_ms: float):
    """Silero's own segmentation (30 ms padding, every pause of ``bridge_ms`` or more cut, no
    level change), whatever the embedding defaults of VadOptions are."""
    import dataclasses

    wanted = {"min_segment_ms": 100.0, "min_silence_ms": bridge_ms, "speech_pad_ms": 30.0,
              "keep_pauses_ms": 0.0, "level_dbfs": None}
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in wanted.items() if k in names})


def conversation(parts: list[tuple[str, np.ndarray]], plan: list[tuple[int, float, float]]):
    """Mix turns ``(speaker index, seconds, gap before it)`` (a negative gap overlaps the
    previous turn); each speaker's material is read on from where their last turn stopped.
    Returns (samples, [(speaker, start_s, end_s)]): the reference is each turn's speech as
    Silero VAD finds it in the speaker's clean piece, so pauses within a turn are not speech."""
    pos = [0] * len(parts)
    placed, t = [], int(0.5 * SR)
    for k, dur, gap in plan:
        t = max(t + int(gap * SR), 0)
        x = parts[k][1]
        n = int(dur * SR)
        seg = x[np.arange(pos[k], pos[k] + n) % len(x)]
        pos[k] += n
        placed.append((k, t, seg))
        t += n
    mix = np.zeros(t + int(0.5 * SR), np.float32)
    for _, t0, seg in placed:
        mix[t0 : t0 + len(seg)] += seg
    mix /= max(1.0, float(np.abs(mix).max()) / 0.9)
    return mix, [(parts[k][0], (t0 + a) / SR, (t0 + b) / SR) for k, t0, seg in placed for a, b in _speech_runs(seg)]


def reference(turns):
    from speakerid.diarize import Timeline, Turn

    return Timeline(tuple(Turn(s, e, spk) for spk, s, e in turns), max(e for _, _, e in turns))


def der(ref, hyp, collar: float = 0.5, grid_s: float = 0.01) -> float:
    """Diarization error rate, overlap scored, on a ``grid_s`` grid: (missed + false alarm +
    confused speaker time) / reference speaker time, under the one-to-one label mapping with the
    most overlap. ``collar`` is pyannote.metrics' (the total width left out around each reference
    boundary: 0.5 is the NIST +-0.25 s). Numpy only, so that the tests do not import pyannote
    (tests/test_torchzip_metadata.py checks that loading the segmentation checkpoint does not);
    test_diarize_units.py checks it against pyannote.metrics in a subprocess."""
    from speakerid.diarize.assignment import assign_max

    end = max([t.end_s for t in (*ref.turns, *hyp.turns)] + [ref.duration_s, hyp.duration_s])
    n = int(np.ceil(end / grid_s)) + 1

    def grid(tl) -> tuple[list[str], np.ndarray]:
        labels = tl.labels()
        m = np.zeros((n, max(len(labels), 1)), bool)
        for t in tl.turns:
            m[int(round(t.start_s / grid_s)) : int(round(t.end_s / grid_s)), labels.index(t.speaker)] = True
        return labels, m

    _, r = grid(ref)
    _, h = grid(hyp)
    keep = np.ones(n, bool)
    half = int(round(collar / 2 / grid_s))
    if half:
        for t in ref.turns:
            for b in (t.start_s, t.end_s):
                i = int(round(b / grid_s))
                keep[max(i - half, 0) : i + half] = False
    r, h = r[keep], h[keep]
    pairs = assign_max(r.T.astype(np.float64) @ h.astype(np.float64))
    correct = sum((r[:, i] & h[:, j]).astype(np.int64) for i, j in pairs) if pairs else np.zeros(len(r), np.int64)
    n_ref, n_hyp = r.sum(axis=1), h.sum(axis=1)
    total = n_ref.sum()
    return float((np.maximum(n_ref, n_hyp) - correct).sum() / total) if total else 0.0

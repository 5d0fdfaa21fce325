"""Seeded development conditions built from librispeech-251, for benchmarks/eval_conditions.py.

Every utterance of at least 4 s is split in time (speakerid.bench.protocols.split_in_time): the
first half enrols, the second queries; shorter utterances enrol whole (gallery distractors, no
query). Each condition degrades *both* halves, independently (its own noise, room, crop...):

==============  ==============================================================================
condition       what is done to each clip
==============  ==============================================================================
clean           nothing
crop-2s/-3s     a 2 s / 3 s stretch at a seeded offset
babble-NdB      5 other speakers' utterances (seeded offsets, each at unit RMS, looped if short)
                summed and mixed at N dB SNR (whole-clip power), N = 0, 5, 10
white-5dB       white Gaussian noise at 5 dB SNR
pink-5dB        pink (1/f) noise at 5 dB SNR
telephone       300-3400 Hz band-pass (Butterworth, order 4), 8 kHz, 8-bit mu-law; given to the
                embedder at 8 kHz, as a telephone recording would be
reverb          a simulated shoebox room (pyroomacoustics image source method): 3-9 m rooms,
                RT60 0.3-0.8 s, source 1-2.5 m from the microphone; level kept
far-field       a larger room (RT60 0.5-0.9 s), source 4-7 m away, the level 20-30 dB lower,
                a microphone noise floor at -80 dBFS
silences        3-6 s of near silence (-70 dBFS noise) before and after the speech and a
                1.5-3 s pause inside it
tones           3-6 s of music before and after the speech (seeded notes and chords with 6
                harmonics and decaying envelopes, and a drum-like noise burst on each beat),
                at the speech level -3..+3 dB: hold music, a jingle
==============  ==============================================================================

Rooms are drawn from a seeded pool of ROOMS_PER_CONDITION impulse responses (computing one per
clip would take minutes). Every random choice comes from ``numpy.random.default_rng`` seeded by
(seed, condition, speaker, role), so a condition is the same on every run and machine, and a
clip does not change when other speakers are added or removed.

    python -c "from benchmarks.conditions import *; c = Corpus.load(DATA); print(len(build(c, 'tones')))"
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from speakerid.audio import load
from speakerid.bench.protocols import read_speakers_csv, split_in_time

SR = 16000
TELEPHONE_SR = 8000
ROOMS_PER_CONDITION = 32
BABBLE_TALKERS = 5
CONDITIONS = (
    "clean", "crop-2s", "crop-3s", "babble-0dB", "babble-5dB", "babble-10dB", "white-5dB", "pink-5dB",
    "telephone", "reverb", "far-field", "silences", "tones",
)
#: The conditions where a VAD has something to remove.
VAD_CONDITIONS = ("silences", "tones")
#: The conditions that draw nothing at random: the same clips under every seed.
UNSEEDED = ("clean", "telephone")
ROLES = ("enrol", "query", "whole")


@dataclass(frozen=True)
class Clip:
    """One clip of a condition: ``key`` is "<condition>/<speaker>/<role>"."""

    key: str
    speaker: str
    role: str
    samples: np.ndarray
    sample_rate_hz: int


@dataclass(frozen=True)
class Corpus:
    """librispeech-251 decoded once: speakers in speakers.csv order, their clips by role."""

    speakers: tuple[str, ...]
    whole: dict[str, np.ndarray]
    halves: dict[str, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def load(cls, directory: str | Path) -> Corpus:
        speakers, whole, halves = [], {}, {}
        for u in read_speakers_csv(directory):
            x = load(u.path)
            speakers.append(u.speaker)
            whole[u.speaker] = x
            h = split_in_time(x, SR)
            if h is not None:
                halves[u.speaker] = h
        return cls(tuple(speakers), whole, halves)

    def clean_clips(self) -> list[tuple[str, str, np.ndarray]]:
        """(speaker, role, samples): enrol and query halves, and short utterances whole."""
        out = []
        for s in self.speakers:
            if s in self.halves:
                out += [(s, "enrol", self.halves[s][0]), (s, "query", self.halves[s][1])]
            else:
                out.append((s, "whole", self.whole[s]))
        return out


def rng_for(seed: int, *names: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and the names (crc32: stable across runs and machines)."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + g * noise`` with g such that the power ratio is ``snr_db`` (whole clip)."""
    g = rms(speech) / max(rms(noise), 1e-12) / 10.0 ** (snr_db / 20.0)
    return (speech + g * noise[: len(speech)]).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS pink noise: white noise shaped by 1/sqrt(f) in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return (x / max(rms(x), 1e-12)).astype(np.float32)


def crop(x: np.ndarray, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SR)
    if len(x) <= n:
        return x
    start = int(rng.integers(0, len(x) - n + 1))
    return x[start : start + n]


def babble(corpus: Corpus, speaker: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """The sum of BABBLE_TALKERS other speakers' speech, each at unit RMS, ``n`` samples."""
    others = [s for s in corpus.speakers if s != speaker]
    out = np.zeros(n, np.float64)
    for s in rng.choice(others, BABBLE_TALKERS, replace=False):
        y = corpus.whole[str(s)]
        y = np.tile(y, -(-n // len(y)) + 1)
        start = int(rng.integers(0, len(y) - n + 1))
        seg = y[start : start + n]
        out += seg / max(rms(seg), 1e-12)
    return out.astype(np.float32)


def telephone(x: np.ndarray) -> np.ndarray:
    """300-3400 Hz band, 8 kHz, 8-bit mu-law (encoded and decoded): float32 at TELEPHONE_SR."""
    import soxr
    from scipy.signal import butter, sosfilt

    sos = butter(4, [300.0, 3400.0], btype="bandpass", fs=SR, output="sos")
    y = soxr.resample(sosfilt(sos, x).astype(np.float32), SR, TELEPHONE_SR, quality="HQ")
    y = np.clip(y, -1.0, 1.0)
    mu = 255.0
    code = np.round((np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu) + 1.0) / 2.0 * mu)  # 0..255
    z = 2.0 * code / mu - 1.0
    return (np.sign(z) * np.expm1(np.abs(z) * np.log1p(mu)) / mu).astype(np.float32)


# --- rooms --------------------------------------------------------------------------------------


def _room_rir(rng: np.random.Generator, far: bool) -> np.ndarray:
    """One shoebox room impulse response at SR, cut to start at the direct path."""
    import pyroomacoustics as pra

    if far:
        dims = np.array([rng.uniform(8, 12), rng.uniform(6, 9), rng.uniform(2.8, 4.0)])
        rt60, dist = rng.uniform(0.5, 0.9), rng.uniform(4.0, 7.0)
    else:
        dims = np.array([rng.uniform(3, 9), rng.uniform(3, 7), rng.uniform(2.5, 3.5)])
        rt60, dist = rng.uniform(0.3, 0.8), rng.uniform(1.0, 2.5)
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    for _ in range(1000):  # a source-microphone pair at ``dist``, both >= 0.5 m from the walls
        mic = rng.uniform(0.5, dims - 0.5)
        d = rng.standard_normal(3)
        d[2] *= 0.2
        src = mic + dist * d / np.linalg.norm(d)
        if np.all(src >= 0.5) and np.all(src <= dims - 0.5):
            break
    room = pra.ShoeBox(dims, fs=SR, materials=pra.Material(absorption), max_order=min(max_order, 40))
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], np.float64)
    direct = int(np.argmax(np.abs(rir) > 0.5 * np.abs(rir).max()))
    return rir[max(0, direct - 8) :]


@lru_cache(maxsize=4)
def room_pool(seed: int, far: bool) -> tuple[np.ndarray, ...]:
    rng = rng_for(seed, "far-rooms" if far else "rooms")
    return tuple(_room_rir(rng, far) for _ in range(ROOMS_PER_CONDITION))


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    from scipy.signal import fftconvolve

    y = fftconvolve(x, rir)[: len(x)]
    return (y * rms(x) / max(rms(y), 1e-12)).astype(np.float32)


# --- silences and tones ---------------------------------------------------------------------------


def near_silence(n: int, rng: np.random.Generator) -> np.ndarray:
    return (10 ** (-70 / 20) * rng.standard_normal(n)).astype(np.float32)


def tones(n: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """Music: notes or chords (150-500 ms, MIDI 40-88, 6 harmonics, decaying) and a 60 ms
    decaying noise burst on each, RMS ``level``."""
    out = np.zeros(n, np.float64)
    t0 = 0
    while t0 < n:
        dur = int(rng.uniform(0.15, 0.5) * SR)
        t = np.arange(min(dur, n - t0)) / SR
        env = np.exp(-t * rng.uniform(2.0, 8.0)) * np.minimum(1.0, t / 0.01)
        for _ in range(int(rng.integers(1, 4))):  # one note or a chord
            f0 = 440.0 * 2.0 ** ((int(rng.integers(40, 89)) - 69) / 12.0)
            for h in range(1, 7):
                if h * f0 < SR / 2:
                    out[t0 : t0 + t.size] += env * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3)) / h
        out[t0 : t0 + t.size] += 0.5 * rng.standard_normal(t.size) * np.exp(-t / 0.06)
        t0 += dur
    return (out * level / max(rms(out), 1e-12)).astype(np.float32)


def with_silences(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lead, trail = (int(rng.uniform(3.0, 6.0) * SR) for _ in range(2))
    at, gap = int(rng.integers(len(x) // 4, 3 * len(x) // 4)), int(rng.uniform(1.5, 3.0) * SR)
    parts = [near_silence(lead, rng), x[:at], near_silence(gap, rng), x[at:], near_silence(trail, rng)]
    return np.concatenate(parts).astype(np.float32)


def with_tones(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    level = rms(x) * 10 ** (rng.uniform(-3.0, 3.0) / 20)
    lead, trail = (int(rng.uniform(3.0, 6.0) * SR) for _ in range(2))
    return np.concatenate([tones(lead, level, rng), x, tones(trail, level, rng)]).astype(np.float32)


# --- building a condition ----------------------------------------------------------------------------


def degrade(corpus: Corpus, condition: str, speaker: str, x: np.ndarray, rng: np.random.Generator,
            seed: int) -> tuple[np.ndarray, int]:
    """One clip under ``condition``: (samples, sample rate)."""
    if condition == "clean":
        return x, SR
    if condition.startswith("crop-"):
        return crop(x, float(condition[5:-1]), rng), SR
    if condition.startswith("babble-"):
        return mix_at_snr(x, babble(corpus, speaker, len(x), rng), float(condition[7:-2])), SR
    if condition == "white-5dB":
        return mix_at_snr(x, rng.standard_normal(len(x)).astype(np.float32), 5.0), SR
    if condition == "pink-5dB":
        return mix_at_snr(x, pink_noise(len(x), rng), 5.0), SR
    if condition == "telephone":
        return telephone(x), TELEPHONE_SR
    if condition in ("reverb", "far-field"):
        far = condition == "far-field"
        pool = room_pool(seed, far)
        y = reverberate(x, pool[int(rng.integers(len(pool)))])
        if far:
            y = y * 10 ** (-rng.uniform(20.0, 30.0) / 20) + 10 ** (-80 / 20) * rng.standard_normal(len(y))
        return np.clip(y, -1.0, 1.0).astype(np.float32), SR
    if condition == "silences":
        return with_silences(x, rng), SR
    if condition == "tones":
        return with_tones(x, rng), SR
    raise ValueError(f"unknown condition {condition!r}; known: {', '.join(CONDITIONS)}")


def build(corpus: Corpus, condition: str, seed: int = 0) -> list[Clip]:
    """Every clip of the protocol (enrol and query halves, short utterances whole) under ``condition``."""
    out = []
    for speaker, role, x in corpus.clean_clips():
        y, sr = degrade(corpus, condition, speaker, x, rng_for(seed, condition, speaker, role), seed)
        out.append(Clip(f"{condition}/{speaker}/{role}", speaker, role, y, sr))
    return out


def build_all(corpus: Corpus, conditions: Sequence[str] = CONDITIONS, seed: int = 0) -> dict[str, list[Clip]]:
    return {c: build(corpus, c, seed) for c in conditions}

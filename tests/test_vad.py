"""speakerid.vad against the reference silero_vad (utils_vad.py from the pinned wheel)."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from speakerid.audio import iter_blocks, load
from speakerid.config import AudioOptions, VadOptions
from speakerid.errors import (
    ConfigError,
    InvalidAudioError,
    ModelError,
    NoSpeechError,
    TooShortError,
)
from speakerid.vad import (
    GATE_MIN_KEEP_MS,
    MAX_VAD_GAIN_DB,
    WINDOW,
    SileroVad,
    _Segmenter,
    require_min_speech,
    vad_gain,
)

CLIPS = ["103-1240-0000.flac", "1034-121119-0000.flac", "1040-133433-0000.flac", "1069-133699-0000.flac"]
#: Silero's own segments (no level gain, keep_pauses_ms=0), comparable with the reference
#: get_speech_timestamps.
SILERO = {"keep_pauses_ms": 0.0, "level_dbfs": None}
OPTION_SETS = [
    VadOptions(**SILERO),
    VadOptions(threshold=0.6, min_segment_ms=100, min_silence_ms=300, speech_pad_ms=60, **SILERO),
    VadOptions(threshold=0.3, min_segment_ms=0, min_silence_ms=0, speech_pad_ms=200, **SILERO),
]
#: Trimming only long non-speech (ours).
KEEP_SETS = [
    VadOptions(),
    VadOptions(keep_pauses_ms=1000.0, speech_pad_ms=200.0),
    VadOptions(threshold=0.3, min_segment_ms=0, min_silence_ms=0, speech_pad_ms=30, keep_pauses_ms=700.0),
]


@pytest.fixture(scope="session")
def vad_onnx() -> Path:
    from speakerid.models.store import vad_onnx_path

    return vad_onnx_path()


@pytest.fixture(scope="session")
def vad_sequence_onnx() -> Path:
    from speakerid.models.store import vad_sequence_onnx_path

    return vad_sequence_onnx_path()


@pytest.fixture(scope="module", params=["stateful", "sequence"])
def vad(request, vad_onnx: Path, vad_sequence_onnx: Path) -> SileroVad:
    """Every test runs on both models: silero_vad.onnx and silero_vad_16k_sequence.onnx, with
    Silero's own segmentation (keep_pauses_ms=0; the default trims only long pauses, see
    test_default_trims_only_long_non_speech)."""
    path = vad_onnx if request.param == "stateful" else vad_sequence_onnx
    return SileroVad(path, OPTION_SETS[0], threads=1)


@pytest.fixture(scope="module")
def ref(upstream: Path) -> ModuleType:
    """silero_vad/utils_vad.py loaded alone (the package __init__ sets torch threads)."""
    spec = importlib.util.spec_from_file_location(
        "_ref_silero_utils_vad", upstream / "silero_vad" / "utils_vad.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ref_model(ref: ModuleType, vad_onnx: Path):
    return ref.OnnxWrapper(str(vad_onnx), force_onnx_cpu=True)


@pytest.fixture(scope="module")
def clips(librispeech: Path) -> dict[str, np.ndarray]:
    return {name: load(librispeech / name) for name in CLIPS}


def with_options(vad: SileroVad, opts: VadOptions, schedule: str = "full") -> SileroVad:
    v = object.__new__(SileroVad)
    v._session, v.opts, v.schedule, v.kind = vad._session, opts, schedule, vad.kind
    v.gated = schedule == "auto" and vad.kind == "sequence" and opts.keep_pauses_ms >= GATE_MIN_KEEP_MS
    return v


def ref_segments(ref: ModuleType, model, x: np.ndarray, o: VadOptions) -> list[tuple[int, int]]:
    import torch

    out = ref.get_speech_timestamps(
        torch.from_numpy(x),
        model,
        threshold=o.threshold,
        sampling_rate=16000,
        min_speech_duration_ms=o.min_segment_ms,
        min_silence_duration_ms=o.min_silence_ms,
        speech_pad_ms=o.speech_pad_ms,
    )
    return [(d["start"], d["end"]) for d in out]


def splice_silence(x: np.ndarray, seconds: float) -> tuple[np.ndarray, int]:
    at = len(x) // 2
    return np.concatenate([x[:at], np.zeros(int(seconds * 16000), np.float32), x[at:]]), at


# --- parity with the reference ---------------------------------------------------------


def test_probabilities_match_reference(vad, ref_model, clips) -> None:
    import torch

    worst = 0.0
    for x in [*clips.values(), next(iter(clips.values()))[:12345]]:
        mine = vad.probabilities(x)
        theirs = ref_model.audio_forward(torch.from_numpy(x), 16000).numpy()[0]
        assert mine.shape == theirs.shape == (-(-len(x) // WINDOW),)
        worst = max(worst, float(np.abs(mine - theirs).max()))
    assert worst < 1e-4


def test_segments_match_reference(vad, ref, ref_model, clips) -> None:
    compared = 0
    for opts in OPTION_SETS:
        v = with_options(vad, opts)
        for x in clips.values():
            for y in (x, splice_silence(x, 1.0)[0]):
                theirs = ref_segments(ref, ref_model, y, opts)
                assert v.segments(y) == theirs
                compared += len(theirs)
    assert compared > 20


def test_segmenter_matches_reference_state_machine(ref) -> None:
    """Random probabilities, options and block cuts vs get_speech_timestamps_from_probs."""
    rng = np.random.default_rng(7)
    for _ in range(400):
        opts = VadOptions(
            threshold=float(rng.choice([0.12, 0.3, 0.5, 0.7])),
            min_segment_ms=float(rng.choice([0, 50, 250, 700])),
            min_silence_ms=float(rng.choice([0, 30, 100, 500])),
            speech_pad_ms=float(rng.choice([0, 30, 30.03, 100, 400])),
            **SILERO,
        )
        n = int(rng.integers(1, 250))
        state, probs = bool(rng.random() < 0.5), np.empty(n, np.float32)
        for i in range(n):
            state ^= bool(rng.random() < 0.15)
            probs[i] = rng.uniform(0.4, 1.0) if state else rng.uniform(0.0, 0.6)
        n_samples = (n - 1) * WINDOW + int(rng.integers(1, WINDOW + 1))
        theirs = ref.get_speech_timestamps_from_probs(
            probs.tolist(),
            threshold=opts.threshold,
            min_speech_duration_ms=opts.min_segment_ms,
            min_silence_duration_ms=opts.min_silence_ms,
            speech_pad_ms=opts.speech_pad_ms,
            audio_length_samples=n_samples,
        )
        seg, mine, prev = _Segmenter(opts), [], 0
        for cut in sorted(set(rng.integers(0, n, 4).tolist())):
            seg.feed(probs[prev:cut])
            seg.settle()
            mine += seg.pop()
            prev = cut
        seg.feed(probs[prev:])
        seg.finish(n_samples)
        mine += seg.pop()
        assert mine == [(d["start"], d["end"]) for d in theirs], opts


def pad_segments(raw: list[tuple[int, int]], n: int, pad: int, keep: int) -> list[tuple[int, int]]:
    """Silero's padding of raw segments (get_speech_timestamps' last loop), with pauses shorter
    than ``keep`` kept whole (also a lead-in and a tail): the reference for keep_pauses_ms."""
    out = [list(r) for r in raw]
    bridge = max(2 * pad, keep)
    for i, seg in enumerate(out):
        if i == 0:
            seg[0] = 0 if raw[0][0] < keep else int(max(0, seg[0] - pad))
        if i == len(out) - 1:
            seg[1] = n if n - raw[i][1] < keep else int(min(n, seg[1] + pad))
            continue
        gap = raw[i + 1][0] - raw[i][1]
        half = gap // 2 if gap < bridge else pad
        seg[1] = int(seg[1] + half) if gap < bridge else int(min(n, seg[1] + pad))
        out[i + 1][0] = int(max(0, out[i + 1][0] - half))
    return [(a, b) for a, b in out]


def test_keep_pauses_matches_padding_reference(ref) -> None:
    """Random probabilities and block cuts: pauses under keep_pauses_ms stay, longer ones are cut
    to speech_pad_ms each side (with keep 0 the reference is Silero's padding itself)."""
    rng = np.random.default_rng(8)
    for _ in range(300):
        pad_ms, keep_ms = float(rng.choice([0, 30, 100, 200])), float(rng.choice([0, 100, 300, 1000, 2500]))
        opts = VadOptions(threshold=0.5, min_segment_ms=float(rng.choice([0, 100, 250])),
                          min_silence_ms=float(rng.choice([0, 100, 300])), speech_pad_ms=pad_ms, keep_pauses_ms=keep_ms)
        n = int(rng.integers(1, 300))
        state, probs = bool(rng.random() < 0.5), np.empty(n, np.float32)
        for i in range(n):
            state ^= bool(rng.random() < 0.1)
            probs[i] = rng.uniform(0.4, 1.0) if state else rng.uniform(0.0, 0.6)
        n_samples = (n - 1) * WINDOW + int(rng.integers(1, WINDOW + 1))
        kw = dict(threshold=0.5, min_speech_duration_ms=opts.min_segment_ms,
                  min_silence_duration_ms=opts.min_silence_ms, audio_length_samples=n_samples)
        raw = [(d["start"], d["end"]) for d in ref.get_speech_timestamps_from_probs(probs.tolist(), speech_pad_ms=0, **kw)]
        want = pad_segments(raw, n_samples, int(16 * pad_ms), int(16 * keep_ms))
        if keep_ms == 0:
            silero = ref.get_speech_timestamps_from_probs(probs.tolist(), speech_pad_ms=pad_ms, **kw)
            assert want == [(d["start"], d["end"]) for d in silero]
        seg, mine, prev = _Segmenter(opts), [], 0
        for cut in sorted(set(rng.integers(0, n, 4).tolist())):
            seg.feed(probs[prev:cut])
            seg.settle()
            mine += seg.pop()
            prev = cut
        seg.feed(probs[prev:])
        seg.finish(n_samples)
        assert mine + seg.pop() == want, opts


def test_sequence_model_matches_the_stateful_one(vad_onnx, vad_sequence_onnx, clips, monkeypatch) -> None:
    """The sequence model as one graph gives the stateful model's probabilities to the bit,
    however the input is cut into pushes and batches; with its STFT in numpy (the default) to
    5e-6 (float32 rounding), and the same segments."""
    from speakerid import vad as vad_mod

    one, many = SileroVad(vad_onnx, OPTION_SETS[0]), SileroVad(vad_sequence_onnx, OPTION_SETS[0])
    assert isinstance(many._session, vad_mod._SplitSequence)
    def unusable(*a, **kw):
        raise ValueError("unexpected encoder")

    monkeypatch.setattr(vad_mod, "_load_split", unusable)  # neither the kept split nor a new one: one graph
    whole = SileroVad(vad_sequence_onnx, OPTION_SETS[0])
    monkeypatch.undo()
    assert not isinstance(whole._session, vad_mod._SplitSequence)
    long = np.concatenate(list(clips.values()))
    assert len(long) > 2 * vad_mod._SEQUENCE_BATCH * WINDOW  # several sequence batches
    for x in [*clips.values(), long, long[:1000], long[:WINDOW]]:
        want = one.probabilities(x)
        np.testing.assert_array_equal(whole.probabilities(x), want)
        np.testing.assert_allclose(many.probabilities(x), want, rtol=0, atol=5e-6)  # float32, as the Conv
        assert many.segments(x) == one.segments(x)
    rng = np.random.default_rng(11)
    cuts = np.sort(rng.integers(0, len(long), 25))
    for v in (one, many):
        st = v.stream()
        segs = [s for b in np.split(long, cuts) for s in st.push(b)] + st.finish()
        assert segs == one.segments(long)


def test_rejects_other_models(tmp_path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(ModelError, match="not a Silero VAD"):
        SileroVad(path)


# --- behaviour on real speech -------------------------------------------------------------


def test_speech_covers_most_of_a_clip(vad, clips) -> None:
    kept = total = 0
    for x in clips.values():
        speech = vad.keep_speech(x)
        assert 0.45 * len(x) < len(speech) <= len(x)  # read speech, some long pauses
        kept, total = kept + len(speech), total + len(x)
        segs = vad.segments(x)
        assert segs[0][0] < 16000 and segs[-1][1] > len(x) - 16000
        assert all(0 <= a < b <= len(x) for a, b in segs)
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(segs, segs[1:], strict=False))
    assert kept > 0.7 * total


def test_silence_raises_no_speech(vad) -> None:
    rng = np.random.default_rng(0)
    for x in (np.zeros(48000, np.float32), (1e-3 * rng.standard_normal(48000)).astype(np.float32)):
        with pytest.raises(NoSpeechError) as exc:
            vad.keep_speech(x)
        assert not isinstance(exc.value, TooShortError)
        assert vad.segments(x) == []


def test_tiny_clip(vad, clips) -> None:
    x = clips[CLIPS[0]]
    for y in (x[16000:17600], x[:10], np.zeros(0, np.float32)):
        with pytest.raises(NoSpeechError):  # TooShortError is a NoSpeechError
            vad.keep_speech(y)


def test_too_short_speech(vad, clips) -> None:
    x = clips[CLIPS[0]]
    v = with_options(vad, VadOptions(min_speech_ms=1000.0 * len(x) / 16000 + 1))
    with pytest.raises(TooShortError, match="ms of speech"):
        v.keep_speech(x)


def test_inserted_silence_is_removed(vad, clips) -> None:
    for x in clips.values():
        y, at = splice_silence(x, 2.0)
        speech = vad.keep_speech(y)
        assert len(speech) < len(y) - 1.9 * 16000
        gap = (at + 4000, at + 2 * 16000 - 4000)  # the silence, less pad and model lag
        assert all(b <= gap[0] or a >= gap[1] for a, b in vad.segments(y))


def test_default_trims_only_long_non_speech(vad, clips) -> None:
    """The default VadOptions keep at least what Silero's segments keep, keep an inserted pause
    shorter than keep_pauses_ms whole, and cut a long one down to speech_pad_ms each side."""
    opts = VadOptions()
    assert opts.keep_pauses_ms > 2 * opts.speech_pad_ms
    v = with_options(vad, replace(opts, level_dbfs=None))
    kept = total = 0
    for x in clips.values():
        base = len(v.keep_speech(x))
        assert base >= len(vad.keep_speech(x))
        kept, total = kept + base, total + len(x)
        a, b = max(vad.segments(x), key=lambda seg: seg[1] - seg[0])  # splice inside speech
        for seconds, grows in ((0.5 * opts.keep_pauses_ms / 1000, None), (3.0, 2 * 16 * opts.speech_pad_ms)):
            gap = np.zeros(int(seconds * 16000), np.float32)
            y = np.concatenate([x[: (a + b) // 2], gap, x[(a + b) // 2 :]])
            assert abs(len(v.keep_speech(y)) - base - (len(gap) if grows is None else grows)) < 0.02 * len(x)
    assert kept > 0.9 * total


def far_field(x: np.ndarray) -> np.ndarray:
    """``x`` reverberated (an exponentially decaying noise tail, RT60 0.8 s) and 30 dB down."""
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(0)
    t = np.arange(int(0.8 * 16000)) / 16000
    rir = rng.standard_normal(t.size) * np.exp(-6.9 * t / 0.8)
    rir[0] = 3.0
    y = fftconvolve(x, rir)[: len(x)]
    return (y * np.sqrt(np.mean(x**2) / np.mean(y**2)) * 10 ** (-30 / 20)).astype(np.float32)


def test_level_hears_quiet_speech(vad, clips) -> None:
    """Far-field speech (reverberant, 30 dB down) reads as little speech to Silero; with
    level_dbfs the model hears it amplified (the gain fixed by the first block), and the speech
    kept is the quiet samples."""
    assert vad_gain(np.zeros(100, np.float32), -26.0) == 10 ** (MAX_VAD_GAIN_DB / 20)
    assert vad_gain(np.ones(100, np.float32), -26.0) == 1.0 == vad_gain(np.zeros(9, np.float32), None)
    raw = with_options(vad, VadOptions(**SILERO))
    heard = with_options(vad, VadOptions(**{**SILERO, "level_dbfs": -26.0}))
    loud = quiet_raw = quiet_heard = 0
    for x in clips.values():
        far = far_field(x)
        loud += len(raw.keep_speech(x))
        quiet_raw += sum(b - a for a, b in raw.segments(far))
        kept = heard.keep_speech(far)
        quiet_heard += len(kept)
        assert np.abs(kept).max() <= np.abs(far).max()
        st = heard.stream()
        segs = st.push(far[: len(x) // 2]) + st.push(far[len(x) // 2 :]) + st.finish()
        assert st.gain == vad_gain(far[: len(x) // 2], -26.0) > 1.0 and len(segs) > 0
    assert quiet_raw < 0.6 * loud and quiet_heard > 0.9 * loud


# --- streaming -------------------------------------------------------------------------


def test_stream_equals_whole(vad, clips) -> None:
    rng = np.random.default_rng(3)
    for opts in OPTION_SETS + KEEP_SETS:
        v = with_options(vad, replace(opts, level_dbfs=None))  # level: see test_level_hears_quiet_speech
        for x in clips.values():
            y = np.concatenate([x, np.zeros(20000, np.float32), x[: len(x) // 3]])
            blocks = np.split(y, np.sort(rng.integers(0, len(y), 9)))
            st = v.stream()
            segs = [s for b in blocks for s in st.push(b)] + st.finish()
            assert segs == v.segments(y)
            pieces = list(v.speech_stream(blocks))
            assert len(pieces) > 1
            np.testing.assert_array_equal(np.concatenate(pieces), v.keep_speech(y))


def test_speech_stream_from_file_blocks(vad, librispeech, tmp_path) -> None:
    opts = AudioOptions(block_s=1.3)
    x = load(librispeech / CLIPS[1], opts)
    pieces = list(vad.speech_stream(iter_blocks(librispeech / CLIPS[1], opts)))
    np.testing.assert_array_equal(np.concatenate(pieces), vad.keep_speech(x))
    with pytest.raises(NoSpeechError):
        list(vad.speech_stream([np.zeros(8000, np.float32)] * 6))


def test_speech_stream_keeps_up(vad, clips) -> None:
    """Speech comes out while the input streams, at most ~1 s behind (bounded buffer)."""
    x = np.concatenate(list(clips.values()) * 2)
    segs = vad.segments(x)
    out = checks = 0

    def speech_before(n: int) -> int:
        return sum(max(0, min(b, n) - a) for a, b in segs)

    def feed():
        nonlocal checks
        fed = 0
        for b in np.array_split(x, len(x) // 8000):
            assert out >= speech_before(fed - 16000)
            checks += 1
            fed += len(b)
            yield b

    for piece in vad.speech_stream(feed()):
        out += len(piece)
    assert out == speech_before(len(x)) and checks > 100


# --- misc -------------------------------------------------------------------------------


def test_require_min_speech() -> None:
    opts = VadOptions(min_speech_ms=500)
    require_min_speech(8000, 16000, opts)
    with pytest.raises(TooShortError, match="500"):
        require_min_speech(7999, 16000, opts)
    with pytest.raises(NoSpeechError):
        require_min_speech(0, 16000, opts)


def test_bad_input(vad, tmp_path) -> None:
    with pytest.raises(InvalidAudioError):
        vad.probabilities(np.zeros((2, 512), np.float32))
    with pytest.raises(InvalidAudioError):
        vad.stream().push(np.zeros((512, 2), np.float32))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="bad.onnx"):
        SileroVad(bad)
    assert vad.probabilities(np.zeros(0, np.float32)).shape == (0,)


def test_new_options_are_checked() -> None:
    from speakerid.errors import ConfigError

    for bad in ({"short_speech": "pad"}, {"keep_pauses_ms": -1.0}, {"level_dbfs": 3.0}, {"level_dbfs": -120.0}):
        with pytest.raises(ConfigError):
            VadOptions(**bad)
    assert VadOptions(level_dbfs=None).level_dbfs is None


# --- the gated schedule ---------------------------------------------------------------------


def _kept(segments: list[tuple[int, int]], n: int) -> np.ndarray:
    m = np.zeros(n, bool)
    for a, b in segments:
        m[a:b] = True
    return m


def test_gated_schedule_equals_full_schedule(vad_sequence_onnx, clips) -> None:
    """With the default options (trim only long non-speech) the gated schedule keeps the same
    samples as the full model on real speech, with and without long pauses spliced in, and runs
    the model on far fewer windows of continuous speech (never much more than the full model)."""
    opts = VadOptions()
    full = SileroVad(vad_sequence_onnx, opts, threads=1)
    gated = SileroVad(vad_sequence_onnx, opts, threads=1, schedule="auto")
    silero = SileroVad(vad_sequence_onnx, OPTION_SETS[0], threads=1)
    assert gated.gated and not full.gated and gated.kind == "sequence"
    for x in clips.values():
        st = gated.stream()
        segs = st.push(x) + st.finish()
        assert np.array_equal(_kept(segs, len(x)), _kept(full.segments(x), len(x)))
        assert st.windows_run <= (1 + 1 / 3) * -(-len(x) // WINDOW) + 1
        np.testing.assert_array_equal(gated.keep_speech(x), full.keep_speech(x))
        for y in (splice_silence(x, 3.0)[0], np.concatenate([np.zeros(48000, np.float32), x, x[:16000]])):
            assert len(gated.keep_speech(y)) < len(y) - 2 * 16000  # the long silence is cut...
            np.testing.assert_array_equal(gated.keep_speech(y), full.keep_speech(y))  # ...exactly as in full
    speech = np.concatenate([silero.keep_speech(x) for x in clips.values()])  # pauses cut by Silero
    np.testing.assert_array_equal(gated.keep_speech(speech), full.keep_speech(speech))
    assert gated.timed_run(speech) < 0.5 * full.timed_run(speech)


def test_gated_stream_in_blocks(vad_sequence_onnx, clips) -> None:
    """Pushed in blocks, the gated stream keeps nearly the same samples as pushed whole (where the
    full model resumes after gated blocks its state is warmed, not exact: long files only, the
    Embedder's blocks are 60 s), and cuts a long silence wherever the blocks fall."""
    opts = VadOptions(level_dbfs=None)  # the gain is fixed by the first block
    gated = SileroVad(vad_sequence_onnx, opts, threads=1, schedule="auto")
    x = np.concatenate(list(clips.values()))
    y, at = splice_silence(x, 4.0)
    for z in (x, y):
        whole = _kept(gated.segments(z), len(z))
        for step in (16000, 37000, 100_000):
            st = gated.stream()
            segs = [s for i in range(0, len(z), step) for s in st.push(z[i : i + step])] + st.finish()
            assert np.count_nonzero(_kept(segs, len(z)) != whole) < 0.01 * len(z)
            pieces = list(gated.speech_stream([z[i : i + step] for i in range(0, len(z), step)]))
            assert sum(len(p) for p in pieces) == np.count_nonzero(_kept(segs, len(z)))
            if z is y:
                assert not _kept(segs, len(z))[at + 8000 : at + 56000].any()


def test_gate_only_for_long_kept_pauses(vad_onnx, vad_sequence_onnx) -> None:
    assert not SileroVad(vad_sequence_onnx, VadOptions(keep_pauses_ms=0.0), schedule="auto").gated
    assert not SileroVad(vad_onnx, VadOptions(), schedule="auto").gated  # the stateful model: full
    with pytest.raises(ConfigError):
        SileroVad(vad_sequence_onnx, VadOptions(), schedule="sometimes")


def test_split_sequence_reuses_buffers_per_thread(vad_sequence_onnx, clips) -> None:
    """The split model's STFT and encoder reuse per-thread buffers: calls of different lengths
    in a row, and one VAD used by several threads at once, give each clip's own probabilities."""
    from concurrent.futures import ThreadPoolExecutor

    from speakerid import vad as vad_mod

    v = SileroVad(vad_sequence_onnx, OPTION_SETS[0])
    assert isinstance(v._session, vad_mod._SplitSequence)
    xs = [x[: n * WINDOW] for x, n in zip(clips.values(), (300, 7, 120, 1, 64))]
    want = [SileroVad(vad_sequence_onnx, OPTION_SETS[0]).probabilities(x) for x in xs]  # fresh buffers each
    for _ in range(2):  # long, short, long...: a buffer sized for one call serves the next
        for x, w in zip(xs, want):
            np.testing.assert_array_equal(v.probabilities(x), w)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(v.probabilities, xs * 6))
    for g, w in zip(got, want * 6):
        np.testing.assert_array_equal(g, w)
    # the numpy STFT with and without buffers: the same magnitudes
    rows = np.random.default_rng(3).standard_normal((37, 576)).astype(np.float32)
    scratch = vad_mod._Scratch()
    np.testing.assert_array_equal(vad_mod._stft_magnitude(rows, scratch), vad_mod._stft_magnitude(rows))


def test_sequence_split_is_kept_checked_and_remade(vad_sequence_onnx, clips, tmp_path, monkeypatch) -> None:
    """The split sequence model (numpy encoder weights and the LSTM's graph) is made once and kept
    beside the model; a damaged kept file is caught by the load-time check and made again; an
    unwritable directory still gives the split model (made in memory)."""
    import shutil

    from speakerid import vad as vad_mod

    model = tmp_path / "silero_vad_16k_sequence.onnx"
    shutil.copy(vad_sequence_onnx, model)
    tail = tmp_path / "silero_vad_16k_sequence.split.npz"
    x = next(iter(clips.values()))
    first = SileroVad(model, OPTION_SETS[0])
    assert tail.is_file() and isinstance(first._session, vad_mod._SplitSequence)
    want = first.probabilities(x)
    tail.write_bytes(b"not an onnx graph")
    again = SileroVad(model, OPTION_SETS[0])
    assert isinstance(again._session, vad_mod._SplitSequence) and tail.stat().st_size > 100_000
    np.testing.assert_array_equal(again.probabilities(x), want)
    tail.unlink()

    def read_only(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(vad_mod, "write_bytes", read_only)  # (chmod does not stop root)
    ro = SileroVad(model, OPTION_SETS[0])
    assert isinstance(ro._session, vad_mod._SplitSequence) and not tail.exists()
    np.testing.assert_array_equal(ro.probabilities(x), want)

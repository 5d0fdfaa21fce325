"""Diarization stages without the models: windows, assignment, clustering, reconstruction,
naming thresholds, options, the timeline formats, and bounded memory on a 2-hour file."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from speakerid.config import from_mapping
from speakerid.diarize import DiarizeOptions, Timeline, Turn, read_rttm
from speakerid.diarize import assignment as assignment_mod
from speakerid.diarize.activity import FrameGrid, LocalActivity
from speakerid.diarize.clustering import cluster
from speakerid.diarize.embeddings import _spans
from speakerid.diarize.naming import cluster_threshold
from speakerid.diarize.options import check_speaker_counts
from speakerid.diarize.reconstruct import frame_activity, piece_clusters, turns_of
from speakerid.diarize.verify import ChunkEmbeddings, check_frames, embed_chunks
from speakerid.diarize.windows import sliding_windows
from speakerid.errors import ConfigError


def test_windows_cover_every_sample_once_streamed() -> None:
    x = np.arange(100_003, dtype=np.float32)
    blocks = (x[i : i + 7_777] for i in range(0, len(x), 7_777))
    wins = list(sliding_windows(blocks, 16_000, 8_000))
    assert [w.start for w in wins] == list(range(0, 100_001, 8_000))[: len(wins)]
    covered = np.zeros(len(x), bool)
    for w in wins:
        assert len(w.audio) == 16_000
        np.testing.assert_array_equal(w.audio[: w.valid], x[w.start : w.start + w.valid])
        covered[w.start : w.start + w.valid] = True
    assert covered.all() and wins[-1].valid < 16_000
    short = list(sliding_windows([x[:5_000]], 16_000, 8_000))
    assert len(short) == 1 and short[0].valid == 5_000
    assert list(sliding_windows([], 16_000, 8_000)) == []


def test_assignment_fallback_is_exact(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *a, **kw):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    rng = np.random.default_rng(0)
    for _ in range(200):
        r, c = (int(v) for v in rng.integers(1, 6, 2))
        s = rng.normal(size=(r, c))
        pairs = assignment_mod.assign_max(s)
        assert len(pairs) == min(r, c)
        assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
        t = s if r <= c else s.T
        best = max(sum(t[i, j] for i, j in enumerate(cols))
                   for cols in itertools.permutations(range(t.shape[1]), t.shape[0]))
        assert sum(s[i, j] for i, j in pairs) == pytest.approx(best)


def _blobs(k: int, n: int, spread: float = 0.9, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, 192))
    x = np.concatenate([c + spread * rng.normal(size=(n, 192)) for c in centers])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(k), n)


@pytest.mark.parametrize("method", ["ahc", "spectral", "vbx"])
def test_clustering_finds_the_groups(method: str) -> None:
    x, truth = _blobs(4, 40)
    labels = cluster(x, np.full(len(x), 5.0), method=method, threshold=0.3)
    assert labels.max() + 1 == 4
    for g in range(4):
        assert len(set(labels[truth == g])) == 1


def test_clustering_counts_fixed_and_bounded() -> None:
    x, _ = _blobs(4, 30)
    w = np.full(len(x), 5.0)
    assert cluster(x, w, lo=2, hi=2, fixed=True, threshold=0.3).max() + 1 == 2
    assert cluster(x, w, lo=6, hi=None, threshold=0.3).max() + 1 >= 6
    assert cluster(x, w, lo=1, hi=3, threshold=0.3).max() + 1 <= 3
    assert cluster(x[:1], w[:1]).tolist() == [0]


def test_reconstruction_keeps_both_speakers_in_overlap() -> None:
    grid = FrameGrid.for_window(160_000)
    f = grid.frames
    act = np.zeros((2, f, 3), bool)
    act[0, : f // 2, 0] = True  # window 0: speaker a, then b from 40 % with overlap
    act[0, int(0.4 * f) :, 1] = True
    act[1, :, 1] = True  # window 1 (5 s later): b throughout
    starts = np.array([0, 80_000])
    win, spk = np.array([0, 0, 1]), np.array([0, 1, 1])
    cents = np.eye(2, 192, dtype=np.float32)
    vecs = cents[[0, 1, 1]]
    labels, score = piece_clusters(win, spk, vecs, cents)
    assert labels.tolist() == [0, 1, 1] and score.min() == pytest.approx(1.0)
    pieces = {0: [(0, 0, f, 0), (1, 0, f, 1)], 1: [(1, 0, f, 1)]}
    active = frame_activity(starts, list(act), pieces, 2, 240_000, grid)
    assert (active.sum(axis=1) == 2).any()
    turns = turns_of(active, grid, 16_000, 15.0, 0.3, 0.1)
    a = [t for t in turns if t[0] == 0]
    b = [t for t in turns if t[0] == 1]
    assert a and b and a[0][2] > b[0][1]  # a's turn ends after b's starts: overlap
    assert max(e for _, _, e in turns) <= 15.0


def _posteriors(act: np.ndarray, confidence: float = 1.0) -> np.ndarray:
    """Powerset posteriors (frames, 7) of a hard (frames, 3) activity, the rest of the mass on
    silence when ``confidence`` < 1 (classes as POWERSET_MAPPING)."""
    from speakerid.models.segmentation import POWERSET_MAPPING

    cls = np.array([np.flatnonzero((POWERSET_MAPPING == row).all(axis=1))[0] for row in act.astype(np.float32)])
    out = np.zeros((len(act), 7), np.float32)
    out[np.arange(len(act)), cls] = confidence
    out[:, 0] += 1 - confidence
    return out.astype(np.float16)


def test_reconstruction_trusts_the_window_that_sees_a_frame_best() -> None:
    """Two windows disagree on a stretch: the one in whose middle it lies wins (Hamming taper);
    with equal hard votes the old rule gave the tie to the lower cluster index."""
    grid = FrameGrid.for_window(160_000)
    f = grid.frames
    act = np.zeros((2, f, 3), bool)
    act[0, :, 0] = True  # window 0 (0-10 s): one voice throughout, cluster 1 below
    act[1, :, 0] = True  # window 1 (5-15 s): one voice throughout, cluster 0 below
    starts = np.array([0, 80_000])
    pieces = {0: [(0, 0, f, 1)], 1: [(0, 0, f, 0)]}
    active = frame_activity(starts, list(act), pieces, 2, 240_000, grid, [_posteriors(a) for a in act])
    t = (grid.center0 + grid.step * np.arange(len(active))) / 16_000
    assert active[(t > 5.2) & (t < 7.3), 1].all() and not active[(t > 5.2) & (t < 7.3), 0].any()
    assert active[(t > 7.7) & (t < 9.8), 0].all() and not active[(t > 7.7) & (t < 9.8), 1].any()


def test_reconstruction_speech_threshold_and_detached_stretches() -> None:
    grid = FrameGrid.for_window(160_000)
    f = grid.frames
    act = np.zeros((1, f, 3), bool)
    act[0, :300, 0] = True
    act[0, 400:440, 0] = True  # 0.7 s, 1.7 s after the main stretch: inherited, weighted down
    pieces = {0: [(0, 0, f, 0)]}
    weak = frame_activity(np.array([0]), list(act), pieces, 1, 160_000, grid, [_posteriors(act[0], 0.75)],
                          speech_threshold=0.2)
    assert not weak.any()  # P(nobody) 0.25 >= 0.2: not speech
    sure = frame_activity(np.array([0]), list(act), pieces, 1, 160_000, grid, [_posteriors(act[0], 0.75)],
                          speech_threshold=0.3)
    assert sure[:300, 0].sum() >= 295 and sure[400:440, 0].all()  # alone, a detached stretch still counts
    # a second window that measured the detached stretch as another cluster takes it
    act2 = np.zeros((2, f, 3), bool)
    act2[0] = act[0]
    act2[1, 400 - 296 : 440 - 296, 1] = True  # window 1 starts 5 s (296 frames) later
    pieces2 = {0: [(0, 0, f, 0)], 1: [(1, 0, f, 1)]}
    both = frame_activity(np.array([0, 80_000]), list(act2), pieces2, 2, 240_000, grid,
                          [_posteriors(a) for a in act2])
    assert both[400:440, 1].sum() >= 38 and not both[400:440, 0].any()


def test_two_local_speakers_never_share_a_cluster() -> None:
    cents = np.eye(2, 192, dtype=np.float32)
    vecs = np.stack([cents[0], 0.9 * cents[0] + 0.1 * cents[1]])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels, _ = piece_clusters(np.array([0, 0]), np.array([0, 2]), vecs, cents)
    assert sorted(labels.tolist()) == [0, 1]
    # pieces of one local speaker may share a cluster; a piece of another may not take it
    three = np.stack([cents[0], cents[0], 0.9 * cents[0] + 0.1 * cents[1]])
    three /= np.linalg.norm(three, axis=1, keepdims=True)
    labels, _ = piece_clusters(np.array([0, 0, 0]), np.array([0, 0, 1]), three, cents)
    assert labels.tolist() == [0, 0, 1]


def test_pieces_cut_a_local_speaker_at_its_pauses() -> None:
    a = np.zeros((589, 3), bool)
    a[0:100, 0] = a[110:200, 0] = a[220:260, 0] = True  # three runs, the last one short
    act = LocalActivity(a)
    assert _spans(act, 0, None) == [(0, 260)]
    assert _spans(act, 0, 80) == [(0, 100), (110, 260)]  # the short tail joins the piece before
    assert _spans(act, 0, 150) == [(0, 260)]


def _chunk_setup():
    grid = FrameGrid.for_window(160_000)
    n = int(10.0 * 16000 / grid.step)
    t = (np.arange(n) * grid.step + grid.center0) / 16000
    e1, e2, e3 = np.eye(3, dtype=np.float32)
    chunks = ChunkEmbeddings(1.0, list(range(10)), [e1] * 6 + [e2] * 4)  # voice 1 to 6 s, then voice 2
    active = np.zeros((n, 3), bool)
    active[:, 0] = t < 8.0  # cluster 0 (named) is said to talk on into voice 2 for 2 s
    active[:, 1] = t >= 8.0
    return grid, t, active, chunks, np.stack([e1, e2, e3])


def test_check_takes_a_name_off_frames_the_short_embeddings_disagree_with() -> None:
    grid, t, active, chunks, centroids = _chunk_setup()
    known = np.array([True, False, False])
    out = check_frames(active, known, centroids, chunks, grid, 16000, check_margin=0.1, reassign_margin=None)
    # cluster 0's chunk centroid is the mean of its 8 solo chunks (6 of voice 1, 2 of voice 2):
    # cosines 0.95 / 0.32; cluster 1 has too few chunks and keeps its centroid. Interpolated
    # between the chunk centres 5.5 s and 6.5 s, cluster 0 leads by 0.1 until 6.02 s.
    kept = t[out[:, 0]]
    assert kept.max() == pytest.approx(6.02, abs=0.03)
    assert (out[:, 1] == active[:, 1]).all()  # an unnamed cluster keeps its frames
    # and the frames the check took are nobody's: it does not know who talks there
    assert not out[(t > 6.1) & (t < 8.0)].any()
    moved = check_frames(active, known, centroids, chunks, grid, 16000, check_margin=0.1, reassign_margin=0.2)
    assert moved[(t > 6.25) & (t < 8.0), 1].all() and not moved[t > 6.1, 0].any()
    assert moved[t < 5.9, 0].all()
    nobody = np.where(t < 1.0, 0.5, 0.0)
    quiet = check_frames(active, known, centroids, chunks, grid, 16000, check_margin=0.1, reassign_margin=0.2,
                         nobody=nobody, name_speech_threshold=0.1)
    assert not quiet[t < 1.0, 0].any() and quiet[(t > 1.1) & (t < 5.9), 0].all()  # names need sure speech
    same = check_frames(active, known, centroids, ChunkEmbeddings(1.0), grid, 16000, check_margin=0.1,
                        reassign_margin=0.1)
    assert (same == active).all()  # no chunk embeddings: nothing to check against


def test_chunks_are_embedded_once_and_only_with_speech() -> None:
    class FakeEmbedder:
        def prepare(self, x, sr):
            return float(x[0])

        def encode(self, prepared):
            from types import SimpleNamespace
            return [SimpleNamespace(vector=np.array([p, 0.0, 0.0], np.float32)) for p in prepared]

    grid = FrameGrid.for_window(160_000)
    x = np.repeat(np.arange(24, dtype=np.float32), 16000)  # sample value = its second
    wins = list(sliding_windows([x], 160_000, 80_000))
    acts = []
    for w in wins:
        a = np.zeros((grid.frames, 3), bool)
        t = w.start / 16000 + (np.arange(grid.frames) * grid.step + grid.center0) / 16000
        a[:, 0] = (t < 7.0) | (t >= 9.0)  # silence from 7 to 9 s
        acts.append(LocalActivity(a))
    into = ChunkEmbeddings(1.0)
    embed_chunks(wins[:2], acts[:2], FakeEmbedder(), grid, into)
    embed_chunks(wins[2:], acts[2:], FakeEmbedder(), grid, into)
    assert into.index == [i for i in range(24) if i not in (7, 8)]
    assert [float(v[0]) for v in into.vectors] == [float(i) for i in into.index]


def test_name_threshold_accounts_for_speech() -> None:
    short, ref, long = (cluster_threshold(0.6, 0.05, s) for s in (1.0, 10.0, 90.0))
    assert short > ref > long >= 0.6
    assert ref == pytest.approx(0.65)


def test_options_and_counts() -> None:
    opts = from_mapping(DiarizeOptions, {"step_s": 2.5, "clustering": "vbx"})
    assert opts.step_s == 2.5 and opts.window_s == 10.0
    for bad in ({"step_s": 20.0}, {"clustering": "kmeans"}, {"window_s": 0}, {"nope": 1}, {"threads": 0},
                {"speech_threshold": 0.0}, {"speech_threshold": 1.5}, {"overlap_ratio": -1},
                {"check_chunk_s": 0.1}, {"check_chunk_s": 20.0}, {"check_margin": "x"}, {"reassign_margin": 3.0}):
        with pytest.raises(ConfigError):
            from_mapping(DiarizeOptions, bad)
    from speakerid.config import load_yaml

    shipped = Path(__file__).resolve().parents[1] / "configs" / "diarize.yaml"
    assert load_yaml(shipped, DiarizeOptions) == DiarizeOptions()  # the yaml lists every default
    assert check_speaker_counts(None, None, None) == (None, 1, None)
    assert check_speaker_counts(3, None, None) == (3, 3, 3)
    for bad in ((0, None, None), (None, 3, 2), (4, 1, 3), (None, -1, None), (True, None, None), (2.5, None, None)):
        with pytest.raises(ConfigError):
            check_speaker_counts(*bad)


def test_timeline_formats_and_solo_turns() -> None:
    tl = Timeline((Turn(0.0, 5.0, "alice", True, 0.81), Turn(4.0, 8.0, "unknown-1", False, 0.3),
                   Turn(9.0, 9.5, "alice", True, 0.81)), 10.0, ("w",), "x.wav")
    assert tl.labels() == ["alice", "unknown-1"]
    assert tl.solo_turns("alice") == [(0.0, 4.0), (9.0, 9.5)]
    data = json.loads(json.dumps(tl.to_dict()))
    assert len(data["turns"]) == 3 and data["turns"][0] == {
        "start_s": 0.0, "end_s": 5.0, "speaker": "alice", "known": True, "score": 0.81}
    assert Timeline.from_dict(data) == tl
    assert Timeline.from_dict(data["turns"]).turns == tl.turns
    rttm = tl.to_rttm("my file")
    assert rttm.splitlines()[0] == "SPEAKER my_file 1 0.000 5.000 <NA> <NA> alice <NA> <NA>"
    back = read_rttm(rttm)
    assert [(t.start_s, t.end_s, t.speaker) for t in back] == [(t.start_s, t.end_s, t.speaker) for t in tl]


def test_numpy_der_matches_pyannote_metrics() -> None:
    """The tests' DER (tests/diarize_helpers.py) against pyannote.metrics on hand cases, the
    latter in a subprocess so that pyannote is never imported in the test process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from diarize_helpers import der

    ref = Timeline((Turn(0.0, 10.0, "a"), Turn(8.0, 20.0, "b"), Turn(22.0, 30.0, "a")), 30.0)
    hyps = [
        Timeline((Turn(0.0, 10.0, "x"), Turn(8.0, 20.0, "y"), Turn(22.0, 30.0, "x")), 30.0),  # perfect
        Timeline((Turn(0.0, 30.0, "x"),), 30.0),  # one label for everything
        Timeline((Turn(0.5, 9.5, "y"), Turn(10.0, 21.0, "x"), Turn(22.0, 25.0, "z"), Turn(26.0, 29.0, "y")), 30.0),
    ]
    script = textwrap.dedent("""
        import json, sys
        from pyannote.core import Annotation, Segment, Timeline
        from pyannote.metrics.diarization import DiarizationErrorRate
        data = json.loads(sys.stdin.read())
        def ann(turns):
            a = Annotation()
            for i, (s, e, spk) in enumerate(turns):
                a[Segment(s, e), i] = spk
            return a
        uem = Timeline([Segment(0, 30)])
        out = [[float(DiarizationErrorRate(collar=c, skip_overlap=False)(ann(data["ref"]), ann(h), uem=uem))
                for h in data["hyps"]] for c in (0.0, 0.5)]
        print(json.dumps(out))
    """)
    payload = json.dumps({"ref": [[t.start_s, t.end_s, t.speaker] for t in ref.turns],
                          "hyps": [[[t.start_s, t.end_s, t.speaker] for t in h.turns] for h in hyps]})
    proc = subprocess.run([sys.executable, "-c", script], input=payload, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = json.loads(proc.stdout)
    for ci, collar in enumerate((0.0, 0.5)):
        for h, want in zip(hyps, expected[ci]):
            assert der(ref, h, collar=collar) == pytest.approx(want, abs=2e-3)
    assert expected[0][0] == 0.0 and expected[0][1] > 0.3


_MEMORY_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, soundfile as sf

    def hwm():  # this process's peak RSS in bytes. Not ru_maxrss: on Linux that keeps the peak of
        # the process before execve, i.e. of the forked pytest parent (1.6 GB late in the suite).
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    from speakerid.diarize import pipeline, DiarizeOptions
    from speakerid.diarize.activity import LocalActivity

    path, hours = sys.argv[1], float(sys.argv[2])
    SR = 16000
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:  # written in blocks
        block = (np.random.default_rng(0).normal(size=60 * SR) * 0.05).astype(np.float32)
        for _ in range(int(hours * 3600 / 60)):
            f.write(block)

    def fake_segments(windows, segmenter):  # two alternating local speakers, cheap
        out = np.zeros((len(windows), 589, 7), np.float16)  # powerset posteriors, one-hot
        out[:, :280, 1] = 1  # {0}
        out[:, 280:300, 4] = 1  # {0, 1}
        out[:, 300:, 2] = 1  # {1}
        return out

    dirs = np.random.default_rng(1).normal(size=(2, 192))
    def fake_embed(windows, acts, embedder, grid, min_s, into, sr=16000, **kw):
        for w, a in zip(windows, acts):
            for k in a.speakers():
                v = dirs[(k + w.index) % 2] + 0.3 * np.random.default_rng(w.index).normal(size=192)
                into.window.append(w.index); into.speaker.append(k)
                into.first.append(0); into.end.append(589)
                into.vectors.append((v / np.linalg.norm(v)).astype(np.float32))
                into.speech_s.append(4.0); into.clean.append(True)

    pipeline.segment_windows = fake_segments
    pipeline.embed_local_speakers = fake_embed
    d = pipeline.Diarizer(DiarizeOptions())
    base = hwm()
    tl = d(path)
    peak = hwm()
    print(base, peak, tl.duration_s, len(tl.labels()))
""")


def test_two_hour_file_bounded_memory(tmp_path) -> None:
    """The pipeline's own memory on a 2-hour file (models stubbed: their cost per window does not
    depend on the file's length; the real 2-hour run is benchmarks/bench_diarize.py)."""
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / "long.wav"), "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    base, peak, duration, speakers = proc.stdout.split()
    assert float(duration) == pytest.approx(7200.0)
    assert int(speakers) == 2
    assert int(peak) < 1.5 * 2**30
    # the whole audio as float32 would be 460 MB: the pass must not hold it
    assert int(peak) - int(base) < 250 * 2**20

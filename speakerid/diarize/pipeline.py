"""The diarization pipeline, stage by stage (each stage is a module of this package):

windows.py (sliding windows, segmentation) -> activity.py (local speakers, overlap, solo frames)
-> embeddings.py (CAM++ per window and local speaker) -> clustering.py -> reconstruct.py
(global timeline) -> naming.py (names from an index) -> verify.py (with an index: each named
frame checked against 1 s chunk embeddings, made in the streaming pass).

Audio is streamed in blocks and processed window batch by window batch; only per-window
activity (589 x 3 booleans), its posteriors (8 KB) and one 192-d embedding per local speaker are
kept, plus (with an index) one 192-d embedding per second of speech, so memory grows by ~12 KB
per window (~20 MB for 2 hours at the default 5 s step), not with the audio.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import audio as audio_mod
from ..config import AudioOptions, EmbedOptions, VadOptions
from ..embedder import Embedder
from ..errors import ConfigError, TooShortError
from ..models.segmentation import Segmenter, ensure_segmentation_model
from ..progress import Progress, report
from .activity import FrameGrid, local_activity
from .clustering import Clusters, cluster
from .embeddings import LocalEmbeddings, embed_local_speakers
from .naming import anonymous, name_clusters, open_index
from .options import DiarizeOptions, check_speaker_counts
from .reconstruct import frame_activity, nobody_probability, piece_clusters, turns_of
from .timeline import Timeline, Turn
from .verify import ChunkEmbeddings, check_frames, embed_chunks
from .windows import Window, hard_activity, segment_windows, sliding_windows

if TYPE_CHECKING:
    from ..index import SpeakerIndex

__all__ = ["MIN_AUDIO_S", "Diarizer", "Scan", "diarize"]

log = logging.getLogger("speakerid")

SAMPLE_RATE_HZ = 16000
#: Shorter audio cannot be diarized (TooShortError).
MIN_AUDIO_S = 0.5
#: A quiet cluster is folded into a neighbour whose centroid cosine is at least the AHC threshold
#: minus this (measured: folding every quiet cluster lost real speakers who talk little). 0.08
#: rather than 0.05 folds a 3.4 s over-split of one voice (cosine 0.644 to it) in
#: tests/test_diarize.py's stereo conversation; on the synthetic sets it changes little (seed 0:
#: DER 19.0 % both, false names 11.54 % -> 11.56 %, exact count 78 % -> 77 %; seed 1: DER 17.4 %
#: and false names 10.8 % both), while 0.1 cost exact counts (73 % on seed 0).
FOLD_COSINE_MARGIN = 0.08
#: The encoder diarization embeds with.
MODEL = "campplus"

Source = str | os.PathLike | np.ndarray


@dataclass
class Scan:
    """What the streaming pass keeps: window starts, activities, embeddings, sample count."""

    starts: list[int]
    activities: list[np.ndarray]
    embeddings: LocalEmbeddings
    n_samples: int = 0
    name: str = ""
    warnings: list[str] = field(default_factory=list)
    #: Per window, the segmentation's powerset posteriors (frames, 7) float16.
    posteriors: list[np.ndarray] = field(default_factory=list)
    #: Embeddings of the chunks of speech the naming check uses (verify.py); None: not made.
    chunks: ChunkEmbeddings | None = None

    @property
    def duration_s(self) -> float:
        return self.n_samples / SAMPLE_RATE_HZ


class Diarizer:
    """The models of the pipeline, loaded once; call it like :func:`diarize`."""

    def __init__(self, options: DiarizeOptions | None = None) -> None:
        self.options = opts = options or DiarizeOptions()
        if not isinstance(opts, DiarizeOptions):
            raise ConfigError(f"options must be DiarizeOptions, got {type(opts).__name__}")
        self.segmenter = Segmenter(ensure_segmentation_model(), threads=opts.threads, batch_size=opts.batch_windows)
        self.embedder = Embedder(
            MODEL, vad=VadOptions(enabled=False, min_speech_ms=0.0), embed=EmbedOptions(threads=opts.threads)
        )
        self.window = int(round(opts.window_s * SAMPLE_RATE_HZ))
        self.step = int(round(opts.step_s * SAMPLE_RATE_HZ))
        self.grid = FrameGrid.for_window(self.window, SAMPLE_RATE_HZ)

    # -- the streaming pass ---------------------------------------------------------------

    def _blocks(self, source: Source, sample_rate_hz: int | None, warnings: list[str]) -> tuple[Iterator, float | None]:
        opts = AudioOptions(sample_rate_hz=SAMPLE_RATE_HZ, block_s=self.options.block_s)
        if isinstance(source, np.ndarray):
            if sample_rate_hz is None:
                raise ConfigError("sample_rate_hz is required when diarizing samples in memory")
            x = audio_mod.prepare(source, sample_rate_hz, opts)
            step = int(opts.block_s * SAMPLE_RATE_HZ)
            return (x[i : i + step] for i in range(0, len(x), step)), len(x) / SAMPLE_RATE_HZ
        try:
            expected = audio_mod.probe(source).duration_s
        except audio_mod.AudioError:
            expected = None  # iter_blocks raises the typed error
        return audio_mod.iter_blocks(source, opts, warnings), expected

    def _scan(self, blocks: Iterator, expected_s: float | None, progress: Progress | None,
              chunks: bool = True) -> Scan:
        scan = Scan([], [], LocalEmbeddings.empty())
        if chunks and self.options.check_chunk_s is not None:
            scan.chunks = ChunkEmbeddings(self.options.check_chunk_s, hop_s=self.options.check_hop_s)
        total = int(np.ceil(expected_s)) if expected_s else None

        def counted() -> Iterator[np.ndarray]:
            for b in blocks:
                scan.n_samples += len(b)
                yield b

        # the segmentation of the next batch of windows runs in a worker thread while the
        # current batch is embedded by ``workers`` threads (ONNX Runtime frees the GIL)
        workers = self.options.workers or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=1) as pool, ThreadPoolExecutor(max_workers=workers) as embed_pool, \
                ThreadPoolExecutor(max_workers=1) as side_pool:
            pending = None
            for batch in self._batches(counted()):
                future = pool.submit(segment_windows, batch, self.segmenter)
                if pending is not None:
                    self._process(*pending, scan, total, progress, embed_pool, workers, side_pool)
                pending = (batch, future)
            if pending is not None:
                self._process(*pending, scan, total, progress, embed_pool, workers, side_pool)
        done = int(np.ceil(scan.duration_s))
        report(progress, "diarizing", done, done, audio_s=scan.duration_s)  # the stage is finished
        return scan

    def _batches(self, blocks: Iterator[np.ndarray]) -> Iterator[list[Window]]:
        batch: list[Window] = []
        for w in sliding_windows(blocks, self.window, self.step):
            batch.append(w)
            if len(batch) == self.options.batch_windows:
                yield batch
                batch = []
        if batch:
            yield batch

    def _process(self, batch: list[Window], future: Future, scan: Scan, total: int | None,
                 progress: Progress | None, embed_pool: ThreadPoolExecutor, workers: int,
                 side_pool: ThreadPoolExecutor) -> None:
        posts = future.result()
        acts = [local_activity(a, w.valid, self.grid) for a, w in zip(hard_activity(posts), batch)]
        chunks = None
        if scan.chunks is not None:  # queued beside the local speakers' parts: no barrier between the two
            chunks = side_pool.submit(embed_chunks, batch, acts, self.embedder, self.grid, scan.chunks,
                                      SAMPLE_RATE_HZ, pool=embed_pool, workers=workers)
        embed_local_speakers(batch, acts, self.embedder, self.grid, self.options.min_embed_speech_s,
                             scan.embeddings, SAMPLE_RATE_HZ, pool=embed_pool, workers=workers,
                             piece_s=self.options.piece_s)
        if chunks is not None:
            chunks.result()
        for w, a, p in zip(batch, acts, posts):
            scan.starts.append(w.start)
            scan.activities.append(a.active)
            scan.posteriors.append(p)
        done_s = (batch[-1].start + batch[-1].valid) / SAMPLE_RATE_HZ
        report(progress, "diarizing", int(done_s) if total is None else min(int(done_s), total), total,
               audio_s=done_s)

    # -- after the pass ---------------------------------------------------------------------

    def _clusters(self, scan: Scan, counts: tuple[int | None, int, int | None]) -> tuple[dict, np.ndarray]:
        """(pieces of each window with their cluster, centroids)."""
        opts = self.options
        win, spk, vec, secs, clean = scan.embeddings.arrays(self.embedder.dim)
        use = clean if clean.any() else np.ones(len(win), bool)
        pick = np.flatnonzero(use)
        if len(pick) > opts.max_cluster_embeddings:  # bounded: a spread sample, the rest assigned
            pick = pick[np.linspace(0, len(pick) - 1, opts.max_cluster_embeddings).astype(np.int64)]
        num, lo, hi = counts
        labels = cluster(vec[pick], secs[pick], method=opts.clustering, lo=lo, hi=hi, fixed=num is not None,
                         threshold=opts.ahc_threshold, min_speech_s=opts.min_cluster_speech_s)
        centroids = Clusters(labels, vec[pick], secs[pick]).centroids
        assigned, _ = piece_clusters(win, spk, vec, centroids)
        first, end = scan.embeddings.spans()
        pieces: dict[int, list[tuple[int, int, int, int]]] = {}
        for w, j, f0, f1, c in zip(win.tolist(), spk.tolist(), first.tolist(), end.tolist(), assigned.tolist()):
            pieces.setdefault(w, []).append((j, f0, f1, c))
        return pieces, centroids

    def scan(self, source: Source, *, sample_rate_hz: int | None = None,
             progress: Progress | None = None, chunks: bool = True) -> Scan:
        """The streaming pass (segmentation and embeddings): everything that does not depend
        on the speaker counts, the clustering or the index. :meth:`finish` completes it.
        ``chunks``: also embed the chunks the naming check needs (verify.py; only used when
        naming from an index, so :meth:`__call__` skips them without one)."""
        warnings: list[str] = []
        name = "<samples>" if isinstance(source, np.ndarray) else str(source)
        blocks, expected = self._blocks(source, sample_rate_hz, warnings)
        scan = self._scan(blocks, expected, progress, chunks)
        scan.name, scan.warnings = name, warnings
        if scan.duration_s < MIN_AUDIO_S:
            raise TooShortError(f"{name}: {scan.duration_s:.2f} s of audio; diarization needs at least {MIN_AUDIO_S} s")
        return scan

    def finish(self, scan: Scan, *, gallery: SpeakerIndex | None = None,
               counts: tuple[int | None, int, int | None] = (None, 1, None),
               progress: Progress | None = None) -> Timeline:
        """Clustering, reconstruction and naming of a :meth:`scan`."""
        warnings = list(scan.warnings)
        if not any(a.any() for a in scan.activities):
            warnings.append("no speech found")
            log.warning("%s: no speech found", scan.name)
            return Timeline((), scan.duration_s, tuple(warnings), scan.name)
        if len(scan.embeddings) == 0:
            warnings.append("too little speech to tell speakers apart: all of it is given to one speaker")
            pieces = {w: [(j, 0, len(a), 0) for j in range(a.shape[1])] for w, a in enumerate(scan.activities)}
            centroids = np.zeros((0, self.embedder.dim), np.float32)
        else:
            report(progress, "clustering", 0, 1)
            pieces, centroids = self._clusters(scan, counts)
            report(progress, "clustering", 1, 1)
        k = max(len(centroids), 1)
        active = self._activity(scan, pieces, k)
        if len(centroids) and counts[0] is None:
            active, centroids = self._fold_quiet(scan, pieces, active, centroids, max(counts[1], 1))
        runs = turns_of(active, self.grid, SAMPLE_RATE_HZ, scan.duration_s, self.options.merge_gap_s,
                        self.options.min_turn_s)
        nobody = None
        if gallery is not None and self.options.name_speech_threshold is not None and scan.posteriors:
            nobody = nobody_probability(np.asarray(scan.starts), scan.n_samples, self.grid, scan.posteriors,
                                        self.grid.frames)
        return self._named(runs, active, centroids, gallery, scan.duration_s, warnings, scan.name, scan.chunks,
                           nobody)

    def _fold_quiet(self, scan: Scan, pieces: dict, active: np.ndarray, centroids: np.ndarray,
                    lo: int) -> tuple[np.ndarray, np.ndarray]:
        """Fold a cluster that ends up with less than ``min_speaker_s`` in the timeline and whose
        centroid is within FOLD_COSINE_MARGIN of the AHC threshold from another one (an
        over-split voice) into that one, one at a time, keeping at least ``lo`` clusters."""
        step_s = self.grid.step / SAMPLE_RATE_HZ
        floor = self.options.ahc_threshold - FOLD_COSINE_MARGIN
        while len(centroids) > lo:
            speech = active.sum(axis=0) * step_s
            sim = centroids @ centroids.T
            np.fill_diagonal(sim, -np.inf)
            quiet = [c for c in np.argsort(speech, kind="stable")
                     if speech[c] < self.options.min_speaker_s and sim[c].max() >= floor]
            if not quiet:
                break
            c = int(quiet[0])
            target = int(np.argmax(sim[c]))
            new = {c: target - (target > c)}
            for w, rows in pieces.items():
                pieces[w] = [(j, f0, f1, new.get(x, x - (x > c))) for j, f0, f1, x in rows]
            centroids = np.delete(centroids, c, axis=0)
            active = self._activity(scan, pieces, len(centroids))
        return active, centroids

    def _activity(self, scan: Scan, pieces: dict, k: int) -> np.ndarray:
        return frame_activity(np.asarray(scan.starts), scan.activities, pieces, k, scan.n_samples, self.grid,
                              scan.posteriors, speech_threshold=self.options.speech_threshold,
                              overlap_ratio=self.options.overlap_ratio)

    def __call__(self, source: Source, *, index: str | os.PathLike | SpeakerIndex | None = None,
                 num_speakers: int | None = None, min_speakers: int | None = None,
                 max_speakers: int | None = None, progress: Progress | None = None,
                 sample_rate_hz: int | None = None) -> Timeline:
        counts = check_speaker_counts(num_speakers, min_speakers, max_speakers)
        gallery = self.open_index(index) if index is not None else None
        scan = self.scan(source, sample_rate_hz=sample_rate_hz, progress=progress, chunks=gallery is not None)
        return self.finish(scan, gallery=gallery, counts=counts, progress=progress)

    def open_index(self, index: str | os.PathLike | SpeakerIndex) -> SpeakerIndex:
        """``index`` opened (if a path) and checked to be of this pipeline's encoder."""
        return open_index(index, self.embedder.model, self.embedder.weights_sha256)

    def _named(self, runs: list[tuple[int, float, float]], active: np.ndarray, centroids: np.ndarray,
               gallery: SpeakerIndex | None, duration: float, warnings: list[str], name: str,
               chunks: ChunkEmbeddings | None = None, nobody: np.ndarray | None = None) -> Timeline:
        k = active.shape[1]
        first = {c: s for c, s, _ in sorted(runs, key=lambda r: r[1], reverse=True)}
        order = sorted(first, key=first.get)
        order += [c for c in range(k) if c not in first]
        solo = active & (active.sum(axis=1, keepdims=True) == 1)
        speech = solo.sum(axis=0) * self.grid.step / SAMPLE_RATE_HZ
        extra: dict[str, Any] = {"clusters": len(first)}
        if gallery is None or len(centroids) == 0:
            labels = anonymous(order, k, "speaker" if gallery is None else "unknown")
            known, scores = [False] * k, [None] * k
        else:
            nm = name_clusters(gallery, centroids, speech, order, margin=self.options.name_margin,
                               min_speech_s=self.options.min_name_speech_s)
            labels, known, scores = list(nm.labels), list(nm.known), list(nm.scores)
            extra["base_threshold"] = round(nm.base_threshold, 4)
            extra["thresholds"] = {labels[c]: round(t, 4) for c, t in enumerate(nm.thresholds)}
            if any(known) and ((chunks is not None and len(chunks)) or nobody is not None):
                # names are decided on the whole clusters; the check then takes them off the
                # frames where short embeddings disagree (and moves solo frames), see verify.py
                checked = check_frames(active, np.array(known), centroids, chunks, self.grid, SAMPLE_RATE_HZ,
                                       check_margin=self.options.check_margin,
                                       reassign_margin=self.options.reassign_margin, nobody=nobody,
                                       name_speech_threshold=self.options.name_speech_threshold)
                taken = sum(int(np.count_nonzero(active[:, c] & ~checked[:, c])) for c in range(k))
                extra["checked_s"] = round(taken * self.grid.step / SAMPLE_RATE_HZ, 2)
                runs = turns_of(checked, self.grid, SAMPLE_RATE_HZ, duration, self.options.merge_gap_s,
                                self.options.min_turn_s)
        turns = tuple(Turn(float(s), float(e), labels[c], bool(known[c]), None if scores[c] is None else float(scores[c]))
                      for c, s, e in runs)
        return Timeline(turns, duration, tuple(warnings), name, extra)


@functools.lru_cache(maxsize=2)
def _cached(options: DiarizeOptions) -> Diarizer:
    return Diarizer(options)


def diarize(source: Source, *, index: str | os.PathLike | SpeakerIndex | None = None,
            num_speakers: int | None = None, min_speakers: int | None = None, max_speakers: int | None = None,
            options: DiarizeOptions | None = None, progress: Progress | None = None,
            sample_rate_hz: int | None = None) -> Timeline:
    """Who spoke when in ``source`` (a path, or samples with ``sample_rate_hz``).

    The number of speakers is found automatically, fixed by ``num_speakers`` or bounded by
    ``min_speakers`` / ``max_speakers``. With ``index`` (a directory or an open SpeakerIndex of
    the same encoder, CAM++) clusters get enrolled names where they match, else ``unknown-N``;
    without it labels are ``speaker-N``. No speech gives an empty timeline with a warning;
    audio shorter than 0.5 s raises TooShortError; a bad file the audio errors
    (AudioDecodeError...); an index of another model ModelMismatchError. Progress goes through
    ``progress(stage, done, total, audio_s=...)``. Models are loaded once per process.
    """
    opts = options or DiarizeOptions()
    if not isinstance(opts, DiarizeOptions):
        raise ConfigError(f"options must be DiarizeOptions, got {type(opts).__name__}")
    check_speaker_counts(num_speakers, min_speakers, max_speakers)
    return _cached(opts)(source, index=index, num_speakers=num_speakers, min_speakers=min_speakers,
                         max_speakers=max_speakers, progress=progress, sample_rate_hz=sample_rate_hz)

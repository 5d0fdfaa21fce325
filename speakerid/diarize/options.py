"""Options of the diarization pipeline: one frozen dataclass, every field with its unit.

Loadable from yaml with :func:`speakerid.config.from_mapping` (unknown keys are an error)::

    from speakerid.config import from_mapping
    opts = from_mapping(DiarizeOptions, {"step_s": 2.5, "clustering": "ahc"})
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

#: Clustering methods :func:`speakerid.diarize.clustering.cluster` knows.
CLUSTERINGS = ("ahc", "spectral", "vbx")


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a number >= 0, got {value!r}")


@dataclass(frozen=True)
class DiarizeOptions:
    """How :func:`speakerid.diarize.diarize` cuts, embeds, clusters and names.

    Defaults were chosen on 20 development conversations of benchmarks/build_conversations.py
    (seed 1) and are reported on 60 others (seed 0) in benchmarks/results/diarize.md. Every
    default is in configs/diarize.yaml (``--config``).
    """

    #: Segmentation window (the model was trained on 10 s chunks).
    window_s: float = 10.0
    #: Hop between windows. Smaller is more accurate at window edges but costs
    #: ``window_s / step_s`` passes of the segmentation model and of the encoder over the audio.
    step_s: float = 5.0
    #: Windows sent to the segmentation model at once.
    batch_windows: int = 8
    #: A local speaker needs this much solo speech (talking alone) in a window for an embedding.
    min_embed_speech_s: float = 1.0
    #: None: one embedding per (window, local speaker). A number: a local speaker is cut at its
    #: pauses into pieces of at least this much solo speech, each embedded and clustered on its
    #: own (the model sometimes tracks two alternating voices as one local speaker).
    piece_s: float | None = 1.5
    #: Clustering across windows: "ahc" (centroid linkage on cosine), "spectral", "vbx".
    clustering: str = "ahc"
    #: AHC stops merging when the closest clusters' centroids have a cosine below this.
    ahc_threshold: float = 0.7
    #: Clusters holding less embedded speech than this are folded into the nearest big one
    #: (unless a fixed or minimum speaker count needs them).
    min_cluster_speech_s: float = 4.0
    #: After reconstruction, a speaker with less speech than this in the timeline and a centroid
    #: close to another one's is folded into it (an over-split voice), unless the count is fixed
    #: or at its minimum (pipeline.FOLD_COSINE_MARGIN).
    min_speaker_s: float = 4.0
    #: Embeddings clustered at most; beyond it, a spread sample is clustered and the rest are
    #: assigned to the nearest centroid (keeps memory and time bounded on long input).
    max_cluster_embeddings: int = 1000
    #: Reconstruction: a frame is speech when the windows' mean probability of nobody talking
    #: is below this, and an overlap when ``overlap_ratio`` x P(two) exceeds P(one), see
    #: reconstruct.py. The model marks more speech than a tight VAD reference does. Chosen on the
    #: 20 development conversations (seed 1), DER at collar 0 / false names / named accuracy:
    #: speech_threshold 0.5 (overlap 1.0, the hard rule's equivalent) 19.0 / 14.7 / 94.3 %; with
    #: overlap 0.6: 0.4 17.9 / 13.0 / 93.6 %, 0.3 17.5 / 12.1 / 92.6 %, 0.2 17.3 / 11.0 / 91.3 %;
    #: at 0.3, overlap_ratio 1.0 / 0.6 / 0.45: DER 17.7 / 17.5 / 17.5 %, false names 12.6 / 12.1 /
    #: 11.9 %; at 0.2 / 0.45: 17.4 / 10.8 / 91.3 % (0.15: 17.5 / 10.3 / 90.4 %; 0.1: 18.2 / 9.7 /
    #: 88.9 %; overlap 0.3: 17.6 / 10.4 / 91.3 %). On the 60 of seed 0: 19.0 / 11.5 / 89.3 %.
    speech_threshold: float = 0.2
    overlap_ratio: float = 0.45
    #: Turns shorter than this are dropped; gaps shorter than ``merge_gap_s`` within one
    #: speaker's speech are filled.
    min_turn_s: float = 0.1
    merge_gap_s: float = 0.3
    #: Naming check (verify.py): with an index, the audio is also embedded in back-to-back
    #: chunks of this length (None: no check), and each frame's speaker is checked against them.
    #: Chosen on the 20 development conversations (seed 1), chunks of 1 s; DER at collar 0 /
    #: named accuracy / false names (strict): no check 17.4 / 91.3 / 10.8 %. Against the
    #: clusters' centroids (before chunk centroids): check_margin 0.0 / 0.1 / 0.2 without moves
    #: 20.2 / 90.8 / 5.6 %, 22.9 / 89.1 / 4.0 %, 29.0 / 83.4 / 3.0 %; moves alone (reassign 0.1)
    #: 15.8 / 93.4 / 9.1 %. With chunk centroids and name_speech_threshold 0.1, (check, moves):
    #: (0.05, 0.2) 20.8 / 89.3 / 3.5 %, (0.07, 0.2) 21.6 / 89.0 / 3.2 %, (0.1, 0.2) 22.9 / 88.1 /
    #: 2.8 %, (0.1, 0.3) 23.4 / 87.4 / 2.7 %; name_speech_threshold 0.07 at (0.1, 0.2): 23.5 /
    #: 86.9 / 2.4 %. (0.1, 0.2, 0.1) is the setting with false names under 3 % that keeps the
    #: most DER and named-accuracy room (the seed-0 set scores ~1.6 points of DER and ~2 of
    #: named accuracy worse than the dev set without the check).
    check_chunk_s: float | None = 1.0
    #: Start-to-start distance of those chunks (None: back to back, ``check_chunk_s``). A 1.5 s
    #: hop would cost a third fewer chunk embeddings, but on the dev set it gave DER 24.6 %,
    #: named accuracy 86.2 %, false names 3.5 % (back to back: 22.9 / 88.1 / 2.8 %).
    check_hop_s: float | None = None
    #: A named speaker keeps a frame only where the chunk embeddings there are closer to its
    #: chunk centroid than to every other cluster's not talking then, by this cosine (None: no
    #: check).
    check_margin: float | None = 0.1
    #: A frame with one speaker moves to another cluster (not talking then) whose chunk cosine
    #: beats its own by this much (None: never).
    reassign_margin: float | None = 0.2
    #: With an index, a named speaker also keeps only the frames where the windows' probability
    #: that nobody talks is below this (stricter than ``speech_threshold``, which decides speech
    #: for the diarization: a name needs confident speech; None: no such check). On the dev set
    #: at (check, moves) (0.1, 0.2): none 21.7 / 91.2 / 4.1 % (moves 0.1), 0.1 22.9 / 88.1 / 2.8 %.
    name_speech_threshold: float | None = 0.1
    #: Naming: a cluster needs at least this cosine with an enrolled speaker beyond the index's
    #: threshold, lowered (never below the threshold) as its speech grows, see naming.py.
    name_margin: float = 0.05
    #: Clusters with less speech than this are never named (their centroid is unreliable).
    min_name_speech_s: float = 2.0
    #: ONNX Runtime intra-op threads of each model session (None: all cores). The pipeline
    #: runs the segmentation and ``workers`` embedding threads side by side, so 1 is best.
    threads: int | None = 1
    #: Threads embedding at once (None: one per core).
    workers: int | None = None
    #: Audio decoding block (bounded memory on long files).
    block_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("window_s", "step_s", "min_embed_speech_s", "block_s"):
            _positive(name, getattr(self, name))
        if self.piece_s is not None:
            _positive("piece_s", self.piece_s)
        if self.check_chunk_s is not None:
            _positive("check_chunk_s", self.check_chunk_s)
            if self.check_chunk_s < 0.5 or self.check_chunk_s > self.window_s:
                raise ConfigError(f"check_chunk_s must be within [0.5 s, window_s], got {self.check_chunk_s}")
        if self.name_speech_threshold is not None and not 0.0 < self.name_speech_threshold <= 1.0:
            raise ConfigError(f"name_speech_threshold must be None or a probability in (0, 1], "
                              f"got {self.name_speech_threshold}")
        if self.check_hop_s is not None:
            _positive("check_hop_s", self.check_hop_s)
            if self.check_hop_s > 2 * (self.check_chunk_s or 1.0) or self.check_hop_s > self.window_s - (self.check_chunk_s or 1.0):
                raise ConfigError(f"check_hop_s must be at most twice check_chunk_s and leave a chunk in a window, "
                                  f"got {self.check_hop_s}")
        for name in ("check_margin", "reassign_margin"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not -2.0 < v < 2.0):
                raise ConfigError(f"{name} must be None or a cosine margin in (-2, 2), got {v!r}")
        for name in ("min_speaker_s", "min_cluster_speech_s", "min_turn_s", "merge_gap_s", "name_margin",
                     "min_name_speech_s"):
            _non_negative(name, getattr(self, name))
        if self.window_s < 1.0 or self.window_s > 10.0:
            raise ConfigError(f"window_s must be within [1, 10] s (the model's training chunk), got {self.window_s}")
        if self.step_s > self.window_s:
            raise ConfigError(f"step_s ({self.step_s}) must not exceed window_s ({self.window_s})")
        if self.clustering not in CLUSTERINGS:
            raise ConfigError(f"clustering must be one of {', '.join(CLUSTERINGS)}, got {self.clustering!r}")
        if not 0.0 < self.speech_threshold <= 1.0:
            raise ConfigError(f"speech_threshold must be a probability in (0, 1], got {self.speech_threshold}")
        _non_negative("overlap_ratio", self.overlap_ratio)
        if not -1.0 < self.ahc_threshold < 1.0:
            raise ConfigError(f"ahc_threshold must be a cosine in (-1, 1), got {self.ahc_threshold}")
        for name, low in (("batch_windows", 1), ("max_cluster_embeddings", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.max_cluster_embeddings < 50:
            raise ConfigError(f"max_cluster_embeddings must be >= 50, got {self.max_cluster_embeddings}")
        for name in ("threads", "workers"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be None or an integer >= 1, got {v!r}")


def check_speaker_counts(
    num_speakers: int | None, min_speakers: int | None, max_speakers: int | None,
    names: tuple[str, str, str] = ("num_speakers", "min_speakers", "max_speakers"),
) -> tuple[int | None, int, int | None]:
    """Validated ``(num, min, max)``: counts are positive integers, min <= max, and a fixed
    count excludes bounds that contradict it. Returns min as 1 when not given. ``names`` are
    used in the messages (the CLI passes its flags)."""
    n_num, n_min, n_max = names
    for name, v in ((n_num, num_speakers), (n_min, min_speakers), (n_max, max_speakers)):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    lo = 1 if min_speakers is None else min_speakers
    if max_speakers is not None and lo > max_speakers:
        raise ConfigError(f"{n_min} ({lo}) is greater than {n_max} ({max_speakers})")
    if num_speakers is not None:
        if (min_speakers is not None and num_speakers < min_speakers) or (
            max_speakers is not None and num_speakers > max_speakers
        ):
            raise ConfigError(
                f"{n_num} ({num_speakers}) is outside {n_min}..{n_max} ({min_speakers}..{max_speakers})"
            )
        return num_speakers, num_speakers, num_speakers
    return None, lo, max_speakers

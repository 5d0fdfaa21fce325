"""The gallery's speakers: running per-speaker statistics (:class:`Roster`) and the arrays that
scoring works on (:class:`SpeakerMaps`), both owned by :class:`speakerid.index.SpeakerIndex`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .storage import SPEAKERS_SCHEMA

__all__ = ["Roster", "SpeakerMaps"]


class Roster:
    """Clip count, speech seconds and the sum of the unit clip vectors of every speaker.

    The sum's direction is the speaker's centroid; its length over the count (``mean_norm``)
    is stored too, so that a centroid read back from disk gives the same sum.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._sums: dict[str, np.ndarray] = {}
        self._n_clips: dict[str, int] = {}
        self._speech: dict[str, float] = {}

    @classmethod
    def from_table(cls, table: pa.Table, dim: int) -> Roster:
        """The roster a speakers.parquet table holds (checked by the storage beforehand)."""
        self = cls(dim)
        c = table["centroid"].combine_chunks().flatten().to_numpy().astype(np.float64).reshape(-1, dim)
        for i, (s, n, sp, mn) in enumerate(
            zip(
                table["speaker"].to_pylist(),
                table["n_clips"].to_pylist(),
                table["speech_s"].to_pylist(),
                table["mean_norm"].to_pylist(),
                strict=True,
            )
        ):
            self._sums[s], self._n_clips[s], self._speech[s] = c[i] * mn * n, n, sp
        return self

    def __len__(self) -> int:
        return len(self._n_clips)

    def __contains__(self, name: object) -> bool:
        return name in self._n_clips

    def names(self) -> list[str]:
        return sorted(self._n_clips)

    def add(self, speakers: Sequence[str], vectors: np.ndarray, speech_s: np.ndarray) -> None:
        """Count clips ``vectors`` (unit rows) of ``speakers``."""
        for i, s in enumerate(speakers):
            if s not in self._sums:
                self._sums[s], self._n_clips[s], self._speech[s] = np.zeros(self.dim), 0, 0.0
            self._sums[s] += vectors[i]
            self._n_clips[s] += 1
            self._speech[s] += float(speech_s[i])

    def remove(self, name: str) -> None:
        del self._sums[name], self._n_clips[name], self._speech[name]

    def centroids(self) -> tuple[list[str], np.ndarray]:
        """(sorted names, (s, dim) float32 matrix of L2-normalised mean clip vectors)."""
        names = self.names()
        if not names:
            return names, np.zeros((0, self.dim), np.float32)
        m = np.stack([self._sums[s] for s in names])
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        return names, (m / np.maximum(norms, 1e-12)).astype(np.float32)

    def table(self) -> pa.Table:
        """The speakers.parquet table of this roster."""
        names, cent = self.centroids()
        mean_norm = [float(np.linalg.norm(self._sums[s]) / self._n_clips[s]) for s in names]
        centroid = pa.ListArray.from_arrays(
            np.arange(len(names) + 1, dtype=np.int32) * self.dim, pa.array(cent.reshape(-1), pa.float32())
        )
        return pa.table(
            {
                "speaker": names,
                "n_clips": [self._n_clips[s] for s in names],
                "speech_s": [self._speech[s] for s in names],
                "centroid": centroid,
                "mean_norm": mean_norm,
            },
            schema=SPEAKERS_SCHEMA,
        )


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class SpeakerMaps:
    """One state of the gallery as arrays: speaker ordinals (positions in the sorted names) of
    the stored clip ids, clip counts and centroids. Read-only; the index makes a new one after
    every change (:meth:`speakerid.index.SpeakerIndex.speaker_maps`)."""

    #: Enrolled names, sorted: a speaker's ordinal is its position here.
    names: tuple[str, ...]
    #: Ordinal of each name.
    ordinal: dict[str, int]
    #: Clip ids, ascending, and the ordinal of each one's speaker.
    ids: np.ndarray
    owners: np.ndarray
    #: Clips per speaker, by ordinal.
    n_clips: np.ndarray
    #: (speakers, dim) float32 L2-normalised mean clip vectors, by ordinal.
    centroids: np.ndarray

    @classmethod
    def build(cls, utterances: pa.Table, names: list[str], centroids: np.ndarray) -> SpeakerMaps:
        ids = utterances["id"].to_numpy().astype(np.int64)
        ordinal = pc.index_in(utterances["speaker"], value_set=pa.array(names, pa.string()))
        spk = ordinal.to_numpy(zero_copy_only=False).astype(np.int64)
        order = np.argsort(ids)
        return cls(
            names=tuple(names),
            ordinal={s: i for i, s in enumerate(names)},
            ids=_frozen(ids[order]),
            owners=_frozen(spk[order]),
            n_clips=_frozen(np.bincount(spk, minlength=len(names)).astype(np.int64)),
            centroids=_frozen(np.ascontiguousarray(centroids, dtype=np.float32)),
        )

    def speaker_of(self, ids: np.ndarray) -> np.ndarray:
        """Speaker ordinal of each clip id (-1 for unknown ids, e.g. the -1 padding of
        approximate search)."""
        if len(self.ids) == 0:
            return np.full(np.shape(ids), -1, np.int64)
        pos = np.searchsorted(self.ids, ids)
        pos = np.minimum(pos, len(self.ids) - 1)
        return np.where((ids >= 0) & (self.ids[pos] == ids), self.owners[pos], -1)

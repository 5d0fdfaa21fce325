"""Enrol a speaker found by diarization: their solo turns become enrolment clips."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import audio as audio_mod
from ..config import AudioOptions
from ..errors import ConfigError
from .timeline import Timeline

__all__ = ["enroll_from_timeline", "solo_clips"]

SAMPLE_RATE_HZ = 16000
#: Solo pieces shorter than this are not used (their edges are the least reliable).
MIN_PIECE_S = 0.5
#: Pieces are joined into clips of up to this length; shorter clips than MIN_CLIP_S are dropped.
MAX_CLIP_S = 20.0
MIN_CLIP_S = 1.5
_SAFE = re.compile(r"[^\w.-]+")


def _groups(pieces: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    groups: list[list[tuple[float, float]]] = []
    length = 0.0
    for s, e in sorted(pieces):
        if e - s < MIN_PIECE_S:
            continue
        if not groups or length + (e - s) > MAX_CLIP_S:
            groups.append([])
            length = 0.0
        groups[-1].append((s, e))
        length += e - s
    return [g for g in groups if sum(e - s for s, e in g) >= MIN_CLIP_S]


def solo_clips(timeline: Timeline, label: str, audio_path: str | os.PathLike[str]) -> list[np.ndarray]:
    """16 kHz clips of ``label``'s solo speech (nobody else talking) in ``audio_path``, read in
    blocks (memory bounded by the clips, not the recording)."""
    if label not in timeline.labels():
        raise ConfigError(f"no speaker {label!r} in the timeline (speakers: {', '.join(timeline.labels()) or 'none'})")
    groups = _groups(timeline.solo_turns(label))
    if not groups:
        raise ConfigError(f"speaker {label!r} has no solo turn of at least {MIN_PIECE_S} s to enrol from")
    wanted = [(int(s * SAMPLE_RATE_HZ), int(e * SAMPLE_RATE_HZ), gi) for gi, g in enumerate(groups) for s, e in g]
    parts: list[list[np.ndarray]] = [[] for _ in groups]
    pos = 0
    for block in audio_mod.iter_blocks(audio_path, AudioOptions(sample_rate_hz=SAMPLE_RATE_HZ)):
        end = pos + len(block)
        for s, e, gi in wanted:
            if s < end and e > pos:
                parts[gi].append(block[max(s - pos, 0) : min(e - pos, len(block))])
        pos = end
    clips = [np.concatenate(p) for p in parts if p]
    return [c for c in clips if len(c) >= MIN_CLIP_S * SAMPLE_RATE_HZ]


def enroll_from_timeline(
    index_dir: str | os.PathLike[str], timeline: Timeline, label: str, name: str,
    audio_path: str | os.PathLike[str], *, clips_dir: str | os.PathLike[str] | None = None, **add_kwargs,
):
    """Enrol ``label``'s solo speech in ``audio_path`` (the recording ``timeline`` was made
    from) as speaker ``name`` of the index at ``index_dir``; returns the indexer's BuildReport.

    Solo turns of at least 0.5 s are joined into clips of up to 20 s, written as 16 kHz WAV
    files into ``clips_dir`` (kept, so the paths the index records stay valid) or a temporary
    folder removed afterwards, then added with :func:`speakerid.indexer.add_files` (which
    skips clips already indexed; ``add_kwargs`` go to it: ``workers``, ``progress``...).
    """
    import soundfile as sf

    from ..corpus import Item
    from ..indexer import add_files

    if not isinstance(name, str) or not name.strip():
        raise ConfigError("the speaker name to enrol is empty")
    clips = solo_clips(timeline, label, audio_path)
    if not clips:
        raise ConfigError(f"speaker {label!r} has too little solo speech to enrol (clips of {MIN_CLIP_S} s needed)")
    temp = clips_dir is None
    out = Path(tempfile.mkdtemp(prefix="speakerid-enrol-")) if temp else Path(clips_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        stem = _SAFE.sub("_", Path(audio_path).stem) or "audio"
        tag = _SAFE.sub("_", label)
        items = []
        for i, clip in enumerate(clips, 1):
            p = out / f"{stem}.{tag}.{i:03d}.wav"
            sf.write(p, clip, SAMPLE_RATE_HZ, subtype="PCM_16")
            items.append(Item(p, name))
        return add_files(index_dir, items, **add_kwargs)
    finally:
        if temp:
            shutil.rmtree(out, ignore_errors=True)

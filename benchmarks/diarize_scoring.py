"""Scoring of diarization for the benchmarks: DER / JER (pyannote.metrics), named accuracy and
false-name rate (on a 10 ms grid).

* DER and JER: pyannote.metrics' DiarizationErrorRate / JaccardErrorRate, overlap scored
  (``skip_overlap=False``), optimal one-to-one mapping of hypothesis to reference labels.
  ``collar`` is pyannote's: the total width removed around each reference boundary, so
  ``collar=0.5`` is the NIST "0.25 s collar" (md-eval ``-c 0.25``, +-0.25 s).
* Named accuracy: the share of the enrolled speakers' solo speech time (one reference speaker
  talking, and enrolled) in which the hypothesis gives that speaker's name.
* False-name rate: the time the hypothesis gives an enrolled name while that person is not
  speaking (unenrolled speakers' speech and silence included), over all the time it gives names.
  Both are reported strict (every 10 ms frame) and with the frames within 0.25 s of a reference
  boundary left out, as the DER collar does.
* False-name causes (:func:`false_name_causes`): where that false time lies. "near" is within
  0.25 s of a reference boundary (of any speaker); "silence" nobody talks; "other speaker"
  someone else talks, split by whether the hypothesis has an overlap there; "wrong identity"
  the name is of someone absent from the conversation.
"""

from __future__ import annotations

import numpy as np

from speakerid.diarize import Timeline

GRID_S = 0.01


def _annotation(tl: Timeline, uri: str):
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri=uri)
    for i, t in enumerate(tl.turns):
        if t.end_s > t.start_s:
            ann[Segment(t.start_s, t.end_s), i] = t.speaker
    return ann


def der_jer(ref: Timeline, hyp: Timeline, collar: float, uri: str = "x") -> dict:
    from pyannote.core import Segment
    from pyannote.core import Timeline as PTimeline
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    r, h = _annotation(ref, uri), _annotation(hyp, uri)
    end = max(ref.duration_s, hyp.duration_s, max((t.end_s for t in ref.turns), default=0.0))
    uem = PTimeline([Segment(0, end)])
    der = DiarizationErrorRate(collar=collar, skip_overlap=False)
    d = der(r, h, uem=uem, detailed=True)
    jer = JaccardErrorRate(collar=collar, skip_overlap=False)(r, h, uem=uem)
    total = d["total"] or 1.0
    return {"der": float(d["diarization error rate"]), "jer": float(jer),
            "miss": d["missed detection"] / total, "false_alarm": d["false alarm"] / total,
            "confusion": d["confusion"] / total, "speech_s": float(d["total"])}


def _grid(tl: Timeline, n: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for t in tl.turns:
        m = out.setdefault(t.speaker, np.zeros(n, bool))
        m[int(round(t.start_s / GRID_S)) : int(round(t.end_s / GRID_S))] = True
    return out


def _collar_mask(ref: Timeline, n: int, collar_s: float) -> np.ndarray:
    """Frames farther than ``collar_s`` from every reference boundary."""
    keep = np.ones(n, bool)
    c = int(round(collar_s / GRID_S))
    for t in ref.turns:
        for b in (t.start_s, t.end_s):
            i = int(round(b / GRID_S))
            keep[max(i - c, 0) : i + c] = False
    return keep


def naming(ref: Timeline, hyp: Timeline, enrolled: set[str], duration_s: float, collar_s: float = 0.0) -> dict:
    """Seconds behind named accuracy and false-name rate (sum them over files, then divide).
    ``collar_s`` > 0 leaves out the frames within that distance of a reference boundary."""
    n = int(np.ceil(duration_s / GRID_S)) + 1
    r, h = _grid(ref, n), _grid(hyp, n)
    if collar_s > 0:
        keep = _collar_mask(ref, n, collar_s)
        r = {k: m & keep for k, m in r.items()}
        h = {k: m & keep for k, m in h.items()}
    talking = np.sum([m for m in r.values()], axis=0) if r else np.zeros(n, int)
    solo_total = solo_named = 0
    for spk, m in r.items():
        if spk not in enrolled:
            continue
        solo = m & (talking == 1)
        solo_total += solo.sum()
        if spk in h:
            solo_named += (solo & h[spk]).sum()
    named_time = false_time = 0
    known = {t.speaker for t in hyp.turns if t.known}
    for spk in known:
        m = h[spk]
        named_time += m.sum()
        false_time += (m & ~r.get(spk, np.zeros(n, bool))).sum()
    return {"solo_s": solo_total * GRID_S, "solo_named_s": solo_named * GRID_S,
            "named_s": named_time * GRID_S, "false_named_s": false_time * GRID_S}


CAUSES = ("silence, near a boundary", "silence, elsewhere", "other speaker, near a boundary",
          "other speaker, in a hypothesis overlap", "other speaker, elsewhere", "wrong identity")


def false_name_causes(ref: Timeline, hyp: Timeline, present: set[str], duration_s: float,
                      near_s: float = 0.25) -> dict[str, float]:
    """Seconds of false-name time (as :func:`naming`, strict) by cause, see the module notes."""
    n = int(np.ceil(duration_s / GRID_S)) + 1
    r, h = _grid(ref, n), _grid(hyp, n)
    talking = np.sum([m for m in r.values()], axis=0) if r else np.zeros(n, int)
    near = ~_collar_mask(ref, n, near_s)
    hyp_count = np.sum([m for m in h.values()], axis=0) if h else np.zeros(n, int)
    out = dict.fromkeys(CAUSES, 0.0)
    for spk in {t.speaker for t in hyp.turns if t.known}:
        bad = h[spk] & ~r.get(spk, np.zeros(n, bool))
        silent, other = bad & (talking == 0), bad & (talking > 0)
        out["silence, near a boundary"] += (silent & near).sum() * GRID_S
        out["silence, elsewhere"] += (silent & ~near).sum() * GRID_S
        if spk not in present:
            out["wrong identity"] += other.sum() * GRID_S
            continue
        out["other speaker, near a boundary"] += (other & near).sum() * GRID_S
        out["other speaker, in a hypothesis overlap"] += (other & ~near & (hyp_count >= 2)).sum() * GRID_S
        out["other speaker, elsewhere"] += (other & ~near & (hyp_count < 2)).sum() * GRID_S
    return out

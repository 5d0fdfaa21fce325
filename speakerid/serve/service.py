"""The gallery service behind the routes: the model, the embedding pool, the one writer.

* Reads (verify, identify) embed in a pool of ``workers_n`` threads behind a :class:`Gate`, off
  the event loop, and search the *snapshot*: a read-only :class:`SpeakerIndex` of the last
  committed version.
* Writes (enrolment, delete) run one at a time in a single writer thread, through
  :func:`speakerid.indexer.add_files` / :func:`remove_speaker`, which take the index's writer
  lock (so a CLI build in another process is waited for, then answered with INDEX_BUSY) and
  save atomically with fsync *before* they return. Only then is the snapshot reloaded and the
  response sent: an enrolment answered 200 is on disk and survives kill -9, and the next
  identify sees it. Identify keeps answering from the previous snapshot while a write runs.
* Every enrolment and deletion is logged as one JSON line on ``speakerid.audit``.
"""

from __future__ import annotations

import json
import logging
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

import numpy as np

from .. import __version__
from ..config import AudioOptions, EmbedOptions, check_threshold
from ..embedder import Embedder, Embedding, cosine
from ..errors import IndexNotFoundError, ModelMismatchError, SpeakeridError
from ..identify import DEFAULT_SCORE_NORM, DURATION_AWARE_DEFAULT, identify
from ..index import SpeakerIndex
from ..indexer import Item, add_files, remove_speaker
from ..models.registry import DEFAULT_MODEL
from .auth import Principal
from .errors import ApiError, api_error
from .gate import Gate
from .options import ServeOptions
from .uploads import Spool, Upload, check_clip, min_clip_s

__all__ = ["GalleryService", "check_name"]

log = logging.getLogger("speakerid.serve")
audit = logging.getLogger("speakerid.audit")
T = TypeVar("T")
Source = tuple[str | None, BinaryIO]

#: Bidirectional controls: they make a name display as another (U+202E "RIGHT-TO-LEFT OVERRIDE").
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}


def check_name(name: str, max_chars: int) -> str:
    """A speaker name as stored: NFC-normalised; refused (VALIDATION_ERROR) when empty, too long,
    padded with spaces, holding control characters, or not addressable as one URL path segment
    ("/", "." and ".."). Names are data, never file names: anything else is accepted."""
    n = unicodedata.normalize("NFC", name)
    why = None
    if not n.strip():
        why = "is empty"
    elif len(n) > max_chars:
        why = f"is longer than {max_chars} characters"
    elif n != n.strip():
        why = "starts or ends with white space"
    elif any(unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") or c in _BIDI for c in n):
        why = "holds control characters"
    elif "/" in n or n in (".", ".."):
        why = "cannot be one segment of a URL path ('/', '.' or '..')"
    if why is not None:
        raise ApiError("VALIDATION_ERROR", f"the speaker name {why}")
    return n


@dataclass
class _Stats:
    """Per-speaker counts of one snapshot (computed once per snapshot, on first use)."""

    clips: dict[str, int] = field(default_factory=dict)
    speech_s: dict[str, float] = field(default_factory=dict)
    first_at: dict[str, str] = field(default_factory=dict)
    last_at: dict[str, str] = field(default_factory=dict)
    #: clip content sha256 -> (speaker, speech seconds)
    owner: dict[str, tuple[str, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, ix: SpeakerIndex | None) -> _Stats:
        st = cls()
        if ix is None:
            return st
        utt = ix.utterances()
        cols = [utt[c].to_pylist() for c in ("speaker", "sha256", "speech_s", "added_at")]
        for spk, sha, sp, at in zip(*cols):
            st.clips[spk] = st.clips.get(spk, 0) + 1
            st.speech_s[spk] = st.speech_s.get(spk, 0.0) + sp
            stamp = at.isoformat() if at is not None else ""
            st.first_at[spk] = min(st.first_at.get(spk, stamp), stamp)
            st.last_at[spk] = max(st.last_at.get(spk, stamp), stamp)
            st.owner[sha] = (spk, sp)
        return st


class GalleryService:
    def __init__(self, options: ServeOptions) -> None:
        self.options = o = options
        self.index_dir = o.index_dir
        self._snapshot = self._open_snapshot(verify=True)
        self._stats: tuple[SpeakerIndex | None, _Stats] | None = None
        snap = self._snapshot
        model = snap.spec.model if snap is not None else (o.model or DEFAULT_MODEL)
        # decoding stops a little past the limit even when a header under-reports the length
        self.embedder = Embedder(model, audio=AudioOptions(max_duration_s=o.max_audio_s + 1.0),
                                 embed=EmbedOptions(threads=1))
        if snap is not None and (self.embedder.weights_sha256, self.embedder.dim) != (snap.spec.weights_sha256, snap.dim):
            raise ModelMismatchError(f"the index at {self.index_dir} was built with other {model} weights "
                                     "than the cached model; rebuild the index")
        self.min_speech_s = min_clip_s(self.embedder.vad_options)
        self.spool = Spool()
        self._pool = ThreadPoolExecutor(o.workers_n, thread_name_prefix="speakerid-embed")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="speakerid-writer")
        self.embed_gate = Gate(o.workers_n, o.max_queue_n, o.queue_timeout_s, "SERVER_BUSY", "the embedding pool")
        self.write_gate = Gate(1, o.write_queue_n, o.write_timeout_s, "INDEX_BUSY", "the index writer")
        self.started_at = time.time()
        #: Library messages name the index directory: clients see "the index" instead.
        self._hide: dict[str, str] = {}
        for d in dict.fromkeys((str(self.index_dir.resolve()), str(self.index_dir))):
            self._hide.update({f"the index at {d}": "the index", f"index at {d}": "the index", f"{d}": "the index"})

    # -- snapshots ---------------------------------------------------------------------------

    def _open_snapshot(self, verify: bool) -> SpeakerIndex | None:
        try:
            ix = SpeakerIndex.open(self.index_dir, verify=verify)
        except IndexNotFoundError:
            return None
        if len(ix):  # build identify's per-index cache now, not in the next request
            identify(ix, np.ones(ix.dim, np.float32), 1, threshold=0.0)
        return ix

    def _reload(self) -> None:
        """After a committed write (writer thread): the new version becomes what reads see."""
        self._snapshot = self._open_snapshot(verify=False)  # files this process just wrote and fsynced

    @property
    def snapshot(self) -> SpeakerIndex | None:
        """The read-only index of the last committed version (None before the first enrolment)."""
        return self._snapshot

    def stats(self) -> _Stats:
        """Per-speaker counts of the current snapshot (made once per snapshot, by whichever
        thread asks first; a reload meanwhile never gets the older snapshot's counts)."""
        snap, cached = self._snapshot, self._stats
        if cached is not None and cached[0] is snap:
            return cached[1]
        st = _Stats.of(snap)
        self._stats = (snap, st)
        return st

    # -- running work ------------------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.embed_gate.run(self._pool, fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.write_gate.run(self._writer, fn, *args)

    def refuse_new(self) -> None:
        """Shutdown, first step (on the event loop): what waits for a slot gets 503 SHUTTING_DOWN."""
        self.embed_gate.close()
        self.write_gate.close()

    def close(self) -> None:
        """Shutdown, last step (any thread): what runs finishes (a write in flight is saved), then
        the threads and the spool go. Idempotent."""
        self._writer.shutdown(wait=True)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.spool.close()

    # -- reads (pool threads) ----------------------------------------------------------------

    def _embed(self, up: Upload) -> Embedding:
        check_clip(up, min_speech_s=self.min_speech_s, max_audio_s=self.options.max_audio_s)
        try:
            return self.embedder.embed_detailed(up.path)
        except SpeakeridError as exc:
            raise api_error(exc, up.scrub()) from None

    def embed_one(self, source: Source, index: int = 0) -> tuple[Embedding, str]:
        """(embedding, its label) of one upload; the temporary file is gone when this returns."""
        with self.spool.files([source]) as ups:
            up = ups[0]
            if index:
                up = Upload(index, up.filename, up.path, up.size_bytes, up.sha256)
            return self._embed(up), up.label

    def identify_one(self, source: Source, k: int, threshold: float | None, check_speakers: bool = False,
                     score_norm: str | None = None) -> dict[str, Any]:
        from .diarize import embed_and_count

        ix = self._snapshot
        emb, flags = embed_and_count(self, source, check_speakers and ix is not None and len(ix) > 0)
        if ix is None or len(ix) == 0:
            raise ApiError("EMPTY_GALLERY", "no speaker is enrolled yet")
        try:
            res = identify(ix, emb.vector, k, threshold, score_norm=score_norm or DEFAULT_SCORE_NORM,
                           query_speech_s=emb.speech_s if DURATION_AWARE_DEFAULT else None)[0]
        except SpeakeridError as exc:
            raise api_error(exc, self._hide) from None
        return {
            "speaker": res.speaker, "verdict": res.speaker if res.accepted else "unknown",
            "accepted": res.accepted, "score": None if res.best is None else res.best.score,
            "threshold": res.threshold, "threshold_method": res.threshold_method, "scoring": res.scoring,
            "score_norm": res.score_norm, "norm_score": None if res.best is None else res.best.norm_score,
            "matches": [{"speaker": m.speaker, "score": m.score, "rank": m.rank, "norm_score": m.norm_score}
                        for m in res.matches],
            "model": emb.model, "duration_s": round(emb.duration_s, 3), "speech_s": round(emb.speech_s, 3),
            "index_version": ix.version, **flags,
        }

    def verdict(self, a: Embedding, b: Embedding, threshold: float | None) -> dict[str, Any]:
        thr = self.embedder.default_threshold if threshold is None else check_threshold(threshold)
        score = cosine(a.vector, b.vector)
        return {"score": score, "threshold": thr, "match": score >= thr,
                "threshold_method": "argument" if threshold is not None else f"{self.embedder.model} default",
                "model": self.embedder.model, "duration_s": [round(a.duration_s, 3), round(b.duration_s, 3)],
                "speech_s": [round(a.speech_s, 3), round(b.speech_s, 3)]}

    def speakers(self) -> list[dict[str, Any]]:
        st = self.stats()
        return [{"name": s, "clips": st.clips[s], "speech_s": round(st.speech_s[s], 3)} for s in sorted(st.clips)]

    def speaker(self, name: str) -> dict[str, Any]:
        st = self.stats()
        if name not in st.clips:
            raise ApiError("UNKNOWN_SPEAKER", f"speaker {name!r} is not enrolled")
        return {"name": name, "clips": st.clips[name], "speech_s": round(st.speech_s[name], 3),
                "first_enrolled_at": st.first_at[name], "last_enrolled_at": st.last_at[name]}

    def info(self) -> dict[str, Any]:
        ix, o, e = self._snapshot, self.options, self.embedder
        i = ix.info() if ix is not None else {}
        return {
            "service": "speakerid", "version": __version__, "model": e.model, "dim": e.dim,
            "weights_sha256": e.weights_sha256, "speakers": i.get("speakers", 0), "clips": i.get("utterances", 0),
            "index_version": i.get("version", 0), "index_type": i.get("index_type"),
            "bytes_on_disk": i.get("bytes_on_disk", 0), "threshold": i.get("threshold"),
            "threshold_method": i.get("threshold_method"), "verification_threshold": e.default_threshold,
            "workers": o.workers_n, "auth": not o.no_auth,
            "limits": {"max_upload_bytes": o.max_upload_bytes, "max_audio_s": o.max_audio_s,
                       "min_speech_s": self.min_speech_s, "max_clips_n": o.max_clips_n, "max_k_n": o.max_k_n,
                       "max_name_chars_n": o.max_name_chars_n},
            "load": {"reads_running": self.embed_gate.busy, "reads_waiting": self.embed_gate.waiting,
                     "writes_running": self.write_gate.busy, "writes_waiting": self.write_gate.waiting},
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    # -- writes (the writer thread) ----------------------------------------------------------

    def enroll(self, name: str, sources: list[Source], who: Principal, request_id: str) -> dict[str, Any]:
        from .enrol import run_enrolment

        with self.spool.files(sources) as ups:
            try:
                result = run_enrolment(self, name, ups)
            except ApiError as exc:
                self._audit("enroll", who, request_id, speaker=name, clips=len(ups), outcome=exc.code)
                raise
        self._audit("enroll", who, request_id, speaker=name, clips=len(ups), outcome="ok",
                    accepted=result["clips_accepted"], sha256=result.pop("_accepted_sha256"))
        return result

    def add_items(self, items: list[Item]):
        """add_files with the loaded model; saved (fsynced) when it returns; then the reload."""
        try:
            return add_files(self.index_dir, items, embedder=self.embedder, workers=1,
                             wait_s=self.options.lock_wait_s)
        except SpeakeridError as exc:
            raise api_error(exc, {**self._hide, **{str(i.path): f"clip {n + 1}" for n, i in enumerate(items)}}) from None
        finally:
            self._reload()

    def delete(self, name: str, who: Principal, request_id: str) -> dict[str, Any]:
        try:
            n = remove_speaker(self.index_dir, name, wait_s=self.options.lock_wait_s)
        except IndexNotFoundError:
            exc = ApiError("UNKNOWN_SPEAKER", f"speaker {name!r} is not enrolled")
            self._audit("delete", who, request_id, speaker=name, outcome=exc.code)
            raise exc from None
        except SpeakeridError as exc:
            err = api_error(exc, self._hide, request_id=request_id)
            self._audit("delete", who, request_id, speaker=name, outcome=err.code)
            raise err from None
        self._reload()
        self._audit("delete", who, request_id, speaker=name, outcome="ok", clips_removed=n)
        snap = self._snapshot
        return {"name": name, "clips_removed": n, "speakers": len(snap.speakers()) if snap is not None else 0,
                "index_version": snap.version if snap is not None else 0}

    def _audit(self, event: str, who: Principal, request_id: str, **fields: Any) -> None:
        line = {"event": event, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "request_id": request_id, "key": who.name, "scope": who.scope, **fields}
        audit.info(json.dumps(line, ensure_ascii=False, sort_keys=True))

"""What the `speakerid serve` tests share: 3 s crops of real speech, a gallery built once, and
real server processes (``python -m speakerid serve`` on 127.0.0.1, a free port) that several
test files use, each started once per test run.

A server is a child process that dies with the test run (PR_SET_PDEATHSIG), so a crashed or
interrupted run never leaves one listening.
"""

from __future__ import annotations

import atexit
import csv
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SR = 16000
CROP_S = 3.0
#: Speakers enrolled in the shared gallery, and speakers kept out of it (unknown voices).
ENROLLED_N, UNKNOWN_N = 16, 4
_READY = re.compile(r"serving on (https?://\S+)")


def require_serve_extra() -> None:
    """Fail (never skip) without the serve extra and the test tools: the README's test command
    installs them."""
    missing = [m for m in ("fastapi", "uvicorn", "httpx", "schemathesis") if _missing(m)]
    if missing:
        pytest.fail(f"needs {', '.join(missing)}: pip install -e '.[test,serve]'")


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


# --- audio ---------------------------------------------------------------------------------


@dataclass
class Corpus:
    """3 s crops of librispeech-251: ``enrol[s]`` makes the gallery, ``query[s]`` another part of
    the same utterance, ``extra[s]`` a third one; ``unknown`` are speakers never enrolled."""

    root: Path
    enrol: dict[str, Path] = field(default_factory=dict)
    query: dict[str, Path] = field(default_factory=dict)
    extra: dict[str, Path] = field(default_factory=dict)
    unknown: dict[str, Path] = field(default_factory=dict)


def _speech_s(embedder, x: np.ndarray) -> float:
    from speakerid.errors import NoSpeechError

    try:
        return embedder.prepare(x, SR).speech_s
    except NoSpeechError:
        return 0.0


def write_wav(path: Path, x: np.ndarray) -> Path:
    import soundfile as sf

    sf.write(path, x, SR, subtype="PCM_16")
    return path


def make_corpus(librispeech: Path, out: Path, embedder) -> Corpus:
    """Crops whose speech (by the embedder's own VAD) is at least 2 s of the 3 s."""
    import soundfile as sf

    with open(librispeech / "speakers.csv", newline="") as f:
        rows = [r for r in sorted(csv.DictReader(f), key=lambda r: r["file"]) if float(r["duration_s"]) >= 12]
    c = Corpus(out)
    n = int(CROP_S * SR)
    for r in rows:
        x, sr = sf.read(librispeech / r["file"], dtype="float32")
        parts = [x[int(t * SR): int(t * SR) + n] for t in (0.5, 4.0, 8.0)]
        if sr != SR or any(_speech_s(embedder, p) < 2.0 for p in parts):
            continue
        name = f"ls-{r['speaker']}"
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        if len(c.enrol) < ENROLLED_N:
            c.enrol[name] = write_wav(d / "enrol.wav", parts[0])
            c.query[name] = write_wav(d / "query.wav", parts[1])
            c.extra[name] = write_wav(d / "extra.wav", parts[2])
        elif len(c.unknown) < UNKNOWN_N:
            c.unknown[name] = write_wav(d / "query.wav", parts[1])
        else:
            break
    return c


_CACHE: dict[str, object] = {}


def gallery(librispeech: Path, base: Path) -> tuple[Corpus, Path]:
    """(corpus, a built index of the enrolled crops), made once per test run."""
    if "gallery" not in _CACHE:
        from speakerid import Embedder, EmbedOptions
        from speakerid.indexer import Item, add_files

        emb = Embedder("campplus", embed=EmbedOptions(threads=1))
        corpus = make_corpus(librispeech, base / "corpus", emb)
        index = base / "gallery-index"
        rep = add_files(index, [Item(p, s) for s, p in corpus.enrol.items()], workers=2, embedder=emb)
        if rep.files_failed:
            raise RuntimeError(f"gallery crops failed: {rep.failures}")
        _CACHE["gallery"] = (corpus, index)
    return _CACHE["gallery"]  # type: ignore[return-value]


def unique_clips(path: Path, n: int, seed: int) -> list[bytes]:
    """``n`` WAVs of the speech in ``path``, each with its own content (a different 1-LSB dither),
    so that none is taken for a clip already enrolled."""
    import io

    import soundfile as sf

    x, _ = sf.read(path, dtype="int16")
    out = []
    for i in range(n):
        y = (x.astype(np.int32) + np.random.default_rng(seed + i).integers(-1, 2, len(x))).clip(-32768, 32767)
        buf = io.BytesIO()
        sf.write(buf, y.astype(np.int16), SR, format="WAV", subtype="PCM_16")
        out.append(buf.getvalue())
    return out


def copy_index(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest


# --- keys ------------------------------------------------------------------------------------


def make_keys(path: Path) -> dict[str, str]:
    """A keys file with one key per scope (and "other", a second read key): scope -> key."""
    from speakerid.serve.auth import KeyStore

    store = KeyStore(path)
    return {scope: store.add(f"test-{scope}", scope) for scope in ("read", "enroll", "admin")}


# --- server processes ----------------------------------------------------------------------


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child must not dlopen between fork and exec


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Server:
    """``python -m speakerid serve --index INDEX --port 0 ARGS...`` until stopped."""

    def __init__(self, index: Path, args: list[str], log: Path, *, timeout_s: float = 60.0) -> None:
        self.index, self.args, self.log_path = index, args, log
        self.lines: list[str] = []
        cmd = [sys.executable, "-m", "speakerid", "serve", "--index", str(index), "--host", "127.0.0.1",
               "--port", "0", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     cwd=REPO, env=env, preexec_fn=_die_with_parent)
        self._ready = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout_s) or not self.url:
            self.kill()
            raise RuntimeError(f"the server did not start: {self.text()[-2000:]}")
        _LIVE.append(self)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in self.proc.stderr:
                self.lines.append(line)
                log.write(line)
                log.flush()
                m = _READY.search(line)
                if m and not self.url:
                    self.url = m.group(1)
                    self._ready.set()
        self._ready.set()

    def text(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (graceful shutdown); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """kill -9."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


_LIVE: list[Server] = []


@atexit.register
def _stop_all() -> None:
    for s in _LIVE:
        if s.proc.poll() is None:
            s.proc.kill()


def shared_server(key: str, start) -> Server:
    """One server per ``key`` for the whole test run (several test files use it)."""
    s = _CACHE.get(f"server:{key}")
    if s is None or s.proc.poll() is not None:  # type: ignore[union-attr]
        s = _CACHE[f"server:{key}"] = start()
    return s  # type: ignore[return-value]


def wait_until(pred, timeout_s: float = 10.0, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return pred()


# --- the shared set-up ------------------------------------------------------------------------


@dataclass
class Env:
    base: Path
    corpus: Corpus
    template: Path
    keys_file: Path
    keys: dict[str, str]
    main: Server
    audit_log: Path

    def headers(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}


def setup(librispeech: Path, tmp_path_factory) -> Env:
    """The gallery, the keys and the main server (2 workers, 4 MiB uploads, 20 s clips), once."""
    env = _CACHE.get("env")
    if env is None or env.main.proc.poll() is not None:  # type: ignore[union-attr]
        base = tmp_path_factory.mktemp("serve")
        corpus, template = gallery(librispeech, base)
        keys_file = base / "keys.json"
        keys = make_keys(keys_file) if not keys_file.exists() else {}
        audit = base / "audit.jsonl"
        index = copy_index(template, base / "main-index")
        main = Server(index, ["--keys", str(keys_file), "--workers", "2", "--max-upload-mb", "4",
                              "--max-audio", "20", "--audit-log", str(audit)], base / "main.log")
        env = _CACHE["env"] = Env(base, corpus, template, keys_file, keys, main, audit)
    return env  # type: ignore[return-value]


def aux_server(env: Env) -> Server:
    """A second server on its own copy of the gallery: 1 worker, 1 queue place, 0.3 s queue timeout,
    0.2 s wait for another process's writer lock."""

    def start() -> Server:
        index = copy_index(env.template, env.base / "aux-index")
        return Server(index, ["--keys", str(env.keys_file), "--workers", "1", "--max-queue", "1",
                              "--queue-timeout", "0.3", "--lock-wait", "0.2"], env.base / "aux.log")

    return shared_server("aux", start)

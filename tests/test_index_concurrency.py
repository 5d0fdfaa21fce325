"""One writer, many readers, in separate processes: readers answer from the last committed
version while the writer enrols (and compacts), never see a half-written state, and a kill -9
of the writer loses only the batch it had not committed."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM, BATCH = 16, 20

#: The writer: enrols BATCH clips of a new speaker per commit and prints the committed count
#: after each save; every 7th commit is a full compaction (which deletes the older files).
WRITER = textwrap.dedent(
    f"""
    import hashlib, sys
    import numpy as np
    from speakerid.index import IndexSpec, SpeakerIndex, gallery
    gallery.FULL_MIN_ROWS = 100  # full compactions happen during the test too
    d = sys.argv[1]
    def vec(i):
        v = np.random.default_rng(10**6 + i // {BATCH}).standard_normal({DIM})
        v = v + 0.1 * np.random.default_rng(i).standard_normal({DIM})
        return (v / np.linalg.norm(v)).astype(np.float32)
    ix = SpeakerIndex.create(d, IndexSpec("toy-model", "ab" * 32, {DIM}), exist_ok=True, wait_s=30)
    print(len(ix), flush=True)
    while True:
        start = ix._next_id
        ids = range(start, start + {BATCH})
        name = f"spk{{start // {BATCH}:05d}}"
        ix.add(np.stack([vec(i) for i in ids]), [name] * {BATCH}, [f"/a/{{i}}" for i in ids],
               [hashlib.sha256(str(i).encode()).hexdigest() for i in ids], [1.0] * {BATCH}, [1.0] * {BATCH})
        ix.save(compact=(start // {BATCH}) % 7 == 6)
        print(len(ix), flush=True)
    """
)


def vec(i: int) -> np.ndarray:
    """Clip i: its speaker's (i // BATCH) direction plus a little noise."""
    v = np.random.default_rng(10**6 + i // BATCH).standard_normal(DIM)
    v = v + 0.1 * np.random.default_rng(i).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def check_state(ix) -> int:
    """Every invariant of a whole committed state; returns its clip count."""
    from speakerid.identify import identify

    n = len(ix)
    assert n % BATCH == 0 and len(ix.speakers()) == n // BATCH
    if n:
        names = ix.speakers()
        probe = int(names[-1][3:]) * BATCH  # the first clip of the newest speaker
        assert identify(ix, vec(probe), 1, threshold=0.0)[0].speaker == names[-1]
        _, ids = ix.search(vec(probe), 1)
        assert ids[0, 0] == probe
    return n


def reader(d: str, seconds: float, queue) -> None:
    """Opens the index again and again (and keeps one open) while the writer commits."""
    from speakerid.index import SpeakerIndex

    seen, held = [], None
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ix = SpeakerIndex.open(d)
            seen.append(check_state(ix))
            if held is None:
                held = (ix, len(ix))
        check_state(held[0])  # an old snapshot still answers after compactions removed its files
        queue.put(("ok", seen, held[1]))
    except BaseException as e:  # report to the parent, which asserts
        import traceback

        queue.put(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}", 0))


def test_readers_answer_while_a_writer_enrols_and_is_killed(tmp_path: Path) -> None:
    from speakerid.index import SpeakerIndex, verify_index

    d = tmp_path / "ix"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = np.random.default_rng(3)
    ctx = mp.get_context("spawn")
    committed = 0
    for _round in range(3):
        writer = subprocess.Popen([sys.executable, str(script), str(d)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        assert writer.stdout is not None
        assert int(writer.stdout.readline()) == committed  # what the last writer committed is all there
        queue = ctx.Queue()
        readers = [ctx.Process(target=reader, args=(str(d), 2.5, queue)) for _ in range(3)]
        for r in readers:
            r.start()
        printed = [int(writer.stdout.readline())]  # at least one commit per round
        time.sleep(float(rng.uniform(1.0, 2.0)))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        printed += [int(line) for line in writer.stdout.read().split()]
        results = [queue.get(timeout=120) for _ in readers]
        for r in readers:
            r.join(timeout=60)
        for status, seen, held in results:
            assert status == "ok", seen
            assert seen == sorted(seen) and held <= seen[-1]  # never backwards, never a torn state
        ix = SpeakerIndex.open(d)
        n = check_state(ix)
        # the kill lost at most the batch in flight: the last printed commit, or one more
        # (committed, killed before printing it)
        assert n in (printed[-1], printed[-1] + BATCH), (n, printed[-3:])
        assert sorted(ix.utterances()["id"].to_pylist()) == list(range(n))  # no duplicates, no gaps
        committed = n
    assert verify_index(d).ok

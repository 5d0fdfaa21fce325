"""Durability and load behaviour of `speakerid serve`, on real processes: kill -9 in the middle of
an enrolment stream loses no acknowledged enrolment, SIGTERM lets the enrolment in flight finish,
a saturated server answers 503 with Retry-After instead of hanging."""

from __future__ import annotations

import threading
import time

import serve_helpers as H


def _names(url: str, key: str) -> dict[str, int]:
    import httpx

    r = httpx.get(f"{url}/v1/speakers", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return {s["name"]: s["clips"] for s in r.json()["speakers"]}


def test_kill9_keeps_every_acknowledged_enrolment(env):
    import httpx

    from speakerid.index import SpeakerIndex

    index = H.copy_index(env.template, env.base / "durability-index")
    server = H.Server(index, ["--keys", str(env.keys_file), "--workers", "2"], env.base / "durability.log")
    clips = H.unique_clips(next(iter(env.corpus.extra.values())), 40, seed=0)
    acked: list[str] = []
    read_status: list[int] = []
    stop = threading.Event()

    def writer(first: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30, headers=env.headers("enroll")) as c:
            for i in range(first, len(clips), 2):
                try:
                    r = c.post(f"/v1/speakers/dur-{i}/enrollments", files={"clips": (f"{i}.wav", clips[i])})
                except httpx.TransportError:
                    return  # the server is gone: this one was never acknowledged
                if r.status_code == 200 and r.json()["clips_accepted"] == 1:
                    acked.append(f"dur-{i}")

    def reader() -> None:
        query = next(iter(env.corpus.query.values())).read_bytes()
        with httpx.Client(base_url=server.url, timeout=30, headers=env.headers("read")) as c:
            while not stop.is_set():
                try:
                    read_status.append(c.post("/v1/identify", files={"clip": ("q.wav", query)}).status_code)
                except httpx.TransportError:
                    return

    threads = [threading.Thread(target=writer, args=(j,)) for j in (0, 1)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    # kill once 6 enrolments are acknowledged and identify has answered at least once during them
    # (enrolments got faster than the reader's first answer: killing at 6 acks alone left it none)
    assert H.wait_until(lambda: len(acked) >= 6 and bool(read_status), timeout_s=60)
    server.kill()  # kill -9, with enrolments in flight
    stop.set()
    for t in threads:
        t.join(30)
    assert read_status and set(read_status) == {200}  # identify answered throughout the writes
    SpeakerIndex.open(index, verify=True)  # every file of the live version checks out
    restarted = H.Server(index, ["--keys", str(env.keys_file)], env.base / "durability.log")
    try:
        names = _names(restarted.url, env.keys["read"])
        assert [a for a in acked if names.get(a) != 1] == []
        assert len([n for n in names if n.startswith("dur-")]) in (len(acked), len(acked) + 1, len(acked) + 2)
        _sigterm_finishes_the_enrolment_in_flight(env, restarted, clips)
    finally:
        restarted.kill()


def _sigterm_finishes_the_enrolment_in_flight(env, server: H.Server, clips: list[bytes]) -> None:
    import httpx

    from speakerid.index import SpeakerIndex

    result: dict = {}

    def enrol() -> None:
        files = [("clips", (f"{i}.wav", clips[i])) for i in range(30, 40)]
        try:
            result["r"] = httpx.post(f"{server.url}/v1/speakers/graceful/enrollments", files=files,
                                     headers=env.headers("enroll"), timeout=60)
        except httpx.TransportError as exc:
            result["error"] = exc

    def writing() -> bool:
        r = httpx.get(f"{server.url}/v1/info", headers=env.headers("read"), timeout=10)
        return r.json()["load"]["writes_running"] == 1

    t = threading.Thread(target=enrol)
    t.start()
    assert H.wait_until(writing, timeout_s=20, step_s=0.02)  # in the writer: ten clips, about a second
    assert server.stop() == 0  # SIGTERM: graceful
    t.join(30)
    r = result.get("r")
    assert r is not None and r.status_code == 200, result  # it was running: it finished, then the exit
    assert "graceful" in SpeakerIndex.open(server.index).speakers()


def test_saturated_server_answers_503_with_retry_after(env):
    import httpx

    aux = H.aux_server(env)  # 1 worker, 1 place in the queue, 0.3 s queue timeout
    query = next(iter(env.corpus.query.values())).read_bytes()
    results: list = []

    def one() -> None:
        with httpx.Client(base_url=aux.url, timeout=30, headers=env.headers("read")) as c:
            results.append(c.post("/v1/identify", files={"clip": ("q.wav", query)}))

    threads = [threading.Thread(target=one) for _ in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert time.monotonic() - t0 < 20
    codes = sorted(r.status_code for r in results)
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
    busy = next(r for r in results if r.status_code == 503)
    assert busy.json()["error"]["code"] == "SERVER_BUSY" and int(busy.headers["Retry-After"]) >= 1


def test_index_locked_by_another_process_answers_503_index_busy(env):
    import httpx

    from speakerid.index import SpeakerIndex

    aux = H.aux_server(env)  # waits 0.2 s for another writer
    clip = H.unique_clips(next(iter(env.corpus.query.values())), 1, seed=5000)[0]
    with SpeakerIndex.lock(aux.index):  # as a CLI build would
        r = httpx.post(f"{aux.url}/v1/speakers/locked-out/enrollments", files={"clips": ("a.wav", clip)},
                       headers=env.headers("enroll"), timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "INDEX_BUSY", r.text
        assert int(r.headers["Retry-After"]) >= 1 and "/tmp/" not in r.text
        assert httpx.post(f"{aux.url}/v1/identify", files={"clip": ("q.wav", clip)}, headers=env.headers("read"),
                          timeout=30).status_code == 200  # reads go on
    r = httpx.post(f"{aux.url}/v1/speakers/locked-out/enrollments", files={"clips": ("a.wav", clip)},
                   headers=env.headers("enroll"), timeout=30)
    assert r.status_code == 200 and r.json()["clips_accepted"] == 1


def test_no_auth_server_creates_its_index_with_the_first_enrolment(env):
    import httpx

    index = env.base / "fresh-index"
    server = H.Server(index, ["--no-auth", "--workers", "1"], env.base / "fresh.log")
    try:
        clip = next(iter(env.corpus.query.values())).read_bytes()
        r = httpx.post(f"{server.url}/v1/identify", files={"clip": ("q.wav", clip)}, timeout=30)
        assert r.status_code == 409 and r.json()["error"]["code"] == "EMPTY_GALLERY"
        r = httpx.post(f"{server.url}/v1/speakers/first/enrollments", files={"clips": ("q.wav", clip)}, timeout=60)
        assert r.status_code == 200 and r.json()["index_version"] >= 1, r.text
        r = httpx.post(f"{server.url}/v1/identify", files={"clip": ("q.wav", clip)}, timeout=30)
        assert r.status_code == 200 and r.json()["matches"][0]["speaker"] == "first"
        assert httpx.get(f"{server.url}/v1/info", timeout=30).json()["auth"] is False
    finally:
        assert server.stop() == 0

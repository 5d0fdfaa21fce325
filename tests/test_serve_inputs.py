"""Bad inputs to `speakerid serve`, one test each, against the real server: every answer is the one
error body with its stable code and status, never a traceback, and nothing is written where it
should not be."""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import numpy as np
import serve_helpers as H


def _error(r, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert "Traceback" not in r.text and "/tmp/" not in body["error"]["message"], body
    return body["error"]["message"]


def _identify(env, http, name: str, data: bytes, scope: str = "read"):
    return http.post("/v1/identify", files={"clip": (name, data, "audio/wav")}, headers=env.headers(scope))


def _wav(tmp_path, x: np.ndarray) -> bytes:
    return H.write_wav(tmp_path / "x.wav", x.astype(np.float32)).read_bytes()


def test_random_bytes(env, http):
    rng = np.random.default_rng(0)
    msg = _error(_identify(env, http, "noise.wav", rng.bytes(20_000)), 422, "AUDIO_DECODE_ERROR")
    assert "clip 1 (noise.wav)" in msg


def test_empty_upload(env, http):
    assert "empty" in _error(_identify(env, http, "empty.wav", b""), 422, "AUDIO_DECODE_ERROR")


def test_under_a_tenth_of_a_second(env, http, tmp_path):
    """The embedder embeds any clip of 0.1 s or more (short speech whole, with a warning);
    shorter ones are refused before the model runs."""
    import soundfile as sf

    x, _ = sf.read(next(iter(env.corpus.query.values())), dtype="float32")
    msg = _error(_identify(env, http, "short.wav", _wav(tmp_path, x[: H.SR // 20])), 422, "AUDIO_TOO_SHORT")
    assert "0.05 s" in msg and "0.10 s" in msg


def test_silence(env, http, tmp_path):
    _error(_identify(env, http, "silence.wav", _wav(tmp_path, np.zeros(3 * H.SR))), 422, "NO_SPEECH")


def test_audio_over_the_duration_limit(env, http, tmp_path):
    _error(_identify(env, http, "long.wav", _wav(tmp_path, np.zeros(25 * H.SR))), 413, "AUDIO_TOO_LONG")


def test_declared_2gb_content_length_is_refused_unread(env):
    host, port = env.main.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall((f"POST /v1/identify HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {env.keys['read']}\r\n"
                   "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 2147483648\r\n\r\n").encode())
        s.sendall(b"--x\r\n" + b"\0" * 4096)
        reply = b""
        while b"}}" not in reply and (chunk := s.recv(65536)):
            reply += chunk
    reply = reply.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413") and '"PAYLOAD_TOO_LARGE"' in reply
    assert time.monotonic() - t0 < 5


def test_chunked_body_over_the_limit_is_cut_off(env, http):
    def chunks():  # a well-formed start of an upload, then more bytes than the 4 MiB limit
        yield (b'--x\r\nContent-Disposition: form-data; name="clip"; filename="big.wav"\r\n'
               b"Content-Type: audio/wav\r\n\r\n")
        for _ in range(6):
            yield b"\0" * (1024 * 1024)

    r = http.post("/v1/identify", content=chunks(), headers={
        **env.headers("read"), "Content-Type": "multipart/form-data; boundary=x"})
    _error(r, 413, "PAYLOAD_TOO_LARGE")


def test_wrong_content_type(env, http):
    r = http.post("/v1/identify", json={"clip": "a.wav"}, headers=env.headers("read"))
    assert "multipart/form-data" in _error(r, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_validation_errors_use_the_error_body(env, http):
    clip = next(iter(env.corpus.query.values())).read_bytes()
    for data in ({"k": "0"}, {"k": "many"}, {"threshold": "5"}):
        r = http.post("/v1/identify", files={"clip": ("a.wav", clip)}, data=data, headers=env.headers("read"))
        _error(r, 422, "VALIDATION_ERROR")
    _error(http.post("/v1/identify", data={"k": "1"}, files={"other": ("a", b"x")}, headers=env.headers("read")),
           422, "VALIDATION_ERROR")
    _error(http.get("/v1/nowhere", headers=env.headers("read")), 404, "NOT_FOUND")
    _error(http.put("/v1/speakers", headers=env.headers("read")), 405, "METHOD_NOT_ALLOWED")


def test_unicode_speaker_name(env, http):
    name = "Zoë 山田 ☃"
    clip = env.corpus.unknown[list(env.corpus.unknown)[2]]
    r = http.post(f"/v1/speakers/{name}/enrollments", files={"clips": (clip.name, clip.read_bytes())},
                  headers=env.headers("enroll"))
    assert r.status_code == 200 and r.json()["speaker"] == name, r.text
    decomposed = "Zoe\u0308 山田 ☃"  # the same name in NFD: one speaker
    assert http.get(f"/v1/speakers/{decomposed}", headers=env.headers("read")).json()["name"] == name
    assert name in [s["name"] for s in http.get("/v1/speakers", headers=env.headers("read")).json()["speakers"]]
    assert http.delete(f"/v1/speakers/{name}", headers=env.headers("admin")).status_code == 200


def test_traversal_speaker_names_are_data_or_refused(env, http, tmp_path):
    clip = env.corpus.unknown[list(env.corpus.unknown)[3]]
    cwd_before, base_before = set(os.listdir(H.REPO)), set(os.listdir(env.base))
    stored = ["..\\..\\etc\\passwd", "...", "~root", "$HOME", "a..b", "%2e%2e"]
    for name in stored:
        r = http.post(f"/v1/speakers/{name.replace('%', '%25')}/enrollments", headers=env.headers("admin"),
                      files={"clips": (f"../../{name}.wav", clip.read_bytes())})
        assert r.status_code == 200 and r.json()["speaker"] == name, r.text
        assert http.delete(f"/v1/speakers/{name.replace('%', '%25')}", headers=env.headers("admin")).status_code == 200
    for raw in ("%2E%2E", "%2E", "..%2Fetc", "a%00b", "x%E2%80%AEy"):  # .., ., ../etc, NUL, RTL override
        r = http.post(f"{env.main.url}/v1/speakers/{raw}/enrollments", headers=env.headers("admin"),
                      files={"clips": ("a.wav", clip.read_bytes())})
        assert r.status_code in (404, 422), r.text
        _error(r, r.status_code, "VALIDATION_ERROR" if r.status_code == 422 else "NOT_FOUND")
    assert all(re.fullmatch(r"v\d{6,}|CURRENT|\.lock|segments", p.name) for p in env.main.index.iterdir())
    assert all(re.fullmatch(r"[sc]\d{6,}\.[a-z.]+", p.name) for p in (env.main.index / "segments").iterdir())
    assert set(os.listdir(H.REPO)) == cwd_before and set(os.listdir(env.base)) == base_before


def test_missing_key(env, http):
    r = http.get("/v1/speakers")
    _error(r, 401, "UNAUTHORIZED")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_key(env, http):
    for value in ("Bearer sid_wrong", f"Basic {env.keys['admin']}", "Bearer " + "x" * 5000, "Bearer"):
        _error(http.get("/v1/speakers", headers={"Authorization": value}), 401, "UNAUTHORIZED")


def test_read_key_cannot_enrol_or_delete(env, http):
    clip = next(iter(env.corpus.query.values()))
    r = http.post("/v1/speakers/intruder/enrollments", files={"clips": ("a.wav", clip.read_bytes())},
                  headers=env.headers("read"))
    assert "enroll" in _error(r, 403, "FORBIDDEN")
    _error(http.delete(f"/v1/speakers/{next(iter(env.corpus.query))}", headers=env.headers("enroll")),
           403, "FORBIDDEN")
    assert "intruder" not in {s["name"] for s in http.get("/v1/speakers", headers=env.headers("read")).json()["speakers"]}


def test_concurrent_enrolments_of_the_same_name(env):
    import httpx

    clips = H.unique_clips(list(env.corpus.extra.values())[-1], 6, seed=1000)
    results: list = [None] * len(clips)

    def enrol(i: int) -> None:
        with httpx.Client(base_url=env.main.url, timeout=60) as c:
            results[i] = c.post("/v1/speakers/crowd/enrollments", headers=env.headers("enroll"),
                                files=[("clips", (f"{i}.wav", clips[i])), ("clips", ("dup.wav", clips[0]))])

    threads = [threading.Thread(target=enrol, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None and r.status_code == 200 for r in results), [r and r.text for r in results]
    added = sum(r.json()["clips_accepted"] for r in results)
    with httpx.Client(base_url=env.main.url, timeout=60) as c:
        got = c.get("/v1/speakers/crowd", headers=env.headers("read")).json()
        assert added == got["clips"] == len(clips)  # clip 0 sent 7 times: stored once
        assert c.delete("/v1/speakers/crowd", headers=env.headers("admin")).json()["clips_removed"] == len(clips)

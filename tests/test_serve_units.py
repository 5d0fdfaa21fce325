"""The service's pieces without a server: admission gate, names, keys, error mapping, options."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_helpers import require_serve_extra

from speakerid.errors import ConfigError, TooShortError
from speakerid.serve import ServeOptions, is_loopback
from speakerid.serve.auth import KeyStore, scope_allows
from speakerid.serve.errors import CODES, ApiError, api_error, failure_code, failure_message


def test_gate_bounds_queue_and_wait_and_survives_cancellation():
    require_serve_extra()
    from speakerid.serve.gate import Gate

    async def scenario() -> None:
        gate = Gate(1, 1, 0.2, "SERVER_BUSY", "the pool")
        pool = ThreadPoolExecutor(1)
        slow = asyncio.ensure_future(gate.run(pool, time.sleep, 0.5))
        await asyncio.sleep(0.05)
        waiter = asyncio.ensure_future(gate.run(pool, time.sleep, 0))
        await asyncio.sleep(0.01)
        with pytest.raises(ApiError) as full:  # one is waiting already: refused at once
            await gate.run(pool, time.sleep, 0)
        assert full.value.code == "SERVER_BUSY" and int(full.value.headers()["Retry-After"]) >= 1
        with pytest.raises(ApiError):  # the waiter times out after 0.2 s
            await waiter
        slow.cancel()  # the client hung up: the thread still runs, the slot stays taken until it ends
        await asyncio.sleep(0.05)
        assert gate.busy == 1
        await asyncio.sleep(0.5)
        assert gate.busy == 0 and gate.waiting == 0
        assert await gate.run(pool, lambda: 7) == 7
        gate.close()
        with pytest.raises(ApiError) as closed:
            await gate.run(pool, lambda: 1)
        assert closed.value.code == "SHUTTING_DOWN"
        pool.shutdown()

    asyncio.run(scenario())


@pytest.mark.parametrize(("name", "ok"), [
    ("alice", True), ("Zoë 山田", True), ("..\\..\\etc", True), ("a.b", True), ("...", True),
    ("", False), (" ", False), (" alice", False), ("a/b", False), ("..", False), (".", False),
    ("a\x00b", False), ("a\nb", False), ("x\u202ey", False), ("x" * 129, False),
])
def test_speaker_names_are_data_with_a_few_refusals(name, ok):
    require_serve_extra()
    from speakerid.serve.service import check_name

    if ok:
        assert check_name(name, 128) == name
    else:
        with pytest.raises(ApiError) as e:
            check_name(name, 128)
        assert e.value.code == "VALIDATION_ERROR"


def test_keys_hash_only_constant_time_and_refuse_an_open_file(tmp_path):
    store = KeyStore(tmp_path / "k" / "keys.json")
    token = store.add("svc", "enroll")
    assert token not in store.path.read_text() and oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    assert store.authenticate(token).scope == "enroll"
    assert store.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.authenticate("") is None and store.authenticate("x" * 10_000) is None
    with pytest.raises(ConfigError):
        store.add("svc", "read")  # names are unique
    store.remove("svc")
    assert store.authenticate(token) is None
    os.chmod(store.path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        KeyStore(store.path).entries()
    assert scope_allows("admin", "read") and scope_allows("enroll", "enroll") and not scope_allows("read", "enroll")


def test_library_errors_map_to_stable_codes():
    assert api_error(TooShortError("/tmp/x/abc.upload: only 0.3 s"), {"/tmp/x/abc.upload": "clip 1"}).message \
        == "clip 1: only 0.3 s"
    assert api_error(ValueError("boom"), request_id="r1").code == "INTERNAL_ERROR"
    assert "boom" not in api_error(ValueError("boom")).message
    assert failure_code("TooShortError: x") == "AUDIO_TOO_SHORT"
    assert failure_code("NoSpeechError: x") == "NO_SPEECH"
    assert failure_code("AudioDecodeError: x") == "AUDIO_DECODE_ERROR"
    assert failure_code("SomethingElse: x") == "INTERNAL_ERROR"
    assert failure_message("NoSpeechError: /s/a.upload: none", {"/s/a.upload": "clip 2"}) == "clip 2: none"
    assert all(100 <= s < 600 for s in CODES.values()) and CODES["INDEX_BUSY"] == 503
    with pytest.raises(ValueError):
        ApiError("NOT_A_CODE", "x")


def test_options_refuse_no_auth_off_loopback_and_bad_limits(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org") and not is_loopback("10.0.0.1")
    assert ServeOptions(tmp_path, no_auth=True).no_auth
    with pytest.raises(ConfigError, match="loopback"):
        ServeOptions(tmp_path, host="0.0.0.0", no_auth=True)
    for bad in ({"workers_n": 0}, {"max_upload_bytes": -1}, {"max_audio_s": float("nan")}, {"port": 70000},
                {"queue_timeout_s": -1}, {"ssl_certfile": tmp_path}):
        with pytest.raises(ConfigError):
            ServeOptions(tmp_path, **bad)

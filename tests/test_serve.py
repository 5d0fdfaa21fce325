"""`speakerid serve` against a real uvicorn process on 127.0.0.1: the endpoints, the typed client,
`speakerid remote ...`, keys and the audit log. Real speech: 3 s crops of librispeech-251."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest
import serve_helpers as H
from conftest import run_main


def _clip(path) -> tuple[str, bytes, str]:
    return (path.name, path.read_bytes(), "audio/wav")


def test_health_info_openapi_and_docs(env, http):
    assert http.get("/v1/health").json()["status"] == "ok"  # no key needed
    info = http.get("/v1/info", headers=env.headers("read")).json()
    assert info["model"] == "campplus" and info["dim"] == 192 and info["speakers"] == H.ENROLLED_N
    assert info["auth"] is True and info["threshold"] is not None and info["version"]
    assert info["limits"]["max_upload_bytes"] == 4 * 1024 * 1024
    doc = http.get("/openapi.json").json()
    assert {"/v1/verify", "/v1/identify", "/v1/speakers/{name}/enrollments", "/v1/speakers",
            "/v1/speakers/{name}", "/v1/health", "/v1/info"} <= set(doc["paths"])
    assert "/v1/diarize" in doc["paths"]  # tests/test_serve_diarize.py
    assert "swagger" in http.get("/docs").text.lower()


def test_identify_names_enrolled_speakers_and_rejects_strangers(env, http):
    right = 0
    for name, path in env.corpus.query.items():
        r = http.post("/v1/identify", files={"clip": _clip(path)}, data={"k": "3"}, headers=env.headers("read"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["matches"]) == 3 and body["threshold_method"] and body["index_version"] >= 1
        right += body["speaker"] == name
    assert right >= len(env.corpus.query) - 1
    unknown = [http.post("/v1/identify", files={"clip": _clip(p)}, headers=env.headers("read")).json()
               for p in env.corpus.unknown.values()]
    assert sum(u["verdict"] == "unknown" and u["speaker"] is None for u in unknown) >= len(unknown) - 1


def test_verify_same_and_different_speakers(env, http):
    a, b = list(env.corpus.query)[:2]
    same = http.post("/v1/verify", files={"a": _clip(env.corpus.query[a]), "b": _clip(env.corpus.enrol[a])},
                     headers=env.headers("read")).json()
    diff = http.post("/v1/verify", files={"a": _clip(env.corpus.query[a]), "b": _clip(env.corpus.enrol[b])},
                     headers=env.headers("read")).json()
    assert same["match"] is True and diff["match"] is False and same["score"] > diff["score"]
    assert same["threshold"] == pytest.approx(0.588, abs=0.2) and same["model"] == "campplus"
    forced = http.post("/v1/verify", files={"a": _clip(env.corpus.query[a]), "b": _clip(env.corpus.enrol[b])},
                       data={"threshold": "-1"}, headers=env.headers("read")).json()
    assert forced["match"] is True and forced["threshold_method"] == "argument"


def test_client_enrol_identify_list_delete(env):
    from speakerid.client import Client, RemoteError

    name = "client-" + list(env.corpus.unknown)[0]
    clip = next(iter(env.corpus.unknown.values()))
    with Client(env.main.url, env.keys["admin"]) as c:
        res = c.enroll(name, [clip, clip])
        assert res.clips_accepted == 1 and res.speaker_clips == 1 and res.speech_s > 2
        assert [f.code for f in res.feedback] == ["AUDIO_OK", "DUPLICATE_IN_REQUEST"]
        again = c.enroll(name, [clip])  # a retried request adds nothing twice
        assert again.clips_accepted == 0 and again.feedback[0].code == "ALREADY_ENROLLED"
        got = c.identify(clip, k=2)
        assert got.speaker == name and got.accepted and got.matches[0].speaker == name
        assert name in {s.name for s in c.speakers()} and c.speaker(name).clips == 1
        assert c.verify(clip, clip).match and c.info()["speakers"] == H.ENROLLED_N + 1
        assert c.delete(name) == 1
        with pytest.raises(RemoteError) as e:
            c.speaker(name)
        assert e.value.code == "UNKNOWN_SPEAKER" and e.value.status == 404
    with Client(env.main.url, "sid_not-a-key") as c, pytest.raises(RemoteError) as e:
        c.identify(clip)
    assert e.value.code == "UNAUTHORIZED" and e.value.status == 401
    with Client("http://127.0.0.1:9", None, timeout_s=2) as c, pytest.raises(RemoteError) as e:
        c.health()
    assert e.value.code == "CONNECTION_FAILED"


def test_remote_cli_mirrors_verify_identify_enroll(env, monkeypatch, capsys):
    monkeypatch.setenv("SPEAKERID_URL", env.main.url)
    monkeypatch.setenv("SPEAKERID_API_KEY", env.keys["enroll"])
    name, query = next(iter(env.corpus.query.items()))
    code, out, _ = run_main(["remote", "identify", query, "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)["speaker"] == name
    code, out, _ = run_main(["remote", "verify", query, env.corpus.enrol[name]], monkeypatch, capsys)
    assert code == 0 and "verification: match" in out
    extra = env.corpus.extra[name]
    code, out, err = run_main(["remote", "enroll", name, extra], monkeypatch, capsys)
    assert code == 0 and f"{name} now has 2 clips" in out, err
    code, _, err = run_main(["remote", "enroll", name, H.REPO / "pyproject.toml"], monkeypatch, capsys)
    assert code == 2 and "AUDIO_DECODE_ERROR" in err
    monkeypatch.setenv("SPEAKERID_API_KEY", env.keys["read"])
    code, _, err = run_main(["remote", "enroll", name, extra], monkeypatch, capsys)
    assert code == 2 and "FORBIDDEN" in err


def test_audit_log_has_enrol_and_delete(env, http):
    clip = list(env.corpus.unknown.values())[1]
    assert http.post("/v1/speakers/audited/enrollments", files={"clips": _clip(clip)},
                     headers=env.headers("enroll")).status_code == 200
    assert http.delete("/v1/speakers/audited", headers=env.headers("admin")).status_code == 200
    assert H.wait_until(lambda: env.audit_log.read_text().count('"audited"') >= 2)
    lines = [json.loads(x) for x in env.audit_log.read_text().splitlines() if '"audited"' in x]
    enrol = next(x for x in lines if x["event"] == "enroll")
    delete = next(x for x in lines if x["event"] == "delete")
    assert enrol["key"] == "test-enroll" and enrol["outcome"] == "ok" and len(enrol["sha256"]) == 1
    assert delete["key"] == "test-admin" and delete["clips_removed"] == 1 and delete["request_id"]
    assert stat.S_IMODE(os.stat(env.audit_log).st_mode) == 0o600


def test_keys_cli_stores_only_a_hash_and_revocation_is_live(env, http, tmp_path, monkeypatch, capsys):
    keys = tmp_path / "keys.json"
    code, out, _ = run_main(["serve", "keys", "add", "ci-bot", "--scope", "read", "--keys", keys], monkeypatch, capsys)
    token = out.strip()
    assert code == 0 and token.startswith("sid_") and len(token) >= 40
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600 and token not in keys.read_text()
    code, out, _ = run_main(["serve", "keys", "list", "--keys", keys, "--json"], monkeypatch, capsys)
    listed = json.loads(out)
    assert code == 0 and [(k["name"], k["scope"]) for k in listed] == [("ci-bot", "read")]
    assert "sha256" not in listed[0] and token not in out
    code, _, err = run_main(["serve", "keys", "add", "x", "--scope", "root", "--keys", keys], monkeypatch, capsys)
    assert code == 2 and "scope" in err
    # the shared server's own keys file: a key added and removed while it runs
    code, out, _ = run_main(["serve", "keys", "add", "temp", "--scope", "read", "--keys", env.keys_file],
                            monkeypatch, capsys)
    temp = {"Authorization": f"Bearer {out.strip()}"}
    assert http.get("/v1/info", headers=temp).status_code == 200
    assert run_main(["serve", "keys", "remove", "temp", "--keys", env.keys_file], monkeypatch, capsys)[0] == 0
    assert http.get("/v1/info", headers=temp).status_code == 401


def test_no_auth_only_on_loopback(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(["serve", "--index", tmp_path, "--host", "0.0.0.0", "--no-auth"], monkeypatch, capsys)
    assert code == 2 and "loopback" in err


def test_serve_without_the_extra_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    code, _, err = run_main(["serve", "--index", tmp_path], monkeypatch, capsys)
    assert code == 2 and "pip install 'speakerid[serve]'" in err and len(err.strip().splitlines()) == 1

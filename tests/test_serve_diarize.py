"""`POST /v1/diarize` and identify's multi-speaker flag against a real server on 127.0.0.1
(tests/serve_helpers.py): names from the service's index, the limits, auth and errors of the
other routes, the typed client and `speakerid remote diarize`. Real speech: librispeech-251."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import serve_helpers as H
import soundfile as sf
from conftest import run_main
from diarize_helpers import conversation


@pytest.fixture(scope="module")
def http(env):
    import httpx

    with httpx.Client(base_url=env.main.url, timeout=300) as c:
        yield c


def _utterance(librispeech, name: str) -> np.ndarray:
    import csv

    with open(librispeech / "speakers.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if f"ls-{r['speaker']}" == name)
    return sf.read(librispeech / row["file"], dtype="float32")[0]


@pytest.fixture(scope="module")
def talk(env, librispeech, tmp_path_factory) -> dict:
    """18 s of an enrolled speaker (X, whose 0.5-3.5 s crop is in the gallery) and a stranger
    (U), from 4 s on in their utterances; under the main server's 20 s limit."""
    x_name = list(env.corpus.enrol)[-1]  # the other test files enrol and delete other names
    u_name = list(env.corpus.unknown)[0]
    parts = [(x_name, _utterance(librispeech, x_name)[4 * H.SR:]), (u_name, _utterance(librispeech, u_name)[4 * H.SR:])]
    mix, turns = conversation(parts, [(0, 4.5, 0), (1, 4.5, 0.4), (0, 3.5, 0.4), (1, 3.5, 0.4)])
    d = tmp_path_factory.mktemp("serve-talk")
    wav = H.write_wav(d / "talk.wav", mix)
    assert sf.info(wav).duration < 20.0
    return {"wav": wav, "X": x_name, "U": u_name, "mix": mix, "dir": d}


def _post(http, env, path, *, scope="read", **data):
    return http.post("/v1/diarize", files={"audio": (path.name, path.read_bytes(), "audio/wav")},
                     data={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in data.items()},
                     headers=env.headers(scope))


def _speech(body: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in body["turns"]:
        out[t["speaker"]] = out.get(t["speaker"], 0.0) + t["end_s"] - t["start_s"]
    return out


def _error(r, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]["message"]


def test_diarize_names_from_the_service_index(env, http, talk):
    r = _post(http, env, talk["wav"])
    assert r.status_code == 200, r.text
    body = r.json()
    speech = {k: v for k, v in _speech(body).items() if v >= 3.0}
    assert set(speech) == {talk["X"], "unknown-1"}, body["speakers"]
    assert body["named"] is True and body["model"] == "campplus" and body["index_version"] >= 1
    assert all(t["known"] == (t["speaker"] == talk["X"]) for t in body["turns"])
    assert all(t["score"] is not None and -1 <= t["score"] <= 1 for t in body["turns"])
    by_name = {s["speaker"]: s for s in body["speakers"]}
    assert by_name[talk["X"]]["known"] and by_name[talk["X"]]["speech_s"] == pytest.approx(speech[talk["X"]], abs=0.01)
    assert 17.0 < body["duration_s"] < 20.0
    assert str(env.base) not in r.text


def test_diarize_without_names_and_with_counts(env, http, talk):
    body = _post(http, env, talk["wav"], name_speakers=False).json()
    assert body["named"] is False and body["index_version"] is None
    assert {t["speaker"] for t in body["turns"]} <= {"speaker-1", "speaker-2", "speaker-3"}
    assert all(t["score"] is None and not t["known"] for t in body["turns"])
    one = _post(http, env, talk["wav"], name_speakers=False, num_speakers=1).json()
    assert {t["speaker"] for t in one["turns"]} == {"speaker-1"}
    assert "greater than" in _error(_post(http, env, talk["wav"], min_speakers=3, max_speakers=2), 422,
                                    "VALIDATION_ERROR")
    _error(_post(http, env, talk["wav"], num_speakers=0), 422, "VALIDATION_ERROR")


def test_diarize_limits_auth_and_bad_audio(env, http, talk, tmp_path):
    short = H.write_wav(tmp_path / "short.wav", talk["mix"][: int(0.3 * H.SR)])
    assert "0.50 s" in _error(_post(http, env, short), 422, "AUDIO_TOO_SHORT")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x01\x00\x00WAVEfmt garbage" * 10)
    assert "clip 1 (bad.wav)" in _error(_post(http, env, bad), 422, "AUDIO_DECODE_ERROR")
    long = H.write_wav(tmp_path / "long.wav", np.zeros(25 * H.SR, np.float32))
    _error(_post(http, env, long), 413, "AUDIO_TOO_LONG")
    r = http.post("/v1/diarize", files={"audio": ("t.wav", talk["wav"].read_bytes(), "audio/wav")})
    _error(r, 401, "UNAUTHORIZED")
    quiet = H.write_wav(tmp_path / "quiet.wav", (np.random.default_rng(0).normal(size=3 * H.SR) * 1e-4).astype(np.float32))
    body = _post(http, env, quiet).json()
    assert body["turns"] == [] and "no speech found" in body["warnings"]


def test_client_and_remote_diarize(env, talk, monkeypatch, capsys):
    from speakerid.client import Client

    with Client(env.main.url, env.keys["read"]) as c:
        res = c.diarize(talk["wav"])
        raw = c.diarize(io.BytesIO(talk["wav"].read_bytes()), name_speakers=False, num_speakers=2)
    assert res.named and talk["X"] in res.timeline.labels()
    assert any(s.speaker == talk["X"] and s.known for s in res.speakers)
    rttm = res.timeline.to_rttm("talk")
    assert len(rttm.splitlines()) == len(res.timeline.turns) and f" {talk['X']} " in rttm
    assert set(raw.timeline.labels()) == {"speaker-1", "speaker-2"} and not raw.named
    monkeypatch.setenv("SPEAKERID_URL", env.main.url)
    monkeypatch.setenv("SPEAKERID_API_KEY", env.keys["read"])
    out_rttm = talk["dir"] / "remote.rttm"
    code, out, err = run_main(["remote", "diarize", talk["wav"], "--json", "--rttm", out_rttm], monkeypatch, capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["file"] == str(talk["wav"]) and {t["speaker"] for t in data["turns"]} >= {talk["X"]}
    assert out_rttm.read_text().splitlines()[0].split()[1] == "talk"
    code, _, err = run_main(["remote", "diarize", talk["wav"], "--min-speakers", "3", "--max-speakers", "2"],
                            monkeypatch, capsys)
    assert code == 2 and "greater than" in err


def test_identify_flags_two_voices(env, http, talk, tmp_path):
    def identify(path, **data):
        r = http.post("/v1/identify", files={"clip": (path.name, path.read_bytes(), "audio/wav")},
                      data={k: str(v).lower() for k, v in data.items()}, headers=env.headers("read"))
        assert r.status_code == 200, r.text
        return r.json()

    two = identify(talk["wav"])
    assert two["multi_speaker"] is True and any(w.startswith("multi_speaker: 2 voices") for w in two["warnings"])
    one = identify(env.corpus.query[talk["X"]])
    assert one["multi_speaker"] is False and one["speaker"] == talk["X"] and one["warnings"] == []
    assert identify(talk["wav"], check_speakers=False)["multi_speaker"] is None


def test_identify_a_third_of_a_second(env, http, talk, tmp_path):
    """The embedder embeds a clip of under 0.5 s whole, with a too_short warning (the hard-audio
    VAD defaults): the service answers it too, and refuses only what cannot be embedded."""
    x, _ = sf.read(env.corpus.query[talk["X"]], dtype="float32")
    short = H.write_wav(tmp_path / "short.wav", x[: int(0.3 * H.SR)])
    r = http.post("/v1/identify", files={"clip": ("short.wav", short.read_bytes(), "audio/wav")},
                  headers=env.headers("read"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert any(w.startswith("too_short") for w in body["warnings"]) and body["multi_speaker"] is None
    assert http.get("/v1/info", headers=env.headers("read")).json()["limits"]["min_speech_s"] == pytest.approx(0.1)

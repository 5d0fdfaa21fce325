"""POST /v1/identify with ``score_norm`` against the real uvicorn server of tests/serve_helpers.py
(16 enrolled speakers, 3 s crops of librispeech-251): AS-norm against the gallery as cohort."""

from __future__ import annotations



def _post(env, http, path, **data):
    return http.post("/v1/identify", files={"clip": (path.name, path.read_bytes(), "audio/wav")}, data=data,
                     headers=env.headers("read"))


def test_identify_with_asnorm_names_speakers_and_rejects_strangers(env, http):
    right, thresholds = 0, set()
    for name, path in env.corpus.query.items():
        r = _post(env, http, path, k="3", score_norm="asnorm", check_speakers="false")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["score_norm"] == "asnorm" and "asnorm" in body["threshold_method"]
        # the raw cosine stays in score; the threshold applies to the normalised score
        assert body["norm_score"] is not None and all(m["norm_score"] is not None for m in body["matches"])
        assert body["accepted"] == (body["norm_score"] >= body["threshold"])
        assert [m["norm_score"] for m in body["matches"]] == sorted((m["norm_score"] for m in body["matches"]),
                                                                     reverse=True)
        thresholds.add(body["threshold"])
        right += body["speaker"] == name and body["accepted"]
    assert right >= len(env.corpus.query) - 1
    assert len(thresholds) == 1  # one gallery, one calibrated AS-norm threshold (not the raw one)
    raw = _post(env, http, next(iter(env.corpus.query.values())), check_speakers="false").json()
    assert raw["score_norm"] == "none" and raw["norm_score"] is None and raw["threshold"] not in thresholds
    unknown = [_post(env, http, p, score_norm="asnorm", check_speakers="false").json()
               for p in env.corpus.unknown.values()]
    assert all(u["score_norm"] == "asnorm" for u in unknown)
    assert sum(u["verdict"] == "unknown" for u in unknown) >= len(unknown) - 1


def test_identify_refuses_an_unknown_score_norm(env, http):
    r = _post(env, http, next(iter(env.corpus.query.values())), score_norm="znorm")
    assert r.status_code == 422, r.text


def test_client_passes_score_norm(env):
    from speakerid.client import Client

    name, path = next(iter(env.corpus.query.items()))
    with Client(env.main.url, env.keys["read"]) as c:
        norm = c.identify(path, k=3, score_norm="asnorm")
        raw = c.identify(path, k=3)
    assert norm.score_norm == "asnorm" and norm.norm_score is not None
    assert all(m.norm_score is not None for m in norm.matches)
    assert norm.accepted == (norm.norm_score >= norm.threshold)
    assert raw.score_norm == "none" and raw.norm_score is None and raw.threshold != norm.threshold
    assert norm.matches[0].speaker == raw.matches[0].speaker == name

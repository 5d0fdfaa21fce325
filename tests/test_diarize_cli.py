"""The interfaces of diarization on real speech: `speakerid enroll --from-timeline` (an unknown
voice of a diarized recording enrolled, then named), and identify's multi-speaker flag.

The conversation is built from librispeech-251 (tests/diarize_helpers.py): speaker A is
enrolled with the first 4 s of an utterance, speaker B is not; the conversation uses the rest.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from conftest import run_main
from diarize_helpers import SR, conversation, utterances

from speakerid.index import IndexSpec, SpeakerIndex
from speakerid.indexer import build_index
from speakerid.multispeaker import SpeakerCheck

ENROL_S = 4.0
#: A voice may shed a second or two into a cluster of its own; voices are counted from this on.
FRAGMENT_S = 3.0


@pytest.fixture(scope="module")
def talk(librispeech, tmp_path_factory) -> dict:
    """A (enrolled) and B (not) in ~33 s, plus an index of A and 6 other speakers."""
    d = tmp_path_factory.mktemp("talk2")
    utts = utterances(librispeech, 8, min_s=13.0, skip=12)
    a, b = utts[:2]
    parts = [(s, x[int(ENROL_S * SR):]) for s, x in (a, b)]
    plan = [(0, 6, 0), (1, 6, 0.5), (0, 5, 0.4), (1, 5, 0.5), (0, 4, 0.4), (1, 4, 0.3)]
    mix, turns = conversation(parts, plan)
    wav = d / "talk.wav"
    sf.write(wav, mix, SR, subtype="PCM_16")
    enrol = d / "enrol"
    for s, x in [a, *utts[2:]]:
        (enrol / s).mkdir(parents=True)
        sf.write(enrol / s / "e.wav", x[: int(ENROL_S * SR)], SR, subtype="PCM_16")
    build_index(enrol, d / "index", workers=1)
    b_ref = [(s, e) for spk, s, e in turns if spk == b[0]]
    return {"wav": wav, "mix": mix, "A": a[0], "B": b[0], "b_ref": b_ref, "index": d / "index", "dir": d,
            "a_audio": a[1], "b_audio": b[1]}


def _voices(data: dict) -> dict[str, float]:
    speech: dict[str, float] = {}
    for t in data["turns"]:
        speech[t["speaker"]] = speech.get(t["speaker"], 0.0) + t["end_s"] - t["start_s"]
    return {k: v for k, v in speech.items() if v >= FRAGMENT_S}


def _covered(data: dict, label: str, ref: list[tuple[float, float]]) -> float:
    """Share of the reference speech ``ref`` that turns of ``label`` cover."""
    grid = np.zeros(int(max(e for _, e in ref) * 100) + 1, bool)
    for t in data["turns"]:
        if t["speaker"] == label:
            grid[int(t["start_s"] * 100) : int(t["end_s"] * 100)] = True
    return sum(grid[int(s * 100) : int(e * 100)].sum() for s, e in ref) / sum(int(e * 100) - int(s * 100) for s, e in ref)


@pytest.fixture(scope="module")
def first_pass(talk) -> dict:
    """`speakerid diarize --json` of the conversation with B not enrolled (a real subprocess),
    written to out.json as a user would."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    r = subprocess.run([sys.executable, "-m", "speakerid", "diarize", str(talk["wav"]), "--index", str(talk["index"]),
                        "--json"], capture_output=True, text=True, timeout=600, cwd=talk["dir"],
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    path = talk["dir"] / "out.json"
    path.write_text(r.stdout)
    unknown = [v for v in _voices(data) if v.startswith("unknown-")]
    return {"data": data, "json": path, "unknown": unknown}


def test_timeline_json_records_the_recording(talk, first_pass) -> None:
    data = first_pass["data"]
    assert data["file"] == str(talk["wav"]) and data["source"] == str(talk["wav"])
    voices = _voices(data)
    assert talk["A"] in voices and len(first_pass["unknown"]) == 1, voices  # B is not enrolled


def test_enroll_from_timeline_then_named(talk, first_pass, tmp_path, monkeypatch, capsys) -> None:
    ix = tmp_path / "index"
    shutil.copytree(talk["index"], ix)
    label = first_pass["unknown"][0]
    assert _covered(first_pass["data"], label, talk["b_ref"]) > 0.8  # the unknown voice is B
    keep = tmp_path / "clips"
    code, out, err = run_main(["enroll", "bob", "--from-timeline", first_pass["json"], "--label", label,
                               "--index", ix, "--keep-clips", keep, "--json"], monkeypatch, capsys)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["files_embedded"] >= 1 and rep["speakers"] == 8
    assert "bob" in SpeakerIndex.open(ix).speakers()
    clips = sorted(keep.glob("*.wav"))
    assert len(clips) == rep["files_embedded"]
    solo_s = sum(sf.info(c).duration for c in clips)
    assert 8.0 <= solo_s <= 16.0  # B's solo speech, not A's (B talks 15 s, A 15 s)
    code, out, err = run_main(["diarize", talk["wav"], "--index", ix, "--json"], monkeypatch, capsys)
    assert code == 0, err
    again = json.loads(out)
    assert set(_voices(again)) == {talk["A"], "bob"}
    assert all(t["known"] for t in again["turns"] if t["speaker"] == "bob")
    assert _covered(again, "bob", talk["b_ref"]) > 0.8
    # the same again adds nothing (the clips are already indexed) and still exits 0
    code, out, err = run_main(["enroll", "bob", "--from-timeline", first_pass["json"], "--label", label,
                               "--index", ix, "--keep-clips", keep, "--json"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["files_embedded"] == 0


def test_audio_given_as_argument(talk, first_pass, tmp_path, monkeypatch, capsys) -> None:
    """A timeline whose recording moved: AUDIO says where it is now."""
    moved = tmp_path / "moved.wav"
    shutil.copy(talk["wav"], moved)
    data = {**first_pass["data"], "file": str(tmp_path / "gone.wav"), "source": str(tmp_path / "gone.wav")}
    tl = tmp_path / "tl.json"
    tl.write_text(json.dumps(data))
    ix = tmp_path / "index"
    shutil.copytree(talk["index"], ix)
    code, _, err = run_main(["enroll", "bob", "--from-timeline", tl, "--label", first_pass["unknown"][0],
                             "--index", ix], monkeypatch, capsys)
    assert code == 2 and "gone.wav" in err and "AUDIO" in err
    code, out, err = run_main(["enroll", "bob", "--from-timeline", tl, "--label", first_pass["unknown"][0],
                               "--index", ix, moved], monkeypatch, capsys)
    assert code == 0, err
    assert "enrolled" in out and "bob" in SpeakerIndex.open(ix).speakers()


def _err(args, monkeypatch, capsys) -> str:
    code, out, err = run_main(args, monkeypatch, capsys)
    assert code == 2, (out, err)
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    return err


def test_enroll_from_timeline_errors(talk, first_pass, tmp_path, monkeypatch, capsys) -> None:
    ix = tmp_path / "index"
    shutil.copytree(talk["index"], ix)
    base = ["enroll", "x", "--from-timeline", first_pass["json"], "--index", ix]
    assert "no speaker 'unknown-7'" in _err([*base, "--label", "unknown-7"], monkeypatch, capsys)
    assert "--label" in _err(base, monkeypatch, capsys)
    # speaker-2 talks only while speaker-1 does: no solo speech
    inside = {"file": str(talk["wav"]), "turns": [
        {"start_s": 0.5, "end_s": 10.0, "speaker": "speaker-1", "known": False, "score": None},
        {"start_s": 2.0, "end_s": 5.0, "speaker": "speaker-2", "known": False, "score": None}]}
    tl = tmp_path / "inside.json"
    tl.write_text(json.dumps(inside))
    assert "never talks alone" in _err(["enroll", "x", "--from-timeline", tl, "--label", "speaker-2", "--index", ix],
                                       monkeypatch, capsys)
    gone = tmp_path / "gone.json"
    gone.write_text(json.dumps({**inside, "file": str(tmp_path / "nowhere.wav")}))
    assert "nowhere.wav" in _err(["enroll", "x", "--from-timeline", gone, "--label", "speaker-1", "--index", ix],
                                 monkeypatch, capsys)
    assert "no such audio file" in _err(["enroll", "x", "--from-timeline", tl, "--label", "speaker-1", "--index", ix,
                                         tmp_path / "nope.wav"], monkeypatch, capsys)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "not a diarize --json output" in _err(["enroll", "x", "--from-timeline", bad, "--label", "a",
                                                  "--index", ix], monkeypatch, capsys)
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"files": [inside, {**inside, "file": "other.wav"}], "failures": []}))
    assert "2 recordings" in _err(["enroll", "x", "--from-timeline", many, "--label", "speaker-1", "--index", ix],
                                  monkeypatch, capsys)
    other = tmp_path / "ge2e"
    SpeakerIndex.create(other, IndexSpec(model="ge2e", weights_sha256="0" * 64, dim=256)).close()
    msg = _err(["enroll", "x", "--from-timeline", first_pass["json"], "--label", first_pass["unknown"][0],
                "--index", other], monkeypatch, capsys)
    assert "ge2e" in msg and "campplus" in msg
    assert "campplus" in _err([*base, "--label", first_pass["unknown"][0], "--model", "ge2e"], monkeypatch, capsys)
    assert "--from-timeline" in _err(["enroll", "x", "--label", "a", "--index", ix, talk["wav"]], monkeypatch, capsys)
    assert "give the clips" in _err(["enroll", "x", "--index", ix], monkeypatch, capsys)
    assert len(SpeakerIndex.open(ix).speakers()) == 7  # nothing was added by any of these


# --- identify's multi-speaker flag --------------------------------------------------------------


def _two_voices(a: np.ndarray, b: np.ndarray, each_s: float = 5.0) -> np.ndarray:
    n = int(each_s * SR)
    return np.concatenate([a[:n], np.zeros(SR // 4, np.float32), b[:n]])


def test_identify_flags_a_clip_with_two_voices(talk, tmp_path, monkeypatch, capsys) -> None:
    single, mix = tmp_path / "single.wav", tmp_path / "mix.wav"
    sf.write(single, talk["a_audio"][int(ENROL_S * SR):], SR, subtype="PCM_16")
    sf.write(mix, _two_voices(talk["a_audio"][int(ENROL_S * SR):], talk["b_audio"][int(ENROL_S * SR):]), SR,
             subtype="PCM_16")
    code, out, err = run_main(["identify", single, mix, "--index", talk["index"], "--json"], monkeypatch, capsys)
    assert code == 0, err
    one, two = (json.loads(line) for line in out.splitlines())
    assert one["multi_speaker"] is False and one["speaker"] == talk["A"]
    assert not any(w.startswith("multi_speaker") for w in one["warnings"])
    assert two["multi_speaker"] is True
    assert any(w.startswith("multi_speaker: 2 voices") for w in two["warnings"])
    assert f"{mix}: multi_speaker: 2 voices" in " ".join(err.split())
    code, out, err = run_main(["identify", mix, "--index", talk["index"], "--json", "--no-speaker-check"],
                              monkeypatch, capsys)
    assert code == 0 and json.loads(out)["multi_speaker"] is None and "multi_speaker" not in err
    code, out, err = run_main(["identify", mix, "--index", talk["index"]], monkeypatch, capsys)  # the table
    assert code == 0 and "multi_speaker: 2 voices" in " ".join(err.split())


def _rows(librispeech) -> list[dict]:
    with open(librispeech / "speakers.csv", newline="") as f:
        return sorted(csv.DictReader(f), key=lambda r: r["file"])


@pytest.mark.slow
def test_multi_speaker_flag_rates_on_real_speech(librispeech) -> None:
    """No single-speaker librispeech utterance is flagged (40 of them, 1.6 to 17 s); 2-speaker
    mixes of 5 s + 5 s (the next 30 speakers, in pairs) are."""
    check = SpeakerCheck()
    rows = _rows(librispeech)
    clips = [sf.read(librispeech / r["file"], dtype="float32")[0] for r in rows[:70]]
    flagged = [i for i, x in enumerate(clips[:40]) if check(x, SR).multi_speaker]
    assert flagged == [], [rows[i]["file"] for i in flagged]
    mixes = [_two_voices(clips[40 + 2 * i], clips[41 + 2 * i]) for i in range(15)]
    counts = [check(x, SR) for x in mixes]
    assert sum(c.multi_speaker for c in counts) >= 13, [c.speakers for c in counts]
    assert all(c.speakers is None for c in [check(clips[0][: SR // 4], SR)])  # under 0.5 s: not checked

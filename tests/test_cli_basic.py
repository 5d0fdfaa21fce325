"""The command line on real speech: verify, embed to Parquet, models list/info, and the error
contract (one ``error:`` line on stderr, exit code 2, no traceback) for every bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import long_utterances, run_main
from typer.testing import CliRunner

from speakerid import Embedder, available_models, verify
from speakerid.cli import app
from speakerid.errors import ConfigError
from speakerid.models import store

SR = 16000
SIMILAR = re.compile(r"^similar: (-?\d+\.\d+)$")
VERDICT = re.compile(r"^verification: (match|unmatch) \(threshold: (\d+\.\d+), model: (\w+)\)$")


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _models_ready() -> None:
    """Pull once up front, so that no command prints download progress on stderr."""
    store.pull("campplus")
    store.pull("ge2e")
    store.vad_onnx_path()


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def utterances(librispeech) -> list[tuple[str, np.ndarray]]:
    """(speaker, samples) of >= 12 s utterances from three speakers, sorted by file name."""
    return long_utterances(librispeech, 12.0)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory, utterances) -> dict[str, Path]:
    """Halves of one utterance (same speaker), and a clip of another speaker."""
    d = tmp_path_factory.mktemp("wavs")
    (_, x), (_, y) = utterances[0], utterances[1]
    half = len(x) // 2
    paths = {"a1": d / "a1.wav", "a2": d / "a2.wav", "b": d / "b.wav"}
    sf.write(paths["a1"], x[:half], SR)
    sf.write(paths["a2"], x[half:], SR)
    sf.write(paths["b"], y[: len(y) // 2], SR)
    return paths


def _run_subprocess(args: list) -> subprocess.CompletedProcess:
    code = "from speakerid.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120)


def _parse_verify(stdout: str) -> tuple[float, str, float, str]:
    lines = stdout.strip().splitlines()
    assert len(lines) == 2, stdout
    m1, m2 = SIMILAR.match(lines[0]), VERDICT.match(lines[1])
    assert m1 and m2, stdout
    return float(m1.group(1)), m2.group(1), float(m2.group(2)), m2.group(3)


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# --- verify ---------------------------------------------------------------------------


def test_verify_same_speaker_halves_match(runner, wavs) -> None:
    res = runner.invoke(app, ["verify", str(wavs["a1"]), str(wavs["a2"])])
    assert res.exit_code == 0, res.output
    score, verdict, threshold, model = _parse_verify(res.stdout)
    assert verdict == "match" and model == "campplus"
    assert threshold == pytest.approx(Embedder("campplus").default_threshold, abs=5e-4)
    assert score >= threshold


def test_verify_different_speakers_unmatch(runner, wavs) -> None:
    res = runner.invoke(app, ["verify", str(wavs["a1"]), str(wavs["b"])])
    assert res.exit_code == 0, res.output
    score, verdict, threshold, _ = _parse_verify(res.stdout)
    assert verdict == "unmatch" and score < threshold


def test_verify_options(runner, wavs) -> None:
    res = runner.invoke(app, ["verify", str(wavs["a1"]), str(wavs["a2"]), "--threshold", "0.999"])
    assert res.exit_code == 0, res.output
    score, verdict, threshold, _ = _parse_verify(res.stdout)
    assert threshold == 0.999 and verdict == "unmatch" and score < 0.999
    for extra in (["--model", "ge2e"], ["-m", "ge2e", "--no-vad"]):
        res = runner.invoke(app, ["verify", str(wavs["a1"]), str(wavs["a2"]), *extra])
        assert res.exit_code == 0, res.output
        _, verdict, threshold, model = _parse_verify(res.stdout)
        assert model == "ge2e" and threshold == pytest.approx(0.737)


def test_verify_json(runner, wavs) -> None:
    plain = runner.invoke(app, ["verify", str(wavs["a1"]), str(wavs["a2"])])
    res = runner.invoke(app, ["verify", str(wavs["a1"]), str(wavs["a2"]), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["a"] == str(wavs["a1"]) and data["b"] == str(wavs["a2"])
    assert data["model"] == "campplus" and data["match"] is True
    assert data["similarity"] == pytest.approx(_parse_verify(plain.stdout)[0], abs=1e-6)
    assert data["threshold"] == pytest.approx(0.588)
    assert len(data["speech_s"]) == 2 and all(0 < s < 10 for s in data["speech_s"])


def test_verify_library_agrees_with_embeddings(wavs) -> None:
    emb = Embedder("campplus")
    res = verify(wavs["a1"], wavs["a2"], embedder=emb)
    a, b = emb.embed(wavs["a1"]), emb.embed(wavs["a2"])
    assert res.score == pytest.approx(float(a.astype(np.float64) @ b), abs=1e-6)
    assert res.match and res.model == "campplus" and res.threshold == emb.default_threshold
    assert not verify(wavs["a1"], wavs["b"], embedder=emb).match
    assert verify(wavs["a1"], wavs["b"], embedder=emb, threshold=-1.0).match
    with pytest.raises(ConfigError, match="ge2e"):
        verify(wavs["a1"], wavs["a2"], embedder=emb, model="ge2e")


@pytest.mark.slow
def test_verify_other_formats_and_non_ascii_paths(runner, utterances, tmp_path) -> None:
    x = utterances[0][1]
    d = tmp_path / "ünïcødé 话 dir"
    d.mkdir()
    uni = d / "äçé 声音.wav"
    sf.write(uni, x, SR)
    mp3, ogg = tmp_path / "clip.mp3", tmp_path / "clip.ogg"
    sf.write(mp3, x, SR, format="MP3")
    sf.write(ogg, x, SR, format="OGG", subtype="VORBIS")
    for a, b in [(uni, uni), (mp3, uni), (ogg, uni), (mp3, ogg)]:
        res = runner.invoke(app, ["verify", str(a), str(b)])
        assert res.exit_code == 0, res.output
        score, verdict, _, _ = _parse_verify(res.stdout)
        assert verdict == "match" and score > 0.9, (a, b, score)


# --- bad inputs: one error line, exit 2 -------------------------------------------------


def _bad_inputs(d: Path, speech: np.ndarray) -> dict[str, Path]:
    good = d / "good.wav"
    sf.write(good, speech[: 4 * SR], SR)
    bad = {
        "missing": d / "missing.wav",
        "directory": d / "a_directory.wav",
        "empty": d / "empty.wav",
        "zero_samples": d / "zero.wav",
        "truncated": d / "truncated.wav",
        "random": d / "random.wav",
        "short": d / "short.wav",
        "silence": d / "silence.wav",
        "nan": d / "nan.wav",
    }
    bad["directory"].mkdir()
    bad["empty"].write_bytes(b"")
    sf.write(bad["zero_samples"], np.zeros(0, np.float32), SR)
    bad["truncated"].write_bytes(good.read_bytes()[:30])
    bad["random"].write_bytes(np.random.default_rng(0).bytes(20_000))
    sf.write(bad["short"], speech[SR : SR + SR // 20], SR)  # 50 ms: under MIN_EMBED_MS, never embedded
    sf.write(bad["silence"], np.zeros(3 * SR, np.float32), SR)
    nan = speech[: 3 * SR].copy()
    nan[100:200] = np.nan
    sf.write(bad["nan"], nan, SR, subtype="FLOAT")
    return {"good": good, **bad}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, utterances) -> dict[str, Path]:
    # a long directory name: error lines must not be wrapped at the terminal width
    d = tmp_path_factory.mktemp("bad-inputs-with-a-rather-long-directory-name-to-exceed-eighty-columns")
    return _bad_inputs(d, utterances[0][1])


BAD = {
    "missing": "not found",
    "directory": "not a regular file",
    "empty": "empty",
    "zero_samples": "no samples",
    "truncated": "cannot decode",
    "random": "cannot decode",
    "short": "less than the 100 ms",  # a short clip of speech (0.1-0.5 s) is embedded, with a warning
    "silence": "no speech",
    "nan": "NaN",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_one_error_line_and_exit_2(case, bad_files, monkeypatch, capsys) -> None:
    for args in (["verify", bad_files[case], bad_files["good"]], ["verify", bad_files["good"], bad_files[case]]):
        code, out, err = run_main(args, monkeypatch, capsys)
        assert code == 2, (case, out, err)
        line = _one_error_line(err)
        assert BAD[case].lower() in line.lower(), line
        assert str(bad_files[case]) in line  # says which file
        assert out == ""


@pytest.mark.slow
def test_error_contract_in_a_real_process(bad_files, tmp_path) -> None:
    cases = [
        (["verify", bad_files["missing"], bad_files["good"]], "not found"),
        (["verify", bad_files["random"], bad_files["good"]], "cannot decode"),
        (["verify", bad_files["good"], bad_files["good"], "--model", "nope"], "unknown model 'nope'"),
        (["embed", bad_files["directory"], "--out", tmp_path / "x.parquet"], "no audio files"),
    ]
    for args, text in cases:
        proc = _run_subprocess(args)
        assert proc.returncode == 2, proc
        assert text in _one_error_line(proc.stderr)
        assert proc.stdout == ""


def test_unknown_model_is_one_line(monkeypatch, capsys, bad_files) -> None:
    for args in (["models", "info", "nope"], ["models", "pull", "nope"],
                 ["verify", bad_files["good"], bad_files["good"], "-m", "nope"]):
        code, _, err = run_main(args, monkeypatch, capsys)
        assert code == 2
        # the built-in models, and any the user added to this store (the tests share the user's cache)
        names = available_models()
        assert {"campplus", "campplus-int8", "ge2e"} <= set(names)
        assert _one_error_line(err) == f"error: unknown model 'nope'; available: {', '.join(names)}"


# --- embed to Parquet -------------------------------------------------------------------


def test_embed_directory_to_parquet(runner, utterances, tmp_path) -> None:
    d = tmp_path / "corpus"
    (d / "sub" / "deeper").mkdir(parents=True)
    (_, x), (_, y), (_, z) = utterances
    sf.write(d / "a.wav", x[: 5 * SR], SR)
    sf.write(d / "sub" / "b.flac", y[: 6 * SR], SR)
    sf.write(d / "sub" / "deeper" / "c.ogg", z[: 4 * SR], SR, format="OGG", subtype="VORBIS")
    sf.write(d / "sub" / "silence.wav", np.zeros(3 * SR, np.float32), SR)
    (d / "sub" / "deeper" / "random.wav").write_bytes(np.random.default_rng(1).bytes(4000))
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.txt").write_text("not audio")
    out = tmp_path / "out" / "emb.parquet"

    res = runner.invoke(app, ["embed", str(d), "--out", str(out), "--workers", "2"])
    assert res.exit_code == 1, res.output  # three inputs failed: listed, exit 1
    assert "wrote 6 rows" in res.stderr and "(3 failed)" in res.stderr and "3 of 6 clips failed" in res.stderr

    table = pq.read_table(out)
    assert table.column_names == ["path", "duration_s", "speech_s", "model", "embedding", "error", "warnings"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    rows = {Path(r["path"]).relative_to(d).as_posix(): r for r in table.to_pylist()}
    assert sorted(rows) == ["a.wav", "empty.wav", "sub/b.flac", "sub/deeper/c.ogg", "sub/deeper/random.wav",
                            "sub/silence.wav"]
    assert [Path(p).relative_to(d).as_posix() for p in table.column("path").to_pylist()] == sorted(rows)

    emb = Embedder("campplus")
    for name, dur in [("a.wav", 5.0), ("sub/b.flac", 6.0), ("sub/deeper/c.ogg", 4.0)]:
        r = rows[name]
        assert r["error"] is None and r["model"] == "campplus"
        assert r["duration_s"] == pytest.approx(dur, abs=1e-3) and 0 < r["speech_s"] <= dur
        v = np.asarray(r["embedding"], dtype=np.float32)
        assert v.shape == (192,) and abs(np.linalg.norm(v) - 1) < 1e-5
        np.testing.assert_allclose(v, emb.embed(d / name), atol=1e-5)
    for name, kind in [("empty.wav", "AudioDecodeError"), ("sub/deeper/random.wav", "AudioDecodeError"),
                       ("sub/silence.wav", "NoSpeechError")]:
        r = rows[name]
        assert r["error"].startswith(f"{kind}: ") and name.split("/")[-1] in r["error"]
        assert r["embedding"] is None and r["duration_s"] is None and r["model"] == "campplus"


def test_embed_files_and_bad_arguments(runner, utterances, tmp_path, monkeypatch, capsys) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, utterances[0][1][: 4 * SR], SR)
    out = tmp_path / "two.parquet"
    res = runner.invoke(app, ["embed", str(good), str(tmp_path / "missing.wav"), "--out", str(out),
                              "--workers", "1", "--no-vad", "-m", "ge2e"])
    assert res.exit_code == 1, res.output  # the missing clip is listed
    rows = pq.read_table(out).to_pylist()
    assert [r["path"] for r in rows] == [str(good), str(tmp_path / "missing.wav")]
    assert rows[0]["error"] is None and len(rows[0]["embedding"]) == 256 and rows[0]["model"] == "ge2e"
    assert rows[1]["error"].startswith("AudioNotFoundError: ")

    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    (empty_dir / "readme.txt").write_text("x")
    for args, text in [
        (["embed", empty_dir, "--out", tmp_path / "x.parquet"], "no audio files"),
        (["embed", good, "--out", tmp_path / "x.csv"], ".parquet"),
    ]:
        code, _, err = run_main(args, monkeypatch, capsys)
        assert code == 2 and text in _one_error_line(err)
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "x.csv").exists()


# --- models ---------------------------------------------------------------------------


def test_models_list_and_info(runner) -> None:
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0, res.output
    # one row per model; an indented line under a row says why it is not cached (e.g. a
    # campplus-int8 built for another CPU kind is stale here), so it is not a row
    rows = {line.split()[0]: line.split()[1] for line in res.stdout.splitlines() if line.strip() and not line[0].isspace()}
    assert list(rows) == available_models()  # the built-ins, then any model the user added to this store
    assert {"campplus", "campplus-int8", "ge2e"} <= set(rows)
    assert rows["campplus"] == rows["ge2e"] == "cached"

    res = runner.invoke(app, ["models", "info", "campplus"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["name"] == "campplus" and info["cached"] is True and info["dim"] == 192
    assert info["frontend"] == "kaldi_fbank" and info["default_threshold"] == pytest.approx(0.588)
    assert info["spec"]["weights_sha256"] == info["weights_sha256"]
    assert info["spec"]["sample_rate_hz"] == SR and info["spec"]["dim"] == 192

    res = runner.invoke(app, ["models", "pull", "campplus"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("campplus ready: 192-d, front end kaldi_fbank")


def test_usage_errors_exit_2_without_traceback() -> None:
    import subprocess
    import sys

    for args in (["verify"], ["verify", "a.wav", "b.wav", "--bogus"]):
        proc = subprocess.run([sys.executable, "-m", "speakerid.cli", *args], capture_output=True, text=True)
        assert proc.returncode == 2, args
        assert "Traceback" not in proc.stderr
        assert "Missing argument" in proc.stderr or "No such option" in proc.stderr

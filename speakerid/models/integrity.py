"""The integrity of a cached model: every file's size and sha256 against its ``spec.json``.

:func:`file_problem` checks the files of a spec that records checksums (spec version 2): sizes
first (a truncated file is found without reading it), then the full sha256. A user model whose
spec predates checksums (version 1) is verified as far as it can be by :func:`v1_user_check`.
Whether a built-in model is stale (other weights, another converter) is the store's call
(speakerid.models.store).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import sha256_bytes
from ..errors import ConfigError
from .spec import ONNX_FILE, SPEC_FILE, ModelSpec

#: States of a model in the cache (``info(name)["state"]``).
CACHED = "cached"  # every file matches the checksums in spec.json
CORRUPT = "corrupt"  # spec.json unreadable, or a file missing or not matching its checksum
STALE = "stale"  # built-in model cached by another converter, other weights, or without checksums
NOT_PULLED = "not pulled"


def file_checksum(path: Path, chunk: int = 1 << 20) -> dict[str, Any]:
    """``{"sha256": hex digest, "size": bytes}`` of one file, from a single read (so the two agree;
    :func:`speakerid._io.sha256_file` gives the digest alone)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            size += len(block)
    return {"sha256": h.hexdigest(), "size": size}


def checksums(directory: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The ``checksums`` entry of a spec: size and sha256 of each named file in ``directory``."""
    return {n: file_checksum(directory / n) for n in sorted(set(names))}


@dataclass(frozen=True)
class Check:
    """What the cache holds for one model, after checking its files."""

    state: str
    problem: str = ""
    spec: ModelSpec | None = None
    #: Checksums to record in a version-1 spec of a user model whose files checked out.
    record: dict[str, dict[str, Any]] | None = None


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def short_digest(digest: object) -> str:
    return f"{str(digest)[:16]}…"


def file_problem(d: Path, spec: ModelSpec) -> str:
    """Why the files of ``spec`` in ``d`` do not match its checksums ("" when they all do)."""
    sums = spec.checksums
    if not isinstance(sums, dict) or not isinstance(spec.files, dict):
        return f"{SPEC_FILE} has malformed checksums or files"
    for name in [ONNX_FILE, *spec.files.values()]:
        if name not in sums:
            return f"{SPEC_FILE} records no checksum for {name}"
    for name, rec in sums.items():
        ok = (_plain_name(name) and isinstance(rec, dict) and isinstance(rec.get("sha256"), str)
              and type(rec.get("size")) is int)
        if not ok:
            return f"{SPEC_FILE} has a malformed checksum entry for {name!r}"
    # sizes first: a truncated or missing file is found without reading anything
    for name, rec in sorted(sums.items()):
        try:
            size = (d / name).stat().st_size
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as exc:
            return f"{name}: {exc}"
        if size != rec["size"]:
            return f"{name} is {size} bytes, expected {rec['size']}"
    for name, rec in sorted(sums.items()):
        try:
            got = file_checksum(d / name)
        except OSError as exc:
            return f"{name}: {exc}"
        if got != {"sha256": rec["sha256"], "size": rec["size"]}:
            return f"{name} has sha256 {short_digest(got['sha256'])}, expected {short_digest(rec['sha256'])}"
    return ""


def v1_user_check(d: Path, spec: ModelSpec) -> Check:
    """A user model whose spec predates checksums: verify what can be verified, then record."""
    try:
        onnx_sum = file_checksum(d / ONNX_FILE)
    except OSError as exc:
        return Check(CORRUPT, f"{ONNX_FILE}: {exc}", spec)
    if onnx_sum["sha256"] != spec.weights_sha256:  # a byte copy of the file it was added from
        return Check(CORRUPT, f"{ONNX_FILE} has sha256 {short_digest(onnx_sum['sha256'])}, expected "
                     f"{short_digest(spec.weights_sha256)} (the file it was added from)", spec)
    record = {ONNX_FILE: onnx_sum}
    if not isinstance(spec.files, dict) or not isinstance(spec.frontend_options, dict):
        return Check(CORRUPT, f"{SPEC_FILE} has malformed files or frontend_options", spec)
    try:
        bins = _extra_file_size(spec)
    except ConfigError as exc:
        return Check(CORRUPT, f"{SPEC_FILE}: {exc}", spec)
    for role, fname in sorted(spec.files.items()):
        if not _plain_name(fname):
            return Check(CORRUPT, f"{SPEC_FILE}: bad file name {fname!r} for {role}", spec)
        try:
            data = (d / fname).read_bytes()
        except OSError as exc:
            return Check(CORRUPT, f"{fname}: {exc}", spec)
        if fname.endswith(".npy"):
            import numpy as np

            try:
                arr = np.asarray(np.load(io.BytesIO(data), allow_pickle=False), dtype=np.float64).reshape(-1)
            except (OSError, ValueError, TypeError) as exc:
                return Check(CORRUPT, f"{fname} is not a readable .npy file: {exc}", spec)
            if bins is not None and arr.size != bins:
                return Check(CORRUPT, f"{fname} has {arr.size} values, expected {bins}", spec)
            if not np.all(np.isfinite(arr)) or (role == "std" and np.any(arr <= 0)):
                return Check(CORRUPT, f"{fname} holds unusable values (non-finite, or a std <= 0)", spec)
        record[fname] = {"sha256": sha256_bytes(data), "size": len(data)}
    return Check(CACHED, spec=spec, record=record)


def _extra_file_size(spec: ModelSpec) -> int | None:
    """Values each extra file of ``spec``'s front end must hold (None: unknown or unchecked)."""
    from ..features import FRONT_ENDS

    cls = FRONT_ENDS.get(spec.frontend) if isinstance(spec.frontend, str) else None
    if cls is None or not cls.files:
        return None
    from ..config import from_mapping

    return cls.file_size(from_mapping(cls.options_type, spec.frontend_options, f"{cls.name} options"))

"""The threshold record an index stores with each version: the default decision threshold,
how it was chosen, what it rests on, why it may be unreliable and which names look like one
voice. :func:`speakerid.calibration.calibrate_open_set` is what normally sets it."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .storage import now

__all__ = ["EMPTY", "threshold_record"]

#: The record of an index whose threshold was never set.
EMPTY: dict[str, Any] = {"value": None, "method": None, "set_at": None}


def _near_duplicates(items: Sequence[tuple[str, str, float]]) -> list[list[Any]]:
    out = []
    for item in items:
        try:
            a, b, c = item
        except (TypeError, ValueError):
            raise ConfigError(f"a near duplicate is (speaker, speaker, cosine), got {item!r}") from None
        if not isinstance(a, str) or not isinstance(b, str) or not isinstance(c, numbers.Real):
            raise ConfigError(f"a near duplicate is (speaker: str, speaker: str, cosine), got {item!r}")
        out.append([a, b, float(c)])
    return out


def threshold_record(
    value: float | None,
    method: str,
    *,
    basis: str | None = None,
    warnings: Sequence[str] = (),
    near_duplicates: Sequence[tuple[str, str, float]] = (),
) -> dict[str, Any]:
    """The manifest's threshold record for these arguments (ConfigError if one is invalid).

    ``basis``, ``warnings`` and ``near_duplicates`` are only stored when given, so that
    indexes written before they existed and after read the same.
    """
    if basis is not None and (not isinstance(basis, str) or not basis.strip()):
        raise ConfigError(f"basis must be None or a non-empty string, got {basis!r}")
    if isinstance(warnings, str) or not all(isinstance(w, str) for w in warnings):
        raise ConfigError("warnings must be a sequence of strings")
    dups = _near_duplicates(near_duplicates)
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not -1.0 <= float(value) <= 1.0:
            raise ConfigError(f"threshold must be a cosine in [-1, 1] or None, got {value!r}")
        value = float(value)
    if not isinstance(method, str) or not method.strip():
        raise ConfigError("method must say how the threshold was set (a non-empty string)")
    record: dict[str, Any] = {"value": value, "method": method, "set_at": now().isoformat()}
    if basis is not None:
        record["basis"] = basis
    if warnings:
        record["warnings"] = list(warnings)
    if dups:
        record["near_duplicates"] = dups
    return record

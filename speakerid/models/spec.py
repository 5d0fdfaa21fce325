"""The spec that travels beside every ONNX file in the model store (``spec.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._io import SHARED_FILE, write_json
from ..errors import ModelError

SPEC_FILE = "spec.json"
ONNX_FILE = "model.onnx"
#: 2: ``checksums`` (size and sha256 of every file of the model) added. A version-1 spec has none.
SPEC_VERSION = 2


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to turn audio into this model's embedding, and to recognise it."""

    name: str
    dim: int
    sample_rate_hz: int
    #: Front end: a key of speakerid.features.FRONT_ENDS ("kaldi_fbank", "ge2e_mel", "autospeech").
    frontend: str
    #: Options of the front end (the fields of its options dataclass, ``FrontEnd.options_type``).
    frontend_options: dict[str, Any]
    #: sha256 of the source weights (the checkpoint, or the user's ONNX file).
    weights_sha256: str
    converter_version: str
    #: Cosine threshold for verification (same speaker when score >= threshold).
    default_threshold: float
    input_name: str = "feats"
    output_name: str = "embedding"
    source: str = ""
    license: str = ""
    description: str = ""
    #: Extra files beside the ONNX file, by role (e.g. {"mean": "mean.npy"}).
    files: dict[str, str] = field(default_factory=dict)
    #: Every file of the model (the ONNX file and the ``files`` above) by file name, as written
    #: into the store: {"model.onnx": {"sha256": "...", "size": 27486605}}. Checked before use
    #: (speakerid.models.store); empty in specs written before SPEC_VERSION 2.
    checksums: dict[str, dict[str, Any]] = field(default_factory=dict)
    builtin: bool = True
    spec_version: int = SPEC_VERSION

    def save(self, directory: Path) -> Path:
        path = directory / SPEC_FILE
        write_json(path, asdict(self), SHARED_FILE)  # atomic: readers never see a half-written spec
        return path

    @classmethod
    def load(cls, directory: Path) -> ModelSpec:
        path = directory / SPEC_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"no model spec at {path}") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"unreadable model spec {path}: {exc}") from None
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"{path}: unknown spec keys {sorted(unknown)} (newer speakerid?)")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ModelError(f"{path}: incomplete model spec: {exc}") from None

"""User-added ONNX encoders: ``speakerid models add NAME --onnx FILE --frontend ...``.

Two front ends are offered for models we do not ship:

* ``autospeech``: AutoSpeech (ailia MODELS ``proposed_veri.onnx``): |STFT| (T, 257) standardised
  by the user's mean/std, 300-frame partials, embedding = mean over partials. Needs --mean/--std.
* ``fbank``: Kaldi fbank + mean normalisation for other ONNX speaker models (WeSpeaker exports,
  3D-Speaker exports...), with options from a yaml file such as configs/wespeaker-fbank.yaml.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import features as F
from ..config import from_mapping, load_yaml, to_mapping
from ..errors import ConfigError, ModelError
from .registry import BUILTIN
from .spec import ONNX_FILE, ModelSpec
from .store import _install_dir, _models_dir, checksums

FRONTENDS = ("autospeech", "fbank")
USER_CONVERTER_VERSION = "user-1"


@dataclass(frozen=True)
class UserModelConfig:
    """yaml given with ``--config``: front-end options and the graph's input/output names."""

    frontend_options: dict[str, Any] = field(default_factory=dict)
    input_name: str | None = None
    output_name: str | None = None
    default_threshold: float | None = None
    description: str = ""


def _check_name(name: str) -> None:
    ok = name and name[0].isalnum() and all(c.isalnum() or c in "_-." for c in name)
    if not ok:
        raise ConfigError(f"model name {name!r}: use letters, digits, '_', '-' and '.'")
    if name in BUILTIN or name == "silero_vad":
        raise ConfigError(f"model name {name!r} is taken by a built-in model")


def _load_vector(path: Path | None, what: str, size: int) -> np.ndarray:
    if path is None:
        raise ConfigError(f"the autospeech front end needs --{what} FILE.npy")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc}") from None
    arr = np.asarray(arr, dtype=np.float32).reshape(-1)
    if arr.size != size:
        raise ConfigError(f"{what} file {path} has {arr.size} values, expected {size} (one per STFT bin)")
    if not np.all(np.isfinite(arr)) or (what == "std" and np.any(arr <= 0)):
        raise ConfigError(f"{what} file {path} holds non-finite{' or non-positive' if what == 'std' else ''} values")
    return arr


def _probe_graph(
    path: Path, input_name: str | None, output_name: str | None, probe: np.ndarray, shown: Path | None = None
) -> tuple[str, str, int]:
    """Run ``probe`` through the graph at ``path``; errors name ``shown`` (the user's file)."""
    import onnxruntime as ort

    where = shown or path
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        detail = str(exc).replace(str(path), str(where))  # name the user's file, not our copy
        raise ModelError(f"{where}: not a loadable ONNX model: {detail}") from None
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    iname = input_name or ins[0]
    oname = output_name or outs[0]
    if iname not in ins or oname not in outs:
        raise ModelError(f"{where}: graph has inputs {ins} and outputs {outs}; asked for {iname} -> {oname}")
    try:
        y = sess.run([oname], {iname: probe})[0]
    except Exception as exc:
        raise ModelError(f"{where}: model does not accept input of shape {probe.shape}: {exc}") from None
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[0] != probe.shape[0]:
        raise ModelError(f"{where}: expected an (N, D) embedding output, got shape {y.shape}")
    return iname, oname, int(y.shape[1])


def add_model(
    name: str,
    onnx_file: Path,
    *,
    frontend: str,
    mean: Path | None = None,
    std: Path | None = None,
    config: Path | None = None,
    threshold: float | None = None,
) -> ModelSpec:
    """Copy an ONNX encoder into the store with a spec for its front end."""
    _check_name(name)
    if frontend not in FRONTENDS:
        raise ConfigError(f"unknown front end {frontend!r}; choose one of {', '.join(FRONTENDS)}")
    onnx_file = Path(onnx_file)
    if not onnx_file.is_file():
        raise ConfigError(f"ONNX file not found: {onnx_file}")
    cfg = load_yaml(config, UserModelConfig) if config else UserModelConfig()
    root = _models_dir()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
    try:
        shutil.copyfile(onnx_file, tmp / ONNX_FILE)
        files: dict[str, str] = {}
        if frontend == "autospeech":
            opts = from_mapping(F.AutoSpeechOptions, cfg.frontend_options, "autospeech options")
            bins = opts.n_fft // 2 + 1
            np.save(tmp / "mean.npy", _load_vector(mean, "mean", bins))
            np.save(tmp / "std.npy", _load_vector(std, "std", bins))
            files = {"mean": "mean.npy", "std": "std.npy"}
            probe = np.zeros((2, opts.partial_frames, bins), np.float32)
            kind = "autospeech"
        else:
            if mean is not None or std is not None:
                raise ConfigError("--mean/--std belong to the autospeech front end")
            opts = from_mapping(F.FbankOptions, cfg.frontend_options, "fbank options")
            # run the front end once: options kaldi-native-fbank rejects (window_type...) fail here
            try:
                probe = F.kaldi_fbank(np.zeros(opts.sample_rate_hz * 2, np.float32), opts)[None]
            except Exception as exc:  # kaldi-native-fbank raises RuntimeError/ValueError
                raise ConfigError(f"fbank options {to_mapping(opts)} are not usable: {exc}") from None
            kind = "kaldi_fbank"
        iname, oname, dim = _probe_graph(tmp / ONNX_FILE, cfg.input_name, cfg.output_name, probe, onnx_file)
        t = threshold if threshold is not None else cfg.default_threshold
        # checked before every use (speakerid.models.store); model.onnx is a byte copy of the
        # user's file, so its sha256 is also the spec's weights_sha256
        sums = checksums(tmp, [ONNX_FILE, *files.values()])
        spec = ModelSpec(
            name=name,
            dim=dim,
            sample_rate_hz=opts.sample_rate_hz,
            frontend=kind,
            frontend_options=to_mapping(opts),
            weights_sha256=sums[ONNX_FILE]["sha256"],
            converter_version=USER_CONVERTER_VERSION,
            default_threshold=float(t) if t is not None else 0.5,
            input_name=iname,
            output_name=oname,
            source=str(onnx_file.resolve()),
            description=cfg.description or f"user model ({frontend} front end)",
            files=files,
            checksums=sums,
            builtin=False,
        )
        spec.save(tmp)
        _install_dir(tmp, root / name)
        return spec
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_model(name: str) -> None:
    """Delete a user-added model from the store."""
    if name in BUILTIN:
        raise ConfigError(f"{name} is built in; nothing to remove")
    d = _models_dir() / name
    if not d.is_dir():
        raise ModelError(f"no user model named {name!r}")
    shutil.rmtree(d)

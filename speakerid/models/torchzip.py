"""Read PyTorch checkpoints into numpy arrays without torch and without running pickled code.

Both formats torch.save has written are supported:

* the zip archive (torch >= 1.6): ``<root>/data.pkl`` plus one file per storage;
* the legacy stream: magic number, protocol version, sys info, the pickled object, the list of
  storage keys, then each storage's raw bytes.

The unpickler resolves only an allow-list of globals (ordered dicts, tensor and parameter
rebuild functions, typed storages). Any other global raises :class:`CheckpointError`, so a
malicious checkpoint cannot execute code while being read.

A few checkpoints also pickle metadata objects beside their tensors (pyannote.audio's
``Specifications``, torch's ``TorchVersion``...). Those named in ``_METADATA`` resolve to inert
stand-ins defined here (:class:`PickledMetadata` records the arguments and state it is given,
:class:`TorchVersion` is a plain ``str``): the real classes are never imported, nothing of
theirs runs, and every other global is still refused.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage whose bytes may arrive after the pickle (legacy format)."""

    def __init__(self, dtype: np.dtype, numel: int | None) -> None:
        self.dtype = dtype
        self.numel = numel
        self.array: np.ndarray | None = None


class _LazyTensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialise(self) -> np.ndarray:
        arr = self.storage.array
        if arr is None:
            raise CheckpointError("checkpoint references a storage with no data")
        if not self.size:
            return np.array(arr[self.offset], dtype=arr.dtype)
        extent = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=arr.dtype)
        if extent > arr.size:
            raise CheckpointError("tensor extends past the end of its storage")
        item = arr.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            arr[self.offset :], shape=self.size, strides=tuple(s * item for s in self.stride)
        )
        return np.ascontiguousarray(view).astype(arr.dtype.newbyteorder("="), copy=False)


def _rebuild_tensor(storage, storage_offset, size, stride, *_rest):
    if not isinstance(storage, _Storage) or not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise CheckpointError("tensor rebuilt from something that is not a storage")
    return _LazyTensor(storage, int(storage_offset), size, stride)


def _rebuild_parameter(data, *_rest):
    return data


class TorchVersion(str):
    """Stand-in for ``torch.torch_version.TorchVersion`` (a ``str`` subclass): the version string."""

    __slots__ = ()


class PickledMetadata:
    """Inert stand-in for a metadata object pickled in a checkpoint.

    Calling the stand-in (pickle's REDUCE / NEWOBJ) only records the arguments; restoring its
    state (BUILD) only stores the state. ``qualname`` is the pickled ``module.name``.
    """

    __slots__ = ("args", "kwargs", "state")
    qualname = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledMetadata:
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # everything was recorded by __new__

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.qualname} args={self.args!r} state={self.state!r}>"


def _metadata(module: str, name: str) -> type[PickledMetadata]:
    return type(name, (PickledMetadata,), {"__slots__": (), "qualname": f"{module}.{name}"})


#: Metadata globals that resolve to stand-ins (never to the real class).
_METADATA: dict[tuple[str, str], type] = {
    ("torch.torch_version", "TorchVersion"): TorchVersion,
    **{
        ("pyannote.audio.core.task", name): _metadata("pyannote.audio.core.task", name)
        for name in ("Specifications", "Problem", "Resolution")
    },
}


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **_METADATA,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(
            f"checkpoint wants to load {module}.{name}, which is not a tensor or a dict; "
            "refusing to run pickled code"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointError(f"unexpected persistent id in checkpoint: {pid!r:.80}")
        storage_type, key = pid[1], str(pid[2])
        numel = int(pid[4]) if len(pid) > 4 else None
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError("storage of an unsupported type in checkpoint")
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError("storage views are not supported")
        st = self._storages.get(key)
        if st is None:
            st = self._storages[key] = _Storage(storage_type.dtype, numel)
        return st


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialise()
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _materialise(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialise(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v) for v in obj)
    if isinstance(obj, PickledMetadata):
        obj.state = _materialise(obj.state)
    return obj


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise CheckpointError(f"{path.name}: no single data.pkl in the archive")
        root = pkl[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        try:
            obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), storages).load()
        except CheckpointError:
            raise
        except Exception as exc:  # malformed pickle: any unpickling failure is a bad checkpoint
            raise CheckpointError(f"{path.name}: unreadable torch checkpoint: {exc}") from None
        for key, st in storages.items():
            try:
                raw = zf.read(f"{root}data/{key}")
            except KeyError:
                raise CheckpointError(f"{path.name}: storage {key} missing from archive") from None
            st.array = np.frombuffer(raw, dtype=st.dtype)
    return _materialise(obj)


def _load_legacy(path: Path) -> Any:
    with open(path, "rb") as f:
        storages: dict[str, _Storage] = {}
        try:
            magic = _RestrictedUnpickler(f, storages).load()
            if magic != _LEGACY_MAGIC:
                raise CheckpointError(f"{path.name}: not a torch checkpoint (bad magic number)")
            _RestrictedUnpickler(f, storages).load()  # protocol version
            _RestrictedUnpickler(f, storages).load()  # sys info
            obj = _RestrictedUnpickler(f, storages).load()
            keys = _RestrictedUnpickler(f, storages).load()
        except CheckpointError:
            raise
        except Exception as exc:  # malformed pickle: any unpickling failure is a bad checkpoint
            raise CheckpointError(f"{path.name}: unreadable torch checkpoint: {exc}") from None
        for key in keys:
            st = storages.get(str(key))
            if st is None:
                raise CheckpointError(f"{path.name}: storage {key} listed but never used")
            head = f.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path.name}: truncated storage data")
            (numel,) = struct.unpack("<q", head)
            raw = f.read(numel * st.dtype.itemsize)
            if len(raw) != numel * st.dtype.itemsize:
                raise CheckpointError(f"{path.name}: truncated storage data")
            st.array = np.frombuffer(raw, dtype=st.dtype)
    return _materialise(obj)


def load_checkpoint(path: str | Path) -> Any:
    """Load a torch checkpoint as nested dicts of numpy arrays, executing no pickled code."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        return _load_zip(p) if zipfile.is_zipfile(p) else _load_legacy(p)
    except CheckpointError:
        raise
    except Exception as exc:  # bad sizes, strides or archive members: a malformed checkpoint
        raise CheckpointError(f"{p.name}: malformed torch checkpoint: {exc}") from None


def state_dict(path: str | Path, key: str | None = None) -> dict[str, np.ndarray]:
    """The ``{name: array}`` state dict in a checkpoint (under ``key`` if given)."""
    obj = load_checkpoint(path)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise CheckpointError(f"{Path(path).name}: no '{key}' entry in checkpoint")
        obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{Path(path).name}: checkpoint is not a state dict")
    out = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not out:
        raise CheckpointError(f"{Path(path).name}: checkpoint holds no tensors")
    return out

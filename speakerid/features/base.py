"""What a front end is: its options, the features of one window of speech, and how the encoder's
outputs for that window become the window's embedding.

A model's spec names its front end (``spec.frontend``, a key of
:data:`speakerid.features.FRONT_ENDS`) and holds its options (``spec.frontend_options``, the
fields of :attr:`FrontEnd.options_type`); :func:`speakerid.features.front_end_for` builds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..config import from_mapping
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..models.spec import ModelSpec


class FrontEnd:
    """One model's front end: ``features(speech)`` is pure and thread-safe (no model run).

    The encoder takes :meth:`batch` of the features; :meth:`reduce` turns its outputs for one
    window into that window's (unnormalised) embedding.
    """

    #: The front end's name in a model spec (``spec.frontend``).
    name: ClassVar[str]
    #: Its frozen options dataclass; ``spec.frontend_options`` holds its fields.
    options_type: ClassVar[type]
    #: Its name for ``speakerid models add --frontend`` ("" when not offered for user models).
    user_name: ClassVar[str] = ""
    #: Whether the encoder takes fixed-length partials (several per window, batchable across
    #: clips) rather than a whole variable-length window.
    partials: ClassVar[bool] = False
    #: Extra files it needs from the model directory, by role in ``spec.files`` (``.npy`` vectors
    #: passed to the constructor as keyword arguments).
    files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Any) -> None:
        if not isinstance(options, self.options_type):
            raise ConfigError(f"{self.name} takes {self.options_type.__name__}, got {type(options).__name__}")
        self.options = options

    @classmethod
    def from_spec(cls, spec: ModelSpec, model_dir: Path) -> FrontEnd:
        """The front end of ``spec``, its extra files read from ``model_dir``."""
        options = from_mapping(cls.options_type, spec.frontend_options, f"{cls.name} options")
        try:
            arrays = {role: np.load(model_dir / spec.files[role]).astype(np.float32) for role in cls.files}
        except (KeyError, OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"model {spec.name}: cannot read its {'/'.join(cls.files)} files: {exc}") from None
        return cls(options, **arrays)

    @classmethod
    def file_size(cls, options: Any) -> int | None:
        """Values each of :attr:`files` must hold under ``options`` (None: no fixed size)."""
        return None

    @classmethod
    def probe(cls, options: Any) -> np.ndarray:
        """A small encoder input of the right shape (silence), to check an ONNX graph with."""
        raise NotImplementedError

    def features(self, speech: np.ndarray) -> np.ndarray:
        """One window of speech (float32, mono, at the model's rate) -> the encoder's features."""
        raise NotImplementedError

    def batch(self, features: np.ndarray) -> np.ndarray:
        """The encoder input for one window: the window as a batch of one."""
        return features[None]

    def reduce(self, outputs: np.ndarray) -> np.ndarray:
        """The encoder's outputs for one window -> its (unnormalised) embedding."""
        return outputs[0]


class PartialsFrontEnd(FrontEnd):
    """A front end cutting each window into fixed-length partials ``(n, frames, bins)``."""

    partials = True

    def batch(self, features: np.ndarray) -> np.ndarray:
        return features

    def reduce(self, outputs: np.ndarray) -> np.ndarray:
        # AutoSpeech (ailia sample, VITA-Group validate_verification) and Resemblyzer both
        # average the network's outputs over the partials.
        return outputs.mean(axis=0)

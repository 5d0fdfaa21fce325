"""Acoustic front ends: samples (float32, mono, 16 kHz, [-1, 1]) -> feature matrices.

One module per front end, each a :class:`FrontEnd` subclass with its options dataclass:

* :mod:`.kaldi` -- ``kaldi_fbank``: Kaldi log-mel fbank + mean normalisation (CAM++, user ``fbank``);
* :mod:`.ge2e` -- ``ge2e_mel``: Resemblyzer's linear mel partials (GE2E);
* :mod:`.autospeech` -- ``autospeech``: AutoSpeech's standardised |STFT| partials (user models).

The options of a model travel in its spec (``spec.frontend`` names the front end here,
``spec.frontend_options`` holds its options; see speakerid.models.spec), never as call-site
flags. :data:`FRONT_ENDS` is the one place a front-end name is looked up: the embedder, the
model store and user-added models all go through the functions below.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import from_mapping, to_mapping
from ..errors import ConfigError
from ._spectral import normalize_volume
from .autospeech import AutoSpeech, AutoSpeechOptions, autospeech_partials, autospeech_spectrogram
from .base import FrontEnd, PartialsFrontEnd
from .ge2e import Ge2eMel, Ge2eMelOptions, ge2e_mel, ge2e_partial_starts, ge2e_partials, mel_filterbank
from .kaldi import WINDOW_TYPES, FbankOptions, KaldiFbank, kaldi_fbank

if TYPE_CHECKING:
    from ..models.spec import ModelSpec

__all__ = [
    "FRONT_ENDS", "USER_FRONT_ENDS", "WINDOW_TYPES", "AutoSpeech", "AutoSpeechOptions", "FbankOptions",
    "FrontEnd", "Ge2eMel", "Ge2eMelOptions", "KaldiFbank", "PartialsFrontEnd", "autospeech_partials",
    "autospeech_spectrogram", "complete_options", "front_end_class", "front_end_for", "ge2e_mel",
    "ge2e_partial_starts", "ge2e_partials", "kaldi_fbank", "mel_filterbank", "normalize_volume",
    "options_class", "user_front_end",
]

#: Every front end by its name in model specs (``spec.frontend``).
FRONT_ENDS: dict[str, type[FrontEnd]] = {c.name: c for c in (KaldiFbank, Ge2eMel, AutoSpeech)}
#: The front ends offered for user-added models, by their ``speakerid models add --frontend`` name.
USER_FRONT_ENDS: dict[str, type[FrontEnd]] = {c.user_name: c for c in FRONT_ENDS.values() if c.user_name}


def _lookup(table: dict[str, type[FrontEnd]], name: str) -> type[FrontEnd]:
    try:
        return table[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name from a malformed spec
        raise ConfigError(f"unknown front end {name!r}; choose one of {', '.join(table)}") from None


def front_end_class(name: str) -> type[FrontEnd]:
    """The front end called ``name`` in model specs; ConfigError listing the choices if none is."""
    return _lookup(FRONT_ENDS, name)


def user_front_end(name: str) -> type[FrontEnd]:
    """The front end ``speakerid models add --frontend name`` means (``fbank``, ``autospeech``)."""
    return _lookup(USER_FRONT_ENDS, name)


def options_class(name: str) -> type:
    """The options dataclass of the front end ``name`` (a spec name)."""
    return front_end_class(name).options_type


def complete_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option of front end ``name``, defaults included (so a spec describes it fully)."""
    return to_mapping(from_mapping(options_class(name), dict(options), f"{name} options"))


def front_end_for(spec: ModelSpec, model_dir: Path) -> FrontEnd:
    """The front end of the model ``spec`` describes, with its extra files from ``model_dir``."""
    try:
        cls = front_end_class(spec.frontend)
    except ConfigError as exc:
        raise ConfigError(f"model {spec.name}: {exc}") from None
    return cls.from_spec(spec, Path(model_dir))

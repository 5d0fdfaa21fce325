"""An index together with an embedder of its model: what identification and indexing need."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .gallery import SpeakerIndex
from .spec import check_model

if TYPE_CHECKING:
    from ..config import AudioOptions, EmbedOptions, VadOptions
    from ..embedder import Embedder

__all__ = ["open_with_embedder"]


def open_with_embedder(
    directory: str | os.PathLike[str],
    *,
    model: str | None = None,
    embedder: Embedder | None = None,
    writable: bool = False,
    wait_s: float | None = 0.0,
    verify: bool = True,
    audio: AudioOptions | None = None,
    vad: VadOptions | None = None,
    embed: EmbedOptions | None = None,
) -> tuple[SpeakerIndex, Embedder]:
    """Open the index at ``directory`` and an :class:`~speakerid.embedder.Embedder` of the
    model it was built with; raises ModelMismatchError unless both agree on model, weights
    and dim.

    ``model``, when given, is the model the caller expects the index to hold. ``embedder``
    reuses a loaded model instead of loading the index's (it must then run that model, with
    the same weights); otherwise one is made with ``audio``/``vad``/``embed`` (the library's
    defaults when None). ``writable``, ``wait_s`` and ``verify`` are those of
    :meth:`SpeakerIndex.open`. The index is closed again if anything fails.
    """
    if embedder is not None:
        if any(o is not None for o in (audio, vad, embed)):
            raise ConfigError("give either an embedder or the options to make one, not both")
        if model is not None and model != embedder.model:
            raise ConfigError(f"model={model!r} but the embedder given runs {embedder.model!r}")
        model = embedder.model
    # identification's lazily imported modules, now rather than on the first query (~60 ms)
    from .. import identify  # noqa: F401
    from ..calibration import duration  # noqa: F401

    index = SpeakerIndex.open(directory, model=model, writable=writable, wait_s=wait_s, verify=verify)
    try:
        if embedder is None:
            from ..embedder import Embedder

            options = {k: v for k, v in (("audio", audio), ("vad", vad), ("embed", embed)) if v is not None}
            embedder = Embedder(index.spec.model, **options)  # type: ignore[arg-type]
        check_model(index.spec, index.path, model=embedder.model, weights_sha256=embedder.weights_sha256,
                    dim=embedder.dim)
    except BaseException:
        index.close()
        raise
    return index, embedder

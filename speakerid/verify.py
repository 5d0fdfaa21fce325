"""Two-clip verification: cosine similarity of embeddings against a threshold."""

from __future__ import annotations

from dataclasses import dataclass

from .config import check_threshold
from .embedder import Embedder, Embedding, Source, cosine
from .errors import ConfigError


@dataclass(frozen=True)
class Verification:
    """Are two clips the same speaker? ``score`` is the raw cosine, in [-1, 1]."""

    score: float
    threshold: float
    model: str
    a: Embedding
    b: Embedding

    @property
    def match(self) -> bool:
        return self.score >= self.threshold


def verify(
    a: Source,
    b: Source,
    *,
    embedder: Embedder | None = None,
    model: str | None = None,
    threshold: float | None = None,
) -> Verification:
    """Compare two clips with one model; the threshold defaults to the model's calibrated one."""
    if embedder is None:
        embedder = Embedder(model) if model else Embedder()
    elif model is not None and model != embedder.model:
        raise ConfigError(f"model={model!r} but the embedder given runs {embedder.model!r}")
    t = embedder.default_threshold if threshold is None else check_threshold(threshold)
    ea, eb = embedder.embed_batch([a, b], workers=2)
    return Verification(score=cosine(ea.vector, eb.vector), threshold=t, model=embedder.model, a=ea, b=eb)

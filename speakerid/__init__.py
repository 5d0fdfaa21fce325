"""speakerid: speaker verification and open-set identification.

Pretrained speaker encoders (CAM++, GE2E, your own ONNX) on ONNX Runtime, Silero VAD, and a
FAISS gallery of L2-normalised embeddings searched by cosine.

    >>> from speakerid import Embedder, verify
    >>> verify("a.wav", "b.wav").match
"""

from .config import AudioOptions, EmbedOptions, Settings, VadOptions
from .diarize import Timeline, Turn, diarize
from .embedder import Embedder, Embedding, cosine
from .errors import (
    AudioDecodeError,
    ModelMismatchError,
    NoSpeechError,
    SpeakeridError,
    TooShortError,
    UnknownModelError,
)
from .models import available_models
from .verify import Verification, verify

__version__ = "0.1.0"

__all__ = [
    "AudioDecodeError", "AudioOptions", "EmbedOptions", "Embedder", "Embedding", "ModelMismatchError",
    "NoSpeechError", "Settings", "SpeakeridError", "TooShortError", "UnknownModelError", "VadOptions",
    "Timeline", "Turn", "Verification", "available_models", "cosine", "diarize", "verify",
]

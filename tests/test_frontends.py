"""The front-end registry (speakerid.features): one place where front-end names are looked up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speakerid import features as F
from speakerid.config import to_mapping
from speakerid.errors import ConfigError
from speakerid.models.spec import ModelSpec


def _spec(frontend: str, options: dict | None = None, files: dict | None = None) -> ModelSpec:
    return ModelSpec(name="m", dim=4, sample_rate_hz=16000, frontend=frontend, frontend_options=options or {},
                     weights_sha256="0" * 64, converter_version="t", default_threshold=0.5, files=files or {})


def test_registry_names_and_options() -> None:
    assert list(F.FRONT_ENDS) == ["kaldi_fbank", "ge2e_mel", "autospeech"]
    assert list(F.USER_FRONT_ENDS) == ["fbank", "autospeech"]
    assert F.user_front_end("fbank") is F.front_end_class("kaldi_fbank") is F.KaldiFbank
    assert F.options_class("kaldi_fbank") is F.FbankOptions
    assert F.options_class("ge2e_mel") is F.Ge2eMelOptions
    assert F.options_class("autospeech") is F.AutoSpeechOptions
    assert [c.partials for c in F.FRONT_ENDS.values()] == [False, True, True]
    assert F.AutoSpeech.files == ("mean", "std") and F.KaldiFbank.files == F.Ge2eMel.files == ()


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(ConfigError, match="unknown front end 'mfcc'; choose one of kaldi_fbank, ge2e_mel, autospeech"):
        F.front_end_class("mfcc")
    with pytest.raises(ConfigError, match="unknown front end 'kaldi_fbank'; choose one of fbank, autospeech"):
        F.user_front_end("kaldi_fbank")
    with pytest.raises(ConfigError, match="choose one of"):
        F.options_class(["not", "a", "name"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^model m: unknown front end 'mfcc'"):
        F.front_end_for(_spec("mfcc"), Path("."))


def test_complete_options_fill_in_defaults() -> None:
    assert F.complete_options("kaldi_fbank", {"num_mel_bins": 80}) == to_mapping(F.FbankOptions())
    assert F.complete_options("ge2e_mel", {})["partial_frames"] == 160
    with pytest.raises(ConfigError, match="num_mel_bin"):
        F.complete_options("kaldi_fbank", {"num_mel_bin": 80})


def test_front_end_for_builds_each_front_end(tmp_path: Path) -> None:
    speech = np.random.default_rng(0).uniform(-0.3, 0.3, 3 * 16000).astype(np.float32)
    fb = F.front_end_for(_spec("kaldi_fbank", {"num_mel_bins": 40}), tmp_path)
    assert isinstance(fb, F.KaldiFbank) and fb.options == F.FbankOptions(num_mel_bins=40)
    feats = fb.features(speech)
    assert np.array_equal(feats, F.kaldi_fbank(speech, fb.options)) and fb.batch(feats).shape == (1, *feats.shape)
    outs = np.arange(4, dtype=np.float32)[None]
    assert np.array_equal(fb.reduce(outs), outs[0])

    ge = F.front_end_for(_spec("ge2e_mel"), tmp_path)
    parts = ge.features(speech)
    assert np.array_equal(parts, F.ge2e_partials(F.normalize_volume(speech, -30.0), F.Ge2eMelOptions()))
    assert ge.batch(parts) is parts
    outs = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert np.array_equal(ge.reduce(outs), outs.mean(axis=0))

    np.save(tmp_path / "mean.npy", np.zeros(257))
    np.save(tmp_path / "std.npy", np.full(257, 2.0))
    au = F.front_end_for(_spec("autospeech", files={"mean": "mean.npy", "std": "std.npy"}), tmp_path)
    assert isinstance(au, F.AutoSpeech) and au.mean.dtype == au.std.dtype == np.float32
    opts = F.AutoSpeechOptions()
    want = F.autospeech_partials(F.autospeech_spectrogram(F.normalize_volume(speech, -30.0), opts),
                                 np.zeros(257), np.full(257, 2.0), opts)
    assert np.array_equal(au.features(speech), want)
    with pytest.raises(ConfigError, match="model m: cannot read its mean/std files"):
        F.front_end_for(_spec("autospeech", files={"mean": "mean.npy"}), tmp_path)
    with pytest.raises(ConfigError, match="model m: cannot read its mean/std files"):
        F.front_end_for(_spec("autospeech", files={"mean": "mean.npy", "std": "nowhere.npy"}), tmp_path)


def test_probes_and_file_sizes() -> None:
    assert F.KaldiFbank.probe(F.FbankOptions()).shape == (1, 198, 80)
    assert F.Ge2eMel.probe(F.Ge2eMelOptions()).shape == (2, 160, 40)
    assert F.AutoSpeech.probe(F.AutoSpeechOptions()).shape == (2, 300, 257)
    assert F.AutoSpeech.file_size(F.AutoSpeechOptions(n_fft=1024)) == 513 and F.KaldiFbank.file_size(F.FbankOptions()) is None
    with pytest.raises(ConfigError, match="bogus"):
        F.KaldiFbank.probe(F.FbankOptions(window_type="bogus"))


def test_options_of_another_front_end_are_refused() -> None:
    with pytest.raises(ConfigError, match="kaldi_fbank takes FbankOptions, got Ge2eMelOptions"):
        F.KaldiFbank(F.Ge2eMelOptions())

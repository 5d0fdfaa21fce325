"""kaldi-native-fbank, the oracle the numpy Kaldi fbank (speakerid.features.kaldi) is tested with.

kaldi-native-fbank is a test (and benchmark) dependency only; the package computes its fbank in
numpy. Imported by tests/test_fbank.py and benchmarks/bench_embed.py.
"""

from __future__ import annotations

import numpy as np

from speakerid.features import FbankOptions


def knf_options(opts: FbankOptions):
    """``kaldi_native_fbank.FbankOptions`` equal to ``opts`` (log fbank, no energy, Kaldi mel)."""
    import kaldi_native_fbank as knf

    o = knf.FbankOptions()
    f = o.frame_opts
    f.samp_freq = float(opts.sample_rate_hz)
    f.frame_length_ms = float(opts.frame_length_ms)
    f.frame_shift_ms = float(opts.frame_shift_ms)
    f.dither = float(opts.dither)
    f.preemph_coeff = float(opts.preemphasis)
    f.remove_dc_offset = bool(opts.remove_dc_offset)
    f.window_type = opts.window_type
    f.round_to_power_of_two = bool(opts.round_to_power_of_two)
    f.snip_edges = bool(opts.snip_edges)
    m = o.mel_opts
    m.num_bins = int(opts.num_mel_bins)
    m.low_freq = float(opts.low_freq_hz)
    m.high_freq = float(opts.high_freq_hz)
    m.is_librosa = False  # Kaldi triangles on the HTK mel scale
    o.use_energy = False
    o.use_power = bool(opts.use_power)
    o.use_log_fbank = True
    return o


def knf_fbank(x: np.ndarray, opts: FbankOptions) -> np.ndarray:
    """Raw (no CMN) log-mel filterbank from kaldi-native-fbank: the reference implementation."""
    import kaldi_native_fbank as knf

    x = np.ascontiguousarray(x, dtype=np.float32)
    fb = knf.OnlineFbank(knf_options(opts))
    if x.size:
        fb.accept_waveform(float(opts.sample_rate_hz), x)
    fb.input_finished()
    n = fb.num_frames_ready
    feats = np.empty((n, opts.num_mel_bins), dtype=np.float32)
    for i in range(n):  # get_frame returns a view into the extractor's buffer: copy each row
        feats[i] = fb.get_frame(i)
    return feats

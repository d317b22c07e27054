"""STFT front end: perfect reconstruction, frame count and the zero-padded framing convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dyncp.config import STFTConfig
from dyncp.dsp import frame_energy_db, istft, n_frames, stft
from dyncp.errors import AudioError

PAPER = STFTConfig()
TINY = STFTConfig(n_fft=128, hop=64)


@pytest.mark.parametrize("cfg", [PAPER, TINY], ids=["paper", "tiny"])
@pytest.mark.parametrize("n", [16000, 16384, 12345, 1000, 257, 100])
def test_istft_inverts_stft(cfg, n):
    torch.manual_seed(n)
    wav = torch.randn(2, n) * 0.3
    spec = stft(wav, cfg)
    assert spec.shape == (2, cfg.n_freq, n // cfg.hop + 1) == (2, cfg.n_freq, n_frames(n, cfg))
    assert spec.is_complex()
    back = istft(spec, cfg, length=n)
    assert back.shape == wav.shape
    assert (back - wav).abs().max().item() < 1e-5


def test_mono_and_batch_agree():
    wav = torch.randn(3, 5000)
    batch = stft(wav, PAPER)
    for i in range(3):
        assert torch.allclose(stft(wav[i], PAPER), batch[i], atol=1e-6)
    assert stft(wav[0], PAPER).shape == (257, 5000 // 256 + 1)


def test_double_precision_round_trip():
    wav = torch.randn(1, 7777, dtype=torch.float64)
    back = istft(stft(wav, PAPER), PAPER, length=7777)
    assert back.dtype == torch.float64
    assert (back - wav).abs().max().item() < 1e-12


def test_frame_t_is_the_zero_padded_window_around_t_hop():
    """Frame t = rfft(hann * x[t*hop - n_fft/2 : t*hop + n_fft/2]) with zeros outside the signal:
    the convention a frame-by-frame streamer must reproduce."""
    cfg = TINY
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000)
    spec = stft(torch.from_numpy(x), cfg).numpy()
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(cfg.n_fft) / cfg.n_fft)   # periodic Hann
    padded = np.concatenate([np.zeros(cfg.n_fft // 2), x, np.zeros(cfg.n_fft // 2)])
    for t in range(spec.shape[-1]):
        seg = padded[t * cfg.hop: t * cfg.hop + cfg.n_fft]
        seg = np.pad(seg, (0, cfg.n_fft - len(seg)))
        ref = np.fft.rfft(win * seg)
        assert np.abs(spec[:, t] - ref).max() < 1e-9


def test_frame_energy_db_shape_and_value():
    wav = torch.zeros(1, 2048)
    wav[0, 1024:] = 1.0
    e = frame_energy_db(wav, TINY)
    assert e.shape == (1, 2048 // 64 + 1)
    assert e[0, 0].item() == pytest.approx(-120.0)       # silence: floor of 1e-12
    # all-ones frame: the periodic Hann's spectrum has |X_0| = n_fft/2, |X_1| = n_fft/4
    assert e[0, 24].item() == pytest.approx(10 * np.log10(64.0 ** 2 + 32.0 ** 2), abs=1e-4)


def test_errors():
    with pytest.raises(AudioError, match="shape"):
        stft(torch.zeros(1, 1, 100), PAPER)
    with pytest.raises(AudioError, match="empty"):
        stft(torch.zeros(1, 0), PAPER)
    with pytest.raises(AudioError, match="complex"):
        istft(torch.zeros(1, 257, 10), PAPER)

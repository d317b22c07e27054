"""The compiled streaming STFT (dyncp.stream_dsp): real FFT == numpy, frames == dsp.stft, the
window envelope computed once == torch.istft's, perfect reconstruction through the rings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dyncp.config import STFTConfig
from dyncp.dsp import istft, stft, synthesis_envelope
from dyncp.errors import ConfigError
from dyncp.stream_dsp import (FRAMES, analyse, irfft, push, rfft, stft_state, stft_tables,
                              synthesise, tail)


@pytest.mark.parametrize("n", [16, 32, 128, 512, 1024])
def test_rfft_and_irfft_equal_numpy(n):
    t = stft_tables(n, n // 2)
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n)
    re, im = np.zeros(n // 2 + 1), np.zeros(n // 2 + 1)
    rfft(x.copy(), re, im, t.f, t.i)
    assert np.abs(re + 1j * im - np.fft.rfft(x)).max() < 1e-12 * n
    spec = np.fft.rfft(rng.standard_normal(n)) * rng.random(n // 2 + 1)
    y = np.zeros(n)
    irfft(spec.real.copy(), spec.imag.copy(), y, t.f, t.i)
    assert np.abs(y - np.fft.irfft(spec, n)).max() < 1e-14 * n


@pytest.mark.parametrize("n_fft,hop", [(512, 256), (128, 64), (128, 48), (128, 32), (16, 5)])
def test_envelope_is_torch_istft_normaliser(n_fft, hop):
    """torch.istft divides by the overlap-added window square; an all-ones spectrum of a ones
    signal shows it: istft(stft(ones)) == 1 exactly where our envelope is used."""
    start, steady = synthesis_envelope(n_fft, hop)
    w2 = torch.hann_window(n_fft, periodic=True, dtype=torch.float64).numpy() ** 2
    n_frames = 12
    env = np.zeros(n_fft + hop * (n_frames - 1))
    for t in range(n_frames):
        env[t * hop:t * hop + n_fft] += w2
    np.testing.assert_allclose(start, env[:n_fft], atol=1e-12)
    for p in range(n_fft - hop, n_fft + 2 * hop):
        assert steady[p % hop] == pytest.approx(env[p], abs=1e-12)


def test_tables_refuse_what_the_fft_cannot_do():
    for n in (96, 8, 500):
        with pytest.raises(ConfigError, match="power of two"):
            stft_tables(n, n // 4)


def stream_frames(x, n_fft, hop, chunk):
    """Push ``x`` in chunks; analyse every ready frame; returns mags [T, F] and spectra."""
    t, st = stft_tables(n_fft, hop), stft_state(n_fft)
    mags, i = [], 0
    for j in range(0, x.shape[0], chunk):
        piece, i = x[j:j + chunk], 0
        while True:
            i = push(piece, i, st.f, st.counters, n_fft, True)
            if st.counters[1] < n_fft:
                break
            analyse(st.f, st.counters, t.f, t.i, st.mag)
            mags.append(st.mag.copy())
            synthesise(np.ones_like(st.mag), st.f, st.counters, t.f, t.i,
                       np.empty(hop, np.float32), 0, 0)
    return np.stack(mags)


@pytest.mark.parametrize("chunk", [1, 37, 64, 1000])
def test_frames_equal_offline_stft(chunk):
    cfg = STFTConfig(n_fft=128, hop=48)
    x = np.random.default_rng(chunk).standard_normal(2000).astype(np.float32)
    ref = stft(torch.from_numpy(x).double(), cfg).abs().numpy().T       # [T, F]
    got = stream_frames(x, cfg.n_fft, cfg.hop, chunk)
    n = got.shape[0]                                # frames complete before any end padding
    assert n == (x.shape[0] - cfg.n_fft // 2) // cfg.hop + 1
    assert np.abs(got - ref[:n]).max() < 1e-5


@pytest.mark.parametrize("n_fft,hop,n", [(512, 256, 5000), (128, 48, 1001), (128, 32, 77)])
def test_rings_reconstruct_through_flush(n_fft, hop, n):
    """Mask 1 everywhere: analysis ring -> spectrum -> overlap-add ring -> samples equals the
    input (and torch's istft(stft(x))), including the clip start and the end (``tail``)."""
    x = np.random.default_rng(n).uniform(-0.9, 0.9, n).astype(np.float32)
    t, st = stft_tables(n_fft, hop), stft_state(n_fft)
    out = np.empty(n + n_fft, np.float32)
    o, pad = 0, np.zeros(n_fft // 2, np.float32)
    for piece, count in ((x, True), (pad, False)):
        i = 0
        while True:
            i = push(piece, i, st.f, st.counters, n_fft, count)
            if st.counters[1] < n_fft:
                break
            analyse(st.f, st.counters, t.f, t.i, st.mag)
            o = synthesise(np.ones_like(st.mag), st.f, st.counters, t.f, t.i, out, o, n)
    assert st.counters[FRAMES] == n // hop + 1                       # dsp.n_frames
    o = tail(st.f, st.counters, t.f, t.i, out, o, n)
    assert o == n
    cfg = STFTConfig(n_fft=n_fft, hop=hop)
    ref = istft(stft(torch.from_numpy(x).double(), cfg), cfg, length=n).numpy()
    np.testing.assert_allclose(out[:n], x, atol=1e-5)
    np.testing.assert_allclose(out[:n], ref, rtol=1e-4, atol=1e-6)

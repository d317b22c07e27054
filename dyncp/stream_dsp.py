"""The streaming STFT and iSTFT, compiled (numba): a frame at a time, no Python per sample.

The offline STFT is :mod:`dyncp.dsp` (torch); this module reproduces it frame by frame with
explicit per-stream state, so that a :class:`dyncp.streaming.Streamer` equals offline enhancement
(SPEC §1: periodic Hann window, zero padding of ``n_fft/2`` on both sides, frame ``t`` covers
padded samples ``[t*hop, t*hop + n_fft)``).

The compiled functions are in :mod:`dyncp.kernels`; this module builds their tables
(``StftTables``, shared) and one stream's state (``StftState``, float64 and int64 arrays that
only this stream writes):

- an **analysis ring** of ``n_fft`` samples: a frame is ready once ``n_fft`` samples are held
  (the ring starts holding the ``n_fft/2`` zeros of the left padding); after each frame the
  oldest ``hop`` samples are released, no samples are moved;
- an **overlap-add ring** of ``n_fft`` samples: frame ``t`` adds ``w * irfft(X_t)`` at padded
  positions ``t*hop ...``; then the first ``hop`` positions are final (no later frame reaches
  them) and leave, scaled by ``1 / sum of w^2 over the frames that overlap them``, as
  ``torch.istft`` divides. That envelope does not depend on the signal: it is computed once
  (:func:`dyncp.dsp.synthesis_envelope`), for the clip start (fewer frames overlap) and the
  steady state; only the end of a stream (``flush``) needs a partial sum, computed there.

The FFT: a real FFT of ``n_fft`` points as a complex FFT of ``n_fft/2`` points (radix 2,
iterative, float64) plus one twiddle pass; ``n_fft`` must be a power of two (every shipped
config; [decided] a ConfigError otherwise, rather than a slow generic DFT). It equals
``numpy.fft.rfft``/``irfft`` within float64 rounding (``tests/test_stream_dsp.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dsp import synthesis_envelope
from .errors import ConfigError
from .kernels import FRAMES, HELD, N_COUNTERS, N_IN, N_OUT, SKIP, START


@dataclass
class StftTables:
    """Read-only tables of one (n_fft, hop), shared by every stream.

    ``f`` float64: window [n] | 1/envelope at the clip start [n] | 1/envelope, steady [hop] |
    per-stage FFT twiddles cos, sin [M-1 each] | real-FFT twiddles cos, sin [M+1 each]
    (``M = n/2``); ``i`` int64: n, hop, bit reversal [M].
    """

    f: np.ndarray
    i: np.ndarray

    @property
    def n_fft(self) -> int:
        return int(self.i[0])

    @property
    def hop(self) -> int:
        return int(self.i[1])

    @property
    def window(self) -> np.ndarray:
        return self.f[: self.n_fft]


def stft_tables(n_fft: int, hop: int) -> StftTables:
    """Tables for streaming frames of ``n_fft`` samples every ``hop`` (``hop <= n_fft/2``)."""
    n, m = n_fft, n_fft // 2
    if n < 16 or n & (n - 1):
        raise ConfigError(f"stft.n_fft: the streaming STFT needs a power of two >= 16, got {n}")
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)       # periodic Hann (dsp.window)
    env_start, env_steady = synthesis_envelope(n, hop)
    inv = lambda e: np.where(e > 0, 1.0 / np.where(e > 0, e, 1.0), 0.0)  # noqa: E731
    stage_cos, stage_sin = [], []
    size = 2
    while size <= m:                       # stage with butterflies of span size/2
        j = np.arange(size // 2)
        stage_cos.append(np.cos(2 * np.pi * j / size))
        stage_sin.append(np.sin(2 * np.pi * j / size))
        size *= 2
    k = np.arange(m + 1)
    f = np.concatenate([win, inv(env_start), inv(env_steady), *stage_cos, *stage_sin,
                        np.cos(2 * np.pi * k / n), np.sin(2 * np.pi * k / n)])
    bits = m.bit_length() - 1
    rev = [int(format(j, f"0{bits}b")[::-1], 2) for j in range(m)]
    return StftTables(np.ascontiguousarray(f, np.float64), np.array([n, hop] + rev, np.int64))


@dataclass
class StftState:
    """One stream's STFT buffers. ``f`` float64: analysis ring [n] | overlap-add ring [n] |
    spectrum re, im [n/2+1 each] | frame [n]; ``counters`` int64 (indices FRAMES ... N_OUT);
    ``mag`` float32 [n/2+1]: the last frame's magnitudes, the network's input."""

    f: np.ndarray
    counters: np.ndarray
    mag: np.ndarray

    def copy(self) -> "StftState":
        return StftState(self.f.copy(), self.counters.copy(), self.mag.copy())

    @property
    def n_fft(self) -> int:
        return (self.f.shape[0] - 2) // 4

    @property
    def frames(self) -> int:
        return int(self.counters[FRAMES])

    @property
    def n_in(self) -> int:
        return int(self.counters[N_IN])

    @property
    def n_out(self) -> int:
        return int(self.counters[N_OUT])

    @property
    def pending(self) -> np.ndarray:
        """The samples held in the analysis ring, oldest first (a copy): the next frame's start,
        including what is left of the left padding."""
        n, c = self.n_fft, self.counters
        return np.roll(self.f[:n], -int(c[START]))[: int(c[HELD])]


def stft_state(n_fft: int) -> StftState:
    """Fresh state: the analysis ring holds the ``n_fft/2`` zeros of the left padding."""
    c = np.zeros(N_COUNTERS, np.int64)
    c[HELD] = c[SKIP] = n_fft // 2
    return StftState(np.zeros(4 * n_fft + 2), c, np.zeros(n_fft // 2 + 1, np.float32))

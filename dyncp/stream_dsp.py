"""The streaming STFT and iSTFT, compiled (numba): a frame at a time, no Python per sample.

The offline STFT is :mod:`dyncp.dsp` (torch); this module reproduces it frame by frame with
explicit per-stream state, so that a :class:`dyncp.streaming.Streamer` equals offline enhancement
(SPEC §1: periodic Hann window, zero padding of ``n_fft/2`` on both sides, frame ``t`` covers
padded samples ``[t*hop, t*hop + n_fft)``).

Tables (``StftTables``) are shared by every stream; one stream's state (``StftState``: float64
and int64 arrays that only this stream writes) holds:

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
from numba import njit

from .dsp import synthesis_envelope
from .errors import ConfigError


# StftState.counters: frames done, samples held in the analysis ring, ring index of the oldest
# held sample, overlap-add ring index of padded position frames*hop, padded samples still to drop
# (the left padding), samples fed, samples emitted, gated channels open summed over the frames.
FRAMES, HELD, START, HEAD, SKIP, N_IN, N_OUT, OPEN = range(8)
N_COUNTERS = 8



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


# -- compiled: the real FFT ----------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _split(tf, ti):
    """Views of the tables: window, 1/env start, 1/env steady, stage cos/sin, real cos/sin."""
    n, hop = ti[0], ti[1]
    m = n // 2
    o = 0
    win = tf[o:o + n]
    o += n
    inv_start = tf[o:o + n]
    o += n
    inv_steady = tf[o:o + hop]
    o += hop
    s_cos = tf[o:o + m - 1]
    o += m - 1
    s_sin = tf[o:o + m - 1]
    o += m - 1
    r_cos = tf[o:o + m + 1]
    o += m + 1
    r_sin = tf[o:o + m + 1]
    return win, inv_start, inv_steady, s_cos, s_sin, r_cos, r_sin


@njit(cache=True, nogil=True)
def _fft(re, im, s_cos, s_sin, m, sign):
    """In-place radix-2 complex FFT of ``m >= 4`` points, input in bit-reversed order;
    ``sign`` -1: forward, +1: inverse (unscaled). Computed indices are unsigned: numba then
    skips its negative-index wrap-around, and LLVM vectorises the butterflies."""
    u = np.uint64
    for g in range(0, m, 4):               # stages of span 1 and 2 as one radix-4 pass
        a, b, c, d = u(g), u(g + 1), u(g + 2), u(g + 3)
        r0, i0 = re[a] + re[b], im[a] + im[b]
        r1, i1 = re[a] - re[b], im[a] - im[b]
        r2, i2 = re[c] + re[d], im[c] + im[d]
        r3, i3 = sign * (im[d] - im[c]), sign * (re[c] - re[d])   # (c - d) * (sign * i)
        re[a], im[a] = r0 + r2, i0 + i2
        re[c], im[c] = r0 - r2, i0 - i2
        re[b], im[b] = r1 + r3, i1 + i3
        re[d], im[d] = r1 - r3, i1 - i3
    half, tw = u(4), u(3)                  # twiddles of span 1 and 2 (3 entries) not needed
    while half < m:
        for start in range(0, m, 2 * half):
            a0 = u(start)
            b0 = a0 + half
            for j in range(half):
                c, s = s_cos[tw + j], sign * s_sin[tw + j]
                br, bi = re[b0 + j], im[b0 + j]
                tr = br * c - bi * s
                ti = br * s + bi * c
                ar, ai = re[a0 + j], im[a0 + j]
                re[b0 + j] = ar - tr
                im[b0 + j] = ai - ti
                re[a0 + j] = ar + tr
                im[a0 + j] = ai + ti
        tw += half
        half *= u(2)


@njit(cache=True, nogil=True)
def rfft(x, re, im, tf, ti):
    """x [n] real -> re, im [n/2+1] (numpy.fft.rfft); ``n/2`` a power of two."""
    n = ti[0]
    m = n // 2
    _, _, _, s_cos, s_sin, r_cos, r_sin = _split(tf, ti)
    rev = ti[2:2 + m]
    zr, zi = re[:m], im[:m]
    for j in range(m):                                  # z = even + i*odd, bit-reversed
        r = np.uint64(rev[j])
        zr[r] = x[2 * j]
        zi[r] = x[2 * j + 1]
    _fft(zr, zi, s_cos, s_sin, m, -1.0)
    # X[k] = (Z[k] + conj Z[m-k]) / 2 + W^k (Z[k] - conj Z[m-k]) / 2i, W = exp(-2 pi i / n);
    # pairs (k, m-k) are done together in place
    z0r, z0i = zr[0], zi[0]
    re[0], im[0] = z0r + z0i, 0.0
    re[m], im[m] = z0r - z0i, 0.0
    um = np.uint64(m)
    for k in range(np.uint64(1), um // np.uint64(2) + np.uint64(1)):
        q = um - k
        ar, ai, br, bi = re[k], im[k], re[q], im[q]
        er, ei = 0.5 * (ar + br), 0.5 * (ai - bi)       # even part at k
        orr, oi = 0.5 * (ai + bi), -0.5 * (ar - br)     # odd part at k
        c, s = r_cos[k], -r_sin[k]
        tr, tim = orr * c - oi * s, orr * s + oi * c
        re[k], im[k] = er + tr, ei + tim
        # at q: even = conj(even_k), odd = conj(odd_k); W^q = -conj(W^k)
        re[q], im[q] = er - tr, -ei + tim


@njit(cache=True, nogil=True)
def irfft(re, im, y, tf, ti):
    """re, im [n/2+1] -> y [n] real (numpy.fft.irfft; the imaginary parts of bins 0 and n/2 are
    ignored). ``re``/``im`` are overwritten."""
    n = ti[0]
    m = n // 2
    _, _, _, s_cos, s_sin, r_cos, r_sin = _split(tf, ti)
    # inverse of the pass in rfft: Z[k] = E[k] + i O[k], E = (X[k] + conj X[m-k]) / 2,
    # O = (X[k] - conj X[m-k]) conj(W^k) / 2; then z = ifft(Z) = even + i*odd samples
    x0, xm = re[0], re[m]
    zr0, zi0 = 0.5 * (x0 + xm), 0.5 * (x0 - xm)
    um = np.uint64(m)
    for k in range(np.uint64(1), um // np.uint64(2) + np.uint64(1)):
        q = um - k
        ar, ai, br, bi = re[k], im[k], re[q], im[q]
        er, ei = 0.5 * (ar + br), 0.5 * (ai - bi)
        dr, di = 0.5 * (ar - br), 0.5 * (ai + bi)
        c, s = r_cos[k], r_sin[k]                       # conj(W^k) = cos + i sin
        orr, oi = dr * c - di * s, dr * s + di * c
        re[k], im[k] = er - oi, ei + orr
        # at q: E = conj(E_k), O = conj(O_k)
        re[q], im[q] = er + oi, -ei + orr
    re[0], im[0] = zr0, zi0
    rev = ti[2:2 + m]
    zr, zi = y[:m], y[m:]
    for j in range(m):
        r = np.uint64(rev[j])
        zr[r] = re[j]
        zi[r] = im[j]
    _fft(zr, zi, s_cos, s_sin, m, 1.0)
    scale = 1.0 / m
    for j in range(m):
        re[j] = zr[j] * scale
        im[j] = zi[j] * scale
    for j in range(m):
        y[2 * j] = re[j]
        y[2 * j + 1] = im[j]


# -- compiled: one stream, frame by frame ---------------------------------------------------------
@njit(cache=True, nogil=True)
def push(x, i, af, ac, n, count):
    """Copy samples ``x[i:]`` into the analysis ring until it holds ``n`` (a frame is ready) or
    ``x`` ends; returns the index of the next unread sample. ``count``: add them to N_IN (the
    end padding of ``flush`` is not input)."""
    ring = af[:n]
    held, start = ac[HELD], ac[START]
    i0 = i
    while i < x.shape[0] and held < n:
        pos = (start + held) % n
        m = min(n - held, x.shape[0] - i, n - pos)     # up to the ring's end
        dst, src = ring[pos:pos + m], x[i:i + m]
        for j in range(m):
            dst[j] = src[j]
        held += m
        i += m
    ac[HELD] = held
    if count:
        ac[N_IN] += i - i0
    return i


@njit(cache=True, nogil=True)
def analyse(af, ac, tf, ti, mag):
    """The frame in the analysis ring -> its spectrum (kept in the state for :func:`synthesise`)
    and ``mag`` [n/2+1] float32 = |spectrum|, the network's input; releases ``hop`` samples."""
    n, hop = ti[0], ti[1]
    m = n // 2
    ring, spec_re, spec_im, work = af[:n], af[2 * n:2 * n + m + 1], \
        af[2 * n + m + 1:2 * n + 2 * m + 2], af[3 * n + 2:4 * n + 2]
    win = tf[:n]
    start = ac[START]
    k = n - start                                      # windowed frame, oldest sample first
    a, wa, wk = ring[start:], win[:k], work[:k]
    for j in range(k):
        wk[j] = a[j] * wa[j]
    b, wb, wr = ring[:start], win[k:], work[k:]
    for j in range(start):
        wr[j] = b[j] * wb[j]
    rfft(work, spec_re, spec_im, tf, ti)
    for f in range(m + 1):
        mag[f] = np.float32(np.sqrt(spec_re[f] * spec_re[f] + spec_im[f] * spec_im[f]))
    ac[START] = (start + hop) % n
    ac[HELD] -= hop


@njit(cache=True, nogil=True)
def synthesise(mask, af, ac, tf, ti, out, o, limit):
    """Multiply the last analysed spectrum by ``mask`` [n/2+1], overlap-add ``w * irfft`` into
    the ring, and write the ``hop`` samples that are now final to ``out[o:]`` (normalised by the
    window envelope; the left padding dropped; at most ``limit`` samples emitted in all).
    Returns the new ``o``."""
    n, hop = ti[0], ti[1]
    m = n // 2
    ola, spec_re, spec_im, work = af[n:2 * n], af[2 * n:2 * n + m + 1], \
        af[2 * n + m + 1:2 * n + 2 * m + 2], af[3 * n + 2:4 * n + 2]
    win, inv_start, inv_steady, _, _, _, _ = _split(tf, ti)
    for f in range(m + 1):
        g = np.float64(mask[f])
        spec_re[f] *= g
        spec_im[f] *= g
    irfft(spec_re, spec_im, work, tf, ti)
    head = ac[HEAD]
    k = n - head                                       # overlap-add, in two runs of the ring
    a, wa, ya = ola[head:], win[:k], work[:k]
    for j in range(k):
        a[j] += wa[j] * ya[j]
    b, wb, yb = ola[:head], win[k:], work[k:]
    for j in range(head):
        b[j] += wb[j] * yb[j]
    p0 = ac[FRAMES] * hop                              # padded position of ola[head]
    inv = inv_start[p0:p0 + hop] if p0 + hop <= n else inv_steady
    _release(ola, head, n, inv, hop, work)
    ac[HEAD] = (head + hop) % n
    ac[FRAMES] += 1
    return _emit(work, hop, ac, out, o, limit)


@njit(cache=True, nogil=True)
def _release(ola, head, n, inv, count, y):
    """y[:count] = the ``count`` ring samples from ``head`` on, times ``inv``; zeroes them."""
    k = min(count, n - head)
    a, ia, ya = ola[head:head + k], inv[:k], y[:k]
    for j in range(k):
        ya[j] = a[j] * ia[j]
        a[j] = 0.0
    r = count - k
    b, ib, yb = ola[:r], inv[k:count], y[k:count]
    for j in range(r):
        yb[j] = b[j] * ib[j]
        b[j] = 0.0


@njit(cache=True, nogil=True)
def _emit(y, count, ac, out, o, limit):
    """Drop what is left of the left padding from ``y[:count]``, write the rest to ``out[o:]``,
    at most ``limit`` samples emitted in all; returns the new ``o``."""
    drop = min(ac[SKIP], count)
    ac[SKIP] -= drop
    m = max(min(count - drop, limit - ac[N_OUT]), 0)
    src, dst = y[drop:drop + m], out[o:o + m]
    for j in range(m):
        dst[j] = np.float32(src[j])
    ac[N_OUT] += m
    return o + m


@njit(cache=True, nogil=True)
def tail(af, ac, tf, ti, out, o, limit):
    """End of stream, after the last frame: the samples up to ``limit`` that only earlier frames
    overlap, each divided by the window square summed over those frames."""
    n, hop = ti[0], ti[1]
    ola, inv, y = af[n:2 * n], af[2 * n:3 * n], af[3 * n + 2:4 * n + 2]
    win = tf[:n]
    frames, head = ac[FRAMES], ac[HEAD]
    count = max(min(limit - ac[N_OUT] + ac[SKIP], n), 0)
    for j in range(count):                 # position frames*hop + j: frames t' < frames cover it
        env, back = 0.0, 1
        while back <= frames and back * hop + j < n:
            w = win[back * hop + j]
            env += w * w
            back += 1
        inv[j] = 1.0 / env if env > 0 else 0.0
    _release(ola, head, n, inv, count, y)
    return _emit(y, count, ac, out, o, limit)


@njit(cache=True, nogil=True)
def nonfinite(x):
    """Number of NaN or Inf samples in ``x``."""
    bad = 0
    for j in range(x.shape[0]):
        bad += not np.isfinite(x[j])
    return bad

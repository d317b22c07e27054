"""Every compiled (numba) function of the streaming path, in one file.

Why one file: numba's on-disk cache (``cache=True``) invalidates a compiled function only when
*its own* source file changes. A cached function that calls a kernel defined in another file
keeps that kernel's old machine code after the other file changes (numba's documented caveat),
so the fused loop below, which runs the STFT, the network and the iSTFT in one call, lives with
everything it calls.

- the network, one frame: :func:`frame` (the sparse engine; :mod:`dyncp.runtime` packs the
  weights and owns the layout tables);
- the streaming STFT/iSTFT: a real FFT (:func:`rfft`, :func:`irfft`), the analysis ring
  (:func:`push`, :func:`analyse`), the overlap-add ring (:func:`synthesise`, :func:`tail`)
  (:mod:`dyncp.stream_dsp` builds the tables and the per-stream state);
- :func:`feed_frames`: push samples, and for every frame that becomes ready, analyse, run the
  network, synthesise; one call per ``Streamer.feed``.

Every function releases the GIL (``nogil=True``): streams in several threads run in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# The network's int64 table ``wi`` (built by dyncp.runtime): HEADER values, then the offsets of
# the WEIGHTS sections in the float32 weight buffer ``wf``, the offsets of the STATE sections in a
# stream's float32 buffer ``sf``, the dilations [n_blocks].
HEADER = ("n_freq", "residual", "hidden", "kernel", "reduction", "n_blocks", "pool", "ring",
          "gated", "sparse", "min_active", "stride")
_F, _B, _H, _K, _R, _NB, _L, _D, _GATED, _SPARSE, _MIN_ACTIVE, _STRIDE = range(len(HEADER))
WEIGHTS = ("front_wt", "front_b", "back_w", "back_b", "chan", "pw2_bias", "gw1t", "gb1", "gw2t",
           "gb2", "compress")
STATE = ("pool", "dw", "mask", "scratch", "thresh")
SCRATCH_ROWS = 5  # h, h2, scores, z1, sort buffer (the min_active floor)
_W_OFF = len(HEADER)
_S_OFF = _W_OFF + len(WEIGHTS)
_DIL = _S_OFF + len(STATE)
# A stream's int64 buffer ``si``: frame counter, gated channels open and channels computed at the
# last frame, then the list of channels to compute [H], then the depthwise ring slot of each tap
I_T, I_OPEN, I_COMPUTED, I_ACTIVE = range(4)
# [decided] Reassociation and FMA contraction only (no nnan/ninf: NaN and Inf still propagate).
# Reassociation lets LLVM vectorise the per-channel dot products: measured ~5x faster than
# fastmath=False on the 128-long PW1 rows (and ~2x faster than calling BLAS per row).
_FASTMATH = {"reassoc", "contract"}


# StftState.counters: frames done, samples held in the analysis ring, ring index of the oldest
# held sample, overlap-add ring index of padded position frames*hop, padded samples still to drop
# (the left padding), samples fed, samples emitted, gated channels open summed over the frames.
FRAMES, HELD, START, HEAD, SKIP, N_IN, N_OUT, OPEN = range(8)
N_COUNTERS = 8


# -- the network, one frame -------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _weight_views(wf, wi):
    F, B, H, k, R, nb = wi[_F], wi[_B], wi[_H], wi[_K], wi[_R], wi[_NB]
    o = wi[_W_OFF:_W_OFF + 11]
    stride = wi[_STRIDE]
    return (wf[o[0]:o[0] + F * B].reshape((F, B)), wf[o[1]:o[1] + B],
            wf[o[2]:o[2] + F * B].reshape((F, B)), wf[o[3]:o[3] + F],
            wf[o[4]:o[4] + nb * H * stride].reshape((nb, H, stride)),
            wf[o[5]:o[5] + nb * B].reshape((nb, B)), wf[o[6]:o[6] + nb * B * R].reshape((nb, B, R)),
            wf[o[7]:o[7] + nb * R].reshape((nb, R)), wf[o[8]:o[8] + nb * R * H].reshape((nb, R, H)),
            wf[o[9]:o[9] + nb * H].reshape((nb, H)), wf[o[10]])


@njit(cache=True, nogil=True)
def _state_views(sf, wi):
    F, B, H, R, nb, L, D = wi[_F], wi[_B], wi[_H], wi[_R], wi[_NB], wi[_L], wi[_D]
    o = wi[_S_OFF:_S_OFF + 5]
    w = max(B, H, R)
    return (sf[o[0]:o[0] + nb * L * B].reshape((nb, L, B)),
            sf[o[1]:o[1] + nb * D * H].reshape((nb, D, H)), sf[o[2]:o[2] + F],
            sf[o[3]:o[3] + SCRATCH_ROWS * w].reshape((SCRATCH_ROWS, w)), sf[o[4]:o[4] + nb])


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _dot(a, b, n):
    s = np.float32(0.0)
    for j in range(n):
        s += a[j] * b[j]
    return s


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _prelu(x, a):
    return x if x >= 0 else a * x


@njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _hidden(row, s, dwi, slots, now, c, B, k, c_off, on):
    """Channel c after its PW1 dot product s: PReLU, BN, mask -> u (into the ring), the
    depthwise taps, PReLU, BN, mask -> v (returned)."""
    u = (_prelu(s + row[c_off], row[c_off + 1]) * row[c_off + 2] + row[c_off + 3]) * on
    now[c] = u
    z = row[c_off + 4]
    for j in range(k):
        z += row[B + j] * dwi[slots[j], c]
    return (_prelu(z, row[c_off + 5]) * row[c_off + 6] + row[c_off + 7]) * on


@njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _feature(x, compress):
    """The network's input feature of one bin: |X| or (|X| + 1e-12)^compress (model._features)."""
    if compress == 1.0:
        return x
    return (max(x, np.float32(0.0)) + np.float32(1e-12)) ** compress


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def frame(mag, wf, wi, sf, si, gates):
    """One frame of the mask estimator (layouts: see the module docstring). Reads the weights
    (``wf``, ``wi``), updates the state (``sf``: pool and depthwise rings, mask, scratch; ``si``:
    frame counter, counts, active list; ``gates``), returns the number of hidden channels
    computed (all of them in dense mode).

    Inner loops index arrays with the loop variable only (an offset index may be negative to
    numba, whose wrap-around check stops LLVM from vectorising: measured 5x slower)."""
    front_wt, front_b, back_w, back_b, chan, pw2_bias, gw1t, gb1, gw2t, gb2, compress = \
        _weight_views(wf, wi)
    pool, dw, mask, scratch, thresh = _state_views(sf, wi)
    n_freq, B, H, k, R = wi[_F], wi[_B], wi[_H], wi[_K], wi[_R]
    n_blocks, L, D = wi[_NB], wi[_L], wi[_D]
    gated, sparse, min_active = wi[_GATED] != 0, wi[_SPARSE] != 0, wi[_MIN_ACTIVE]
    dilations = wi[_DIL:_DIL + n_blocks]
    active, slots = si[I_ACTIVE:I_ACTIVE + H], si[I_ACTIVE + H:I_ACTIVE + H + k]
    w2_off, c_off = B + k, 2 * B + k          # PW2 column and per-channel constants
    t = si[I_T]
    zero = np.float32(0.0)
    h, h2, scores, z1, sort_buf = scratch[0, :B], scratch[1, :B], scratch[2, :H], scratch[3, :R], \
        scratch[4, :H]
    # front-end: h = ReLU(W_f x + b_f), one axpy over the residual channels per bin
    for b in range(B):
        h[b] = front_b[b]
    f = 0
    while f + 4 <= n_freq:                      # four bins at a time: one pass over h
        x0, x1, x2, x3 = _feature(mag[f], compress), _feature(mag[f + 1], compress), \
            _feature(mag[f + 2], compress), _feature(mag[f + 3], compress)
        w0, w1, w2, w3 = front_wt[f], front_wt[f + 1], front_wt[f + 2], front_wt[f + 3]
        for b in range(B):
            h[b] += w0[b] * x0 + w1[b] * x1 + w2[b] * x2 + w3[b] * x3
        f += 4
    for f in range(f, n_freq):
        x = _feature(mag[f], compress)
        wf_ = front_wt[f]
        for b in range(B):
            h[b] += wf_[b] * x
    for b in range(B):
        h[b] = max(h[b], zero)
    computed, n_open = 0, 0
    for i in range(n_blocks):
        d = dilations[i]
        n_on = H
        if gated:
            # gate: moving average of the block input over the last L frames (a ring of L slots
            # that starts as zeros, like model.step's cache), then the score stack PW-ReLU-PW
            ring = pool[i]
            slot = ring[t % L]
            for b in range(B):
                slot[b] = h[b]
            for b in range(B):
                h2[b] = zero
            for j in range(L):
                rj = ring[j]
                for b in range(B):
                    h2[b] += rj[b]
            for r in range(R):
                z1[r] = gb1[i, r]
            for b in range(B):
                w = gw1t[i, b]
                x = h2[b] / np.float32(L)
                for r in range(R):
                    z1[r] += w[r] * x
            for c in range(H):
                scores[c] = gb2[i, c]
            for r in range(R):
                zr = max(z1[r], zero)
                w = gw2t[i, r]
                for c in range(H):
                    scores[c] += w[c] * zr
            n_on = 0
            g = gates[i]
            th = thresh[i]
            for c in range(H):                      # Heaviside; a NaN score prunes
                on = scores[c] > th
                g[c] = on
                n_on += on
            if min_active > 0 and n_on < min_active:
                # floor: the top-min_active scores are forced on (ties included, as in torch)
                for c in range(H):
                    sort_buf[c] = scores[c]
                sort_buf.sort()
                kth = sort_buf[H - min_active]
                n_on = 0
                for c in range(H):
                    on = g[c] == 1 or scores[c] >= kth
                    g[c] = on
                    n_on += on
        n_open += n_on
        # the channels to compute, as a list: no unpredictable branch in the loop below
        n = 0
        if gated and sparse:
            for c in range(H):
                active[n] = c
                n += gates[i, c]
        else:
            for c in range(H):
                active[n] = c
                n += 1
        computed += n
        # block body: h2 = h + b2 + sum over computed channels c of W2[:, c] * v_c
        for b in range(B):
            h2[b] = h[b] + pw2_bias[i, b]
        for j in range(k):                          # ring slot of tap j: frame t-(k-1-j)*d
            slots[j] = (t - (k - 1 - j) * d) % D
        now = dw[i, slots[k - 1]]
        for c in range(H):
            now[c] = zero                           # a pruned channel's past reads as 0
        dwi = dw[i]
        a = 0
        while a + 2 <= n:                          # two channels at a time: one pass over h2
            c0, c1 = active[a], active[a + 1]
            r0, r1 = chan[i, c0], chan[i, c1]
            s0, s1 = zero, zero
            for b in range(B):
                s0 += r0[b] * h[b]
                s1 += r1[b] * h[b]
            v0 = _hidden(r0, s0, dwi, slots, now, c0, B, k, c_off,
                         np.float32(gates[i, c0]) if gated else np.float32(1.0))
            v1 = _hidden(r1, s1, dwi, slots, now, c1, B, k, c_off,
                         np.float32(gates[i, c1]) if gated else np.float32(1.0))
            q0, q1 = r0[w2_off:w2_off + B], r1[w2_off:w2_off + B]
            for b in range(B):
                h2[b] += q0[b] * v0 + q1[b] * v1
            a += 2
        if a < n:
            c = active[a]
            row = chan[i, c]
            v = _hidden(row, _dot(row, h, B), dwi, slots, now, c, B, k, c_off,
                        np.float32(gates[i, c]) if gated else np.float32(1.0))
            w2 = row[w2_off:w2_off + B]
            for b in range(B):
                h2[b] += w2[b] * v
        for b in range(B):
            h[b] = h2[b]
    # back-end: mask = sigmoid(W_b h + b_b), one dot per bin
    for f in range(n_freq):
        x = _dot(back_w[f], h, B) + back_b[f]
        mask[f] = np.float32(1.0) / (np.float32(1.0) + np.exp(-x))
    si[I_T] = t + 1
    si[I_OPEN] = n_open if gated else n_blocks * H
    si[I_COMPUTED] = computed
    return computed


# -- the streaming STFT ------------------------------------------------------------------------
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


# -- one stream, frame by frame ------------------------------------------------------------------
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


# -- one stream, samples in, samples out ---------------------------------------------------------
@njit(cache=True, nogil=True)
def nonfinite(x):
    """Number of NaN or Inf samples in ``x``."""
    bad = 0
    for j in range(x.shape[0]):
        bad += not np.isfinite(x[j])
    return bad


@njit(cache=True, nogil=True)
def feed_frames(x, count, limit, record, tf, ti, af, ac, mag, wf, wi, sf, si, gates):
    """Push ``x`` into one stream and run every frame that becomes ready: :func:`analyse`, the
    network (:func:`frame`), :func:`synthesise`. ``count``: ``x`` is input (False: the end
    padding of ``flush``); ``limit``: the most samples the stream emits in all; ``record``: copy
    each frame's gates out. Returns (the samples now final [M] float32, the gates
    [frames, n_blocks, H] uint8 (no frames unless ``record``), frames run); the frame count is
    -n when n samples of ``x`` are NaN or Inf, and then nothing was done."""
    n, hop = ti[0], ti[1]
    bad = nonfinite(x)
    total = ac[HELD] + x.shape[0]
    ready = (total - n) // hop + 1 if total >= n and not bad else 0
    out = np.empty(ready * hop, np.float32)
    glog = np.empty((ready if record else 0, gates.shape[0], gates.shape[1]), np.uint8)
    if bad:
        return out, glog, -bad
    mask = _state_views(sf, wi)[2]
    i, o, frames = 0, 0, 0
    while True:
        i = push(x, i, af, ac, n, count)
        if ac[HELD] < n:
            return out[:o], glog, frames
        analyse(af, ac, tf, ti, mag)
        frame(mag, wf, wi, sf, si, gates)
        ac[OPEN] += si[I_OPEN]
        if record:
            glog[frames] = gates
        o = synthesise(mask, af, ac, tf, ti, out, o, limit)
        frames += 1

"""The compiled mask estimator: one frame of the network, in numba (the sparse engine's loop).

:class:`dyncp.runtime.SparseRuntime` packs the weights and owns the layout; this module is the
per-frame algorithm (:func:`frame`): front-end, for each block the gate (pooling ring, score
stack, Heaviside against the stream's threshold, floor top-k; only the pooling ring when the
stream is bypassed, a budget of Φ = 0), then only the active channels, then the back-end. It
releases the GIL (``nogil=True``): streams in several threads run in parallel.

Arguments: the weights are one float32 buffer ``wf`` and an int64 table ``wi`` (dimensions,
flags, section offsets, dilations); a stream's state is one float32 buffer ``sf``, one int64
buffer ``si`` and its uint8 ``gates``. numba checks the type of every argument on every call
(~0.1 µs each): six arguments instead of twenty-four save ~1.8 µs per frame.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .config import LOG_FEATURE_FLOOR

# The network's int64 table ``wi`` (built by dyncp.runtime): HEADER values, then the offsets of
# the WEIGHTS sections in the float32 weight buffer ``wf``, the offsets of the STATE sections in a
# stream's float32 buffer ``sf``, the dilations [n_blocks].
HEADER = ("n_freq", "residual", "hidden", "kernel", "reduction", "n_blocks", "pool", "ring",
          "gated", "sparse", "min_active", "stride")
_F, _B, _H, _K, _R, _NB, _L, _D, _GATED, _SPARSE, _MIN_ACTIVE, _STRIDE = range(len(HEADER))
WEIGHTS = ("front_wt", "front_b", "back_w", "back_b", "chan", "pw2_bias", "gw1", "gb1", "gw2t",
           "gb2", "compress")
STATE = ("pool", "dw", "mask", "scratch", "thresh")
SCRATCH_ROWS = 5  # h, h2, scores, z1, sort buffer (the min_active floor); row 0 is first the
#                   clamped input of the features (n_freq wide)
_W_OFF = len(HEADER)
_S_OFF = _W_OFF + len(WEIGHTS)
_DIL = _S_OFF + len(STATE)
# A stream's int64 buffer ``si``: frame counter, gated channels open and channels computed at the
# last frame, the bypass flag (a budget of Φ = 0: no gate runs, every channel is computed; set by
# the caller between frames), then the list of channels to compute [H], then the depthwise ring
# slot of each tap
I_T, I_OPEN, I_COMPUTED, I_BYPASS, I_ACTIVE = range(5)
# [decided] Reassociation and FMA contraction only (no nnan/ninf: NaN and Inf still propagate).
# Reassociation lets LLVM vectorise the per-channel dot products: measured ~5x faster than
# fastmath=False on the 128-long PW1 rows (and ~2x faster than calling BLAS per row).
_FASTMATH = {"reassoc", "contract"}


# -- the network, one frame -------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _weight_views(wf, wi):
    F, B, H, k, R, nb = wi[_F], wi[_B], wi[_H], wi[_K], wi[_R], wi[_NB]
    o = wi[_W_OFF:_W_OFF + 11]
    stride = wi[_STRIDE]
    return (wf[o[0]:o[0] + F * B].reshape((F, B)), wf[o[1]:o[1] + B],
            wf[o[2]:o[2] + F * B].reshape((F, B)), wf[o[3]:o[3] + F],
            wf[o[4]:o[4] + nb * H * stride].reshape((nb, H, stride)),
            wf[o[5]:o[5] + nb * B].reshape((nb, B)), wf[o[6]:o[6] + nb * R * B].reshape((nb, R, B)),
            wf[o[7]:o[7] + nb * R].reshape((nb, R)), wf[o[8]:o[8] + nb * R * H].reshape((nb, R, H)),
            wf[o[9]:o[9] + nb * H].reshape((nb, H)), wf[o[10]])


@njit(cache=True, nogil=True)
def scratch_width(F, B, H, R):
    """Floats per scratch row: the widest of residual, hidden, reduction and frequency bins."""
    return max(F, B, H, R)


@njit(cache=True, nogil=True)
def state_views(sf, wi):
    F, B, H, R, nb, L, D = wi[_F], wi[_B], wi[_H], wi[_R], wi[_NB], wi[_L], wi[_D]
    o = wi[_S_OFF:_S_OFF + 5]
    w = scratch_width(F, B, H, R)
    return (sf[o[0]:o[0] + nb * L * B].reshape((nb, L, B)),
            sf[o[1]:o[1] + nb * D * H].reshape((nb, D, H)), sf[o[2]:o[2] + F],
            sf[o[3]:o[3] + SCRATCH_ROWS * w].reshape((SCRATCH_ROWS, w)),
            sf[o[4]:o[4] + nb * H].reshape((nb, H)))


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


# -- transcendentals, vectorised ------------------------------------------------------------------
# [decided] The features' power (|X|^0.3: 257 powf a frame) and the mask's sigmoid (257 expf) in
# polynomials over whole rows: LLVM vectorises these loops, where it calls scalar libm for
# powf/expf (llvmlite's wheels carry no vector math library): 1.86 µs a frame scalar, measured
# alone; inside the frame the gain is within run-to-run noise (~0.5 µs, docs/streaming.md).
# Relative error <= 1e-6 against float32 libm (tests/test_runtime.py); no reassociation here,
# so that the two-part ln 2 of the range reductions keeps its precision; numpy's error model
# (a division by zero gives Inf, no check: the check's branch stops LLVM from vectorising).
_POW2 = np.array([2.0 ** n for n in range(-127, 128)], np.float32)   # 2^n at [n + 127]
_LN2_HI, _LN2_LO = np.float32(0.693145751953125), np.float32(1.428606765330187e-06)
_LOG2E, _SQRT2 = np.float32(1.4426950408889634), np.float32(1.4142135623730951)
_EXP_MIN, _EXP_MAX = np.float32(-87.0), np.float32(88.0)  # 2^n stays within _POW2's range


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _exp(z):
    """e^z for finite z (clamped to [-87, 88]): 2^n * e^r, |r| <= ln2/2, Taylor to r^7."""
    z = min(max(z, _EXP_MIN), _EXP_MAX)
    n = np.floor(z * _LOG2E + np.float32(0.5))
    r = (z - n * _LN2_HI) - n * _LN2_LO
    p = np.float32(1.0 / 5040)
    p = p * r + np.float32(1.0 / 720)
    p = p * r + np.float32(1.0 / 120)
    p = p * r + np.float32(1.0 / 24)
    p = p * r + np.float32(1.0 / 6)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    k = min(max(np.int32(n), np.int32(-127)), np.int32(127))   # NaN: any index, still in range
    return p * _POW2[k + 127]


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always", error_model="numpy")
def _ln(y, b):
    """ln y for a positive normal float32 y whose bits are ``b``: e ln2 + ln m, m in
    [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m - 1)/(m + 1)) to the ninth power."""
    eb = min(max(b >> np.int32(23), np.int32(1)), np.int32(254))   # int32: 8 lanes, not 4
    m = y * _POW2[np.int32(254) - eb]              # y / 2^(eb - 127), in [1, 2)
    e = np.float32(eb - np.int32(127))
    big = m > _SQRT2
    m = np.float32(0.5) * m if big else m
    e = e + np.float32(1.0) if big else e
    t = (m - np.float32(1.0)) / (m + np.float32(1.0))
    t2 = t * t
    q = np.float32(1.0 / 9)
    q = q * t2 + np.float32(1.0 / 7)
    q = q * t2 + np.float32(1.0 / 5)
    q = q * t2 + np.float32(1.0 / 3)
    q = q * t2 + np.float32(1.0)
    return e * _LN2_HI + (e * _LN2_LO + np.float32(2.0) * t * q)


@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def features(mag, compress, clamped, out):
    """The network's input features of one frame into ``out``: |X|, (|X| + 1e-12)^compress, or
    at compress 0 ln(|X| + LOG_FEATURE_FLOOR) (model._features); ``clamped`` is scratch of the
    same length. A NaN or Inf bin takes libm's value."""
    n = mag.shape[0]
    if compress == 1.0:
        for f in range(n):
            out[f] = mag[f]
        return
    eps = np.float32(LOG_FEATURE_FLOOR) if compress == 0.0 else np.float32(1e-12)
    for f in range(n):
        clamped[f] = max(mag[f], np.float32(0.0)) + eps
    bits = clamped.view(np.int32)
    bad = np.int32(0)
    if compress == 0.0:
        for f in range(n):
            bad |= np.int32((bits[f] >> 23) >= 255) | np.int32(bits[f] < 0)
            out[f] = _ln(clamped[f], bits[f])
    else:
        c = np.float32(compress)
        for f in range(n):
            bad |= np.int32((bits[f] >> 23) >= 255) | np.int32(bits[f] < 0)
            out[f] = _exp(c * _ln(clamped[f], bits[f]))
    if bad:                                     # a non-finite bin: libm's value, as torch's
        for f in range(n):
            y = clamped[f]
            if not (y < np.inf):
                out[f] = np.log(y) if compress == 0.0 else y ** np.float32(compress)


@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def sigmoid_(x):
    """x <- 1 / (1 + e^-x) in place (NaN stays NaN; beyond |x| = 87 the clamp of _exp)."""
    for f in range(x.shape[0]):
        v = x[f]
        x[f] = np.float32(1.0) / (np.float32(1.0) + _exp(-v)) if v == v else v


# [decided] The paper's widths (residual 128, kernel 3) as constants: LLVM then knows the inner
# loops' trip counts and drops their remainder and run-time checks, measured 8 % of a dense frame
# (59.5 -> 55 us, tests/test_runtime.py runs both paths); other widths take the generic copy.
SPECIALISED = (128, 3)


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def frame(mag, wf, wi, sf, si, gates):
    """One frame of the mask estimator (the weight layout: :mod:`dyncp.runtime`). Reads the weights
    (``wf``, ``wi``), updates the state (``sf``: pool and depthwise rings, mask, scratch; ``si``:
    frame counter, counts, active list; ``gates``; ``si[I_BYPASS]`` and the thresholds in ``sf``
    are the caller's: the budget), returns the number of hidden channels
    computed (all of them in dense mode).

    Inner loops index arrays with the loop variable only (an offset index may be negative to
    numba, whose wrap-around check stops LLVM from vectorising: measured 5x slower)."""
    if wi[_B] == SPECIALISED[0] and wi[_K] == SPECIALISED[1]:
        return _frame(mag, wf, wi, sf, si, gates, SPECIALISED[0], SPECIALISED[1])
    return _frame(mag, wf, wi, sf, si, gates, wi[_B], wi[_K])


@njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _frame(mag, wf, wi, sf, si, gates, B, k):
    """:func:`frame` with the residual width ``B`` and kernel size ``k`` given (constants in the
    specialised copy)."""
    front_wt, front_b, back_w, back_b, chan, pw2_bias, gw1, gb1, gw2t, gb2, compress = \
        _weight_views(wf, wi)
    pool, dw, mask, scratch, thresh = state_views(sf, wi)
    n_freq, H, R = wi[_F], wi[_H], wi[_R]
    n_blocks, L, D = wi[_NB], wi[_L], wi[_D]
    gated, sparse, min_active = wi[_GATED] != 0, wi[_SPARSE] != 0, wi[_MIN_ACTIVE]
    dilations = wi[_DIL:_DIL + n_blocks]
    active, slots = si[I_ACTIVE:I_ACTIVE + H], si[I_ACTIVE + H:I_ACTIVE + H + k]
    w2_off, c_off = B + k, 2 * B + k          # PW2 column and per-channel constants
    t = si[I_T]
    zero = np.float32(0.0)
    h, h2, scores, z1, sort_buf = scratch[0, :B], scratch[1, :B], scratch[2, :H], scratch[3, :R], \
        scratch[4, :H]
    # front-end: h = ReLU(W_f x + b_f), axpys over the residual channels, four bins per pass;
    # the features first, into the mask row (the back-end writes the mask last)
    feat = mask
    features(mag, compress, scratch[0, :n_freq], feat)
    for b in range(B):
        h[b] = front_b[b]
    f = 0
    while f + 4 <= n_freq:                      # four bins at a time: one pass over h
        x0, x1, x2, x3 = feat[f], feat[f + 1], feat[f + 2], feat[f + 3]
        w0, w1, w2, w3 = front_wt[f], front_wt[f + 1], front_wt[f + 2], front_wt[f + 3]
        for b in range(B):
            h[b] += w0[b] * x0 + w1[b] * x1 + w2[b] * x2 + w3[b] * x3
        f += 4
    for f in range(f, n_freq):
        x = feat[f]
        wf_ = front_wt[f]
        for b in range(B):
            h[b] += wf_[b] * x
    for b in range(B):
        h[b] = max(h[b], zero)
    bypass = si[I_BYPASS] != 0
    computed, n_open = 0, 0
    for i in range(n_blocks):
        d = dilations[i]
        n_on = H
        if gated:
            # gate: moving average of the block input over the last L frames (a ring of L slots
            # that starts as zeros, like model.step's cache), then the score stack PW-ReLU-PW.
            # The ring is written even when bypassed (as GatedBlock.step(gated=False) keeps its
            # cache), so that a later gated frame sees the right history.
            ring = pool[i]
            slot = ring[t % L]
            for b in range(B):
                slot[b] = h[b]
        if gated and bypass:                        # Φ = 0: no score stack, every channel on
            g = gates[i]
            for c in range(H):
                g[c] = 1
        elif gated:
            for b in range(B):
                h2[b] = zero
            for j in range(L):
                rj = ring[j]
                for b in range(B):
                    h2[b] += rj[b]
            for b in range(B):
                h2[b] = h2[b] / np.float32(L)
            for r in range(R):                      # R dot products over B: vectorised
                z1[r] = gb1[i, r] + _dot(gw1[i, r], h2, B)
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
                on = scores[c] > th[c]
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
    # back-end: mask = sigmoid(W_b h + b_b), four bins' dot products per pass over h
    f = 0
    while f + 4 <= n_freq:
        w0, w1, w2, w3 = back_w[f], back_w[f + 1], back_w[f + 2], back_w[f + 3]
        s0, s1, s2, s3 = zero, zero, zero, zero
        for b in range(B):
            x = h[b]
            s0 += w0[b] * x
            s1 += w1[b] * x
            s2 += w2[b] * x
            s3 += w3[b] * x
        mask[f], mask[f + 1], mask[f + 2], mask[f + 3] = \
            s0 + back_b[f], s1 + back_b[f + 1], s2 + back_b[f + 2], s3 + back_b[f + 3]
        f += 4
    for f in range(f, n_freq):
        mask[f] = _dot(back_w[f], h, B) + back_b[f]
    sigmoid_(mask)
    si[I_T] = t + 1
    si[I_OPEN] = n_open if gated else n_blocks * H
    si[I_COMPUTED] = computed
    return computed

"""The sparse engine: per frame, evaluate each gate, then compute only the active channels and
read only their weights (SPEC §2: "inference computes only the active channels" [paper]).

Built from a model or a checkpoint, the runtime holds immutable float32 weight arrays and a
separate, explicit per-stream state (``RuntimeState``: pooling ring, depthwise ring, frame
counter), like rnnoise's create-state / process-frame contract. One ``numba`` call per frame runs
the whole mask estimator: front-end, the gated blocks, back-end.

Weight layout. One hidden channel's weights are contiguous, so a pruned channel costs no memory
traffic at all: ``chan[i, c, :]`` of block ``i`` holds

    [ PW1 row (B_res) | DW taps (k) | PW2 column (B_res) | b1 a1 s1 c1 bd a2 s2 c2 | pad ]

(``b1``/``bd``: PW1/DW biases; ``a1``/``a2``: PReLU slopes; ``s``/``c``: BatchNorm scale/shift),
padded to a multiple of 16 floats (64-byte cache lines).

BatchNorm folding, where it is exact. BN sits *after* the PReLU and *before* the gate mask:

- BN1 scale folds into the PW1 row and bias where it is positive (PReLU is positively
  homogeneous: ``s * prelu(x) = prelu(s * x)`` for ``s > 0``); a negative scale stays a
  per-channel multiply. BN1's shift ``c1`` stays per channel: folding it into the depthwise bias
  would be wrong at the start of a clip and across pruned past frames, where the depthwise conv
  reads zeros, not ``c1`` (the test ``test_runtime.py`` decides; a folded shift fails it).
- BN2 scale folds into the PW2 column (``W2[:, c] * s2``) with the shift kept per channel in the
  scaled domain (``c2 / s2``), where ``s2 != 0``.

Per frame cost (MACs, SPEC §4): front-end ``F*B``, each block ``B*R + R*H`` (gate) plus
``active * (B + k + B)``, back-end ``B*F``. Pooling, biases, norms, activations: O(channels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numba import njit

from .model import ConvFSENet, require_causal

MODES = ("sparse", "dense")
_N_CONST = 8  # b1 a1 s1 c1 bd a2 s2 c2
# [decided] Reassociation and FMA contraction only (no nnan/ninf: NaN and Inf still propagate).
# Reassociation lets LLVM vectorise the per-channel dot products: measured ~5x faster than
# fastmath=False on the 128-long PW1 rows (and ~2x faster than calling BLAS per row).
_FASTMATH = {"reassoc", "contract"}


@dataclass
class RuntimeState:
    """Per-stream state, zeros = silence before the start (same convention as ``model.step``).

    ``pool`` [n_blocks, L, B_res]: ring of the last L block inputs (the gate's moving average);
    ``dw`` [n_blocks, D, H]: ring of the last D frames of hidden activations u, one column per
    channel, D = (k-1)*max(dilation)+1 (a pruned channel writes 0: time-major, so that zeroing
    one frame's slot is one contiguous write); ``t`` [1] int64: frames processed.
    """

    pool: np.ndarray
    dw: np.ndarray
    t: np.ndarray

    def copy(self) -> "RuntimeState":
        return RuntimeState(self.pool.copy(), self.dw.copy(), self.t.copy())


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _bn(bn: torch.nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNorm as y = s*x + c (float64)."""
    s = _np(bn.weight) / np.sqrt(_np(bn.running_var) + bn.eps)
    return s, _np(bn.bias) - _np(bn.running_mean) * s


class SparseRuntime:
    """Frame-by-frame mask estimator computing only the active channels.

    ``SparseRuntime(model_or_checkpoint, mode="sparse"|"dense")``; ``step(mag_t [F]) ->
    (mask_t [F] float32, gates_t [n_blocks, H] uint8)``; ``reset()``. ``mode="dense"`` computes
    every channel and multiplies by the gate mask (the training semantics, the baseline);
    ``"sparse"`` skips pruned channels. A static model (no gates) runs every channel in both
    modes and returns gates of shape [0, H].
    """

    def __init__(self, model: ConvFSENet | str | Path, mode: str = "sparse") -> None:
        if not isinstance(model, ConvFSENet):
            from .checkpoint import load_model
            model, _ = load_model(model)
        if mode not in MODES:
            raise ValueError(f"SparseRuntime mode must be one of {', '.join(MODES)}, got {mode!r}")
        cfg = model.cfg
        require_causal(cfg, "the streaming runtime")
        self.cfg, self.mode = cfg, mode
        m, g = cfg.model, cfg.gate
        self.n_freq, self.residual = cfg.stft.n_freq, m.residual
        self.hidden, self.kernel = m.hidden, m.kernel
        self.n_blocks, self.gated = m.n_blocks, cfg.gate.enabled
        self.pool_len = g.pool if self.gated else 1
        self.min_active = g.min_active if self.gated else 0
        self.compress = float(m.feature_compress)
        self.dilations = np.array(m.block_dilations(), dtype=np.int64)
        self.ring = (m.kernel - 1) * int(self.dilations.max()) + 1
        self._pack(model)
        f32 = np.float32
        self._mask = np.zeros(self.n_freq, f32)
        self._gates = np.zeros((self.n_blocks, self.hidden), np.uint8)
        self._scratch = np.zeros((4, max(self.residual, self.hidden, g.reduction)), f32)
        self._active = np.zeros(self.hidden, np.int64)
        self._gates_out = self._gates if self.gated else self._gates[:0]
        # the kernel's arguments, bound once: per-frame Python overhead is part of the budget
        self._weights = (self.compress, self.front_wt, self.front_b, self.back_w, self.back_b,
                         self.chan, self.pw2_bias, self.gw1t, self.gb1, self.gw2t, self.gb2,
                         self.dilations, self.kernel, self.gated, mode == "sparse",
                         self.min_active)
        self._buffers = (self._mask, self._gates, self._scratch, self._active)
        self.state = self.initial_state()
        # Compile (or load from numba's cache) now, on a throw-away state, so that the first real
        # frame of a stream does not pay for it.
        self.step_into(np.zeros(self.n_freq, f32), self.initial_state())

    # -- weights ----------------------------------------------------------------------------------
    def _pack(self, model: ConvFSENet) -> None:
        B, H, k = self.residual, self.hidden, self.kernel
        stride = -(-(2 * B + k + _N_CONST) // 16) * 16
        chan = np.zeros((self.n_blocks, H, stride))
        pw2_bias = np.zeros((self.n_blocks, B))
        R = self.cfg.gate.reduction if self.gated else 1
        gw1t = np.zeros((self.n_blocks, B, R))
        gb1 = np.zeros((self.n_blocks, R))
        gw2t = np.zeros((self.n_blocks, R, H))
        gb2 = np.zeros((self.n_blocks, H))
        for i, blk in enumerate(model.blocks):
            w1, b1 = _np(blk.pw1.weight)[:, :, 0], _np(blk.pw1.bias)
            s1, c1 = _bn(blk.bn1)
            pos = s1 > 0                               # exact fold: s*prelu(x) = prelu(s*x), s > 0
            w1 = np.where(pos[:, None], w1 * s1[:, None], w1)
            b1 = np.where(pos, b1 * s1, b1)
            s1 = np.where(pos, 1.0, s1)
            w2 = _np(blk.pw2.weight)[:, :, 0]           # [B, H]
            s2, c2 = _bn(blk.bn2)
            nz = s2 != 0
            w2 = np.where(nz[None, :], w2 * s2[None, :], w2)
            c2 = np.where(nz, c2 / np.where(nz, s2, 1.0), c2)
            s2 = np.where(nz, 1.0, s2)
            chan[i, :, :B] = w1
            chan[i, :, B:B + k] = _np(blk.dw.weight)[:, 0, :]
            chan[i, :, B + k:2 * B + k] = w2.T
            consts = [b1, _np(blk.act1.weight) * np.ones(H), s1, c1, _np(blk.dw.bias),
                      _np(blk.act2.weight) * np.ones(H), s2, c2]
            chan[i, :, 2 * B + k:2 * B + k + _N_CONST] = np.stack(consts, axis=1)
            pw2_bias[i] = _np(blk.pw2.bias)
            if blk.gate is not None:
                gw1t[i], gb1[i] = _np(blk.gate.score1.weight)[:, :, 0].T, _np(blk.gate.score1.bias)
                gw2t[i], gb2[i] = _np(blk.gate.score2.weight)[:, :, 0].T, _np(blk.gate.score2.bias)
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        self.chan, self.pw2_bias = f32(chan), f32(pw2_bias)
        self.gw1t, self.gb1, self.gw2t, self.gb2 = f32(gw1t), f32(gb1), f32(gw2t), f32(gb2)
        self.front_wt = f32(_np(model.front.weight)[:, :, 0].T)   # [F, B]: axpy over B per bin
        self.front_b = f32(_np(model.front.bias))
        self.back_w = f32(_np(model.back.weight)[:, :, 0])        # [F, B]: one dot per bin
        self.back_b = f32(_np(model.back.bias))

    @property
    def weight_bytes(self) -> int:
        arrs = (self.chan, self.pw2_bias, self.gw1t, self.gb1, self.gw2t, self.gb2, self.front_wt,
                self.front_b, self.back_w, self.back_b)
        return int(sum(a.nbytes for a in arrs))

    # -- state ------------------------------------------------------------------------------------
    def initial_state(self) -> RuntimeState:
        return RuntimeState(np.zeros((self.n_blocks, self.pool_len, self.residual), np.float32),
                            np.zeros((self.n_blocks, self.ring, self.hidden), np.float32),
                            np.zeros(1, np.int64))

    def reset(self) -> None:
        self.state = self.initial_state()

    # -- per frame --------------------------------------------------------------------------------
    def step_into(self, mag_t: np.ndarray, state: RuntimeState | None = None
                  ) -> tuple[np.ndarray, np.ndarray, int]:
        """Like :meth:`step` but returns the runtime's own buffers (overwritten next frame) and
        the number of channels computed; no checks, no copies (the streaming hot path)."""
        st = self.state if state is None else state
        n = _frame(mag_t, *self._weights, st.pool, st.dw, st.t, *self._buffers)
        return self._mask, self._gates_out, n

    def step(self, mag_t: np.ndarray, state: RuntimeState | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """One frame: mag_t [F] (|STFT|, float) -> (mask_t [F] float32, gates_t [n_blocks, H]
        uint8). Advances ``state`` (default: the runtime's own ``self.state``) in place."""
        mag_t = np.ascontiguousarray(mag_t, dtype=np.float32)
        if mag_t.shape != (self.n_freq,):
            raise ValueError(f"SparseRuntime.step expects mag_t [{self.n_freq}], "
                             f"got {mag_t.shape}")
        mask, gates, _ = self.step_into(mag_t, state)
        return mask.copy(), gates.copy()


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _dot(a, b, n):
    s = np.float32(0.0)
    for j in range(n):
        s += a[j] * b[j]
    return s


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _prelu(x, a):
    return x if x >= 0 else a * x


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _frame(mag, compress, front_wt, front_b, back_w, back_b, chan, pw2_bias, gw1t, gb1, gw2t, gb2,
           dilations, kernel, gated, sparse, min_active, pool, dw, t_arr, mask, gates, scratch,
           active):
    """One frame of the mask estimator (layouts: see the module docstring). Updates ``pool``,
    ``dw``, ``t_arr``, writes ``mask`` [F] and ``gates`` [n_blocks, H]; returns the number of
    hidden channels computed (all of them in dense mode).

    Inner loops index arrays with the loop variable only (an offset index may be negative to
    numba, whose wrap-around check stops LLVM from vectorising: measured 5x slower)."""
    n_freq, B = front_wt.shape
    n_blocks, H, _ = chan.shape
    R, L, D, k = gw1t.shape[2], pool.shape[1], dw.shape[1], kernel
    w2_off, c_off = B + k, 2 * B + k          # PW2 column and per-channel constants
    t = t_arr[0]
    zero = np.float32(0.0)
    h, h2, scores, z1 = scratch[0, :B], scratch[1, :B], scratch[2, :H], scratch[3, :R]
    slots = np.empty(k, np.int64)
    # front-end: h = ReLU(W_f x + b_f), one axpy over the residual channels per bin
    for b in range(B):
        h[b] = front_b[b]
    for f in range(n_freq):
        x = mag[f]
        if compress != 1.0:
            x = (max(x, zero) + np.float32(1e-12)) ** np.float32(compress)
        wf = front_wt[f]
        for b in range(B):
            h[b] += wf[b] * x
    for b in range(B):
        h[b] = max(h[b], zero)
    computed = 0
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
            for c in range(H):                      # Heaviside; a NaN score prunes
                on = scores[c] > 0
                g[c] = on
                n_on += on
            if min_active > 0 and n_on < min_active:
                # floor: the top-min_active scores are forced on (ties included, as in torch)
                kth = np.sort(scores.copy())[H - min_active]
                n_on = 0
                for c in range(H):
                    on = g[c] == 1 or scores[c] >= kth
                    g[c] = on
                    n_on += on
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
        pos = t % D
        for j in range(k):                          # ring slot of each tap: frame t-(k-1-j)*d
            slots[j] = (t - (k - 1 - j) * d) % D
        now = dw[i, pos]
        for c in range(H):
            now[c] = zero                           # a pruned channel's past reads as 0
        for a in range(n):
            c = active[a]
            row = chan[i, c]
            on = np.float32(gates[i, c]) if gated else np.float32(1.0)
            u = _dot(row, h, B) + row[c_off]
            u = (_prelu(u, row[c_off + 1]) * row[c_off + 2] + row[c_off + 3]) * on
            now[c] = u
            z = row[c_off + 4]
            for j in range(k):
                z += row[B + j] * dw[i, slots[j], c]
            v = (_prelu(z, row[c_off + 5]) * row[c_off + 6] + row[c_off + 7]) * on
            w2 = row[w2_off:w2_off + B]
            for b in range(B):
                h2[b] += w2[b] * v
        for b in range(B):
            h[b] = h2[b]
    # back-end: mask = sigmoid(W_b h + b_b), one dot per bin
    for f in range(n_freq):
        x = _dot(back_w[f], h, B) + back_b[f]
        mask[f] = np.float32(1.0) / (np.float32(1.0) + np.exp(-x))
    t_arr[0] = t + 1
    return computed

"""The sparse engine: per frame, evaluate each gate, then compute only the active channels and
read only their weights (SPEC §2: "inference computes only the active channels" [paper]).

Built from a model or a checkpoint, the runtime holds immutable float32 weights, shared by any
number of streams, and each stream owns a ``RuntimeState`` with *everything a frame writes*
(pooling ring, depthwise ring, frame counter, mask, gates, scratch), like rnnoise's create-state /
process-frame contract: streams on one runtime may run in parallel threads (the kernel releases
the GIL). One ``numba`` call per frame runs the whole mask estimator: front-end, the gated blocks,
back-end.

Arguments. The weights are one float32 buffer and the state one float32 and one int64 buffer
(plus the uint8 gates), with an int64 table of dimensions and offsets (``_Packed``): numba checks
the type of every argument on every call (~0.1 µs each), so a call with 6 arguments costs ~1.8 µs
per frame less than one with an argument per array. ``SparseRuntime.chan`` and friends are views
into the buffer.

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

from pathlib import Path

import numpy as np
import torch

from .kernel import (HEADER, I_ACTIVE, I_BYPASS, I_COMPUTED, I_OPEN, I_T, SCRATCH_ROWS, STATE,
                     WEIGHTS, frame, scratch_width)
from .model import ConvFSENet, budget_code, require_causal

MODES = ("sparse", "dense")
_N_CONST = 8  # b1 a1 s1 c1 bd a2 s2 c2


class _Packed:
    """Named arrays of one dtype in one buffer, each starting on a 64-byte line (chan's rows
    stay line-aligned); ``views[name]`` is the array, ``offsets`` their positions."""

    def __init__(self, dtype, shapes: dict[str, tuple[int, ...]], align: int = 64) -> None:
        item = np.dtype(dtype).itemsize
        step = max(align // item, 1)
        self.offsets, n = [], 0
        for shape in shapes.values():
            self.offsets.append(n)
            n += -(-int(np.prod(shape)) // step) * step
        raw = np.zeros(n + step, dtype)
        skip = (-raw.ctypes.data % align) // item     # first element on a 64-byte boundary
        self.buf = raw[skip:skip + n]
        self.views = {name: self.buf[o:o + int(np.prod(s))].reshape(s)
                      for (name, s), o in zip(shapes.items(), self.offsets)}


class RuntimeState:
    """One stream's state: everything a frame writes, zeros = silence before the start (the
    convention of ``model.step``). Streams never share one.

    ``pool`` [n_blocks, L, B_res]: ring of the last L block inputs (the gate's moving average);
    ``dw`` [n_blocks, D, H]: ring of the last D frames of hidden activations u, one column per
    channel, D = (k-1)*max(dilation)+1 (a pruned channel writes 0: time-major, so that zeroing
    one frame's slot is one contiguous write); ``t`` [1] int64: frames processed; ``mask`` [F]
    and ``gates`` [n_blocks, H] uint8: the last frame's outputs; ``thresh`` [n_blocks, H] float32:
    the gates' thresholds, per stream (a channel is kept where its score > thresh; 0 is the
    trained model; a budget model's budget moves them, :meth:`SparseRuntime.set_budget`);
    ``bypass``: the stream runs at Φ = 0 (no gate, every channel); ``phi``: the budget requested
    (None for a model without one); ``n_open`` / ``n_computed``: gated channels open and channels
    computed at the last frame. ``f`` (float32) and ``i`` (int64) are the buffers behind them.
    """

    def __init__(self, f: _Packed, i: np.ndarray, gates: np.ndarray) -> None:
        self._packed, self.f, self.i, self.gates = f, f.buf, i, gates
        v = f.views
        self.pool, self.dw, self.mask, self.scratch, self.thresh = (v[n] for n in STATE)
        self.t = i[I_T:I_T + 1]
        self.phi: float | None = None
        self.cap: int | None = None

    @property
    def bypass(self) -> bool:
        return bool(self.i[I_BYPASS])

    @property
    def n_open(self) -> int:
        return int(self.i[I_OPEN])

    @property
    def n_computed(self) -> int:
        return int(self.i[I_COMPUTED])

    def copy(self) -> "RuntimeState":
        shapes = {n: a.shape for n, a in self._packed.views.items()}
        f = _Packed(np.float32, shapes)
        f.buf[:] = self.f
        st = RuntimeState(f, self.i.copy(), self.gates.copy())
        st.phi, st.cap = self.phi, self.cap
        return st


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
    modes and returns gates of shape [0, H]. The weights are immutable and may be shared by
    streams in several threads, each with its own ``initial_state()``. A budget model's
    streams start at its nominal budget; :meth:`set_budget` changes one stream's between frames.
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
        self.reduction = g.reduction if self.gated else 1
        self.min_active = g.min_active if self.gated else 0
        self.compress = float(m.feature_compress)
        self.dilations = np.array(m.block_dilations(), dtype=np.int64)
        self.ring = (m.kernel - 1) * int(self.dilations.max()) + 1
        self._pack(model)
        self._budget_init(model)
        self._state_shapes = {
            "pool": (self.n_blocks, self.pool_len, self.residual),
            "dw": (self.n_blocks, self.ring, self.hidden), "mask": (self.n_freq,),
            "scratch": (SCRATCH_ROWS, scratch_width(self.n_freq, self.residual, self.hidden,
                                                    self.reduction)),
            "thresh": (self.n_blocks, self.hidden)}
        header = {"n_freq": self.n_freq, "residual": self.residual, "hidden": self.hidden,
                  "kernel": self.kernel, "reduction": self.reduction, "n_blocks": self.n_blocks,
                  "pool": self.pool_len, "ring": self.ring, "gated": int(self.gated),
                  "sparse": int(mode == "sparse"), "min_active": self.min_active,
                  "stride": self.chan.shape[2]}
        self.wi = np.array([header[k] for k in HEADER] + self._weights.offsets
                           + _Packed(np.float32, self._state_shapes).offsets
                           + list(self.dilations), np.int64)
        self.wf = self._weights.buf
        self.state = self.initial_state()
        # Compile (or load from numba's cache) now, on a throw-away state, so that the first real
        # frame of a stream does not pay for it.
        self.step_into(np.zeros(self.n_freq, np.float32), self.initial_state())

    # -- weights ----------------------------------------------------------------------------------
    def _pack(self, model: ConvFSENet) -> None:
        B, H, k, nb, F = self.residual, self.hidden, self.kernel, self.n_blocks, self.n_freq
        R = self.reduction
        stride = -(-(2 * B + k + _N_CONST) // 16) * 16
        shapes = {"front_wt": (F, B), "front_b": (B,), "back_w": (F, B), "back_b": (F,),
                  "chan": (nb, H, stride), "pw2_bias": (nb, B), "gw1": (nb, R, B),
                  "gb1": (nb, R), "gw2t": (nb, R, H), "gb2": (nb, H), "compress": (1,)}
        self._weights = w = _Packed(np.float32, shapes)
        v = w.views
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
            chan = v["chan"][i]
            chan[:, :B] = w1
            chan[:, B:B + k] = _np(blk.dw.weight)[:, 0, :]
            chan[:, B + k:2 * B + k] = w2.T
            consts = [b1, _np(blk.act1.weight) * np.ones(H), s1, c1, _np(blk.dw.bias),
                      _np(blk.act2.weight) * np.ones(H), s2, c2]
            chan[:, 2 * B + k:2 * B + k + _N_CONST] = np.stack(consts, axis=1)
            v["pw2_bias"][i] = _np(blk.pw2.bias)
            if blk.gate is not None:
                v["gw1"][i] = _np(blk.gate.score1.weight)[:, :, 0]
                v["gb1"][i] = _np(blk.gate.score1.bias)
                v["gw2t"][i] = _np(blk.gate.score2.weight)[:, :, 0].T
                v["gb2"][i] = _np(blk.gate.score2.bias)
        v["front_wt"][:] = _np(model.front.weight)[:, :, 0].T     # [F, B]: axpy over B per bin
        v["front_b"][:] = _np(model.front.bias)
        v["back_w"][:] = _np(model.back.weight)[:, :, 0]          # [F, B]: one dot per bin
        v["back_b"][:] = _np(model.back.bias)
        v["compress"][0] = self.compress
        for name in WEIGHTS[:-1]:
            setattr(self, name, v[name])

    # -- the run-time budget (budget models, docs/budget.md) ---------------------------------------
    def _budget_init(self, model: ConvFSENet) -> None:
        """A budget model moves each channel's threshold by softplus(slope) * logit(code(Φ))
        (Gate.bias; the score the kernel compares is computed with the base bias b2): keep the
        slopes and the calibration table, as float32 tensors so that the thresholds are the very
        numbers torch subtracts."""
        self.budgeted = bool(self.gated and model.budgeted)
        self.nominal_phi = float(self.cfg.loss.prune_target) if self.budgeted else None
        self._thresholds: dict = {}
        if not self.budgeted:
            return
        import torch.nn.functional as F
        with torch.no_grad():
            self._table = model.budget_table.detach().cpu().float().clone()
            self._slope = torch.stack([F.softplus(b.gate.budget_slope.detach().cpu().float())
                                       for b in model.blocks])                     # [nb, H]
            # [decided] the hard cap keeps, per block, the channels with the lowest threshold at
            # the top of the range (those the model keeps longest as the budget shrinks)
            low = self._slope * torch.logit(budget_code(self._table, torch.tensor(
                [self.cfg.gate.budget_max])).clamp(1e-3, 1 - 1e-3))
            self._rank = np.argsort(_np(low) - self.gb2, axis=1, kind="stable")   # [nb, H]

    def thresholds(self, phi: float, cap: int | None = None) -> np.ndarray:
        """The gate thresholds [n_blocks, H] float32 of a budget Φ > 0 (cached: a governor
        revisits the same values); ``cap``: at most this many channels per block may open (the
        others get +inf)."""
        key = (phi, cap)
        th = self._thresholds.get(key)
        if th is None:               # ~0.1 ms, once per value and runtime (shared by streams)
            with torch.no_grad():
                code = budget_code(self._table, torch.tensor([float(phi)]))
                lp = torch.logit(code.clamp(1e-3, 1 - 1e-3))                     # as Gate.bias
                th = (self._slope * lp).numpy().astype(np.float32)
            if cap is not None and cap < self.hidden:
                np.put_along_axis(th, self._rank[:, cap:], np.float32(np.inf), axis=1)
            if len(self._thresholds) >= 1024:        # ~9 MB for the paper model
                self._thresholds.clear()
            self._thresholds[key] = th
        return th

    def set_budget(self, state: RuntimeState | None = None, phi: float | None = None,
                   mmac: float | None = None, cap: int | None = None) -> float | None:
        """Run ``state``'s next frames (default: ``self.state``) at budget ``phi`` or ``mmac``
        (MMAC/s; :func:`dyncp.budget.phi_for`; neither: the nominal budget). Φ = 0 bypasses the
        gates (no score stack, every channel, the static MACs); Φ > 0 sets the thresholds.
        ``cap``: at most this many channels per block (a hard cap per frame). Returns the Φ run
        (None for a model without a budget). Raises BudgetError for a model without a budget or
        a request outside its range."""
        from .budget import phi_for

        st = self.state if state is None else state
        req = phi_for(self.cfg, phi, mmac)
        if cap is not None and not self.budgeted:
            phi_for(self.cfg, 0.5)                 # raises: no budget
        if not self.budgeted:
            return None
        req = self.nominal_phi if req is None else req
        if cap is not None and req == 0.0:
            from .errors import BudgetError
            raise BudgetError("a hard cap needs a budget Φ > 0 (Φ = 0 computes every channel)")
        self.apply_budget(st, req, cap)
        return req

    def apply_budget(self, state: RuntimeState, phi: float, cap: int | None = None) -> None:
        """:meth:`set_budget` without the checks, for a Φ already known to be in the range (a
        governor's, every frame)."""
        state.i[I_BYPASS] = phi == 0.0
        if phi > 0:
            state.thresh[:] = self.thresholds(phi, cap)
        state.phi, state.cap = phi, cap

    @property
    def weight_bytes(self) -> int:
        return int(sum(a.nbytes for n, a in self._weights.views.items() if n != "compress"))

    # -- state ------------------------------------------------------------------------------------
    def initial_state(self) -> RuntimeState:
        """A fresh stream: its own buffers, zeros (silence before the start); a budget model's
        at its nominal budget."""
        st = RuntimeState(_Packed(np.float32, self._state_shapes),
                          np.zeros(I_ACTIVE + self.hidden + self.kernel, np.int64),
                          np.zeros((self.n_blocks, self.hidden), np.uint8))
        if self.budgeted:
            self.set_budget(st)
        return st

    def reset(self) -> None:
        self.state = self.initial_state()

    # -- per frame --------------------------------------------------------------------------------
    def step_into(self, mag_t: np.ndarray, state: RuntimeState | None = None
                  ) -> tuple[np.ndarray, np.ndarray, int]:
        """Like :meth:`step` but returns the state's own buffers (overwritten by its next frame)
        and the number of channels computed; no checks, no copies (the streaming hot path).
        ``mag_t`` must be float32 [F], contiguous."""
        st = self.state if state is None else state
        n = frame(mag_t, self.wf, self.wi, st.f, st.i, st.gates)
        return st.mask, (st.gates if self.gated else st.gates[:0]), n

    def step(self, mag_t: np.ndarray, state: RuntimeState | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """One frame: mag_t [F] (|STFT|, float) -> (mask_t [F] float32, gates_t [n_blocks, H]
        uint8), copies. Advances ``state`` (default: the runtime's own ``self.state``) in place."""
        mag_t = np.ascontiguousarray(mag_t, dtype=np.float32)
        if mag_t.shape != (self.n_freq,):
            raise ValueError(f"SparseRuntime.step expects mag_t [{self.n_freq}], "
                             f"got {mag_t.shape}")
        mask, gates, _ = self.step_into(mag_t, state)
        return mask.copy(), gates.copy()

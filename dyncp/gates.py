"""The paper's contribution: the DynCP gate (SPEC §2).

One gate per residual block decides, frame by frame, which of the block's ``H`` hidden channels
are computed. It has three parts:

1. pooling ``P``: a moving average of the block input ``h`` over the last ``L`` frames (causal)
   or ``L`` frames around ``t`` (non-causal); computed after the (linear) first layer of the
   score stack, which is the same function and 8x less data to average;
2. a score stack ``PW(B->R) -> ReLU -> PW(R->H)``: one raw score per gated channel;
3. binarisation ``H``: a Heaviside step, channel kept where score > 0, trained through a
   surrogate gradient.

Everything here is either a pure function or a module that holds only weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SURROGATES, GateConfig


def pool_padding(pool: int, causal: bool) -> tuple[int, int]:
    """(left, right) zero padding in frames of the moving average. [decided] For an even
    ``pool`` the non-causal window leans one frame towards the future."""
    if causal:
        return pool - 1, 0
    left = (pool - 1) // 2
    return left, pool - 1 - left


def moving_average(h: torch.Tensor, pool: int, causal: bool) -> torch.Tensor:
    """[B, C, T] -> [B, C, T]: mean over ``pool`` frames, zeros before the start (and after the
    end when non-causal). Zero padding keeps the streaming cache trivial: ``pool - 1`` frames."""
    if pool == 1:
        return h
    left, right = pool_padding(pool, causal)
    return pool_frames(F.pad(h, (left, right)), pool)


def pool_frames(x: torch.Tensor, pool: int) -> torch.Tensor:
    """[B, C, N] -> [B, C, N - pool + 1]: mean over each run of ``pool`` consecutive frames.

    A sum of ``pool`` shifted slices, always added oldest frame first, times 1/pool: forward and
    backward cost 0.6x a depthwise ``conv1d`` with constant weights (0.37 vs 0.60 ms for the
    paper's gate, batch 16 x 4 s, 2 threads), and the streaming step (a window of exactly
    ``pool`` frames) adds the same numbers in the same order, so it matches the full sequence
    bit for bit.
    """
    if pool == 1:
        return x
    n = x.shape[-1] - pool + 1
    if n < 1:
        raise ValueError(f"pool_frames: {x.shape[-1]} frames, need at least pool = {pool}")
    acc = x[..., 0:n]
    for i in range(1, pool):
        acc = acc + x[..., i:i + n]
    return acc * (1.0 / pool)


def _step(scores: torch.Tensor) -> torch.Tensor:
    """1.0 where scores > 0, else 0.0, as float, in one pass: ``gt`` writing straight into a float
    tensor (``sign().clamp_()`` took two passes, ``(s > 0).float()`` a bool tensor and a copy).
    The ONNX exporter has no ``out=``: it gets the readable form."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return (scores > 0).to(scores.dtype)
    return torch.gt(scores, 0, out=torch.empty_like(scores))


def _surrogate_backward(grad: torch.Tensor, scores: torch.Tensor | None, surrogate: str,
                        beta: float) -> torch.Tensor:
    """d mask / d scores times ``grad`` for each surrogate (one fused kernel where possible)."""
    if surrogate == "ste":
        return grad
    if surrogate == "sigmoid":
        return torch.ops.aten.sigmoid_backward(grad, torch.sigmoid(beta * scores)) * beta
    # ste_clipped, stochastic: grad where -1 < s < 1, else 0 (abs/compare/multiply: 25x slower)
    return torch.ops.aten.hardtanh_backward(grad, scores, -1.0, 1.0)


class _Heaviside(torch.autograd.Function):
    """``(scores > 0)`` forward, surrogate derivative backward, in one op each way.

    Same values and gradients as the readable form ``hard + (soft - soft.detach())`` with
    ``soft = clamp(s, -1, 1)`` (except exactly at |s| = 1, where this one passes no gradient),
    without its extra full-size tensors per gate: the readable form cost ~10 % of a training
    step (benchmarks/train_speed.py).
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor, surrogate: str, beta: float) -> torch.Tensor:
        ctx.surrogate, ctx.beta = surrogate, beta
        if surrogate != "ste":
            ctx.save_for_backward(scores)
        return _step(scores)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved = ctx.saved_tensors[0] if ctx.saved_tensors else None
        return _surrogate_backward(grad, saved, ctx.surrogate, ctx.beta), None, None


class _GateTrain(torch.autograd.Function):
    """The whole gate in training as one autograd node, backward written out:
    ``mask = floor(H(W2 relu(P(W1 h) + b1) + b2 [+ noise]))``.

    Values and gradients equal the readable path ``binarize(scores(h))`` built from autograd's own
    ops (tests/test_gates.py checks every surrogate, the noise and the floor). Written out, the
    backward is: the surrogate; the second layer's gradients; the ReLU; the moving average's
    adjoint (a moving sum the other way); the first layer's gradients. Autograd's version
    builds about fifteen nodes per gate (expand, bmm, pad, slices, adds, ...) and took 1.12x as
    long for the paper's gate, batch 16 x 4 s, forward and backward (3.27 vs 2.91 ms, median of
    30 interleaved rounds, 2 threads).
    """

    @staticmethod
    def forward(ctx, h, w1, b1, w2, b2, pool: int, causal: bool, surrogate: str, beta: float,
                noise: float, min_active: int):
        z = moving_average(_project(w1, h), pool, causal)                # [B, R, T]
        z = torch.relu_(z.add_(b1.unsqueeze(-1)))
        s = _pointwise(w2, b2, z)                                        # [B, H, T]
        if noise > 0:                                                    # stochastic relaxation
            s.add_(logistic_noise(s, noise))
        mask = _step(s)
        if min_active > 0:                                               # floor: top scores on
            mask.masked_fill_(floor_hits(s, min_active), 1.0)
        ctx.pool, ctx.causal, ctx.surrogate, ctx.beta = pool, causal, surrogate, beta
        ctx.per_item_bias = b2.dim() == 2
        ctx.save_for_backward(h, w1, z, w2, s if surrogate != "ste" else None)
        return mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, w1, z, w2, s = ctx.saved_tensors
        batch, need = h.shape[0], ctx.needs_input_grad
        gs = _surrogate_backward(grad, s, ctx.surrogate, ctx.beta)        # [B, H, T]
        # weight gradients as a batch of per-item products summed over the batch: contracting
        # batch and frames in one product (tensordot) copies the full-size gradient first
        gw2 = torch.bmm(gs, z.transpose(1, 2)).sum(0) if need[3] else None
        # b2 is [H], or [B, H] for a budget model (a threshold per item, see Gate.bias)
        gb2 = (gs.sum(2) if ctx.per_item_bias else gs.sum((0, 2))) if need[4] else None
        gz = torch.bmm(w2.t().expand(batch, -1, -1), gs)                 # [B, R, T]
        gz = torch.ops.aten.threshold_backward(gz, z, 0.0)               # ReLU
        gb1 = gz.sum((0, 2)) if need[2] else None
        gy = _moving_average_adjoint(gz, ctx.pool, ctx.causal)
        gw1 = torch.bmm(gy, h.transpose(1, 2)).sum(0) if need[1] else None
        gh = torch.bmm(w1.t().expand(batch, -1, -1), gy) if need[0] else None
        return gh, gw1, gb1, gw2, gb2, None, None, None, None, None, None


def _moving_average_adjoint(g: torch.Tensor, pool: int, causal: bool) -> torch.Tensor:
    """Gradient of :func:`moving_average` w.r.t. its input: the same window run backwards in
    time (each input frame collects 1/pool of the gradient of every output that averaged it)."""
    if pool == 1:
        return g
    left, right = pool_padding(pool, causal)
    return pool_frames(F.pad(g, (right, left)), pool)


def heaviside(scores: torch.Tensor, surrogate: str = "ste_clipped", beta: float = 4.0) -> torch.Tensor:
    """Binary step ``(scores > 0)`` whose backward pass is a surrogate gradient.

    The forward value is exactly 0.0 or 1.0. Its derivative is that of a "soft" step:

    - ``ste``: identity, gradient 1 everywhere;
    - ``ste_clipped`` (and ``stochastic``): gradient 1 on |s| < 1, else 0;
    - ``sigmoid``: beta * sigma(beta s) * (1 - sigma(beta s)).
    """
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; choose from {', '.join(SURROGATES)}")
    if not scores.requires_grad:
        return _step(scores)
    return _Heaviside.apply(scores, surrogate, beta)


def logistic_noise(like: torch.Tensor, scale: float) -> torch.Tensor:
    """Logistic noise of the given scale, shaped like ``like`` (the stochastic surrogate)."""
    u = torch.rand_like(like).clamp_(1e-6, 1 - 1e-6)
    return scale * (torch.log(u) - torch.log1p(-u))


def floor_hits(scores: torch.Tensor, min_active: int) -> torch.Tensor:
    """Bool [B, H, T]: the ``min_active`` top scores of each frame (ties may add more)."""
    kth = scores.topk(min_active, dim=1).values[:, -1:, :]           # [B, 1, T]
    return scores >= kth


def apply_floor(mask: torch.Tensor, scores: torch.Tensor, min_active: int) -> torch.Tensor:
    """Keep at least ``min_active`` channels per frame: the top-scoring ones are forced on.

    [decided] SPEC §3a saw whole deep blocks switch off under the global usage loss; the floor is
    the guard. The forced channels keep the surrogate gradient of their own score.
    """
    if min_active <= 0:
        return mask
    forced = floor_hits(scores.detach(), min_active).to(mask.dtype)
    # Where forced, replace the hard value by 1 but keep mask's gradient path.
    return mask + forced * (1.0 - mask.detach())


def _project(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``w @ x`` per item: w [out, in], x [B, in, T] -> [B, out, T] (a 1x1 conv without bias;
    ``bmm`` on the expanded weight: ``matmul`` would copy x into [B*T, in] first)."""
    return torch.bmm(w.expand(x.shape[0], -1, -1), x)


def _pointwise(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``b + w @ x`` per item: a 1x1 conv with bias, [B, in, T] -> [B, out, T]."""
    return torch.baddbmm(b.unsqueeze(-1), w.expand(x.shape[0], -1, -1), x)


class Gate(nn.Module):
    """Per-block gate: [B, in_ch, T] block input -> binary mask [B, out_ch, T].

    MACs per frame (bias/activation/pooling excluded): ``in_ch*R + R*out_ch``.
    """

    def __init__(self, in_ch: int, out_ch: int, cfg: GateConfig, causal: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.causal = causal
        self.score1 = nn.Conv1d(in_ch, cfg.reduction, 1)
        self.score2 = nn.Conv1d(cfg.reduction, out_ch, 1)
        # Gates start open and inside the clipped surrogate's window (SPEC §3a): the gate reads the
        # unnormalised residual stream, so default scores could sit where no gradient passes.
        with torch.no_grad():
            self.score2.weight.mul_(cfg.init_scale)
            self.score2.bias.fill_(cfg.init_bias)
        if cfg.budget:
            # softplus(0.5413) = 1: every threshold starts moving by logit(Φ)
            self.budget_slope = nn.Parameter(torch.full((out_ch,), 0.5413))

    def bias(self, phi: torch.Tensor | None = None) -> torch.Tensor:
        """The last layer's bias: [out_ch], or for a budget model at budget ``phi`` [B] (the Φ
        code, see ConvFSENet.budget_code) [B, out_ch] = b2 - softplus(slope) * logit(phi): a
        larger Φ raises every channel's threshold, each by its own learned amount."""
        b = self.score2.bias
        if not self.cfg.budget:
            return b
        if phi is None:
            raise ValueError("a budget gate needs phi (the requested pruning ratio)")
        lp = torch.logit(phi.to(b.dtype).clamp(1e-3, 1 - 1e-3))
        return b.unsqueeze(0) - F.softplus(self.budget_slope).unsqueeze(0) * lp.unsqueeze(1)

    def scores(self, h: torch.Tensor, phi: torch.Tensor | None = None) -> torch.Tensor:
        """Raw scores [B, out_ch, T] (no noise, no step) of the block input h [B, in_ch, T].

        Computes PW(in->R)(P(h)) as P(W1 h) + b1: the average commutes with the linear layer
        (zero padding maps to zero, W1 0 = 0), and averaging R = 16 channels instead of
        ``in_ch`` = 128 makes the gate several times cheaper to train
        (benchmarks/train_speed.py). The 1x1 convolutions run as batched matrix products over
        the same weights, 2-4x faster than ``conv1d`` on CPU for these narrow shapes.
        """
        z = moving_average(_project(self.score1.weight.squeeze(-1), h), self.cfg.pool,
                           self.causal)
        return self._head(z, phi)

    def window_scores(self, hist: torch.Tensor, phi: torch.Tensor | None = None) -> torch.Tensor:
        """Streaming: scores [B, out_ch, 1] of the last frame from the last ``pool`` frames of the
        block input, hist [B, in_ch, pool] (zeros before the start). The same operations as
        :meth:`scores`, so a causal model gates frame by frame exactly as offline."""
        return self._head(pool_frames(_project(self.score1.weight.squeeze(-1), hist),
                                       hist.shape[-1]), phi)

    def _head(self, z: torch.Tensor, phi: torch.Tensor | None = None) -> torch.Tensor:
        """bias of the first layer, ReLU, second layer: [B, R, T] -> [B, out_ch, T]."""
        return _pointwise(self.score2.weight.squeeze(-1), self.bias(phi),
                          F.relu(z + self.score1.bias.unsqueeze(-1)))

    def binarize(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores -> binary mask with the configured surrogate, noise (training only) and floor."""
        cfg = self.cfg
        s = scores
        if cfg.surrogate == "stochastic" and self.training and cfg.noise > 0:
            s = s + logistic_noise(s, cfg.noise)
        mask = heaviside(s, cfg.surrogate, cfg.beta)
        return apply_floor(mask, s, cfg.min_active)

    def forward(self, h: torch.Tensor, phi: torch.Tensor | None = None) -> torch.Tensor:
        """Mask [B, out_ch, T] of the block input h; ``phi`` [B]: a budget gate's Φ code."""
        if not (torch.is_grad_enabled() and self.training):
            return self.binarize(self.scores(h, phi))
        # Training: the same computation as one autograd node with a written-out backward.
        cfg = self.cfg
        noise = cfg.noise if cfg.surrogate == "stochastic" else 0.0
        return _GateTrain.apply(h, self.score1.weight.squeeze(-1), self.score1.bias,
                                self.score2.weight.squeeze(-1), self.bias(phi), cfg.pool,
                                self.causal, cfg.surrogate, cfg.beta, noise, cfg.min_active)

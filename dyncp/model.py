"""Conv-FSENet with DynCP gates (SPEC §1-2): the network of the paper, top-down.

    mag [B, F, T] --front-end PW(F->B) + ReLU--> h [B, B_res, T]
        --> 9 gated residual blocks (3 stacks x dilations 1, 2, 4) -->
        --back-end PW(B_res->F) + Sigmoid--> mask [B, F, T]

Each block (``GatedBlock``):

    g = Gate(h)                                 binary [B, H, T], H hidden channels
    u = BN(PReLU(PW(B_res->H)(h)))  * g         pruned channel: exactly 0
    v = BN(PReLU(DWConv_k,d(u)))    * g         past frames of a pruned channel are 0
    h = h + PW(H->B_res)(v)

The mask is applied after the normalisation so that BatchNorm's shift cannot leak a constant from
a pruned channel into the second point-wise conv. ``forward`` returns the gates as first-class
outputs: the usage loss, the MAC counter, the plots and the probes all read the same tensors.

Streaming: every temporal layer also has a one-frame ``step`` over the same weights, with its
state (pooling cache, depthwise cache) passed in and returned explicitly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import LOG_FEATURE_FLOOR, Config
from .errors import ConfigError
from .gates import Gate

State = list[torch.Tensor]


class _MaskPad(torch.autograd.Function):
    """``F.pad(u * g, (left, right))`` in one pass: the masked values are written straight into
    the zero-padded buffer the depthwise convolution reads (training: one full-size copy fewer
    per block; benchmarks/train_speed.py). Backward: grad_u = grad * g, grad_g = grad * u over
    the unpadded frames, as autograd would compute them."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, g: torch.Tensor, left: int, right: int) -> torch.Tensor:
        ctx.save_for_backward(u, g)
        ctx.left = left
        b, c, t = u.shape
        out = u.new_empty(b, c, left + t + right)
        out[..., :left].zero_()
        out[..., left + t:].zero_()
        torch.mul(u, g, out=out[..., left:left + t])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, g = ctx.saved_tensors
        grad = grad[..., ctx.left:ctx.left + u.shape[-1]]
        return (grad * g if ctx.needs_input_grad[0] else None,
                grad * u if ctx.needs_input_grad[1] else None, None, None)


def mask_pad(u: torch.Tensor, g: torch.Tensor | None, pad: tuple[int, int]) -> torch.Tensor:
    """``F.pad(u * g, pad)`` (or ``F.pad(u, pad)`` without a mask), fused when training."""
    if g is None:
        return F.pad(u, pad)
    if torch.is_grad_enabled() and (u.requires_grad or g.requires_grad):
        return _MaskPad.apply(u, g, *pad)
    return F.pad(u * g, pad)


class GatedBlock(nn.Module):
    """One residual block with its gate. [B, B_res, T] -> ([B, B_res, T], gates [B, H, T] | None)."""

    def __init__(self, residual: int, hidden: int, kernel: int, dilation: int, causal: bool,
                 gate: Gate | None) -> None:
        super().__init__()
        self.kernel, self.dilation, self.causal = kernel, dilation, causal
        self.pw1 = nn.Conv1d(residual, hidden, 1)
        self.act1 = nn.PReLU(hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.dw = nn.Conv1d(hidden, hidden, kernel, dilation=dilation, groups=hidden)
        self.act2 = nn.PReLU(hidden)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.pw2 = nn.Conv1d(hidden, residual, 1)
        self.gate = gate

    @property
    def context(self) -> int:
        """Frames of past (causal) or total context the depthwise conv adds: (k-1)*d."""
        return (self.kernel - 1) * self.dilation

    def _dw_padding(self) -> tuple[int, int]:
        c = self.context
        return (c, 0) if self.causal else (c // 2, c - c // 2)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None,
                phi: torch.Tensor | None = None, bypass: torch.Tensor | None = None,
                gated: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``mask`` [B, H, T] (0/1), when given, replaces the gate's decision (the gate is not
        run): the dynamism ablations of benchmarks/study.py run a model with masks chosen
        elsewhere. It works on an ungated block too. ``phi`` [B]: a budget gate's Φ code;
        ``bypass`` [B] bool: items whose channels are all on (a budget of Φ = 0); ``gated=False``
        runs no gate and every channel (Φ = 0 for the whole batch)."""
        run_gate = self.gate is not None and gated
        g = mask if mask is not None else None if not run_gate else (
            self.gate(h) if phi is None else self.gate(h, phi))
        if g is not None and bypass is not None:
            g = g.masked_fill(bypass[:, None, None], 1.0)
        u = self.bn1(self.act1(self.pw1(h)))
        v = self.bn2(self.act2(self.dw(mask_pad(u, g, self._dw_padding()))))  # dw(pad(u * g))
        if g is not None:
            v = v * g
        return h + self.pw2(v), g

    # -- streaming ------------------------------------------------------------------------------
    def initial_state(self, batch: int, device=None, dtype=torch.float32) -> State:
        """[pool cache [B, B_res, L-1], depthwise cache [B, H, (k-1)d]], zeros = before the start."""
        residual, hidden = self.pw1.in_channels, self.pw1.out_channels
        pool = self.gate.cfg.pool if self.gate is not None else 1
        return [torch.zeros(batch, residual, pool - 1, device=device, dtype=dtype),
                torch.zeros(batch, hidden, self.context, device=device, dtype=dtype)]

    def step(self, h_t: torch.Tensor, state: State, phi: torch.Tensor | None = None,
             gated: bool = True, force_on: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        """One frame: h_t [B, B_res] -> (h_t [B, B_res], gates_t [B, H] | None, new state).
        ``phi``: a budget gate's Φ code [B]; ``gated=False`` runs every channel (Φ = 0)."""
        if not self.causal:
            raise RuntimeError("step() needs a causal block")
        pool_cache, dw_cache = state
        x = h_t.unsqueeze(-1)                                       # [B, B_res, 1]
        g = None
        hist = torch.cat([pool_cache, x], dim=-1)                   # [B, B_res, L]
        if self.gate is not None and gated:
            g = self.gate.binarize(self.gate.window_scores(hist, phi))  # same ops as offline
            if force_on is not None:     # traced graphs: Φ = 0 as data, every channel on
                g = torch.where(force_on.view(-1, 1, 1), torch.ones_like(g), g)
        u = self.bn1(self.act1(self.pw1(x)))                        # [B, H, 1]
        if g is not None:
            u = u * g
        win = torch.cat([dw_cache, u], dim=-1)                      # [B, H, (k-1)d + 1]
        v = self.bn2(self.act2(self.dw(win)))                       # [B, H, 1]
        if g is not None:
            v = v * g
        out = h_t + self.pw2(v).squeeze(-1)
        return out, (g.squeeze(-1) if g is not None else None), [hist[..., 1:], win[..., 1:]]


def budget_code(table: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """:meth:`ConvFSENet.budget_code` of a calibration table [2, P] (requested Φ, Φ code): shared
    with the sparse runtime, which keeps the table without the model."""
    # A sum of clamped ramps, one per segment (no search: the ONNX graph traces it as is):
    # y0/x0 * clamp(p, 0, x0) + sum_i slope_i * clamp(p - x_i, 0, x_{i+1} - x_i).
    x, y = table[0], table[1]
    p = phi.to(x.dtype).unsqueeze(-1)                                     # [B, 1]
    widths = (x[1:] - x[:-1]).clamp_min(1e-12)
    slopes = (y[1:] - y[:-1]) / widths
    ramps = torch.minimum(torch.clamp(p - x[:-1], min=0.0), widths)       # [B, P-1]
    first = y[0] / x[0] * torch.minimum(torch.clamp(p, min=0.0), x[:1])  # [B, 1]
    return (first + (slopes * ramps).sum(-1, keepdim=True)).squeeze(-1)


class ConvFSENet(nn.Module):
    """Mask estimator: ``forward(mag [B, F, T]) -> (mask [B, F, T], gates)``.

    ``gates`` is a list with one binary [B, H, T] tensor per block, or an empty list when the
    gates are disabled (the static twin: every channel always on).
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        m, n_freq = cfg.model, cfg.stft.n_freq
        self.front = nn.Conv1d(n_freq, m.residual, 1)
        self.blocks = nn.ModuleList(
            GatedBlock(m.residual, m.hidden, m.kernel, d, m.causal,
                       Gate(m.residual, m.hidden, cfg.gate, m.causal) if cfg.gate.enabled else None)
            for d in m.block_dilations())
        self.back = nn.Conv1d(m.residual, n_freq, 1)
        if cfg.gate.budget:
            # requested Φ (row 0, increasing) -> the Φ code the gates read (row 1); identity
            # until dyncp.budget.calibrate measures the trained model (docs/budget.md)
            grid = torch.linspace(cfg.gate.budget_min, cfg.gate.budget_max, 16)
            self.register_buffer("budget_table", torch.stack([grid, grid.clone()]))

    @property
    def budgeted(self) -> bool:
        """True for a budget model: Φ is chosen at run time (``phi=`` on forward and step)."""
        return self.cfg.gate.budget

    def budget_code(self, phi: torch.Tensor) -> torch.Tensor:
        """Requested Φ [B] -> the Φ code [B] the gates read: piecewise-linear in the calibration
        table, clamped at its top, and linear towards (0, 0) below it (where only the training
        ramp goes: a request must be 0 or inside [gate.budget_min, gate.budget_max])."""
        return budget_code(self.budget_table, phi)

    def _budget(self, phi, batch: int, device) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                                        bool]:
        """(Φ code [B] | None, bypass [B] | None, any gate runs) for a requested ``phi``: a
        float or a [B] tensor; None means the nominal budget (``loss.prune_target``)."""
        if not self.budgeted:
            if phi is not None:
                raise ValueError("phi: this model has no run-time budget (gate.budget = false); "
                                 "its pruning ratio is fixed by training")
            return None, None, True
        if phi is None:
            phi = self.cfg.loss.prune_target
        phi = torch.as_tensor(phi, dtype=torch.float32, device=device).reshape(-1)
        if phi.numel() == 1:
            phi = phi.expand(batch)
        if phi.shape != (batch,):
            raise ValueError(f"phi: expected a number or {batch} values, got {tuple(phi.shape)}")
        bypass = phi <= 0
        if bool(bypass.all()):
            return None, None, False
        return self.budget_code(phi), (bypass if bool(bypass.any()) else None), True

    @property
    def causal(self) -> bool:
        return self.cfg.model.causal

    @property
    def gated(self) -> bool:
        return self.cfg.gate.enabled

    def _features(self, mag: torch.Tensor) -> torch.Tensor:
        c = self.cfg.model.feature_compress
        if c == 0.0:
            return torch.log(mag.clamp_min(0) + LOG_FEATURE_FLOOR)
        return mag if c == 1.0 else (mag.clamp_min(0) + 1e-12).pow(c)

    def forward(self, mag: torch.Tensor, masks: list[torch.Tensor] | None = None,
                phi: float | torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``masks``: optional list of one binary [B, H, T] tensor per block that replaces the
        gates' decisions (forced masks; returned as the gates). Given the model's own gates it
        reproduces the plain forward exactly. ``phi`` (budget models only): the requested
        pruning ratio, one number or one per item; 0 runs every channel and no gate (the static
        cost; no gates are returned when every item asks for 0)."""
        if mag.dim() != 3 or mag.shape[1] != self.cfg.stft.n_freq:
            raise ValueError(f"ConvFSENet expects mag [B, {self.cfg.stft.n_freq}, T], "
                             f"got {tuple(mag.shape)}")
        m = self.cfg.model
        if masks is not None and (len(masks) != m.n_blocks or any(
                x.shape != (mag.shape[0], m.hidden, mag.shape[-1]) for x in masks)):
            raise ValueError(f"masks: expected {m.n_blocks} tensors [B, {m.hidden}, T] for mag "
                             f"{tuple(mag.shape)}, got {[tuple(x.shape) for x in masks]}")
        code, bypass, gated = self._budget(phi, mag.shape[0], mag.device)
        h = F.relu(self.front(self._features(mag)))
        gates: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            h, g = block(h, None if masks is None else masks[i].to(h.dtype), code, bypass, gated)
            if g is not None:
                gates.append(g)
        return torch.sigmoid(self.back(h)), gates

    # -- streaming ------------------------------------------------------------------------------
    def initial_state(self, batch: int = 1, device=None, dtype=torch.float32) -> State:
        """Flat list of state tensors, two per block (see ``GatedBlock.initial_state``)."""
        return [t for b in self.blocks for t in b.initial_state(batch, device, dtype)]

    def step(self, mag_t: torch.Tensor, state: State, phi: float | torch.Tensor | None = None,
             *, code: torch.Tensor | None = None, force_on: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, list[torch.Tensor], State]:
        """One frame: mag_t [B, F] -> (mask_t [B, F], gates_t list of [B, H], new state).

        Equals ``forward`` frame by frame for a causal model in eval mode. ``phi`` as in
        ``forward`` (budget models; it may change from one frame to the next).
        """
        if not self.causal:
            raise RuntimeError("step() needs a causal model (model.causal = true)")
        if code is None:
            code, bypass, gated = self._budget(phi, mag_t.shape[0], mag_t.device)
        else:   # the traced ONNX step: the Φ code and the Φ = 0 flag come in as tensors
            bypass, gated = None, True
        if bypass is not None:
            raise ValueError("step: phi = 0 for some items only; step each budget separately")
        h = F.relu(self.front(self._features(mag_t).unsqueeze(-1))).squeeze(-1)
        gates, new_state = [], []
        for i, block in enumerate(self.blocks):
            h, g, s = block.step(h, state[2 * i: 2 * i + 2], code, gated, force_on)
            new_state.extend(s)
            if g is not None:
                gates.append(g)
        mask = torch.sigmoid(self.back(h.unsqueeze(-1))).squeeze(-1)
        return mask, gates, new_state


def require_causal(cfg: Config, what: str) -> None:
    """ConfigError naming ``model.causal`` unless the model is causal (``what`` needs it)."""
    if not cfg.model.causal:
        raise ConfigError(f"model.causal: {what} needs a causal model; this one is non-causal "
                          "(its convolutions and gate pooling look ahead)")


def build_model(cfg: Config) -> ConvFSENet:
    return ConvFSENet(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

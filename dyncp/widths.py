"""Widths and pruning targets for a given cost: the equal-cost comparisons of the DynCP study
(issue 12, benchmarks/study.py).

- :func:`solve_widths`: the static Conv-FSENet (gates off) whose MACs per frame land within
  ``tol`` of a target, e.g. a DynCP model's measured dynamic MACs. It changes ``model.hidden``
  first and ``model.residual`` only when no hidden width alone lands within ``tol``.
- :func:`phi_for_macs`: the pruning ratio Φ at which a gated model's dynamic MACs per frame
  (gate overhead included) equal a target, e.g. a wider DynCP model at the static paper model's
  cost.

Both read the accounting of :mod:`dyncp.macs` (the static formula is not written out twice).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .config import Config
from .macs import (fixed_macs_per_frame, gate_macs_per_frame, per_channel_macs,
                   static_macs_per_frame)


def with_widths(cfg: Config, residual: int, hidden: int, gated: bool | None = None) -> Config:
    """``cfg`` with other widths (and, when ``gated`` is given, gates on or off). The gate floor
    is capped at the new hidden width so that the config stays valid."""
    gate = cfg.gate if gated is None else dataclasses.replace(cfg.gate, enabled=gated)
    gate = dataclasses.replace(gate, min_active=min(gate.min_active, hidden))
    return cfg.replace(model=dataclasses.replace(cfg.model, residual=residual, hidden=hidden),
                       gate=gate)


@dataclass(frozen=True)
class Widths:
    """A solution of :func:`solve_widths`: widths, their static MACs per frame, the target."""

    residual: int
    hidden: int
    macs: int
    target: float

    @property
    def error(self) -> float:
        """Relative error of the MACs against the target (signed)."""
        return self.macs / self.target - 1.0


def _best_hidden(cfg: Config, residual: int, target: float) -> tuple[int, int]:
    """(hidden, MACs) nearest ``target`` for this residual width. Static MACs are affine in the
    hidden width (every block's PW1 row, depthwise taps and PW2 column scale with it)."""
    a = static_macs_per_frame(with_widths(cfg, residual, 1, gated=False))
    b = static_macs_per_frame(with_widths(cfg, residual, 2, gated=False)) - a
    hidden = max(1, round(1 + (target - a) / b))
    return hidden, a + (hidden - 1) * b


def solve_widths(cfg: Config, target_macs: float, tol: float = 0.01,
                 max_residual: int | None = None) -> Widths:
    """Widths of a static model of ``cfg``'s layout with ``|MACs / target - 1| <= tol``.

    Keeps ``cfg.model.residual`` when a hidden width gets there; otherwise the residual width
    nearest the configured one that does (up to ``max_residual``, default 4x). ValueError when
    none does (a target below the cost of the front- and back-end alone, for instance).
    """
    if not target_macs > 0:
        raise ValueError(f"solve_widths: target must be positive, got {target_macs}")
    base = cfg.model.residual
    top = max_residual or 4 * base
    best: Widths | None = None
    for residual in sorted(range(1, top + 1), key=lambda r: (abs(r - base), r)):
        hidden, macs = _best_hidden(cfg, residual, target_macs)
        w = Widths(residual, hidden, macs, float(target_macs))
        if abs(w.error) <= tol:
            return w
        if best is None or abs(w.error) < abs(best.error):
            best = w
    raise ValueError(f"solve_widths: no widths within {100 * tol:g} % of {target_macs:,.0f} MACs "
                     f"per frame (nearest: residual {best.residual}, hidden {best.hidden}, "
                     f"{best.macs:,} MACs)")


def equal_cost_config(cfg: Config, target_macs: float, tol: float = 0.01) -> tuple[Config, Widths]:
    """The static (gates off) twin of ``cfg`` whose widths give ``target_macs`` per frame."""
    w = solve_widths(cfg, target_macs, tol)
    return with_widths(cfg, w.residual, w.hidden, gated=False), w


def phi_for_macs(cfg: Config, target_macs: float) -> float:
    """Φ at which the gated model ``cfg`` spends ``target_macs`` per frame on average:
    fixed + gates + (1 - Φ) * n_blocks * H * per-channel MACs = target. ValueError when no Φ in
    [0, 1) does (the target is below the unprunable part or above the dense cost)."""
    if not cfg.gate.enabled:
        raise ValueError("phi_for_macs needs a gated config (gate.enabled = true)")
    m = cfg.model
    prunable = m.n_blocks * m.hidden * per_channel_macs(cfg)
    keep = (target_macs - fixed_macs_per_frame(cfg) - gate_macs_per_frame(cfg)) / prunable
    if not 0 < keep <= 1:
        floor = fixed_macs_per_frame(cfg) + gate_macs_per_frame(cfg)
        raise ValueError(f"phi_for_macs: {target_macs:,.0f} MACs per frame is out of reach of "
                         f"this gated model ({floor:,} with every channel off, "
                         f"{floor + prunable:,} with every one on)")
    return 1.0 - keep

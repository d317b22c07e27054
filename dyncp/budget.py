"""The run-time compute budget of a budget model (issue 13; docs/budget.md).

A budget model (``gate.budget = true``) is one checkpoint whose pruning ratio Φ is chosen at run
time. Each gated channel's score is compared with a threshold that moves with the requested Φ:
``bias(Φ) = b2 - softplus(slope) * logit(Φ)`` (dyncp/gates.py, ``Gate.bias``), one learned slope
per channel, so raising Φ switches channels off in an order the model learned, at no MAC cost (the
new bias is computed once per budget change, not per frame). Training draws a Φ per item in
[gate.budget_min, gate.budget_max] (a share ``gate.budget_static`` at Φ = 0) and the usage loss
pulls each item's measured Φ toward its own draw. Φ = 0 runs no gate at all: exactly the static
model's MACs.

A budget may be given as Φ or as MMAC/s; :func:`phi_for` turns either into Φ and refuses what
the model cannot do. :func:`calibrate` measures the trained model and fills its table from
requested Φ to the Φ code the gates read, so that the measured Φ lands on the request.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .config import Config, GateConfig
from .errors import BudgetError
from .macs import frames_per_second, macs_at, static_macs_per_frame


def sample_budgets(gate: GateConfig, batch: int, seed: int, step: int, rank: int = 0,
                   ramp: float = 1.0) -> torch.Tensor:
    """Training budgets [batch]: U[budget_min, budget_max] times ``ramp`` (the Φ_trgt ramp),
    a share ``budget_static`` of 0. A function of (seed, step, rank) only, so that a resumed
    run draws the same budgets."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step) * 97 + int(rank))
    u = gate.budget_min + (gate.budget_max - gate.budget_min) * torch.rand(batch, generator=g)
    static = torch.rand(batch, generator=g) < gate.budget_static
    return torch.where(static, torch.zeros_like(u), u * float(min(max(ramp, 0.0), 1.0)))


def macs_per_frame(cfg: Config, phi: float) -> float:
    """MACs per frame of a budget model at Φ (0: no gate runs, the static count)."""
    if phi <= 0:
        return float(static_macs_per_frame(cfg))        # gates excluded: none runs
    return float(macs_at(cfg, (1.0 - phi) * cfg.model.n_blocks * cfg.model.hidden))


def mmac_per_s(cfg: Config, phi: float) -> float:
    return macs_per_frame(cfg, phi) * frames_per_second(cfg) / 1e6


def feasible(cfg: Config) -> dict[str, float]:
    """The range a budget model accepts: Φ 0 or [budget_min, budget_max]; in MMAC/s from the
    cost at budget_max up to the static cost."""
    g = cfg.gate
    return {"phi_min": g.budget_min, "phi_max": g.budget_max,
            "mmac_min": mmac_per_s(cfg, g.budget_max), "mmac_static": mmac_per_s(cfg, 0.0),
            "mmac_at_phi_min": mmac_per_s(cfg, g.budget_min)}


def _range_text(cfg: Config) -> str:
    f = feasible(cfg)
    return (f"Φ 0 (every channel, {f['mmac_static']:.2f} MMAC/s) or Φ {f['phi_min']:g} to "
            f"{f['phi_max']:g} ({f['mmac_at_phi_min']:.2f} down to {f['mmac_min']:.2f} MMAC/s)")


def phi_for(cfg: Config, phi: float | None = None, mmac: float | None = None) -> float | None:
    """The Φ to run for a request of ``phi`` or of ``mmac`` (MMAC/s), or None for neither (the
    model's nominal budget). Raises BudgetError for a model without a budget, for both given,
    and for a request outside :func:`feasible`. A budget in MMAC/s buys the lowest Φ that costs
    no more than it: at or above the static cost Φ = 0; between the cost at budget_min and the
    static cost, budget_min (a gated model at small Φ costs more than the static one, its gates
    included)."""
    if phi is None and mmac is None:
        return None
    if not cfg.gate.budget:
        raise BudgetError("this model has no run-time budget (gate.budget = false): its pruning "
                          "ratio was fixed in training; use a budget model (e.g. `dyncp models`)")
    if phi is not None and mmac is not None:
        raise BudgetError("give the budget as Φ or as MMAC/s, not both")
    g = cfg.gate
    if phi is not None:
        phi = float(phi)
        if not math.isfinite(phi) or not (phi == 0 or g.budget_min - 1e-9 <= phi <= g.budget_max
                                          + 1e-9):
            raise BudgetError(f"Φ {phi:g} is outside this model's range: {_range_text(cfg)}")
        return phi
    f = feasible(cfg)
    mmac = float(mmac)
    if not math.isfinite(mmac) or mmac < f["mmac_min"] - 1e-9:
        raise BudgetError(f"{mmac:g} MMAC/s is below what this model can run: {_range_text(cfg)}")
    if mmac >= f["mmac_static"]:
        return 0.0
    per_frame = mmac * 1e6 / frames_per_second(cfg)
    total = cfg.model.n_blocks * cfg.model.hidden
    active = (per_frame - float(macs_at(cfg, 0))) / (float(macs_at(cfg, 1)) - float(macs_at(cfg, 0)))
    return float(min(max(1.0 - active / total, g.budget_min), g.budget_max))


@torch.no_grad()
def measure_phi(model, pairs, phi: float) -> float:
    """Measured Φ (frame-weighted over ``pairs``) of ``model`` run at Φ code ``phi`` directly
    (the calibration table bypassed)."""
    from .dsp import stft

    kept, frames = 0.0, 0
    table = model.budget_table.clone()
    model.budget_table[1].copy_(model.budget_table[0])       # identity: request = code
    try:
        for p in pairs:
            x = torch.as_tensor(np.asarray(p.noisy, np.float32)).unsqueeze(0)
            _, gates = model(stft(x, model.cfg.stft).abs(), phi=phi)
            t = gates[0].shape[-1]
            kept += float(torch.stack([g.mean() for g in gates]).mean()) * t
            frames += t
    finally:
        model.budget_table.copy_(table)
    return 1.0 - kept / max(frames, 1)


@torch.no_grad()
def calibrate(model, pairs, points: int = 12) -> dict[str, list[float]]:
    """Fill ``model.budget_table`` so that a requested Φ gives that Φ measured on ``pairs``
    (audio the model was not scored on, e.g. the held-out training split). Measures Φ at
    ``points`` codes over the budget range (a little beyond it), makes the curve monotone and
    inverts it. Returns {"code": [...], "measured": [...]}."""
    model.eval()
    g = model.cfg.gate
    codes = np.linspace(max(g.budget_min - 0.08, 0.02), min(g.budget_max + 0.08, 0.97), points)
    measured = np.maximum.accumulate([measure_phi(model, pairs, float(c)) for c in codes])
    grid = model.budget_table[0].cpu().numpy().astype(np.float64)
    # strictly increasing for np.interp (flat stretches: take the first code that reaches it)
    m = measured + np.arange(len(measured)) * 1e-9
    code_for = np.interp(grid, m, codes)
    model.budget_table[1].copy_(torch.as_tensor(code_for, dtype=model.budget_table.dtype))
    return {"code": [float(c) for c in codes], "measured": [float(x) for x in measured]}

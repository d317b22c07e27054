"""The run-time budget (dyncp/budget.py, Gate.bias, ConvFSENet phi=): one model, Φ chosen at run
time; Φ = 0 is the static model; thresholds move monotonically; the training gate's written-out
backward handles a threshold per item; requests are checked and calibrated."""

from __future__ import annotations

import pytest
import torch

from dyncp import budget as B
from dyncp.config import GateConfig, load_config
from dyncp.errors import BudgetError
from dyncp.gates import Gate
from dyncp.losses import total_loss, usage_from_ratios
from dyncp.model import build_model

from test_train import TINY


def _budget_model(randomize, seed=0, **kw):
    cfg = load_config(TINY, ["gate.budget=true", *[f"gate.{k}={v}" for k, v in kw.items()]])
    torch.manual_seed(seed)           # the layers' default initialisation: not the test order's
    m = randomize(build_model(cfg), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in m.blocks:
            blk.gate.budget_slope.uniform_(-0.5, 1.5, generator=g)
    return m.eval()


def _mag(cfg, t=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, cfg.stft.n_freq, t, generator=g) * 2


def test_phi_zero_is_the_static_model(randomize):
    m = _budget_model(randomize)
    mag = _mag(m.cfg)
    with torch.no_grad():
        y0, gates = m(mag, phi=0.0)
        ones = [torch.ones(2, m.cfg.model.hidden, mag.shape[-1]) for _ in m.blocks]
        y1, _ = m(mag, masks=ones)
    assert gates == []                          # no gate ran: the static MACs, nothing else
    assert torch.equal(y0, y1)
    # mixed batch: the Φ = 0 item runs every channel, the other is gated
    with torch.no_grad():
        _, g = m(mag, phi=torch.tensor([0.0, 0.6]))
    assert float(g[0][0].mean()) == 1.0 and float(g[0][1].mean()) < 1.0


def test_more_budget_prunes_a_superset(randomize):
    m = _budget_model(randomize)
    mag = _mag(m.cfg)
    prev, ratios = None, []
    with torch.no_grad():
        for phi in (0.1, 0.3, 0.5, 0.7, 0.85):
            _, g = m(mag, phi=phi)
            g = torch.stack(g)
            if prev is not None:
                assert bool((g <= prev).all())   # a channel off at a lower Φ stays off
            prev = g
            ratios.append(1 - float(g.mean()))
    assert ratios == sorted(ratios) and ratios[-1] > ratios[0] + 0.2


def test_step_follows_forward_with_a_budget_that_changes(randomize):
    m = _budget_model(randomize)
    mag = _mag(m.cfg, t=12)[:1]
    state = m.initial_state(1)
    with torch.no_grad():
        y, gates = m(mag, phi=0.6)
        for t in range(mag.shape[-1]):
            y_t, g_t, state = m.step(mag[..., t], state, phi=0.6)
            assert torch.allclose(y_t, y[..., t], atol=1e-5)
            assert all(torch.equal(a, b[..., t]) for a, b in zip(g_t, gates))
        _, g_hi, _ = m.step(mag[..., 0], state, phi=0.85)   # a new budget, next frame
        _, g_zero, _ = m.step(mag[..., 0], state, phi=0.0)
    assert g_zero == [] and len(g_hi) == len(m.blocks)


def test_a_budget_for_a_model_without_one():
    m = build_model(load_config(TINY))
    with pytest.raises(ValueError, match="no run-time budget"):
        m(_mag(m.cfg), phi=0.5)
    with pytest.raises(BudgetError, match="no run-time budget"):
        B.phi_for(m.cfg, phi=0.5)


@pytest.mark.parametrize("surrogate", ["ste_clipped", "sigmoid", "stochastic"])
def test_training_gate_with_a_threshold_per_item(surrogate):
    """_GateTrain with a [B, H] bias: mask and every gradient (slope included) equal the
    readable autograd path."""
    torch.manual_seed(0)
    gate = Gate(12, 24, GateConfig(pool=3, reduction=4, surrogate=surrogate, noise=0.5,
                                   budget=True), causal=True).train()
    with torch.no_grad():
        gate.score2.weight.normal_(0.0, 0.4)
        gate.score2.bias.uniform_(-0.5, 0.5)
        gate.budget_slope.uniform_(-1, 1)
    h = torch.randn(3, 12, 19, requires_grad=True)
    phi = torch.tensor([0.2, 0.5, 0.8])
    w = torch.randn(3, 24, 19)
    out = []
    for readable in (False, True):
        gate.zero_grad(set_to_none=True)
        h.grad = None
        torch.manual_seed(7)
        g = gate.binarize(gate.scores(h, phi)) if readable else gate(h, phi)
        (g * w).sum().backward()
        out.append((g.detach(), [h.grad.clone()] + [p.grad.clone() for p in gate.parameters()]))
    (g1, gr1), (g2, gr2) = out
    assert torch.equal(g1, g2) and 0 < float(g1.mean()) < 1
    assert gate.budget_slope.grad.abs().max() > 0
    for a, b in zip(gr1, gr2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_usage_loss_per_item():
    phi = torch.tensor([[0.2, 0.9, 0.5], [0.4, 0.7, 0.5]])      # [n_blocks=2, B=3]
    target = torch.tensor([0.3, 0.6, 0.0])
    items = target > 0
    loss = usage_from_ratios(phi, target, "global", items)
    # item 0: (0.3 - 0.3)^2 = 0; item 1: (0.8 - 0.6)^2 = 0.04; item 2 ran at Φ = 0: not counted
    assert float(loss) == pytest.approx(0.02)
    pb = usage_from_ratios(phi, target, "per_block", items)
    assert float(pb) == pytest.approx(((0.01 + 0.01) / 2 + (0.09 + 0.01) / 2) / 2)
    # the scalar form is unchanged
    assert float(usage_from_ratios(torch.tensor([0.5, 0.7]), 0.5)) == pytest.approx(0.01)


def test_total_loss_with_budgets(randomize):
    m = _budget_model(randomize).train()
    cfg = m.cfg
    x = torch.randn(3, 4000) * 0.1
    from dyncp.enhance import enhance_tensor
    phi = torch.tensor([0.0, 0.3, 0.8])
    est, gates = enhance_tensor(m, x, phi=phi)
    parts = total_loss(est, x, gates, cfg.loss, cfg.stft, target=phi)
    parts["loss"].backward()
    assert all(blk.gate.budget_slope.grad is not None for blk in m.blocks)
    assert 0 < float(parts["phi"]) < 1


def test_sample_budgets_is_reproducible():
    g = GateConfig(budget=True, budget_min=0.2, budget_max=0.8, budget_static=0.25)
    a = B.sample_budgets(g, 4000, seed=1, step=5)
    assert torch.equal(a, B.sample_budgets(g, 4000, seed=1, step=5))
    assert not torch.equal(a, B.sample_budgets(g, 4000, seed=1, step=6))
    zero = a == 0
    assert abs(float(zero.float().mean()) - 0.25) < 0.03
    assert float(a[~zero].min()) >= 0.2 and float(a.max()) <= 0.8
    half = B.sample_budgets(g, 4000, seed=1, step=5, ramp=0.5)
    assert float(half.max()) <= 0.4


def test_requests_in_phi_and_mmac():
    cfg = load_config("configs/paper.toml", ["gate.budget=true"])
    f = B.feasible(cfg)
    assert f["mmac_static"] == pytest.approx(662528 * 62.5 / 1e6)
    assert B.phi_for(cfg) is None and B.phi_for(cfg, phi=0.0) == 0.0
    assert B.phi_for(cfg, mmac=100.0) == 0.0
    for m in (14.0, 20.0, 30.0):
        phi = B.phi_for(cfg, mmac=m)
        assert B.mmac_per_s(cfg, phi) == pytest.approx(m, rel=1e-6)
    assert B.phi_for(cfg, mmac=41.3) == cfg.gate.budget_min      # dearer than static at Φ 0.1
    for bad in ({"phi": 0.05}, {"phi": 0.9}, {"phi": float("nan")}, {"mmac": 5.0},
                {"phi": 0.5, "mmac": 20.0}):
        with pytest.raises(BudgetError) as e:
            B.phi_for(cfg, **bad)
        if "mmac" in bad and "phi" not in bad:
            assert "MMAC/s" in str(e.value) and "Φ 0.1 to 0.85" in str(e.value)


def test_calibration_lands_on_the_request(randomize):
    from test_train import write_pairs
    import tempfile
    from pathlib import Path
    from dyncp.data import eval_pairs

    m = _budget_model(randomize, seed=4)
    with tempfile.TemporaryDirectory() as d:
        pairs = eval_pairs(f"pairs:{write_pairs(Path(d), n=4, seconds=1.0)}", m.cfg, "test")
    table = B.calibrate(m, pairs, points=16)
    assert table["measured"] == sorted(table["measured"])
    for req in (0.25, 0.5, 0.75):
        if table["measured"][0] <= req <= table["measured"][-1]:
            code = float(m.budget_code(torch.tensor([req]))[0])
            assert abs(B.measure_phi(m, pairs, code) - req) <= 0.03


def test_a_budget_model_trains_and_resumes_bit_for_bit(tmp_path):
    import dyncp.train as T
    from dyncp.checkpoint import load_model
    from test_train import write_pairs

    pairs = write_pairs(tmp_path / "pairs", n=8, seconds=1.0)
    cfg = load_config(TINY, [f"data.train=pairs:{pairs}", "train.epochs=2",
                             "train.steps_per_epoch=3", "data.valid_files=2",
                             "train.batch_size=4", "gate.budget=true", "train.ramp_fraction=0"])
    T.train(cfg, tmp_path / "a", progress=False)
    T.train(cfg.replace(train=cfg.train.__class__(**{**cfg.train.__dict__, "epochs": 1})),
            tmp_path / "b", progress=False)
    T.train(cfg, tmp_path / "b", resume=True, progress=False)
    a = load_model(tmp_path / "a" / "last.pt")[0].state_dict()
    b = load_model(tmp_path / "b" / "last.pt")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.endswith("budget_slope") for k in a) and "budget_table" in a
    m, _ = load_model(tmp_path / "a" / "best.pt")
    assert m.budgeted

"""Conv-FSENet with DynCP gates: shapes, causality, exact skip of pruned channels, streaming."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dyncp.config import GateConfig, load_config
from dyncp.gates import Gate
from dyncp.model import ConvFSENet, GatedBlock, count_params

from conftest import CONFIGS

torch.set_num_threads(1)


def _mag(cfg, frames: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, cfg.stft.n_freq, frames, generator=g) ** 3 * 4


def _mixed(gates: list[torch.Tensor]) -> float:
    """Share of gate values that are 1 (to check the gates really switch)."""
    return float(torch.stack([g.float().mean() for g in gates]).mean())


def test_shapes_paper(paper_cfg):
    model = ConvFSENet(paper_cfg).eval()
    with torch.no_grad():
        mask, gates = model(_mag(paper_cfg, 17))
    assert mask.shape == (2, 257, 17)
    assert 0 < mask.min().item() and mask.max().item() < 1
    assert len(gates) == 9 and all(g.shape == (2, 256, 17) for g in gates)
    assert all(set(g.unique().tolist()) <= {0.0, 1.0} for g in gates)


def test_static_twin_has_no_gates_and_analytic_params():
    static = ConvFSENet(load_config(CONFIGS / "static.toml")).eval()
    with torch.no_grad():
        mask, gates = static(_mag(static.cfg, 9))
    assert gates == [] and mask.shape == (2, 257, 9)
    # front + 9 x (pw1, prelu, bn, dw, prelu, bn, pw2) + back, biases and BN affines included
    block = (128 * 256 + 256) + 256 + 512 + (256 * 3 + 256) + 256 + 512 + (256 * 128 + 128)
    assert count_params(static) == (257 * 128 + 128) + 9 * block + (128 * 257 + 257) == 682497
    gated = ConvFSENet(load_config(CONFIGS / "paper.toml"))
    assert count_params(gated) - count_params(static) == 9 * (128 * 16 + 16 + 16 * 256 + 256)


def test_input_shape_is_checked(tiny_cfg):
    with pytest.raises(ValueError, match=r"mag \[B, 65, T\]"):
        ConvFSENet(tiny_cfg)(torch.rand(1, 64, 10))


# -- causality ------------------------------------------------------------------------------------
def _outputs_with_changed_future(cfg, randomize, t: int = 29, frames: int = 60):
    """Run a randomised model on an input and on a copy whose frames after ``t`` differ."""
    torch.manual_seed(0)
    model = randomize(ConvFSENet(cfg))
    x = _mag(cfg, frames)
    x2 = x.clone()
    x2[..., t + 1:] = _mag(cfg, frames - t - 1, seed=1)
    with torch.no_grad():
        m1, g1 = model(x)
        m2, g2 = model(x2)
    return model, x, t, m1, g1, m2, g2


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_causal_model_ignores_the_future(name, randomize):
    cfg = load_config(CONFIGS / f"{name}.toml")
    _, _, t, m1, g1, m2, g2 = _outputs_with_changed_future(cfg, randomize)
    assert 0.2 < _mixed(g1) < 0.8
    assert (m1[..., : t + 1] - m2[..., : t + 1]).abs().max().item() < 1e-6
    for a, b in zip(g1, g2):
        assert torch.equal(a[..., : t + 1], b[..., : t + 1])
    assert (m1[..., t + 1:] - m2[..., t + 1:]).abs().max().item() > 1e-3


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_non_causal_model_sees_the_future(name, randomize):
    cfg = load_config(CONFIGS / f"{name}.toml", ["model.causal=false"])
    model, x, t, m1, g1, m2, g2 = _outputs_with_changed_future(cfg, randomize)
    assert (m1[..., : t + 1] - m2[..., : t + 1]).abs().max().item() > 1e-3
    assert any(not torch.equal(a[..., : t + 1], b[..., : t + 1]) for a, b in zip(g1, g2))
    with pytest.raises(RuntimeError, match="causal"):
        model.step(x[..., 0], model.initial_state(2))


# -- exact skip -----------------------------------------------------------------------------------
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _sparse_block_reference(block: GatedBlock, h: np.ndarray, g: np.ndarray) -> np.ndarray:
    """A block computed per frame from only the active channels' weights (eval mode).

    h [B, C, T] block input, g [B, H, T] binary mask -> block output [B, C, T]. Channel c at frame
    t uses row c of pw1, the taps of dw channel c and column c of pw2, and nothing else. The
    depthwise conv reads the stored first-stage output of channel c at past frames, which exists
    only where c was active there (zero otherwise, and zero before the start).
    """
    w1, b1 = _np(block.pw1.weight)[:, :, 0], _np(block.pw1.bias)             # [H, C], [H]
    wd, bd = _np(block.dw.weight)[:, 0, :], _np(block.dw.bias)               # [H, k], [H]
    w2, b2 = _np(block.pw2.weight)[:, :, 0], _np(block.pw2.bias)             # [C, H], [C]
    a1, a2 = _np(block.act1.weight), _np(block.act2.weight)

    def bn(x, m, idx):
        scale = _np(m.weight)[idx] / np.sqrt(_np(m.running_var)[idx] + m.eps)
        return (x - _np(m.running_mean)[idx]) * scale + _np(m.bias)[idx]

    def prelu(x, a, idx):
        return np.where(x >= 0, x, a[idx] * x)

    n_b, _, n_t = h.shape
    k, d = block.kernel, block.dilation
    left = (k - 1) * d if block.causal else (k - 1) * d // 2
    u = np.zeros((n_b, w1.shape[0], n_t))         # only active entries are ever written
    out = np.empty_like(h)
    for b in range(n_b):
        for t in range(n_t):
            act = np.flatnonzero(g[b, :, t])
            u[b, act, t] = bn(prelu(w1[act] @ h[b, :, t] + b1[act], a1, act), block.bn1, act)
    for b in range(n_b):
        for t in range(n_t):
            act = np.flatnonzero(g[b, :, t])
            z = bd[act].copy()
            for j in range(k):
                tt = t - left + j * d
                if 0 <= tt < n_t:
                    z += wd[act, j] * u[b, act, tt]
            v = bn(prelu(z, a2, act), block.bn2, act)
            out[b, :, t] = h[b, :, t] + w2[:, act] @ v + b2
    return out


def _random_block(causal: bool, dilation: int, seed: int = 0) -> GatedBlock:
    torch.manual_seed(seed)
    gate = Gate(12, 24, GateConfig(pool=2, reduction=4), causal)
    block = GatedBlock(12, 24, 3, dilation, causal, gate)
    with torch.no_grad():
        for bn in (block.bn1, block.bn2):                # BN with a real shift and scale
            bn.running_mean.uniform_(-1.0, 1.0)
            bn.running_var.uniform_(0.3, 3.0)
            bn.weight.uniform_(-1.5, 1.5)
            bn.bias.uniform_(-1.0, 1.0)
        block.act1.weight.uniform_(-0.5, 0.5)
        block.act2.weight.uniform_(0.1, 0.7)
    return block.eval()


@pytest.mark.parametrize("causal,dilation", [(True, 1), (True, 2), (True, 4), (False, 2)])
def test_block_equals_sparse_per_channel_computation(causal, dilation, monkeypatch):
    block = _random_block(causal, dilation)
    rng = np.random.default_rng(dilation)
    h = rng.standard_normal((2, 12, 20))
    g = (rng.random((2, 24, 20)) < 0.4).astype(np.float64)  # random masks, fixed by hand
    g[0, :, 7] = 0.0                                     # a frame with every channel pruned
    monkeypatch.setattr(block.gate, "forward", lambda _h: torch.from_numpy(g).float())
    with torch.no_grad():
        out, gates = block(torch.from_numpy(h).float())
    assert torch.equal(gates, torch.from_numpy(g).float())
    ref = _sparse_block_reference(block, h, g)
    assert np.abs(out.double().numpy() - ref).max() < 1e-5
    assert np.abs(out[0, :, 7].double().numpy() - (h[0, :, 7] + _np(block.pw2.bias))).max() < 1e-6

    # The check is sharp: masking only once (before the depthwise conv), which lets BatchNorm's
    # shift leak from pruned channels into pw2, is far from the reference.
    with torch.no_grad():
        x, gt = torch.from_numpy(h).float(), torch.from_numpy(g).float()
        u = block.bn1(block.act1(block.pw1(x))) * gt
        v = block.bn2(block.act2(block.dw(torch.nn.functional.pad(u, block._dw_padding()))))
        leaky = x + block.pw2(v)
    assert np.abs(leaky.double().numpy() - ref).max() > 0.1


def test_pruned_past_frames_are_read_as_zero():
    """An active channel whose previous frame was pruned sees zero there, not its dense value."""
    block = _random_block(True, 1, seed=3)
    h = torch.randn(1, 12, 6)
    g_on = torch.ones(1, 24, 6)
    g_gap = g_on.clone()
    g_gap[0, 5, 2] = 0.0                                  # channel 5 pruned at frame 2 only
    with torch.no_grad():
        block.gate.forward = lambda _h: g_on
        full, _ = block(h)
        block.gate.forward = lambda _h: g_gap
        gap, _ = block(h)
    diff = (full - gap).abs().amax(dim=1)[0]              # [T]
    assert diff[:2].max().item() == 0.0                   # before the gap: identical
    assert diff[2].item() > 0 and diff[3].item() > 0 and diff[4].item() > 0  # gap, then k-1 taps
    assert diff[5].item() == 0.0                          # beyond the kernel's reach


@pytest.mark.parametrize("causal", [True, False])
def test_training_block_matches_the_readable_form(causal):
    """Training runs the fused ``mask_pad`` (u * g written into the padded buffer, own backward);
    values and every gradient (input, weights, gate scores) equal the readable form."""
    block = _random_block(causal, 2, seed=5).train()
    with torch.no_grad():                                 # gates half open, scores in the window
        block.gate.score2.weight.normal_(0.0, 0.3)
        block.gate.score2.bias.uniform_(-0.3, 0.3)
    h = torch.randn(3, 12, 17, requires_grad=True)

    def readable(blk, x):
        g = blk.gate(x)
        u = blk.bn1(blk.act1(blk.pw1(x))) * g
        v = blk.bn2(blk.act2(blk.dw(torch.nn.functional.pad(u, blk._dw_padding())))) * g
        return x + blk.pw2(v), g

    results = []
    for fn in (lambda x: block(x), lambda x: readable(block, x)):
        block.zero_grad(set_to_none=True)
        h.grad = None
        out, g = fn(h)
        w = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        ((out * w).sum() + 0.3 * g.sum()).backward()
        grads = [h.grad.clone()] + [p.grad.clone() for p in block.parameters()]
        results.append((out.detach(), g.detach(), grads))
    (o1, g1, gr1), (o2, g2, gr2) = results
    assert 0 < float(g1.mean()) < 1                       # the gates really switch
    assert torch.equal(g1, g2)
    torch.testing.assert_close(o1, o2, rtol=0, atol=1e-6)
    assert block.gate.score2.weight.grad is not None
    for a, b in zip(gr1, gr2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# -- streaming ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,overrides", [("paper", []), ("tiny", []),
                                            ("tiny", ["gate.min_active=8"]),
                                            ("static", [])])
def test_step_equals_forward(name, overrides, randomize):
    cfg = load_config(CONFIGS / f"{name}.toml", overrides)
    torch.manual_seed(0)
    model = randomize(ConvFSENet(cfg))
    x = _mag(cfg, 40, batch=2)
    with torch.no_grad():
        mask, gates = model(x)
        state = model.initial_state(2)
        masks, steps = [], []
        for t in range(x.shape[-1]):
            m_t, g_t, state = model.step(x[..., t], state)
            masks.append(m_t)
            steps.append(g_t)
    assert (torch.stack(masks, -1) - mask).abs().max().item() < 1e-5
    assert len(steps[0]) == len(gates)
    for i, g in enumerate(gates):
        assert torch.equal(torch.stack([s[i] for s in steps], -1), g)
    if gates:
        assert 0.2 < _mixed(gates) < 0.8


def test_initial_state_shapes(paper_cfg):
    state = ConvFSENet(paper_cfg).initial_state(3)
    assert len(state) == 18
    assert state[0].shape == (3, 128, 3)                  # pooling cache: L - 1 frames
    assert [s.shape[-1] for s in state[1::2]] == [2, 4, 8] * 3   # depthwise cache: (k-1) d
    assert all(s.abs().sum() == 0 for s in state)


@pytest.mark.parametrize("c", [0.5, 0.0])
def test_feature_compress_is_a_power_or_the_log_of_the_input(tiny_cfg, c):
    """model.feature_compress = c reads |X|^c, and at c = 0 ln(|X| + LOG_FEATURE_FLOOR), finite
    at digital silence (a frame of zeros here)."""
    from dyncp.config import LOG_FEATURE_FLOOR

    cfg = tiny_cfg.replace(model=dataclasses.replace(tiny_cfg.model, feature_compress=c))
    torch.manual_seed(0)
    plain = ConvFSENet(tiny_cfg).eval()
    comp = ConvFSENet(cfg).eval()
    comp.load_state_dict(plain.state_dict())
    x = _mag(tiny_cfg, 12)
    x[..., 0] = 0.0
    with torch.no_grad():
        a, _ = comp(x)
        b, _ = plain(torch.log(x + LOG_FEATURE_FLOOR) if c == 0 else x.pow(c))
    assert torch.isfinite(a).all() and (a - b).abs().max().item() < 1e-5

"""The DynCP gate: binary forward, surrogate gradients, pooling, noise, floor and open init."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dyncp.config import SURROGATES, GateConfig
from dyncp.gates import Gate, apply_floor, heaviside, moving_average, pool_frames, pool_padding
from dyncp.model import ConvFSENet

torch.set_num_threads(1)

S = torch.tensor([-3.0, -1.0, -0.999, -0.5, 0.0, 0.25, 0.999, 1.0, 2.0], dtype=torch.float64)


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_heaviside_forward_is_exactly_binary(surrogate):
    s = S.clone().requires_grad_(True)
    y = heaviside(s, surrogate, beta=4.0)
    assert y.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]          # score 0 is "off": kept where > 0
    assert heaviside(S, surrogate).tolist() == y.tolist()      # same without autograd


def _grad(surrogate: str, beta: float = 4.0) -> torch.Tensor:
    s = S.clone().requires_grad_(True)
    w = torch.arange(1.0, len(S) + 1, dtype=S.dtype)          # distinct upstream gradients
    (heaviside(s, surrogate, beta) * w).sum().backward()
    return s.grad / w


def test_surrogate_gradients_have_the_documented_values():
    assert _grad("ste").tolist() == [1.0] * len(S)
    clipped = [0, 0, 1, 1, 1, 1, 1, 0, 0]                       # 1 on |s| < 1, none at |s| >= 1
    assert _grad("ste_clipped").tolist() == clipped
    assert _grad("stochastic").tolist() == clipped
    for beta in (1.0, 4.0):
        sig = torch.sigmoid(beta * S)
        assert torch.allclose(_grad("sigmoid", beta), beta * sig * (1 - sig), atol=1e-12)
    with pytest.raises(ValueError, match="surrogate"):
        heaviside(S, "nope")


def test_clipped_surrogate_blocks_gradient_outside_window():
    s = torch.tensor([1.0, 1.5, -1.0, -7.0], requires_grad=True)
    heaviside(s, "ste_clipped").sum().backward()
    assert s.grad.abs().sum().item() == 0.0


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_every_surrogate_trains_both_gate_layers(surrogate):
    torch.manual_seed(0)
    gate = Gate(16, 32, GateConfig(surrogate=surrogate, pool=3, reduction=4), causal=True).train()
    h = torch.randn(2, 16, 20)
    mask = gate(h)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    (mask * torch.randn_like(mask)).sum().backward()
    for name in ("score1.weight", "score1.bias", "score2.weight", "score2.bias"):
        g = dict(gate.named_parameters())[name].grad
        assert g is not None and g.abs().sum().item() > 0, name


def test_stochastic_is_deterministic_in_eval_and_random_in_train():
    torch.manual_seed(0)
    gate = Gate(16, 64, GateConfig(surrogate="stochastic", noise=1.0, pool=2, reduction=4),
                causal=True)
    with torch.no_grad():
        gate.score2.bias.fill_(0.0)                      # scores near 0: noise flips gates
    h = torch.randn(2, 16, 50)
    gate.eval()
    a, b = gate(h), gate(h)
    assert torch.equal(a, b)
    assert torch.equal(a, (gate.scores(h) > 0).float())  # eval: plain Heaviside, no noise
    gate.train()
    c, d = gate(h), gate(h)
    assert set(c.unique().tolist()) == {0.0, 1.0}
    assert (c != d).float().mean().item() > 0.1          # fresh noise on every call
    assert (c != a).float().mean().item() > 0.1
    # noise = 0 switches the relaxation off even in training
    quiet = Gate(16, 64, GateConfig(surrogate="stochastic", noise=0.0, pool=2, reduction=4),
                 causal=True).train()
    quiet.load_state_dict(gate.state_dict())
    assert torch.equal(quiet(h), a)


def test_moving_average_matches_a_loop():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((2, 3, 12)).astype(np.float32)
    for pool in (1, 2, 3, 4):
        for causal in (True, False):
            left, right = pool_padding(pool, causal)
            assert left + right == pool - 1
            assert (left, right) == ((pool - 1, 0) if causal else ((pool - 1) // 2, pool // 2))
            ref = np.zeros_like(h)
            for t in range(h.shape[-1]):
                lo, hi = t - left, t + right               # window [lo, hi], zeros outside
                ref[..., t] = h[..., max(lo, 0): min(hi, h.shape[-1] - 1) + 1].sum(-1) / pool
            got = moving_average(torch.from_numpy(h), pool, causal).numpy()
            assert np.abs(got - ref).max() < 1e-6, (pool, causal)


def test_causal_pooling_ignores_the_future():
    h = torch.randn(1, 4, 30)
    h2 = h.clone()
    h2[..., 11:] = torch.randn(1, 4, 19)
    a, b = moving_average(h, 4, True), moving_average(h2, 4, True)
    assert torch.equal(a[..., :11], b[..., :11])
    assert not torch.allclose(a[..., 11:], b[..., 11:])
    c, d = moving_average(h, 4, False), moving_average(h2, 4, False)
    assert not torch.allclose(c[..., :11], d[..., :11])   # centred window looks ahead


def test_pool_frames_window():
    x = torch.arange(10.0).reshape(1, 1, 10)
    assert pool_frames(x, 4).flatten().tolist() == [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5]
    assert pool_frames(x, 1) is x


def test_floor_keeps_at_least_k_channels_per_frame():
    torch.manual_seed(0)
    scores = torch.randn(3, 40, 25) - 2.0                 # most channels off
    scores[:, :, 5] = -5.0 - torch.rand(3, 40)            # a frame with every channel off
    scores[:, :, 6] = 5.0                                 # a frame with every channel on
    mask = heaviside(scores)
    assert mask[:, :, 5].sum().item() == 0
    for k in (1, 7, 40):
        floored = apply_floor(mask, scores, k)
        assert set(floored.unique().tolist()) <= {0.0, 1.0}
        on = floored.sum(dim=1)                           # [B, T]
        assert on.min().item() >= k
        assert torch.all(on[:, 5] == k)                   # exactly the top k are forced on
        assert torch.all(on[:, 6] == 40)                  # channels already on stay on
        assert torch.all(floored >= mask)                 # the floor only adds channels
        # the forced ones are the top-k scores
        top = scores[0, :, 5].topk(k).indices
        assert floored[0, top, 5].sum().item() == k
    assert apply_floor(mask, scores, 0) is mask


def test_floor_passes_gradient_to_forced_scores():
    scores = (torch.full((1, 8, 3), -0.5) + 0.01 * torch.arange(8.0).view(1, 8, 1))
    scores.requires_grad_(True)
    m = apply_floor(heaviside(scores, "ste_clipped"), scores, 2)
    assert m.sum(dim=1).tolist() == [[2.0, 2.0, 2.0]]
    m.sum().backward()
    assert torch.all(scores.grad == 1.0)                 # every score in (-1, 1) keeps its gradient


def test_model_floor(tiny_cfg):
    cfg = tiny_cfg.replace(gate=dataclasses.replace(tiny_cfg.gate, min_active=5))
    torch.manual_seed(0)
    model = ConvFSENet(cfg).eval()
    with torch.no_grad():
        for blk in model.blocks:
            blk.gate.score2.bias.fill_(-3.0)             # the gate wants everything off
        _, gates = model(torch.rand(2, cfg.stft.n_freq, 40))
    for g in gates:
        on = g.sum(dim=1)
        assert on.min().item() >= 5 and on.max().item() <= 6


@pytest.mark.parametrize("name", ["paper_cfg", "tiny_cfg"])
def test_gates_start_open_inside_the_surrogate_window(name, request):
    cfg = request.getfixturevalue(name)
    torch.manual_seed(0)
    model = ConvFSENet(cfg).train()
    mag = torch.rand(2, cfg.stft.n_freq, 30) ** 2 * 3     # |STFT|-like scale
    h = torch.relu(model.front(mag))
    for blk in model.blocks:
        s = blk.gate.scores(h)
        assert s.min().item() > 0.0 and s.max().item() < 1.0   # open, and clipped grad passes
        h, g = blk(h)
        assert g.min().item() == 1.0
    assert blk.gate.score2.bias.detach().eq(cfg.gate.init_bias).all()


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_model_usage_loss_reaches_every_gate(surrogate, tiny_cfg):
    """Through the whole network (train mode): the usage loss and a mask loss give every gate
    layer of every block a gradient; nothing on the way detaches the gates."""
    from dyncp.losses import usage_loss

    cfg = tiny_cfg.replace(gate=dataclasses.replace(tiny_cfg.gate, surrogate=surrogate))
    torch.manual_seed(0)
    model = ConvFSENet(cfg).train()
    mask, gates = model(torch.rand(2, cfg.stft.n_freq, 20) ** 3 * 4)
    (usage_loss(gates, 0.5) + mask.mean()).backward()
    for i, blk in enumerate(model.blocks):
        for name, p in blk.gate.named_parameters():
            assert p.grad is not None and p.grad.abs().sum().item() > 0, (i, name)


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("min_active,causal,pool", [(0, True, 3), (5, True, 4), (0, False, 4),
                                                   (0, False, 1)])
def test_training_gate_matches_the_readable_form(surrogate, min_active, causal, pool):
    """Training runs the gate's last layer, noise, step and floor as one autograd node with a
    hand-written backward (gates._GateTrain); mask and every gradient equal the readable
    ``binarize(scores(h))`` path built from autograd's own ops."""
    torch.manual_seed(0)
    gate = Gate(12, 24, GateConfig(pool=pool, reduction=4, surrogate=surrogate,
                                   min_active=min_active, noise=0.5), causal=causal).train()
    with torch.no_grad():                                  # scores spread across the window
        gate.score2.weight.normal_(0.0, 0.4)
        gate.score2.bias.uniform_(-0.5, 0.5)
    h = torch.randn(3, 12, 19, requires_grad=True)
    w = torch.randn(3, 24, 19)
    out = []
    for readable in (False, True):
        gate.zero_grad(set_to_none=True)
        h.grad = None
        torch.manual_seed(7)                               # same logistic noise both ways
        g = gate.binarize(gate.scores(h)) if readable else gate(h)
        (g * w).sum().backward()
        out.append((g.detach(), [h.grad.clone()] + [p.grad.clone() for p in gate.parameters()]))
    (g1, gr1), (g2, gr2) = out
    assert torch.equal(g1, g2)
    assert 0 < float(g1.mean()) < 1
    if min_active:
        assert int(g1.sum(1).min()) >= min_active
    for a, b in zip(gr1, gr2):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

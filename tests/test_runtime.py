"""The sparse runtime (issue 6): sparse == dense == PyTorch, only active channels computed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dyncp.checkpoint import save_model
from dyncp.config import load_config
from dyncp.errors import ConfigError
from dyncp.model import ConvFSENet
from dyncp.runtime import SparseRuntime
from conftest import randomize_model

torch.set_num_threads(1)


randomize = randomize_model  # shared with the core tests (tests/conftest.py)


def mags(n_freq: int, frames: int, seed: int = 0) -> np.ndarray:
    """|STFT|-like frames [T, F]: positive, heavy-tailed, with silent stretches."""
    rng = np.random.default_rng(seed)
    m = rng.random((frames, n_freq)).astype(np.float32) ** 3 * 4
    m[frames // 3: frames // 3 + 5] *= 1e-3
    return m


def torch_reference(model, x):
    with torch.inference_mode():
        mask, gates = model(torch.from_numpy(x.T.copy()).unsqueeze(0))
    g = (torch.stack([gi[0] for gi in gates]).to(torch.uint8).numpy() if gates
         else np.zeros((0, model.cfg.model.hidden, x.shape[0]), np.uint8))
    return mask[0].numpy(), g


def run(rt, x):
    rt.reset()
    out = [rt.step(f) for f in x]
    return np.stack([o[0] for o in out], -1), np.stack([o[1] for o in out], -1)


CASES = [("tiny", []), ("tiny", ["gate.enabled=false"]), ("tiny", ["gate.min_active=24"]),
         ("tiny", ["model.feature_compress=0.3", "model.dilations=[1, 3]", "model.kernel=5"]),
         ("paper", []), ("static", []), ("paper", ["gate.min_active=160"])]


@pytest.mark.parametrize("name,overrides", CASES)
def test_sparse_equals_dense_equals_torch(name, overrides):
    torch.manual_seed(0)
    model = randomize(ConvFSENet(load_config(f"configs/{name}.toml", overrides)))
    x = mags(model.cfg.stft.n_freq, 60 if name == "tiny" else 40)
    ref_mask, ref_gates = torch_reference(model, x)
    if model.gated:
        assert 0.15 < ref_gates.mean() < 0.85     # mixed gates: the test is not trivial
        if model.cfg.gate.min_active:             # the floor is active at some frames
            assert ref_gates.sum(axis=1).min() >= model.cfg.gate.min_active
    results = {}
    for mode in ("sparse", "dense"):
        mask, gates = run(SparseRuntime(model, mode), x)
        assert np.abs(mask - ref_mask).max() < 1e-4, mode
        assert np.array_equal(gates, ref_gates), mode
        results[mode] = mask
    assert np.abs(results["sparse"] - results["dense"]).max() < 1e-5


def test_sparse_computes_only_active_channels():
    torch.manual_seed(0)
    model = randomize(ConvFSENet(load_config("configs/tiny.toml")), gate_bias=-0.3)
    x = mags(model.cfg.stft.n_freq, 30)
    sparse, dense = SparseRuntime(model, "sparse"), SparseRuntime(model, "dense")
    n_all = model.cfg.model.n_blocks * model.cfg.model.hidden
    for f in x:
        _, g, n_sparse = sparse.step_into(f)
        assert n_sparse == int(g.sum()) < n_all
        assert dense.step_into(f)[2] == n_all


def test_pruned_past_frames_read_as_zero():
    """The depthwise ring holds 0 for a channel pruned at that frame (what the dense model with
    mask sees); folding BN1's shift into the depthwise bias would read c1 there instead."""
    torch.manual_seed(0)
    model = randomize(ConvFSENet(load_config("configs/tiny.toml")))
    rt = SparseRuntime(model, "sparse")
    for f in mags(model.cfg.stft.n_freq, 10):
        _, g, _ = rt.step_into(f)
    t = int(rt.state.t[0]) - 1
    pos = t % rt.ring
    off = g == 0
    assert off.any() and (rt.state.dw[:, pos][off] == 0).all()
    assert (rt.state.dw[:, pos][~off] != 0).any()


def test_states_are_independent_and_explicit(tmp_path):
    torch.manual_seed(0)
    model = randomize(ConvFSENet(load_config("configs/tiny.toml")))
    path = save_model(model, tmp_path / "m.pt")
    rt = SparseRuntime(path)                       # from a checkpoint
    x = mags(model.cfg.stft.n_freq, 20)
    ref, _ = run(rt, x)
    a, b = rt.initial_state(), rt.initial_state()
    for f in x:                                    # two interleaved streams, one runtime
        ma, _ = rt.step(f, a)
        mb, _ = rt.step(f, b)
        assert np.array_equal(ma, mb)
    assert np.array_equal(ma, ref[:, -1]) and a.t[0] == 20
    snapshot = a.copy()
    rt.step(x[0], a)
    assert snapshot.t[0] == 20                     # copy() is deep


def test_runtime_errors():
    model = ConvFSENet(load_config("configs/tiny.toml", ["model.causal=false"]))
    with pytest.raises(ConfigError, match="causal"):
        SparseRuntime(model)
    rt = SparseRuntime(ConvFSENet(load_config("configs/tiny.toml")))
    with pytest.raises(ValueError, match=r"mag_t \[65\]"):
        rt.step(np.zeros(64, np.float32))
    with pytest.raises(ValueError, match="mode"):
        SparseRuntime(ConvFSENet(load_config("configs/tiny.toml")), mode="fast")


def test_weight_layout_is_per_channel():
    """One channel's PW1 row, taps and PW2 column are one contiguous, cache-line padded row."""
    torch.manual_seed(0)
    model = ConvFSENet(load_config("configs/tiny.toml")).eval()
    rt = SparseRuntime(model)
    blk, c, B, k = model.blocks[1], 5, rt.residual, rt.kernel
    row = rt.chan[1, c]
    assert rt.chan.flags.c_contiguous and rt.chan.shape[2] % 16 == 0
    s1 = (blk.bn1.weight / torch.sqrt(blk.bn1.running_var + blk.bn1.eps))[c].item()
    w1 = blk.pw1.weight[c, :, 0].detach().numpy() * (s1 if s1 > 0 else 1.0)
    np.testing.assert_allclose(row[:B], w1, rtol=1e-6)
    np.testing.assert_allclose(row[B:B + k], blk.dw.weight[c, 0].detach().numpy(), rtol=1e-6)
    s2 = (blk.bn2.weight / torch.sqrt(blk.bn2.running_var + blk.bn2.eps))[c].item()
    np.testing.assert_allclose(row[B + k:2 * B + k],
                               blk.pw2.weight[:, c, 0].detach().numpy() * s2, rtol=1e-6)

"""The sparse runtime (issues 6, 15): sparse == dense == PyTorch, pruned weights never read, one
runtime shared by streams in several threads."""

from __future__ import annotations

import threading

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
         ("tiny", ["model.feature_compress=0"]),
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


# -- the central claim: pruned weights are never read (issue 15) -----------------------------------
def poisoned(rt, x, ref_gates):
    """Run ``rt`` over frames ``x`` [T, F], each frame with the weight rows (PW1 row, taps, PW2
    column, constants) of the channels the reference gates prune at that frame set to NaN;
    restored after the frame. Returns the masks [F, T]."""
    rt.reset()
    clean, masks = rt.chan.copy(), []
    for t, f in enumerate(x):
        off = ref_gates[:, :, t] == 0                          # [n_blocks, H]
        rt.chan[off] = np.nan
        masks.append(rt.step(f)[0])
        rt.chan[off] = clean[off]
    return np.stack(masks, -1)


@pytest.mark.parametrize("name,overrides", [("tiny", []), ("paper", []),
                                            ("tiny", ["gate.min_active=24"])])
def test_sparse_never_reads_pruned_weights(name, overrides):
    """Frame by frame, NaN in every weight of every channel the gate prunes at that frame: the
    sparse runtime's output stays finite and equal to the reference. A NaN read or computed
    anywhere would spread (NaN * 0 is NaN); the dense runtime, which computes every channel and
    multiplies by the mask, is the control that shows the poison bites."""
    torch.manual_seed(0)
    model = randomize(ConvFSENet(load_config(f"configs/{name}.toml", overrides)))
    x = mags(model.cfg.stft.n_freq, 50 if name == "tiny" else 30)
    ref_mask, ref_gates = torch_reference(model, x)
    assert 0.15 < ref_gates.mean() < 0.85
    out = poisoned(SparseRuntime(model, "sparse"), x, ref_gates)
    assert np.isfinite(out).all()
    assert np.abs(out - ref_mask).max() < 1e-4
    assert not np.isfinite(poisoned(SparseRuntime(model, "dense"), x, ref_gates)).all()


# -- many streams, one runtime (issue 15) ----------------------------------------------------------
def test_states_own_every_buffer_a_frame_writes():
    torch.manual_seed(0)
    rt = SparseRuntime(randomize(ConvFSENet(load_config("configs/tiny.toml"))))
    a, b = rt.initial_state(), rt.initial_state()
    for arr in (a.f, a.i, a.gates):
        assert not any(np.shares_memory(arr, other) for other in (b.f, b.i, b.gates, rt.wf))
    f = mags(rt.n_freq, 1)[0]
    wf, wi = rt.wf.copy(), rt.wi.copy()
    mask, gates, _ = rt.step_into(f, a)
    assert np.shares_memory(mask, a.f) and np.shares_memory(gates, a.gates)
    assert np.array_equal(rt.wf, wf) and np.array_equal(rt.wi, wi)   # weights are read-only
    assert not b.f.any() and not b.i.any() and not b.gates.any()     # b untouched by a's frame


def test_threads_over_one_runtime_equal_sequential():
    """N streams in N threads over one shared runtime give exactly what they give one after
    another (the kernel releases the GIL, so the frames really overlap)."""
    torch.manual_seed(0)
    model = randomize(ConvFSENet(load_config("configs/paper.toml")))
    rt = SparseRuntime(model, "sparse")
    inputs = [mags(model.cfg.stft.n_freq, 150, seed=s) for s in range(4)]

    def run_stream(x):
        st = rt.initial_state()
        return np.stack([rt.step_into(f, st)[0].copy() for f in x])

    expected = [run_stream(x) for x in inputs]
    barrier = threading.Barrier(len(inputs))
    got = [None] * len(inputs)

    def worker(j):
        barrier.wait()
        got[j] = run_stream(inputs[j])

    for _ in range(3):
        threads = [threading.Thread(target=worker, args=(j,)) for j in range(len(inputs))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for e, g in zip(expected, got):
            assert np.array_equal(e, g)


def test_thresholds_per_channel():
    """``state.thresh`` [n_blocks, H] moves each channel's Heaviside, per stream (room for a
    run-time budget): 0 is the trained model; -inf keeps every channel; +inf keeps only the
    min_active floor; one channel's threshold moves that channel only."""
    torch.manual_seed(0)
    model = randomize(ConvFSENet(load_config("configs/tiny.toml", ["gate.min_active=5"])))
    rt = SparseRuntime(model, "sparse")
    x = mags(model.cfg.stft.n_freq, 10)
    ref, _ = run(rt, x)
    st = rt.initial_state()
    st.thresh[:] = -np.inf
    for f in x:
        _, g, n = rt.step_into(f, st)
        assert g.all() and n == st.n_open == g.size
    st = rt.initial_state()
    st.thresh[:] = np.inf
    for f in x:
        _, g, n = rt.step_into(f, st)
        assert (g.sum(axis=1) == 5).all() and n == 5 * rt.n_blocks
    st = rt.initial_state()
    assert np.array_equal(np.stack([rt.step(f, st)[0] for f in x], -1), ref)
    _, ref_g = run(rt, x[:1])
    st = rt.initial_state()
    i, c = np.argwhere(ref_g[..., 0] == 1)[0]
    st.thresh[i, c] = np.inf
    g = rt.step(x[0], st)[1]
    assert g[i, c] == 0 and (g != ref_g[..., 0]).sum() == 1


# -- the run-time budget (issue 13) ----------------------------------------------------------------
def test_a_budget_per_frame_equals_model_step():
    """A budget model: each stream starts at the nominal budget; ``set_budget`` before any frame
    (Φ = 0 included: bypassed, the pooling ring kept) gives model.step's masks and gates at the
    same budgets; a hard cap keeps at most ``cap`` channels per block (the floor aside)."""
    from dyncp.errors import BudgetError

    torch.manual_seed(0)
    model = randomize(ConvFSENet(load_config("configs/tiny.toml", ["gate.budget=true"])))
    with torch.no_grad():
        for blk in model.blocks:
            blk.gate.budget_slope.uniform_(-0.5, 1.5)
    rt = SparseRuntime(model, "sparse")
    x = mags(model.cfg.stft.n_freq, 40)
    phis = [0.5, 0.0, 0.0, 0.3, 0.3, 0.0, 0.7, 0.85, 0.1, 0.0, 0.45] * 4
    st, state = rt.initial_state(), model.initial_state(1)
    assert st.phi == model.cfg.loss.prune_target and not st.bypass
    seen = []
    for f, phi in zip(x, phis):
        assert rt.set_budget(st, phi=phi) == phi and st.bypass == (phi == 0)
        mask, gates, n = rt.step_into(f, st)
        with torch.inference_mode():
            ref_mask, ref_gates, state = model.step(torch.from_numpy(f)[None], state, phi=phi)
        ref = (torch.stack([g[0] for g in ref_gates]).to(torch.uint8).numpy() if ref_gates
               else np.ones_like(gates))
        assert np.abs(mask - ref_mask[0].numpy()).max() < 1e-5
        assert np.array_equal(gates, ref) and n == st.n_open == ref.sum()
        seen.append(ref.mean())
    assert sum(0.1 < g < 0.9 for g in seen) > 10      # mixed gates: not a trivial equality
    for phi in (0.2, 0.5):
        rt.set_budget(st, phi=phi, cap=5)
        for f in x[:10]:
            assert (rt.step_into(f, st)[1].sum(axis=1) <= 5).all()
    with pytest.raises(BudgetError, match="Φ > 0"):
        rt.set_budget(st, phi=0.0, cap=5)
    with pytest.raises(BudgetError, match="outside"):
        rt.set_budget(st, phi=0.9)


def test_vectorised_features_and_sigmoid_match_libm():
    """The kernel's polynomial power, log and sigmoid (dyncp/kernel.py) against float64 numpy:
    within 1e-6 relative over |X| from 1e-8 to 1e4 (the input features) and 1e-7 absolute for the
    mask; a NaN or Inf bin takes libm's value, as torch's features do."""
    from dyncp.kernel import features, sigmoid_

    rng = np.random.default_rng(0)
    x = (rng.random(20000) * 10.0 ** rng.uniform(-8, 4, 20000)).astype(np.float32)
    x[:4] = [0.0, -1.0, np.inf, np.nan]
    out, scratch = np.empty_like(x), np.empty_like(x)
    for c in (0.3, 0.5, 0.0, 1.0):
        features(x, c, scratch, out)
        with np.errstate(invalid="ignore"):
            y = np.maximum(x.astype(np.float64), 0.0) + (1e-4 if c == 0 else 1e-12)
            ref = x if c == 1 else (np.log(y) if c == 0 else y ** c)
        fin = np.isfinite(ref)
        err = np.abs(out[fin] - ref[fin]) / (1.0 if c == 0 else np.maximum(np.abs(ref[fin]), 1e-30))
        assert err.max() < 1e-6, c
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref.astype(np.float32)))
        np.testing.assert_array_equal(out[~fin], ref[~fin].astype(np.float32))
    z = np.concatenate([rng.standard_normal(20000) * 12, [100, -100, np.inf, -np.inf, np.nan]])
    s = z.astype(np.float32)
    sigmoid_(s)
    with np.errstate(over="ignore"):
        ref = 1 / (1 + np.exp(-z))
    assert np.nanmax(np.abs(s - ref)) < 1e-7 and np.isnan(s[-1])

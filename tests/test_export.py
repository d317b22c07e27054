"""ONNX export of the streaming step (issue 6): onnxruntime == PyTorch step, no file on failure."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch

from dyncp.checkpoint import save_model
from dyncp.config import load_config
from dyncp.errors import ConfigError, DyncpError
from dyncp.model import ConvFSENet

ort = pytest.importorskip("onnxruntime")
from dyncp import export as ex  # noqa: E402

torch.set_num_threads(1)


def tiny(*overrides: str) -> ConvFSENet:
    torch.manual_seed(0)
    model = ConvFSENet(load_config("configs/tiny.toml", list(overrides))).eval()
    with torch.no_grad():
        for blk in model.blocks:
            blk.bn1.running_mean.uniform_(-0.3, 0.3)
            blk.bn2.running_var.uniform_(0.5, 2.0)
            if blk.gate is not None:
                blk.gate.score2.weight.uniform_(-0.5, 0.5)
                blk.gate.score2.bias.uniform_(-0.8, 0.8)
    return model


@pytest.mark.parametrize("overrides", [[], ["gate.enabled=false"], ["gate.min_active=20"]])
def test_onnx_equals_pytorch_step(tmp_path, overrides):
    model = tiny(*overrides)
    r = ex.export_onnx(model, tmp_path / "m.onnx", frames=100)
    assert r["frames"] == 100 and r["mask"] < 1e-5 and r["gate_mismatches"] == 0
    names = [n for n in ex.state_names(model) if n is not None]
    assert r["inputs"] == ["mag_t"] + names
    assert r["outputs"][0] == "mask_t" and r["outputs"][-1] == f"{names[-1]}_out"
    assert ("gates" in r["outputs"]) == model.gated

    # Independent check: 120 frames of a stream through onnxruntime vs model.forward offline.
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(1, model.cfg.stft.n_freq, 120) ** 2 * 3
    with torch.inference_mode():
        ref_mask, ref_gates = model(x)
    state = {n: s.numpy() for n, s in zip(ex.state_names(model), model.initial_state(1))
             if n is not None}
    outs = [o.name for o in sess.get_outputs()]
    for t in range(x.shape[-1]):
        res = dict(zip(outs, sess.run(None, {"mag_t": x[:, :, t].numpy(), **state})))
        assert np.abs(res["mask_t"][0] - ref_mask[0, :, t].numpy()).max() < 1e-5
        if model.gated:
            assert np.array_equal(res["gates"][:, 0], torch.stack(ref_gates)[:, 0, :, t].numpy())
        state = {n: res[f"{n}_out"] for n in state}


def test_failed_verification_leaves_no_file(tmp_path, monkeypatch):
    def bad_verify(path, model, frames=128, seed=0):
        raise DyncpError("onnxruntime disagrees (simulated)")

    monkeypatch.setattr(ex, "verify", bad_verify)
    with pytest.raises(DyncpError, match="disagrees"):
        ex.export_onnx(tiny(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="causal"):
        ex.export_onnx(tiny("model.causal=false"), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="100"):
        ex.export_onnx(tiny(), tmp_path / "m.onnx", frames=10)
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name.startswith("onnx"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(DyncpError, match=r"dyncp\[export\]"):
        ex.export_onnx(tiny(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_cli(tmp_path, capsys):
    from dyncp.cli import main

    ckpt = save_model(tiny(), tmp_path / "m.pt")
    assert main(["export", "-c", str(ckpt), "-o", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "verified with onnxruntime over 128 frames" in out and "gate mismatches 0" in out
    assert (tmp_path / "m.onnx").stat().st_size > 10_000


def test_a_score_of_exactly_zero_is_off_in_torch_numba_and_onnx(tmp_path):
    """The Heaviside at 0: ``score > 0`` is on, so a score of exactly 0 is off, the same in the
    PyTorch gate (forward and step), the numba runtime (sparse and dense) and the ONNX graph
    (issue 15). Channels 0-9 of every block get score exactly 0 at every frame (zero weights and
    bias), 10-19 a small positive constant, the rest vary."""
    from dyncp.runtime import SparseRuntime

    model = tiny("gate.min_active=0")
    zero, pos = slice(0, 10), slice(10, 20)
    with torch.no_grad():
        for blk in model.blocks:
            blk.gate.score2.weight[zero] = 0.0
            blk.gate.score2.bias[zero] = 0.0
            blk.gate.score2.weight[pos] = 0.0
            blk.gate.score2.bias[pos] = 1e-30           # the smallest on
    frames = 40
    x = (torch.rand(1, model.cfg.stft.n_freq, frames, generator=torch.Generator().manual_seed(1))
         ** 2 * 3)
    with torch.inference_mode():
        _, g_fwd = model(x)
        scores = [blk.gate.scores(torch.zeros(1, model.cfg.model.residual, 3)) for blk in
                  model.blocks]
    assert all(bool((s[0, zero] == 0).all()) for s in scores)      # exactly 0, not -0 or 1e-38
    ref = torch.stack(g_fwd)[:, 0].to(torch.uint8).numpy()            # [n_blocks, H, T]
    assert (ref[:, zero] == 0).all() and (ref[:, pos] == 1).all()
    assert 0 < ref[:, 20:].mean() < 1                                 # the rest is mixed

    paths = {}
    state = model.initial_state(1)
    steps = []
    for t in range(frames):
        with torch.inference_mode():
            _, g, state = model.step(x[:, :, t], state)
        steps.append(torch.stack(g)[:, 0].to(torch.uint8).numpy())
    paths["torch step"] = np.stack(steps, -1)
    for mode in ("sparse", "dense"):
        rt = SparseRuntime(model, mode)
        rt.reset()
        paths[f"numba {mode}"] = np.stack([rt.step(x[0, :, t].numpy().copy())[1]
                                           for t in range(frames)], -1)
    r = ex.export_onnx(model, tmp_path / "m.onnx", frames=100)
    assert r["gate_mismatches"] == 0
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    names = [n for n in ex.state_names(model) if n is not None]
    o_state = {n: s.numpy() for n, s in zip(ex.state_names(model), model.initial_state(1))
               if n is not None}
    outs, onnx_gates = [o.name for o in sess.get_outputs()], []
    for t in range(frames):
        res = dict(zip(outs, sess.run(None, {"mag_t": x[:, :, t].numpy(), **o_state})))
        onnx_gates.append(res["gates"][:, 0].astype(np.uint8))
        o_state = {n: res[f"{n}_out"] for n in names}
    paths["onnx"] = np.stack(onnx_gates, -1)
    for name, g in paths.items():
        assert g.shape == ref.shape, name
        assert (g[:, zero] == 0).all(), f"{name}: a score of exactly 0 switched a channel on"
        assert np.array_equal(g, ref), name


def test_onnx_metadata_says_what_a_deployer_needs(tmp_path):
    """Issue 14: sample rate, STFT, window, padding and the state are in the file's metadata, and
    docs/deploy.md's numpy + onnxruntime frame loop built on them equals the Streamer."""
    import json
    import re
    from pathlib import Path

    from dyncp.streaming import Streamer

    model = tiny()
    ex.export_onnx(model, tmp_path / "m.onnx", frames=100)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    st = model.cfg.stft
    assert (meta["sample_rate"], meta["n_fft"], meta["hop"]) == (
        str(st.sample_rate), str(st.n_fft), str(st.hop))
    assert "hann" in meta["window"] and "periodic" in meta["window"]
    assert "zeros" in meta["padding"]
    states = json.loads(meta["state"])
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    assert [s["name"] for s in states] == [n for n in ex.state_names(model) if n is not None]
    assert all(shapes[s["name"]] == s["shape"] for s in states)
    assert json.loads(meta["config"])["name"] == model.cfg.name

    doc = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    code = re.findall(r"^```python\n(.*?)^```", doc, flags=re.S | re.M)[0]
    scope: dict = {}
    exec(code, scope)
    noisy = (0.1 * np.random.default_rng(0).standard_normal(5000)).astype(np.float32)
    out = scope["enhance_onnx"](tmp_path / "m.onnx", noisy)
    ref = Streamer(model).process(noisy)
    assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-5


def test_onnx_of_a_budget_model_takes_phi_as_an_input(tmp_path, randomize):
    """The budget is a graph input: export verifies onnxruntime against ``model.step`` over a
    budget that changes every 5 frames (0 and both ends of the range included)."""
    pytest.importorskip("onnxruntime")
    import dyncp.export as E
    from dyncp.config import load_config
    from dyncp.model import build_model

    m = randomize(build_model(load_config(Path(__file__).resolve().parents[1] / "configs/tiny.toml", ["gate.budget=true"])),
                  seed=2)
    with torch.no_grad():
        for blk in m.blocks:
            blk.gate.budget_slope.uniform_(-0.5, 1.5)
        m.budget_table[1].mul_(0.9)        # a calibrated (non-identity) table
    summary = E.export_onnx(m, tmp_path / "b.onnx", frames=120)
    assert summary["inputs"][:2] == ["mag_t", "phi"] and summary["gate_mismatches"] == 0
    import onnx
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "b.onnx")).metadata_props}
    assert "input phi" in props["budget"]

    class Ignores(E.StepGraph):                 # a graph that drops the budget input
        def forward(self, mag_t, *inputs):
            return super().forward(mag_t, inputs[0] * 0 + 0.5, *inputs[1:])

    real = E.StepGraph
    E.StepGraph = Ignores
    try:
        with pytest.raises(DyncpError, match="disagrees"):
            E.export_onnx(m, tmp_path / "c.onnx", frames=120)
    finally:
        E.StepGraph = real
    assert not (tmp_path / "c.onnx").exists()


def test_budget_code_equals_interpolation():
    import numpy as np
    from dyncp.model import budget_code

    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(0.1, 0.9, 12)); x[0], x[-1] = 0.1, 0.85
    y = np.sort(rng.uniform(0.05, 0.95, 12))
    table = torch.tensor(np.stack([x, y]), dtype=torch.float32)
    p = np.array([0.0, 0.05, 0.1, 0.33, 0.5, 0.77, 0.85, 0.9], np.float32)
    want = np.where(p < x[0], y[0] * p / x[0], np.interp(p, x, y))
    got = budget_code(table, torch.from_numpy(p)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)

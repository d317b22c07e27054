"""The run-time budget in the streaming path (issue 13 item 1, runtime side): a Streamer at Φ
equals offline ``model(mag, phi=Φ)``; a budget changed between frames equals ``model.step``
with the same per-frame budgets; Φ = 0 runs no gate (a NaN-poisoned score stack is never read)
and counts the static MACs; requests a model cannot run raise BudgetError; ``dyncp stream
--phi/--budget``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dyncp.budget import calibrate, feasible
from dyncp.checkpoint import save_model
from dyncp.config import load_config
from dyncp.dsp import istft, stft
from dyncp.enhance import enhance_tensor
from dyncp.errors import BudgetError, DyncpError
from dyncp.macs import macs_at, static_macs_per_frame
from dyncp.model import build_model
from dyncp.stream_io import stream_file
from dyncp.streaming import Streamer
from conftest import randomize_model

torch.set_num_threads(1)
ENGINES = ["torch", "dense", "sparse"]


def budget_model(seed: int = 0, *overrides: str):
    """A randomised tiny budget model, calibrated on synthetic audio so that every request in
    the range gives mixed gates."""
    cfg = load_config("configs/tiny.toml", ["gate.budget=true", *overrides])
    torch.manual_seed(seed)
    m = randomize_model(build_model(cfg), seed=seed)
    with torch.no_grad():
        for blk in m.blocks:
            blk.gate.budget_slope.uniform_(-0.5, 1.5)
    rng = np.random.default_rng(seed + 10)
    calibrate(m, [SimpleNamespace(noisy=(0.2 * rng.standard_normal(8000)).astype(np.float32)
                                  * np.linspace(0.1, 2, 8000, dtype=np.float32))
                  for _ in range(3)], points=16)
    return m.eval()


@pytest.fixture(scope="module")
def model():
    return budget_model()


@pytest.fixture(scope="module")
def signal():
    rng = np.random.default_rng(1)
    n = 16000 // 2 + 37
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (t > 0.1)
            + 0.1 * rng.standard_normal(n)).astype(np.float32)


def offline(model, wav, phi):
    with torch.inference_mode():
        y, gates = enhance_tensor(model, torch.from_numpy(wav).unsqueeze(0), phi=phi)
    m = model.cfg.model
    n_frames = wav.shape[0] // model.cfg.stft.hop + 1
    g = (torch.stack([x[0] for x in gates]).to(torch.uint8).numpy() if gates
         else np.ones((m.n_blocks, m.hidden, n_frames), np.uint8))    # Φ = 0: every channel
    return y[0].numpy(), g


def frame_pieces(model, wav):
    """Pieces of ``wav`` that each complete one frame (the first, then one hop each), None for
    the flush: feeding them lets a test act between any two frames."""
    hop, n_fft = model.cfg.stft.hop, model.cfg.stft.n_fft
    assert hop == n_fft // 2
    cuts = list(range(n_fft // 2, wav.shape[0] - hop + 1, hop)) + [wav.shape[0]]
    return [wav[:n_fft // 2]] + [wav[i:j] for i, j in zip(cuts, cuts[1:])] + [None]


def step_reference(model, wav, phis):
    """``model.step`` frame by frame at budget ``phis[t]``, then the offline iSTFT: (enhanced,
    gates [n_blocks, H, T] with every channel on at Φ = 0)."""
    cfg = model.cfg
    spec = stft(torch.from_numpy(wav).unsqueeze(0), cfg.stft)
    mag, state, masks, gates = spec.abs(), model.initial_state(1), [], []
    with torch.inference_mode():
        for t in range(spec.shape[-1]):
            mask_t, g_t, state = model.step(mag[..., t], state, phi=phis[t])
            masks.append(mask_t)
            gates.append(torch.stack([g[0] for g in g_t]) if g_t else
                         torch.ones(cfg.model.n_blocks, cfg.model.hidden))
        y = istft(torch.stack(masks, -1) * spec, cfg.stft, length=wav.shape[0])
    return y[0].numpy(), torch.stack(gates, -1).to(torch.uint8).numpy()


@pytest.mark.parametrize("engine", ENGINES)
def test_stream_at_a_budget_equals_offline(model, signal, engine):
    cfg = model.cfg
    static = float(static_macs_per_frame(cfg))
    for phi in (0.0, 0.25, 0.5, 0.75, None):
        ref, ref_gates = offline(model, signal, phi)
        if phi != 0.0:
            assert 0.1 < ref_gates.mean() < 0.9, phi     # mixed gates: not a trivial equality
        s = Streamer(model, engine, phi=phi)
        out = s.process(signal, chunk=160)
        assert np.abs(out - ref).max() < 1e-5, phi
        assert np.array_equal(s.gates, ref_gates), phi
        assert s.stats.phi == (cfg.loss.prune_target if phi is None else phi)
        per_frame = static if phi == 0.0 else float(macs_at(cfg, ref_gates.sum((0, 1))).mean())
        assert s.stats.macs / s.stats.frames == pytest.approx(per_frame, rel=1e-9), phi
        assert s.stats.bypassed == (s.stats.frames if phi == 0.0 else 0)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_budget_changed_between_frames_equals_model_step(model, signal, engine):
    """set_budget before every frame, Φ = 0 stretches included (the gate's pooling history
    must run through them), equals model.step with the same budgets; the per-frame MACs are
    the static count at Φ = 0 and macs_at of the gates otherwise."""
    pieces = frame_pieces(model, signal)
    rng = np.random.default_rng(3)
    phis = [float(p) for p in np.repeat(rng.choice([0.0, 0.2, 0.45, 0.7, 0.85], 24), 6)]
    phis = phis[:len(pieces)]
    phis[1:4] = [0.0, 0.0, 0.6]                          # a gated frame right after Φ = 0
    ref, ref_gates = step_reference(model, signal, phis)
    s = Streamer(model, engine, record_macs=True)
    outs = []
    for t, piece in enumerate(pieces):
        assert s.set_budget(phi=phis[t]) == phis[t]
        outs.append(s.flush() if piece is None else s.feed(piece))
        assert s.stats.frames == t + 1
    assert np.abs(np.concatenate(outs) - ref).max() < 1e-5
    assert np.array_equal(s.gates, ref_gates)
    static = float(static_macs_per_frame(model.cfg))
    expect = [static if p == 0 else float(macs_at(model.cfg, g.sum()))
              for p, g in zip(phis, ref_gates.transpose(2, 0, 1))]
    assert s.stats.frame_macs == pytest.approx(expect, rel=1e-12)
    assert s.stats.frame_phi == phis
    assert s.stats.macs == pytest.approx(sum(expect), rel=1e-9)
    assert s.stats.bypassed == phis.count(0.0)


@pytest.mark.parametrize("engine", ENGINES)
def test_phi_zero_runs_no_gate(model, signal, engine):
    """NaN in every weight of every gate's score stack: at Φ = 0 the output is finite and equal
    to the all-channels output (no gate ran); at Φ = 0.5 the same poison bites."""
    ref, _ = offline(model, signal, 0.0)
    ones = [torch.ones(1, model.cfg.model.hidden, ref_n) for ref_n in
            [signal.shape[0] // model.cfg.stft.hop + 1] * len(model.blocks)]
    with torch.inference_mode():
        spec = stft(torch.from_numpy(signal)[None], model.cfg.stft)
        all_on = istft(model(spec.abs(), masks=ones)[0] * spec, model.cfg.stft,
                       length=signal.shape[0])[0].numpy()
    assert np.abs(ref - all_on).max() < 1e-6

    def poisoned(phi):
        if engine == "torch":
            import copy
            m = copy.deepcopy(model)
            with torch.no_grad():
                for blk in m.blocks:
                    for p in (blk.gate.score1.weight, blk.gate.score1.bias,
                              blk.gate.score2.weight, blk.gate.score2.bias):
                        p.fill_(float("nan"))
            s = Streamer(m, engine, phi=phi)
        else:
            s = Streamer(model, engine, phi=phi)
            for w in (s.runtime.gw1, s.runtime.gb1, s.runtime.gw2t, s.runtime.gb2):
                w[:] = np.nan
        return s.process(signal, chunk=200), s

    out, s = poisoned(0.0)
    assert np.isfinite(out).all() and np.abs(out - ref).max() < 1e-5
    assert s.gates.all() and s.pruning_ratio == 0.0
    static = static_macs_per_frame(model.cfg)
    assert s.stats.mmac_per_s == pytest.approx(static * model.cfg.stft.frames_per_second / 1e6)
    bitten, s = poisoned(0.5)
    assert not s.gates.any()                       # NaN scores prune: the poison is read
    assert np.abs(bitten - offline(model, signal, 0.5)[0]).max() > 1e-3


def test_budget_errors(model, signal):
    tiny = randomize_model(build_model(load_config("configs/tiny.toml")))
    for kw in ({"phi": 0.5}, {"budget": 1.0}, {"phi": 0.0}):
        with pytest.raises(BudgetError, match="no run-time budget"):
            Streamer(tiny, "sparse", **kw)
    s = Streamer(tiny, "sparse")
    assert s.stats.phi is None and s.set_budget() is None
    with pytest.raises(BudgetError, match="no run-time budget"):
        s.set_budget(phi=0.3)
    f = feasible(model.cfg)
    for kw in ({"phi": 0.05}, {"phi": 0.9}, {"budget": f["mmac_min"] * 0.9}):
        for engine in ENGINES:
            with pytest.raises(BudgetError) as e:
                Streamer(model, engine, **kw)
            assert "Φ 0.1 to 0.85" in str(e.value) and "MMAC/s" in str(e.value)
    s = Streamer(model, "sparse", phi=0.6)
    s.feed(signal[:2000])
    with pytest.raises(BudgetError, match="outside"):
        s.set_budget(phi=0.95)
    with pytest.raises(BudgetError, match="not both"):
        s.set_budget(phi=0.5, mmac=1.0)
    assert s.stats.phi == 0.6                     # a refused request changes nothing
    assert s.set_budget(mmac=f["mmac_static"] + 1) == 0.0       # the static model fits
    assert s.set_budget() == model.cfg.loss.prune_target        # nominal
    s.reset()
    assert s.stats.phi == model.cfg.loss.prune_target           # a budget outlives reset


def test_stream_cli_budget(tmp_path, model, signal):
    from dyncp.audio import save_audio
    from dyncp.cli import main

    ckpt = save_model(model, tmp_path / "budget.pt")
    wav = save_audio(tmp_path / "in.wav", signal)
    js = tmp_path / "s.json"
    assert main(["stream", "-c", str(ckpt), str(wav), "-o", str(tmp_path / "o.wav"),
                 "--phi", "0", "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    fps = model.cfg.stft.frames_per_second
    assert r["phi"] == 0.0 and r["max_abs_diff_offline"] < 1e-5 and r["pruning_ratio"] == 0
    assert r["dynamic_mmac_per_s"] == pytest.approx(
        static_macs_per_frame(model.cfg) * fps / 1e6)
    mmac = feasible(model.cfg)["mmac_min"] * 1.2
    assert main(["stream", "-c", str(ckpt), str(wav), "-o", str(tmp_path / "o.wav"),
                 "--budget", str(mmac), "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    assert 0.1 < r["phi"] < 0.85 and r["max_abs_diff_offline"] < 1e-5
    assert stream_file(model, wav, engine="torch", mmac=mmac)["phi"] == r["phi"]
    plain = save_model(randomize_model(build_model(load_config("configs/tiny.toml"))),
                       tmp_path / "plain.pt")
    assert main(["stream", "-c", str(plain), str(wav), "-o", str(tmp_path / "o.wav"),
                 "--phi", "0.5"]) == 2


def test_a_governor_or_a_budget_not_both(model):
    from dyncp.governor import Governor

    f = feasible(model.cfg)
    with pytest.raises(BudgetError, match="not both"):
        Streamer(model, "sparse", phi=0.5, governor=Governor(mmac=f["mmac_min"] * 1.2))
    s = Streamer(model, "sparse", governor=Governor(mmac=f["mmac_min"] * 1.2))
    with pytest.raises(DyncpError, match="governor"):
        s.set_budget(phi=0.5)


def test_stream_cli_governor(model, tmp_path):
    """``dyncp stream --governor MMAC/s --window S``: the stream's spend is held at the target
    (its JSON carries the governor's statistics); a governor on a model without a run-time budget,
    a --cap without a governor, and a governor beside --phi are errors (exit 2), nothing written."""
    from dyncp.audio import save_audio
    from dyncp.cli import main

    ckpt = save_model(model, tmp_path / "budget.pt")
    rng = np.random.default_rng(3)
    n = 16000 * 6
    t = np.arange(n) / 16000
    sig = (0.3 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)
           + 0.05 * rng.standard_normal(n)).astype(np.float32)
    wav = save_audio(tmp_path / "in.wav", sig)
    f = feasible(model.cfg)
    target = 0.5 * (f["mmac_at_phi_min"] + f["mmac_min"])
    js = tmp_path / "g.json"
    assert main(["stream", "-c", str(ckpt), str(wav), "-o", str(tmp_path / "o.wav"),
                 "--governor", str(target), "--window", "2", "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    g = r["governor"]
    assert r["phi"] is None and r["max_abs_diff_offline"] is None
    assert g["target"] == pytest.approx(target) and g["unit"] == "MMAC/s"
    assert g["mean"] == pytest.approx(target, rel=0.03)
    assert g["mean"] == pytest.approx(r["dynamic_mmac_per_s"], rel=1e-6)
    assert g["window_mean_max"] is not None
    assert abs(g["window_mean_max"] / target - 1) < 0.05
    assert abs(g["window_mean_min"] / target - 1) < 0.05
    plain = save_model(randomize_model(build_model(load_config("configs/tiny.toml"))),
                       tmp_path / "plain.pt")
    out = tmp_path / "none.wav"
    assert main(["stream", "-c", str(plain), str(wav), "-o", str(out),
                 "--governor", str(target)]) == 2
    assert main(["stream", "-c", str(ckpt), str(wav), "-o", str(out), "--cap", "5"]) == 2
    with pytest.raises(SystemExit):
        main(["stream", "-c", str(ckpt), str(wav), "-o", str(out), "--phi", "0.5",
              "--governor", str(target)])
    assert not out.exists()

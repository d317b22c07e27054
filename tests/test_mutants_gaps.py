"""Tests written for mutants that survived `make mutants` (mutation testing, docs/testing.md).

Each test names the mutants it kills (mutmut's names, ``mutmut show NAME`` prints the change);
every one of them failed against its mutant when written. Tiny shapes and configs only: each test
runs in well under a second.
"""

from __future__ import annotations

import copy
import math
import re
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dyncp import macs
from dyncp.config import SURROGATES, GateConfig, LossConfig, STFTConfig, load_config
from dyncp.dsp import frame_snr_db, speech_mask, stft
from dyncp.losses import (active_level, contrast_loss, hard_frames, pruning_ratio,
                          pruning_ratio_per_item, si_sdr, si_sdr_loss, spectral_loss,
                          speech_usage_loss, total_loss, usage_from_ratios, usage_loss)
from dyncp.budget import feasible, phi_for
from dyncp.errors import AudioError, BudgetError, ConfigError, DyncpError
from dyncp.gates import Gate, heaviside, logistic_noise, pool_frames, pool_padding
from dyncp.governor import Governor
from dyncp.model import ConvFSENet, mask_pad, require_causal
from dyncp.runtime import SparseRuntime, _Packed
from dyncp.streaming import Streamer

from conftest import CONFIGS
from test_runtime import mags, run, torch_reference
from test_stream_budget import budget_model

torch.set_num_threads(1)

STFT = STFTConfig()                                       # 16 kHz, n_fft 512, hop 256


# -- dyncp/losses.py -------------------------------------------------------------------------------
def _frames(*amps: float) -> torch.Tensor:
    """One signal [N] of whole hops, each a constant amplitude (frame energy amp^2)."""
    return torch.cat([torch.full((STFT.hop,), float(a)) for a in amps])


def test_active_level_counts_frames_within_floor_db_of_each_items_loudest():
    """x_active_level 1, 37, 39, 42, 44, 45, 46, 48, 50, 56, 61, 19: the 40 dB floor (a frame
    at -38 dB counts, one at -40.5 dB and silence do not), per item of a batch."""
    a38, a405 = 10 ** (-38 / 20), 10 ** (-40.5 / 20)
    x = _frames(1.0, a38, a405, 0.0)
    level = active_level(torch.stack([x, 1e-3 * x]), STFT)
    assert level.shape == (2,)
    expect = math.sqrt((1.0 + a38 ** 2) / 2)
    assert level.tolist() == pytest.approx([expect, 1e-3 * expect], rel=1e-5)


def test_active_level_edges():
    """x_active_level 51 (>=), 64 (one active frame), 12 (one to two hops), 27, 28 (< one hop)."""
    # floor_db = 0: the loudest frames themselves count (energy >= threshold)
    assert active_level(_frames(1.0, 1.0, 0.5)[None], STFT, floor_db=0.0).item() == \
        pytest.approx(1.0)
    # a single active frame: its own RMS
    assert active_level(_frames(0.5, 0.0, 0.0)[None], STFT).item() == pytest.approx(0.5)
    # one and a half hops: one whole frame, the rest left out
    x = torch.zeros(1, STFT.hop + STFT.hop // 2)
    x[0, :STFT.hop] = 0.2
    assert active_level(x, STFT).item() == pytest.approx(0.2)
    # shorter than a hop: the RMS of every sample
    y = torch.full((1, 100), 1e-3)
    y[0, 0] = 0.5
    assert active_level(y, STFT).item() == pytest.approx(math.sqrt((0.25 + 99e-6) / 100),
                                                         rel=1e-5)


def _speechlike(n: int = 8000, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n) / 16000
    wav = torch.randn(batch, n, generator=g) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    wav[:, n // 3: n // 2] = 0.0
    return 0.1 * wav


def test_spectral_loss_values_and_defaults():
    """x_spectral_loss 1, 2 (defaults c = 0.3, mix = 0.3), 23 (eps), 33, 43 (squares), 46, 47
    ((1 - mix)): a copy at twice the gain costs (2^c - 1)^2 mean |S|^2c in both terms; the
    sign-flipped copy only in the complex one, 4 mean |S|^2c."""
    clean = _speechlike()
    level = active_level(clean, STFT).unsqueeze(-1)
    s2c = stft(clean / level, STFT).abs().pow(0.6).mean().item()
    assert spectral_loss(2 * clean, clean, STFT).item() == pytest.approx((2 ** 0.3 - 1) ** 2 * s2c,
                                                                         rel=1e-3)
    assert spectral_loss(-clean, clean, STFT).item() == pytest.approx(0.3 * 4 * s2c, rel=1e-3)


def test_si_sdr_is_per_item_and_the_loss_its_negative_mean():
    """x_si_sdr 4, 13 (means removed per item), 48 (silence: 0 dB, not NaN);
    x_si_sdr_loss 1 (the sign)."""
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(2, 4000, generator=g, dtype=torch.float64)
    est = ref + torch.randn(2, 4000, generator=g, dtype=torch.float64) * torch.tensor([[0.1],
                                                                                        [1.0]],
                                                                                       dtype=torch.float64)
    est[1] += 3.0
    ref[0] -= 2.0
    both = si_sdr(est, ref)
    alone = torch.cat([si_sdr(est[i:i + 1], ref[i:i + 1]) for i in range(2)])
    assert torch.allclose(both, alone, rtol=0, atol=1e-9)
    assert both[0] > both[1] + 15
    assert si_sdr_loss(est, ref).item() == pytest.approx(-both.mean().item())
    assert si_sdr(torch.zeros(1, 64), torch.zeros(1, 64)).item() == 0.0


def test_pruning_ratio_errors_and_edges():
    """x_pruning_ratio 4, 28 (one valid frame of a one-channel gate);
    x_pruning_ratio_per_item 2, 3, 4 (its message); x_usage_from_ratios 5, 8 (the target in the
    ratios' precision), 35 (one counted item); x_usage_loss 11, 14 (valid frames passed on)."""
    with pytest.raises(ValueError, match=r"^pruning_ratio needs gate tensors \(the model"):
        pruning_ratio([])
    with pytest.raises(ValueError, match=r"^pruning_ratio_per_item needs gate tensors \(the"):
        pruning_ratio_per_item([])
    g = torch.ones(1, 1, 3)
    valid = torch.tensor([[True, False, False]])
    assert pruning_ratio([g], valid=valid).item() == 0.0
    assert usage_from_ratios(torch.tensor([0.3], dtype=torch.float64), 0.3).item() == 0.0
    ratios = torch.tensor([[0.2, 0.9], [0.4, 0.9]])                     # [n_blocks, B]
    items = torch.tensor([True, False])
    assert usage_from_ratios(ratios, torch.tensor([0.5, 0.5]), items=items).item() == \
        pytest.approx(0.04)
    gp = torch.ones(2, 4, 6)
    gp[1, :, 3:] = 0.0                                                   # padded frames
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 3:] = False
    assert usage_loss([gp], 0.0, valid=valid).item() == 0.0


def _gates(phi_bt: torch.Tensor, blocks: int = 2, h: int = 20) -> list[torch.Tensor]:
    """Binary gates [B, H, T] per block whose share of closed channels per frame is phi_bt."""
    off = (phi_bt * h).round().long()
    g = (torch.arange(h).view(1, h, 1) >= off.unsqueeze(1)).float()
    return [g.clone() for _ in range(blocks)]


def test_speech_usage_loss_single_frames_and_items():
    """x_speech_usage_loss 40, 50 (Φ over one frame), 68, 74 (a term of one frame counts), 85
    (one item), 63 (an item without speech frames), 88, 89, 93 (Φ of the counted items only),
    10, 12, 13 (the shape message)."""
    # one item, one speech frame (Φ 0.25) and one non-speech frame (Φ 0.5); target 0.5, spread
    # 0.2: non-speech frames aim at 0.7, speech frames at 0.3
    speech = torch.tensor([[True, False]])
    loss, phi = speech_usage_loss(_gates(torch.tensor([[0.25, 0.5]])), speech,
                                  torch.tensor([0.5]), 0.2)
    assert loss.item() == pytest.approx(0.05 ** 2 + 0.2 ** 2)
    assert phi.item() == pytest.approx(0.375)
    # no speech frame at all: the non-speech term alone, finite
    loss, _ = speech_usage_loss(_gates(torch.tensor([[0.5, 0.5]])), torch.tensor([[False, False]]),
                                torch.tensor([0.5]), 0.2)
    assert loss.item() == pytest.approx(0.2 ** 2)
    # two items, the second not counted: Φ and the loss are the first item's
    phis = torch.tensor([[0.25, 0.5], [0.9, 0.9]])
    sp2 = torch.tensor([[True, False], [True, False]])
    loss, phi = speech_usage_loss(_gates(phis), sp2, torch.tensor([0.5, 0.5]), 0.2,
                                  items=torch.tensor([True, False]))
    assert loss.item() == pytest.approx(0.05 ** 2 + 0.2 ** 2)
    assert phi.item() == pytest.approx(0.375)
    with pytest.raises(ValueError, match=re.escape("[B, T] = (2, 2)")):
        speech_usage_loss(_gates(phis), sp2[:, :1], torch.tensor([0.5, 0.5]), 0.2)


def test_usage_targets_follow_the_ratios_device_and_precision():
    """x_usage_from_ratios 6, 9 (a [B] target is moved to the ratios' device: the meta device
    stands in for an accelerator); x_speech_usage_loss 58 (a float64 target leaves the loss and
    Φ in the gates' precision)."""
    ratios = torch.full((2, 3), 0.5, device="meta")
    assert usage_from_ratios(ratios, torch.tensor([0.5, 0.4, 0.3])).device.type == "meta"
    loss, phi = speech_usage_loss(_gates(torch.tensor([[0.25, 0.5]])),
                                  torch.tensor([[True, False]]),
                                  torch.tensor([0.5], dtype=torch.float64), 0.2)
    assert loss.dtype == phi.dtype == torch.float32


def test_total_loss_passes_compress_and_mix():
    """x_total_loss 10, 11: the loss config's compress and mix reach the spectral loss."""
    clean = _speechlike()
    est = 0.7 * clean + 0.01
    out = total_loss(est, clean, [], LossConfig(compress=0.5, mix=0.2), STFT)
    assert out["se"].item() == pytest.approx(spectral_loss(est, clean, STFT, 0.5, 0.2).item(),
                                             rel=1e-6)


def test_total_loss_per_block_mode():
    """x_total_loss 120, 122, 123 (per-block ratios), 132 (usage_mode passed on)."""
    clean = _speechlike()
    gates = [torch.ones(2, 8, 5), torch.zeros(2, 8, 5)]                # Φ_b = 0 and 1
    out = total_loss(clean, clean, gates, LossConfig(prune_target=0.5, usage_mode="per_block"),
                     STFT)
    assert out["usage"].item() == pytest.approx(0.25)                  # mean of 0.25 and 0.25
    assert out["phi"].item() == 0.5


def test_total_loss_budget_targets_per_item():
    """x_total_loss 82, 83 (a [B] target), 87, 95, 99 (items at Φ = 0 do not count), 110, 111
    (the weighted sum), 104, 108 (every item at Φ = 0: Φ is 0, not NaN)."""
    clean = _speechlike()
    g = torch.ones(2, 10, 5)
    g[0, :4] = 0.0                                                     # item 0: Φ 0.4
    g[1, :8] = 0.0                                                     # item 1: Φ 0.8
    cfg = LossConfig(usage_weight=3.0)
    out = total_loss(clean, clean, [g], cfg, STFT, target=torch.tensor([0.5, 0.0]))
    assert out["usage"].item() == pytest.approx(0.01)                  # item 0 only
    assert out["phi"].item() == pytest.approx(0.4)
    assert out["loss"].item() == pytest.approx(out["se"].item() + 3.0 * 0.01, rel=1e-6)
    none = total_loss(clean, clean, [g], cfg, STFT, target=torch.tensor([0.0, 0.0]))
    assert none["phi"].item() == 0.0 and none["usage"].item() == 0.0


def test_total_loss_speech_target():
    """x_total_loss 36 (the ramp's target), 38, 40, 41, 42, 43, 45, 46, 65, 70 (budget items at
    Φ = 0 do not count), 59, 60 (the "phi" key), 75, 76, 77 (the weighted sum)."""
    clean = _speechlike()
    t_frames = speech_mask(clean, STFT).shape[-1]
    phis = torch.linspace(0.1, 0.9, t_frames).expand(2, -1).clone()
    phis[1] = 0.95
    gates = _gates(phis)
    cfg = LossConfig(prune_target=0.75, usage_weight=2.0, frame_target="speech", frame_spread=0.2)
    sp = speech_mask(clean, STFT)
    # the ramp's scalar target replaces prune_target
    out = total_loss(clean, clean, gates, cfg, STFT, target=0.5)
    ref, ref_phi = speech_usage_loss(gates, sp, torch.full((2,), 0.5), 0.2)
    assert out["usage"].item() == pytest.approx(ref.item(), rel=1e-6)
    assert out["phi"].item() == pytest.approx(ref_phi.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["se"].item() + 2.0 * ref.item(), rel=1e-6)
    # a budget model's [B] targets: the item at Φ = 0 does not count
    target = torch.tensor([0.6, 0.0])
    out = total_loss(clean, clean, gates, cfg, STFT, target=target)
    ref, ref_phi = speech_usage_loss(gates, sp, target, 0.2, items=target > 0)
    assert out["usage"].item() == pytest.approx(ref.item(), rel=1e-6)
    assert out["phi"].item() == pytest.approx(ref_phi.item(), rel=1e-6)


# -- dyncp/macs.py ---------------------------------------------------------------------------------
def test_summary_is_exactly_what_info_prints(paper_cfg):
    """x_summary 8-59 (keys, values and the note of `dyncp info --json`), 33, 35 (a static model
    gates no channel)."""
    s = macs.summary(paper_cfg, params=7)
    layers = dict(macs.static_layer_macs(paper_cfg))
    assert s == {
        "name": "paper", "params": 7, "static_macs_per_frame": 662528,
        "gate_macs_per_frame": 55296, "static_mmac_per_s": 41.408,
        "gate_overhead_fraction": pytest.approx(55296 / 662528),
        "prunable_fraction": pytest.approx(1 - 65792 / 662528), "per_channel_macs": 259,
        "gated_channels_per_frame": 2304, "frames_per_second": 62.5,
        "receptive_field_frames": 43, "gate_receptive_field_frames": 70, "latency_ms": 32.0,
        "causal": True, "gated": True, "layers": layers,
        "note": "MACs exclude bias, normalisation, activations and gate pooling",
        "dynamic_macs_per_frame_at_target": pytest.approx(270272)}
    static = macs.summary(load_config(CONFIGS / "static.toml"))
    assert static["gated_channels_per_frame"] == 0 and static["gated"] is False
    assert "dynamic_macs_per_frame_at_target" not in static


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("pool", [1, 2, 3, 4, 5])
def test_non_causal_latency_is_the_models_look_ahead(pool, gated):
    """x_latency_ms 20, 21: the look-ahead is the right padding the model really uses, of the
    depthwise convolutions and (gated) of the gates' centred pooling, for odd and even L."""
    cfg = load_config(CONFIGS / "tiny.toml", ["model.causal=false", f"gate.pool={pool}",
                                              f"gate.enabled={str(gated).lower()}"])
    model = ConvFSENet(cfg)
    ahead = sum(b._dw_padding()[1] + (pool_padding(pool, False)[1] if gated else 0)
                for b in model.blocks)
    s = cfg.stft
    assert macs.latency_ms(cfg) == pytest.approx(1000.0 * (s.n_fft + ahead * s.hop)
                                                 / s.sample_rate)


def test_dynamic_macs_stays_on_the_gates_device_and_says_what_to_use(tiny_cfg):
    """x_dynamic_macs 22, 27, 31, 36, 38, 43, 45 (results on the gates' device: the meta device
    stands in for an accelerator), 4, 5, 6 (the message)."""
    m = tiny_cfg.model
    gates = [torch.ones(2, m.hidden, 5, device="meta") for _ in range(m.n_blocks)]
    d = macs.dynamic_macs(tiny_cfg, gates)
    assert d.per_frame.device.type == d.valid.device.type == "meta"
    d = macs.dynamic_macs(tiny_cfg, gates, lengths=[5, 3])
    assert d.valid.device.type == "meta"
    with pytest.raises(ValueError, match=r"^dynamic_macs needs gate tensors; for a static model "
                                         r"use static_macs_per_frame \(every channel is always "
                                         r"on\)$"):
        macs.dynamic_macs(tiny_cfg, [])


def test_phi_meter_is_frame_weighted_per_block_and_checks_its_input():
    """xǁPhiMeterǁ__init__ 3, 5; add 2, 21, 26-36 (accumulation, the file's Φ, a file without
    frames), 8, 13, 16 (a one-block model); per_block 1-7."""
    m = macs.PhiMeter(2, 4)
    assert m.value == 0.0 and m.per_block() == [0.0, 0.0]
    assert m.add([torch.ones(1, 4, 3), torch.zeros(1, 4, 3)]) == 0.5
    g = np.zeros((2, 4, 1), np.uint8)                 # numpy [n_blocks, H, T]
    g[0] = 1
    g[1, :1] = 1
    assert m.add(g) == pytest.approx(1 - 5 / 8)
    # frame-weighted: block 0 had 16 of 16 channel-frames on, block 1 one of 16
    assert m.value == pytest.approx(1 - 17 / 32)
    assert m.per_block() == pytest.approx([0.0, 1 - 1 / 16])
    assert m.add([torch.ones(1, 4, 0), torch.ones(1, 4, 0)]) == 0.0
    assert m.value == pytest.approx(1 - 17 / 32)
    with pytest.raises(ValueError, match=r"^PhiMeter: 1 gate tensors for 2 blocks$"):
        m.add([torch.ones(1, 4, 3)])
    one = macs.PhiMeter(1, 4)
    assert one.add([torch.zeros(2, 4, 5)]) == 1.0
    assert one.add(np.ones((1, 4, 5), np.uint8)) == 0.0
    assert one.value == pytest.approx(1 - 20 / 60)     # 10 frames at Φ = 1, 5 at Φ = 0


# -- dyncp/gates.py --------------------------------------------------------------------------------
def test_logistic_noise_is_clamped_and_scaled(monkeypatch):
    """x_logistic_noise 2, 3, 5, 8, 9 (u kept inside [1e-6, 1 - 1e-6]: finite noise), 11."""
    monkeypatch.setattr(torch, "rand_like",
                        lambda like: torch.tensor([0.0, 1.0, 0.5, 0.25], dtype=like.dtype))
    n = logistic_noise(torch.empty(4, dtype=torch.float64), 2.0)
    lo = math.log(1e-6) - math.log1p(-1e-6)
    assert n.tolist() == pytest.approx([2 * lo, -2 * lo, 0.0,
                                        2 * (math.log(0.25) - math.log(0.75))])


def _spread_gate(**kw) -> Gate:
    torch.manual_seed(0)
    gate = Gate(12, 24, GateConfig(reduction=4, **kw), causal=True).train()
    with torch.no_grad():                                  # scores spread across the window
        gate.score2.weight.normal_(0.0, 0.4)
        gate.score2.bias.uniform_(-0.5, 0.5)
    return gate


@pytest.mark.parametrize("frozen", [None, "h", "score1.weight", "score1.bias", "score2.weight",
                                    "score2.bias"])
def test_training_gate_gradients_at_pool_2_and_with_one_input_frozen(frozen):
    """xǁ_GateTrainǁbackward 28, 69, 92, 110 (each gradient computed when its own input needs
    it), x__moving_average_adjoint 2 (L = 2): the training gate's hand-written backward against
    the readable path, every input but ``frozen`` trained."""
    gate = _spread_gate(pool=2, surrogate="ste_clipped")
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(3, 12, 19, generator=g), torch.randn(3, 24, 19, generator=g)
    grads = []
    for readable in (False, True):
        hh = h.clone().requires_grad_(frozen != "h")
        for name, p in gate.named_parameters():
            p.grad = None
            p.requires_grad_(name != frozen)
        mask = gate.binarize(gate.scores(hh)) if readable else gate(hh)
        (mask * w).sum().backward()
        grads.append({"h": hh.grad, **{n: p.grad for n, p in gate.named_parameters()}})
    for name, got in grads[0].items():
        if name == frozen:
            assert got is None
        else:
            torch.testing.assert_close(got, grads[1][name], rtol=1e-5, atol=1e-6)


def test_training_gate_floor_of_one_and_no_noise_draws():
    """xǁ_GateTrainǁforward 35 (min_active = 1 keeps one channel), 25 (a gate without noise draws
    no random numbers: training stays reproducible)."""
    gate = _spread_gate(pool=2, min_active=1)
    with torch.no_grad():
        gate.score2.bias.fill_(-100.0)                     # every score negative
    h = torch.randn(2, 12, 6, requires_grad=True)
    rng = torch.get_rng_state()
    mask = gate(h)
    assert torch.equal(torch.get_rng_state(), rng)
    assert int(mask.sum(1).min()) == 1


def test_gate_messages():
    """x_pool_frames 11, 12, 13; x_heaviside 7; xǁGateǁbias 4, 5, 6: each error says what is
    wrong, with the numbers."""
    with pytest.raises(ValueError, match=r"^pool_frames: 2 frames, need at least pool = 3$"):
        pool_frames(torch.zeros(1, 4, 2), 3)
    with pytest.raises(ValueError, match=re.escape(f"choose from {', '.join(SURROGATES)}")):
        heaviside(torch.zeros(3), "nope")
    gate = Gate(4, 8, GateConfig(reduction=2, budget=True), causal=True)
    with pytest.raises(ValueError, match=r"^a budget gate needs phi \(the requested pruning "
                                         r"ratio\)$"):
        gate.bias()


def test_sigmoid_surrogate_beta_default_and_from_the_config():
    """x_heaviside 3 (beta defaults to 4), xǁGateǁbinarize 22 (the gate passes its own beta)."""
    s = torch.linspace(-1.5, 1.5, 7, dtype=torch.float64, requires_grad=True)
    heaviside(s, "sigmoid").sum().backward()
    sig = torch.sigmoid(4.0 * s.detach())
    torch.testing.assert_close(s.grad, 4.0 * sig * (1 - sig))
    gate = Gate(4, 8, GateConfig(reduction=2, surrogate="sigmoid", beta=2.0), causal=True)
    s.grad = None
    gate.binarize(s).sum().backward()
    sig = torch.sigmoid(2.0 * s.detach())
    torch.testing.assert_close(s.grad, 2.0 * sig * (1 - sig))


def test_budget_gate_bias_clamps_the_code_and_keeps_its_dtype():
    """xǁGateǁbias 9, 10, 12, 15, 16 (a Φ code of 0 or 1 gives a finite threshold, as
    logit(1e-3) and logit(1 - 1e-3)), 13 (the code is taken in the bias's dtype)."""
    gate = Gate(4, 8, GateConfig(reduction=2, budget=True), causal=True)
    b = gate.bias(torch.tensor([0.0, 1.0]))
    slope = F.softplus(gate.budget_slope.detach())
    want = torch.stack([gate.score2.bias - slope * math.log(1e-3 / (1 - 1e-3)),
                        gate.score2.bias - slope * math.log((1 - 1e-3) / 1e-3)]).detach()
    torch.testing.assert_close(b.detach(), want)
    assert gate.bias(torch.tensor([0.5], dtype=torch.float64)).dtype == torch.float32


def test_a_stochastic_gate_without_noise_draws_no_random_numbers():
    """xǁGateǁbinarize 8: noise = 0 adds nothing and draws nothing (training, no autograd)."""
    gate = Gate(4, 8, GateConfig(reduction=2, surrogate="stochastic", noise=0.0),
                causal=True).train()
    h = torch.randn(1, 4, 5)
    rng = torch.get_rng_state()
    with torch.no_grad():
        gate(h)
    assert torch.equal(torch.get_rng_state(), rng)


# -- dyncp/model.py --------------------------------------------------------------------------------
def test_mask_pad_writes_every_element_and_trains_u_alone(monkeypatch):
    """xǁ_MaskPadǁforward 16 (the right padding is written, not left to the allocator),
    xǁ_MaskPadǁbackward 9 (u's gradient when the mask needs none: forced masks)."""
    u = torch.randn(2, 3, 4, requires_grad=True)
    g = (torch.rand(2, 3, 4) > 0.5).float()
    new_empty = torch.Tensor.new_empty
    monkeypatch.setattr(torch.Tensor, "new_empty",
                        lambda self, *a, **k: new_empty(self, *a, **k).fill_(float("nan")))
    out = mask_pad(u, g, (2, 5))
    monkeypatch.undo()
    torch.testing.assert_close(out, F.pad(u * g, (2, 5)))
    up = torch.randn(out.shape)
    (out * up).sum().backward()
    torch.testing.assert_close(u.grad, up[..., 2:6] * g)


def test_block_step_runs_its_gate_by_default(tiny_cfg, randomize):
    """xǁGatedBlockǁstep 1: ``gated`` defaults to True."""
    model = randomize(ConvFSENet(tiny_cfg))
    blk = model.blocks[0]
    with torch.no_grad():
        _, g, _ = blk.step(torch.randn(1, tiny_cfg.model.residual), blk.initial_state(1))
    assert g is not None and g.shape == (1, tiny_cfg.model.hidden)


def test_block_step_refuses_a_non_causal_block_and_forces_items_on(tiny_cfg, randomize):
    """xǁGatedBlockǁstep 3, 4, 5 (the message), 38, 39 (``force_on`` [B] for a batch of two)."""
    nc = ConvFSENet(load_config(CONFIGS / "tiny.toml", ["model.causal=false"]))
    blk = nc.blocks[0]
    with pytest.raises(RuntimeError, match=r"^step\(\) needs a causal block$"):
        blk.step(torch.zeros(1, tiny_cfg.model.residual), blk.initial_state(1))
    model = randomize(ConvFSENet(tiny_cfg), gate_bias=-0.5)
    blk = model.blocks[0]
    h = torch.randn(2, tiny_cfg.model.residual)
    with torch.no_grad():
        _, free, _ = blk.step(h, blk.initial_state(2))
        _, forced, _ = blk.step(h, blk.initial_state(2), force_on=torch.tensor([True, False]))
    assert forced.shape == free.shape == (2, tiny_cfg.model.hidden)
    assert bool(forced[0].all()) and not bool(free[0].all())
    assert torch.equal(forced[1], free[1])


def test_initial_state_shapes_device_and_dtype(tiny_cfg):
    """xǁGatedBlockǁinitial_state 6 (no pooling cache without a gate), 10, 11, 15, 16, 22, 23,
    27, 28 and xǁConvFSENetǁinitial_state 1, 3, 4, 7 (batch 1 by default; the device and dtype
    asked for)."""
    model = ConvFSENet(tiny_cfg)
    st = model.initial_state()
    assert [tuple(t.shape) for t in st[:2]] == [(1, 16, 2), (1, 32, 2)]
    st = model.initial_state(2, device="meta", dtype=torch.float64)
    assert all(t.device.type == "meta" and t.dtype == torch.float64 for t in st)
    static = ConvFSENet(load_config(CONFIGS / "tiny.toml", ["gate.enabled=false"]))
    assert tuple(static.initial_state()[0].shape) == (1, 16, 0)


def test_model_step_messages_and_traced_inputs(tiny_cfg, bmodel):
    """xǁConvFSENetǁstep 3, 17, 18, 19 (the messages), 37, 42 (``force_on`` reaches the blocks)."""
    nc = ConvFSENet(load_config(CONFIGS / "tiny.toml", ["model.causal=false"]))
    with pytest.raises(RuntimeError, match=r"^step\(\) needs a causal model \(model.causal = "
                                           r"true\)$"):
        nc.step(torch.zeros(1, tiny_cfg.stft.n_freq), nc.initial_state())
    mag = torch.rand(2, tiny_cfg.stft.n_freq)
    with pytest.raises(ValueError, match=r"^step: phi = 0 for some items only; step each budget "
                                         r"separately$"):
        bmodel.step(mag, bmodel.initial_state(2), phi=torch.tensor([0.0, 0.5]))
    with torch.no_grad():
        _, gates, _ = bmodel.step(mag[:1], bmodel.initial_state(), code=torch.tensor([0.9]),
                                  force_on=torch.tensor([True]))
    assert all(bool(g.all()) for g in gates)


# -- dyncp/runtime.py ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bmodel():
    """A randomised, calibrated tiny budget model (tests/test_stream_budget.py)."""
    return budget_model()


def test_a_copied_runtime_state_continues_like_the_original(tiny_cfg, randomize):
    """xǁRuntimeStateǁcopy 7 (the float buffer copied), 11 (the gates)."""
    rt = SparseRuntime(randomize(ConvFSENet(tiny_cfg), gate_bias=0.0))
    mags = np.random.default_rng(0).random((6, tiny_cfg.stft.n_freq)).astype(np.float32)
    st = rt.initial_state()
    for m in mags[:3]:
        rt.step(m, st)
    cp = st.copy()
    for m in mags[3:]:
        (a, ga), (b, gb) = rt.step(m, st), rt.step(m, cp)
        assert np.array_equal(a, b) and np.array_equal(ga, gb)


def test_runtime_step_takes_float64_as_float32(tiny_cfg, randomize):
    """xǁSparseRuntimeǁstep 3, 5: the frame is converted to float32, as documented."""
    rt = SparseRuntime(randomize(ConvFSENet(tiny_cfg), gate_bias=0.0))
    mag = np.random.default_rng(1).random(tiny_cfg.stft.n_freq)
    a, _ = rt.step(mag.astype(np.float32), rt.initial_state())
    b, _ = rt.step(mag, rt.initial_state())
    assert np.array_equal(a, b)


def test_runtime_thresholds_are_cached_float32_capped_and_clamped(bmodel):
    """xǁSparseRuntimeǁthresholds 2, 3, 40 (cached), 23 (float32), 30, 36 (+inf past the cap),
    38, 39 (at most 1024 cached), 14, 15, 17, 19, 20 (the Φ code clamped into [1e-3, 1 - 1e-3]
    as Gate.bias does)."""
    rt = SparseRuntime(bmodel)
    th = rt.thresholds(0.5)
    assert th.dtype == np.float32 and rt.thresholds(0.5) is th
    capped = rt.thresholds(0.5, cap=5)
    assert (np.isposinf(capped).sum(axis=1) == rt.hidden - 5).all()
    most = 0
    for i in range(1100):
        rt.thresholds(0.2 + i * 1e-4)
        most = max(most, len(rt._thresholds))
    assert most == 1024
    # a calibration table whose codes reach 0 and 1 at the ends of the range
    m = budget_model()
    with torch.no_grad():
        m.budget_table[1] = torch.linspace(0.0, 1.0, m.budget_table.shape[1])
    rt = SparseRuntime(m)
    slope = rt._slope.numpy()
    g = m.cfg.gate
    logit = lambda p: math.log(p / (1 - p))                                      # noqa: E731
    np.testing.assert_allclose(rt.thresholds(g.budget_min), slope * logit(1e-3), rtol=1e-5)
    np.testing.assert_allclose(rt.thresholds(g.budget_max), slope * logit(1 - 1e-3), rtol=1e-5)


def test_runtime_set_budget_defaults_to_its_own_state_and_checks(bmodel, tiny_cfg, randomize):
    """xǁSparseRuntimeǁset_budget 2 (the runtime's own state), 8, 11 (MMAC/s), 30, 32 (the
    message), 12-18 (a model without a budget: nothing to set, a cap refused)."""
    rt = SparseRuntime(bmodel)
    assert rt.set_budget(phi=0.4) == 0.4 and rt.state.phi == 0.4
    f = feasible(bmodel.cfg)
    mmac = 0.5 * (f["mmac_min"] + f["mmac_at_phi_min"])
    want = phi_for(bmodel.cfg, None, mmac)
    assert 0.1 < want < 0.85
    assert rt.set_budget(mmac=mmac) == want and rt.state.phi == want
    with pytest.raises(BudgetError, match=r"^a hard cap needs a budget Φ > 0 \(Φ = 0 computes "
                                          r"every channel\)$"):
        rt.set_budget(phi=0.0, cap=3)
    plain = SparseRuntime(randomize(ConvFSENet(tiny_cfg)))
    assert plain.set_budget() is None
    with pytest.raises(BudgetError, match="no run-time budget"):
        plain.set_budget(cap=4)


def test_packed_buffers_are_float32_and_64_byte_aligned(tiny_cfg, randomize):
    """xǁ_Packedǁ__init__ 1, 3, 12, 24, 26, 31, xǁSparseRuntimeǁ_pack 39: every array of a
    weight or state buffer starts
    on a 64-byte line, in float32 (many small buffers: malloc's 16-byte alignment varies)."""
    rt = SparseRuntime(randomize(ConvFSENet(tiny_cfg)))
    packs = [rt._weights, rt.state._packed] + [
        _Packed(np.float32, {"a": (3,), "b": (5, 7), "c": (1,)}) for _ in range(24)]
    for p in packs:
        assert p.buf.dtype == np.float32
        for v in p.views.values():
            assert v.ctypes.data % 64 == 0 and v.dtype == np.float32


def test_runtime_state_counts_frames_and_has_no_budget(tiny_cfg, randomize):
    """xǁRuntimeStateǁ__init__ 5, 6 (``t``: one int64, the frames processed), 7, 8 (``phi`` and
    ``cap`` None for a model without a budget)."""
    rt = SparseRuntime(randomize(ConvFSENet(tiny_cfg)))
    st = rt.initial_state()
    assert st.phi is None and st.cap is None and st.t.shape == (1,)
    for _ in range(3):
        rt.step(np.ones(tiny_cfg.stft.n_freq, np.float32), st)
    assert int(st.t[0]) == 3


def test_runtime_refusals_name_the_modes_and_the_runtime(tiny_cfg):
    """xǁSparseRuntimeǁ__init__ 9 (the modes listed), 12, 15, 16 (what needs a causal model)."""
    with pytest.raises(ValueError, match=r"^SparseRuntime mode must be one of sparse, dense, got "
                                         r"'fast'$"):
        SparseRuntime(ConvFSENet(tiny_cfg), mode="fast")
    nc = ConvFSENet(load_config(CONFIGS / "tiny.toml", ["model.causal=false"]))
    with pytest.raises(ConfigError, match=r"^model.causal: the streaming runtime needs a causal "
                                          r"model"):
        SparseRuntime(nc)


def test_runtime_equals_torch_with_a_batchnorm_scale_of_zero(tiny_cfg, randomize):
    """xǁSparseRuntimeǁ_pack 85, 89, 97, 104, 112: a channel whose second BatchNorm scale is 0
    cannot be folded into pw2 (its bias would be divided by 0); it keeps its own scale."""
    model = randomize(ConvFSENet(tiny_cfg))
    with torch.no_grad():
        model.blocks[0].bn2.weight[:3] = 0.0
    x = mags(tiny_cfg.stft.n_freq, 20)
    ref_mask, ref_gates = torch_reference(model, x)
    mask, gates = run(SparseRuntime(model, "sparse"), x)
    assert np.abs(mask - ref_mask).max() < 1e-4
    assert np.array_equal(gates, ref_gates)


@pytest.mark.parametrize("widths", [["model.residual=20", "model.hidden=12"],
                                    ["gate.reduction=48"]])
def test_runtime_equals_torch_with_a_residual_or_score_stack_wider_than_hidden(widths, randomize):
    """xǁSparseRuntimeǁ__init__ 62, 64 (scratch rows as wide as the widest of B, H and R), _pack 9
    (a channel's row holds 2B + k + 8 numbers: B = 20, k = 3 needs 64, not 48)."""
    torch.manual_seed(0)
    model = randomize(ConvFSENet(load_config(CONFIGS / "tiny.toml", widths)))
    x = mags(model.cfg.stft.n_freq, 20)
    ref_mask, ref_gates = torch_reference(model, x)
    mask, gates = run(SparseRuntime(model, "sparse"), x)
    assert np.abs(mask - ref_mask).max() < 1e-4
    assert np.array_equal(gates, ref_gates)


def test_a_hard_cap_keeps_the_channels_that_open_first_at_the_top_of_the_range(bmodel):
    """xǁSparseRuntimeǁ_budget_init 15, 19, 26, 29, 18, 20, 27, 28 (the last four with a
    calibration whose code reaches 1 at budget_max, clamped as Gate.bias clamps it): under a cap,
    each block keeps the channels whose threshold on the score without its bias is lowest at
    budget_max."""
    edge = copy.deepcopy(bmodel)
    with torch.no_grad():
        edge.budget_table[1] = torch.linspace(0.0, 1.0, edge.budget_table.shape[1])
    g = bmodel.cfg.gate
    for model in (bmodel, edge):
        rt = SparseRuntime(model)
        top = rt.thresholds(g.budget_max) - rt.gb2                   # [n_blocks, H]
        for cap in (1, 5, 20):
            kept = np.isfinite(rt.thresholds(0.5 * (g.budget_min + g.budget_max), cap=cap))
            want = np.zeros_like(kept)
            np.put_along_axis(want, np.argsort(top, axis=1, kind="stable")[:, :cap], True, axis=1)
            assert np.array_equal(kept, want), cap


# -- dyncp/streaming.py ----------------------------------------------------------------------------
def _wav(n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(3)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * rng.standard_normal(n)).astype(np.float32)


def test_a_per_frame_stream_gives_every_sample_times_each_frame_and_refuses_nan(bmodel):
    """xǁStreamerǁ_run_frames 71, 73, 74 (the output of every frame of one feed, a feed of one
    frame included), 48 (each frame's time), 1, 3 (NaN refused, with its message)."""
    wav = _wav()
    ref = Streamer(bmodel, "sparse").process(wav)
    s = Streamer(bmodel, "sparse", record_macs=True, record_times=True)
    out = np.concatenate([s.feed(wav), s.flush()])
    np.testing.assert_array_equal(out, ref)
    assert len(s.stats.times) == s.stats.frames > 10 and 0 <= max(s.stats.times) < 10
    # a feed of n_fft samples takes two per-frame calls and only the second has output
    # (_run_frames 74: not the first call's output alone); one of n_fft + hop gives two hops
    hop = bmodel.cfg.stft.hop
    for n, hops in ((bmodel.cfg.stft.n_fft, 1), (bmodel.cfg.stft.n_fft + hop, 2)):
        got = Streamer(bmodel, "sparse", record_macs=True).feed(wav[:n])
        np.testing.assert_array_equal(got, Streamer(bmodel, "sparse").feed(wav[:n]))
        assert got.shape == (hops * hop,)
    s.reset()
    with pytest.raises(AudioError, match=r"^Streamer.feed: 1 sample\(s\) are NaN or Inf$"):
        s.feed(np.array([0.0, np.nan], np.float32))


@pytest.mark.parametrize("engine", ["torch", "sparse"])
def test_a_stream_governed_by_time_measures_each_frame(bmodel, engine):
    """xǁStreamerǁ_run_frames 62, _run_torch 110: a time target's governor is given each frame's
    seconds."""
    gov = Governor(us=1e6)
    Streamer(bmodel, engine, governor=gov).process(_wav(2000))
    assert 0 < gov.stats()["mean"] < 1e6


@pytest.mark.parametrize("phi", [None, 0.0])
def test_torch_engine_gates_are_uint8_and_times_one_per_frame(bmodel, phi):
    """xǁStreamerǁ_run_torch 82, 87, 89 (uint8 gates, also at Φ = 0 where every channel is on),
    100, 105 (one time per frame, in seconds)."""
    s = Streamer(bmodel, "torch", record_times=True, phi=phi)
    s.process(_wav(2000))
    assert s.gates.dtype == np.uint8 and s.gates.shape[-1] == s.stats.frames
    assert len(s.stats.times) == s.stats.frames and 0 <= max(s.stats.times) < 10
    if phi == 0.0:
        assert s.gates.all()


def test_a_per_frame_stream_without_gate_recording_keeps_no_gate_log(bmodel):
    """xǁStreamerǁ_run_frames 58: per-frame streaming (here for the MACs of each frame) with
    ``record_gates=False`` appends nothing per frame (memory stays flat over hours)."""
    s = Streamer(bmodel, "sparse", record_gates=False, record_macs=True)
    s.process(_wav(3000))
    assert s.stats.frames > 10 and len(s.stats.frame_macs) == s.stats.frames
    assert s._gates == []
    assert s.gates.shape == (bmodel.cfg.model.n_blocks, bmodel.cfg.model.hidden, 0)


def test_process_feeds_the_chunks_it_is_asked_for(tiny_cfg, randomize):
    """xǁStreamerǁprocess 1 (default: one feed), 5, 8 (chunks of ``chunk``, 1 included)."""
    s = Streamer(randomize(ConvFSENet(tiny_cfg)), "sparse")
    calls, feed = [], s.feed
    s.feed = lambda x: (calls.append(len(x)), feed(x))[1]
    wav = _wav(300)
    s.process(wav)
    assert calls == [300]
    calls.clear()
    s.process(wav, chunk=100)
    assert calls == [100, 100, 100]
    calls.clear()
    s.process(wav[:5], chunk=1)
    assert calls == [1] * 5


def test_streamer_attributes_and_defaults(tiny_cfg, randomize):
    """xǁStreamerǁ__init__ 2, 3 (record_times and record_macs off by default), 36-39 (``model``:
    the caller's model, None for a shared runtime), 46 (``window``: the analysis window)."""
    m = randomize(ConvFSENet(tiny_cfg))
    for engine in ("torch", "sparse"):
        s = Streamer(m, engine)
        s.process(_wav(1500))
        assert s.stats.frames > 3 and s.stats.times == [] and s.stats.frame_macs == []
        assert s.model is m
    assert Streamer(SparseRuntime(m)).model is None
    n = tiny_cfg.stft.n_fft
    np.testing.assert_allclose(Streamer(m).window, 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n))


def test_streamer_messages(tiny_cfg, randomize):
    """xǁStreamerǁ__init__ 17, 21 (the engines; the runtime's mode), 24, 27, 28 (what needs a
    causal model), _check 2, 3 (a flushed stream), 31, 32 (integer samples refused, float
    taken), _run 50 (the count of NaN samples, block engine)."""
    m = randomize(ConvFSENet(tiny_cfg))
    with pytest.raises(ValueError, match=r"engine must be one of torch, sparse, dense, got 'x'"):
        Streamer(m, "x")
    with pytest.raises(ValueError, match=r"^Streamer: engine 'dense' differs from the runtime's "
                       r"mode 'sparse'$"):
        Streamer(SparseRuntime(m, "sparse"), "dense")
    nc = load_config(CONFIGS / "tiny.toml", ["model.causal=false"])
    with pytest.raises(ConfigError, match=r"^model.causal: streaming needs a causal model"):
        Streamer(ConvFSENet(nc))
    s = Streamer(m, "dense")
    with pytest.raises(AudioError, match=r"^Streamer.feed: 3 sample\(s\) are NaN or Inf$"):
        s.feed(np.array([0.0, np.nan, np.inf, -np.inf], np.float32))
    with pytest.raises(AudioError, match="expects float samples in"):
        s.feed(np.zeros(10, np.int16))
    s.feed(np.zeros(10, np.float64))                      # a float of another width is taken
    s.flush()
    with pytest.raises(DyncpError, match=r"^Streamer: the stream was flushed; call reset\(\)"):
        s.feed(np.zeros(10, np.float32))


def test_streamer_takes_every_mono_form_alike(tiny_cfg, randomize):
    """xǁStreamerǁ_check 14 (a torch tensor), 20, 21, 24-26 ([1, N] and [N, 1]), 29 (float64
    on the slow path), 34-37 (made float32 and contiguous)."""
    m = randomize(ConvFSENet(tiny_cfg))
    wav = _wav(1200)
    ref = Streamer(m, "dense").process(wav)
    wide = np.repeat(wav, 2).astype(np.float64)[::2]     # float64, not contiguous
    for x in (torch.from_numpy(wav), wav[None, :], wav[:, None], wide,
              np.repeat(wav, 2)[::2]):
        s = Streamer(m, "dense")
        out = np.concatenate([s.feed(x), s.flush()])
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, ref)
    # float64 samples off float32's grid are rounded to float32 first, as offline enhancement
    # reads them (_check 35, 37: without the dtype they would reach the float64 rings unrounded)
    fine = wav.astype(np.float64) + 1e-9 * np.cos(np.arange(wav.size))
    s = Streamer(m, "dense")
    out = np.concatenate([s.feed(fine), s.flush()])
    np.testing.assert_array_equal(out, Streamer(m, "dense").process(fine.astype(np.float32)))


def test_streamer_seconds_sum_every_call(tiny_cfg, randomize):
    """xǁStreamerǁ_run 46 (a call's time measured, not its clock reading), _timed 1, 2 (summed
    over calls), 6 (a call of several frames gives each frame its share)."""
    m = randomize(ConvFSENet(tiny_cfg))
    s = Streamer(m, "dense", record_times=True)
    wav, hop = _wav(4000), tiny_cfg.stft.hop
    t0 = time.perf_counter()
    for i in range(0, wav.size, 5 * hop):                 # five frames per call
        s.feed(wav[i:i + 5 * hop])
    wall = time.perf_counter() - t0
    assert len(s.stats.times) == s.stats.frames > 10
    assert 0 < s.stats.seconds <= wall
    assert sum(s.stats.times) == pytest.approx(s.stats.seconds)


def test_flush_returns_float32_and_nothing_twice(tiny_cfg, randomize):
    """xǁStreamerǁflush 1-5 (a second flush: no samples), 12, 14 (a stream fed nothing), 32, 34
    (the tail in float32)."""
    m = randomize(ConvFSENet(tiny_cfg))
    s = Streamer(m, "dense")
    s.feed(_wav(700))
    tail = s.flush()
    assert tail.dtype == np.float32 and tail.size > 0
    again = s.flush()
    assert again.dtype == np.float32 and again.shape == (0,)
    empty = Streamer(m, "dense").flush()
    assert empty.dtype == np.float32 and empty.shape == (0,)


# -- survivors of the session-9 full run: dyncp/gates.py --------------------------------------------------------------------------------
def test_budget_gate_thresholds_start_moving_by_logit_phi():
    """xǁGateǁ__init__ 27: a new budget gate's slope is softplus(0.5413) = 1, so every threshold
    starts moving by exactly logit(Φ) (the documented start of training)."""
    gate = Gate(4, 8, GateConfig(reduction=2, budget=True), causal=True)
    torch.testing.assert_close(F.softplus(gate.budget_slope.detach()), torch.ones(8),
                               rtol=0, atol=1e-4)
    b = gate.bias(torch.tensor([0.8])).detach()
    torch.testing.assert_close(b[0], gate.score2.bias.detach() - math.log(0.8 / 0.2),
                               rtol=0, atol=1e-4)


# -- dyncp/losses.py -------------------------------------------------------------------------------
def test_contrast_loss_without_marked_frames_is_zero_and_one_marked_frame_counts():
    """x_contrast_loss 22: a batch without a marked (speech or hard) frame gives 0, not NaN (0/0);
    a batch with exactly one marked frame still gives its gap and hinge."""
    g = _gates(torch.tensor([[0.25, 0.5, 0.75]]))               # frame Φ 0.25, 0.5, 0.75
    loss, gap = contrast_loss(g, torch.tensor([[False, False, False]]), 0.5)
    assert loss.item() == 0.0 and gap.item() == 0.0
    loss, gap = contrast_loss(g, torch.tensor([[True, False, False]]), 0.5)
    assert gap.item() == pytest.approx(0.375)                    # (0.5 + 0.75) / 2 - 0.25
    assert loss.item() == pytest.approx(0.125 ** 2)


def _noisy_pair() -> tuple[torch.Tensor, torch.Tensor]:
    clean = _speechlike()
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(clean.shape, generator=g) * torch.tensor([[0.02], [1.0]])
    return clean, clean + noise                                  # item 1 far noisier


def test_hard_frames_is_bool_and_strictly_below_the_median():
    """x_hard_frames 15, 17 (bool also when no item counts: every budget at Φ = 0, the start of
    the ramp), 18 (strictly below the median: the median frame itself is not hard)."""
    clean, noisy = _noisy_pair()
    none = hard_frames(clean, noisy, STFT, torch.tensor([False, False]))
    assert none.dtype == torch.bool and not none.any()
    snr = frame_snr_db(clean, noisy, STFT)
    hard = hard_frames(clean, noisy, STFT)
    assert hard.dtype == torch.bool and none.shape == hard.shape == snr.shape
    assert torch.equal(hard, snr < snr.median())
    assert not hard[snr == snr.median()].any()


def test_total_loss_distills_at_any_positive_weight_with_the_configs_compression():
    """x_total_loss 19 (a distill_weight of at most 1 still distils), 35 (compress and mix reach
    the distillation term)."""
    clean = _speechlike()
    est, teacher = 0.7 * clean + 0.01, 0.9 * clean
    cfg = LossConfig(compress=0.5, mix=0.2, distill_weight=0.5)
    out = total_loss(est, clean, [], cfg, STFT, teacher=teacher)
    want = spectral_loss(est, teacher, STFT, 0.5, 0.2).item()
    assert out["distill"].item() == pytest.approx(want, rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["se"].item() + 0.5 * want, rel=1e-6)


def test_total_loss_snr_target_says_it_needs_noisy():
    """x_total_loss 186, 188, 189: the message of frame_target = "snr" without ``noisy``."""
    clean = _speechlike()
    with pytest.raises(ValueError, match=r'^loss\.frame_target = "snr" needs the noisy input: '
                                         r'total_loss\(\.\.\., noisy=\.\.\.\)$'):
        total_loss(clean, clean, [torch.ones(2, 4, 5)], LossConfig(frame_target="snr"), STFT)


def test_total_loss_contrast_counts_only_items_with_a_budget():
    """x_total_loss 173, 174, 176, 177, 179, 180 (a budget model's items at Φ = 0 do not count in
    the contrast term), 212, 216 (the counted items reach contrast_loss)."""
    clean = _speechlike()
    sp = speech_mask(clean, STFT)
    phis = torch.where(sp, 0.5, 0.6)                             # item 0: gap 0.1 < margin 0.2
    phis[1] = torch.where(sp[1], 0.9, 0.1)                       # item 1 (Φ = 0): gap -0.8
    gates = _gates(phis)
    target = torch.tensor([0.5, 0.0])
    cfg = LossConfig(usage_weight=2.0, frame_target="contrast", frame_spread=0.2)
    out = total_loss(clean, clean, gates, cfg, STFT, target=target)
    ref, gap = contrast_loss(gates, sp, 0.2, items=target > 0)
    _, gap_all = contrast_loss(gates, sp, 0.2)
    assert abs(gap.item() - gap_all.item()) > 0.1               # the test tells them apart
    assert gap.item() == pytest.approx(0.1, abs=1e-6)
    assert out["phi_gap"].item() == pytest.approx(gap.item(), abs=1e-6)
    assert out["contrast"].item() == pytest.approx(ref.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["se"].item() + 2.0 * (
        out["usage"].item() + ref.item()), rel=1e-6)


def test_total_loss_snr_split_takes_the_median_of_the_counted_items():
    """x_total_loss 194, 198: with frame_target = "snr", the hard/easy split of a budget model's
    batch is the median over the counted items' frames (items at Φ = 0 left out)."""
    clean, noisy = _noisy_pair()
    target = torch.tensor([0.5, 0.0])
    items = target > 0
    keep = hard_frames(clean, noisy, STFT, items)
    t = keep.shape[-1]
    phis = (torch.rand(2, t, generator=torch.Generator().manual_seed(3)) * 20).round() / 20
    gates = _gates(phis)
    _, gap = contrast_loss(gates, keep, 0.2, items)
    _, gap_all = contrast_loss(gates, hard_frames(clean, noisy, STFT), 0.2, items)
    assert abs(gap.item() - gap_all.item()) > 1e-3             # the test tells them apart
    out = total_loss(clean, clean, gates, LossConfig(frame_target="snr", frame_spread=0.2), STFT,
                     target=target, noisy=noisy)
    assert out["phi_gap"].item() == pytest.approx(gap.item(), abs=1e-6)


# -- dyncp/model.py --------------------------------------------------------------------------------
def test_non_causal_refusal_says_why():
    """x_require_causal 3, 4: the message ends with the reason."""
    nc = load_config(CONFIGS / "tiny.toml", ["model.causal=false"])
    with pytest.raises(ConfigError, match=r"^model\.causal: streaming needs a causal model; this "
                                          r"one is non-causal \(its convolutions and gate pooling "
                                          r"look ahead\)$"):
        require_causal(nc, "streaming")


def test_budget_request_messages(tiny_cfg):
    """xǁConvFSENetǁ_budget 4, 6, 7 (Φ for a model without a budget), 26, 27 (the wrong count of
    Φ values: a ValueError with the numbers, not a TypeError)."""
    mag = torch.rand(2, tiny_cfg.stft.n_freq, 3)
    with pytest.raises(ValueError, match=r"^phi: this model has no run-time budget \(gate\.budget "
                                         r"= false\); its pruning ratio is fixed by training$"):
        ConvFSENet(tiny_cfg)(mag, phi=0.5)
    bm = ConvFSENet(load_config(CONFIGS / "tiny.toml", ["gate.budget=true"]))
    with pytest.raises(ValueError, match=r"^phi: expected a number or 2 values, got \(3,\)$"):
        bm(mag, phi=torch.tensor([0.2, 0.3, 0.4]))


def test_budget_code_is_made_on_the_inputs_device():
    """xǁConvFSENetǁ_budget 15, 18, xǁConvFSENetǁstep 9: the Φ code of a float Φ is made on the
    input's device, not on torch's default device (the meta device made the default stands in
    for an accelerator: on a GPU the code would be on the CPU, and budget_code would mix devices,
    e.g. in validation, which runs at the nominal budget)."""
    m = ConvFSENet(load_config(CONFIGS / "tiny.toml", ["gate.budget=true"])).eval()
    mag = torch.rand(1, m.cfg.stft.n_freq, 4)
    state = m.initial_state(1)
    with torch.no_grad(), torch.device("meta"):
        code, bypass, gated = m._budget(0.5, 1, mag.device)
        mask, gates = m(mag, phi=0.5)
        mask_t, gates_t, _ = m.step(mag[..., 0], state, phi=0.5)
    assert code.device.type == mask.device.type == mask_t.device.type == "cpu"
    assert bypass is None and gated and len(gates) == len(gates_t) == m.cfg.model.n_blocks


def test_budget_table_has_sixteen_points(tiny_cfg):
    """xǁConvFSENetǁ__init__ 50: a new budget model's calibration table is the identity on 16
    points from budget_min to budget_max (the buffer's shape is in every checkpoint, the shipped
    budget model's included, and in the C export's DYNCP_BUDGET_POINTS)."""
    cfg = load_config(CONFIGS / "tiny.toml", ["gate.budget=true"])
    table = ConvFSENet(cfg).budget_table
    assert table.shape == (2, 16) and torch.equal(table[0], table[1])
    torch.testing.assert_close(table[0], torch.linspace(cfg.gate.budget_min, cfg.gate.budget_max,
                                                        16))


def test_compressed_features_of_digital_silence_are_finite():
    """xǁConvFSENetǁ_features 7: with feature_compress < 1 a bin of exactly 0 (digital silence)
    gives (0 + 1e-12)^c, not NaN."""
    m = ConvFSENet(load_config(CONFIGS / "tiny.toml", ["model.feature_compress=0.3"])).eval()
    mag = torch.zeros(1, m.cfg.stft.n_freq, 5)
    torch.testing.assert_close(m._features(mag), torch.full_like(mag, 1e-12 ** 0.3))
    with torch.no_grad():
        mask, _ = m(mag)
    assert torch.isfinite(mask).all()


# -- dyncp/streaming.py ----------------------------------------------------------------------------
def test_streamer_takes_a_list_of_samples(tiny_cfg, randomize):
    """xǁStreamerǁ_check 10: a plain list (no ``dtype``) takes the general path like every other
    form, and gives the same output."""
    m = randomize(ConvFSENet(tiny_cfg))
    wav = _wav(600)
    ref = Streamer(m, "dense").process(wav)
    s = Streamer(m, "dense")
    out = np.concatenate([s.feed(wav.tolist()), s.flush()])
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("overrides", [[], ["gate.enabled=false"]])
def test_block_streaming_without_gate_log_keeps_nothing_per_call(overrides, randomize):
    """xǁStreamerǁ_run 59: the block path (no per-frame budget) with no gate log (record_gates off,
    or a static model) appends nothing per feed call: memory stays flat over hours of small
    feeds."""
    cfg = load_config(CONFIGS / "tiny.toml", overrides)
    s = Streamer(randomize(ConvFSENet(cfg)), "sparse", record_gates=False)
    s.process(_wav(3000), chunk=cfg.stft.hop // 2)
    assert s.stats.frames > 10 and s._gates == []

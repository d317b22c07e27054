"""Analytic MAC accounting: paper numbers, dynamic == static with open gates, an independent
counter (torch.utils.flop_counter) on the dense network."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dyncp import macs
from dyncp.config import load_config
from dyncp.losses import pruning_ratio
from dyncp.model import ConvFSENet

from conftest import CONFIGS

torch.set_num_threads(1)


def test_paper_numbers(paper_cfg):
    c = paper_cfg
    assert macs.static_macs_per_frame(c) == 662528
    assert macs.gate_macs_per_frame(c) == 55296 == 9 * (128 * 16 + 16 * 256)
    assert macs.per_channel_macs(c) == 128 + 3 + 128 == 259
    assert macs.fixed_macs_per_frame(c) == 2 * 257 * 128 == 65792
    layers = dict(macs.static_layer_macs(c))
    assert layers["front"] == layers["back"] == 32896
    assert layers["blocks.0.pw1"] + layers["blocks.0.dw"] + layers["blocks.0.pw2"] == 66304
    assert len(layers) == 2 + 27 and sum(layers.values()) == 662528
    assert macs.frames_per_second(c) == 62.5
    assert macs.static_macs_per_frame(c) * 62.5 == pytest.approx(41.408e6)
    assert macs.receptive_field_frames(c) == 43
    assert macs.gate_receptive_field_frames(c) == 43 + 9 * 3
    assert macs.prunable_fraction(c) == pytest.approx(0.90070, abs=1e-5)
    assert macs.latency_ms(c) == 32.0


def test_static_and_non_causal_variants():
    static = load_config(CONFIGS / "static.toml")
    assert macs.static_macs_per_frame(static) == 662528 and macs.gate_macs_per_frame(static) == 0
    assert macs.gate_receptive_field_frames(static) == 43
    nc = load_config(CONFIGS / "paper.toml", ["model.causal=false"])
    # 21 frames of look-ahead through the convolutions + 2 per block through centred pooling (L=4)
    assert macs.latency_ms(nc) == pytest.approx(32.0 + (21 + 9 * 2) * 16.0)


def test_summary_keys(paper_cfg):
    s = macs.summary(paper_cfg, params=123)
    assert s["static_macs_per_frame"] == 662528 and s["gate_macs_per_frame"] == 55296
    assert s["params"] == 123 and s["receptive_field_frames"] == 43 and s["latency_ms"] == 32.0
    assert s["gated_channels_per_frame"] == 9 * 256
    # 65,792 + 55,296 + 0.25 x 2,304 x 259 at Phi = 0.75
    assert s["dynamic_macs_per_frame_at_target"] == pytest.approx(270272)


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_dynamic_equals_static_plus_gates_when_all_open(name):
    cfg = load_config(CONFIGS / f"{name}.toml")
    m = cfg.model
    gates = [torch.ones(2, m.hidden, 11) for _ in range(m.n_blocks)]
    d = macs.dynamic_macs(cfg, gates)
    full = macs.static_macs_per_frame(cfg) + macs.gate_macs_per_frame(cfg)
    assert torch.all(d.per_frame == full)
    assert d.mean_per_frame == full
    assert d.mean_per_second == full * cfg.stft.frames_per_second
    assert d.pruning_ratio() == 0.0
    assert d.per_block_mean_active() == [float(m.hidden)] * m.n_blocks


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_each_closed_channel_frame_saves_exactly_its_macs(name):
    cfg = load_config(CONFIGS / f"{name}.toml")
    m = cfg.model
    torch.manual_seed(0)
    gates = [(torch.rand(3, m.hidden, 13) < p).float()
             for p in torch.linspace(0.1, 0.9, m.n_blocks).tolist()]
    d = macs.dynamic_macs(cfg, gates)
    full = macs.static_macs_per_frame(cfg) + macs.gate_macs_per_frame(cfg)
    closed = sum((1 - g).sum(dim=1) for g in gates)                       # [B, T]
    per = m.residual + m.kernel + m.residual
    assert torch.equal(d.per_frame, full - per * closed.double())
    # one more closed channel-frame costs exactly (B + k + B) less
    g2 = [g.clone() for g in gates]
    i = int(torch.nonzero(g2[0][1, :, 4])[0])
    g2[0][1, i, 4] = 0.0
    d2 = macs.dynamic_macs(cfg, g2)
    diff = d.per_frame - d2.per_frame
    assert diff[1, 4].item() == per and diff.abs().sum().item() == per
    # block means and the pruning ratio agree with the loss module's
    assert d.pruning_ratio() == pytest.approx(pruning_ratio(gates).item(), abs=1e-6)
    blocks = d.per_block_macs()
    assert blocks[0] == pytest.approx(macs.gate_macs_per_block(cfg)
                                      + float(gates[0].sum(1).mean()) * per)


def test_lengths_exclude_padded_frames(tiny_cfg):
    m = tiny_cfg.model
    gates = [torch.ones(2, m.hidden, 10) for _ in range(m.n_blocks)]
    for g in gates:
        g[1, :, 6:] = 0.0                                 # padding of item 1 looks "pruned"
    d = macs.dynamic_macs(tiny_cfg, gates, lengths=[10, 6])
    full = macs.static_macs_per_frame(tiny_cfg) + macs.gate_macs_per_frame(tiny_cfg)
    assert d.valid.sum().item() == 16
    assert d.mean_per_frame == full and d.pruning_ratio() == 0.0
    assert macs.dynamic_macs(tiny_cfg, gates).mean_per_frame < full


def test_dynamic_macs_errors(tiny_cfg):
    with pytest.raises(ValueError, match="static_macs_per_frame"):
        macs.dynamic_macs(tiny_cfg, [])
    with pytest.raises(ValueError, match="expected 2"):
        macs.dynamic_macs(tiny_cfg, [torch.ones(1, 32, 4)])


def _counted_macs_per_frame(cfg, frames: int = 50) -> float:
    model = ConvFSENet(cfg).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.rand(1, cfg.stft.n_freq, frames))
    return fc.get_total_flops() / 2 / frames              # FLOPs = 2 x MACs, bias not counted


@pytest.mark.parametrize("name", ["paper", "tiny"])
@pytest.mark.parametrize("causal", [True, False])
def test_static_count_agrees_with_flop_counter(name, causal):
    cfg = load_config(CONFIGS / f"{name}.toml",
                      ["gate.enabled=false", f"model.causal={str(causal).lower()}"])
    assert _counted_macs_per_frame(cfg) == macs.static_macs_per_frame(cfg)


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_gate_overhead_agrees_with_flop_counter(name):
    """Gated minus dense, as counted: exactly the two score layers per block. The moving average
    is a sum of shifted slices (additions, which the counter does not count, like the analytic
    count that leaves pooling out on purpose)."""
    cfg = load_config(CONFIGS / f"{name}.toml")
    dense = load_config(CONFIGS / f"{name}.toml", ["gate.enabled=false"])
    extra = _counted_macs_per_frame(cfg) - _counted_macs_per_frame(dense)
    assert extra == macs.gate_macs_per_frame(cfg)

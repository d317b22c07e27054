"""The speech-tied usage target (loss.frame_target = "speech", issue 12 item 3): non-speech
frames are trained toward more pruning, speech frames toward what keeps the item's mean at
Φ_trgt; with every frame speech it is the paper's global L_DCP."""

from __future__ import annotations

import pytest
import torch

from dyncp.config import LossConfig, STFTConfig, load_config
from dyncp.dsp import speech_mask
from dyncp.errors import ConfigError
from dyncp.losses import (FRAME_TARGET_CAP, frame_targets, speech_usage_loss, total_loss,
                          usage_from_ratios, pruning_ratio)


def test_frame_targets_keep_the_mean():
    t = torch.tensor([0.75, 0.5, 0.5, 0.9])
    ns = torch.tensor([0.3, 0.0, 0.5, 0.2])
    sp, nsp = frame_targets(t, ns, 0.2)
    assert nsp.tolist() == pytest.approx([0.95, 0.7, 0.7, FRAME_TARGET_CAP])
    mean = ns * nsp + (1 - ns) * sp
    assert mean.tolist() == pytest.approx(t.tolist())
    assert (sp <= t).all() and (nsp >= t).all()
    # an item that is nearly all non-speech cannot push its speech frames below 0
    sp, _ = frame_targets(torch.tensor([0.5]), torch.tensor([0.99]), 0.2)
    assert sp.item() == 0.0


def _gates(phi_bt: torch.Tensor, blocks: int = 3, h: int = 20) -> list[torch.Tensor]:
    """Binary gates [B, H, T] per block whose share of closed channels per frame is phi_bt."""
    off = (phi_bt * h).round().long()                               # [B, T]
    ch = torch.arange(h).view(1, h, 1)
    g = (ch >= off.unsqueeze(1)).float()
    return [g.clone().requires_grad_(True) for _ in range(blocks)]


def test_loss_zero_on_target_and_positive_when_static():
    speech = torch.zeros(2, 10, dtype=torch.bool)
    speech[:, :6] = True                                            # 40 % non-speech
    t = torch.tensor([0.5, 0.5])
    tau_s, tau_n = frame_targets(t, torch.tensor([0.4, 0.4]), 0.3)  # 0.3 and 0.8
    phi = torch.where(speech, tau_s.unsqueeze(1), tau_n.unsqueeze(1))
    loss, measured = speech_usage_loss(_gates(phi), speech, t, 0.3)
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    assert measured.item() == pytest.approx(0.5)
    # the same mean, pruned alike on every frame (the static behaviour the paper's loss allows)
    flat = _gates(torch.full((2, 10), 0.5))
    loss, _ = speech_usage_loss(flat, speech, t, 0.3)
    assert loss.item() == pytest.approx((0.5 - 0.3) ** 2 + (0.5 - 0.8) ** 2)
    assert usage_from_ratios(pruning_ratio(flat, per_block=True), 0.5).item() == 0.0
    loss.backward()
    assert flat[0].grad is not None and flat[0].grad.abs().sum() > 0


def test_all_speech_is_the_global_usage_loss():
    speech = torch.ones(3, 8, dtype=torch.bool)
    g = [torch.rand(3, 16, 8) for _ in range(4)]
    t = torch.full((3,), 0.6)
    loss, _ = speech_usage_loss(g, speech, t, 0.2)
    per_item = 1 - torch.stack([x.mean(dim=(1, 2)) for x in g]).mean(0)
    assert loss.item() == pytest.approx(((per_item - 0.6) ** 2).mean().item(), rel=1e-6)


def test_items_at_zero_do_not_count_and_shapes_are_checked():
    speech = torch.ones(2, 8, dtype=torch.bool)
    g = [torch.rand(2, 16, 8)]
    t = torch.tensor([0.0, 0.6])
    loss, _ = speech_usage_loss(g, speech, t, 0.2, items=t > 0)
    only = speech_usage_loss([g[0][1:]], speech[1:], t[1:], 0.2)[0]
    assert loss.item() == pytest.approx(only.item())
    with pytest.raises(ValueError, match="does not match"):
        speech_usage_loss(g, speech[:, :5], t, 0.2)


def test_total_loss_uses_the_clean_signal_for_speech_frames():
    stft_cfg = STFTConfig()
    n = 16000
    clean = torch.zeros(2, n)
    clean[:, : n // 2] = 0.3 * torch.sin(torch.arange(n // 2) * 0.05)   # speech, then silence
    sp = speech_mask(clean, stft_cfg)
    assert sp[:, :20].all() and not sp[:, -10:].any()
    T = sp.shape[-1]
    phi = torch.where(sp, torch.tensor(0.5), torch.tensor(0.95))       # prunes silence more
    cfg = LossConfig(prune_target=0.7, frame_target="speech", frame_spread=0.25)
    good = total_loss(clean, clean, _gates(phi.float()), cfg, stft_cfg)
    flat = total_loss(clean, clean, _gates(torch.full((2, T), 0.7)), cfg, stft_cfg)
    assert flat["usage"].item() > 10 * good["usage"].item()
    plain = total_loss(clean, clean, _gates(torch.full((2, T), 0.7)),
                       LossConfig(prune_target=0.7), stft_cfg)
    assert plain["usage"].item() == pytest.approx(0.0, abs=1e-6)


def test_config_checks():
    with pytest.raises(ConfigError, match="frame_target"):
        load_config("configs/tiny.toml", ["loss.frame_target=loud"])
    with pytest.raises(ConfigError, match="global"):
        load_config("configs/tiny.toml", ["loss.frame_target=speech", "loss.usage_mode=per_block"])
    with pytest.raises(ConfigError, match="frame_spread"):
        load_config("configs/tiny.toml", ["loss.frame_target=speech", "loss.frame_spread=1.5"])

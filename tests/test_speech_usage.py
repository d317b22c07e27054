"""The speech-tied usage target (loss.frame_target = "speech", issue 12 item 3): non-speech
frames are trained toward more pruning, speech frames toward what keeps the item's mean at
Φ_trgt; with every frame speech it is the paper's global L_DCP."""

from __future__ import annotations

import pytest
import torch

from dyncp.config import LossConfig, STFTConfig, load_config
from dyncp.dsp import speech_mask
from dyncp.errors import ConfigError
from dyncp.losses import (FRAME_TARGET_CAP, contrast_loss, frame_targets, pruning_ratio,
                          speech_usage_loss, total_loss, usage_from_ratios)


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


# -- the contrast term (loss.frame_target = "contrast") -------------------------------------------

def test_contrast_is_a_hinge_on_the_pooled_gap():
    speech = torch.zeros(2, 10, dtype=torch.bool)
    speech[:, :6] = True
    # gap 0.2 (non-speech 0.8, speech 0.6): under a margin of 0.3 the loss is 0.1^2
    phi = torch.where(speech, torch.tensor(0.6), torch.tensor(0.8))
    g = _gates(phi)
    loss, gap = contrast_loss(g, speech, 0.3)
    assert gap.item() == pytest.approx(0.2, abs=1e-6)
    assert loss.item() == pytest.approx(0.1 ** 2, rel=1e-5)
    loss.backward()
    # closing more channels (a lower gate) on non-speech frames lowers the loss, on speech raises it
    grad = g[0].grad.sum(dim=1)                                        # [B, T]
    assert (grad[~speech] > 0).all() and (grad[speech] < 0).all()
    # at or past the margin the term is zero
    assert contrast_loss(_gates(phi), speech, 0.2)[0].item() == pytest.approx(0.0, abs=1e-7)
    assert contrast_loss(_gates(phi), speech, 0.1)[0].item() == 0.0
    # the gap is pooled over the batch: one item may carry it
    phi2 = phi.clone()
    phi2[1] = 0.7
    _, gap2 = contrast_loss(_gates(phi2), speech, 0.3)
    assert gap2.item() == pytest.approx(0.1, abs=1e-6)


def test_contrast_items_and_degenerate_batches():
    speech = torch.zeros(2, 10, dtype=torch.bool)
    speech[:, :5] = True
    phi = torch.stack([torch.where(speech[0], torch.tensor(0.5), torch.tensor(0.5)),
                       torch.where(speech[1], torch.tensor(0.2), torch.tensor(0.9))])
    # item 0 (no gap) is left out: the gap is item 1's
    _, gap = contrast_loss(_gates(phi), speech, 0.3, items=torch.tensor([False, True]))
    assert gap.item() == pytest.approx(0.7, abs=1e-6)
    loss, gap = contrast_loss(_gates(phi), torch.ones(2, 10, dtype=torch.bool), 0.3)
    assert loss.item() == 0.0 and gap.item() == 0.0
    with pytest.raises(ValueError, match="does not match"):
        contrast_loss(_gates(phi), speech[:, :4], 0.3)


def test_total_loss_with_contrast_adds_the_term_to_the_paper_loss():
    stft_cfg = STFTConfig()
    n = 16000
    clean = torch.zeros(2, n)
    clean[:, : n // 2] = 0.3 * torch.sin(torch.arange(n // 2) * 0.05)   # speech, then silence
    T = speech_mask(clean, stft_cfg).shape[-1]
    flat = torch.full((2, T), 0.6)
    cfg = LossConfig(prune_target=0.75, usage_weight=2.0, frame_target="contrast",
                     frame_spread=0.15)
    out = total_loss(clean, clean, _gates(flat), cfg, stft_cfg)
    plain = total_loss(clean, clean, _gates(flat), LossConfig(prune_target=0.75,
                                                              usage_weight=2.0), stft_cfg)
    assert out["usage"].item() == pytest.approx(plain["usage"].item())   # (0.6 - 0.75)^2
    assert out["contrast"].item() == pytest.approx(0.15 ** 2, rel=1e-4)  # no gap at all
    assert out["loss"].item() == pytest.approx(plain["loss"].item() + 2.0 * 0.15 ** 2, rel=1e-5)
    assert load_config("configs/tiny.toml", ["loss.frame_target=contrast"]).loss.frame_target \
        == "contrast"


# -- the difficulty contrast (loss.frame_target = "snr") -----------------------------------------

def _snr_pair(n: int = 16000):
    """Clean speech-like tone all through; noise only in the second half of item 0 and all
    through item 1 at a lower level: frame SNRs differ by item and by half."""
    stft_cfg = STFTConfig()
    t = torch.arange(n)
    clean = 0.3 * torch.sin(t * 0.05).repeat(2, 1)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(2, n, generator=gen)
    noise[0, : n // 2] *= 0.001                     # item 0: clean first half (high SNR)
    noise[0, n // 2:] *= 0.3                        # then loud noise (low SNR)
    noise[1] *= 0.03                                # item 1: moderate noise all through
    return clean, clean + noise, stft_cfg


def test_frame_snr_and_the_hard_half():
    from dyncp.dsp import frame_snr_db
    from dyncp.losses import hard_frames
    clean, noisy, stft_cfg = _snr_pair()
    snr = frame_snr_db(clean, noisy, stft_cfg)
    T = snr.shape[-1]
    mid = T // 2
    # ~50 dB apart between item 0's halves; item 1 in between
    assert snr[0, 2:mid - 2].mean() - snr[0, mid + 2:-2].mean() > 40
    assert snr[0, mid + 2:-2].mean() < snr[1, 2:-2].mean() < snr[0, 2:mid - 2].mean()
    hard = hard_frames(clean, noisy, stft_cfg)
    assert hard.shape == (2, T) and hard.float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert hard[0, mid + 2:-2].all() and not hard[0, 2:mid - 2].any()   # the noisy half is hard
    # only the counted items set the median: item 1 alone splits its own frames in half
    only1 = hard_frames(clean, noisy, stft_cfg, items=torch.tensor([False, True]))
    assert only1[1].float().mean().item() == pytest.approx(0.5, abs=0.05)
    assert not hard_frames(clean, noisy, stft_cfg, items=torch.tensor([False, False])).any()
    with pytest.raises(ValueError, match="differ"):
        frame_snr_db(clean, noisy[:, :-1], stft_cfg)


def test_total_loss_with_snr_prunes_the_clean_half_more():
    from dyncp.losses import hard_frames
    clean, noisy, stft_cfg = _snr_pair()
    hard = hard_frames(clean, noisy, stft_cfg)
    cfg = LossConfig(prune_target=0.75, usage_weight=2.0, frame_target="snr", frame_spread=0.15)
    # easy frames already pruned 0.2 more than hard ones: no contrast cost
    ok = torch.where(hard, torch.tensor(0.65), torch.tensor(0.85))
    out = total_loss(noisy, clean, _gates(ok), cfg, stft_cfg, noisy=noisy)
    assert out["contrast"].item() == 0.0
    assert out["phi_gap"].item() == pytest.approx(0.2, abs=0.02)
    # the other way round (hard frames pruned more) costs (0.15 + 0.2)^2, and the gradient asks
    # to prune the easy frames more and the hard ones less
    bad = torch.where(hard, torch.tensor(0.85), torch.tensor(0.65))
    g = _gates(bad)
    out = total_loss(noisy, clean, g, cfg, stft_cfg, noisy=noisy)
    assert out["contrast"].item() == pytest.approx(0.35 ** 2, rel=0.1)
    out["contrast"].backward()
    grad = g[0].grad.sum(dim=1)
    assert (grad[~hard] > 0).all() and (grad[hard] < 0).all()
    with pytest.raises(ValueError, match="needs the noisy input"):
        total_loss(noisy, clean, _gates(ok), cfg, stft_cfg)
    assert load_config("configs/tiny.toml", ["loss.frame_target=snr"]).loss.frame_target == "snr"

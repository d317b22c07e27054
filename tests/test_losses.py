"""Loss math: compressed spectral MSE, SI-SDR, pruning ratio and the usage loss L_DCP."""

from __future__ import annotations

import math

import pytest
import torch

from dyncp.config import LossConfig, STFTConfig, load_config
from dyncp.losses import (active_level, pruning_ratio, si_sdr, si_sdr_loss, spectral_loss,
                          total_loss, usage_loss)
from dyncp.model import ConvFSENet

from conftest import CONFIGS

torch.set_num_threads(1)

STFT = STFTConfig()


def _speechlike(n: int = 16000, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Amplitude-modulated noise with a silent gap: active and inactive frames."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    wav = torch.randn(batch, n, generator=g) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    wav[:, n // 3: n // 2] = 0.0
    return 0.1 * wav


def test_spectral_loss_zero_iff_equal():
    clean = _speechlike()
    assert spectral_loss(clean, clean, STFT).item() == pytest.approx(0.0, abs=1e-12)
    noisy = clean + 0.01 * torch.randn_like(clean)
    assert spectral_loss(noisy, clean, STFT).item() > 1e-4
    assert spectral_loss(0.5 * clean, clean, STFT).item() > 1e-3       # not gain invariant alone


def test_spectral_loss_mixes_magnitude_and_complex_terms():
    clean = _speechlike()
    flipped = -clean                                     # same magnitudes, opposite phase
    assert spectral_loss(flipped, clean, STFT, mix=0.0).item() == pytest.approx(0.0, abs=1e-10)
    assert spectral_loss(flipped, clean, STFT, mix=1.0).item() > 0.1
    est = clean + 0.02 * torch.randn_like(clean)
    a = spectral_loss(est, clean, STFT, mix=0.0)
    b = spectral_loss(est, clean, STFT, mix=1.0)
    assert spectral_loss(est, clean, STFT, mix=0.3).item() == pytest.approx(
        (0.7 * a + 0.3 * b).item(), rel=1e-5)


@pytest.mark.parametrize("gain", [1e-3, 0.1, 10.0])
def test_spectral_loss_is_invariant_to_a_common_gain(gain):
    clean = _speechlike()
    est = clean + 0.02 * torch.randn_like(clean)
    ref = spectral_loss(est, clean, STFT).item()
    assert spectral_loss(gain * est, gain * clean, STFT).item() == pytest.approx(ref, rel=1e-3)


def test_active_level_ignores_silence():
    wav = torch.zeros(1, 16000)
    wav[0, :8192] = 0.2 * torch.sign(torch.randn(8192))  # RMS 0.2 in 32 whole frames (hop 256)
    assert active_level(wav, STFT).item() == pytest.approx(0.2, rel=1e-3)
    padded = torch.cat([wav, torch.zeros(1, 32000)], dim=1)
    assert active_level(padded, STFT).item() == pytest.approx(0.2, rel=1e-3)
    assert active_level(torch.zeros(1, 1000), STFT).item() == pytest.approx(1e-5)  # floored


def test_si_sdr_numbers():
    torch.manual_seed(0)
    ref = torch.randn(2, 64000)
    assert torch.all(si_sdr(0.3 * ref, ref) > 60)                       # scaled copy
    noise = torch.randn(2, 64000)
    noise = noise - (noise * ref).sum(-1, keepdim=True) / ref.pow(2).sum(-1, keepdim=True) * ref
    noise = noise * ref.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)
    assert torch.allclose(si_sdr(ref + noise, ref), torch.zeros(2), atol=1e-3)  # 0 dB
    assert torch.allclose(si_sdr(ref + 10 ** (-10 / 20) * noise, ref), torch.full((2,), 10.0),
                          atol=1e-3)                                           # 10 dB
    # independent (non-orthogonalised) noise at 0 dB: about 0 dB
    white = torch.randn(2, 64000)
    white = white * ref.norm(dim=-1, keepdim=True) / white.norm(dim=-1, keepdim=True)
    assert torch.allclose(si_sdr(ref + white, ref), torch.zeros(2), atol=0.1)
    assert si_sdr_loss(ref + noise, ref).item() == pytest.approx(0.0, abs=1e-3)
    # mean removal: an offset does not count as distortion
    assert torch.all(si_sdr(ref + 5.0, ref) > 60)


def test_pruning_ratio_and_usage_loss_numbers():
    on, off = torch.ones(2, 8, 5), torch.zeros(2, 8, 5)
    half = torch.ones(2, 8, 5)
    half[:, :2] = 0.0                                                    # 25 % pruned
    assert pruning_ratio([on, off]).item() == 0.5
    assert pruning_ratio([on, off, half], per_block=True).tolist() == [0.0, 1.0, 0.25]
    # global (Phi - target)^2 vs mean of per-block squared errors
    assert usage_loss([on, off], 0.5, "global").item() == 0.0
    assert usage_loss([on, off], 0.5, "per_block").item() == pytest.approx(0.25)
    assert usage_loss([half], 0.75, "global").item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="usage mode"):
        usage_loss([on], 0.5, "both")
    with pytest.raises(ValueError, match="gate"):
        pruning_ratio([])


def test_pruning_ratio_valid_frames():
    g = torch.ones(2, 4, 6)
    g[1, :, 3:] = 0.0                                                    # padded frames look pruned
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 3:] = False
    assert pruning_ratio([g]).item() == pytest.approx(0.25)
    assert pruning_ratio([g], valid=valid).item() == 0.0
    assert pruning_ratio([g, 1 - g], per_block=True, valid=valid).tolist() == [0.0, 1.0]


def test_total_loss_parts():
    clean = _speechlike()
    est = clean + 0.02 * torch.randn_like(clean)
    gates = [torch.ones(2, 8, 5), torch.zeros(2, 8, 5)]
    cfg = LossConfig(prune_target=0.75, usage_weight=5.0, si_sdr_weight=0.1)
    out = total_loss(est, clean, gates, cfg, STFT)
    assert out["phi"].item() == 0.5
    assert out["usage"].item() == pytest.approx(0.0625)
    expect = out["se"] + 0.1 * out["si_sdr"] + 5.0 * 0.0625
    assert out["loss"].item() == pytest.approx(expect.item(), rel=1e-6)
    ramped = total_loss(est, clean, gates, cfg, STFT, target=0.5)
    assert ramped["usage"].item() == 0.0                                  # target override (ramp)
    static = total_loss(est, clean, [], LossConfig(), STFT)
    assert set(static) == {"se", "loss"} and static["loss"] == static["se"]


@pytest.mark.parametrize("mode", ["global", "per_block"])
@pytest.mark.parametrize("target", [0.5, 0.75])
def test_usage_loss_alone_reaches_the_target(mode, target):
    """Adam on the gate parameters only, the usage loss only: the measured ratio (eval mode, hard
    gates) ends within 0.05 of the target, from gates that start open (Phi = 0)."""
    cfg = load_config(CONFIGS / "tiny.toml")
    torch.manual_seed(0)
    model = ConvFSENet(cfg).train()
    for p in model.parameters():
        p.requires_grad_(False)
    gate_params = [p for b in model.blocks for p in b.gate.parameters()]
    for p in gate_params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(gate_params, lr=0.01)
    x = torch.rand(4, cfg.stft.n_freq, 100) ** 3 * 4
    with torch.no_grad():
        assert pruning_ratio(model(x)[1]).item() == 0.0
    for _ in range(200):
        _, gates = model(x)
        loss = usage_loss(gates, target, mode)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        _, gates = model(x)
    assert abs(pruning_ratio(gates).item() - target) < 0.05
    if mode == "per_block":
        assert torch.all((pruning_ratio(gates, per_block=True) - target).abs() < 0.05)


def test_distillation_term_pulls_toward_the_teacher():
    clean = _speechlike()
    est = (clean + 0.05 * _speechlike(seed=1)).requires_grad_(True)
    teacher = clean + 0.02 * _speechlike(seed=2)
    cfg = LossConfig(distill_weight=2.0)
    out = total_loss(est, clean, [], cfg, STFT, teacher=teacher)
    want = spectral_loss(est, teacher, STFT, cfg.compress, cfg.mix)
    assert out["distill"].item() == pytest.approx(want.item()) and want.item() > 0
    assert out["loss"].item() == pytest.approx(out["se"].item() + 2.0 * want.item(), rel=1e-6)
    # the term is zero at the teacher's output, and absent without a teacher or a weight
    assert total_loss(teacher, clean, [], cfg, STFT, teacher=teacher)["distill"].item() \
        == pytest.approx(0.0, abs=1e-9)
    assert "distill" not in total_loss(est, clean, [], cfg, STFT)
    assert "distill" not in total_loss(est, clean, [], LossConfig(), STFT, teacher=teacher)
    # the gradient reaches the student only
    t = teacher.clone().requires_grad_(True)
    total_loss(est, clean, [], cfg, STFT, teacher=t)["loss"].backward()
    assert est.grad is not None and t.grad is None
    with pytest.raises(ValueError, match="teacher output"):
        total_loss(est, clean, [], cfg, STFT, teacher=teacher[:, :-1])

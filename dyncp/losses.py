"""Loss math (SPEC §2-3). Pure functions on tensors.

- :func:`spectral_loss`: power-law-compressed complex spectral MSE on the re-STFT of the output
  waveform, both signals normalised by the clean signal's active-speech level;
- :func:`si_sdr` / :func:`si_sdr_loss`: scale-invariant SDR in dB;
- :func:`pruning_ratio` and :func:`usage_loss`: the DynCP auxiliary loss L_DCP, global
  ``(Phi - Phi_trgt)^2`` or per block ``mean_b (Phi_b - Phi_trgt)^2``;
- :func:`speech_usage_loss`: L_DCP with a speech-tied target per frame (``loss.frame_target =
  "speech"``, issue 12 item 3): more pruning on non-speech frames, the mean kept at Φ_trgt;
- :func:`contrast_loss`: the paper's L_DCP plus a hinge on Φ(non-speech) − Φ(speech) over the
  batch (``loss.frame_target = "contrast"``): the same aim, the allocation left to the gates;
  with ``loss.frame_target = "snr"`` the same hinge splits the frames by difficulty instead
  (:func:`hard_frames`: the cleaner half of the batch's frames is pruned more).
"""

from __future__ import annotations

import torch

from .config import LossConfig, STFTConfig
from .dsp import frame_snr_db, speech_mask, stft

#: The most a speech-tied target asks of a non-speech frame (some channels stay on).
FRAME_TARGET_CAP = 0.95


def active_level(wav: torch.Tensor, cfg: STFTConfig, floor_db: float = 40.0) -> torch.Tensor:
    """RMS over active frames, [B] for wav [B, N]. Active: frame energy within ``floor_db`` of the
    loudest frame of the same signal. [decided] A simple stand-in for ITU-T P.56."""
    n = wav.shape[-1]
    hop = cfg.hop
    t = max(n // hop, 1)
    frames = wav[..., : t * hop].reshape(wav.shape[0], t, -1) if n >= hop else wav.unsqueeze(1)
    e = frames.pow(2).mean(dim=-1)                                    # [B, T]
    thresh = e.amax(dim=-1, keepdim=True) * 10 ** (-floor_db / 10)
    active = (e >= thresh) & (e > 0)
    mean_e = (e * active).sum(-1) / active.sum(-1).clamp_min(1)
    return mean_e.sqrt().clamp_min(1e-5)


def spectral_loss(est: torch.Tensor, clean: torch.Tensor, stft_cfg: STFTConfig,
                  compress: float = 0.3, mix: float = 0.3) -> torch.Tensor:
    """(1-mix)*MSE(|Y|^c, |S|^c) + mix*MSE(|Y|^c e^{j<Y}, |S|^c e^{j<S}); est, clean [B, N]."""
    level = active_level(clean, stft_cfg).unsqueeze(-1)
    y, s = stft(est / level, stft_cfg), stft(clean / level, stft_cfg)
    eps = 1e-8
    ya, sa = (y.abs() + eps), (s.abs() + eps)
    yc_mag, sc_mag = ya.pow(compress), sa.pow(compress)
    mag_term = (yc_mag - sc_mag).pow(2).mean()
    yc = y * (yc_mag / ya)
    sc = s * (sc_mag / sa)
    cplx_term = (yc - sc).abs().pow(2).mean()
    return (1 - mix) * mag_term + mix * cplx_term


def si_sdr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB, [B] for est, ref [B, N] (means removed)."""
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def si_sdr_loss(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return -si_sdr(est, ref).mean()


def pruning_ratio(gates: list[torch.Tensor], per_block: bool = False,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """Phi = 1 - mean(mask) over batch, frames and channels (and blocks unless ``per_block``).

    ``gates``: one [B, H, T] tensor per block; ``valid`` [B, T] excludes padded frames.
    Returns a scalar, or [n_blocks] when ``per_block``. Differentiable through the surrogate.
    """
    if not gates:
        raise ValueError("pruning_ratio needs gate tensors (the model has no gates)")
    if valid is None:
        # Per-block sums, not a stacked copy of every gate tensor: the stack cost as much as the
        # gates themselves in training (benchmarks/train_speed.py), and sum's backward is a view.
        kept = torch.stack([g.sum() / g.numel() for g in gates])
    else:
        g = torch.stack(gates)                                        # [n_blocks, B, H, T]
        w = valid.to(g.dtype).unsqueeze(0).unsqueeze(2)               # [1, B, 1, T]
        kept = (g * w).sum(dim=(1, 2, 3)) / (w.sum() * g.shape[2]).clamp_min(1)
    phi = 1.0 - kept
    return phi if per_block else phi.mean()


def usage_from_ratios(phi_per_block: torch.Tensor, target: float | torch.Tensor,
                      mode: str = "global", items: torch.Tensor | None = None) -> torch.Tensor:
    """L_DCP from per-block pruning ratios [n_blocks]: ``(mean Phi - target)^2`` (global; every
    block has the same H, so the mean of block ratios is the overall ratio) or the mean of
    per-block squared errors (per_block).

    A budget model trains each item toward its own target: ratios [n_blocks, B], ``target`` [B],
    and ``items`` [B] (bool) selects the items that count (those not run at Φ = 0); the loss is
    the mean over those items."""
    t = torch.as_tensor(target, dtype=phi_per_block.dtype, device=phi_per_block.device)
    if mode == "global":
        err = (phi_per_block.mean(0) - t).pow(2)
    elif mode == "per_block":
        err = (phi_per_block - t).pow(2).mean(0)
    else:
        raise ValueError(f"unknown usage mode {mode!r} (global, per_block)")
    if items is None:
        return err.mean()
    w = items.to(err.dtype)
    return (err * w).sum() / w.sum().clamp_min(1.0)


def pruning_ratio_per_item(gates: list[torch.Tensor]) -> torch.Tensor:
    """Phi of each block and item: [n_blocks, B] (differentiable, like :func:`pruning_ratio`)."""
    if not gates:
        raise ValueError("pruning_ratio_per_item needs gate tensors (the model has no gates)")
    return 1.0 - torch.stack([g.mean(dim=(1, 2)) for g in gates])


def frame_targets(target: torch.Tensor, nonspeech: torch.Tensor, spread: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item targets of the speech-tied L_DCP: (Φ on speech frames, Φ on non-speech frames),
    each [B], for item targets ``target`` [B] and non-speech frame shares ``nonspeech`` [B].
    Non-speech frames aim at ``min(target + spread, FRAME_TARGET_CAP)``; speech frames at what
    keeps the item's mean at ``target`` (clamped to [0, target]: an item of mostly non-speech
    cannot push its speech frames below 0)."""
    ns = torch.clamp(target + spread, max=FRAME_TARGET_CAP)
    ns = torch.maximum(ns, target)
    sp = (target - nonspeech * ns) / (1.0 - nonspeech).clamp_min(1e-6)
    return torch.minimum(sp.clamp_min(0.0), target), ns


def _frame_phi(gates: list[torch.Tensor], speech: torch.Tensor) -> torch.Tensor:
    """Φ of each frame over every block and channel, [B, T] (differentiable), after checking that
    the frame mask [B, T] matches the gates [B, H, T]."""
    if speech.shape != (gates[0].shape[0], gates[0].shape[-1]):
        raise ValueError(f"frame mask {tuple(speech.shape)} does not match the gates' "
                         f"[B, T] = {(gates[0].shape[0], gates[0].shape[-1])}")
    return 1.0 - torch.stack([g.mean(dim=1) for g in gates]).mean(0)


def speech_usage_loss(gates: list[torch.Tensor], speech: torch.Tensor, target: torch.Tensor,
                      spread: float, items: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """L_DCP with a speech-tied target per frame [decided] (issue 12 item 3): for each item b,
    ``(Φ_S,b - τ_S,b)^2 + (Φ_N,b - τ_N,b)^2`` where Φ_S,b and Φ_N,b are the pruning ratios of
    its speech and non-speech frames (every block and channel) and τ from :func:`frame_targets`;
    an item without non-speech frames has only the first term, which is the paper's global
    L_DCP. Mean over ``items`` (bool [B]; default all). ``gates``: [B, H, T] per block;
    ``speech`` [B, T] bool; ``target`` [B]. Returns (loss, Φ of the counted items, detached)."""
    phi_t = _frame_phi(gates, speech)                                      # [B, T]
    sp = speech.to(phi_t.dtype)
    n_sp, n_ns = sp.sum(-1), (1 - sp).sum(-1)
    phi_s = (phi_t * sp).sum(-1) / n_sp.clamp_min(1)
    phi_n = (phi_t * (1 - sp)).sum(-1) / n_ns.clamp_min(1)
    tau_s, tau_n = frame_targets(target.to(phi_t.dtype), n_ns / (n_sp + n_ns), spread)
    err = (phi_s - tau_s).pow(2) * (n_sp > 0) + (phi_n - tau_n).pow(2) * (n_ns > 0)
    w = torch.ones_like(err) if items is None else items.to(err.dtype)
    loss = (err * w).sum() / w.sum().clamp_min(1.0)
    phi = (phi_t.detach().mean(-1) * w).sum() / w.sum().clamp_min(1.0)
    return loss, phi


def contrast_loss(gates: list[torch.Tensor], speech: torch.Tensor, margin: float,
                  items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The contrast term [decided] (issue 12 item 3): ``relu(margin - (Φ_N - Φ_S))^2``, with
    Φ_S the pruning ratio of the frames ``speech`` marks (those asked to keep more channels:
    the speech frames, or with ``frame_target = "snr"`` the hard ones of :func:`hard_frames`)
    and Φ_N that of the others, each pooled over the counted ``items`` (bool [B]; default all),
    every block and channel. Zero once the unmarked frames are pruned ``margin`` more than the
    marked ones; unlike :func:`speech_usage_loss` it leaves each frame's and each item's share
    free. A batch without both kinds of frame gives 0. ``gates``: [B, H, T] per block;
    ``speech`` [B, T] bool. Returns (loss, Φ_N − Φ_S detached)."""
    phi_t = _frame_phi(gates, speech)                                      # [B, T]
    sp = speech.to(phi_t.dtype)
    w = (torch.ones_like(sp[:, 0]) if items is None else items.to(sp.dtype))[:, None]
    n_sp, n_ns = (sp * w).sum(), ((1 - sp) * w).sum()
    if n_sp == 0 or n_ns == 0:
        zero = phi_t.sum() * 0.0
        return zero, zero.detach()
    gap = (phi_t * (1 - sp) * w).sum() / n_ns - (phi_t * sp * w).sum() / n_sp
    return torch.relu(margin - gap).pow(2), gap.detach()


def hard_frames(clean: torch.Tensor, noisy: torch.Tensor, cfg: STFTConfig,
                items: torch.Tensor | None = None) -> torch.Tensor:
    """The harder half of a batch's frames [decided] (``loss.frame_target = "snr"``): bool
    [B, T], true where the frame's input SNR (:func:`dyncp.dsp.frame_snr_db`) lies below the
    median over the counted ``items``' frames (bool [B]; default all). Relative to the batch, so
    the split holds at every SNR range a recipe mixes at."""
    snr = frame_snr_db(clean, noisy, cfg)
    counted = snr if items is None else snr[items]
    if counted.numel() == 0:
        return torch.zeros_like(snr, dtype=torch.bool)
    return snr < counted.median()


def usage_loss(gates: list[torch.Tensor], target: float, mode: str = "global",
               valid: torch.Tensor | None = None) -> torch.Tensor:
    """L_DCP: ``(Phi - target)^2`` (global) or the mean of per-block squared errors."""
    return usage_from_ratios(pruning_ratio(gates, per_block=True, valid=valid), target, mode)


def total_loss(est: torch.Tensor, clean: torch.Tensor, gates: list[torch.Tensor], cfg: LossConfig,
               stft_cfg: STFTConfig, target: float | torch.Tensor | None = None,
               noisy: torch.Tensor | None = None, teacher: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
    """L = L_SE (+ si_sdr_weight * -SI-SDR) + usage_weight * L_DCP (+ distill_weight * L_SE
    against ``teacher``, a frozen model's output for the same input, where given). ``target``
    overrides ``cfg.prune_target`` (for the ramp); a [B] tensor gives each item its own target
    (budget models; 0 = that item ran every channel). ``noisy`` (the model's input) is needed
    by ``frame_target = "snr"`` alone. Returns the parts and ``loss``."""
    se = spectral_loss(est, clean, stft_cfg, cfg.compress, cfg.mix)
    out = {"se": se}
    loss = se
    if teacher is not None and cfg.distill_weight > 0:
        if teacher.shape != est.shape:
            raise ValueError(f"teacher output {tuple(teacher.shape)} does not match the "
                             f"model's {tuple(est.shape)}")
        out["distill"] = spectral_loss(est, teacher.detach(), stft_cfg, cfg.compress, cfg.mix)
        loss = loss + cfg.distill_weight * out["distill"]
    if cfg.si_sdr_weight > 0:
        out["si_sdr"] = si_sdr_loss(est, clean)
        loss = loss + cfg.si_sdr_weight * out["si_sdr"]
    if gates and cfg.frame_target == "speech":
        t = cfg.prune_target if target is None else target
        per_item = isinstance(t, torch.Tensor) and t.dim() == 1
        # budget models: items run at Φ = 0 ran every channel and do not count
        items = t > 0 if per_item else None
        t = t if per_item else torch.as_tensor(t, dtype=est.dtype).expand(est.shape[0])
        out["usage"], out["phi"] = speech_usage_loss(gates, speech_mask(clean, stft_cfg),
                                                     t, cfg.frame_spread, items)
        loss = loss + cfg.usage_weight * out["usage"]
    elif gates and isinstance(target, torch.Tensor) and target.dim() == 1:
        # a budget model: one target per item; items at Φ = 0 ran every channel and do not count
        phi_bi = pruning_ratio_per_item(gates)                           # [n_blocks, B]
        items = target > 0
        out["usage"] = usage_from_ratios(phi_bi, target, cfg.usage_mode, items)
        out["phi"] = (phi_bi.detach().mean(0)[items].mean() if bool(items.any())
                      else phi_bi.new_zeros(()))
        loss = loss + cfg.usage_weight * out["usage"]
    elif gates:
        tgt = cfg.prune_target if target is None else target
        # One pass over the gate tensors serves both the loss and the logged Phi.
        phi_b = pruning_ratio(gates, per_block=True)
        out["usage"] = usage_from_ratios(phi_b, tgt, cfg.usage_mode)
        out["phi"] = phi_b.detach().mean()
        loss = loss + cfg.usage_weight * out["usage"]
    if gates and cfg.frame_target in ("contrast", "snr"):
        items = target > 0 if isinstance(target, torch.Tensor) and target.dim() == 1 else None
        if cfg.frame_target == "snr":
            if noisy is None:
                raise ValueError('loss.frame_target = "snr" needs the noisy input: '
                                 "total_loss(..., noisy=...)")
            keep = hard_frames(clean, noisy, stft_cfg, items)
        else:
            keep = speech_mask(clean, stft_cfg)
        out["contrast"], out["phi_gap"] = contrast_loss(gates, keep, cfg.frame_spread, items)
        loss = loss + cfg.usage_weight * out["contrast"]
    out["loss"] = loss
    return out

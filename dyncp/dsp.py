"""STFT front end shared by training, evaluation and inference. Pure functions.

Conventions (SPEC §1): periodic Hann window of ``n_fft`` samples, hop ``hop``, ``center=True``
with *zero* ("constant") padding of ``n_fft // 2`` on both sides, so that frame ``t`` covers
samples ``[t*hop - n_fft/2, t*hop + n_fft/2)``. Zero padding (not reflect) is what lets a
frame-by-frame streamer reproduce the offline STFT exactly.

Shapes: ``wav`` [B, N] (float, samples), ``spec`` [B, F, T] complex with F = n_fft/2 + 1 and
T = N // hop + 1 frames.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import STFTConfig
from .errors import AudioError


def window(cfg: STFTConfig, device: torch.device | None = None,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Periodic Hann window [n_fft]."""
    return torch.hann_window(cfg.n_fft, periodic=True, device=device, dtype=dtype)


def n_frames(n_samples: int, cfg: STFTConfig) -> int:
    """Number of STFT frames for a signal of ``n_samples`` samples."""
    return n_samples // cfg.hop + 1


def stft(wav: torch.Tensor, cfg: STFTConfig) -> torch.Tensor:
    """[B, N] or [N] float waveform -> [B, F, T] (or [F, T]) complex spectrum."""
    if wav.dim() not in (1, 2):
        raise AudioError(f"stft expects a waveform of shape [N] or [B, N], got {tuple(wav.shape)}")
    if wav.shape[-1] == 0:
        raise AudioError("stft got an empty waveform (0 samples)")
    return torch.stft(wav, n_fft=cfg.n_fft, hop_length=cfg.hop, win_length=cfg.n_fft,
                      window=window(cfg, wav.device, wav.dtype), center=True,
                      pad_mode="constant", return_complex=True)


def istft(spec: torch.Tensor, cfg: STFTConfig, length: int | None = None) -> torch.Tensor:
    """[B, F, T] complex -> [B, length] waveform (weighted overlap-add, window-square normalised)."""
    if spec.dim() not in (2, 3) or not spec.is_complex():
        raise AudioError(f"istft expects a complex [B, F, T] spectrum, got {tuple(spec.shape)} "
                         f"{spec.dtype}")
    real_dtype = torch.float64 if spec.dtype == torch.complex128 else torch.float32
    return torch.istft(spec, n_fft=cfg.n_fft, hop_length=cfg.hop, win_length=cfg.n_fft,
                       window=window(cfg, spec.device, real_dtype), center=True, length=length)


def synthesis_envelope(n_fft: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """The overlap-added window square that :func:`istft` (``torch.istft``) divides by, float64.

    ``start`` [n_fft]: at padded position ``p < n_fft``, the sum of ``w[p - t*hop]^2`` over the
    frames ``t >= 0`` that cover ``p`` (at the clip start fewer frames overlap; from
    ``p >= n_fft - hop`` on every overlapping frame exists). ``steady`` [hop]: the value at every
    position ``p = j (mod hop)`` once all frames exist (``start[p]`` for ``p >= n_fft - hop``).
    The streaming synthesis (:mod:`dyncp.stream_dsp`) divides by these instead of summing
    ``w^2`` per frame; only the end of a stream needs its own partial sum.
    """
    w2 = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)) ** 2   # periodic Hann^2
    start = np.zeros(n_fft)
    for t in range(-(-n_fft // hop)):
        start[t * hop:] += w2[: n_fft - t * hop]
    steady = np.array([w2[j::hop].sum() for j in range(hop)])
    return start, steady


def frame_energy_db(wav: torch.Tensor, cfg: STFTConfig) -> torch.Tensor:
    """Energy per STFT frame in dB, [B, T] (or [T]); used for speech/non-speech splits."""
    spec = stft(wav, cfg)
    e = spec.abs().pow(2).sum(dim=-2)
    return 10.0 * torch.log10(e + 1e-12)


def frame_snr_db(clean: torch.Tensor, noisy: torch.Tensor, cfg: STFTConfig) -> torch.Tensor:
    """Input SNR per STFT frame in dB, [B, T] (or [T]): the clean frame's energy over that of
    ``noisy - clean``, the part the model has to remove. The difficulty split of
    ``loss.frame_target = "snr"``."""
    if clean.shape != noisy.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and noisy {tuple(noisy.shape)} differ")
    return frame_energy_db(clean, cfg) - frame_energy_db(noisy - clean, cfg)


#: A frame is speech when its clean energy lies within this many dB of the signal's loudest
#: frame [decided]: evaluation's Φ on speech / non-speech frames and the speech-tied usage
#: target in training (loss.frame_target) share it.
SPEECH_FLOOR_DB = 40.0


def speech_mask(clean: torch.Tensor, cfg: STFTConfig,
                floor_db: float = SPEECH_FLOOR_DB) -> torch.Tensor:
    """Clean waveform [N] or [B, N] -> bool [T] or [B, T]: STFT frames whose energy lies within
    ``floor_db`` of the same signal's loudest frame."""
    e = frame_energy_db(clean, cfg)
    return e >= e.amax(dim=-1, keepdim=True) - floor_db

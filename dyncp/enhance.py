"""Offline enhancement: waveform in, waveform (and gates) out.

``enhance(model, wav, sr)`` takes a numpy array or a tensor at any sample rate and returns the
enhanced signal at the same rate; :func:`enhance_tensor` is the batched tensor core that the
evaluation and the streaming equivalence tests use.
"""

from __future__ import annotations

import numpy as np
import torch

from .audio import check_finite, resample, to_mono
from .dsp import istft, stft
from .errors import AudioError
from .model import ConvFSENet


def enhance_tensor(model: ConvFSENet, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """[B, N] at the model's rate -> (enhanced [B, N], gates: list of binary [B, H, T]).

    The mask multiplies the noisy complex spectrum; the noisy phase is kept (SPEC §1).
    """
    cfg = model.cfg.stft
    spec = stft(wav, cfg)
    mask, gates = model(spec.abs())
    return istft(mask * spec, cfg, length=wav.shape[-1]), gates


def enhance(model: ConvFSENet, wav: np.ndarray | torch.Tensor, sr: int | None = None,
            return_gates: bool = False):
    """Enhance one mono signal.

    ``wav``: [N] (or [N, C] / [C, N] with few channels, downmixed) numpy array or tensor;
    ``sr``: its sample rate (default: the model's). Returns a numpy float32 array [N] at ``sr``,
    and with ``return_gates`` also the gates as numpy uint8 arrays [n_blocks, H, T].
    """
    model_sr = model.cfg.stft.sample_rate
    sr = model_sr if sr is None else int(sr)
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2 and wav.shape[0] < wav.shape[1] and wav.shape[0] <= 8:
        wav = wav.T  # [C, N] -> [N, C]
    wav = to_mono(wav, "input")
    if wav.size == 0:
        raise AudioError("input: empty signal (0 samples)")
    check_finite(wav, "input")
    x = resample(wav, sr, model_sr)
    model.eval()
    with torch.inference_mode():
        y, gates = enhance_tensor(model, torch.from_numpy(x).unsqueeze(0))
    out = resample(y[0].numpy(), model_sr, sr)[: wav.shape[0]]
    if out.shape[0] < wav.shape[0]:
        out = np.pad(out, (0, wav.shape[0] - out.shape[0]))
    if return_gates:
        g = (torch.stack([gi[0] for gi in gates]).to(torch.uint8).numpy() if gates
             else np.zeros((0,), np.uint8))
        return out, g
    return out

"""Audio I/O and checks: read any rate/channel count, resample with soxr, write atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .atomic import atomic_path
from .errors import AudioError


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """[N] float -> [M] float32 at ``sr_out`` (soxr, high quality)."""
    if sr_in <= 0:
        raise AudioError(f"invalid sample rate {sr_in}")
    wav = np.asarray(wav, dtype=np.float32)
    if sr_in == sr_out:
        return wav
    return soxr.resample(wav, sr_in, sr_out, quality="HQ").astype(np.float32)


def to_mono(wav: np.ndarray, name: str = "audio") -> np.ndarray:
    """[N] or [N, C] (soundfile's layout) -> [N] by averaging channels."""
    wav = np.asarray(wav)
    if wav.ndim == 2:
        return wav.mean(axis=1)
    if wav.ndim != 1:
        raise AudioError(f"{name}: expected [N] or [N, channels] samples, got shape {wav.shape}")
    return wav


def check_finite(wav: np.ndarray, name: str = "audio") -> None:
    if not np.all(np.isfinite(wav)):
        n = int(np.size(wav) - np.count_nonzero(np.isfinite(wav)))
        raise AudioError(f"{name}: {n} sample(s) are NaN or Inf")


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Read a sound file as mono float32 at ``sample_rate`` -> [N]. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{path}: cannot read audio ({e})") from None
    if wav.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no samples")
    wav = to_mono(wav, str(path))
    check_finite(wav, str(path))
    return resample(wav, sr, sample_rate)


def save_audio(path: str | Path, wav: np.ndarray, sample_rate: int = 16000,
               overwrite: bool = True) -> Path:
    """Write 16-bit PCM WAV atomically (:func:`dyncp.atomic.atomic_path`). Clips to [-1, 1]
    (callers that must not clip silently, like ``dyncp enhance``, check first). With
    ``overwrite=False`` an existing file is never replaced (OutputError)."""
    wav = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    with atomic_path(path, overwrite) as tmp:
        sf.write(tmp, wav, sample_rate, subtype="PCM_16", format="WAV")
    return Path(path)

"""Room reverberation for on-the-fly mixing (``data.reverb``; docs/training.md measures it).

With probability ``data.reverb`` the speech of a training item is convolved with a room impulse
response (RIR): measured ones from ``data.rir`` folders (e.g. ``trainpack-extra/rir``), or, when
``data.rir`` is empty, a generated one (exponentially decaying noise, RT60 U[0.2, 1.0] s, a direct
path and a direct-to-reverberant ratio U[-3, 12] dB). The noisy input hears the whole
reverberant speech; the target is its early part, the direct path and the first
:data:`EARLY_MS` ms (the usual dereverberation target: early reflections help intelligibility,
late reverberation is what to remove). The RIR is shifted so that its direct-path peak is sample
0, so the target stays time-aligned with the dry speech and a causal model never has to look
ahead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EARLY_MS = 50.0


def align(rir: np.ndarray) -> np.ndarray:
    """An RIR [M] cut to start at its direct-path peak (largest magnitude) and scaled to a unit
    peak, float32. An all-zero or empty RIR is a ValueError naming the problem."""
    rir = np.asarray(rir, dtype=np.float32).reshape(-1)
    if rir.size == 0 or not np.any(rir):
        raise ValueError("room impulse response is empty or all zeros")
    peak = int(np.argmax(np.abs(rir)))
    out = rir[peak:]
    return out / out[0]


def generated_rir(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A synthetic RIR [M] (direct-path peak at 0, unit peak): exponentially decaying Gaussian
    noise with RT60 U[0.2, 1.0] s after a 2-10 ms gap, at a direct-to-reverberant ratio
    U[-3, 12] dB."""
    rt60 = rng.uniform(0.2, 1.0)
    n = int(round(min(1.2 * rt60, 1.0) * sr))
    gap = int(round(rng.uniform(0.002, 0.010) * sr))
    t = np.arange(n - gap) / sr
    tail = rng.standard_normal(n - gap) * np.exp(-6.9078 * t / rt60)   # -60 dB at t = RT60
    drr = rng.uniform(-3.0, 12.0)
    tail *= np.sqrt(10 ** (-drr / 10) / max(float(np.sum(tail ** 2)), 1e-20))
    rir = np.zeros(n, dtype=np.float64)
    rir[0] = 1.0
    rir[gap:] = tail
    return rir.astype(np.float32)


def reverberate(speech: np.ndarray, rir: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(reverberant, early) float32 [N], both the length of ``speech`` [N]: ``speech`` convolved
    with the aligned ``rir`` and with its first :data:`EARLY_MS` ms. The input stays unchanged."""
    x = np.asarray(speech, dtype=np.float32)
    n = len(x)
    h = align(rir)
    early = h[:int(round(EARLY_MS * 1e-3 * sr)) + 1]
    m = 1 << max(int(n + len(h) - 2).bit_length(), 1)
    spec = np.fft.rfft(x, m)
    wet = np.fft.irfft(spec * np.fft.rfft(h, m), m)[:n]
    dry = np.fft.irfft(spec * np.fft.rfft(early, m), m)[:n]
    return wet.astype(np.float32), dry.astype(np.float32)


def load_rirs(folders: list[Path], sr: int) -> list[np.ndarray]:
    """The aligned RIRs of every wav/flac file under ``folders``, mono at rate ``sr``. A missing
    folder, a folder without one, an unreadable or all-zero file: DataError naming it."""
    from ..audio import load_audio
    from ..errors import AudioError, DataError

    out = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise DataError(f"data.rir: {folder}: no such folder")
        paths = sorted(p for p in Path(folder).rglob("*")
                       if p.suffix.lower() in (".wav", ".flac") and p.is_file())
        if not paths:
            raise DataError(f"data.rir: {folder}: no wav/flac room impulse responses")
        for p in paths:
            try:
                out.append(align(load_audio(p, sr)))
            except (AudioError, ValueError) as e:
                raise DataError(f"data.rir: {p}: {e}") from e
    return out

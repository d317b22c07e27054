"""Noise generators for the built-in corpus (numpy, seeded) and the SNR mixing rule.

Every generator is ``gen(rng, n, sr) -> float32 [n]`` with unit RMS; ``rng`` is a
``numpy.random.Generator`` so that a corpus is a function of its seed. The kinds cover what the
issue asks for: white, pink, brown, babble, amplitude-modulated, non-stationary (random level
jumps), mains hum with harmonics, clicks/impulses and band-limited noise. Babble needs speech, so
it takes a pool of clean utterances (the corpus passes the same split's talkers, keeping voices
disjoint across splits). The parameter ranges are our choice, not from the paper.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean()
    rms = float(np.sqrt(np.mean(x ** 2)))
    return (x / rms if rms > 1e-12 else x).astype(np.float32)


def _shaped(rng: np.random.Generator, n: int, sr: int, gain: Callable[[np.ndarray], np.ndarray]
            ) -> np.ndarray:
    """White Gaussian noise shaped in the frequency domain by ``gain(f_hz)`` (amplitude).
    Computed at the next power of two and cropped: FFTs of arbitrary lengths can be slow."""
    m = 1 << max(int(n - 1).bit_length(), 1)
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1.0 / sr)
    return _unit(np.fft.irfft(spec * gain(f), m)[:n])


def white(rng, n, sr):
    return _unit(rng.standard_normal(n))


def pink(rng, n, sr):
    """1/f power (-3 dB/octave), flat below 20 Hz."""
    return _shaped(rng, n, sr, lambda f: 1.0 / np.sqrt(np.maximum(f, 20.0)))


def brown(rng, n, sr):
    """1/f^2 power (-6 dB/octave), flat below 30 Hz so it stays a sound, not a DC drift."""
    return _shaped(rng, n, sr, lambda f: 1.0 / np.maximum(f, 30.0))


def band(rng, n, sr):
    """Noise limited to a random band (centre 150 Hz - 6 kHz, 0.5-3 octaves wide)."""
    centre = float(np.exp(rng.uniform(np.log(150.0), np.log(min(6000.0, 0.4 * sr)))))
    half = 2.0 ** (rng.uniform(0.5, 3.0) / 2)
    lo, hi = centre / half, min(centre * half, 0.49 * sr)
    # Smooth (raised-cosine in log frequency) edges rather than a brick wall.
    def gain(f):
        lf = np.log2(np.maximum(f, 1.0))
        edge = 0.25
        g = np.clip((lf - np.log2(lo)) / edge + 0.5, 0, 1) * np.clip((np.log2(hi) - lf) / edge
                                                                     + 0.5, 0, 1)
        return np.sin(0.5 * np.pi * g) ** 2
    return _shaped(rng, n, sr, gain)


def _colored(rng, n, sr):
    """One of white/pink/brown/band: the carrier for modulated noises."""
    return (white, pink, brown, band)[int(rng.integers(4))](rng, n, sr)


def modulated(rng, n, sr):
    """Amplitude-modulated noise: carrier x (1 + d sin(2 pi f_m t)), f_m 0.5-12 Hz, d 0.5-1."""
    t = np.arange(n) / sr
    fm, depth = rng.uniform(0.5, 12.0), rng.uniform(0.5, 1.0)
    env = 1.0 + depth * np.sin(2 * np.pi * fm * t + rng.uniform(0, 2 * np.pi))
    return _unit(_colored(rng, n, sr) * env)


def nonstationary(rng, n, sr):
    """Carrier whose level jumps at random times (segments 0.15-1.2 s, levels over 30 dB),
    smoothed over 20 ms so the jumps do not click."""
    env = np.empty(n)
    i = 0
    while i < n:
        seg = int(rng.uniform(0.15, 1.2) * sr)
        env[i:i + seg] = 10 ** (rng.uniform(-30, 0) / 20)
        i += seg
    k = max(int(0.02 * sr), 1)
    c = np.concatenate([[0.0], np.cumsum(np.pad(env, (k // 2, k - 1 - k // 2), mode="edge"))])
    env = (c[k:] - c[:-k]) / k  # moving average over k samples, same length
    return _unit(_colored(rng, n, sr) * env)


def hum(rng, n, sr):
    """Mains hum: 50 or 60 Hz and 4-15 harmonics with random decaying amplitudes and phases,
    slight frequency drift, over a faint pink floor."""
    t = np.arange(n) / sr
    f0 = (50.0 if rng.random() < 0.5 else 60.0) * rng.uniform(0.995, 1.005)
    x = np.zeros(n)
    for k in range(1, int(rng.integers(4, 16)) + 1):
        if k * f0 >= 0.45 * sr:
            break
        amp = rng.uniform(0.2, 1.0) / k ** rng.uniform(0.3, 1.2)
        x += amp * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    return _unit(_unit(x) + 0.05 * pink(rng, n, sr))


def clicks(rng, n, sr):
    """Impulses (Poisson, 1-20 per second) with random sign, level and a 0.5-8 ms decay,
    over a faint white floor: keyboard-like clicks, crackle, dropouts."""
    x = 0.02 * rng.standard_normal(n)
    count = rng.poisson(rng.uniform(1.0, 20.0) * n / sr)
    for pos in rng.integers(0, n, size=count):
        tau = rng.uniform(0.0005, 0.008) * sr
        m = min(int(6 * tau) + 1, n - pos)
        burst = np.exp(-np.arange(m) / tau) * rng.standard_normal(m)
        x[pos:pos + m] += rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 1.0) * burst
    return _unit(x)


def babble(rng, n, sr, pool: Sequence[np.ndarray] = ()):
    """Sum of 3-7 talkers from ``pool`` (each level-normalised, random start, looped to
    length). Falls back to speech-shaped modulated noise when the pool is empty."""
    if not pool:
        return modulated(rng, n, sr)
    x = np.zeros(n)
    for _ in range(int(rng.integers(3, 8))):
        talker = loop(pool[int(rng.integers(len(pool)))], n, sr, rng)
        x += _unit(talker) * rng.uniform(0.5, 1.0)
    return _unit(x)


KINDS: dict[str, Callable] = {
    "white": white, "pink": pink, "brown": brown, "band": band, "babble": babble,
    "modulated": modulated, "nonstationary": nonstationary, "hum": hum, "clicks": clicks,
}


def make_noise(kind: str, rng: np.random.Generator, n: int, sr: int,
               pool: Sequence[np.ndarray] = ()) -> np.ndarray:
    """A noise of ``kind`` (a key of :data:`KINDS`) -> float32 [n], unit RMS."""
    if kind == "babble":
        return babble(rng, n, sr, pool)
    return KINDS[kind](rng, n, sr)


def loop(x: np.ndarray, n: int, sr: int, rng: np.random.Generator | None = None,
         fade_s: float = 0.02) -> np.ndarray:
    """[M] -> [n]: a random crop when M >= n, else the clip repeated with equal-power
    cross-fades of ``fade_s`` seconds, read from a random offset, so that short noises can
    cover long speech without a click at each seam."""
    x = np.asarray(x, dtype=np.float32)
    m = len(x)
    if m == 0:
        raise ValueError("cannot loop an empty signal")
    if m >= n:
        start = int(rng.integers(0, m - n + 1)) if rng is not None else 0
        return x[start:start + n]
    fade = min(int(fade_s * sr), m // 4)
    if fade == 0:
        period = x
        first = x
    else:
        w = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / fade).astype(np.float32)
        seam = x[m - fade:] * w[::-1] + x[:fade] * w      # tail fades out, head fades in
        first = x[:m - fade]
        period = np.concatenate([seam, x[fade:m - fade]])  # one repetition: m - fade samples
    reps = int(np.ceil((2 * n) / len(period))) + 1
    out = np.concatenate([first, np.tile(period, reps)])
    start = int(rng.integers(0, len(period))) if rng is not None else 0
    return out[start:start + n]


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """clean + g * noise with g so that 10 log10(sum clean^2 / sum (g noise)^2) = snr_db over
    the whole signal (the usual utterance-level definition). Shapes [N] -> [N] float32."""
    ps = float(np.sum(np.asarray(clean, np.float64) ** 2))
    pn = float(np.sum(np.asarray(noise, np.float64) ** 2))
    g = np.sqrt(ps / (max(pn, 1e-20) * 10 ** (snr_db / 10))) if ps > 0 else 0.0
    return (clean + g * noise).astype(np.float32)


def lowpass(x: np.ndarray, sr: int, cutoff: float, width: float = 150.0) -> np.ndarray:
    """``x`` low-passed at ``cutoff`` Hz (zero-phase, raised-cosine edge ``width`` Hz wide), as a
    telephone or 8 kHz codec path leaves speech: [N] -> float32 [N]."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if n == 0:
        return x
    m = 1 << max(int(n - 1).bit_length(), 1)
    spec = np.fft.rfft(x, m)
    f = np.fft.rfftfreq(m, 1.0 / sr)
    g = np.clip((cutoff - f) / width + 0.5, 0.0, 1.0)
    return np.fft.irfft(spec * np.sin(0.5 * np.pi * g) ** 2, m)[:n].astype(np.float32)

"""The composite measures CSIG, CBAK, COVL (Hu & Loizou, "Evaluation of objective quality
measures for speech enhancement", IEEE TASLP 16(1), 2008), in numpy.

A line-by-line port of Loizou's ``composite.m`` as it is used in speech-enhancement papers
(and the Python port in SEGAN/CMGAN's evaluation scripts), vectorised over frames:

- frames of 30 ms, hop 7.5 ms, Hann window ``0.5 (1 - cos(2 pi n / (L + 1)))``, n = 1..L;
- LLR: LPC order 10 (fs < 10 kHz) or 16, mean over the 95 % lowest frames;
- WSS: 25 critical-band filters (50 Hz - 3.6 kHz, as in the original), Kmax 20, Klocmax 1,
  mean over the 95 % lowest frames; the local-peak search reproduces ``composite.m`` exactly;
- segmental SNR: per-frame SNR clamped to [-10, 35] dB, mean over all frames;
- CSIG = 3.093 - 1.029 LLR + 0.603 PESQ - 0.009 WSS,
  CBAK = 1.634 + 0.478 PESQ - 0.007 WSS + 0.063 segSNR,
  COVL = 1.594 + 0.805 PESQ - 0.512 LLR - 0.007 WSS, each clamped to [1, 5].

PESQ here is wide-band PESQ (ITU-T P.862.2), as in the common VoiceBank+DEMAND evaluation
scripts; Loizou's original used narrow-band raw PESQ, so absolute values differ slightly from it.
"""

from __future__ import annotations

import numpy as np

ALPHA = 0.95
CENT_FREQ = np.array([50.0, 120, 190, 260, 330, 400, 470, 540, 617.372, 703.378, 798.717,
                      904.128, 1020.38, 1148.30, 1288.72, 1442.54, 1610.70, 1794.16, 1993.93,
                      2211.08, 2446.71, 2701.97, 2978.04, 3276.17, 3597.63])
BANDWIDTH = np.array([70.0, 70, 70, 70, 70, 70, 70, 77.3724, 86.0056, 95.3398, 105.411,
                      116.256, 127.914, 140.423, 153.823, 168.154, 183.457, 199.776, 217.153,
                      235.631, 255.255, 276.072, 298.126, 321.465, 346.136])


def _frames(x: np.ndarray, sr: int) -> np.ndarray:
    """[N] -> [num_frames, L] Hann-windowed 30 ms frames, hop L/4 (composite.m's framing)."""
    L = int(round(30 * sr / 1000))
    hop = int(np.floor(L / 4))
    num = int(len(x) / hop - L / hop)
    if num <= 0:
        return np.zeros((0, L))
    idx = np.arange(num)[:, None] * hop + np.arange(L)[None, :]
    window = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, L + 1) / (L + 1)))
    return x[idx] * window


def _lowest_mean(v: np.ndarray) -> float:
    v = np.sort(v)
    k = int(round(len(v) * ALPHA))
    return float(np.mean(v[:k])) if k > 0 else float("nan")


def _lpc(frames: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation [F, order+1] and LPC polynomial [F, order+1] (a0 = 1) by Levinson-Durbin,
    batched over frames."""
    n = frames.shape[1]
    r = np.stack([np.sum(frames[:, :n - k] * frames[:, k:], axis=1) for k in range(order + 1)],
                 axis=1)
    f = frames.shape[0]
    a = np.zeros((f, order))
    e = r[:, 0].copy()
    for i in range(order):
        acc = np.sum(a[:, :i] * r[:, i:0:-1], axis=1) if i > 0 else 0.0
        k = (r[:, i + 1] - acc) / np.where(e == 0, 1e-20, e)
        prev = a[:, :i].copy()
        a[:, i] = k
        if i > 0:
            a[:, :i] = prev - k[:, None] * prev[:, ::-1]
        e = (1 - k * k) * e
    return r, np.concatenate([np.ones((f, 1)), -a], axis=1)


def llr_frames(clean: np.ndarray, est: np.ndarray, sr: int) -> np.ndarray:
    """Log-likelihood ratio per frame [F] (NaN/Inf frames -> 0, as nan_to_num in the port)."""
    fc, fe = _frames(clean, sr), _frames(est, sr)
    order = 10 if sr < 10000 else 16
    r, a_c = _lpc(fc, order)
    _, a_e = _lpc(fe, order)
    # a R a^T with R the Toeplitz autocorrelation of the clean frame.
    idx = np.abs(np.arange(order + 1)[:, None] - np.arange(order + 1)[None, :])
    toe = r[:, idx]                                            # [F, P+1, P+1]
    num = np.einsum("fi,fij,fj->f", a_e, toe, a_e)
    den = np.einsum("fi,fij,fj->f", a_c, toe, a_c)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.log(num / den)
    return np.nan_to_num(d)


def _crit_filters(sr: int, n_half: int) -> np.ndarray:
    max_freq = sr / 2
    j = np.arange(n_half)
    out = np.zeros((len(CENT_FREQ), n_half))
    min_factor = np.exp(-30.0 / (2 * 2.303))  # the -30 dB point of each filter
    for i, (cf, bw_hz) in enumerate(zip(CENT_FREQ, BANDWIDTH)):
        f0 = np.floor(cf / max_freq * n_half)
        bw = bw_hz / max_freq * n_half
        norm = np.log(BANDWIDTH[0]) - np.log(bw_hz)
        out[i] = np.exp(-11 * ((j - f0) / bw) ** 2 + norm)
        out[i] *= out[i] > min_factor
    return out


def _wss_weights(energy: np.ndarray, slope: np.ndarray, kmax=20.0, klocmax=1.0) -> np.ndarray:
    """composite.m's weights per band [F, 24] from band energies [F, 25] (dB) and slopes."""
    f, nb = slope.shape
    # next_nonpos[:, n]: first m >= n with slope <= 0 (nb when none); prev_pos: last m <= n with
    # slope > 0 (-1 when none). The peak right of a rising band is energy[next_nonpos - 1], left
    # of a falling band energy[prev_pos + 1] (the original's index arithmetic, kept as is).
    next_nonpos = np.full((f, nb + 1), nb)
    for n in range(nb - 1, -1, -1):
        next_nonpos[:, n] = np.where(slope[:, n] <= 0, n, next_nonpos[:, n + 1])
    prev_pos = np.full((f, nb + 1), -1)
    for n in range(nb):
        prev_pos[:, n + 1] = np.where(slope[:, n] > 0, n, prev_pos[:, n])
    rows = np.arange(f)[:, None]
    right = energy[rows, next_nonpos[:, :nb] - 1]
    left = energy[rows, prev_pos[:, 1:] + 1]
    peak = np.where(slope > 0, right, left)
    e = energy[:, :nb]
    w_max = kmax / (kmax + energy.max(axis=1, keepdims=True) - e)
    w_loc = klocmax / (klocmax + peak - e)
    return w_max * w_loc


def wss_frames(clean: np.ndarray, est: np.ndarray, sr: int) -> np.ndarray:
    """Weighted spectral slope distance per frame [F]."""
    fc, fe = _frames(clean, sr), _frames(est, sr)
    L = fc.shape[1]
    n_fft = int(2 ** np.ceil(np.log2(2 * L)))
    n_half = n_fft // 2
    filt = _crit_filters(sr, n_half)

    def band_db(fr):
        spec = np.abs(np.fft.fft(fr, n_fft, axis=1)[:, :n_half]) ** 2
        return 10 * np.log10(np.maximum(spec @ filt.T, 1e-10))

    ec, ee = band_db(fc), band_db(fe)
    sc, se = np.diff(ec, axis=1), np.diff(ee, axis=1)
    w = 0.5 * (_wss_weights(ec, sc) + _wss_weights(ee, se))
    return np.sum(w * (sc - se) ** 2, axis=1) / np.sum(w, axis=1)


def segsnr_frames(clean: np.ndarray, est: np.ndarray, sr: int, eps: float = 1e-10) -> np.ndarray:
    """Segmental SNR per frame [F], dB, clamped to [-10, 35]."""
    fc, fe = _frames(clean, sr), _frames(est, sr)
    sig = np.sum(fc ** 2, axis=1)
    noise = np.sum((fc - fe) ** 2, axis=1)
    return np.clip(10 * np.log10(sig / (noise + eps) + eps), -10.0, 35.0)


def composite(clean: np.ndarray, est: np.ndarray, sr: int, pesq_wb: float) -> dict[str, float]:
    """CSIG, CBAK, COVL (each in [1, 5]) from signals [N] at ``sr`` and their PESQ. NaN when
    the PESQ is NaN or the signals are shorter than one 30 ms frame."""
    clean = np.asarray(clean, np.float64)
    est = np.asarray(est, np.float64)
    llr = _lowest_mean(llr_frames(clean, est, sr))
    wss = _lowest_mean(wss_frames(clean, est, sr))
    seg = segsnr_frames(clean, est, sr)
    seg = float(np.mean(seg)) if len(seg) else float("nan")

    def clamp(v):
        return float(min(max(v, 1.0), 5.0)) if np.isfinite(v) else float("nan")

    return {"csig": clamp(3.093 - 1.029 * llr + 0.603 * pesq_wb - 0.009 * wss),
            "cbak": clamp(1.634 + 0.478 * pesq_wb - 0.007 * wss + 0.063 * seg),
            "covl": clamp(1.594 + 0.805 * pesq_wb - 0.512 * llr - 0.007 * wss),
            "llr": llr, "wss": wss, "segsnr": seg}

"""Speech-enhancement metrics, the way papers report them: PESQ (wide- and narrow-band), STOI,
eSTOI, SI-SDR, the composite CSIG/CBAK/COVL and, when ``speechmos`` is installed, DNSMOS.

Pure functions of numpy arrays. ``score(est, clean)`` never crashes on a valid pair: a metric that
cannot be computed (PESQ finds no utterance, a signal too short for STOI) becomes NaN with a
warning, so one odd file does not abort an evaluation.
"""

from __future__ import annotations

import warnings

import numpy as np

from .audio import resample
from .composite import composite
from .errors import AudioError

KEYS = ("pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr", "csig", "cbak", "covl")
DNSMOS_KEYS = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")


def si_sdr(est: np.ndarray, clean: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant SDR in dB (Le Roux et al., 2019), zero-mean signals [N]."""
    est = np.asarray(est, np.float64) - np.mean(est)
    clean = np.asarray(clean, np.float64) - np.mean(clean)
    alpha = np.dot(est, clean) / (np.dot(clean, clean) + eps)
    target = alpha * clean
    return float(10 * np.log10((np.sum(target ** 2) + eps) / (np.sum((est - target) ** 2) + eps)))


def pesq_score(est: np.ndarray, clean: np.ndarray, sr: int, mode: str) -> float:
    """PESQ (``pesq`` package, ITU-T P.862 'nb' / P.862.2 'wb') at 16 kHz; signals at another
    rate are resampled. NaN with a warning when PESQ finds no utterance or otherwise fails."""
    from pesq import pesq

    if sr != 16000:
        est, clean, sr = resample(est, sr, 16000), resample(clean, sr, 16000), 16000
    try:
        return float(pesq(sr, np.asarray(clean, np.float32), np.asarray(est, np.float32), mode))
    except Exception as e:  # pesq.NoUtterancesError, pesq.PesqError, BufferTooShortError
        warnings.warn(f"PESQ-{mode.upper()} not computable ({type(e).__name__}: {e}); NaN",
                      stacklevel=2)
        return float("nan")


def stoi_score(est: np.ndarray, clean: np.ndarray, sr: int, extended: bool) -> float:
    from pystoi import stoi

    name = "eSTOI" if extended else "STOI"
    failed = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            v = float(stoi(np.asarray(clean, np.float64), np.asarray(est, np.float64), sr,
                           extended=extended))
        except Exception as e:  # numpy AxisError inside pystoi for a very short or silent pair
            failed = f"{type(e).__name__}: {e}"
    if failed:
        warnings.warn(f"{name}: not computable ({failed}; the signal is too short or silent); "
                      "NaN", stacklevel=2)
        return float("nan")
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        warnings.warn(f"{name}: signal too short (< 30 frames of 25.6 ms after silence "
                      "removal); NaN", stacklevel=2)
        return float("nan")
    return v


def dnsmos_score(est: np.ndarray, sr: int) -> dict[str, float]:
    """DNSMOS P.835 (OVRL, SIG, BAK) through ``speechmos``; {} when it is not installed.

    speechmos rejects samples outside [-1, 1], so a louder signal is scaled down by its peak
    (DNSMOS is meant to be level-robust; the scores change little).
    """
    try:
        from speechmos import dnsmos
    except Exception:
        return {}
    x = np.asarray(est, np.float32)
    if sr != 16000:
        x = resample(x, sr, 16000)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:
        x = x / peak
    try:
        r = dnsmos.run(x, sr=16000)
    except Exception as e:
        warnings.warn(f"DNSMOS failed ({type(e).__name__}: {e}); NaN", stacklevel=2)
        return {k: float("nan") for k in DNSMOS_KEYS}
    return {"dnsmos_ovrl": float(r["ovrl_mos"]), "dnsmos_sig": float(r["sig_mos"]),
            "dnsmos_bak": float(r["bak_mos"])}


def score(est: np.ndarray, clean: np.ndarray, sr: int = 16000, dnsmos: bool = False) -> dict:
    """All metrics of an estimate against the clean reference, both [N] at ``sr`` Hz.

    Returns a dict with ``pesq_wb, pesq_nb`` (MOS-LQO, 1.04-4.64), ``stoi, estoi`` (0-1),
    ``si_sdr`` (dB), ``csig, cbak, covl`` (1-5), plus ``dnsmos_ovrl, dnsmos_sig, dnsmos_bak``
    when ``dnsmos`` is set and speechmos is installed. Raises AudioError for unequal lengths,
    non-1-D input or NaN/Inf samples.
    """
    est = np.asarray(est, np.float64)
    clean = np.asarray(clean, np.float64)
    if est.ndim != 1 or clean.ndim != 1:
        raise AudioError(f"score: expected 1-D signals, got est {est.shape}, clean "
                         f"{clean.shape}")
    if est.shape != clean.shape:
        raise AudioError(f"score: est has {est.shape[0]} samples, clean {clean.shape[0]} "
                         "(they must have the same length)")
    if not (np.all(np.isfinite(est)) and np.all(np.isfinite(clean))):
        raise AudioError("score: NaN or Inf samples")
    out = {"pesq_wb": pesq_score(est, clean, sr, "wb"),
           "pesq_nb": pesq_score(est, clean, sr, "nb"),
           "stoi": stoi_score(est, clean, sr, extended=False),
           "estoi": stoi_score(est, clean, sr, extended=True),
           "si_sdr": si_sdr(est, clean)}
    comp = composite(clean, est, sr, out["pesq_wb"])
    out.update(csig=comp["csig"], cbak=comp["cbak"], covl=comp["covl"])
    if dnsmos:
        out.update(dnsmos_score(est, sr))
    return out

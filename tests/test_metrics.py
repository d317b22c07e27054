"""Metrics on known degradations, the composite measure against a plain loop port of
composite.m, and the noisy realdev pairs when they are present."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from dyncp.composite import _crit_filters, llr_frames, segsnr_frames, wss_frames
from dyncp.data.noise import mix_at_snr, pink
from dyncp.errors import AudioError
from dyncp.metrics import KEYS, score, si_sdr

SR = 16000
REALDEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "realdev"
if not REALDEV.is_dir():
    REALDEV = Path("/work/shared/data/realdev")


def pseudo_speech(seconds: float = 3.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Voiced syllables: harmonics of a gliding f0 (100-200 Hz) shaped by three moving formants,
    3-5 syllables per second with pauses. PESQ and STOI treat it as speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t) + 20 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = [(700 + 200 * np.sin(2 * np.pi * 2 * t), 90, 1.0),
                (1200 + 500 * np.sin(2 * np.pi * 1.3 * t + 1), 110, 0.6),
                (2600 + 200 * np.sin(2 * np.pi * 0.9 * t), 160, 0.3)]
    x = np.zeros(n)
    for k in range(1, 40):
        fk = k * f0
        amp = 0.02 + sum(w * np.exp(-0.5 * ((fk - fc) / bw) ** 2) for fc, bw, w in formants)
        x += amp * np.sin(k * phase) * (fk < 0.45 * sr)
    env = np.zeros(n)
    pos = int(0.2 * sr)
    while pos < n - int(0.3 * sr):
        d = int(rng.uniform(0.12, 0.3) * sr)
        env[pos:pos + d] = np.hanning(d) * rng.uniform(0.5, 1.0)
        pos += d + int(rng.uniform(0.03, 0.25) * sr)
    x = x * env
    return (0.1 * x / np.sqrt(np.mean(x ** 2))).astype(np.float32)


@pytest.fixture(scope="module")
def clean():
    return pseudo_speech()


@pytest.fixture(scope="module")
def noisy_scores(clean):
    noise = pink(np.random.default_rng(1), len(clean), SR)
    return {snr: score(mix_at_snr(clean, noise, snr), clean) for snr in (0, 20)}


def test_clean_against_itself_scores_near_the_top(clean):
    s = score(clean, clean)
    assert set(KEYS) <= set(s)
    assert s["pesq_wb"] > 4.4 and s["pesq_nb"] > 4.3
    assert s["stoi"] > 0.99 and s["estoi"] > 0.99
    assert s["si_sdr"] > 60
    assert s["csig"] > 4.8 and s["cbak"] > 4.5 and s["covl"] > 4.8


def test_every_metric_is_lower_at_0_db_than_at_20_db(noisy_scores):
    low, high = noisy_scores[0], noisy_scores[20]
    for k in KEYS:
        assert low[k] < high[k], (k, low[k], high[k])
    assert abs(low["si_sdr"] - 0.0) < 0.5 and abs(high["si_sdr"] - 20.0) < 0.5


def test_doing_nothing_does_not_score_like_clean(clean, noisy_scores):
    """A 'model' that returns its noisy input: far below the clean reference on every metric."""
    top = score(clean, clean)
    for snr, s in noisy_scores.items():
        for k in ("pesq_wb", "pesq_nb", "stoi", "estoi", "csig", "cbak", "covl"):
            assert s[k] < top[k] - (0.05 if "stoi" in k else 0.5), (snr, k, s[k], top[k])
    assert noisy_scores[0]["pesq_wb"] < 1.5


def test_si_sdr_is_scale_invariant_and_matches_the_snr(clean):
    noise = pink(np.random.default_rng(3), len(clean), SR)
    est = mix_at_snr(clean, noise, 10.0)
    assert si_sdr(est, clean) == pytest.approx(si_sdr(3.0 * est, clean), abs=1e-6)
    assert si_sdr(est, clean) == pytest.approx(10.0, abs=0.3)


def test_no_utterance_gives_nan_with_a_warning_not_a_crash():
    silence = np.zeros(2 * SR, dtype=np.float32)
    hiss = 1e-4 * np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32)
    with pytest.warns(UserWarning, match="PESQ"):
        s = score(hiss, silence)
    assert np.isnan(s["pesq_wb"]) and np.isnan(s["pesq_nb"])
    assert np.isnan(s["csig"])  # the composite needs PESQ
    assert set(KEYS) <= set(s)


def test_bad_shapes_raise():
    with pytest.raises(AudioError, match="same length"):
        score(np.zeros(100), np.zeros(101))
    with pytest.raises(AudioError, match="1-D"):
        score(np.zeros((2, 100)), np.zeros((2, 100)))
    with pytest.raises(AudioError, match="NaN"):
        score(np.full(100, np.nan), np.zeros(100))


def test_dnsmos_only_when_speechmos_is_installed(clean):
    try:
        import speechmos  # noqa: F401
        have = True
    except Exception:
        have = False
    s = score(2.0 * clean / np.abs(clean).max(), clean, dnsmos=True)  # peak 2: scaled inside
    if have:
        assert 1.0 <= s["dnsmos_ovrl"] <= 5.0
    else:
        assert not any(k.startswith("dnsmos") for k in s)


# -- composite.m, as a plain per-frame loop (reference for the vectorised version) --------------
def _frames_loop(x, sr):
    L = round(30 * sr / 1000)
    hop = L // 4
    w = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, L + 1) / (L + 1)))
    return [x[i * hop:i * hop + L] * w for i in range(int(len(x) / hop - L / hop))]


def _lpc_loop(fr, order):
    n = len(fr)
    r = [np.sum(fr[:n - k] * fr[k:]) for k in range(order + 1)]
    a, e = np.ones(order), r[0]
    for i in range(order):
        s = 0 if i == 0 else np.sum(a[:i] * np.array(r[i:0:-1]))
        k = (r[i + 1] - s) / e
        past = a[:i].copy()
        a[i] = k
        if i > 0:
            a[:i] = past - k * past[::-1]
        e = (1 - k * k) * e
    return np.array(r), np.concatenate([[1.0], -a])


def _llr_loop(c, d, sr):
    out = []
    for fc, fd in zip(_frames_loop(c, sr), _frames_loop(d, sr)):
        with np.errstate(divide="ignore", invalid="ignore"):  # silent frames: 0/0, as in .m
            r, ac = _lpc_loop(fc, 16)
            _, ad = _lpc_loop(fd, 16)
        toe = r[np.abs(np.subtract.outer(np.arange(17), np.arange(17)))]
        out.append(np.log((ad @ toe @ ad) / (ac @ toe @ ac)))
    return np.nan_to_num(np.array(out))


def _wss_loop(c, d, sr):
    L = round(30 * sr / 1000)
    n_fft = int(2 ** np.ceil(np.log2(2 * L)))
    filt, nc, out = _crit_filters(sr, n_fft // 2), 25, []
    for fc, fd in zip(_frames_loop(c, sr), _frames_loop(d, sr)):
        energies = []
        for fr in (fc, fd):
            spec = np.abs(np.fft.fft(fr, n_fft)) ** 2
            energies.append(10 * np.log10(np.maximum(filt @ spec[:n_fft // 2], 1e-10)))
        slopes = [en[1:] - en[:-1] for en in energies]
        w = 0.0
        for en, sl in zip(energies, slopes):
            peaks = []
            for i in range(nc - 1):
                n = i
                if sl[i] > 0:
                    while n < nc - 1 and sl[n] > 0:
                        n += 1
                    peaks.append(en[n - 1])
                else:
                    while n >= 0 and sl[n] <= 0:
                        n -= 1
                    peaks.append(en[n + 1])
            peaks = np.array(peaks)
            w = w + 0.5 * (20 / (20 + en.max() - en[:-1])) * (1 / (1 + peaks - en[:-1]))
        out.append(np.sum(w * (slopes[0] - slopes[1]) ** 2) / np.sum(w))
    return np.array(out)


def test_composite_matches_a_per_frame_loop(clean):
    c = clean[:8000].astype(np.float64)
    d = mix_at_snr(clean, pink(np.random.default_rng(5), len(clean), SR), 5.0)[:8000]
    d = d.astype(np.float64)
    np.testing.assert_allclose(llr_frames(c, d, SR), _llr_loop(c, d, SR), atol=1e-9)
    np.testing.assert_allclose(wss_frames(c, d, SR), _wss_loop(c, d, SR), atol=1e-9)
    seg = segsnr_frames(c, d, SR)
    assert seg.min() >= -10 and seg.max() <= 35 and len(seg) == len(_frames_loop(c, SR))


@pytest.mark.skipif(not REALDEV.is_dir(), reason="shared realdev data not present")
def test_realdev_noisy_pesq_is_in_the_expected_range():
    from dyncp.config import Config
    from dyncp.data import eval_pairs

    pairs = eval_pairs(f"pairs:{REALDEV}", Config(), limit=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = [score(p.noisy, p.clean) for p in pairs]
    pesq = float(np.nanmean([r["pesq_wb"] for r in rows]))
    assert 1.0 < pesq < 2.0  # SPEC: ~1.3 for realdev's noisy input
    assert all(0.3 < r["stoi"] < 1.0 for r in rows)

"""The streaming governor (issue 13 item 2): it holds the average MMAC/s of every window on its
target while the gates spend more on speech than on pauses; a governed stream equals
``model.step`` at the budgets it chose; the hard cap bounds every frame; a time target; bad
targets. A plant simulation checks the control law alone; a randomised tiny budget model whose
gates follow the input level checks it through the Streamer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dyncp.budget import calibrate, feasible
from dyncp.config import load_config
from dyncp.errors import BudgetError
from dyncp.governor import Governor
from dyncp.macs import macs_at, static_macs_per_frame
from dyncp.model import build_model
from dyncp.streaming import Streamer
from conftest import randomize_model
from test_stream_budget import frame_pieces, step_reference
from test_train import _speechlike

torch.set_num_threads(1)
SR = 16000
PAPER = load_config("configs/paper.toml", ["gate.budget=true"])


def window_means(frame_macs, fps, seconds=10.0):
    """Mean MMAC/s of every window of ``seconds`` (sliding by one frame)."""
    w = int(round(seconds * fps))
    c = np.cumsum(np.r_[0.0, np.asarray(frame_macs, np.float64)])
    return (c[w:] - c[:-w]) / w * fps / 1e6


# -- the control law on a simulated plant --------------------------------------------------------
def simulate(gov, cfg, frames, kappa, seed=0, level=None):
    """Run ``gov`` against a plant: a gated frame at Φ computes a share ``kappa(t, Φ)`` of the
    channels (plus noise), a bypassed one costs the static count; ``level``: each frame's input
    Σ|X|² [T] for the activity term (None: none). Returns (MACs [T], Φ [T])."""
    rng = np.random.default_rng(seed)
    total = cfg.model.n_blocks * cfg.model.hidden
    static = float(static_macs_per_frame(cfg))
    phi, spend, phis = gov.reset(), np.zeros(frames), np.zeros(frames)
    for t in range(frames):
        if phi == 0:
            m = static
        else:
            k = np.clip(kappa(t, phi) + 0.03 * rng.standard_normal(), 0, 1)
            m = float(macs_at(cfg, int(round(k * total))))
        spend[t], phis[t] = m, phi
        phi = gov.update(m, level=None if level is None else level[t])
    return spend, phis


def content(frames, fps, seed=0):
    """Speech/pause labels (0.5-6 s / 0.3-3 s) and a noise offset that jumps every 20-60 s."""
    rng = np.random.default_rng(seed)
    speech, noise, t = np.zeros(frames, bool), np.zeros(frames), 0
    while t < frames:
        n = int(rng.uniform(0.5, 6) * fps)
        speech[t:t + n] = True
        t += n + int(rng.uniform(0.3, 3) * fps)
    t = 0
    while t < frames:
        n = int(rng.uniform(20, 60) * fps)
        noise[t:t + n] = rng.uniform(-0.06, 0.06)
        t += n
    return speech, noise


@pytest.mark.parametrize("gain", [0.7, 1.0, 1.4])
@pytest.mark.parametrize("mmac", [20.0, 30.0])
def test_control_law_holds_every_window(gain, mmac):
    """A plant whose gain is off by ±40 % from the calibrated one, speech frames +0.06 κ, noise
    steps: every 10 s window within 3 %, Φ inside the range and on the step grid, speech frames
    spend more; a governor that never moves Φ (open loop) misses by far more."""
    fps = PAPER.stft.frames_per_second
    frames = int(180 * fps)
    speech, noise = content(frames, fps)

    def kappa(t, phi):
        return gain * (1 - phi) + (0.06 if speech[t] else -0.06) + noise[t]

    gov = Governor(mmac=mmac)
    gov.bind(PAPER)
    spend, phis = simulate(gov, PAPER, frames, kappa)
    win = window_means(spend, fps)
    assert np.abs(win / mmac - 1).max() < 0.03
    assert spend[speech].mean() > 1.01 * spend[~speech].mean()
    gated = phis[phis > 0]
    assert gated.min() >= 0.1 and gated.max() <= 0.85
    assert np.allclose(gated, np.round(gated / 1e-3) * 1e-3)
    s = gov.stats()
    assert s["target"] == mmac and s["window_mean"] == pytest.approx(win[-1])
    assert s["window_mean_max"] == pytest.approx(win.max())
    assert s["window_mean_min"] == pytest.approx(win.min())
    assert s["mean"] == pytest.approx(spend.mean() * fps / 1e6)
    # the control matters: open loop (Φ held at its feed-forward) misses the target
    frozen = Governor(mmac=mmac, tau_s=1e9, demand=0.0)
    frozen.bind(PAPER)
    frozen.K_P = 0.0
    open_loop = window_means(simulate(frozen, PAPER, frames, kappa)[0], fps)
    assert np.abs(open_loop / mmac - 1).max() > 0.06


def levels(speech, fps, seed=0):
    """Σ|X|² per frame: noise whose level jumps by up to ±12 dB every 20-60 s with ±2 dB frame
    jitter, speech frames 15 dB above it (±4 dB)."""
    rng = np.random.default_rng(seed)
    db, t = np.zeros(speech.size), 0
    while t < speech.size:
        n = int(rng.uniform(20, 60) * fps)
        db[t:t + n] = rng.uniform(-12, 12)
        t += n
    db += 2 * rng.standard_normal(speech.size) + speech * (15 + 4 * rng.standard_normal(speech.size))
    return 10 ** (db / 10)


def test_activity_moves_spend_to_speech_when_the_gates_cannot():
    """Gates that prune the same share on every frame (κ = 1 - Φ, no speech in it): with the
    activity term the governor still spends more on speech frames, every 10 s window on target;
    without it (speech=0, or no level given) speech and pauses cost the same."""
    fps = PAPER.stft.frames_per_second
    frames = int(180 * fps)
    speech, noise = content(frames, fps, seed=3)
    lev = levels(speech, fps)

    def kappa(t, phi):
        return (1 - phi) + noise[t]

    ratios = {}
    for k, given in ((0.3, lev), (0.0, lev), (0.3, None)):
        gov = Governor(mmac=20.0, speech=k)
        gov.bind(PAPER)
        spend, _ = simulate(gov, PAPER, frames, kappa, level=given)
        assert np.abs(window_means(spend, fps) / 20.0 - 1).max() < 0.03
        ratios[k, given is None] = spend[speech].mean() / spend[~speech].mean()
    assert ratios[0.3, False] > 1.02
    assert abs(ratios[0.0, False] - 1) < 0.005 and abs(ratios[0.3, True] - 1) < 0.005


def test_activity_detector_follows_the_noise_floor():
    """The activity is about 0 in steady noise, 1 in a word 15 dB above it, held briefly after
    speech ends, and back to about 0 a few seconds after the noise itself steps up by 9 dB (the
    floor rises 3 dB/s) and at once after it steps down."""
    fps = PAPER.stft.frames_per_second
    gov = Governor(mmac=20.0)
    gov.bind(PAPER)
    rng = np.random.default_rng(0)
    a = []

    def feed(db, seconds):
        for _ in range(int(seconds * fps)):
            gov._active(10 ** ((db + rng.uniform(-1, 1)) / 10))
            a.append(gov.activity)

    feed(-40, 5)
    assert max(a[-int(2 * fps):]) < 0.05
    feed(-25, 1)                                         # a word: 15 dB above the noise
    assert min(a[-int(0.9 * fps):]) > 0.9
    feed(-40, 0.1)
    assert a[-1] > 0.4                                   # held over a short dip
    feed(-40, 1)
    assert a[-1] < 0.05
    feed(-31, 5)                                         # the noise steps up 9 dB
    assert a[-int(5 * fps)] > 0.2 and max(a[-int(1.5 * fps):]) < 0.05
    feed(-45, 1)                                         # and down
    assert max(a[-int(0.8 * fps):]) < 0.05


def test_dither_below_the_range_and_rails():
    """A target the cheapest gated frame undershoots (the model keeps few channels even at
    Φ 0.1): bypassed frames at the static cost lift the mean to the target. A target the
    model cannot reach (it keeps too many channels even at Φ 0.85) sits on the rail, is flagged,
    and does not wind up: once feasible again the governor is back on target within a window."""
    fps = PAPER.stft.frames_per_second
    frames = int(60 * fps)
    gov = Governor(mmac=40.0)
    gov.bind(PAPER)
    spend, phis = simulate(gov, PAPER, frames, lambda t, phi: 0.6 * (1 - phi))
    assert (phis == 0).any() and (phis > 0).any()
    assert np.abs(window_means(spend, fps) / 40.0 - 1).max() < 0.03
    gov = Governor(mmac=16.0, bypass=False)
    gov.bind(PAPER)
    half = frames // 2
    spend, phis = simulate(gov, PAPER, frames, lambda t, phi: (1 - phi) + (0.3 if t < half else 0))
    assert gov.rail_frames > 0.3 * half and (phis[:half] == 0.85).mean() > 0.9
    after = window_means(spend[half + int(10 * fps):], fps)
    assert np.abs(after / 16.0 - 1).max() < 0.03


def test_a_time_target():
    """``us``: the spend is each frame's measured seconds (here a plant: 20 µs + 1 µs per 10k
    MACs, ±5 % jitter); the mean time holds the target."""
    fps = PAPER.stft.frames_per_second
    frames = int(60 * fps)
    rng = np.random.default_rng(2)
    total = PAPER.model.n_blocks * PAPER.model.hidden
    gov = Governor(us=60.0)
    gov.bind(PAPER)
    phi, times = gov.reset(), []
    for t in range(frames):
        m = float(macs_at(PAPER, int(round(np.clip(1.1 * (1 - phi), 0, 1) * total))))
        sec = (20 + m / 1e4) * 1e-6 * (1 + 0.05 * rng.standard_normal())
        times.append(sec)
        phi = gov.update(m, sec)
    w = int(10 * fps)
    c = np.cumsum(np.r_[0.0, times])
    win = (c[w:] - c[:-w]) / w * 1e6
    assert np.abs(win[w:] / 60.0 - 1).max() < 0.03
    assert gov.stats()["unit"] == "us/frame" and gov.stats()["mean"] == pytest.approx(
        np.mean(times) * 1e6)


def test_bad_targets():
    f = feasible(PAPER)
    with pytest.raises(BudgetError, match="below what this model can run"):
        Governor(mmac=f["mmac_min"] * 0.9).bind(PAPER)
    with pytest.raises(BudgetError, match="one of them"):
        Governor()
    with pytest.raises(BudgetError, match="no run-time budget"):
        Governor(mmac=20).bind(load_config("configs/paper.toml"))
    with pytest.raises(BudgetError, match="cap"):
        Governor(mmac=20, cap_mmac=5).bind(PAPER)
    g = Governor(mmac=100.0)                      # above the static cost: the static model
    g.bind(PAPER)
    assert g.reset() == 0.0 and g.update(float(static_macs_per_frame(PAPER))) == 0.0
    g = Governor(mmac=20)
    g.bind(PAPER)
    with pytest.raises(BudgetError):
        g.set_target(mmac=1.0)
    g.set_target(mmac=30.0)
    assert g.stats()["target"] == 30.0


# -- through the Streamer, on a model whose gates follow the input level --------------------------
def level_model():
    """A tiny budget model whose gate scores grow with the input level (positive first layer,
    positive second layer, thresholds spread), calibrated on synthetic audio: louder frames
    open more channels at a given Φ, as a trained model opens more on speech."""
    cfg = load_config("configs/tiny.toml", ["gate.budget=true"])
    torch.manual_seed(0)
    m = randomize_model(build_model(cfg), seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for blk in m.blocks:
            gate = blk.gate
            gate.budget_slope.uniform_(-0.5, 1.5, generator=g)
            gate.score1.weight.abs_()
            gate.score1.bias.zero_()
            gate.score2.weight.copy_(0.5 + torch.rand(gate.score2.weight.shape, generator=g))
            gate.score2.bias.copy_(-2 * torch.rand(gate.score2.bias.shape, generator=g))
    rng = np.random.default_rng(1)
    calibrate(m, [SimpleNamespace(noisy=noisy_stream(3.0, rng)[0]) for _ in range(4)],
              points=16)
    return m.eval()


def noisy_stream(seconds, rng):
    """Speech-like bursts (0.5-4 s) and pauses (0.3-2.5 s) in noise whose level and colour
    change every 8-20 s; returns (samples, speech label per sample)."""
    total = int(seconds * SR)
    parts, labels, n = [], [], 0
    while n < total:
        k = int(rng.uniform(0.5, 4) * SR)
        parts += [_speechlike(rng, k / SR), np.zeros(int(rng.uniform(0.3, 2.5) * SR), np.float32)]
        labels += [np.ones(k, bool), np.zeros(parts[-1].size, bool)]
        n += k + parts[-1].size
    x, speech = np.concatenate(parts)[:total], np.concatenate(labels)[:total]
    white, noise, i = rng.standard_normal(total), np.empty(total), 0
    while i < total:
        seg = white[i:i + int(rng.uniform(8, 20) * SR)].copy()
        a = rng.uniform(-0.9, 0.9)
        for j in range(1, seg.size):
            seg[j] += a * seg[j - 1]
        noise[i:i + seg.size] = seg * 10 ** rng.uniform(-2.5, -0.8) / (seg.std() + 1e-9)
        i += seg.size
    return (x + noise).astype(np.float32), speech


@pytest.fixture(scope="module")
def model():
    return level_model()


def test_governed_stream_holds_every_window(model):
    """120 s of bursts and pauses in changing noise, sparse engine: every 10 s window's mean
    within 3 % of the target, more spent on speech frames than on pauses; the same stream at the
    fixed Φ the governor starts from misses by more than 10 %."""
    cfg = model.cfg
    fps = cfg.stft.frames_per_second
    x, speech = noisy_stream(120.0, np.random.default_rng(5))
    f = feasible(cfg)
    # a target this stream can meet (a lower one sits on Φ 0.85 in the loudest noise: flagged)
    target = f["mmac_min"] + 0.7 * (f["mmac_at_phi_min"] - f["mmac_min"])
    gov = Governor(mmac=target)
    s = Streamer(model, "sparse", governor=gov, record_gates=False, record_macs=True)
    s.process(x, chunk=256)
    fm = np.array(s.stats.frame_macs)
    assert len(fm) == s.stats.frames == x.size // cfg.stft.hop + 1
    win = window_means(fm, fps)
    assert np.abs(win / target - 1).max() < 0.03 and gov.rail_frames < 0.01 * len(fm)
    assert s.stats.mmac_per_s == pytest.approx(target, rel=0.01)
    assert gov.stats()["mean_mmac_per_s"] == pytest.approx(s.stats.mmac_per_s)
    on_speech = speech[np.minimum(np.arange(len(fm)) * cfg.stft.hop, x.size - 1)]
    assert fm[on_speech].mean() > fm[~on_speech].mean()
    phis = np.array(s.stats.frame_phi)
    assert np.ptp(phis) > 0.2                            # it had to work for it
    fixed = Streamer(model, "sparse", phi=phis[0], record_gates=False, record_macs=True)
    fixed.process(x, chunk=256)
    assert np.abs(window_means(fixed.stats.frame_macs, fps) / target - 1).max() > 0.1


@pytest.mark.parametrize("engine", ["torch", "sparse"])
def test_governed_stream_equals_model_step_at_its_budgets(model, engine):
    """The governor's per-frame Φ (a fast loop: Φ moves every few frames) replayed through
    model.step gives the same samples and gates; both engines choose the same budgets."""
    x, _ = noisy_stream(3.0, np.random.default_rng(7))
    f = feasible(model.cfg)
    s = Streamer(model, engine, record_macs=True,
                 governor=Governor(mmac=0.5 * (f["mmac_min"] + f["mmac_at_phi_min"]),
                                   tau_s=0.05, slew=0.2))
    out = np.concatenate([s.flush() if p is None else s.feed(p) for p in frame_pieces(model, x)])
    phis = s.stats.frame_phi
    assert len(set(phis)) > 10
    ref, ref_gates = step_reference(model, x, phis)
    assert np.abs(out - ref).max() < 1e-5 and np.array_equal(s.gates, ref_gates)
    other = Streamer(model, "dense" if engine == "torch" else "torch", record_macs=True,
                     governor=Governor(mmac=0.5 * (f["mmac_min"] + f["mmac_at_phi_min"]),
                                       tau_s=0.05, slew=0.2))
    other.process(x, chunk=300)
    assert other.stats.frame_phi == phis


def test_hard_cap_bounds_every_frame(model):
    """``cap_mmac``: no frame costs more, whatever the audio (loud noise included); without it
    some frames do; the torch engine cannot enforce it."""
    cfg = model.cfg
    fps = cfg.stft.frames_per_second
    x, _ = noisy_stream(20.0, np.random.default_rng(3))
    x[SR:3 * SR] *= 8                                    # a loud stretch: every gate wants in
    f = feasible(cfg)
    target = 0.5 * (f["mmac_min"] + f["mmac_at_phi_min"])
    cap = target * 1.05
    free = Streamer(model, "sparse", governor=Governor(mmac=target), record_macs=True)
    free.process(x)
    assert max(free.stats.frame_macs) * fps / 1e6 > cap
    gov = Governor(mmac=target, cap_mmac=cap)
    capped = Streamer(model, "sparse", governor=gov, record_macs=True)
    capped.process(x)
    assert max(capped.stats.frame_macs) * fps / 1e6 <= cap
    k = gov.cap_channels
    assert 0 < k < cfg.model.hidden and (capped.gates.sum(1) <= k).all()
    assert gov.stats()["cap_channels_per_block"] == k
    with pytest.raises(BudgetError, match="dense or sparse"):
        Streamer(model, "torch", governor=Governor(mmac=target, cap_mmac=cap))

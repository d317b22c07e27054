"""The streaming governor (issue 13 item 2): hold a stream's average compute at a target, frame
by frame, on a budget model.

A budget model's cost per frame is affine in the share κ of gated channels it computes
(docs/budget.md): ``macs_at(active) = C0 + G·κ`` with ``C0`` the front-end, back-end and gates and
``G`` every gated channel (dyncp/macs.py). At a fixed Φ the gates already spend more on hard
frames than on easy ones; the request Φ only moves where they cut. So the governor works on two
time scales: the gates reallocate frame by frame, the governor moves Φ slowly so that the
*average* spend stays on the target (video rate control, with Φ in place of the quantiser).

Per frame, after the frame ran and cost ``spend`` (MACs from dyncp/macs.py, or measured
seconds), in units of κ (``e = (spend - target) / G``):

    u_ff       the open-loop Φ of the target (dyncp.budget.phi_for), feed-forward
    debt D    += e                      token bucket: what the stream overspent so far
    ē         += (e - ē) / 16           short-term error
    Φ_next     = u_ff + K_i·D + K_p·ē - K_d·(κ̄_8 - κ̄_W/2) - K_s·(a - ā)
                                        clamped to the model's range, slew-limited, rounded
                                        to ``step`` (a: the input's activity, below)

``K_i = 1 / (tau_s · frames per second)``: a loop time constant of ``tau_s`` (0.25 s), slow next to
the frame-by-frame reallocation the gates do, fast next to the averaging ``window_s`` (10 s): a
change of content the gates respond to (a new noise) is absorbed in well under a window.
Anti-windup by conditional integration (no integration towards a rail the request already sits
on; such frames are counted: the budget was out of the model's reach there), the debt bounded by
half a window of full-range error. ``demand`` (``K_d``, [decided], off by default): when the
last frames' gates opened more channels than the mean of the last half window (hard frames), Φ
goes *down*, so that the stream spends more where the gates ask for it; the debt pays it back.

``speech`` (``K_s``, [decided], on by default): the gates of the trained models prune almost
the same channels on every frame (docs/study.md), so their demand cannot tell speech from a
pause. The governor therefore reads the input itself: a frame's level ``L`` (dB of Σ|X|², the
network's own input) against a noise floor that follows the level down at once and creeps up
by ``FLOOR_RISE_DB`` per second (minimum tracking, as classic noise estimators do) gives an
activity ``a`` = 0 at ``ON_DB`` above the floor, 1 at ``ON_DB + SPAN_DB`` above, held for
``RELEASE_S`` after speech stops (speech has short dips between syllables). The next frame's
request moves by ``- K_s·(a - ā)`` around the activity's mean ā over half a window: speech
frames get a lower Φ (more channels), pauses a higher one, and the mean stays on the target
(the debt pays back what is left). One frame late (the frame's Φ is chosen before it is
analysed); speech lasts hundreds of frames.

A target of at least the static cost runs Φ = 0 (the static model) throughout. A target between
what the model spends at the bottom of its range and the static cost: when the request falls
below the range while the stream is under budget, the next frame is bypassed (Φ = 0, the static
cost) [decided]: the mix of bypassed and gated frames lands on the target (``bypass=False``:
never).

``us``: the target is a measured compute time per frame; the spend is each frame's measured
seconds and ``G`` in seconds is learnt online (seconds per MAC, a slow average), the same loop.

``cap_mmac``: a hard cap per frame (in MMAC/s, the rate a frame would cost if every frame cost
that much). [decided] It is enforced by the runtime's thresholds: each block may open only its
``k`` channels that a budget model keeps longest (lowest threshold at the top of its range), with
``k`` the most channels per block that fit the cap, so that no frame can cost more, whatever the
audio (the floor ``gate.min_active`` included). Needs the dense or sparse engine.

Pure Python, O(1) per frame; its state (debt, errors, the last request) belongs to one stream:
one Governor per Streamer.
"""

from __future__ import annotations

import math
from collections import deque

from .budget import feasible, phi_for
from .errors import BudgetError
from .macs import frames_per_second, macs_at, per_channel_macs, static_macs_per_frame


class Governor:
    """``Governor(mmac=20)`` (MMAC/s) or ``Governor(us=400)`` (µs of compute per frame); give it
    to one ``Streamer(model, governor=...)``.

    ``window_s``: the averaging window of the statistics (and the goal: every ``window_s``
    window's mean on target); ``tau_s``: the loop's time constant; ``demand``: how strongly a
    frame whose gates asked for more than the recent mean lowers the next frame's Φ (0: off);
    ``speech``: how far (in Φ) a frame of full input activity lowers the next frame's Φ
    against the recent mean activity (default ``SPEECH``; 0: off; needs each frame's level,
    which a Streamer gives);
    ``slew``: the largest change of Φ from one frame to the next; ``step``: Φ is rounded to this
    (the runtime caches one threshold set per value); ``cap_mmac``: a hard cap per frame;
    ``bypass``: may run bypassed frames (Φ = 0) to reach a target above the range's cost."""

    K_P = 0.5      # proportional gain on the short-term error (κ units; the plant's gain is ~1)
    FLOOR_RISE_DB = 3.0     # dB per second the noise floor may rise
    ON_DB, SPAN_DB = 3.0, 9.0   # activity 0 at ON_DB above the floor, 1 at ON_DB + SPAN_DB
    RELEASE_S = 0.2         # activity held after the level falls (time constant, seconds)
    SPEECH = 0.3            # default ``speech`` gain (benchmarks/budget.py measured 0.15 and 0.3)

    def __init__(self, mmac: float | None = None, us: float | None = None, window_s: float = 10.0,
                 tau_s: float = 0.25, demand: float = 0.0, slew: float = 0.1, step: float = 1e-3,
                 cap_mmac: float | None = None, bypass: bool = True, speech: float | None = None) -> None:
        if (mmac is None) == (us is None):
            raise BudgetError("Governor: give the target as mmac (MMAC/s) or as us (µs per "
                              "frame), one of them")
        speech = self.SPEECH if speech is None else float(speech)
        if window_s <= 0 or tau_s <= 0 or slew <= 0 or step <= 0 or demand < 0 or speech < 0:
            raise ValueError("Governor: window_s, tau_s, slew and step must be > 0, demand and "
                             "speech >= 0")
        self.speech = speech
        self.mmac, self.us = mmac, us
        self.window_s, self.tau_s, self.demand = float(window_s), float(tau_s), float(demand)
        self.slew, self.step, self.cap_mmac = float(slew), float(step), cap_mmac
        self.bypass = bool(bypass)
        self.cfg = None

    # -- set-up ------------------------------------------------------------------------------------
    def bind(self, cfg) -> None:
        """Check the target against ``cfg``'s budget range and derive the loop's constants (the
        Streamer calls it). Raises BudgetError."""
        if not (cfg.gate.enabled and cfg.gate.budget):
            phi_for(cfg, 0.5)                                  # raises: no run-time budget
        m, g = cfg.model, cfg.gate
        self.cfg, self.fps = cfg, frames_per_second(cfg)
        self.total = m.n_blocks * m.hidden
        self.c0 = float(macs_at(cfg, 0))
        self.gain = float(per_channel_macs(cfg) * self.total)           # G: MACs of κ = 1
        self.static = float(static_macs_per_frame(cfg))
        self.phi_min, self.phi_max = g.budget_min, g.budget_max
        self.window = max(int(round(self.window_s * self.fps)), 1)
        self.k_i = 1.0 / (self.tau_s * self.fps)
        self._long = max(self.window / 2.0, 1.0)         # frames of the demand's reference mean
        self._rise = self.FLOOR_RISE_DB / self.fps       # dB per frame
        self._release = math.exp(-1.0 / (self.RELEASE_S * self.fps))
        self.cap_channels = None
        if self.cap_mmac is not None:
            per_block = ((self.cap_mmac * 1e6 / self.fps - self.c0)
                         / per_channel_macs(cfg) / m.n_blocks)
            least = max(g.min_active, 1)
            if not math.isfinite(per_block) or per_block < least:
                f = feasible(cfg)
                floor = macs_at(cfg, m.n_blocks * least) * self.fps / 1e6
                raise BudgetError(f"cap {self.cap_mmac:g} MMAC/s: below what one frame costs with "
                                  f"{least} channel(s) per block ({floor:.2f} MMAC/s); the model "
                                  f"runs {f['mmac_min']:.2f} to {f['mmac_static']:.2f} MMAC/s")
            self.cap_channels = min(int(per_block), m.hidden)
        self.set_target(self.mmac, self.us)

    def set_target(self, mmac: float | None = None, us: float | None = None) -> None:
        """A new target, from the next frame on (the debt is kept: what was overspent is still
        owed). Raises BudgetError for a target the model cannot run."""
        if (mmac is None) == (us is None):
            raise BudgetError("Governor.set_target: give mmac or us, one of them")
        self.mmac, self.us = mmac, us
        if self.cfg is None:
            return
        if mmac is not None:
            u = phi_for(self.cfg, mmac=mmac)                   # raises below the range
            if self.cap_mmac is not None and mmac > self.cap_mmac:
                raise BudgetError(f"target {mmac:g} MMAC/s is above the cap {self.cap_mmac:g}")
            self.static_mode = u == 0.0 and self.cap_channels is None
            self._dither = self.bypass and self.cap_channels is None
            self.target = mmac * 1e6 / self.fps                 # MACs per frame
            self.u_ff = self.phi_min if u == 0.0 else u
        else:
            if not (us > 0 and math.isfinite(us)):
                raise BudgetError(f"target {us!r} µs per frame: must be a positive number")
            self.static_mode = False
            self._dither = self.bypass and self.cap_channels is None
            self.target = us * 1e-6                             # seconds per frame
            self.u_ff = None                                    # known once a frame is timed
        if not hasattr(self, "debt"):
            self.reset()
        elif self.static_mode:
            self.phi = 0.0                                      # from the next frame on

    def reset(self) -> float:
        """A new stream: no debt; returns the Φ of its first frame."""
        self.debt, self.err, self.kappa_mean = 0.0, 0.0, None
        self.sec_per_mac = None
        self.frames, self.spent, self.spent_macs = 0, 0.0, 0.0
        self._win: deque = deque()
        self._win_sum = 0.0
        self.window_max = self.window_min = None
        self.rail_frames = 0
        self.floor, self.activity, self.activity_mean = None, 0.0, None
        self.u = min(max(self.u_ff if self.u_ff is not None
                         else 0.5 * (self.phi_min + self.phi_max), self.phi_min), self.phi_max)
        self.phi = 0.0 if self.static_mode else self._round(self.u)
        return self.phi

    def _round(self, u: float) -> float:
        return min(max(round(u / self.step) * self.step, self.phi_min), self.phi_max)

    # -- per frame ---------------------------------------------------------------------------------
    def update(self, macs: float, seconds: float = 0.0, level: float | None = None) -> float:
        """The frame just run cost ``macs`` (dyncp/macs.py) and took ``seconds``; ``level``: its
        input's Σ|X|² (None: no activity term); returns the Φ for the next frame. O(1)."""
        spend = macs if self.us is None else seconds
        self.frames += 1
        self.spent += spend
        self.spent_macs += macs
        self._window(spend)
        if self.static_mode:
            return self.phi
        unit = self.gain                                    # MACs of the whole range of κ
        if self.us is not None:        # seconds per MAC, learnt: the plant's gain in seconds
            r = seconds / max(macs, 1.0)
            self.sec_per_mac = r if self.sec_per_mac is None else \
                self.sec_per_mac + (r - self.sec_per_mac) / 256.0
            unit = self.gain * self.sec_per_mac
            self.u_ff = 1.0 - (self.target / self.sec_per_mac - self.c0) / self.gain
        if self.phi > 0:                                    # a gated frame: its demand
            kappa = (macs - self.c0) / self.gain            # the share of channels computed
            if self.kappa_mean is None:
                self.kappa_mean = self.kappa_short = kappa
            self.kappa_mean += (kappa - self.kappa_mean) / self._long
            self.kappa_short += (kappa - self.kappa_short) / 8.0
        e = (spend - self.target) / unit                    # overspend, in units of κ
        self.err += (e - self.err) / 16.0
        bound = 0.5 * self.window                           # the bucket's size
        debt = min(max(self.debt + e, -bound), bound)
        u = self.u_ff + self.k_i * debt + self.K_P * self.err
        if (u >= self.phi_max and e > 0) or (u <= self.phi_min and e < 0 and not self._dither):
            self.rail_frames += 1      # anti-windup: no integration towards a rail it sits on
        else:
            self.debt = debt
        u = self.u_ff + self.k_i * self.debt + self.K_P * self.err
        if self.kappa_mean is not None:
            u -= self.demand * (self.kappa_short - self.kappa_mean)
        if level is not None and self.speech > 0:
            # symmetric around u: a shift never pushes the request onto a rail of the range
            room = max(min(u - self.phi_min, self.phi_max - u), 0.0)
            u -= min(self.speech, room) * self._active(level)
        self.u = min(max(u, self.u - self.slew, self.phi_min), self.u + self.slew, self.phi_max)
        # below the range and under budget: a bypassed frame (the static cost, above the target)
        # now and then lifts the average to the target [decided]
        self.phi = 0.0 if self._dither and u < self.phi_min and self.debt < 0 \
            else self._round(self.u)
        return self.phi

    def _active(self, level: float) -> float:
        """The frame's input activity minus its recent mean (see the module docstring)."""
        db = 10.0 * math.log10(max(level, 1e-20))
        self.floor = db if self.floor is None or db < self.floor else self.floor + self._rise
        a = min(max((db - self.floor - self.ON_DB) / self.SPAN_DB, 0.0), 1.0)
        self.activity = max(a, self.activity * self._release)
        if self.activity_mean is None:
            self.activity_mean = self.activity
        self.activity_mean += (self.activity - self.activity_mean) / self._long
        return self.activity - self.activity_mean

    def _window(self, spend: float) -> None:
        """The sliding window's sum in O(1); its mean's extremes over the stream."""
        self._win.append(spend)
        self._win_sum += spend
        if len(self._win) > self.window:
            self._win_sum -= self._win.popleft()
        if len(self._win) == self.window:
            m = self._win_sum / self.window
            self.window_max = m if self.window_max is None else max(self.window_max, m)
            self.window_min = m if self.window_min is None else min(self.window_min, m)

    # -- report ------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Budget and use: the target, the mean spend so far and over the last window (MMAC/s,
        or µs per frame for a time target), the extremes of the window mean over the stream
        (full windows only), the frames the request sat on a rail of the range, the Φ of the
        next frame."""
        unit = (lambda v: v * self.fps / 1e6) if self.us is None else (lambda v: v * 1e6)
        full = len(self._win) == self.window
        out = {"target": self.mmac if self.us is None else self.us,
               "unit": "MMAC/s" if self.us is None else "us/frame",
               "frames": self.frames, "phi_next": self.phi,
               "mean": unit(self.spent / self.frames) if self.frames else None,
               "mean_mmac_per_s": self.spent_macs / self.frames * self.fps / 1e6
               if self.frames else None,
               "window_s": self.window_s,
               "window_mean": unit(self._win_sum / len(self._win)) if self._win else None,
               "window_mean_max": unit(self.window_max) if full else None,
               "window_mean_min": unit(self.window_min) if full else None,
               "rail_frames": self.rail_frames, "cap_mmac": self.cap_mmac,
               "cap_channels_per_block": self.cap_channels}
        return out

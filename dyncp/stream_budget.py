"""A stream's compute: the budget it runs at (fixed, or picked frame by frame by a governor) and
what it spends (issue 13; docs/budget.md).

:class:`StreamBudget` is the :class:`dyncp.streaming.Streamer`'s budget, per stream: it checks a
request (:func:`dyncp.budget.phi_for`: BudgetError for a model without a budget or a request
outside its range), applies it to the engine (the numba runtime's thresholds and bypass flag,
:meth:`dyncp.runtime.SparseRuntime.set_budget`; ``model.step(phi=)`` for the torch engine) and,
after each frame of a per-frame run, logs what the frame cost and lets the
:class:`dyncp.governor.Governor` pick the next frame's Φ. :class:`StreamStats` counts frames,
channels and MACs; every MAC figure comes from dyncp/macs.py: the static count on a bypassed
frame (Φ = 0: no gate ran), ``macs_at`` of the channels open on a gated one.
"""

from __future__ import annotations

import numpy as np

from .errors import BudgetError, DyncpError
from .macs import macs_at, static_macs_per_frame
from .stream_dsp import FRAMES, OPEN


class StreamStats:
    """Running counters (constant memory): ``frames``, ``active`` (gated channels open summed
    over frames, every channel on a bypassed frame; 0 for a static model), ``bypassed`` (frames
    run at Φ = 0), compute ``seconds``; ``phi``: the budget the next frame runs at (None for a
    model without a run-time budget); ``macs`` and ``mmac_per_s``: the MACs spent. Per frame,
    when asked: ``times`` (seconds, ``record_times``; a call that runs several frames counts its
    time split evenly), ``frame_macs`` and ``frame_phi`` (MACs spent and budget,
    ``record_macs``). ``frames`` and ``active`` are read from the stream's counters, which the
    compiled loop updates."""

    def __init__(self, counters: np.ndarray, cfg) -> None:
        self._c, self._cfg, self._gated = counters, cfg, cfg.gate.enabled
        self.seconds = 0.0
        self.bypassed = 0
        self.phi: float | None = None
        self.times: list[float] = []
        self.frame_macs: list[float] = []
        self.frame_phi: list[float | None] = []

    @property
    def frames(self) -> int:
        return int(self._c[FRAMES])

    @property
    def active(self) -> int:
        return int(self._c[OPEN]) if self._gated else 0

    @property
    def macs(self) -> float:
        """MACs spent over the frames so far: the static count per bypassed frame, and for the
        gated frames their number times ``macs_at`` of their mean channels open (macs_at is
        affine, so that is the sum of each frame's ``macs_at``)."""
        cfg, n = self._cfg, self.frames
        static = float(static_macs_per_frame(cfg))
        if not self._gated:
            return n * static
        gated = n - self.bypassed
        open_ = self.active - self.bypassed * cfg.model.n_blocks * cfg.model.hidden
        return self.bypassed * static + (gated * float(macs_at(cfg, open_ / gated)) if gated
                                         else 0.0)

    @property
    def mmac_per_s(self) -> float:
        """Mean MACs per frame spent so far, in MMAC/s (0 before the first frame)."""
        if not self.frames:
            return 0.0
        return self.macs / self.frames * self._cfg.stft.frames_per_second / 1e6


class StreamBudget:
    """One stream's budget. ``phi``/``mmac``: a fixed request (neither: the model's nominal
    budget); ``governor``: picks each frame's Φ instead; ``record_macs``: log each frame's MACs
    and Φ. ``runtime``: the stream's :class:`~dyncp.runtime.SparseRuntime` (None: the torch
    engine, which reads ``stats.phi``). Raises BudgetError for what the model cannot run."""

    def __init__(self, cfg, runtime, phi=None, mmac=None, governor=None,
                 record_macs: bool = False) -> None:
        self.cfg, self.runtime, self.governor = cfg, runtime, governor
        self.gated = cfg.gate.enabled
        self.budgeted = bool(self.gated and cfg.gate.budget)
        self.record_macs = record_macs
        self.per_frame = governor is not None or record_macs   # one frame per compiled call
        m = cfg.model
        self._static = float(static_macs_per_frame(cfg))
        self._cost = [float(c) for c in macs_at(cfg, np.arange(m.n_blocks * m.hidden + 1))]
        self.cap = None
        if governor is not None:
            if phi is not None or mmac is not None:
                raise BudgetError("Streamer: a governor picks the budget; give phi/budget or a "
                                  "governor, not both")
            governor.bind(cfg)
            self.cap = governor.cap_channels
            if self.cap is not None and runtime is None:
                raise BudgetError("Streamer: a hard cap per frame needs the dense or sparse "
                                  "engine (the runtime's thresholds enforce it)")
        self._request = (phi, mmac)
        self.resolve(phi, mmac)                     # raises before any state exists
        self.stats, self.net = None, None

    def resolve(self, phi=None, mmac=None) -> float | None:
        """The Φ a request runs (the nominal budget for none; None for a model without a
        budget). Raises BudgetError."""
        from .budget import phi_for

        req = phi_for(self.cfg, phi, mmac)
        if not self.budgeted:
            return None
        return float(self.cfg.loss.prune_target) if req is None else req

    def start(self, stats: StreamStats, net) -> None:
        """A new stream (``stats``, the engine's state ``net``): the request again, or the
        governor restarted."""
        self.stats, self.net = stats, net
        self.apply(self.governor.reset() if self.governor is not None
                   else self.resolve(*self._request))

    def apply(self, phi: float | None) -> None:
        """Run the next frames at ``phi`` (resolved: in the model's range)."""
        if self.runtime is not None and self.budgeted:
            self.runtime.apply_budget(self.net, phi, self.cap)
        self.stats.phi = phi

    def set(self, phi=None, mmac=None) -> float | None:
        """:meth:`dyncp.streaming.Streamer.set_budget`."""
        if self.governor is not None:
            raise DyncpError("Streamer.set_budget: a governor sets this stream's budget; change "
                             "its target (streamer.governor.set_target)")
        req = self.resolve(phi, mmac)
        self._request = (phi, mmac)
        self.apply(req)
        return req

    @property
    def bypass(self) -> bool:
        """The next frame runs at Φ = 0: no gate, every channel."""
        return self.budgeted and self.stats.phi == 0.0

    def frame_done(self, n_open: int, bypass: bool, seconds: float, mag: np.ndarray) -> None:
        """After each frame of a per-frame run: log its MACs and Φ, let the governor pick the
        next frame's Φ (O(1)); ``mag``: the frame's input |X| (the governor's activity)."""
        macs = self._static if bypass or not self.gated else self._cost[n_open]
        s = self.stats
        if self.record_macs:
            s.frame_macs.append(macs)
            s.frame_phi.append(s.phi)
        if self.governor is not None:
            g = self.governor
            phi = g.update(macs, seconds, float(np.dot(mag, mag)) if g.speech else None)
            if phi != s.phi:
                self.apply(phi)

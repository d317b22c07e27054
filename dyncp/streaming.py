"""Frame-by-frame enhancement with explicit state: what a headset would run.

``Streamer(model).feed(samples)`` takes any number of samples (0, 1, 160, 256, 1000, ...) and
returns the enhanced samples that are ready; ``flush()`` returns the tail; ``reset()`` starts a
new stream. Concatenated, the output equals offline :func:`dyncp.enhance.enhance_tensor` on the
whole signal (max abs difference < 1e-5, ``tests/test_streaming.py``), and ``.gates`` equals the
offline gates frame by frame. Why that is exact: :mod:`dyncp.stream_dsp`.

Latency: a sample leaves at most ``n_fft - 1`` samples after it arrives (one window, 32 ms for
the paper config; SPEC §1), plus the compute time of one frame.

State is explicit (``StreamState``): the STFT rings (:class:`~dyncp.stream_dsp.StftState`) and
the network's state, either ``model.initial_state(1)`` (torch engine) or a
:class:`~dyncp.runtime.RuntimeState` (dense and sparse engines). The network is the same model:
the torch engine calls ``model.step``; the numba engines run :mod:`dyncp.runtime` built from the
same weights, and for them one compiled call per ``feed`` does everything
(:func:`feed_frames`: STFT, network, iSTFT, for every frame that becomes ready):
no Python per frame, no temporaries, the kernel's own count of open gates, gates copied out
only when ``record_gates``.

The caller's model is left as it was: its train/eval mode is not touched. The numba engines
copy the weights (BatchNorm running statistics, as in eval mode); the torch engine runs a private
copy in eval mode. Either way the weights are taken when the Streamer is built.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numba import njit

from . import kernel, stream_dsp
from .kernel import I_BYPASS, I_OPEN, frame, state_views
from .errors import AudioError, DyncpError
from .model import ConvFSENet, require_causal
from .runtime import MODES, SparseRuntime
from .stream_budget import StreamBudget, StreamStats
from .stream_dsp import (HELD, OPEN, StftState, analyse, nonfinite, push, stft_state,
                         stft_tables, synthesise, tail)

ENGINES = ("torch",) + MODES
_NO_LIMIT = np.iinfo(np.int64).max


@dataclass
class StreamState:
    """Everything a stream carries from one frame to the next."""

    stft: StftState
    net: object  # list[torch.Tensor] (torch engine) or RuntimeState (dense/sparse)


def eval_copy(model: ConvFSENet) -> ConvFSENet:
    """``model`` itself when every module is in eval mode, else a copy in eval mode: BatchNorm
    running statistics, no gate noise, as offline enhancement; the caller's model unchanged."""
    if not any(m.training for m in model.modules()):
        return model
    return copy.deepcopy(model).eval()


# -- the compiled loop ---------------------------------------------------------------------------
def _compile_feed(stamp: str):
    """:func:`feed_frames`, with ``stamp`` (a hash of the source files of the compiled code it
    calls) in its numba cache key. numba's disk cache checks only the file a function is defined
    in: a cached function calling kernels from other files would keep their old machine code after
    those files change (numba's documented caveat; seen here). numba hashes a closure's cell
    contents into the cache key, so a changed kernel.py or stream_dsp.py recompiles this loop."""

    @njit(cache=True, nogil=True)
    def feed_frames(x, count, limit, out, glog, tf, ti, af, ac, mag, wf, wi, sf, si, gates):
        """Push ``x`` into one stream and run every frame that becomes ready: :func:`analyse`, the
        network (:func:`frame`), :func:`synthesise`. ``count``: ``x`` is input (False: the end
        padding of ``flush``); ``limit``: the most samples the stream emits in all. The caller's
        buffers receive the samples now final (``out``, float32, room for
        :func:`frames_bound` frames) and, when ``glog`` has rows, each frame's gates
        ([frames, n_blocks, H] uint8). Returns (samples written to ``out``, frames run); the
        frame count is -n when n samples of ``x`` are NaN or Inf, and then nothing was done.
        [decided] Buffers from the caller, not arrays returned: numba boxes each returned array
        into a new numpy object (~0.5 µs), a tenth of the streamer's own cost per frame."""
        stamp  # noqa: B018 (in the cache key: see _compile_feed)
        n = ti[0]
        bad = nonfinite(x)
        if bad:
            return 0, -bad
        record = glog.shape[0] > 0
        mask = state_views(sf, wi)[2]
        i, o, frames = 0, 0, 0
        while True:
            i = push(x, i, af, ac, n, count)
            if ac[HELD] < n:
                return o, frames
            analyse(af, ac, tf, ti, mag)
            frame(mag, wf, wi, sf, si, gates)
            ac[OPEN] += si[I_OPEN]
            if record:
                glog[frames] = gates
            o = synthesise(mask, af, ac, tf, ti, out, o, limit)
            frames += 1

    return feed_frames


def frames_bound(samples: int, hop: int) -> int:
    """The most frames that ``samples`` new samples can complete (the stream holds fewer than
    ``n_fft`` before them)."""
    return samples // hop + 1


feed_frames = _compile_feed(hashlib.sha256(b"".join(
    Path(m.__file__).read_bytes() for m in (kernel, stream_dsp))).hexdigest())


class Streamer:
    """Causal frame-by-frame enhancement of one mono stream at the model's sample rate.

    ``model``: a causal :class:`ConvFSENet`, or a :class:`~dyncp.runtime.SparseRuntime` whose
    weights this stream then shares with others (many streams, one copy of the weights; each
    Streamer owns its state, so streams may run in parallel threads). ``engine``: ``torch``
    (``model.step``; the default for a model), ``dense`` or ``sparse`` (the runtime; the
    default for a runtime is its mode). ``sr``: the sample rate of the samples you feed; it must
    equal the model's ([decided] an error rather than silent resampling, whose filter delay would
    break the equality with offline enhancement). ``record_gates``: keep every frame's gates for
    ``.gates`` (turn off for long streams: 2.3 kB per frame for the paper model);
    ``record_times``: keep each frame's compute time in seconds (``.stats.times``).

    The run-time budget of a budget model (docs/budget.md): ``phi`` (a pruning ratio; 0 runs
    every channel and no gate, the static cost) or ``budget`` (MMAC/s, the lowest Φ that fits,
    :func:`dyncp.budget.phi_for`); neither: the model's nominal budget. :meth:`set_budget`
    changes it between any two frames. ``governor``: a :class:`dyncp.governor.Governor` that
    picks each frame's Φ to hold an average budget (one per stream; it replaces ``phi`` and
    ``budget``). ``record_macs``: keep each frame's MACs and Φ (``.stats.frame_macs``,
    ``.stats.frame_phi``). A budget for a model without one, or outside its range, raises
    BudgetError. Per-frame budgets (a governor, or ``record_macs``) run the compiled loop one
    frame per call (a few µs more per frame).
    """

    def __init__(self, model: ConvFSENet | SparseRuntime, engine: str | None = None,
                 sr: int | None = None, record_gates: bool = True,
                 record_times: bool = False, phi: float | None = None,
                 budget: float | None = None, governor=None, record_macs: bool = False) -> None:
        runtime = model if isinstance(model, SparseRuntime) else None
        engine = engine or (runtime.mode if runtime is not None else "torch")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if runtime is not None and engine != runtime.mode:
            raise ValueError(f"Streamer: engine {engine!r} differs from the runtime's mode "
                             f"{runtime.mode!r}")
        cfg = model.cfg
        require_causal(cfg, "streaming")
        model_sr = cfg.stft.sample_rate
        if sr is not None and int(sr) != model_sr:
            raise AudioError(f"Streamer: input sample rate {sr} Hz differs from the model's "
                             f"{model_sr} Hz; resample the input first")
        self.engine, self.cfg, self.gated = engine, cfg, cfg.gate.enabled
        self.model = model if runtime is None else None     # the caller's, never modified
        self.n_fft, self.hop = cfg.stft.n_fft, cfg.stft.hop
        self.tables = stft_tables(self.n_fft, self.hop)
        self.window = self.tables.window
        self._net = copy.deepcopy(model).eval() if engine == "torch" else None
        self.runtime = runtime if runtime is not None or engine == "torch" \
            else SparseRuntime(model, engine)
        self.record_gates, self.record_times = record_gates, record_times
        self._log = record_gates and self.gated
        self._no_glog = np.empty((0, 1, 1), np.uint8)     # feed_frames records no gates
        self.budget = StreamBudget(cfg, self.runtime, phi, budget, governor, record_macs)
        self.reset()

    # -- state ------------------------------------------------------------------------------------
    def initial_state(self) -> StreamState:
        net = (self._net.initial_state(1) if self.runtime is None
               else self.runtime.initial_state())
        return StreamState(stft=stft_state(self.n_fft), net=net)

    def reset(self) -> None:
        """Start a new stream: fresh state, no gates, counters at zero; the budget asked for
        (or the governor, restarted) stays."""
        self.state = self.initial_state()
        self.stats = StreamStats(self.state.stft.counters, self.cfg)
        st, net, t, rt = self.state.stft, self.state.net, self.tables, self.runtime
        # feed_frames' arguments after the samples and buffers, gathered once (the hot path)
        self._args = None if rt is None else (t.f, t.i, st.f, st.counters, st.mag, rt.wf, rt.wi,
                                              net.f, net.i, net.gates)
        self._gates: list[np.ndarray] = []       # [frames, n_blocks, H] per call
        self._flushed = False
        self.budget.start(self.stats, self.state.net)

    @property
    def governor(self):
        return self.budget.governor

    def set_budget(self, phi: float | None = None, mmac: float | None = None) -> float | None:
        """Run the following frames at budget ``phi`` or ``mmac`` (MMAC/s); neither: the
        nominal budget. Takes effect at the next frame (frames already run keep theirs) and
        stays across :meth:`reset`. Returns the Φ run (None for a model without a budget).
        Raises BudgetError (a model without a budget, a request outside its range) and
        DyncpError when a governor runs the budget."""
        return self.budget.set(phi, mmac)

    @property
    def gates(self) -> np.ndarray:
        """Gates of the frames processed so far, uint8 [n_blocks, H, T] ([0, H, 0] when static;
        [n_blocks, H, 0] when ``record_gates`` is off; every channel on at a bypassed frame,
        Φ = 0)."""
        m = self.cfg.model
        if not self.gated or not self._gates:
            return np.zeros((m.n_blocks if self.gated else 0, m.hidden, 0), np.uint8)
        return np.ascontiguousarray(np.concatenate(self._gates).transpose(1, 2, 0))

    @property
    def pruning_ratio(self) -> float:
        """Measured fraction of gated channels omitted over the frames so far (0 when static)."""
        if not self.gated or self.stats.frames == 0:
            return 0.0
        total = self.stats.frames * self.cfg.model.n_blocks * self.cfg.model.hidden
        return 1.0 - self.stats.active / total

    @property
    def active_per_frame(self) -> float:
        """Mean gated channels computed per frame (every hidden channel for a static model):
        the ``active`` of :func:`dyncp.macs.macs_at`."""
        m = self.cfg.model
        if not self.gated or self.stats.frames == 0:
            return float(m.n_blocks * m.hidden)
        return self.stats.active / self.stats.frames

    # -- frames -----------------------------------------------------------------------------------
    def _run(self, x: np.ndarray, count: bool, limit: int) -> np.ndarray:
        """Push ``x`` and run the frames that become ready; returns the samples now final.
        [decided] Lean: ~1.2 µs of Python around the compiled loop (it was 2.9 µs)."""
        if self._args is None:
            return self._run_torch(x, count, limit)
        if self.budget.per_frame:
            return self._run_frames(x, count, limit)
        out, glog = self._buffers(x.shape[0])
        t0 = time.perf_counter()
        o, frames = feed_frames(x, count, limit, out, glog, *self._args)
        dt = time.perf_counter() - t0
        if frames > 0:
            self._timed(frames, dt)
            if self.state.net.i[I_BYPASS]:
                self.stats.bypassed += frames
            if self._log:
                self._gates.append(glog[:frames])
        elif frames < 0:
            raise AudioError(f"Streamer.feed: {-frames} sample(s) are NaN or Inf")
        return out[:o]

    def _buffers(self, samples: int) -> tuple[np.ndarray, np.ndarray]:
        """feed_frames' output buffers for ``samples`` new samples: room for the samples that
        become final and, when gates are recorded, for each frame's gates."""
        bound = frames_bound(samples, self.hop)
        glog = (np.empty((bound, *self.state.net.gates.shape), np.uint8) if self._log
                else self._no_glog)
        return np.empty(bound * self.hop, np.float32), glog

    def _run_frames(self, x: np.ndarray, count: bool, limit: int) -> np.ndarray:
        """:meth:`_run` one frame per compiled call, so that the budget may change between any
        two frames: each call gets the samples that complete the next frame."""
        bad = nonfinite(x)
        if bad:
            raise AudioError(f"Streamer.feed: {bad} sample(s) are NaN or Inf")
        st, net = self.state.stft, self.state.net
        outs, i, c = [], 0, st.counters
        while True:
            j = i + max(self.n_fft - int(c[HELD]), 1)
            t0 = time.perf_counter()
            xi = x[i:j]
            out, glog = self._buffers(xi.shape[0])
            o, frames = feed_frames(xi, count, limit, out, glog, *self._args)
            dt = time.perf_counter() - t0
            outs.append(out[:o])
            if frames:
                self._timed(frames, dt)
                bypass = bool(net.i[I_BYPASS])
                self.stats.bypassed += bypass
                if glog.shape[0]:
                    self._gates.append(glog[:frames])
                self.budget.frame_done(int(net.i[I_OPEN]), bypass, dt, st.mag)
            i = j
            if i >= x.shape[0]:
                return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _run_torch(self, x: np.ndarray, count: bool, limit: int) -> np.ndarray:
        bad = nonfinite(x)
        if bad:
            raise AudioError(f"Streamer.feed: {bad} sample(s) are NaN or Inf")
        st, t, c = self.state.stft, self.tables, self.state.stft.counters
        total = c[HELD] + x.shape[0]
        out = np.empty(((total - self.n_fft) // self.hop + 1) * self.hop
                       if total >= self.n_fft else 0, np.float32)
        i, o = 0, 0
        while True:
            i = push(x, i, st.f, c, self.n_fft, count)
            if c[HELD] < self.n_fft:
                return out[:o]
            t0 = time.perf_counter()
            analyse(st.f, c, t.f, t.i, st.mag)
            bypass = self.budget.bypass
            with torch.inference_mode():
                mask, gates, self.state.net = self._net.step(
                    torch.from_numpy(st.mag).unsqueeze(0), self.state.net, phi=self.stats.phi)
            o = synthesise(mask[0].numpy(), st.f, c, t.f, t.i, out, o, limit)
            g = None
            if gates:
                g = torch.stack([gi[0] for gi in gates]).to(torch.uint8).numpy()
            elif bypass:                           # Φ = 0: no gate ran, every channel is on
                g = np.ones((self.cfg.model.n_blocks, self.cfg.model.hidden), np.uint8)
            n_open = 0
            if g is not None:
                n_open = int(g.sum(dtype=np.int64))
                c[OPEN] += n_open
                if self.record_gates:
                    self._gates.append(g[None])
            dt = time.perf_counter() - t0
            self._timed(1, dt)
            self.stats.bypassed += bypass
            if self.budget.per_frame:
                self.budget.frame_done(n_open, bypass, dt, st.mag)

    def _timed(self, frames: int, dt: float) -> None:
        self.stats.seconds += dt
        if self.record_times and frames:
            self.stats.times.extend([dt / frames] * frames)

    # -- public -----------------------------------------------------------------------------------
    def _check(self, samples) -> np.ndarray:
        if self._flushed:
            raise DyncpError("Streamer: the stream was flushed; call reset() to start a new one")
        x = samples
        if type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 1 \
                and x.flags.c_contiguous:
            return x                              # the common case, checked in ~0.3 µs
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        if x.ndim != 1:
            if x.ndim == 2 and 1 in x.shape:
                x = x.reshape(-1)
            else:
                raise AudioError(f"Streamer.feed expects mono samples [N], got shape {x.shape} "
                                 f"(multi-channel audio: downmix it first)")
        if x.size and x.dtype.kind != "f":
            raise AudioError(f"Streamer.feed expects float samples in [-1, 1], got {x.dtype}")
        return np.ascontiguousarray(x, dtype=np.float32)   # the precision offline enhancement sees

    def feed(self, samples) -> np.ndarray:
        """Push mono float samples [N] (any N >= 0); returns the enhanced samples ready [M]."""
        return self._run(self._check(samples), True, _NO_LIMIT)

    def flush(self) -> np.ndarray:
        """End of stream: pad like the offline STFT, run the last frames, return the tail.
        After ``flush`` the concatenated output has exactly the input's length."""
        if self._flushed:
            return np.zeros(0, np.float32)
        self._flushed = True
        st = self.state.stft
        if st.n_in == 0:
            return np.zeros(0, np.float32)
        # n_fft/2 zeros of right padding give exactly the offline frame count, n_in // hop + 1
        head = self._run(np.zeros(self.n_fft // 2, np.float32), False, st.n_in)
        rest = np.empty(st.n_in - st.n_out, np.float32)
        o = tail(st.f, st.counters, self.tables.f, self.tables.i, rest, 0, st.n_in)
        return np.concatenate([head, rest[:o]])

    def process(self, wav: np.ndarray, chunk: int = 0) -> np.ndarray:
        """Convenience: reset, feed ``wav`` in chunks of ``chunk`` samples (0: all at once),
        flush; returns the whole enhanced signal [N]."""
        self.reset()
        x = self._check(wav)
        step = chunk if chunk > 0 else max(x.shape[0], 1)
        outs = [self.feed(x[i:i + step]) for i in range(0, x.shape[0], step)]
        outs.append(self.flush())
        return np.concatenate(outs)


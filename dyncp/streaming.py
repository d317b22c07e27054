"""Frame-by-frame enhancement with explicit state: what a headset would run.

``Streamer(model).feed(samples)`` takes any number of samples (0, 1, 160, 256, 1000, ...) and
returns the enhanced samples that are ready; ``flush()`` returns the tail; ``reset()`` starts a
new stream. Concatenated, the output equals offline :func:`dyncp.enhance.enhance_tensor` on the
whole signal (max abs difference < 1e-5, ``tests/test_streaming.py``), and ``.gates`` equals the
offline gates frame by frame.

Why it is exact. The offline STFT (``dyncp.dsp``) pads ``n_fft/2`` zeros on both sides, so frame
``t`` covers samples ``[t*hop - n_fft/2, t*hop + n_fft/2)``: the analysis buffer starts with
``n_fft/2`` zeros and a frame is ready once ``n_fft`` buffered samples exist. ``torch.istft``
overlap-adds ``w * irfft(X)`` and divides by the overlap-added ``w^2`` of the frames that exist;
the streaming synthesis accumulates the same two sums (``ola``, ``env``) and emits the first
``hop`` samples after every frame, when no later frame can touch them. This holds for any
``hop <= n_fft/2``, including the clip start (fewer frames overlap) and the end, where ``flush``
pads ``n_fft/2`` zeros like the offline STFT and trims to the input length.

Latency: a sample leaves at most ``n_fft - 1`` samples after it arrives (one window, 32 ms for
the paper config; SPEC §1), plus the compute time of one frame.

State is explicit (``StreamState``): the STFT buffers (:class:`STFTState`) and the network's state,
either ``model.initial_state(1)`` (torch engine) or ``SparseRuntime.initial_state()`` (dense and
sparse engines). The network is the same model: the torch engine calls ``model.step``; the
numba engines run :mod:`dyncp.runtime` built from the same weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from numba import njit

from .errors import AudioError, DyncpError
from .model import ConvFSENet, require_causal

ENGINES = ("torch", "dense", "sparse")


@dataclass
class STFTState:
    """Streaming STFT/iSTFT buffers (float64).

    ``pending``: input samples not yet consumed; its first sample sits at padded index
    ``frames * hop`` (the padded signal starts with ``n_fft/2`` zeros). ``ola``/``env`` [n_fft]:
    overlap-added ``w * frame`` and ``w^2`` for padded positions from ``frames * hop`` on.
    ``skip``: leading padded samples still to drop (they precede the signal). ``n_in``/``n_out``:
    samples fed and emitted; ``frames``: frames processed.
    """

    pending: np.ndarray
    ola: np.ndarray
    env: np.ndarray
    skip: int
    n_in: int = 0
    n_out: int = 0
    frames: int = 0


def stft_state(n_fft: int) -> STFTState:
    """Fresh STFT state: ``n_fft/2`` zeros of left padding already buffered."""
    return STFTState(pending=np.zeros(n_fft // 2), ola=np.zeros(n_fft), env=np.zeros(n_fft),
                     skip=n_fft // 2)


def analysis_frame(frame: np.ndarray, win: np.ndarray) -> np.ndarray:
    """[n_fft] samples -> [n_fft/2+1] complex spectrum (same as one column of ``dsp.stft``)."""
    return np.fft.rfft(frame * win)


def synthesis_frame(st: STFTState, spec: np.ndarray, win: np.ndarray, hop: int) -> np.ndarray:
    """Overlap-add one frame's ``w * irfft(spec)``; returns the ``hop`` samples that are final
    (normalised by the overlap-added window square, as ``torch.istft``) and shifts the buffers."""
    return _overlap_add(st.ola, st.env, np.fft.irfft(spec, win.shape[0]), win, hop)


@njit(cache=True, nogil=True)
def _overlap_add(ola, env, y, win, hop):
    """ola += w*y, env += w^2; pop the first ``hop`` samples as ola/env; shift both by ``hop``.
    (numba: one call instead of seven numpy ones, ~10 µs less per frame.)"""
    n = ola.shape[0]
    for i in range(n):
        ola[i] += win[i] * y[i]
        env[i] += win[i] * win[i]
    out = np.empty(hop)
    for i in range(hop):
        # env is 0 only at padded index 0 (w[0] = 0, no earlier frame), inside the dropped
        # left padding
        out[i] = ola[i] / env[i] if env[i] > 0 else 0.0
    for i in range(n - hop):
        ola[i] = ola[i + hop]
        env[i] = env[i + hop]
    for i in range(n - hop, n):
        ola[i] = 0.0
        env[i] = 0.0
    return out


@dataclass
class StreamState:
    """Everything a stream carries from one frame to the next."""

    stft: STFTState
    net: object  # list[torch.Tensor] (torch engine) or runtime.RuntimeState (dense/sparse)


@dataclass
class StreamStats:
    """Running counters (constant memory): frames, active gated channels, compute time."""

    frames: int = 0
    active: int = 0
    seconds: float = 0.0
    times: list = field(default_factory=list)


class Streamer:
    """Causal frame-by-frame enhancement of one mono stream at the model's sample rate.

    ``engine``: ``torch`` (``model.step``), ``dense`` or ``sparse`` (:class:`dyncp.runtime.
    SparseRuntime`). ``sr``: the sample rate of the samples you feed; it must equal the model's
    ([decided] an error rather than silent resampling, whose filter delay would break the
    equality with offline enhancement). ``record_gates``: keep every frame's gates for ``.gates``
    (turn off for long streams: 2.3 kB per frame for the paper model); ``record_times``: keep each
    frame's compute time in seconds (``.stats.times``).
    """

    def __init__(self, model: ConvFSENet, engine: str = "torch", sr: int | None = None,
                 record_gates: bool = True, record_times: bool = False) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        cfg = model.cfg
        require_causal(cfg, "streaming")
        model_sr = cfg.stft.sample_rate
        if sr is not None and int(sr) != model_sr:
            raise AudioError(f"Streamer: input sample rate {sr} Hz differs from the model's "
                             f"{model_sr} Hz; resample the input first")
        model.eval()  # BatchNorm running statistics, no gate noise: same as offline enhancement
        self.model, self.engine, self.cfg = model, engine, cfg
        self.n_fft, self.hop = cfg.stft.n_fft, cfg.stft.hop
        self.window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64).numpy()
        self.runtime = None
        if engine != "torch":
            from .runtime import SparseRuntime
            self.runtime = SparseRuntime(model, engine)
        self.record_gates, self.record_times = record_gates, record_times
        self.reset()

    # -- state ------------------------------------------------------------------------------------
    def initial_state(self) -> StreamState:
        net = (self.model.initial_state(1) if self.runtime is None
               else self.runtime.initial_state())
        return StreamState(stft=stft_state(self.n_fft), net=net)

    def reset(self) -> None:
        """Start a new stream: fresh state, no gates, counters at zero."""
        self.state = self.initial_state()
        self.stats = StreamStats()
        self._gates: list[np.ndarray] = []
        self._flushed = False

    @property
    def gates(self) -> np.ndarray:
        """Gates of the frames processed so far, uint8 [n_blocks, H, T] ([0, H, T] when static)."""
        n_blocks = self.cfg.model.n_blocks if self.model.gated else 0
        if not self._gates:
            return np.zeros((n_blocks, self.cfg.model.hidden, 0), np.uint8)
        return np.stack(self._gates, axis=-1)

    @property
    def pruning_ratio(self) -> float:
        """Measured fraction of gated channels omitted over the frames so far (0 when static)."""
        if not self.model.gated or self.stats.frames == 0:
            return 0.0
        total = self.stats.frames * self.cfg.model.n_blocks * self.cfg.model.hidden
        return 1.0 - self.stats.active / total

    # -- per frame --------------------------------------------------------------------------------
    def _mask(self, mag: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """mag [F] float32 -> (mask [F], gates [n_blocks, H] uint8 or None when static)."""
        if self.runtime is None:
            with torch.inference_mode():
                mask, gates, self.state.net = self.model.step(
                    torch.from_numpy(mag).unsqueeze(0), self.state.net)
            g = torch.stack([gi[0] for gi in gates]).to(torch.uint8).numpy() if gates else None
            return mask[0].numpy(), g
        mask, g, _ = self.runtime.step_into(mag, self.state.net)
        return mask, (g.copy() if self.model.gated else None)

    def _frame(self, frame: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        spec = analysis_frame(frame, self.window)
        mask, g = self._mask(np.abs(spec).astype(np.float32))
        out = synthesis_frame(self.state.stft, spec * mask, self.window, self.hop)
        dt = time.perf_counter() - t0
        st = self.stats
        st.frames += 1
        st.seconds += dt
        if self.record_times:
            st.times.append(dt)
        if g is not None:
            st.active += int(g.sum(dtype=np.int64))
            if self.record_gates:
                self._gates.append(g)
        self.state.stft.frames += 1
        return out

    def _emit(self, out: np.ndarray, limit: int | None = None) -> np.ndarray:
        """Drop the leading padding, cap at ``limit`` samples in total, count what leaves."""
        st = self.state.stft
        if st.skip:
            drop = min(st.skip, out.shape[0])
            out, st.skip = out[drop:], st.skip - drop
        if limit is not None:
            out = out[: max(limit - st.n_out, 0)]
        st.n_out += out.shape[0]
        return out

    # -- public -----------------------------------------------------------------------------------
    def _check(self, samples) -> np.ndarray:
        if self._flushed:
            raise DyncpError("Streamer: the stream was flushed; call reset() to start a new one")
        if isinstance(samples, torch.Tensor):
            samples = samples.detach().cpu().numpy()
        x = np.asarray(samples)
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        if x.ndim != 1:
            raise AudioError(f"Streamer.feed expects mono samples [N], got shape {x.shape} "
                             f"(multi-channel audio: downmix it first)")
        if x.size and not np.issubdtype(x.dtype, np.floating):
            raise AudioError(f"Streamer.feed expects float samples in [-1, 1], got {x.dtype}")
        x = x.astype(np.float32)  # the precision offline enhancement sees
        if not np.all(np.isfinite(x)):
            bad = int(x.size - np.count_nonzero(np.isfinite(x)))
            raise AudioError(f"Streamer.feed: {bad} sample(s) are NaN or Inf")
        return x

    def feed(self, samples) -> np.ndarray:
        """Push mono float samples [N] (any N >= 0); returns the enhanced samples ready [M]."""
        x = self._check(samples)
        if x.size == 0:
            return np.zeros(0, np.float32)
        st = self.state.stft
        st.pending = np.concatenate([st.pending, x.astype(np.float64)])
        st.n_in += x.size
        outs = []
        while st.pending.shape[0] >= self.n_fft:
            outs.append(self._emit(self._frame(st.pending[: self.n_fft])))
            st.pending = st.pending[self.hop:]
        return np.concatenate(outs).astype(np.float32) if outs else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        """End of stream: pad like the offline STFT, run the last frames, return the tail.
        After ``flush`` the concatenated output has exactly the input's length."""
        if self._flushed:
            return np.zeros(0, np.float32)
        self._flushed = True
        st = self.state.stft
        if st.n_in == 0:
            return np.zeros(0, np.float32)
        n_frames = st.n_in // self.hop + 1           # = dsp.n_frames: same frames as offline
        outs = []
        while st.frames < n_frames:
            if st.pending.shape[0] < self.n_fft:
                st.pending = np.concatenate([st.pending,
                                             np.zeros(self.n_fft - st.pending.shape[0])])
            outs.append(self._emit(self._frame(st.pending[: self.n_fft]), st.n_in))
            st.pending = st.pending[self.hop:]
        # Samples after the last frame's hop: only frames already added overlap them.
        need = st.n_in - st.n_out
        if need > 0:
            n = st.skip + need
            outs.append(self._emit(st.ola[:n] / st.env[:n], st.n_in))
        return np.concatenate(outs).astype(np.float32) if outs else np.zeros(0, np.float32)

    def process(self, wav: np.ndarray, chunk: int = 0) -> np.ndarray:
        """Convenience: reset, feed ``wav`` in chunks of ``chunk`` samples (0: all at once),
        flush; returns the whole enhanced signal [N]."""
        self.reset()
        x = self._check(wav)
        step = chunk if chunk > 0 else max(x.shape[0], 1)
        outs = [self.feed(x[i:i + step]) for i in range(0, x.shape[0], step)]
        outs.append(self.flush())
        return np.concatenate(outs)


def dynamic_macs_per_frame(cfg, active_per_frame: float | None) -> float:
    """MACs per frame at a mean of ``active_per_frame`` gated channels computed (SPEC §4);
    ``None`` (static model) gives the static count."""
    from .macs import (fixed_macs_per_frame, gate_macs_per_frame, per_channel_macs,
                       static_macs_per_frame)
    if active_per_frame is None:
        return float(static_macs_per_frame(cfg))
    return (fixed_macs_per_frame(cfg) + gate_macs_per_frame(cfg)
            + per_channel_macs(cfg) * active_per_frame)


def stream_file(model: ConvFSENet, in_path, out_path=None, engine: str = "torch",
                chunk: int = 0) -> dict:
    """Stream a sound file through a :class:`Streamer` in chunks of ``chunk`` samples (0: one
    hop), as a device would receive it, and compare with offline enhancement.

    Returns ``us_per_frame_median``, ``us_per_frame_p99`` (compute per frame: STFT, mask
    estimation, iSTFT), ``rtf`` (wall time of all feed/flush calls / audio duration),
    ``pruning_ratio``, ``dynamic_mmac_per_s``, ``max_abs_diff_offline``, plus ``frames``,
    ``seconds`` and ``engine``. Writes the enhanced signal to ``out_path`` when given.
    """
    from .audio import load_audio, save_audio
    from .enhance import enhance_tensor

    sr = model.cfg.stft.sample_rate
    wav = load_audio(in_path, sr)
    streamer = Streamer(model, engine, record_gates=False, record_times=True)
    step = chunk if chunk > 0 else streamer.hop
    outs = []
    t0 = time.perf_counter()
    for i in range(0, wav.shape[0], step):
        outs.append(streamer.feed(wav[i:i + step]))
    outs.append(streamer.flush())
    wall = time.perf_counter() - t0
    out = np.concatenate(outs)
    with torch.inference_mode():
        ref, _ = enhance_tensor(model, torch.from_numpy(wav).unsqueeze(0))
    times = np.asarray(streamer.stats.times) * 1e6
    frames = streamer.stats.frames
    active = streamer.stats.active / frames if model.gated else None
    if out_path is not None:
        save_audio(out_path, out, sr)
    return {
        "engine": engine, "frames": frames, "seconds": wav.shape[0] / sr,
        "us_per_frame_median": float(np.median(times)),
        "us_per_frame_p99": float(np.percentile(times, 99)),
        "rtf": wall / (wav.shape[0] / sr),
        "pruning_ratio": streamer.pruning_ratio,
        "dynamic_mmac_per_s": dynamic_macs_per_frame(model.cfg, active)
        * model.cfg.stft.frames_per_second / 1e6,
        "max_abs_diff_offline": float(np.abs(out - ref[0].numpy()).max()),
    }

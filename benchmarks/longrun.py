"""Long-run check (issue 6): hours of audio through the Streamer, flat memory, no NaN/Inf.

The sparse engine runs the whole duration (``--hours``, default 1 h = 225,000 frames of the paper
config); the PyTorch engine (``model.step``, ~1.5-4 ms per frame on one thread) runs a shorter
segment (``--torch-seconds``, default 120 s), and its output is compared with the sparse
engine's on that segment. The audio is generated chunk by chunk (the 120 s
trainpack mixture of benchmarks/streaming.py looped with a slowly varying gain and fresh noise,
or synthetic when /work/shared/data is absent), so the input never sits in memory beyond those
120 s. RSS is read from /proc/self/statm at the start (after the torch segment and one minute of
warm-up audio), every ``--report`` seconds of audio, and at the end.

The model: ``-c CKPT`` or, by default, a paper-size gated model with random weights calibrated
to Phi ~ 0.75 as in ``benchmarks/streaming.py``.

    python benchmarks/longrun.py [--hours 1] [-c CKPT] [--json OUT]
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import ROOT, bench_audio, calibrate_default  # noqa: E402

from dyncp.checkpoint import load_model  # noqa: E402
from dyncp.config import load_config  # noqa: E402
from dyncp.model import ConvFSENet  # noqa: E402
from dyncp.streaming import Streamer  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Source:
    """Endless deterministic audio, ``chunk`` samples at a time."""

    def __init__(self, sr: int, seed: int = 0) -> None:
        self.base, self.name = bench_audio(120.0, sr)
        self.rng = np.random.default_rng(seed)
        self.pos, self.sr = 0, sr

    def read(self, n: int) -> np.ndarray:
        idx = (self.pos + np.arange(n)) % self.base.shape[0]
        t = (self.pos + np.arange(n)) / self.sr
        gain = 0.6 + 0.4 * np.sin(2 * np.pi * t / 97.0)          # level drifts over minutes
        self.pos += n
        x = self.base[idx] * gain + 0.01 * self.rng.standard_normal(n)
        return x.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--torch-seconds", type=float, default=120.0)
    ap.add_argument("--chunk", type=int, default=256, help="samples per feed call")
    ap.add_argument("--report", type=float, default=600.0, help="RSS every N s of audio")
    ap.add_argument("-c", "--checkpoint")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.checkpoint:
        model, how = load_model(args.checkpoint)[0], args.checkpoint
    else:
        torch.manual_seed(0)
        model = ConvFSENet(load_config(ROOT / "configs/paper.toml")).eval()
        src = calibrate_default(model, 0.75)
        how = f"random paper-size, gates calibrated to Phi 0.75 on {src}"
    sr = model.cfg.stft.sample_rate
    total = int(args.hours * 3600 * sr)
    n_torch = int(args.torch_seconds * sr)
    src = Source(sr)
    sparse = Streamer(model, "sparse", record_gates=False)
    ref = Streamer(model, "torch", record_gates=False)
    # RSS "start": after the torch segment (whose output buffers are freed then, but malloc may
    # keep the pages) plus one minute of warm-up
    warm = min(n_torch + 60 * sr, total)
    fed, bad, peak = 0, 0, 0.0
    torch_diff, torch_out, sparse_out = 0.0, [], []
    rss = []
    t0 = time.perf_counter()
    while fed < total:
        x = src.read(min(args.chunk, total - fed))
        y = sparse.feed(x)
        if fed < n_torch:
            torch_out.append(ref.feed(x))
            sparse_out.append(y)
        elif torch_out:
            torch_out.append(ref.flush())
            a, b = np.concatenate(torch_out), np.concatenate(sparse_out)
            torch_diff = float(np.abs(a[: b.shape[0]] - b[: a.shape[0]]).max())
            torch_out, sparse_out = [], []
        bad += int(y.size - np.count_nonzero(np.isfinite(y)))
        if y.size:
            peak = max(peak, float(np.abs(y).max()))
        fed += x.shape[0]
        if (fed >= warm and not rss) or (fed > warm and fed % int(args.report * sr) < args.chunk):
            rss.append((fed / sr, rss_mb()))
            print(f"{fed / sr:8.0f} s audio  {time.perf_counter() - t0:7.1f} s wall  "
                  f"RSS {rss[-1][1]:.1f} MB  Phi {sparse.pruning_ratio:.3f}", flush=True)
    tail = sparse.flush()
    bad += int(tail.size - np.count_nonzero(np.isfinite(tail)))
    wall = time.perf_counter() - t0
    rss.append((fed / sr, rss_mb()))
    out = {
        "audio_hours": fed / sr / 3600, "frames": sparse.stats.frames, "wall_seconds": wall,
        "rtf": wall / (fed / sr), "us_per_frame_compute": sparse.stats.seconds
        / sparse.stats.frames * 1e6, "rss_start_mb": rss[0][1], "rss_end_mb": rss[-1][1],
        "rss_growth_mb": rss[-1][1] - rss[0][1], "rss_trace": rss, "nonfinite_samples": bad,
        "max_abs_output": peak, "pruning_ratio": sparse.pruning_ratio,
        "torch_segment_seconds": args.torch_seconds, "max_abs_diff_torch_vs_sparse": torch_diff,
        "model": how,
    }
    print(f"\n{out['audio_hours']:.2f} h audio, {out['frames']} frames in {wall:.0f} s "
          f"(RTF {out['rtf']:.4f}, compute {out['us_per_frame_compute']:.1f} µs/frame)")
    print(f"RSS start {out['rss_start_mb']:.1f} MB, end {out['rss_end_mb']:.1f} MB "
          f"(growth {out['rss_growth_mb']:+.1f} MB); non-finite output samples: {bad}; "
          f"max |y| {peak:.3f}; Phi {out['pruning_ratio']:.3f}")
    print(f"torch streamer vs sparse streamer over the first {args.torch_seconds:.0f} s: max abs "
          f"diff {torch_diff:.2e}")
    if args.json:
        from dyncp.atomic import write_json

        write_json(args.json, out)
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Many streams at once (issue 15): how many real-time streams does one CPU core sustain?

A conferencing server enhances many calls at once. Here N ``Streamer``s share one
``SparseRuntime`` (one copy of the weights; each stream owns its state) and one thread serves
them round-robin: every tick, each stream gets one hop of new audio (16 ms for the paper config)
and returns its enhanced hop. N streams are real-time on this core while a tick takes less than
one hop period. Models as ``benchmarks/streaming.py``: the paper-size static model through the
dense engine, and the paper-size gated model with gates calibrated to Phi ~ 0.75 (or ``--static``
/ ``--gated`` checkpoints) through the sparse engine. Each stream hears the benchmark audio from
its own offset.

The search: the cost of one stream-frame at N = 1 gives a first estimate of the capacity; N is
set to it, the per-stream cost measured again there (many streams' states no longer fit in the
caches, so a stream-frame costs more), and once more at the refined estimate. Reported, per
engine and N: tick median and p99 (ms), µs per stream-frame, the capacity ``floor(period / µs
per stream-frame)``, and the share of ticks over the period (deadline misses) at that N.

``--threads T`` (default 1) also runs T threads, each serving its share of the streams (the
kernels release the GIL), and reports their capacity; on this 2-core machine T = 2 is the most
that says anything.

    python benchmarks/streams.py [--seconds 20] [--ticks 200] [--threads 2]
        [--json benchmarks/results/streams.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import ROOT, bench_audio, calibrate_default  # noqa: E402

from dyncp.checkpoint import load_model  # noqa: E402
from dyncp.config import load_config  # noqa: E402
from dyncp.model import ConvFSENet  # noqa: E402
from dyncp.runtime import SparseRuntime  # noqa: E402
from dyncp.streaming import Streamer  # noqa: E402


def ticks(rt: SparseRuntime, wav: np.ndarray, n: int, n_ticks: int) -> np.ndarray:
    """Seconds per tick [n_ticks] of ``n`` streams served round-robin by this thread."""
    hop = rt.cfg.stft.hop
    span = n_ticks * hop
    offsets = np.linspace(0, wav.shape[0] - span - 2 * hop, n).astype(int)
    streams = [Streamer(rt, record_gates=False) for _ in range(n)]
    for s, o in zip(streams, offsets):                    # warm-up: fill the analysis rings
        s.feed(wav[o:o + 2 * hop])
    chunks = [wav[o + 2 * hop:o + 2 * hop + span].reshape(n_ticks, hop) for o in offsets]
    out = np.empty(n_ticks)
    for t in range(n_ticks):
        t0 = time.perf_counter()
        for s, c in zip(streams, chunks):
            s.feed(c[t])
        out[t] = time.perf_counter() - t0
    return out


def measure(rt: SparseRuntime, wav: np.ndarray, n: int, n_ticks: int, period: float) -> dict:
    t = ticks(rt, wav, n, n_ticks)
    per = float(np.median(t)) / n
    return {"streams": n, "tick_ms_median": float(np.median(t)) * 1e3,
            "tick_ms_p99": float(np.percentile(t, 99)) * 1e3, "us_per_stream_frame": per * 1e6,
            "capacity": int(period // per), "deadline_misses": float((t > period).mean())}


def capacity(rt: SparseRuntime, wav: np.ndarray, n_ticks: int, period: float) -> list[dict]:
    """Rows at N = 1, then at the estimated capacity, then at the refined one."""
    rows = [measure(rt, wav, 1, n_ticks, period)]
    for _ in range(2):
        n = max(rows[-1]["capacity"], 1)
        rows.append(measure(rt, wav, n, max(n_ticks // 4, 20), period))
    return rows


def threaded(rt: SparseRuntime, wav: np.ndarray, n: int, threads: int, n_ticks: int,
             period: float) -> dict:
    """``n`` streams split over ``threads`` threads, each serving its share for ``n_ticks``
    ticks; throughput (stream-frames per second of wall time) as real-time streams."""
    shares = [n // threads + (j < n % threads) for j in range(threads)]
    barrier = threading.Barrier(threads + 1)
    done = [None] * threads

    def work(j):
        barrier.wait()
        done[j] = ticks(rt, wav, shares[j], n_ticks)

    pool = [threading.Thread(target=work, args=(j,)) for j in range(threads)]
    for p in pool:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    for p in pool:
        p.join()
    wall = time.perf_counter() - t0
    per = wall / (n * n_ticks)
    return {"threads": threads, "streams": n, "us_per_stream_frame": per * 1e6,
            "capacity": int(period // per),
            "tick_ms_p99": max(float(np.percentile(d, 99)) for d in done) * 1e3}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/streams.json"),
                    help="where to write the figures (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=20.0, help="benchmark audio length")
    ap.add_argument("--ticks", type=int, default=200, help="ticks at N = 1 (a quarter later)")
    ap.add_argument("--threads", type=int, default=1, help="also run this many threads")
    ap.add_argument("--static", help="trained static checkpoint (default: random paper-size)")
    ap.add_argument("--gated", help="trained gated checkpoint (default: calibrated to Phi 0.75)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    torch.manual_seed(0)
    static = (load_model(args.static)[0] if args.static
              else ConvFSENet(load_config(ROOT / "configs/static.toml")).eval())
    if args.gated:
        gated, how = load_model(args.gated)[0], f"checkpoint {args.gated}"
    else:
        torch.manual_seed(0)
        gated = ConvFSENet(load_config(ROOT / "configs/paper.toml")).eval()
        how = f"random weights, gates calibrated to Phi 0.75 on {calibrate_default(gated, 0.75)}"
    cfg = static.cfg
    period = cfg.stft.hop / cfg.stft.sample_rate
    wav, source = bench_audio(args.seconds, cfg.stft.sample_rate)
    print(f"audio: {args.seconds:.0f} s from {source}; gated model: {how}; one hop = "
          f"{period * 1e3:.0f} ms")

    from machine import describe
    out = {"machine": describe(), "period_ms": period * 1e3, "audio_source": source,
           "gated_model": how, "engines": {}}
    print(f"\n{'engine':22s} {'streams':>7s} {'tick ms med':>11s} {'p99':>7s} "
          f"{'µs/stream-frame':>15s} {'capacity':>8s} {'misses':>7s}")
    for name, rt in (("dense (static)", SparseRuntime(static, "dense")),
                     ("sparse (gated, Phi .75)", SparseRuntime(gated, "sparse"))):
        rows = capacity(rt, wav, args.ticks, period)
        for r in rows:
            print(f"{name:22s} {r['streams']:7d} {r['tick_ms_median']:11.2f} "
                  f"{r['tick_ms_p99']:7.2f} {r['us_per_stream_frame']:15.1f} "
                  f"{r['capacity']:8d} {100 * r['deadline_misses']:6.1f}%")
        entry = {"rows": rows, "streams_per_core": rows[-1]["capacity"]}
        if args.threads > 1:
            n = rows[-1]["capacity"] * args.threads
            entry["threaded"] = t = threaded(rt, wav, n, args.threads, max(args.ticks // 4, 20),
                                             period)
            print(f"{name:22s} {n:7d} streams on {args.threads} threads: "
                  f"{t['us_per_stream_frame']:.1f} µs per stream-frame of wall time -> "
                  f"capacity {t['capacity']} (tick p99 {t['tick_ms_p99']:.2f} ms)")
        out["engines"][name.split()[0]] = entry
    d, s = (out["engines"][k]["streams_per_core"] for k in ("dense", "sparse"))
    out["sparse_over_dense"] = s / d
    print(f"\nreal-time streams on one core: dense {d}, sparse {s} ({s / d:.2f}x)")
    if args.json:
        from dyncp.atomic import write_json

        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

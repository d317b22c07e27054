"""Side-by-side benchmark: dyncp checkpoints against RNNoise, GTCRN, DeepFilterNet3 and spectral
gating on the same audio, in one run, on this machine, offline (issue 7).

    python benchmarks/peers.py --data DIR [--models CKPT ...] [--json OUT] [--md OUT]
                               [--plot OUT.png] [--limit N] [--no-peers] [--no-dnsmos]

``DIR`` holds ``noisy/`` and ``clean/`` with the same file names at any sample rate (``builtin``:
the built-in corpus's test split). Peers come from ``make peers`` (the ``peers`` extra); one that
is missing gets a row whose ``error`` says why. Same as ``dyncp compare``. The logic lives in
:mod:`dyncp.compare`; see its docstring for what is timed and how outputs are aligned.
"""

from __future__ import annotations

import os

# One thread everywhere, set before numpy/torch/numba/onnxruntime start their pools.
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import sys  # noqa: E402


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="folder with noisy/ and clean/ (same names, any rate), or 'builtin'")
    p.add_argument("--models", nargs="*", default=[], metavar="CKPT",
                   help="dyncp checkpoints (each gets an offline and a sparse-runtime row)")
    p.add_argument("--json", help="write the rows as a JSON list")
    p.add_argument("--md", help="write the Markdown table")
    p.add_argument("--plot", help="write PESQ vs MMAC/s and vs RTF (PNG)")
    p.add_argument("--limit", type=int, default=0, help="first N pairs only (0: all)")
    p.add_argument("--max-lag", type=float, default=0.1,
                   help="delay search range in seconds, +- (default 0.1)")
    p.add_argument("--no-peers", action="store_true", help="only noisy and the dyncp models")
    p.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS (faster)")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> list[dict]:
    from dyncp.compare import compare, save

    rows = compare(args.data, args.models, peers=not args.no_peers, limit=args.limit,
                   max_lag_s=args.max_lag, use_dnsmos=not args.no_dnsmos,
                   progress=not args.quiet)
    print(save(rows, args.json, args.md, args.plot))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    from dyncp.errors import DyncpError
    try:
        run(args)
    except DyncpError as e:
        print(f"peers: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

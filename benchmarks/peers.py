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

# One thread everywhere, set before numpy/torch/numba/onnxruntime start their pools. Only when
# run as a script: importing this module (the tests do) must not change the process's
# environment (numba refuses a NUMBA_NUM_THREADS that changes after its pool started).
if __name__ == "__main__":
    for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_v, "1")

import sys  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Same arguments and output as ``dyncp compare`` (see ``--help``)."""
    from dyncp.cli import main as dyncp_main

    return dyncp_main(["compare", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())

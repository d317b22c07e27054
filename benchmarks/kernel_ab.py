"""Interleaved A/B of the sparse runtime against an earlier commit's, in one process.

    python benchmarks/kernel_ab.py --rev 7430e6a --json benchmarks/results/kernel_ab.json

The earlier ``dyncp/runtime.py`` is read from git (``git show REV:dyncp/runtime.py``) into a
temporary module of the package; both runtimes run the same paper-size model (random weights,
gates that switch) on the same frames, one block of frames each in turn, for many rounds: on a
machine whose speed drifts (CPU steal on a VM), only such an interleaved comparison says which is
faster. Prints the median and minimum µs per frame of each, sparse and dense, and writes JSON.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="7430e6a", help="the earlier commit")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--gate-bias", type=float, default=-0.3, help="about 30 %% of channels open")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    import torch

    from conftest import randomize_model
    from dyncp.atomic import write_json, write_text
    from dyncp.config import load_config
    from dyncp.model import build_model
    from dyncp.runtime import SparseRuntime

    torch.set_num_threads(1)
    old_src = subprocess.run(["git", "show", f"{args.rev}:dyncp/runtime.py"], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout
    tmp = ROOT / "dyncp" / f"_runtime_{args.rev}.py"
    write_text(tmp, old_src)      # a temporary module of the package, for its relative imports
    try:
        import importlib
        old_mod = importlib.import_module(f"dyncp._runtime_{args.rev}")
        model = randomize_model(build_model(load_config(ROOT / "configs/paper.toml")), seed=0,
                                gate_bias=args.gate_bias)
        engines = {}
        for mode in ("sparse", "dense"):
            new = SparseRuntime(model, mode)
            st = new.initial_state()
            engines[f"current {mode}"] = (lambda x, new=new, st=st: new.step_into(x, st), st)
            old = old_mod.SparseRuntime(model, mode)
            engines[f"{args.rev} {mode}"] = (old.step, None)
        mags = np.abs(np.random.default_rng(0).standard_normal(
            (args.frames, model.cfg.stft.n_freq))).astype(np.float32)
        for fn, _ in engines.values():
            for x in mags[:20]:
                fn(x)
        times = {k: [] for k in engines}
        for _ in range(args.rounds):
            for k, (fn, _) in engines.items():
                t0 = time.perf_counter()
                for x in mags:
                    fn(x)
                times[k].append((time.perf_counter() - t0) / len(mags) * 1e6)
        st = engines["current sparse"][1]
        open_share = st.n_open / (model.cfg.model.n_blocks * model.cfg.model.hidden)
    finally:
        tmp.unlink(missing_ok=True)
    rows = {k: {"median_us": float(np.median(v)), "min_us": float(np.min(v))}
            for k, v in times.items()}
    print(f"{'engine':<20} {'median µs':>10} {'min µs':>8}")
    for k, r in rows.items():
        print(f"{k:<20} {r['median_us']:>10.1f} {r['min_us']:>8.1f}")
    print(f"channels open (last frame): {open_share:.3f}; {args.rounds} rounds x "
          f"{args.frames} frames, interleaved, one thread")
    if args.json:
        from machine import describe
        write_json(args.json, {"command": " ".join(sys.argv), "machine": describe(),
                               "rev": args.rev, "rows": rows,
                               "open_share_last_frame": open_share, "rounds": args.rounds,
                               "frames": args.frames})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

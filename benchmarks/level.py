"""Input level against quality (issue 11, item 2: "with or without level normalisation", level
augmentation): does a model's PESQ-WB depend on how loud its input is, and would normalising the
input level first help?

Every noisy/clean pair of ``--data`` (default ../shared/data/realdev) is scaled by each gain of
``--gains`` (dB; the pair as a whole, so the task is the same and only the level moves) and
enhanced; a further row, ``norm``, scales each noisy file to ``--norm-level`` dBFS RMS before the
model (a whole-file normaliser: the best a level normaliser in front of the model could do, an
upper bound for a causal one). PESQ, STOI and SI-SDR ignore the output's level, so the rows differ
only by what the model does with the level it hears.

    python benchmarks/level.py --model static --model ab=~/dyncp-runs/ab_sisdr_0/best.pt \\
        --gains -30 -20 -10 0 10 --json benchmarks/results/training/level.json

Prints one table per model (the noisy input's median level in dBFS, PESQ-WB, STOI, SI-SDR) and
writes them as JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe  # noqa: E402

from dyncp.atomic import write_json  # noqa: E402
from dyncp.checkpoint import load_model  # noqa: E402
from dyncp.data import eval_pairs  # noqa: E402
from dyncp.data.folders import Pair  # noqa: E402
from dyncp.evaluate import evaluate  # noqa: E402


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(max(float(np.mean(np.asarray(x, np.float64) ** 2)), 1e-20)))


def scaled(pairs: list[Pair], gain_db: float) -> list[Pair]:
    g = np.float32(10 ** (gain_db / 20))
    return [Pair(p.name, p.noisy * g, p.clean * g) for p in pairs]


def normalised(pairs: list[Pair], level_db: float) -> list[Pair]:
    out = []
    for p in pairs:
        g = np.float32(10 ** ((level_db - rms_db(p.noisy)) / 20))
        out.append(Pair(p.name, p.noisy * g, p.clean * g))
    return out


def rows_for(model, pairs: list[Pair], gains: list[float], norm_level: float) -> list[dict]:
    rows = []
    arms = [(f"{g:+g} dB", scaled(pairs, g)) for g in gains]
    arms.append((f"norm {norm_level:g} dBFS", normalised(pairs, norm_level)))
    for label, arm in arms:
        mean = evaluate(model, arm, progress=False)["mean"]
        rows.append({"input": label,
                     "median_level_dbfs": float(np.median([rms_db(p.noisy) for p in arm])),
                     "pesq_wb": mean.get("pesq_wb"), "stoi": mean.get("stoi"),
                     "si_sdr": mean.get("si_sdr")})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="[NAME=]CKPT",
                    help="a checkpoint or shipped name (repeatable; NAME= labels it)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "realdev"),
                    help="a folder with noisy/ and clean/ (default: ../shared/data/realdev)")
    ap.add_argument("--gains", type=float, nargs="+", default=[-30, -20, -10, 0, 10],
                    help="input gains in dB (default: -30 -20 -10 0 10)")
    ap.add_argument("--norm-level", type=float, default=-25.0,
                    help="dBFS RMS of the normalised row (default -25, the middle of the "
                         "recipe's training levels)")
    ap.add_argument("--limit", type=int, default=0, help="score only the first N pairs")
    ap.add_argument("--json", help="write the tables here")
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        raise SystemExit(f"{args.data}: no such folder (give --data)")
    if args.norm_level > 0:
        raise SystemExit(f"--norm-level {args.norm_level:g}: must be <= 0 dBFS")
    out = {"machine": describe(), "data": args.data, "gains_db": args.gains,
           "norm_level_dbfs": args.norm_level, "models": {}}
    for spec in args.model:
        name, _, path = spec.rpartition("=")
        name = name or Path(path).stem
        model, meta = load_model(path)
        model.eval()
        pairs = eval_pairs(f"pairs:{args.data}", model.cfg, limit=args.limit)
        rows = rows_for(model, pairs, args.gains, args.norm_level)
        out["models"][name] = {"checkpoint": path, "files": len(pairs), "rows": rows}
        print(f"\n{name} ({path}, {len(pairs)} files)")
        print(f"{'input':>16} {'level dBFS':>10} {'PESQ-WB':>8} {'STOI':>6} {'SI-SDR':>7}")
        for r in rows:
            print(f"{r['input']:>16} {r['median_level_dbfs']:10.1f} {r['pesq_wb']:8.3f} "
                  f"{r['stoi']:6.3f} {r['si_sdr']:7.2f}")
    if args.json:
        print(f"\nwrote {write_json(args.json, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

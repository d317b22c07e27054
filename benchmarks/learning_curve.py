"""Learning curves of training runs: development-set PESQ-WB (the ``monitor_*`` columns that
``dyncp train`` logs when ``data.monitor`` is set) against hours of audio seen.

    python benchmarks/learning_curve.py ~/dyncp-runs/static ~/dyncp-runs/dyncp75 \\
        --json benchmarks/results/learning_curve.json --plot docs/figures/learning_curve.png

Prints one table per run and writes the curves as JSON (and a plot): the record behind the
learning-curve figure of docs/training.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from dyncp.atomic import atomic_path, write_json


def read_curve(run_dir: Path, offset_hours: float = 0.0) -> list[dict[str, float]]:
    """Rows of ``run_dir/log.csv`` (or of ``run_dir`` itself when it is a CSV file: a log kept
    under benchmarks/results/training/) that carry a development score; ``offset_hours`` is added
    to the hours of a run that continued a checkpoint which had seen that much audio."""
    log = Path(run_dir).expanduser()
    log = log if log.suffix == ".csv" else log / "log.csv"
    if not log.is_file():
        raise SystemExit(f"{log}: no training log")
    out = []
    with log.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if not r.get("monitor_pesq_wb"):
                continue
            row = {"epoch": int(r["epoch"]), "step": int(r["step"]),
                   "audio_hours": float(r["audio_hours"]) + offset_hours,
                   "lr": float(r["lr"]), "valid_pesq_wb": float(r["valid_pesq_wb"]),
                   "dev_pesq_wb": float(r["monitor_pesq_wb"]),
                   "dev_si_sdr": float(r["monitor_si_sdr"]), "dev_phi": float(r["monitor_phi"])}
            if r.get("monitor_raw_pesq_wb"):
                row["dev_raw_pesq_wb"] = float(r["monitor_raw_pesq_wb"])
            out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="run folders or log.csv files (NAME=DIR to name one)")
    ap.add_argument("--offset", action="append", default=[], metavar="NAME=HOURS",
                    help="run NAME continued a checkpoint that had seen HOURS of audio: shift it")
    ap.add_argument("--keep", metavar="JSON",
                    help="carry the curves of this earlier --json record that are not named "
                         "here (their run folders are gone)")
    ap.add_argument("--json", help="write the curves here")
    ap.add_argument("--plot", help="write a PNG here")
    ap.add_argument("--raw", action="append", default=[], metavar="NAME",
                    help="plot run NAME's raw weights (dev raw) instead of its EMA weights: for a "
                         "run whose shipped file holds the raw ones (repeatable)")
    args = ap.parse_args(argv)
    curves = {}
    names = [item.rpartition("=")[0] or Path(item.rpartition("=")[2]).name for item in args.runs]
    offsets = {}
    for item in args.offset:
        name, _, hours = item.rpartition("=")
        if name not in names:
            ap.error(f"--offset {item}: no run of that name (runs: {', '.join(names)})")
        offsets[name] = float(hours)
    if args.keep:
        try:
            kept = json.loads(Path(args.keep).read_text(encoding="utf-8"))["curves"]
        except (OSError, ValueError, KeyError) as e:
            ap.error(f"--keep {args.keep}: not a learning-curve record ({e})")
        curves.update({k: {**v, "kept_from": args.keep} for k, v in kept.items()
                       if k not in names})
    if not curves and not args.runs:
        ap.error("no runs (name run folders or --keep a record)")
    for item, name in zip(args.runs, names):
        d = item.rpartition("=")[2]
        curves[name] = {"run_dir": d, "offset_hours": offsets.get(name, 0.0),
                        "rows": read_curve(Path(d), offsets.get(name, 0.0))}
    for name in args.raw:
        if name not in curves:
            ap.error(f"--raw {name}: no run of that name (runs: {', '.join(curves)})")
    for name, c in curves.items():
        print(f"\n{name} ({c['run_dir']})")
        print(f"{'epoch':>6} {'step':>7} {'hours':>8} {'lr':>9} {'valid':>7} {'dev':>7} "
              f"{'dev raw':>8} {'dev Φ':>6}")
        for r in c["rows"]:
            print(f"{r['epoch']:>6} {r['step']:>7} {r['audio_hours']:>8.1f} {r['lr']:>9.2e} "
                  f"{r['valid_pesq_wb']:>7.3f} {r['dev_pesq_wb']:>7.3f} "
                  f"{r.get('dev_raw_pesq_wb', float('nan')):>8.3f} {r['dev_phi']:>6.3f}")
    if args.json:
        write_json(args.json, {"command": " ".join(sys.argv), "curves": curves})
        print(f"\nwrote {args.json}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9.6, 4.2))
        colours = plt.get_cmap("tab20").colors   # more curves than the default cycle's 10
        for i, (name, c) in enumerate(curves.items()):
            raw = name in args.raw
            rows = [r for r in c["rows"] if not raw or "dev_raw_pesq_wb" in r]
            ax.plot([r["audio_hours"] for r in rows],
                    [r["dev_raw_pesq_wb" if raw else "dev_pesq_wb"] for r in rows], marker=".",
                    color=colours[(2 * i) % 20 + (2 * i) // 20 % 2],
                    label=f"{name} (raw weights)" if raw else name)
        ax.set_xlabel("hours of audio seen (a fine-tune: since its start)")
        ax.set_ylabel("realdev PESQ-WB")
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
        fig.tight_layout()
        with atomic_path(args.plot) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

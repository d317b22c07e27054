"""Copy each run of a GPU lease into $OUT, once or every N seconds, so that what a call brings
back is the last finished epoch even when the call is cut off: per run one tar (best.pt, log.csv,
config.toml, job.log, gpu.txt) and its resume state beside it (a call brings back at most 8 files
of 16 MiB: four runs fit).

    python scripts/gpu/collect.py RUNS_DIR [EVERY_SECONDS]
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

KEEP = ("best.pt", "log.csv", "config.toml", "job.log", "gpu.txt")


def collect(runs: Path, out: Path) -> None:
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        tmp = out / f".{run.name}.tar.tmp"
        with tarfile.open(tmp, "w") as t:
            for name in KEEP:
                if (run / name).is_file():
                    t.add(run / name, arcname=f"{run.name}/{name}")
        os.replace(tmp, out / f"{run.name}.tar")
        if (run / "state.pt").is_file():
            shutil.copyfile(run / "state.pt", out / f".{run.name}_state.tmp")
            os.replace(out / f".{run.name}_state.tmp", out / f"{run.name}_state.pt")


def main(argv: list[str]) -> int:
    runs, out = Path(argv[0]), Path(os.environ["OUT"])
    every = float(argv[1]) if len(argv) > 1 else 0.0
    while True:
        try:
            collect(runs, out)
        except OSError as e:  # a file replaced while read: the next round takes it
            print(f"collect: {e}", file=sys.stderr)
        if not every:
            return 0
        time.sleep(every)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

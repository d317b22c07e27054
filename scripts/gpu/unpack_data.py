"""The GPU side of pack_data.py: Ogg/Opus -> 16-bit FLAC under the original file names.

    python scripts/gpu/unpack_data.py .gpu/data /tmp/gpudata [--jobs 16]
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf


def _decode(job: tuple[Path, Path]) -> float:
    src, dst = job
    x, sr = sf.read(src, dtype="float32")
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, x, sr, subtype="PCM_16")
    return len(x) / sr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pack", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--jobs", type=int, default=16)
    args = ap.parse_args(argv)
    files = sorted(args.pack.rglob("*.ogg"))
    if not files:
        ap.error(f"{args.pack}: no .ogg files (run scripts/gpu/pack_data.py first)")
    jobs = [(p, args.out / p.relative_to(args.pack).with_suffix(".flac")) for p in files]
    with ProcessPoolExecutor(args.jobs) as ex:
        seconds = sum(ex.map(_decode, jobs, chunksize=4))
    print(f"decoded {len(files)} files, {seconds / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

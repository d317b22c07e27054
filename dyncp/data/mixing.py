"""On-the-fly mixing of speech and noise folders (``mix:SPEECH_DIR[+DIR...],NOISE_DIR[+DIR...]``).

Training items are fresh mixtures: a random crop of a speech file, a random crop of a noise file
(looped with cross-fades when shorter), an SNR ~ U[cfg.data.snr_min, snr_max] dB and a random
level; everything is a function of (cfg.data.seed, epoch, item index), so ``set_epoch`` gives a
new pairing every epoch and a restarted run sees the same data. Noise is drawn by category first
when file names follow ``<category>__<kind>__...`` (the trainpack convention), so a category with
many short clips does not dominate; otherwise uniformly by file.

Splits (our choice): ~10 % of the speech files, chosen by a hash of the file name, are held out;
``valid`` and ``test`` are fixed-seed whole-utterance mixtures of those files (different seeds),
``train`` uses the others. Noise files are shared by all splits.

Augmentations (each a probability per item in ``cfg.data``; docs/training.md measures them):
``generated_noise`` replaces the file noise by one of ``generated_kinds`` (white, pink, brown,
hum, ... from :mod:`dyncp.data.noise`), ``babble`` by 3-7 talkers of the same split's speech,
``narrowband`` low-passes the speech (and so the target) at 3.4-4 kHz as an 8 kHz or telephone
path does, ``noise_narrowband`` does the same to the noise, ``reverb`` puts the speech in a room
(measured RIRs from ``data.rir`` or generated ones; the target is the direct path and early
reflections, :mod:`dyncp.data.reverb`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..errors import DataError
from .folders import Pair, PairList, Skips, _info, holdout, read_segment
from .noise import loop, lowpass, make_noise, mix_at_snr
from .reverb import generated_rir, load_rirs, reverberate

AUDIO_GLOB = ("*.wav", "*.flac", "*.WAV", "*.FLAC")


@dataclass(frozen=True)
class Clip:
    path: Path
    frames: int   # at the model's rate
    sr: int       # the file's rate


def _clips(folder: Path, sr: int, skips: Skips) -> list[Clip]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    paths = sorted({p for g in AUDIO_GLOB for p in folder.rglob(g) if p.is_file()})
    clips = []
    for p in paths:
        info = _info(p, skips)
        if info is not None:
            clips.append(Clip(p, int(info[0] * sr / info[1]), info[1]))
    if not clips:
        raise DataError(f"{folder}: no readable wav/flac files")
    return clips


def _dirs(arg: Path | str | list) -> list[Path]:
    """One folder, a ``+``-joined list of folders, or a list -> [Path]."""
    if isinstance(arg, (list, tuple)):
        return [Path(a).expanduser() for a in arg]
    return [Path(a).expanduser() for a in str(arg).split("+") if a]


def _category(path: Path) -> str:
    return path.stem.split("__")[0] if "__" in path.stem else ""


class Mixer:
    """Speech and noise clips of one split, and the mixing rule."""

    def __init__(self, speech_dir: Path | str | list, noise_dir: Path | str | list, cfg: Config,
                 split: str) -> None:
        if split not in ("train", "valid", "test"):
            raise DataError(f"mix: unknown split {split!r} (train, valid or test)")
        self.cfg, self.sr = cfg, cfg.stft.sample_rate
        skips = Skips(cfg.data.skip_bad)
        speech_dirs, noise_dirs = _dirs(speech_dir), _dirs(noise_dir)
        self.speech = []
        for i, folder in enumerate(speech_dirs):
            speech = _clips(folder, self.sr, skips)
            # The first folder's names are the plain relative paths (the split of a single-folder
            # spec is unchanged); further folders are told apart by their index.
            rel = {c.path: (f"{i}:" if i else "") + str(c.path.relative_to(folder.expanduser()))
                   for c in speech}
            held = holdout(sorted(rel.values()))
            self.speech += [c for c in speech if (rel[c.path] in held) == (split != "train")]
        if not self.speech:
            raise DataError(f"mix: no {split} speech files in "
                            f"{' + '.join(str(d) for d in speech_dirs)}")
        self.noise = [c for folder in noise_dirs for c in _clips(folder, self.sr, skips)]
        cats: dict[str, list[int]] = {}
        for i, c in enumerate(self.noise):
            cats.setdefault(_category(c.path), []).append(i)
        self.categories = [cats[k] for k in sorted(cats)]
        self.skipped = skips.count
        self.rirs = (load_rirs(_dirs(cfg.data.rir), self.sr)
                     if cfg.data.reverb > 0 and cfg.data.rir else [])

    def noise_for(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """A noise excerpt [n]: generated, babble or (by default) a file: category, then file,
        then a random crop (looped if short)."""
        d = self.cfg.data
        if d.generated_noise + d.babble > 0:
            u = rng.random()
            if u < d.generated_noise:
                kind = d.generated_kinds[int(rng.integers(len(d.generated_kinds)))]
                return make_noise(kind, rng, n, self.sr)
            if u < d.generated_noise + d.babble:
                return self.babble(rng, n)
        files = self.categories[int(rng.integers(len(self.categories)))]
        c = self.noise[files[int(rng.integers(len(files)))]]
        if c.frames >= n:
            start = int(rng.integers(0, c.frames - n + 1))
            return read_segment(c.path, start, n, c.sr, self.sr)
        whole = read_segment(c.path, 0, c.frames, c.sr, self.sr)
        return loop(whole, n, self.sr, rng)

    def babble(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """3-7 talkers of this split's speech, each a random crop at a random level -> [n]."""
        pool = []
        for _ in range(int(rng.integers(3, 8))):
            c = self.speech[int(rng.integers(len(self.speech)))]
            start = int(rng.integers(0, c.frames - n + 1)) if c.frames > n else 0
            pool.append(read_segment(c.path, start, min(n, c.frames), c.sr, self.sr))
        return make_noise("babble", rng, n, self.sr, pool)

    def mix(self, rng: np.random.Generator, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(noisy, clean) float32 [n]: SNR ~ U[snr_min, snr_max], mixture RMS ~ U[level_min,
        level_max] dBFS, then one gain for both so that the noisy peak is <= 0.99. With
        reverberation the mixture holds the reverberant speech (the SNR is relative to it) and the
        target its early part."""
        d = self.cfg.data
        speech = clean
        if d.reverb > 0 and rng.random() < d.reverb:
            rir = (self.rirs[int(rng.integers(len(self.rirs)))] if self.rirs
                   else generated_rir(rng, self.sr))
            speech, clean = reverberate(clean, rir, self.sr)
        if d.narrowband > 0 and rng.random() < d.narrowband:
            cutoff, reverberant = rng.uniform(3400.0, 4000.0), speech is not clean
            clean = lowpass(clean, self.sr, cutoff)
            speech = lowpass(speech, self.sr, cutoff) if reverberant else clean
        noise = self.noise_for(rng, len(clean))
        if d.noise_narrowband > 0 and rng.random() < d.noise_narrowband:
            noise = lowpass(noise, self.sr, rng.uniform(3400.0, 4000.0))
        snr = rng.uniform(self.cfg.data.snr_min, self.cfg.data.snr_max)
        noisy = mix_at_snr(speech, noise, snr)
        rms = float(np.sqrt(np.mean(noisy.astype(np.float64) ** 2)))
        g = 10 ** (rng.uniform(d.level_min, d.level_max) / 20) / rms if rms > 1e-9 else 1.0
        peak = float(np.max(np.abs(noisy))) * g
        if peak > 0.99:
            g *= 0.99 / peak
        return (noisy * g).astype(np.float32), (clean * g).astype(np.float32)


class MixDataset(torch.utils.data.Dataset):
    """Training mixtures: item i -> (noisy, clean) float32 tensors [N].

    A speech file of duration D gives max(1, D // segment) items (each a random crop), so an
    epoch covers the speech about once.
    """

    def __init__(self, mixer: Mixer, cfg: Config) -> None:
        self.mixer, self.sr = mixer, cfg.stft.sample_rate
        self.n = round(cfg.data.segment_seconds * self.sr)
        counts = [max(1, c.frames // self.n) for c in mixer.speech]
        self.owner = np.repeat(np.arange(len(counts)), counts)
        self.seed, self.epoch, self.skipped = cfg.data.seed, 0, mixer.skipped

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.owner)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(i), 31337])
        c = self.mixer.speech[int(self.owner[i])]
        start = int(rng.integers(0, c.frames - self.n + 1)) if c.frames > self.n else 0
        clean = read_segment(c.path, start, self.n, c.sr, self.sr)
        noisy, clean = self.mixer.mix(rng, clean)
        return torch.from_numpy(noisy), torch.from_numpy(clean)


def mix_pairs(mixer: Mixer, split: str, seed: int, limit: int = 0) -> PairList:
    """Fixed-seed whole-utterance mixtures of the held-out speech (``valid``/``test``)."""
    out = PairList()
    out.skipped = mixer.skipped
    clips = mixer.speech[:limit] if limit > 0 else mixer.speech
    for i, c in enumerate(clips):
        rng = np.random.default_rng([seed, ("train", "valid", "test").index(split), i, 2718])
        clean = read_segment(c.path, 0, c.frames, c.sr, mixer.sr)
        noisy, clean = mixer.mix(rng, clean)
        out.append(Pair(c.path.stem, noisy, clean))
    return out

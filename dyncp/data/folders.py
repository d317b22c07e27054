"""Paired noisy/clean folders and VoiceBank+DEMAND; the cropping training dataset over them.

A *pair folder* holds ``noisy/`` and ``clean/`` with the same file names (wav or flac, any rate,
any channel count: resampled with soxr and averaged to mono). Splits of one pair folder
(our choice): ``test`` is every pair, ``train`` / ``valid`` hold out ~10 % by a hash of the file
name (at least one file), so the split does not change when files are added. A folder with
``train/``, ``valid/``, ``test/`` sub-folders (what ``dyncp data build`` writes) uses them.

VoiceBank+DEMAND (Valentini-Botinhao et al., 2016) from its standard folders under ROOT:
``clean_trainset_28spk_wav``, ``noisy_trainset_28spk_wav``, ``clean_testset_wav``,
``noisy_testset_wav``. Files are resampled once (48 -> 16 kHz, soxr) into the cache. Validation is
split by speaker: p226 and p287 of the 28 training speakers are held out, as is commonly done
(e.g. by CMGAN/MetricGAN+ recipes); they never appear in ``train``.

Bad input (empty, unreadable, unpaired, different lengths) raises :class:`DataError` naming the
file, or with ``cfg.data.skip_bad`` is skipped with a warning and counted in ``.skipped``.
"""

from __future__ import annotations

import hashlib
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..atomic import atomic_path
from ..audio import load_audio, resample
from ..config import Config
from ..errors import AudioError, DataError

AUDIO_EXT = (".wav", ".flac")
VB_DIRS = {"train": ("noisy_trainset_28spk_wav", "clean_trainset_28spk_wav"),
           "test": ("noisy_testset_wav", "clean_testset_wav")}
VB_VALID_SPEAKERS = ("p226", "p287")


@dataclass
class Pair:
    """One evaluation pair: whole files at ``cfg.stft.sample_rate``; noisy, clean float32 [N]."""

    name: str
    noisy: np.ndarray
    clean: np.ndarray


class PairList(list):
    """A list of :class:`Pair` that also says how many bad pairs were skipped."""

    skipped: int = 0


@dataclass(frozen=True)
class Entry:
    """A checked pair of files: ``frames`` and ``sr`` of the noisy file (the clean file has the
    same duration, at ``clean_sr``)."""

    name: str
    noisy: Path
    clean: Path
    frames: int
    sr: int
    clean_sr: int


class Skips:
    """Raise or (with ``skip``) warn-and-count each bad input."""

    def __init__(self, skip: bool) -> None:
        self.skip, self.count = skip, 0

    def bad(self, msg: str) -> None:
        if not self.skip:
            raise DataError(msg)
        self.count += 1
        warnings.warn(f"skipping: {msg}", stacklevel=3)


def audio_files(folder: Path) -> dict[str, Path]:
    """name (stem) -> path of the wav/flac files directly in ``folder``."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.suffix.lower() in AUDIO_EXT and p.is_file()}


def _info(path: Path, skips: Skips) -> tuple[int, int] | None:
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile raises several types for broken files
        skips.bad(f"{path}: cannot read audio ({e})")
        return None
    if info.frames <= 0:
        skips.bad(f"{path}: the file holds no samples")
        return None
    return int(info.frames), int(info.samplerate)


def pair_entries(noisy_dir: Path, clean_dir: Path, skips: Skips,
                 keep=lambda name: True) -> list[Entry]:
    """Check and pair the files of ``noisy_dir`` and ``clean_dir`` (names accepted by ``keep``)."""
    noisy, clean = audio_files(noisy_dir), audio_files(clean_dir)
    if not noisy and not clean:
        raise DataError(f"{noisy_dir} and {clean_dir}: no wav/flac files")
    entries = []
    for name in sorted(set(noisy) | set(clean)):
        if not keep(name):
            continue
        if name not in clean:
            skips.bad(f"{noisy[name]}: no clean file of that name in {clean_dir}")
            continue
        if name not in noisy:
            skips.bad(f"{clean[name]}: no noisy file of that name in {noisy_dir}")
            continue
        a, b = _info(noisy[name], skips), _info(clean[name], skips)
        if a is None or b is None:
            continue
        # Lengths are compared in seconds when the rates differ (one sample of tolerance).
        if a[1] == b[1] and a[0] != b[0] or abs(a[0] / a[1] - b[0] / b[1]) * min(a[1], b[1]) > 1:
            skips.bad(f"{noisy[name]}: {a[0]} samples at {a[1]} Hz but {clean[name]} has "
                      f"{b[0]} at {b[1]} Hz (a pair must have the same length)")
            continue
        entries.append(Entry(name, noisy[name], clean[name], a[0], a[1], b[1]))
    if not entries:
        raise DataError(f"{noisy_dir}: no usable noisy/clean pairs")
    return entries


def holdout(names: list[str], fraction: float = 0.1) -> set[str]:
    """A deterministic ~``fraction`` of ``names`` chosen by a hash of the name (>= 1 if any)."""
    def h(n: str) -> float:
        return zlib.crc32(n.encode("utf-8")) / 2 ** 32
    held = {n for n in names if h(n) < fraction}
    if not held and len(names) > 1:
        held = {min(names, key=h)}
    return held


def folder_entries(root: Path, split: str, skips: Skips) -> list[Entry]:
    """Entries of a pair folder (see the module docstring for how splits are chosen)."""
    root = Path(root)
    if (root / split / "noisy").is_dir():
        return pair_entries(root / split / "noisy", root / split / "clean", skips)
    if not ((root / "noisy").is_dir() and (root / "clean").is_dir()):
        raise DataError(f"{root}: expected noisy/ and clean/ folders (or {split}/noisy and "
                        f"{split}/clean)")
    if split == "test":
        return pair_entries(root / "noisy", root / "clean", skips)
    if split not in ("train", "valid"):
        raise DataError(f"{root}: unknown split {split!r} (train, valid or test)")
    names = sorted(set(audio_files(root / "noisy")) | set(audio_files(root / "clean")))
    held = holdout(names)
    keep = (lambda n: n in held) if split == "valid" else (lambda n: n not in held)
    return pair_entries(root / "noisy", root / "clean", skips, keep)


def _convert(src: Path, dst: Path, sr: int) -> None:
    """Resample ``src`` to ``sr`` mono 16-bit into ``dst``, atomically (resumable cache)."""
    try:
        wav = load_audio(src, sr)
    except AudioError as e:
        raise DataError(str(e)) from None
    with atomic_path(dst) as tmp:
        sf.write(str(tmp), np.clip(wav, -1.0, 1.0), sr, subtype="PCM_16")


def voicebank_entries(root: Path, split: str, cfg: Config, skips: Skips,
                      progress: bool | None = False) -> list[Entry]:
    """Entries of VoiceBank+DEMAND's ``train`` (26 speakers), ``valid`` (p226, p287) or
    ``test`` split, resampled into the cache when the files are not at the model's rate."""
    from .builtin import cache_root

    root = Path(root).expanduser()
    if split not in ("train", "valid", "test"):
        raise DataError(f"voicebank: unknown split {split!r} (train, valid or test)")
    dirs = VB_DIRS["test" if split == "test" else "train"]
    for d in dirs:
        if not (root / d).is_dir():
            raise DataError(f"voicebank: {root / d} not found (expected the standard folders "
                            f"{', '.join(f for v in VB_DIRS.values() for f in v)} under {root})")

    def keep(name: str) -> bool:
        if split == "test":
            return True
        return (name.split("_")[0] in VB_VALID_SPEAKERS) == (split == "valid")

    entries = pair_entries(root / dirs[0], root / dirs[1], skips, keep)
    sr = cfg.stft.sample_rate
    if all(e.sr == sr for e in entries):
        return entries
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    cache = cache_root(cfg) / f"voicebank-{key}-{sr}"
    todo = []
    for e in entries:
        for src, d in ((e.noisy, dirs[0]), (e.clean, dirs[1])):
            dst = cache / d / f"{e.name}.wav"
            if not dst.is_file():
                todo.append((src, dst))
    if todo:
        from tqdm import tqdm

        for d in dirs:
            (cache / d).mkdir(parents=True, exist_ok=True)
        for src, dst in tqdm(todo, desc=f"voicebank -> {sr} Hz", unit="file",
                             disable=None if progress is None else not progress, leave=False):
            _convert(src, dst, sr)
    names = {e.name for e in entries}
    return pair_entries(cache / dirs[0], cache / dirs[1], skips, lambda n: n in names)


def read_segment(path: Path, start: int, n: int, sr_file: int, sr: int) -> np.ndarray:
    """``n`` samples at ``sr`` starting at sample ``start`` (counted at ``sr``) of a file at
    ``sr_file``, mono float32 [n] (zero-padded at the end of the file)."""
    try:
        if sr_file == sr:
            wav = sf.read(str(path), start=start, frames=n, dtype="float32", always_2d=True)[0]
            wav = wav.mean(axis=1)
        else:
            a = int(start * sr_file / sr)
            m = int(np.ceil(n * sr_file / sr)) + 16
            raw = sf.read(str(path), start=a, frames=m, dtype="float32", always_2d=True)[0]
            wav = resample(raw.mean(axis=1), sr_file, sr)[:n]
    except Exception as e:
        raise DataError(f"{path}: cannot read audio ({e})") from None
    if not np.all(np.isfinite(wav)):
        raise DataError(f"{path}: NaN or Inf samples")
    out = np.zeros(n, dtype=np.float32)
    out[:len(wav)] = wav[:n]
    return out


def load_pair(e: Entry, sr: int) -> Pair:
    """Whole files of ``e`` at ``sr`` (lengths made equal: resampling may differ by 1)."""
    try:
        noisy, clean = load_audio(e.noisy, sr), load_audio(e.clean, sr)
    except AudioError as err:
        raise DataError(str(err)) from None
    n = min(len(noisy), len(clean))
    return Pair(e.name, noisy[:n].copy(), clean[:n].copy())


class PairDataset(torch.utils.data.Dataset):
    """Random crops of checked pairs: item i -> (noisy, clean) float32 tensors [N].

    N = round(cfg.data.segment_seconds * sr); shorter files are zero-padded at the end. The crop
    start is a function of (cfg.data.seed, epoch, i) only; ``set_epoch`` draws new crops.
    """

    def __init__(self, entries: list[Entry], cfg: Config, skipped: int = 0) -> None:
        self.entries, self.sr = entries, cfg.stft.sample_rate
        self.n = round(cfg.data.segment_seconds * self.sr)
        self.seed, self.epoch, self.skipped = cfg.data.seed, 0, skipped

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.entries[i]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        length = int(round(e.frames * self.sr / e.sr))
        start = int(rng.integers(0, length - self.n + 1)) if length > self.n else 0
        noisy = read_segment(e.noisy, start, self.n, e.sr, self.sr)
        clean = read_segment(e.clean, start, self.n, e.clean_sr, self.sr)
        return torch.from_numpy(noisy), torch.from_numpy(clean)

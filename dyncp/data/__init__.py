"""Data: the built-in corpus, VoiceBank+DEMAND, paired folders and on-the-fly mixing.

A *data spec* names a source:

- ``builtin``: the offline corpus (eSpeak NG speech + generated noise), built once and cached
  (:func:`build_builtin`);
- ``voicebank:ROOT``: VoiceBank+DEMAND's standard folders under ROOT;
- ``pairs:DIR`` or just ``DIR``: ``noisy/`` and ``clean/`` folders with the same file names;
- ``mix:SPEECH_DIR,NOISE_DIR``: mixtures made on the fly; either side may join several folders
  with ``+`` (``mix:a/speech+b/speech,a/noise+b/noise``).

:func:`training_set` gives fixed-length random crops for training; :func:`eval_pairs` gives whole
files for validation and evaluation. Everything is at ``cfg.stft.sample_rate``, mono float32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import Config
from ..errors import DataError
from .builtin import build_builtin, cache_root
from .folders import (Entry, Pair, PairDataset, PairList, Skips, folder_entries, load_pair,
                      voicebank_entries)
from .mixing import MixDataset, Mixer, mix_pairs

__all__ = ["Pair", "PairList", "build_builtin", "cache_root", "eval_pairs", "parse_spec",
           "training_set", "export_pairs"]

SPLITS = ("train", "valid", "test")


def parse_spec(spec: str) -> tuple[str, list[str]]:
    """``"voicebank:/data/vb"`` -> ``("voicebank", ["/data/vb"])``; a plain existing folder is
    ``pairs``. Raises DataError for anything else."""
    spec = (spec or "").strip()
    if spec == "builtin":
        return "builtin", []
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("voicebank", "pairs") and rest:
        return kind, [rest]
    if sep and kind == "mix":
        parts = [p.strip() for p in rest.split(",")]
        if len(parts) != 2 or not all(parts):
            raise DataError(f"data spec {spec!r}: expected mix:SPEECH_DIR,NOISE_DIR")
        return "mix", parts
    if spec and Path(spec).expanduser().is_dir():
        return "pairs", [spec]
    raise DataError(f"data spec {spec!r}: expected builtin, voicebank:ROOT, pairs:DIR, an "
                    "existing folder, or mix:SPEECH_DIR,NOISE_DIR")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (train, valid or test)")


def _entries(kind: str, args: list[str], cfg: Config, split: str, skips: Skips,
             progress: bool | None) -> list[Entry]:
    if kind == "builtin":
        root = build_builtin(cfg, progress=progress)
        return folder_entries(root, split, skips)
    if kind == "voicebank":
        return voicebank_entries(Path(args[0]), split, cfg, skips, progress=progress)
    return folder_entries(Path(args[0]).expanduser(), split, skips)


def training_set(cfg: Config, split: str = "train", spec: str | None = None,
                 progress: bool | None = None) -> torch.utils.data.Dataset:
    """Training crops: item i -> (noisy, clean) float32 tensors [N], N = round(
    cfg.data.segment_seconds * cfg.stft.sample_rate); deterministic given cfg.data.seed, the
    item index and ``dataset.set_epoch(e)``. ``spec`` defaults to cfg.data.train (train) or
    cfg.data.valid or cfg.data.train (valid). ``dataset.skipped`` counts skipped bad pairs.
    ``progress``: show bars while building/converting (None: only on a terminal)."""
    _check_split(split)
    if spec is None:
        spec = cfg.data.train if split == "train" else (cfg.data.valid or cfg.data.train)
    kind, args = parse_spec(spec)
    if kind == "mix":
        return MixDataset(Mixer(Path(args[0]), Path(args[1]), cfg, split), cfg)
    skips = Skips(cfg.data.skip_bad)
    entries = _entries(kind, args, cfg, split, skips, progress)
    return PairDataset(entries, cfg, skipped=skips.count)


def eval_pairs(spec: str, cfg: Config, split: str = "test", limit: int = 0,
               progress: bool | None = None) -> PairList:
    """Whole-file pairs (name order) of ``split`` at cfg.stft.sample_rate; ``limit`` > 0 keeps
    the first ``limit``. Returns a list of :class:`Pair` with ``.skipped`` (bad pairs skipped
    when cfg.data.skip_bad is set)."""
    _check_split(split)
    kind, args = parse_spec(spec)
    if kind == "mix":
        mixer = Mixer(Path(args[0]), Path(args[1]), cfg, split)
        return mix_pairs(mixer, split, cfg.data.seed, limit)
    skips = Skips(cfg.data.skip_bad)
    entries = _entries(kind, args, cfg, split, skips, progress)
    out = PairList()
    for e in entries:
        if limit > 0 and len(out) >= limit:
            break
        try:
            out.append(load_pair(e, cfg.stft.sample_rate))
        except DataError as err:
            skips.bad(str(err))
    out.skipped = skips.count
    return out


def export_pairs(spec: str, cfg: Config, out_dir: Path | str,
                 progress: bool | None = True) -> Path:
    """Write every split of ``spec`` as ``out_dir/<split>/{noisy,clean}/*.wav`` + manifest.csv
    (the built-in corpus is built straight into ``out_dir``). Returns ``out_dir``."""
    import csv
    import io

    from ..atomic import write_text
    from ..audio import save_audio

    kind, _ = parse_spec(spec)
    out_dir = Path(out_dir)
    if kind == "builtin":
        return build_builtin(cfg, out_dir, progress=progress)
    sr = cfg.stft.sample_rate
    for split in SPLITS:
        pairs = eval_pairs(spec, cfg, split, progress=progress)
        rows = []
        for p in pairs:
            for d, x in (("noisy", p.noisy), ("clean", p.clean)):
                save_audio(out_dir / split / d / f"{p.name}.wav", x, sr)
            rows.append({"name": p.name, "seconds": round(len(p.clean) / sr, 3)})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["name", "seconds"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        write_text(out_dir / split / "manifest.csv", buf.getvalue())
    return out_dir

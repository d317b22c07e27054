"""The built-in corpus: eSpeak NG speech + generated noise, built offline and cached on disk.

Layout of a built corpus (also what ``dyncp data build --out DIR`` writes)::

    ROOT/corpus.json                      the settings it was built from (and its cache key)
    ROOT/{train,valid,test}/clean/*.wav   16-bit PCM at cfg.stft.sample_rate
    ROOT/{train,valid,test}/noisy/*.wav   same names, same lengths
    ROOT/{train,valid,test}/manifest.csv  name, voice, language, pitch, range, rate, text,
                                          noise, snr_db, seconds

Design (our choices, not from the paper):

- Talkers are eSpeak NG voices ``<language>+<variant>``. The 104 variants (f1..f5, m1..m8, klatt,
  Alicia, ...) are split 70/15/15 % between train/valid/test, so test talkers are unseen;
  sentences (``texts.txt``, 7 languages) are split 80/10/10 % per language. English text is
  also read by other Latin-script language voices (accented speech). Per utterance: pitch 15-85,
  pitch range 20-100, rate 120-220 words/min. Utterances are 1.5-5 s (short ones get a second
  sentence, long ones are cut at 5 s with a 50 ms fade). A pink floor 60 dB below the speech
  level replaces eSpeak's digital silence in the clean signal.
- Noise kinds from :mod:`dyncp.data.noise`, one per utterance (round robin over a shuffled
  list), plus with probability 0.3 a second kind 6-15 dB lower. Babble sums 3-7 of the same
  split's first 64 utterances, so no valid/test talker leaks into training.
  SNR ~ U[snr_min, snr_max] dB.
- Level: clean and noisy share one gain that puts the noisy peak log-uniformly in
  [-20, -0.5] dBFS (0.1-0.94): varied levels, never clipped.
- eSpeak is not bit-reproducible across repeated calls in one process, so everything is generated
  once in a fixed order, written to a temporary folder and renamed into place when complete: an
  interrupted build is redone, never half-used. The cache key hashes the settings that change
  the audio, the sentence list and :data:`CORPUS_VERSION`. The plan (voices, sentences, noise,
  SNRs, levels) is a function of cfg.data.seed; eSpeak's waveforms for some voices still differ
  by a few samples from one build to the next (measured: even in fresh processes, and
  ``espeak_ng_SetRandSeed`` does not fix it), so reproducibility comes from the cache.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import resample
from ..config import Config
from ..errors import DataError
from . import noise as noisegen

CORPUS_VERSION = 3
SPLITS = ("train", "valid", "test")
MIN_S, MAX_S = 1.5, 5.0
# Latin-script languages whose voices also read the English sentences (accented English).
ACCENTS = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-us-nyc")
FOREIGN_READERS = ("de", "nl", "sv", "da", "nb", "fi", "pl", "cs", "it", "es", "pt", "fr", "ro",
                   "hu", "id", "sw", "tr", "eo")
# Variants that are not human-like enough to serve as a clean target.
EXCLUDED_VARIANTS = {"Demonic", "UniRobot", "anikaRobot"}
BABBLE_POOL = 64  # utterances of a split that serve as its babble talkers
NOISE_ORDER = ("white", "pink", "brown", "band", "babble", "modulated", "nonstationary", "hum",
               "clicks", "babble", "pink", "nonstationary")


@dataclass(frozen=True)
class Utterance:
    name: str
    voice: str
    language: str
    pitch: int
    range_: int
    rate: int
    texts: tuple[str, ...]


def load_texts() -> dict[str, list[str]]:
    """The built-in sentence list: language -> sentences (file order)."""
    out: dict[str, list[str]] = {}
    path = Path(__file__).with_name("texts.txt")
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        lang, _, text = line.partition("\t")
        out.setdefault(lang.strip(), []).append(text.strip())
    return out


def corpus_settings(cfg: Config) -> dict:
    """Everything that changes the corpus's audio; its hash is the cache key."""
    d = cfg.data
    texts = hashlib.sha256(Path(__file__).with_name("texts.txt").read_bytes()).hexdigest()[:12]
    return {"version": CORPUS_VERSION, "texts": texts, "seed": d.seed,
            "sample_rate": cfg.stft.sample_rate,
            "snr_min": d.snr_min, "snr_max": d.snr_max, "train": d.builtin_train,
            "valid": d.builtin_valid, "test": d.builtin_test}


def corpus_key(cfg: Config) -> str:
    blob = json.dumps(corpus_settings(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cache_root(cfg: Config) -> Path:
    """cfg.data.cache_dir, else $DYNCP_CACHE, else ~/.cache/dyncp."""
    base = cfg.data.cache_dir or os.environ.get("DYNCP_CACHE") or "~/.cache/dyncp"
    return Path(base).expanduser()


def _split_three(items: list, rng: np.random.Generator, fractions=(0.7, 0.15, 0.15)) -> dict:
    items = [items[i] for i in rng.permutation(len(items))]
    n_valid = max(1, int(round(fractions[1] * len(items))))
    n_test = max(1, int(round(fractions[2] * len(items))))
    n_train = len(items) - n_valid - n_test
    return {"train": items[:n_train], "valid": items[n_train:n_train + n_valid],
            "test": items[n_train + n_valid:]}


def plan(cfg: Config, variants: list[str]) -> dict[str, list[Utterance]]:
    """The fixed list of utterances of each split (deterministic given the seed)."""
    rng = np.random.default_rng([cfg.data.seed, 7919])
    variants = sorted(v for v in variants if v not in EXCLUDED_VARIANTS)
    by_split_var = _split_three(variants, rng)
    texts = load_texts()
    by_split_text = {lang: _split_three(sents, rng, (0.8, 0.1, 0.1))
                     for lang, sents in sorted(texts.items())}
    other_langs = sorted(lang for lang in texts if lang != "en")
    sizes = {"train": cfg.data.builtin_train, "valid": cfg.data.builtin_valid,
             "test": cfg.data.builtin_test}
    out = {}
    for split in SPLITS:
        srng = np.random.default_rng([cfg.data.seed, SPLITS.index(split), 104729])
        var = by_split_var[split]
        pools = {lang: list(s[split]) for lang, s in by_split_text.items()}
        cursor = {lang: int(srng.integers(len(p))) for lang, p in pools.items()}
        utts = []
        for i in range(sizes[split]):
            variant = var[(i + int(srng.integers(len(var)))) % len(var)]
            r = srng.random()
            if r < 0.55:                      # English, native accents
                lang, voice_lang = "en", ACCENTS[int(srng.integers(len(ACCENTS)))]
            elif r < 0.7:                     # English read by another language's voice
                lang = "en"
                voice_lang = FOREIGN_READERS[int(srng.integers(len(FOREIGN_READERS)))]
            else:                             # another language, its own voice
                lang = other_langs[int(srng.integers(len(other_langs)))]
                voice_lang = lang
            pool = pools[lang]
            sents = tuple(pool[(cursor[lang] + k) % len(pool)] for k in range(3))
            cursor[lang] += 1
            utts.append(Utterance(
                name=f"{split}_{i:05d}", voice=f"{voice_lang}+{variant}", language=lang,
                pitch=int(srng.integers(15, 86)), range_=int(srng.integers(20, 101)),
                rate=int(srng.integers(120, 221)), texts=sents))
        out[split] = utts
    return out


def _trim(wav: np.ndarray, sr: int, keep_s: float = 0.15) -> np.ndarray:
    """Cut leading/trailing silence (below -50 dB re peak, 10 ms frames), keep ``keep_s``."""
    hop = max(int(0.01 * sr), 1)
    n = len(wav) // hop
    if n == 0:
        return wav
    e = np.sqrt(np.mean(wav[:n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    on = np.nonzero(e > 10 ** (-50 / 20) * max(e.max(), 1e-12))[0]
    if len(on) == 0:
        return wav
    keep = int(keep_s * sr)
    return wav[max(on[0] * hop - keep, 0):min((on[-1] + 1) * hop + keep, len(wav))]


def synthesise(u: Utterance, sr: int) -> tuple[np.ndarray, str]:
    """Speech of one utterance at ``sr`` -> (float32 [N], the text spoken); 1.5-5 s."""
    from .speech import synth

    engine = synth()
    parts, spoken = [], []
    total = 0.0
    for text in u.texts:
        raw = engine.say(text, u.voice, rate=u.rate, pitch=u.pitch, range_=u.range_)
        wav = _trim(raw.astype(np.float32) / 32768.0, engine.sr)
        parts.append(wav)
        spoken.append(text)
        total += len(wav) / engine.sr
        if total >= MIN_S:
            break
    wav = resample(np.concatenate(parts), engine.sr, sr)
    n_max = int(MAX_S * sr)
    if len(wav) > n_max:
        wav = wav[:n_max].copy()
        fade = int(0.05 * sr)
        wav[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    if len(wav) < int(0.3 * sr) or not np.any(wav):
        raise DataError(f"eSpeak NG produced no usable speech for {u.voice}: {u.texts[0]!r}")
    return wav, " ".join(spoken)


def _speak(u: Utterance, sr: int) -> tuple[np.ndarray, dict]:
    """Speech of one utterance and its manifest fields; a failing voice falls back to 'en'."""
    try:
        wav, text = synthesise(u, sr)
        voice = u.voice
    except DataError as e:
        warnings.warn(f"built-in corpus: {e}; using voice 'en' instead", stacklevel=2)
        wav, text = synthesise(Utterance(u.name, "en", "en", u.pitch, u.range_, u.rate,
                                         u.texts), sr)
        voice = "en"
    return wav, {"name": u.name, "voice": voice, "language": u.language, "pitch": u.pitch,
                 "range": u.range_, "rate": u.rate, "text": text}


def _build_split(split: str, utts: list[Utterance], cfg: Config, out: Path, bar) -> list[dict]:
    sr = cfg.stft.sample_rate
    rng = np.random.default_rng([cfg.data.seed, SPLITS.index(split), 15485863])
    # The first BABBLE_POOL utterances are synthesised first and kept as the split's babble
    # talkers; the rest are synthesised, mixed and written one by one (bounded memory).
    head = [_speak(u, sr) for u in utts[:BABBLE_POOL]]
    bar.update(len(head))
    pool_all = [wav for wav, _ in head]
    for d in ("clean", "noisy"):
        (out / split / d).mkdir(parents=True, exist_ok=True)
    kinds = [NOISE_ORDER[i] for i in rng.permutation(len(NOISE_ORDER))]
    rows: list[dict] = []
    for i, u in enumerate(utts):
        if i < len(head):
            wav, row = head[i]
        else:
            wav, row = _speak(u, sr)
            bar.update(1)
        rows.append(row)
        n = len(wav)
        kind = kinds[i % len(kinds)]
        pool = [s for j, s in enumerate(pool_all) if j != i]
        noise = noisegen.make_noise(kind, rng, n, sr, pool)
        label = kind
        if rng.random() < 0.3:
            kind2 = NOISE_ORDER[int(rng.integers(len(NOISE_ORDER)))]
            noise = noise + 10 ** (-rng.uniform(6, 15) / 20) * noisegen.make_noise(
                kind2, rng, n, sr, pool)
            label = f"{kind}+{kind2}"
        snr = float(rng.uniform(cfg.data.snr_min, cfg.data.snr_max))
        # eSpeak pauses are digital silence; real clean recordings have a floor. A pink floor
        # 60 dB below the speech RMS (inaudible, below 16-bit quantisation at most levels).
        rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
        wav = wav + 1e-3 * rms * noisegen.pink(rng, n, sr)
        noisy = noisegen.mix_at_snr(wav, noise, snr)
        # One gain for both: the noisy peak lands log-uniformly in [-20, -0.5] dBFS.
        gain = 10 ** (rng.uniform(-20, -0.5) / 20) / max(float(np.max(np.abs(noisy))), 1e-9)
        clean, noisy = wav * gain, noisy * gain
        for d, x in (("clean", clean), ("noisy", noisy)):
            # Through memory: soundfile's close() syncs the file to disk, 100x slower here.
            buf = io.BytesIO()
            sf.write(buf, x, sr, subtype="PCM_16", format="WAV")
            (out / split / d / f"{row['name']}.wav").write_bytes(buf.getvalue())
        bar.update(1)
        row.update(noise=label, snr_db=round(snr, 2), seconds=round(n / sr, 3))
    with open(out / split / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def is_complete(root: Path, key: str | None = None) -> bool:
    """True when ``root`` holds a finished corpus (optionally built with cache key ``key``)."""
    meta = root / "corpus.json"
    if not meta.is_file():
        return False
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    return key is None or info.get("key") == key


def build_builtin(cfg: Config, out_dir: Path | str | None = None,
                  progress: bool | None = True) -> Path:
    """Build (or reuse) the built-in corpus; return its root (see the module docstring).

    ``out_dir`` None: the cache, ``<cache>/builtin-v<version>-<key>``. Otherwise the corpus is
    written to ``out_dir`` (reused there when it already holds the same corpus; an existing
    non-empty folder holding something else is an error).
    """
    key = corpus_key(cfg)
    if out_dir is None:
        root = cache_root(cfg) / f"builtin-v{CORPUS_VERSION}-{key}"
    else:
        root = Path(out_dir)
    if is_complete(root, key):
        return root
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root}: exists and is not a built-in corpus with these settings "
                        "(remove it or choose another folder)")
    root.parent.mkdir(parents=True, exist_ok=True)
    from .speech import synth
    synth()  # fail early (DataError) when eSpeak NG is not installed

    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    from tqdm import tqdm

    t0 = time.perf_counter()
    try:  # build in a temporary folder, rename when complete
        utts = plan(cfg, synth().voices())
        total = sum(len(v) for v in utts.values())
        # Two steps per utterance: synthesis, then noise + mixing + writing.
        with tqdm(total=2 * total, desc="built-in corpus", unit="step", leave=False,
                  disable=None if progress is None else not progress) as bar:
            counts = {s: len(_build_split(s, utts[s], cfg, tmp, bar)) for s in SPLITS}
        info = {"key": key, "settings": corpus_settings(cfg), "utterances": counts,
                "build_seconds": round(time.perf_counter() - t0, 2),
                "note": "speech: eSpeak NG (GPL-3) via espeakng-loader; noise: generated"}
        (tmp / "corpus.json").write_text(json.dumps(info, indent=2))
        if root.exists() and not any(root.iterdir()):
            root.rmdir()  # an empty folder; the rename needs it gone
        try:
            os.replace(tmp, root)
        except OSError:
            if not is_complete(root, key):  # else another process finished the same corpus
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root

"""Offline enhancement: waveform in, waveform (and gates) out.

``enhance(model, wav, sr)`` takes a numpy array or a tensor at any sample rate and returns the
enhanced signal at the same rate; :func:`enhance_tensor` is the batched tensor core that the
evaluation and the streaming equivalence tests use; :func:`enhance_files` is ``dyncp enhance``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .atomic import check_writable
from .audio import check_finite, resample, to_mono
from .dsp import istft, stft
from .errors import AudioError, DataError, DyncpWarning, OutputError
from .model import ConvFSENet


def enhance_tensor(model: ConvFSENet, wav: torch.Tensor, phi=None
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """[B, N] at the model's rate -> (enhanced [B, N], gates: list of binary [B, H, T]).

    The mask multiplies the noisy complex spectrum; the noisy phase is kept (SPEC §1).
    ``model`` may be wrapped in ``DistributedDataParallel`` (training). ``phi``: the requested
    pruning ratio of a budget model (a number or one per item; see ``ConvFSENet.forward``).
    """
    cfg = getattr(model, "module", model).cfg.stft
    spec = stft(wav, cfg)
    mask, gates = model(spec.abs()) if phi is None else model(spec.abs(), phi=phi)
    return istft(mask * spec, cfg, length=wav.shape[-1]), gates


# An input this far outside the mixture levels a model was trained at draws a warning: a static
# model trained at -35..-15 dBFS held its quality from -40 to -10 dBFS and fell under its noisy
# input at -50; trained at -50..-10 it holds from -50 to -10 (docs/training.md, "Input level").
LEVEL_TOLERANCE_DB = 10.0


def check_level(model: ConvFSENet, wav: np.ndarray, name: str = "input") -> float | None:
    """Warn (DyncpWarning, naming ``name``) when the active level of ``wav`` [N] (float, at the
    model's rate) lies more than :data:`LEVEL_TOLERANCE_DB` outside the mixture levels the model
    was trained at (``data.level_min``..``level_max`` of a ``mix:`` recipe). Returns that level
    in dBFS; None when the model's training levels are unknown (another kind of data)."""
    from .losses import active_level

    d = model.cfg.data
    if not d.train.startswith("mix:"):
        return None
    level = 20 * float(np.log10(float(active_level(torch.from_numpy(
        np.ascontiguousarray(wav, np.float32))[None], model.cfg.stft)[0])))
    lo, hi = d.level_min - LEVEL_TOLERANCE_DB, d.level_max + LEVEL_TOLERANCE_DB
    if not lo <= level <= hi:
        warnings.warn(f"{name}: active level {level:.1f} dBFS is outside what this model was "
                      f"trained at ({d.level_min:g} to {d.level_max:g} dBFS, {LEVEL_TOLERANCE_DB:g} "
                      f"dB either side tolerated): quality falls there; scale the input to about "
                      f"{(d.level_min + d.level_max) / 2:g} dBFS first", DyncpWarning, stacklevel=3)
    return level


MAX_CHANNELS = 8
# Integer PCM -> float in [-1, 1): divide by 2^(bits-1); 8-bit PCM is unsigned (WAV) [decided].
_INT_SCALE = {np.dtype(np.int8): 2.0 ** 7, np.dtype(np.int16): 2.0 ** 15,
              np.dtype(np.int32): 2.0 ** 31}


def as_float_samples(wav, name: str = "input") -> np.ndarray:
    """A numpy array or tensor -> float32 array of the same shape, in the float scale (±1).

    Float input is kept as it is; int8/int16/int32 PCM is divided by 2^(bits-1) and uint8 PCM
    centred at 128; other integer types (int64 and friends: no agreed scale), bool and complex
    are refused with AudioError."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    wav = np.asarray(wav)
    kind = wav.dtype.kind
    if kind == "f":
        return wav.astype(np.float32, copy=False)
    if wav.dtype in _INT_SCALE:
        return (wav / _INT_SCALE[wav.dtype]).astype(np.float32)
    if wav.dtype == np.uint8:
        return ((wav.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    raise AudioError(f"{name}: samples of type {wav.dtype} are not supported; pass float samples "
                     f"in [-1, 1] or int8/int16/int32/uint8 PCM")


def enhance(model: ConvFSENet, wav: np.ndarray | torch.Tensor, sr: int | None = None,
            return_gates: bool = False, phi: float | None = None, name: str = "input"):
    """Enhance one signal.

    ``wav``: [N] or [C, N] with at most 8 channels (averaged to mono), numpy array or tensor,
    float in [-1, 1] or integer PCM (scaled: int16 / 32768, see :func:`as_float_samples`).
    soundfile's [N, C] layout is refused, not guessed: pass ``wav.T``. ``sr``: its sample rate
    (default: the model's). Returns a numpy float32 array [N] at ``sr``, and with
    ``return_gates`` also the gates as numpy uint8 arrays [n_blocks, H, T]. ``phi``: the
    requested Φ of a budget model (see dyncp.budget.phi_for). ``name`` names the signal in the
    warning of :func:`check_level` (an input far from the model's training levels). Raises
    AudioError.
    """
    model_sr = model.cfg.stft.sample_rate
    sr = model_sr if sr is None else int(sr)
    wav = as_float_samples(wav)
    if wav.ndim == 2:
        c, n = wav.shape
        if c > MAX_CHANNELS or c >= n:
            hint = (" (that looks like soundfile's [N, C] layout: pass wav.T)"
                    if n <= MAX_CHANNELS and c > n else "")
            raise AudioError(f"input: expected [N] or [C, N] samples with at most {MAX_CHANNELS} "
                             f"channels, got shape {tuple(wav.shape)}{hint}")
        wav = wav.T                                   # [C, N] -> [N, C] for to_mono
    elif wav.ndim != 1:
        raise AudioError(f"input: expected [N] or [C, N] samples (C <= {MAX_CHANNELS}), got "
                         f"shape {tuple(wav.shape)}")
    wav = to_mono(wav, "input")
    if wav.size == 0:
        raise AudioError("input: empty signal (0 samples)")
    check_finite(wav, "input")
    x = resample(wav, sr, model_sr)
    check_level(model, x, name)
    model.eval()
    with torch.inference_mode():
        y, gates = enhance_tensor(model, torch.from_numpy(x).unsqueeze(0), phi=phi)
    out = resample(y[0].numpy(), model_sr, sr)[: wav.shape[0]]
    if out.shape[0] < wav.shape[0]:
        out = np.pad(out, (0, wav.shape[0] - out.shape[0]))
    if return_gates:
        g = (torch.stack([gi[0] for gi in gates]).to(torch.uint8).numpy() if gates
             else np.zeros((0,), np.uint8))
        return out, g
    return out


# Suffixes a folder walk collects, by libsndfile format; only formats this soundfile build reads.
_FORMAT_SUFFIXES = {"WAV": (".wav",), "FLAC": (".flac",), "OGG": (".ogg", ".oga", ".opus"),
                    "MP3": (".mp3",), "AIFF": (".aif", ".aiff"), "W64": (".w64",),
                    "CAF": (".caf",)}


def audio_suffixes() -> tuple[str, ...]:
    """Lower-case suffixes of the sound files this build can read (wav and flac always)."""
    import soundfile as sf

    formats = sf.available_formats()
    return tuple(x for f, xs in _FORMAT_SUFFIXES.items() if f in formats for x in xs)


class Inputs(list):
    """[(input file, output path relative to the output folder)], plus ``skipped``: the files
    a folder walk left out because this build cannot read their format."""

    skipped: list[Path]


def collect_inputs(inputs: list[str | Path], exclude: str | Path | None = None) -> Inputs:
    """Files and folders -> :class:`Inputs`.

    A file keeps its name; a folder is searched recursively for sound files this build reads
    (:func:`audio_suffixes`), which keep their path relative to that folder. Other files are
    skipped and listed in ``.skipped`` (hidden files and files under ``exclude``, the output
    folder when it lies inside an input folder, are left out silently). Outputs are always WAV
    (``x.flac`` becomes ``x.wav``); two inputs that would land on one output name (also when
    the names differ only in case) are an AudioError.
    """
    suffixes = audio_suffixes()
    skip = Path(exclude).resolve() if exclude is not None else None
    out, skipped = Inputs(), []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            inner = skip if skip is not None and skip != p.resolve() else None
            found = []
            for f in sorted(p.rglob("*")):
                if not f.is_file() or f.name.startswith(".") or (
                        inner is not None and f.resolve().is_relative_to(inner)):
                    continue
                (found if f.suffix.lower() in suffixes else skipped).append(f)
            if not found:
                raise DataError(f"{p}: folder holds no sound files this build reads "
                                f"({', '.join(suffixes)})")
            out += [(f, f.relative_to(p).with_suffix(".wav")) for f in found]
        elif p.is_file():
            out.append((p, Path(p.name).with_suffix(".wav")))
        else:
            raise AudioError(f"{p}: no such file or folder")
    seen: dict[str, Path] = {}
    for src, rel in out:
        key = str(rel).casefold()
        if key in seen:
            raise AudioError(f"{src} and {seen[key]} would both be written as {rel}; enhance them "
                             f"into different output folders")
        seen[key] = src
    out.skipped = skipped
    return out


def fit_to_pcm(wav: np.ndarray, name: str, on_clip: str = "normalize") -> np.ndarray:
    """Make an enhanced signal fit 16-bit PCM, saying so when it does not already.

    Float input beyond ±1 gives output beyond ±1, which a WAV file cannot hold. ``normalize``
    [decided default: no distortion] scales the whole file down by its peak; ``clip`` keeps the
    level and clips those samples. Either way a DyncpWarning names the file and the share of
    samples beyond ±1."""
    if on_clip not in ("normalize", "clip"):
        raise ValueError(f"on_clip must be 'normalize' or 'clip', got {on_clip!r}")
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak <= 1.0:
        return wav
    share = 100.0 * float(np.mean(np.abs(wav) > 1.0))
    what = f"{name}: {share:.1f} % of the enhanced samples exceed ±1 (peak {peak:.2f})"
    if on_clip == "clip":
        warnings.warn(f"{what}; clipped (--normalize scales the file instead)", DyncpWarning,
                      stacklevel=2)
        return np.clip(wav, -1.0, 1.0)
    warnings.warn(f"{what}; scaled by {20 * np.log10(1 / peak):.1f} dB so that none clip "
                  f"(--clip keeps the level and clips)", DyncpWarning, stacklevel=2)
    return (wav / peak).astype(np.float32)


def enhance_files(model: ConvFSENet, inputs: list[str | Path], out_dir: str | Path,
                  progress: bool = True, overwrite: bool = False,
                  on_clip: str = "normalize", phi: float | None = None) -> list[Path]:
    """Enhance audio files and folders into ``out_dir``; return the written paths.

    Each file is enhanced at its own sample rate (resampled to the model's and back) and written
    as 16-bit WAV, atomically, with the usual permissions. Before the first file is enhanced:
    every input is checked readable, no two land on one output name, no output is an input,
    no output exists unless ``overwrite``, and every output folder is created and checked
    writable. Files a folder walk skips are named in a DyncpWarning; output beyond ±1 is
    handled by :func:`fit_to_pcm` (``on_clip``). Raises AudioError, DataError, OutputError.
    """
    import soundfile as sf

    from .audio import load_audio, save_audio

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: is a file; the output must be a folder")
    jobs = collect_inputs(inputs, exclude=out_dir)
    if jobs.skipped:
        names = ", ".join(str(f) for f in jobs.skipped[:10])
        more = f" and {len(jobs.skipped) - 10} more" if len(jobs.skipped) > 10 else ""
        warnings.warn(f"skipped {len(jobs.skipped)} file(s) that are not sound files this build "
                      f"reads ({', '.join(audio_suffixes())}): {names}{more}", DyncpWarning,
                      stacklevel=2)
    sources = {src.resolve() for src, _ in jobs}
    rates, existing = [], []
    for src, rel in jobs:
        target = out_dir / rel
        if target.resolve() in sources:
            raise AudioError(f"{target}: refusing to overwrite an input file; choose "
                             f"another output folder")
        if target.is_dir():
            raise OutputError(f"{target}: is a folder; cannot write the enhanced {src} there")
        if target.exists() and not overwrite:
            existing.append(target)
        try:
            rates.append(sf.info(str(src)).samplerate)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"{src}: cannot read audio ({e})") from None
    if existing:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise OutputError(f"{', '.join(map(str, existing[:3]))}{more}: output file(s) exist "
                          f"already; nothing was written (--overwrite replaces them)")
    for folder in sorted({(out_dir / rel).parent for _, rel in jobs}):
        check_writable(folder)
    it = list(zip(jobs, rates))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="enhance", unit="file")
    written = []
    for (src, rel), sr in it:
        y = fit_to_pcm(enhance(model, load_audio(src, sr), sr, phi=phi, name=str(src)),
                       str(src), on_clip)
        written.append(save_audio(out_dir / rel, y, sr, overwrite=overwrite))
    return written

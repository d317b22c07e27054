"""Offline enhancement: waveform in, waveform (and gates) out.

``enhance(model, wav, sr)`` takes a numpy array or a tensor at any sample rate and returns the
enhanced signal at the same rate; :func:`enhance_tensor` is the batched tensor core that the
evaluation and the streaming equivalence tests use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .audio import check_finite, resample, to_mono
from .dsp import istft, stft
from .errors import AudioError
from .model import ConvFSENet


def enhance_tensor(model: ConvFSENet, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """[B, N] at the model's rate -> (enhanced [B, N], gates: list of binary [B, H, T]).

    The mask multiplies the noisy complex spectrum; the noisy phase is kept (SPEC §1).
    ``model`` may be wrapped in ``DistributedDataParallel`` (training).
    """
    cfg = getattr(model, "module", model).cfg.stft
    spec = stft(wav, cfg)
    mask, gates = model(spec.abs())
    return istft(mask * spec, cfg, length=wav.shape[-1]), gates


def enhance(model: ConvFSENet, wav: np.ndarray | torch.Tensor, sr: int | None = None,
            return_gates: bool = False):
    """Enhance one mono signal.

    ``wav``: [N] (or [N, C] / [C, N] with few channels, downmixed) numpy array or tensor;
    ``sr``: its sample rate (default: the model's). Returns a numpy float32 array [N] at ``sr``,
    and with ``return_gates`` also the gates as numpy uint8 arrays [n_blocks, H, T].
    """
    model_sr = model.cfg.stft.sample_rate
    sr = model_sr if sr is None else int(sr)
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2 and wav.shape[0] < wav.shape[1] and wav.shape[0] <= 8:
        wav = wav.T  # [C, N] -> [N, C]
    wav = to_mono(wav, "input")
    if wav.size == 0:
        raise AudioError("input: empty signal (0 samples)")
    check_finite(wav, "input")
    x = resample(wav, sr, model_sr)
    model.eval()
    with torch.inference_mode():
        y, gates = enhance_tensor(model, torch.from_numpy(x).unsqueeze(0))
    out = resample(y[0].numpy(), model_sr, sr)[: wav.shape[0]]
    if out.shape[0] < wav.shape[0]:
        out = np.pad(out, (0, wav.shape[0] - out.shape[0]))
    if return_gates:
        g = (torch.stack([gi[0] for gi in gates]).to(torch.uint8).numpy() if gates
             else np.zeros((0,), np.uint8))
        return out, g
    return out


AUDIO_SUFFIXES = (".wav", ".flac")


def collect_inputs(inputs: list[str | Path], exclude: str | Path | None = None
                   ) -> list[tuple[Path, Path]]:
    """Files and folders -> [(input file, output path relative to the output folder)].

    A file keeps its name; a folder is searched recursively for .wav/.flac files, which keep their
    path relative to that folder; files under ``exclude`` (the output folder, when it lies inside
    an input folder) are not collected. Outputs are always WAV (``.flac`` becomes ``.wav``).
    """
    from .errors import DataError

    skip = Path(exclude).resolve() if exclude is not None else None
    out: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            inner = skip if skip is not None and skip != p.resolve() else None
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.suffix.lower() in AUDIO_SUFFIXES and not f.name.startswith(".")
                           and not (inner is not None and f.resolve().is_relative_to(inner)))
            if not found:
                raise DataError(f"{p}: folder holds no .wav or .flac files")
            out += [(f, f.relative_to(p).with_suffix(".wav")) for f in found]
        elif p.is_file():
            out.append((p, Path(p.name).with_suffix(".wav")))
        else:
            raise AudioError(f"{p}: no such file or folder")
    seen: dict[Path, Path] = {}
    for src, rel in out:
        if rel in seen:
            raise AudioError(f"{src} and {seen[rel]} would both be written as {rel}; enhance them "
                             f"into different output folders")
        seen[rel] = src
    return out


def enhance_files(model: ConvFSENet, inputs: list[str | Path], out_dir: str | Path,
                  progress: bool = True) -> list[Path]:
    """Enhance audio files and folders into ``out_dir``; return the written paths.

    Each file is enhanced at its own sample rate (resampled to the model's and back) and written
    as 16-bit WAV, atomically. Every input is checked (readable, not an output target) before the
    first file is written, and an input file is never overwritten.
    """
    import soundfile as sf

    from .audio import load_audio, save_audio

    out_dir = Path(out_dir)
    jobs = collect_inputs(inputs, exclude=out_dir)
    sources = {src.resolve() for src, _ in jobs}
    rates = []
    for src, rel in jobs:
        if (out_dir / rel).resolve() in sources:
            raise AudioError(f"{out_dir / rel}: refusing to overwrite an input file; choose "
                             f"another output folder")
        try:
            rates.append(sf.info(str(src)).samplerate)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"{src}: cannot read audio ({e})") from None
    it = list(zip(jobs, rates))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="enhance", unit="file")
    written = []
    for (src, rel), sr in it:
        wav = load_audio(src, sr)
        written.append(save_audio(out_dir / rel, enhance(model, wav, sr), sr))
    return written

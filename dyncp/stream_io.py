"""Streaming a sound file as a device would receive it (``dyncp stream``): a
:class:`~dyncp.streaming.Streamer` fed in chunks, timed per frame, compared with offline
enhancement, the output written. The streaming session itself lives in :mod:`dyncp.streaming`,
its DSP in :mod:`dyncp.stream_dsp`."""

from __future__ import annotations

import time

import numpy as np
import torch

from .model import ConvFSENet
from .streaming import Streamer, eval_copy


def stream_file(model: ConvFSENet, in_path, out_path=None, engine: str = "torch",
                chunk: int = 0, phi: float | None = None, mmac: float | None = None,
                governor=None) -> dict:
    """Stream a sound file through a :class:`Streamer` in chunks of ``chunk`` samples (0: one
    hop), as a device would receive it, and compare with offline enhancement.

    Returns ``us_per_frame_median``, ``us_per_frame_p99`` (compute per frame: STFT, mask
    estimation, iSTFT), ``rtf`` (wall time of all feed/flush calls / audio duration),
    ``pruning_ratio``, ``dynamic_mmac_per_s`` (the MACs spent, :class:`StreamStats`),
    ``max_abs_diff_offline``, ``phi`` (the budget run: ``phi`` or ``mmac`` MMAC/s of a budget
    model; None for a model without one), plus ``frames``, ``seconds`` and ``engine``. With a
    ``governor`` (:class:`dyncp.governor.Governor`) Φ changes from frame to frame: ``governor``
    holds its statistics (target, mean, the extremes of the window mean) and there is no single-Φ
    offline reference (``max_abs_diff_offline`` is None). Writes the enhanced signal to
    ``out_path`` when given. ``model`` is left as it was.
    """
    from .audio import load_audio, save_audio
    from .enhance import check_level, enhance_tensor

    sr = model.cfg.stft.sample_rate
    streamer = Streamer(model, engine, record_gates=False, record_times=True, phi=phi,
                        budget=mmac, governor=governor)
    wav = load_audio(in_path, sr)
    check_level(model, wav, str(in_path))
    run_phi = streamer.stats.phi
    step = chunk if chunk > 0 else streamer.hop
    outs = []
    t0 = time.perf_counter()
    for i in range(0, wav.shape[0], step):
        outs.append(streamer.feed(wav[i:i + step]))
    outs.append(streamer.flush())
    wall = time.perf_counter() - t0
    out = np.concatenate(outs)
    diff = None
    if governor is None:
        with torch.inference_mode():
            ref, _ = enhance_tensor(eval_copy(model), torch.from_numpy(wav).unsqueeze(0),
                                    phi=run_phi)
        diff = float(np.abs(out - ref[0].numpy()).max())
    times = np.asarray(streamer.stats.times) * 1e6
    if out_path is not None:
        save_audio(out_path, out, sr)
    return {
        "engine": engine, "frames": streamer.stats.frames, "seconds": wav.shape[0] / sr,
        "us_per_frame_median": float(np.median(times)),
        "us_per_frame_p99": float(np.percentile(times, 99)),
        "rtf": wall / (wav.shape[0] / sr),
        "pruning_ratio": streamer.pruning_ratio,
        "dynamic_mmac_per_s": streamer.stats.mmac_per_s, "phi": run_phi if governor is None else None,
        "max_abs_diff_offline": diff,
        "governor": governor.stats() if governor is not None else None,
    }

"""C export: a self-contained C99 library of a causal model, for microcontrollers.

``export_c(model, out_dir, variant="fp32"|"int8", calib=...)`` writes a header, sources and the
weights as const arrays (see :mod:`dyncp.export_c.writer` for the files), then, when a C compiler
is present, compiles it on the host and checks it against ``dyncp.Streamer(model, "sparse")``
(:func:`dyncp.export_c.host.verify`): the fp32 library must give the same gates and samples within
1e-4, or the export fails and leaves nothing behind.

Public pieces: :func:`export_c`, :func:`calibration_audio`, :class:`HostLibrary`, :func:`verify`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DyncpError
from ..model import ConvFSENet, require_causal
from .host import HostLibrary, find_cc, verify
from .params import Geometry, calibrate, dsp_tables, fp32_params, int8_params
from .writer import state_bytes, template, write_library

__all__ = ["HostLibrary", "calibration_audio", "export_c", "probe_signal", "verify"]

VARIANTS = ("fp32", "int8")
FP32_TOLERANCE = 1e-4


def probe_signal(sr: int, seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like signal (harmonic glides with a syllable envelope in noise)
    for the export's self-check when no audio is given."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(120 + 40 * np.sin(2 * np.pi * 0.3 * t)) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None)
    return (0.2 * env * voiced + 0.03 * rng.standard_normal(t.size)).astype(np.float32)


def calibration_audio(spec: str, cfg, files: int = 16) -> list[np.ndarray]:
    """Noisy waveforms for int8 calibration: a data spec (``mix:SPEECH,NOISE``, ``pairs:DIR``,
    ``builtin``; the training split) or a folder of sound files; at most ``files`` of them."""
    from ..audio import load_audio
    from ..data import eval_pairs

    folder = Path(spec)
    if folder.is_dir() and not (folder / "noisy").is_dir():
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".wav", ".flac"))
        if not paths:
            raise DyncpError(f"calibration folder {folder} has no .wav/.flac files")
        return [load_audio(p, cfg.stft.sample_rate) for p in paths[:files]]
    return [p.noisy for p in eval_pairs(spec, cfg, split="train", limit=files)]


def _values(model: ConvFSENet, g: Geometry, variant: str, weight_bytes: int) -> dict:
    from .. import __version__

    sr = g.sample_rate
    info = (f"dyncp {model.cfg.name} {variant}: {g.n_blocks} blocks x {g.hid} gated channels "
            f"({'gated' if g.gated else 'static'}), residual {g.res}, kernel {g.kernel}, "
            f"dilations {list(g.dilations)}, n_fft {g.n_fft}, hop {g.hop}, {sr} Hz, "
            f"weights {weight_bytes} bytes"
            + (f", run-time budget: Φ 0 or {g.budget_min:g}-{g.budget_max:g} (nominal "
               f"{g.budget_nominal:g})" if g.budget else ""))
    return {"MODEL": model.cfg.name, "VARIANT": variant, "VERSION": __version__,
            "SAMPLE_RATE": sr, "HOP": g.hop, "N_FFT": g.n_fft, "N_FREQ": g.n_freq,
            "LATENCY": g.n_fft - g.hop, "HOP_MS": f"{1000 * g.hop / sr:g}",
            "LATENCY_MS": f"{1000 * (g.n_fft - g.hop) / sr:g}", "N_BLOCKS": g.n_blocks,
            "HID": g.hid, "WEIGHT_KB": f"{weight_bytes / 1024:.0f}", "INFO": info}


def export_c(model: ConvFSENet, out_dir: str | Path, variant: str = "fp32",
             calib: list[np.ndarray] | None = None, prefix: str = "dyncp",
             check: bool | None = None, check_wav: np.ndarray | None = None) -> dict:
    """Write the C library of a causal ``model`` into ``out_dir``.

    ``variant``: ``fp32`` or ``int8`` (which needs ``calib``: calibration waveforms, see
    :func:`calibration_audio`). ``check``: compile with the host compiler and compare with the
    sparse Streamer on ``check_wav`` (default: the first calibration clip, else
    :func:`probe_signal`); None = when a compiler exists. Returns a summary: files, bytes of
    weights and state, and the check's figures (``max_abs_diff``, ``gate_mismatches``, ...).
    """
    require_causal(model.cfg, "C export")
    if variant not in VARIANTS:
        raise DyncpError(f"C export variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    model.eval()
    g = Geometry.of(model)
    try:
        tables = dsp_tables(g)
    except ValueError as e:
        raise DyncpError(str(e)) from None
    if variant == "int8":
        if not calib:
            raise DyncpError("the int8 export needs calibration audio (--calib: a data spec "
                             "such as mix:SPEECH_DIR,NOISE_DIR, or a folder of sound files)")
        arrays = int8_params(model, calibrate(model, calib))
    else:
        arrays = fp32_params(model)
    weight_bytes = int(sum(a.nbytes for a in arrays.values()))
    arrays = {**tables, **arrays}
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    readme = template("README.md")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        files = write_library(tmp, g, arrays, variant == "int8",
                              _values(model, g, variant, weight_bytes), readme, prefix)
        summary = {"variant": variant, "weight_bytes": weight_bytes,
                   "state_bytes": state_bytes(g, variant == "int8"),
                   "table_bytes": int(sum(a.nbytes for a in tables.values())),
                   "files": [f.name for f in files]}
        if check is None:
            check = find_cc() is not None
        if check:
            wav = check_wav if check_wav is not None else (
                calib[0] if calib else probe_signal(g.sample_rate))
            r = verify(tmp, model, wav, prefix, build=tmp / f".lib{prefix}.so")
            (tmp / f".lib{prefix}.so").unlink(missing_ok=True)
            summary["check"] = r
            if variant == "fp32" and (r["gate_mismatches"] or r["max_abs_diff"] > FP32_TOLERANCE):
                raise DyncpError(f"C export check failed: the compiled library differs from the "
                                 f"sparse Streamer over {r['frames']} frames (max abs diff "
                                 f"{r['max_abs_diff']:.2e}, {r['gate_mismatches']} gate "
                                 f"mismatches; a lone gate flip can be a score within float "
                                 f"rounding of 0, see docs/deploy.md)")
        out_dir.mkdir(exist_ok=True)
        for f in files:
            shutil.move(str(f), out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary["path"] = str(out_dir)
    return summary

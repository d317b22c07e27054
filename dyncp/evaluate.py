"""Evaluation: speech metrics and the compute the model actually spent (SPEC §3-4, §3a).

``evaluate(model, pairs)`` enhances each pair (whole file, offline), scores it with
:func:`dyncp.metrics.score`, scores the noisy input as a reference row, and measures the gates:

- dynamic MACs per frame (:func:`dyncp.macs.dynamic_macs`, averaged over every frame of the set)
  next to the static (dense) count, per frame and per second of audio;
- the measured pruning ratio Φ overall and per block (frame-weighted over the set);
- how dynamic the gates are (SPEC §3a): the standard deviation over frames of the per-frame Φ,
  the fractions of gated channels never on / always on over the whole set, and Φ on speech vs
  non-speech frames. A frame is speech when the clean signal's STFT-frame energy lies within
  40 dB of the file's loudest frame [decided].

For a static model the dynamic MACs equal the static MACs, every ratio is 0, and ``gated`` is
false. Result: ``{"mean": {...}, "files": [...], "noisy": {...}}`` (JSON-ready; NaN -> None).
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dsp import SPEECH_FLOOR_DB, speech_mask
from .enhance import enhance_tensor
from .errors import AudioError, DyncpWarning
from .macs import (PhiMeter, dynamic_macs, frames_per_second, gate_macs_per_frame,
                   static_macs_per_frame)
from .model import ConvFSENet

METRIC_KEYS = ("pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr", "csig", "cbak", "covl")


def _clean_float(x: Any) -> Any:
    """float/np scalar -> float, NaN/Inf -> None (strict JSON)."""
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def _mean_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over files of each metric key, ignoring files where it is missing or NaN."""
    keys = [k for k in rows[0] if k not in ("name",)] if rows else []
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and r[k] is not None
                and math.isfinite(r[k])]
        out[k] = float(np.mean(vals)) if vals else None
    return out


class _GateStats:
    """Accumulates gate statistics over all frames of an evaluation set."""

    def __init__(self, n_blocks: int, hidden: int) -> None:
        self.phi = PhiMeter(n_blocks, hidden)               # Φ overall and per block
        self.ever_on = np.zeros((n_blocks, hidden), bool)
        self.always_on = np.ones((n_blocks, hidden), bool)
        self.frame_phi: list[np.ndarray] = []               # per-frame Φ of each file [T]
        self.speech: list[np.ndarray] = []                  # speech-frame flags [T]
        self.macs_sum = 0.0

    def add(self, g: np.ndarray, speech: np.ndarray, macs_per_frame: np.ndarray) -> None:
        """g [n_blocks, H, T] binary; speech [T] bool; macs_per_frame [T]."""
        self.phi.add(g)
        self.ever_on |= g.any(axis=-1)
        self.always_on &= g.all(axis=-1)
        self.frame_phi.append(1.0 - g.mean(axis=(0, 1)))
        self.speech.append(speech)
        self.macs_sum += float(macs_per_frame.sum())

    def summary(self, hidden: int) -> dict[str, Any]:
        phi = np.concatenate(self.frame_phi)
        sp = np.concatenate(self.speech)
        return {
            "pruning_ratio": self.phi.value,
            "pruning_ratio_per_block": self.phi.per_block(),
            "pruning_ratio_frame_std": float(phi.std()),
            "channels_never_on": float((~self.ever_on).mean()),
            "channels_always_on": float(self.always_on.mean()),
            "pruning_ratio_speech": float(phi[sp].mean()) if sp.any() else None,
            "pruning_ratio_nonspeech": float(phi[~sp].mean()) if (~sp).any() else None,
            "speech_frame_fraction": float(sp.mean()),
            "dynamic_macs_per_frame": self.macs_sum / self.phi.frames,
        }


def speech_frames(clean: torch.Tensor, cfg, floor_db: float = SPEECH_FLOOR_DB) -> np.ndarray:
    """[N] clean waveform -> [T] bool (:func:`dyncp.dsp.speech_mask`)."""
    return speech_mask(clean, cfg.stft, floor_db).numpy()


def _score(name: str, what: str, est: np.ndarray, clean: np.ndarray, sr: int,
           dnsmos: bool) -> dict[str, float]:
    """:func:`dyncp.metrics.score`, with every warning and error naming the file."""
    from .metrics import score

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            row = score(est, clean, sr=sr, dnsmos=dnsmos)
        except AudioError as e:
            raise AudioError(f"{name}: {e}") from None
    for w in caught:
        cat = DyncpWarning if issubclass(w.category, UserWarning) else w.category
        warnings.warn(f"{name} ({what}): {w.message}", cat, stacklevel=3)
    return row


def evaluate(model: ConvFSENet, pairs: list, dnsmos: bool = False,
             progress: bool = True, phi: float | None = None) -> dict[str, Any]:
    """Score ``model`` on ``pairs`` (each with ``name``, ``noisy`` [N], ``clean`` [N] float32 at
    the model's rate). Returns ``{"mean", "files", "noisy"}``; see the module docstring.
    ``phi``: the requested Φ of a budget model (None: its nominal budget; 0: every channel, no
    gate, the static cost).
    A metric that cannot be computed for a file (too short for PESQ or STOI, ...) is left out
    of that file's row and of the mean, with a DyncpWarning naming the file."""
    if not pairs:
        raise ValueError("evaluate: no pairs to score")
    cfg, sr = model.cfg, model.cfg.stft.sample_rate
    static = static_macs_per_frame(cfg)
    runs_gates = model.gated and not (phi is not None and float(phi) == 0.0)
    stats = _GateStats(cfg.model.n_blocks, cfg.model.hidden) if runs_gates else None
    files, noisy_rows = [], []
    it = pairs
    if progress:
        from tqdm import tqdm
        it = tqdm(pairs, desc="evaluate", unit="file", file=sys.stderr, dynamic_ncols=True)
    model.eval()
    for p in it:
        noisy = torch.from_numpy(np.asarray(p.noisy, np.float32))
        clean = torch.from_numpy(np.asarray(p.clean, np.float32))
        with torch.inference_mode():
            est, gates = enhance_tensor(model, noisy.unsqueeze(0), phi=phi)
        est_np = est[0].numpy()
        row = {"name": p.name, "seconds": noisy.shape[-1] / sr}
        row.update(_score(p.name, "enhanced", est_np, p.clean, sr, dnsmos))
        if stats is not None:
            g = torch.stack([x[0] for x in gates]).to(torch.uint8).numpy()     # [n_blocks, H, T]
            macs = dynamic_macs(cfg, gates).per_frame[0].numpy()              # [T]
            sp = speech_frames(clean, cfg)
            stats.add(g, sp, macs)
            row["pruning_ratio"] = float(1.0 - g.mean())
            row["dynamic_macs_per_frame"] = float(macs.mean())
        else:
            row["pruning_ratio"] = 0.0
            row["dynamic_macs_per_frame"] = float(static)
        files.append({k: _clean_float(v) for k, v in row.items()})
        nrow = {"name": p.name}
        nrow.update(_score(p.name, "noisy", np.asarray(p.noisy, np.float32), p.clean, sr,
                           dnsmos))
        noisy_rows.append({k: _clean_float(v) for k, v in nrow.items()})

    mean = _mean_metrics([{k: v for k, v in f.items()
                           if k not in ("pruning_ratio", "dynamic_macs_per_frame")}
                          for f in files])
    fps = frames_per_second(cfg)
    mean["seconds"] = float(sum(f["seconds"] for f in files))    # total, not the mean
    if getattr(model, "budgeted", False):
        mean["phi_requested"] = cfg.loss.prune_target if phi is None else float(phi)
    mean.update({"gated": model.gated, "n_files": len(files),
                 "static_macs_per_frame": static,
                 "gate_macs_per_frame": gate_macs_per_frame(cfg),
                 "static_mmac_per_s": static * fps / 1e6})
    if stats is not None:
        mean.update(stats.summary(cfg.model.hidden))
    else:  # every channel always on: nothing pruned, nothing dynamic
        mean.update({"pruning_ratio": 0.0,
                     "pruning_ratio_per_block": [0.0] * cfg.model.n_blocks,
                     "pruning_ratio_frame_std": 0.0, "channels_never_on": 0.0,
                     "channels_always_on": 1.0, "pruning_ratio_speech": 0.0,
                     "pruning_ratio_nonspeech": 0.0, "speech_frame_fraction": None,
                     "dynamic_macs_per_frame": float(static)})
    mean["dynamic_mmac_per_s"] = mean["dynamic_macs_per_frame"] * fps / 1e6
    mean["macs_saved_fraction"] = 1.0 - mean["dynamic_macs_per_frame"] / static
    mean["note"] = ("MACs exclude bias, normalisation, activations and gate pooling; dynamic MACs "
                    "include the gates' score stacks")
    noisy_mean = _mean_metrics(noisy_rows)
    return {"mean": {k: _clean_float(v) for k, v in mean.items()}, "files": files,
            "noisy": {k: _clean_float(v) for k, v in noisy_mean.items()}}


def evaluate_checkpoint(ckpt: str | Path, data_spec: str, split: str = "test", limit: int = 0,
                        dnsmos: bool = False, progress: bool = True,
                        overrides: list[str] | None = None, phi: float | None = None,
                        mmac: float | None = None) -> dict[str, Any]:
    """Load a model checkpoint, read ``data_spec`` (``builtin``, ``pairs:DIR``, a folder,
    ``voicebank:ROOT``, ``mix:SPEECH,NOISE``) at the model's rate and :func:`evaluate` it.
    ``overrides``: ``data.KEY=VALUE`` items for reading the data (``data.skip_bad=true``).
    ``phi`` or ``mmac`` (MMAC/s): the run-time budget of a budget model (BudgetError for others
    and for requests outside the model's range)."""
    from .budget import phi_for
    from .checkpoint import load_model
    from .config import with_data_overrides
    from .data import eval_pairs

    model, meta = load_model(ckpt)
    phi = phi_for(model.cfg, phi, mmac)
    pairs = eval_pairs(data_spec, with_data_overrides(model.cfg, overrides), split=split,
                       limit=limit)
    out = evaluate(model, pairs, dnsmos=dnsmos, progress=progress, phi=phi)
    from .devset import breakdown, read_manifest
    manifest = read_manifest(data_spec)      # {} for specs without a manifest.csv
    if manifest:   # e.g. realdev: scores (and a gated model's Φ) per band, noise kind and SNR
        metrics = ("pesq_wb", "stoi", "si_sdr") + (("pruning_ratio",) if out["mean"]["gated"]
                                                   else ())
        out["by"] = breakdown(out["files"], manifest, metrics)
    out["info"] = {"checkpoint": str(ckpt), "data": data_spec, "split": split,
                   "config": model.cfg.name, "epoch": meta.get("epoch")}
    return out


def format_table(result: dict[str, Any]) -> str:
    """A readable summary: metrics of the noisy input and the model, then compute and gates."""
    m, n = result["mean"], result["noisy"]
    keys = [k for k in METRIC_KEYS + ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak") if k in m]

    def f(v, fmt="{:.3f}"):
        return "-" if v is None else fmt.format(v)

    lines = [f"{'':10s}" + "".join(f"{k:>9s}" for k in keys),
             f"{'noisy':10s}" + "".join(f"{f(n.get(k)):>9s}" for k in keys),
             f"{'enhanced':10s}" + "".join(f"{f(m.get(k)):>9s}" for k in keys),
             "",
             f"files                  {m['n_files']}",
             f"static MACs/frame      {m['static_macs_per_frame']:,.0f}  "
             f"({m['static_mmac_per_s']:.2f} MMAC/s)",
             f"dynamic MACs/frame     {m['dynamic_macs_per_frame']:,.0f}  "
             f"({m['dynamic_mmac_per_s']:.2f} MMAC/s, {100 * m['macs_saved_fraction']:.1f} % "
             f"saved)"]
    if m["gated"]:
        lines += [
            f"pruning ratio Φ        {m['pruning_ratio']:.3f}  (frame std "
            f"{m['pruning_ratio_frame_std']:.3f})",
            "Φ per block            " + " ".join(f"{x:.2f}" for x in m["pruning_ratio_per_block"]),
            f"channels never on      {100 * m['channels_never_on']:.1f} %   always on "
            f"{100 * m['channels_always_on']:.1f} %",
            f"Φ speech / non-speech  {f(m['pruning_ratio_speech'])} / "
            f"{f(m['pruning_ratio_nonspeech'])}"]
    else:
        lines.append("gates                  none (static model: every channel always on)")
    for col, title in (("band", "by band"), ("noise_kind", "by noise kind"),
                       ("snr_db", "by SNR (dB)")):
        groups = (result.get("by") or {}).get(col)
        if groups:
            gated = any(v.get("pruning_ratio") is not None for v in groups.values())
            lines += ["", f"PESQ-WB{' and Φ' if gated else ''} {title}:"] + [
                f"  {k:<20s} {f(v.get('pesq_wb'))}"
                + (f"  Φ {f(v.get('pruning_ratio'))}" if gated else "") + f"  (n={v['n']})"
                for k, v in groups.items()]
    return "\n".join(lines)

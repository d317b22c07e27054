"""What a training run keeps besides the model: who this process is under ``torchrun``, the RNG
states that make ``--resume`` exact, the EMA of the weights, the resume state file, the log CSV and
TensorBoard scalars. The loop itself is :mod:`dyncp.train`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .atomic import write_text
from .checkpoint import load_dict
from .model import ConvFSENet

MACHINE_KEYS = ("train.threads", "train.num_workers")


STATE_FORMAT = "dyncp-train-state"


STATE_VERSION = 1


LOG_COLUMNS = ("epoch", "step", "lr", "phi_target", "train_loss", "train_se", "train_phi",
               "valid_loss", "valid_pesq_wb", "valid_si_sdr", "valid_phi", "epoch_seconds",
               "audio_s_per_s", "audio_hours", "monitor_pesq_wb", "monitor_si_sdr", "monitor_phi",
               "monitor_raw_pesq_wb")


# -- helpers: distributed, RNG, ramp ------------------------------------------------------------


class _Dist:
    """Who we are: ``torchrun`` sets WORLD_SIZE/RANK/LOCAL_RANK; a plain run is rank 0 of 1."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.owns_group = False
        if torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _rng_state() -> dict[str, Any]:
    """RNG states of torch, numpy and python as tensors and plain types (weights_only-safe)."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    out = {"torch": torch.get_rng_state(),
           "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64),
                      "gauss": gauss},
           "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                     "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                     "gauss": float(np_gauss)}}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    p = s["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- model init / fine-tuning --------------------------------------------------------------------


class _EMA:
    """Exponential moving average of a model's parameters; buffers (BatchNorm statistics) are
    copied from the model at every update."""

    def __init__(self, model: ConvFSENet, decay: float) -> None:
        import copy
        self.model, self.decay = copy.deepcopy(model), float(decay)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: ConvFSENet, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        ema_p = list(self.model.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1.0 - d)
        for b_e, b in zip(self.model.buffers(), model.buffers()):
            b_e.copy_(b)


def _read_log(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def recipe_diff(old: dict, new: dict) -> list[str]:
    """Config keys in which two configs (plain dicts) differ as recipes: keys added since
    ``old`` was written take their defaults, and the machine keys (:data:`MACHINE_KEYS`) do not
    count. The one rule for ``--resume`` and for the study's finished rows."""
    from .config import Config
    return [k for k in _config_diff(Config.from_dict(old).to_dict(),
                                    Config.from_dict(new).to_dict())
            if k not in MACHINE_KEYS]


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a resume state (``weights_only=True``) and check its format/version."""
    return load_dict(path, STATE_FORMAT, STATE_VERSION)


# -- the loop ------------------------------------------------------------------------------------


def _log_tensorboard(run_dir: Path, row: dict[str, Any]) -> None:
    """Scalars to TensorBoard when it is installed (optional; the CSV log is the record)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    with SummaryWriter(str(run_dir / "tb")) as w:
        for k, v in row.items():
            if k not in ("epoch", "step") and isinstance(v, (int, float)) and math.isfinite(v):
                w.add_scalar(k, v, int(row["step"]))

"""Checkpoints as plain dicts, written atomically, read with ``torch.load(weights_only=True)``.

A model checkpoint::

    {"format": "dyncp-model", "version": 1, "config": {...}, "state_dict": {...}, "meta": {...}}

A training-resume state is a different file (``format = "dyncp-train-state"``) with optimiser,
scheduler, RNG and progress; see :mod:`dyncp.train`. Neither ever needs pickle: a file that does
is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import Config
from .errors import CheckpointError, ConfigError
from .model import ConvFSENet

MODEL_FORMAT = "dyncp-model"
MODEL_VERSION = 1


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.
    A crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _pickle_reason(e: Exception) -> str:
    """The useful part of torch's weights-only refusal: which global the file asks for. (Its
    first line only explains how to bypass the check, which a library must not suggest.)"""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"it references {m.group(1)}"
    m = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
    line = m.group(1) if m else (text.strip().splitlines() or [type(e).__name__])[0]
    return line.strip()[:200]


def load_dict(path: str | Path, fmt: str, version: int) -> dict[str, Any]:
    """Load a dict with ``weights_only=True`` and check its ``format`` and ``version`` keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused, the file needs pickle to load "
                              f"({_pickle_reason(e)}); only plain dicts of tensors are accepted "
                              f"and nothing was executed") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            IndexError, KeyError, TypeError, AttributeError) as e:  # e.g. a .wav given as -c
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    if obj.get("format") != fmt:
        raise CheckpointError(f"{path}: format is {obj.get('format')!r}, expected {fmt!r}")
    if obj.get("version") != version:
        raise CheckpointError(f"{path}: {fmt} version {obj.get('version')!r} is not supported "
                              f"(this dyncp reads version {version})")
    return obj


def model_dict(model: ConvFSENet, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "config": model.cfg.to_dict(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "meta": dict(meta or {})}


def save_model(model: ConvFSENet, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write a model checkpoint (config embedded) atomically."""
    return save_atomic(model_dict(model, meta), path)


def load_model(path: str | Path) -> tuple[ConvFSENet, dict[str, Any]]:
    """Read a model checkpoint -> (model in eval mode, meta)."""
    obj = load_dict(path, MODEL_FORMAT, MODEL_VERSION)
    for key in ("config", "state_dict"):
        if key not in obj:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    try:
        cfg = Config.from_dict(obj["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: embedded config is invalid: {e}") from None
    meta = obj.get("meta") or {}
    if not isinstance(obj["state_dict"], dict) or not isinstance(meta, dict):
        raise CheckpointError(f"{path}: 'state_dict' and 'meta' must be dicts")
    model = ConvFSENet(cfg)
    try:
        model.load_state_dict(obj["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as e:  # missing/extra keys, non-tensor values
        raise CheckpointError(f"{path}: weights do not match the embedded config: "
                              f"{str(e).splitlines()[0]} ...") from None
    model.eval()
    return model, dict(meta)

"""Checkpoints as plain dicts, written atomically, read with ``torch.load(weights_only=True)``.

A model checkpoint::

    {"format": "dyncp-model", "version": 1, "config": {...}, "state_dict": {...}, "meta": {...}}

A training-resume state is a different file (``format = "dyncp-train-state"``) with optimiser,
scheduler, RNG and progress; see :mod:`dyncp.train`. Neither ever needs pickle: a file that does
is refused, never executed.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path
from .config import Config
from .errors import CheckpointError, ConfigError
from .model import ConvFSENet

MODEL_FORMAT = "dyncp-model"
MODEL_VERSION = 1


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` through :func:`dyncp.atomic.atomic_path`: a temporary file in the same
    folder, fsync, the usual permissions, then a rename over ``path``. A crash leaves either the
    old file or the new one, never half of one."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


# Reasons torch's weights-only unpickler gives when a file asks for code: a global (class or
# function) it does not allow, or an object it may only build from an allowlisted class. Any other
# refusal ("Unsupported operand 95", "String is too long", ...) means bytes that are no pickle.
_NEEDS_CODE = re.compile(r"GLOBAL|allowlisted|call reduce|must be imported to load")


def _pickle_reason(e: Exception) -> tuple[bool, str]:
    """(needs pickle?, the useful part) of torch's weights-only refusal: which global the file
    asks for, or what is wrong with its bytes. Torch's own text mostly explains how to bypass
    the check (``weights_only=False``, ``add_safe_globals``), which a library must not suggest:
    none of it is passed on."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"GLOBAL (\S+?)(?: was| whose|\s|$)", text)
    if m:
        return True, f"it references {m.group(1)}"
    reason = next((ln.strip() for ln in text.splitlines()
                   if ln.strip() and not re.search(r"weights_only|Weights only|safe_globals|"
                                                   r"documentation of torch.load|file an issue|"
                                                   r"trusted source", ln)), "")
    if _NEEDS_CODE.search(text):
        return True, "it builds objects that are not plain data" + (
            f" ({reason[:120]})" if reason and "add_safe_globals" not in reason else "")
    return False, (reason or type(e).__name__)[:200]


def load_dict(path: str | Path, fmt: str, version: int) -> dict[str, Any]:
    """Load a dict with ``weights_only=True`` and check its ``format`` and ``version`` keys.

    CheckpointError when the file is missing, not a checkpoint (random bytes, truncated, another
    kind of file), needs pickle (classes or functions: refused, nothing is executed), or is a
    dict of another format or version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        needs_pickle, reason = _pickle_reason(e)
        if needs_pickle:
            raise CheckpointError(f"{path}: refused, the file needs pickle to load ({reason}); "
                                  f"only plain dicts of tensors are accepted and nothing was "
                                  f"executed") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or not a checkpoint: "
                              f"{reason})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            IndexError, KeyError, TypeError, AttributeError) as e:  # e.g. a .wav given as -c
        line = str(e).split("  (Could this error message")[0].splitlines()
        line = line[0].strip() if line and "weights_only" not in line[0] else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                              f"{line[:200]}") from None
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
    """Read a model checkpoint -> (model in eval mode, meta). ``path`` may also name a shipped
    model (``"static"``, ``"dyncp50"``, ``"dyncp75"``: see ``dyncp models``); float16 weights
    of a shipped file are computed in float32."""
    from .zoo import resolve

    path = resolve(path)
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


# -- a fine-tune's history ------------------------------------------------------------------------
# A run started with ``--init`` records where it began (``meta["init"]``: the checkpoint or shipped
# name, and the steps and hours of audio that checkpoint had seen in all), so a shipped model's
# card counts every stage it went through, not only the last one.
def trained_totals(meta: dict[str, Any]) -> tuple[int, float]:
    """(steps, hours of audio) a checkpoint has seen in all: its own run's plus, through
    ``meta["init"]``, everything before it."""
    init = meta.get("init") or {}
    return (int(meta.get("step") or 0) + int(init.get("total_steps") or 0),
            float(meta.get("audio_hours") or 0.0) + float(init.get("total_audio_hours") or 0.0))


def init_record(path: str | Path) -> dict[str, Any]:
    """``meta["init"]`` of a run started from the checkpoint (or shipped model) ``path``."""
    from .zoo import resolve

    resolved = resolve(path)
    meta = load_dict(resolved, MODEL_FORMAT, MODEL_VERSION).get("meta") or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{resolved}: 'meta' must be a dict")
    steps, hours = trained_totals(meta)
    card = meta.get("card") or {}
    return {"checkpoint": str(path), "name": card.get("name"), "total_steps": steps,
            "total_audio_hours": hours}

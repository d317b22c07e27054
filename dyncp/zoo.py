"""Shipped models: checkpoints inside the package (``dyncp/weights/NAME.pt``) and their cards.

A shipped model is an ordinary model checkpoint (see :mod:`dyncp.checkpoint`) whose
``meta["card"]`` says what it is: training data, recipe, steps and hours of audio seen, the
command that made it, and its scores on the development set (PESQ-WB, STOI, SI-SDR, dynamic
MMAC/s, measured Φ). Weights are stored in float16 to keep each file under 3 MB (BatchNorm
statistics stay float32); they are computed in float32 after loading, and the card's scores are
measured on the stored file itself, so they describe exactly what a user runs.

Anywhere a checkpoint path is accepted (``dyncp.load_model``, ``-c`` on the command line) a
shipped name works too; a path that exists always wins over a name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The model `dyncp enhance` and `dyncp stream` use without ``-c``.
DEFAULT_MODEL = "dyncp50"
#: What each shipped name is meant to be (a name is listed only once its file ships).
DESCRIPTIONS = {
    "budget": "paper-size DynCP whose Φ is chosen at run time (0 or 0.1-0.85; docs/budget.md)",
    "static": "paper-size static Conv-FSENet (every channel always on)",
    "dyncp50": "paper-size DynCP, half of the gated channels pruned on average (Φ_trgt 0.5)",
    "dyncp75": "paper-size DynCP, three quarters of the gated channels pruned (Φ_trgt 0.75)",
}
MAX_FILE_BYTES = 3_000_000


def shipped_names(weights_dir: Path | None = None) -> list[str]:
    """Names of the models shipped in ``weights_dir`` (default: the package's), sorted."""
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    return sorted(p.stem for p in d.glob("*.pt")) if d.is_dir() else []


def is_shipped_name(text: str | Path) -> bool:
    """True when ``text`` looks like a model name rather than a path (no folder, no suffix)."""
    s = str(text)
    return bool(s) and os.sep not in s and "/" not in s and not s.endswith(".pt")


def resolve(name_or_path: str | Path, weights_dir: Path | None = None) -> Path:
    """An existing file stays as it is; a shipped name becomes its file. Anything else raises
    :class:`CheckpointError` listing the shipped names."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    if is_shipped_name(name_or_path) and (d / f"{name_or_path}.pt").is_file():
        return d / f"{name_or_path}.pt"
    names = shipped_names(d)
    listed = ", ".join(names) if names else "none in this installation"
    raise CheckpointError(f"{name_or_path}: no such checkpoint file and no shipped model of that "
                          f"name (shipped: {listed})")


def card(name_or_path: str | Path) -> dict[str, Any]:
    """The model card of a shipped model (or of any checkpoint that carries one)."""
    from .checkpoint import MODEL_FORMAT, MODEL_VERSION, load_dict

    path = resolve(name_or_path)
    meta = load_dict(path, MODEL_FORMAT, MODEL_VERSION).get("meta") or {}
    c = meta.get("card")
    if not isinstance(c, dict):
        raise CheckpointError(f"{path}: checkpoint carries no model card")
    return dict(c)


def list_models(weights_dir: Path | None = None) -> list[dict[str, Any]]:
    """One entry per shipped model: name, file, size, whether it is the default, and its card."""
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    out = []
    for name in shipped_names(d):
        path = d / f"{name}.pt"
        out.append({"name": name, "file": str(path), "bytes": path.stat().st_size,
                    "default": name == DEFAULT_MODEL, "card": card(path)})
    return out


def half_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameters in float16, BatchNorm statistics and integer buffers as they are."""
    out = {}
    for k, v in state.items():
        keep = (not v.is_floating_point()) or k.endswith(("running_mean", "running_var"))
        out[k] = v.detach().cpu().clone() if keep else v.detach().cpu().to(torch.float16)
    return out


def ship(checkpoint: str | Path, name: str, card_fields: dict[str, Any],
         weights_dir: Path | None = None, init: dict[str, Any] | None = None) -> Path:
    """Write ``weights_dir/NAME.pt``: ``checkpoint``'s weights in float16 with ``card_fields``
    as its card (the caller adds the scores measured on the written file, see
    :func:`set_card`); ``init`` (:func:`dyncp.checkpoint.init_record`) records where the run
    began when its checkpoint does not. Refuses a file over :data:`MAX_FILE_BYTES`."""
    from .checkpoint import MODEL_FORMAT, MODEL_VERSION, load_dict, save_atomic

    if not is_shipped_name(name) or not name.replace("_", "").replace("-", "").isalnum():
        raise CheckpointError(f"{name!r}: a shipped name is letters, digits, '-' and '_'")
    obj = load_dict(Path(checkpoint), MODEL_FORMAT, MODEL_VERSION)
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    out = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "config": obj["config"],
           "state_dict": half_state_dict(obj["state_dict"]),
           "meta": {**(obj.get("meta") or {}), **({"init": init} if init else {}),
                    "card": {"name": name, **card_fields}}}
    path = save_atomic(out, d / f"{name}.pt")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        path.unlink()
        raise CheckpointError(f"{name}: {size} bytes is over the {MAX_FILE_BYTES}-byte limit of "
                              "a shipped model")
    return path


def set_card(path: str | Path, updates: dict[str, Any]) -> Path:
    """Merge ``updates`` into the card of the checkpoint at ``path`` (atomically)."""
    from .checkpoint import MODEL_FORMAT, MODEL_VERSION, load_dict, save_atomic

    obj = load_dict(Path(path), MODEL_FORMAT, MODEL_VERSION)
    meta = dict(obj.get("meta") or {})
    meta["card"] = {**(meta.get("card") or {}), **updates}
    obj["meta"] = meta
    return save_atomic(obj, Path(path))


def ship_scored(checkpoint: str | Path, name: str, dev: str, command: str, training_data: str,
                recipe: str = "", weights_dir: Path | None = None,
                progress: bool = False, init: str | Path | None = None
                ) -> tuple[Path, dict[str, Any]]:
    """:func:`ship` ``checkpoint`` as ``name``, score the written file on the development pairs
    ``dev`` and put the scores into its card. ``init``: the checkpoint or shipped model the run
    was started from, for a checkpoint that does not record it (runs of an older dyncp); the
    card's ``total_steps`` and ``total_audio_hours`` then count that model's training too.
    Returns (path, card)."""
    import datetime

    from .atomic import atomic_path
    from .checkpoint import MODEL_FORMAT, MODEL_VERSION, init_record, load_dict, trained_totals
    from .evaluate import evaluate_checkpoint

    src = load_dict(Path(checkpoint), MODEL_FORMAT, MODEL_VERSION)
    meta, cfg = src.get("meta") or {}, src.get("config") or {}
    began = None
    if init is not None:      # read before shipping: NAME may be the model the run began from
        if meta.get("init"):
            raise CheckpointError(f"{checkpoint}: records its start already "
                                  f"({meta['init'].get('checkpoint')}); drop --init")
        began = init_record(init)
    total_steps, total_hours = trained_totals({**meta, **({"init": began} if began else {})})
    origin = began or meta.get("init") or {}
    fields = {"description": DESCRIPTIONS.get(name, ""),
              "config": cfg.get("name"), "training_data": training_data, "recipe": recipe,
              "steps": meta.get("step"), "epochs": meta.get("epoch"),
              "audio_hours": meta.get("audio_hours"), "ema": meta.get("ema"),
              "total_steps": total_steps, "total_audio_hours": total_hours,
              "init": origin.get("name") or origin.get("checkpoint"),
              "command": command, "shipped": datetime.date.today().isoformat(),
              "weights": "float16 storage, float32 compute"}
    # Written and scored in a staging folder, moved over NAME.pt only when complete: a failed or
    # interrupted ship leaves the model shipped before (perhaps the run's own --init) untouched.
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".ship-{name}-", dir=d))
    try:
        calibration = None
        if (cfg.get("gate") or {}).get("budget"):
            checkpoint, calibration = _calibrated_copy(Path(checkpoint), staging)
        path = ship(checkpoint, name, fields, staging, init=began)
        res = evaluate_checkpoint(path, dev, progress=progress)
        m, noisy = res["mean"], res["noisy"]
        scores = {"set": str(dev), "files": m.get("n_files"), "pesq_wb": m.get("pesq_wb"),
                  "stoi": m.get("stoi"), "si_sdr": m.get("si_sdr"),
                  "mmac_per_s": m.get("dynamic_mmac_per_s"),
                  "static_mmac_per_s": m.get("static_mmac_per_s"),
                  "macs_saved_fraction": m.get("macs_saved_fraction"),
                  "phi": m.get("pruning_ratio"), "phi_frame_std": m.get("pruning_ratio_frame_std"),
                  "phi_speech": m.get("pruning_ratio_speech"),
                  "phi_nonspeech": m.get("pruning_ratio_nonspeech"),
                  "noisy_pesq_wb": noisy.get("pesq_wb"),
                  "by": res.get("by", {})}
        updates: dict[str, Any] = {"dev": scores}
        if calibration is not None:
            updates["calibration"] = calibration
            updates["dev_by_phi"] = {}
            for phi in BUDGET_POINTS:
                r = evaluate_checkpoint(path, dev, progress=progress, phi=phi)["mean"]
                updates["dev_by_phi"][f"{phi:g}"] = {
                    "pesq_wb": r.get("pesq_wb"), "stoi": r.get("stoi"),
                    "si_sdr": r.get("si_sdr"), "phi": r.get("pruning_ratio"),
                    "mmac_per_s": r.get("dynamic_mmac_per_s")}
        set_card(path, updates)
        final = d / f"{name}.pt"
        with atomic_path(final) as tmp:           # the permissions of the file it replaces
            shutil.copyfile(path, tmp)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final, card(final)


#: Budgets a budget model's card reports (issue 13's requests, and Φ = 0).
BUDGET_POINTS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.85)


def _calibrated_copy(checkpoint: Path, folder: Path) -> tuple[Path, dict[str, Any]]:
    """A budget model calibrated on the held-out split of its own training data (never the dev
    set), written into ``folder``. Returns (path, the measured table)."""
    from .budget import calibrate
    from .checkpoint import load_model, save_model
    from .data import eval_pairs

    model, meta = load_model(checkpoint)
    cfg = model.cfg
    pairs = eval_pairs(cfg.data.train, cfg, split="valid", limit=cfg.data.valid_files or 24)
    table = calibrate(model, pairs)
    table["data"] = f"{cfg.data.train} (valid split, {len(pairs)} files)"
    tmp = folder / f"{checkpoint.stem}.calibrated.pt"
    save_model(model, tmp, meta)
    return tmp, table

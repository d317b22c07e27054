"""Training loop (SPEC §3): AdamW, a learning-rate schedule (:func:`lr_at`), gradient clipping,
Φ_trgt ramp, validation each epoch, best/last model checkpoints and a separate resume state,
single- or multi-process.

A run folder holds::

    config.toml   the resolved config
    log.csv       one row per epoch (training loss/Φ, validation PESQ-WB/SI-SDR/Φ, speed)
    best.pt       model checkpoint with the best validation PESQ-WB (ties and NaN: lower loss);
                  for a gated model only epochs that end with the Φ_trgt ramp finished count
                  (an epoch early in the ramp prunes little and would otherwise win)
    last.pt       model checkpoint after the last finished epoch
    state.pt      resume state (format "dyncp-train-state"): model, optimiser, epoch,
                  step (the learning rate follows from it), best score and the RNG states of
                  torch/numpy/python (and the averaged weights when ``train.ema`` is on)

With ``train.ema`` > 0 an exponential moving average of the weights is kept (decay
min(ema, (1 + step) / (10 + step)), BatchNorm statistics copied); validation, best.pt and last.pt
use it, and ``last_raw.pt`` holds the raw weights for comparison. ``data.monitor`` names a further
data set (e.g. a development set) scored every ``data.monitor_every`` epochs and logged as
``monitor_*`` columns; it never chooses best.pt, so it cannot leak into model selection.

Every file is written atomically. ``--resume`` restarts after the last finished epoch and, in a
single process, reproduces an uninterrupted run bit for bit: the data order depends only on
(seed, epoch) and every RNG is restored. Under ``torchrun`` (DistributedDataParallel, gloo on CPU,
nccl on GPU) each rank reads its own shard of every epoch; only rank 0 validates, writes files and
shows progress.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from .atomic import write_text
from .budget import sample_budgets
from .checkpoint import init_record, load_model, save_atomic, save_model
from .config import Config
from .enhance import enhance_tensor
from .errors import CheckpointError, ConfigError, DataError
from .losses import total_loss
from .malloc import keep_freed_memory
from .model import ConvFSENet, build_model
from .train_state import (LOG_COLUMNS, MACHINE_KEYS, STATE_FORMAT, STATE_VERSION, _Dist,  # noqa: F401
                          _EMA, _config_diff, _log_tensorboard, _read_log, _rng_state,
                          _seed_everything, _set_rng_state, _write_log,
                          load_state, recipe_diff)

def phi_target(cfg: Config, step: int, total_steps: int) -> float:
    """Φ_trgt at optimiser step ``step``: linear from 0 to ``loss.prune_target`` over the first
    ``train.ramp_fraction`` of all steps, then constant. [decided] (SPEC §3: ramp, shape not
    published)."""
    ramp = cfg.train.ramp_fraction * total_steps
    if ramp <= 0:
        return cfg.loss.prune_target
    return cfg.loss.prune_target * min(1.0, step / ramp)


def lr_at(cfg: Config, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based), a function of the step alone, so a
    resumed run continues the schedule exactly: ``train.lr`` times ``lr_decay`` per finished epoch
    ("exponential") or a half cosine from ``lr`` to 0 over all steps ("cosine"), times a linear
    warm-up over the first ``train.warmup_steps``."""
    t = cfg.train
    if t.lr_schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    else:
        factor = t.lr_decay ** (step // max(steps_per_epoch, 1))
    if t.warmup_steps > 0:
        factor *= min(1.0, (step + 1) / t.warmup_steps)
    return t.lr * factor


def init_from_checkpoint(model: ConvFSENet, path: str | Path) -> list[str]:
    """Copy the weights of a (static, gated or budget) model checkpoint into ``model``; return the
    keys left at their fresh initialisation: the gate layers when the checkpoint had no gates (so
    the gates start open), the run-time budget's parameters and calibration table when it had no
    budget. Every other weight must match in name and shape."""
    src, _ = load_model(path)
    theirs = src.state_dict()
    ours = model.state_dict()

    def _absent_part(key: str) -> bool:
        """``key`` belongs to a part of the model (gates, budget) that the checkpoint lacks."""
        if key.rsplit(".", 1)[-1].startswith("budget"):
            return not src.cfg.gate.budget
        return ".gate." in key and not src.gated

    fresh = []
    for key, value in ours.items():
        if key in theirs and theirs[key].shape == value.shape:
            ours[key] = theirs[key].to(value.dtype)
        elif key not in theirs and _absent_part(key):
            fresh.append(key)
        else:
            have = tuple(theirs[key].shape) if key in theirs else "missing"
            raise CheckpointError(f"{path}: cannot initialise from it: {key} is {have} there, "
                                  f"{tuple(value.shape)} in this config")
    model.load_state_dict(ours)
    return fresh


# -- data ----------------------------------------------------------------------------------------
def _loader(dataset, cfg: Config, d: _Dist, epoch: int) -> DataLoader:
    """Batches of one epoch; the order depends only on (train.seed, epoch) and the rank."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    sampler = DistributedSampler(dataset, num_replicas=d.world, rank=d.rank, shuffle=True,
                                 seed=cfg.train.seed, drop_last=True)
    sampler.set_epoch(epoch)
    # An own generator keeps DataLoader from drawing its worker seed from torch's global RNG.
    gen = torch.Generator().manual_seed(cfg.train.seed * 100003 + epoch)
    return DataLoader(dataset, batch_size=cfg.train.batch_size, sampler=sampler, drop_last=True,
                      num_workers=cfg.train.num_workers, generator=gen,
                      persistent_workers=False, pin_memory=d.device.type == "cuda")


def _epoch_batches(dataset, cfg: Config, d: _Dist, epoch: int, steps: int):
    """Yield exactly ``steps`` batches; when the set is shorter than that, pass over it again in a
    fresh order (still a function of (seed, epoch, pass))."""
    done, sub = 0, 0
    while done < steps:
        for batch in _loader(dataset, cfg, d, epoch * 1000 + sub):
            yield batch
            done += 1
            if done >= steps:
                return
        sub += 1


# -- validation ----------------------------------------------------------------------------------
@torch.no_grad()
def validate(model: ConvFSENet, pairs, cfg: Config, device: torch.device) -> dict[str, float]:
    """Mean validation loss (at the final Φ_trgt), PESQ-WB, SI-SDR (dB) and measured Φ over whole
    files; Φ is weighted by frames, as in evaluation (:class:`dyncp.macs.PhiMeter`)."""
    from .macs import PhiMeter
    from .metrics import pesq_score, si_sdr   # only these two: STOI/composite cost more

    model.eval()
    losses, pesqs, sdrs = [], [], []
    phi = PhiMeter(cfg.model.n_blocks, cfg.model.hidden)
    for p in pairs:
        noisy = torch.from_numpy(np.asarray(p.noisy, np.float32)).unsqueeze(0).to(device)
        clean = torch.from_numpy(np.asarray(p.clean, np.float32)).unsqueeze(0).to(device)
        est, gates = enhance_tensor(model, noisy)
        losses.append(float(total_loss(est, clean, gates, cfg.loss, cfg.stft,
                                         noisy=noisy)["loss"]))
        est_np = est[0].cpu().numpy()
        pesqs.append(pesq_score(est_np, p.clean, cfg.stft.sample_rate, "wb"))
        sdrs.append(si_sdr(est_np, p.clean))
        if gates:
            phi.add(gates)
    model.train()

    def mean(xs):
        xs = [x for x in xs if x is not None and math.isfinite(x)]
        return float(np.mean(xs)) if xs else float("nan")

    return {"valid_loss": mean(losses), "valid_pesq_wb": mean(pesqs), "valid_si_sdr": mean(sdrs),
            "valid_phi": phi.value}


def _score_key(valid: dict[str, float]) -> tuple[float, float]:
    """Larger is better: PESQ-WB first, then lower validation loss (NaN counts as worst)."""
    p, loss = valid.get("valid_pesq_wb", float("nan")), valid.get("valid_loss", float("nan"))
    return (p if math.isfinite(p) else -math.inf, -loss if math.isfinite(loss) else -math.inf)


# -- files ---------------------------------------------------------------------------------------
def train(cfg: Config, run_dir: str | Path, resume: bool = False, init: str | Path | None = None,
          progress: bool = True) -> Path:
    """Train ``cfg`` in ``run_dir`` and return ``run_dir/"best.pt"``.

    ``resume``: continue after the last finished epoch recorded in ``run_dir/state.pt``.
    ``init``: start from the weights of a model checkpoint (fine-tuning; fresh, open gates when it
    had none). A run folder that already holds a finished run of the same config is returned as
    is; one that holds anything else needs ``resume`` or another folder.
    """
    run_dir = Path(run_dir)
    state_path = run_dir / "state.pt"
    state = None
    if state_path.is_file():
        state = load_state(state_path)
        # how many threads the machine gives a run is no part of the recipe: a run started on
        # one core may continue on two; a key added since the state was written takes its default
        diff = recipe_diff(state.get("config", {}), cfg.to_dict())
        finished = int(state["epoch"]) >= cfg.train.epochs
        if diff and not (resume and diff == ["train.epochs"]):
            raise ConfigError(f"{run_dir}: holds a run with a different config (differs at "
                              f"{', '.join(diff[:6])}); use another --run-dir")
        if finished and (run_dir / "best.pt").is_file():
            return run_dir / "best.pt"
        if not resume:
            raise ConfigError(f"{run_dir}: holds an unfinished run (epoch {int(state['epoch'])} "
                              f"of {cfg.train.epochs}); pass --resume or use another --run-dir")
    elif resume:
        raise CheckpointError(f"{state_path}: no resume state to continue from")
    if init is not None:   # a file or a shipped model's name; else an error listing the names
        from .zoo import resolve
        init = resolve(init)
    if cfg.loss.distill_weight > 0 and not cfg.train.teacher:
        raise ConfigError("train.teacher: loss.distill_weight > 0 needs a teacher checkpoint "
                          "(--set train.teacher=PATH, e.g. the static model of --init)")

    d = _Dist()
    try:
        return _train(cfg, run_dir, state, init, progress, d)
    finally:
        d.close()


def _teacher(cfg: Config, device: torch.device) -> ConvFSENet:
    """The frozen model of ``loss.distill_weight`` (``train.teacher``), in eval mode; it must
    work on the same STFT as the model trained. A config may name it at run time (the
    checkpoint a fine-tune starts from lives outside the config: ``--set train.teacher=...``)."""
    try:
        teacher, _ = load_model(cfg.train.teacher)
    except (CheckpointError, FileNotFoundError, OSError) as e:
        raise CheckpointError(f"train.teacher: {e}") from None
    if teacher.cfg.stft != cfg.stft:
        raise ConfigError(f"train.teacher {cfg.train.teacher}: its STFT ({teacher.cfg.stft}) is "
                          f"not the model's ({cfg.stft})")
    teacher.requires_grad_(False)
    return teacher.to(device).eval()


def _train(cfg: Config, run_dir: Path, state: dict | None, init, progress: bool, d: _Dist) -> Path:
    from .data import eval_pairs, training_set

    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    keep_freed_memory()                       # no page faults per step (dyncp/malloc.py)
    _seed_everything(cfg.train.seed)          # the same initial weights on every rank
    model = build_model(cfg)
    if init is not None and state is None:
        init_from_checkpoint(model, init)
    # where a fine-tune began (kept through --resume): cards count every stage's steps and hours
    began = (state or {}).get("init") or (init_record(init) if init is not None else None)
    _seed_everything(cfg.train.seed + d.rank)  # but rank-specific noise (stochastic gates)
    model.to(d.device)
    teacher = _teacher(cfg, d.device) if cfg.loss.distill_weight > 0 else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                            weight_decay=cfg.train.weight_decay)
    start_epoch, step, best = 0, 0, (-math.inf, -math.inf)
    ema = _EMA(model, cfg.train.ema) if cfg.train.ema > 0 else None
    if state is not None:
        model.load_state_dict(state["model"])
        if ema is not None:
            if "ema" not in state:
                raise CheckpointError("resume state has no averaged weights ('ema') but the "
                                      "config sets train.ema; resume with the run's config")
            ema.model.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])   # the lr itself follows from the step (lr_at)
        start_epoch, step = int(state["epoch"]), int(state["step"])
        best = (float(state["best"][0]), float(state["best"][1]))
    net = model
    if d.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None)

    if d.main:  # builds (or reuses) the built-in corpus once, before the other ranks read it
        dataset = training_set(cfg, "train")
        valid_pairs = eval_pairs(cfg.data.valid or cfg.data.train, cfg, split="valid",
                                 limit=cfg.data.valid_files)
        monitor_pairs = (eval_pairs(cfg.data.monitor, cfg, split="test") if cfg.data.monitor
                         else None)
    d.barrier()
    if not d.main:
        dataset = training_set(cfg, "train")
    per_rank = len(dataset) // d.world
    if per_rank < cfg.train.batch_size:
        raise DataError(f"training set too small: {len(dataset)} segments for {d.world} "
                        f"process(es) x batch size {cfg.train.batch_size}")
    steps_per_epoch = cfg.train.steps_per_epoch or per_rank // cfg.train.batch_size
    total_steps = steps_per_epoch * cfg.train.epochs
    seg_s = round(cfg.data.segment_seconds * cfg.stft.sample_rate) / cfg.stft.sample_rate

    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.toml", cfg.to_toml())
    log_rows = _read_log(run_dir / "log.csv")[:start_epoch] if d.main else []
    if state is not None:
        _set_rng_state(state["rng"])  # last: nothing above may draw from the restored RNGs

    for epoch in range(start_epoch, cfg.train.epochs):
        net.train()
        t0, sums, n = time.perf_counter(), {"loss": 0.0, "se": 0.0, "phi": 0.0}, 0
        bar = None
        if d.main and progress:
            from tqdm import tqdm
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                       unit="step", file=sys.stderr, dynamic_ncols=True, leave=True)
        target = 0.0
        for noisy, clean in _epoch_batches(dataset, cfg, d, epoch, steps_per_epoch):
            noisy, clean = noisy.to(d.device), clean.to(d.device)
            target = phi_target(cfg, step, total_steps)
            budgets = None
            if cfg.gate.budget:   # one Φ per item, scaled by the ramp (dyncp/budget.py)
                budgets = sample_budgets(cfg.gate, noisy.shape[0], seed=cfg.train.seed,
                                         step=step, rank=d.rank,
                                         ramp=target / max(cfg.loss.prune_target, 1e-9))
                budgets = budgets.to(noisy.device)
            est, gates = enhance_tensor(net, noisy, phi=budgets)
            t_est = None
            if teacher is not None:
                with torch.no_grad():
                    t_est = enhance_tensor(teacher, noisy)[0]
            parts = total_loss(est, clean, gates, cfg.loss, cfg.stft,
                               target=budgets if budgets is not None else target, noisy=noisy,
                               teacher=t_est)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step, steps_per_epoch, total_steps)
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            step += 1
            if ema is not None:
                ema.update(model, step)
            n += 1
            for k in sums:
                if k in parts:
                    sums[k] += float(parts[k].detach())
            if bar is not None:
                speed = n * cfg.train.batch_size * d.world * seg_s / (time.perf_counter() - t0)
                post = {"loss": f"{sums['loss'] / n:.4f}", "audio_s/s": f"{speed:.0f}"}
                if gates:
                    post["Φ"] = f"{float(parts['phi']):.3f}"
                    post["Φ_trgt"] = f"{target:.3f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
        if bar is not None:
            bar.close()
        train_s = time.perf_counter() - t0
        d.barrier()
        if d.main:
            scored = ema.model if ema is not None else model
            valid = validate(scored, valid_pairs, cfg, d.device)
            monitor = {}
            if monitor_pairs is not None and (epoch + 1) % cfg.data.monitor_every == 0:
                m = validate(scored, monitor_pairs, cfg, d.device)
                monitor = {"monitor_pesq_wb": m["valid_pesq_wb"],
                           "monitor_si_sdr": m["valid_si_sdr"], "monitor_phi": m["valid_phi"]}
                if ema is not None:
                    monitor["monitor_raw_pesq_wb"] = validate(model, monitor_pairs, cfg,
                                                              d.device)["valid_pesq_wb"]
            row = {"epoch": epoch + 1, "step": step, "lr": opt.param_groups[0]["lr"],
                   # a static model has no target (its Phi is 0 by construction)
                   "phi_target": target if cfg.gate.enabled else 0.0,
                   "train_loss": sums["loss"] / max(n, 1),
                   "train_se": sums["se"] / max(n, 1),
                   "train_phi": sums["phi"] / max(n, 1) if cfg.gate.enabled else 0.0,
                   **valid, "epoch_seconds": train_s,
                   "audio_s_per_s": n * cfg.train.batch_size * d.world * seg_s / train_s,
                   "audio_hours": step * cfg.train.batch_size * d.world * seg_s / 3600.0,
                   **monitor}
            log_rows.append(row)
            meta = {"epoch": epoch + 1, "step": step, "data": cfg.data.train,
                    "audio_hours": row["audio_hours"], "ema": cfg.train.ema,
                    "valid_data": cfg.data.valid or cfg.data.train,
                    "valid": {k: float(v) for k, v in valid.items()},
                    **({"init": began} if began else {})}
            ramped = (not cfg.gate.enabled
                      or phi_target(cfg, step, total_steps) >= cfg.loss.prune_target)
            key = _score_key(valid) if ramped else (-math.inf, -math.inf)
            if key > best or not (run_dir / "best.pt").is_file():
                best = max(key, best)
                save_model(scored, run_dir / "best.pt", meta)
            save_model(scored, run_dir / "last.pt", meta)
            if ema is not None:
                save_model(model, run_dir / "last_raw.pt", meta)
            _write_log(run_dir / "log.csv", log_rows)
            _log_tensorboard(run_dir, row)
            save_atomic({"format": STATE_FORMAT, "version": STATE_VERSION,
                         "config": cfg.to_dict(), "epoch": epoch + 1, "step": step,
                         "best": [float(best[0]), float(best[1])],
                         "model": {k: v.detach().cpu().clone()
                                   for k, v in model.state_dict().items()},
                         **({"ema": {k: v.detach().cpu().clone()
                                     for k, v in ema.model.state_dict().items()}}
                            if ema is not None else {}),
                         "optimizer": opt.state_dict(),
                         "rng": _rng_state(), **({"init": began} if began else {})},
                        run_dir / "state.pt")
            if progress:
                print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  valid PESQ-WB "
                      f"{valid['valid_pesq_wb']:.3f}  SI-SDR {valid['valid_si_sdr']:.2f} dB  "
                      f"Φ {valid['valid_phi']:.3f}  ({row['audio_s_per_s']:.0f} s audio/s)",
                      file=sys.stderr)
        d.barrier()
    return run_dir / "best.pt"


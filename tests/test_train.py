"""dyncp.train and the train/evaluate/enhance CLI end to end (issue 4).

Tiny sizes throughout: configs/tiny.toml, 2 steps per epoch, data written by the tests.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import dyncp.train as T
from dyncp.checkpoint import load_model, save_model
from dyncp.cli import main
from dyncp.config import Config, load_config
from dyncp.errors import CheckpointError, ConfigError
from dyncp.model import build_model

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs/tiny.toml"
SR = 16000
SHORT = ["train.epochs=1", "train.steps_per_epoch=2", "data.valid_files=2", "train.batch_size=4"]


def _speechlike(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 110 + 60 * rng.random() + 15 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum((0.6 / k) * np.sin(k * phase + rng.random() * 6) for k in range(1, 12))
    env = 0.1 + 0.9 * np.clip(np.sin(2 * np.pi * 3.5 * t + 6 * rng.random()), 0, None) ** 0.5
    return (0.2 * x * env).astype(np.float32)


def write_pairs(root: Path, n: int = 12, seconds: float = 1.5, seed: int = 0) -> Path:
    """noisy/ and clean/ folders of ``n`` synthetic pairs at 0-10 dB SNR."""
    rng = np.random.default_rng(seed)
    for sub in ("noisy", "clean"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        clean = _speechlike(rng, seconds)
        noise = rng.standard_normal(clean.size).astype(np.float32)
        noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** (rng.uniform(0, 10) / 10))
        sf.write(root / "clean" / f"u{i:02d}.wav", clean, SR)
        sf.write(root / "noisy" / f"u{i:02d}.wav", clean + noise, SR)
    return root


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs"))


def _cfg(pairs: Path, *extra: str) -> Config:
    return load_config(TINY, [f"data.train=pairs:{pairs}", *SHORT, *extra])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path)[0].state_dict()


def test_phi_target_ramp():
    cfg = load_config(TINY, ["loss.prune_target=0.6", "train.ramp_fraction=0.5"])
    assert [T.phi_target(cfg, s, 10) for s in (0, 1, 5, 9)] == pytest.approx([0, 0.12, 0.6, 0.6])
    cfg0 = load_config(TINY, ["train.ramp_fraction=0"])
    assert T.phi_target(cfg0, 0, 10) == cfg0.loss.prune_target


def test_two_step_training(tmp_path, pairs_dir):
    cfg = _cfg(pairs_dir)
    run = tmp_path / "run"
    best = T.train(cfg, run, progress=False)
    assert best == run / "best.pt"
    model, meta = load_model(best)
    assert meta["epoch"] == 1 and meta["step"] == 2
    assert meta["data"] == f"pairs:{pairs_dir}"
    assert set(meta["valid"]) >= {"valid_pesq_wb", "valid_si_sdr", "valid_phi", "valid_loss"}
    assert 0.0 <= meta["valid"]["valid_phi"] <= 1.0
    torch.manual_seed(cfg.train.seed)
    init = build_model(cfg).state_dict()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, init[k])]
    assert any(k.startswith("blocks.0.pw1") for k in changed)       # it did train
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert len(rows) == 1 and rows[0]["epoch"] == "1" and rows[0]["step"] == "2"
    assert float(rows[0]["train_loss"]) > 0 and float(rows[0]["audio_s_per_s"]) > 0
    assert np.isfinite(float(rows[0]["valid_si_sdr"]))
    # the resolved config round-trips; the resume state loads without pickle
    assert Config.from_dict(tomllib.loads((run / "config.toml").read_text())) == cfg
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["format"] == "dyncp-train-state" and state["version"] == 1
    assert state["epoch"] == 1 and state["step"] == 2 and "rng" in state
    assert torch.equal(state["model"]["front.weight"], model.state_dict()["front.weight"])
    assert not list(run.glob(".*tmp"))                               # atomic writes left nothing


def test_snr_frame_target_trains_and_validates(tmp_path, pairs_dir):
    # the difficulty split needs the noisy input: the loop hands it over in training and in
    # validation
    cfg = _cfg(pairs_dir, "loss.frame_target=snr", "loss.frame_spread=0.15")
    model, meta = load_model(T.train(cfg, tmp_path / "run", progress=False))
    assert meta["step"] == 2 and np.isfinite(meta["valid"]["valid_loss"])


def test_tensorboard_gets_the_logged_scalars(tmp_path, monkeypatch):
    """Each epoch's CSV row also goes to TensorBoard (when installed): every finite number but
    epoch and step, at the row's step. A stand-in SummaryWriter records the calls."""
    import sys
    import types

    calls = []

    class Writer:
        def __init__(self, logdir):
            calls.append(("dir", logdir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            calls.append(("closed",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    T._log_tensorboard(tmp_path, {"epoch": 3, "step": 12, "train_loss": 0.5, "valid_pesq_wb": 1.7,
                                  "valid_si_sdr": float("nan"), "lr": 1e-3, "note": "x"})
    assert calls == [("dir", str(tmp_path / "tb")), ("train_loss", 0.5, 12),
                     ("valid_pesq_wb", 1.7, 12), ("lr", 1e-3, 12), ("closed",)]


def test_tensorboard_event_files(tmp_path, pairs_dir):
    """With the real package: a two-step run leaves event files TensorBoard reads back."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    T.train(_cfg(pairs_dir), run, progress=False)
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train_loss", "train_phi", "valid_pesq_wb", "valid_phi"} <= tags
    row = next(csv.DictReader((run / "log.csv").open()))
    (ev,) = acc.Scalars("train_loss")
    assert ev.step == 2 and ev.value == pytest.approx(float(row["train_loss"]), rel=1e-6)


@pytest.mark.parametrize("schedule", [(), ("train.lr_schedule=cosine", "train.warmup_steps=3")],
                         ids=["exponential", "cosine_warmup"])
def test_resume_equals_uninterrupted(tmp_path, pairs_dir, monkeypatch, schedule):
    # stochastic gates: the torch RNG matters too
    cfg = _cfg(pairs_dir, "train.epochs=2", "gate.surrogate=stochastic", *schedule)
    T.train(cfg, tmp_path / "a", progress=False)

    calls = []
    real_validate = T.validate

    def killed_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt   # the run dies after training epoch 2, before saving it
        return real_validate(*a, **k)

    monkeypatch.setattr(T, "validate", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(T, "validate", real_validate)
    assert T.load_state(tmp_path / "b" / "state.pt")["epoch"] == 1
    with pytest.raises(ConfigError, match="--resume"):
        T.train(cfg, tmp_path / "b", progress=False)
    # a state written before a config key existed resumes (the key takes its default)
    st = T.load_state(tmp_path / "b" / "state.pt")
    del st["config"]["loss"]["frame_target"], st["config"]["loss"]["frame_spread"]
    torch.save(st, tmp_path / "b" / "state.pt")
    T.train(cfg, tmp_path / "b", resume=True, progress=False)

    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    la = list(csv.DictReader((tmp_path / "a" / "log.csv").open()))
    lb = list(csv.DictReader((tmp_path / "b" / "log.csv").open()))
    assert [r["train_loss"] for r in la] == [r["train_loss"] for r in lb]
    assert len(lb) == 2
    # a finished run is returned as is; a different config is refused
    mtime = (tmp_path / "b" / "best.pt").stat().st_mtime_ns
    assert T.train(cfg, tmp_path / "b", progress=False) == tmp_path / "b" / "best.pt"
    assert (tmp_path / "b" / "best.pt").stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="different config"):
        T.train(_cfg(pairs_dir, "train.epochs=2", "train.lr=0.01"), tmp_path / "b",
                progress=False)


def test_lr_schedules():
    cfg = load_config(TINY, ["train.lr=0.01", "train.lr_decay=0.5"])
    # exponential: lr x decay per finished epoch, as torch's ExponentialLR stepped per epoch
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    for step in range(12):
        assert T.lr_at(cfg, step, 4, 12) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        if step % 4 == 3:
            sched.step()
    cos = load_config(TINY, ["train.lr=0.01", "train.lr_schedule=cosine"])
    lrs = [T.lr_at(cos, s, 4, 100) for s in range(101)]
    assert lrs[0] == 0.01 and lrs[50] == pytest.approx(0.005) and lrs[100] == pytest.approx(0)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))        # strictly falling; epochs ignored
    warm = load_config(TINY, ["train.lr=0.01", "train.lr_schedule=cosine", "train.warmup_steps=10"])
    assert T.lr_at(warm, 0, 4, 100) == pytest.approx(0.1 * lrs[0])
    assert T.lr_at(warm, 4, 4, 100) == pytest.approx(0.5 * lrs[4])
    assert T.lr_at(warm, 9, 4, 100) == lrs[9] and T.lr_at(warm, 60, 4, 100) == lrs[60]
    with pytest.raises(ConfigError, match="lr_schedule.*known: exponential, cosine"):
        load_config(TINY, ["train.lr_schedule=step"])
    with pytest.raises(ConfigError, match="warmup_steps"):
        load_config(TINY, ["train.warmup_steps=-1"])


def test_training_uses_the_schedule(tmp_path, pairs_dir):
    """The optimiser steps with lr_at's rate: the logged lr of each epoch is its last step's."""
    cfg = _cfg(pairs_dir, "train.epochs=2", "gate.enabled=false", "train.lr_schedule=cosine",
               "train.warmup_steps=1")
    T.train(cfg, tmp_path / "r", progress=False)
    rows = list(csv.DictReader((tmp_path / "r" / "log.csv").open()))
    steps = [int(r["step"]) for r in rows]
    assert [float(r["lr"]) for r in rows] == [pytest.approx(T.lr_at(cfg, s - 1, steps[0],
                                                                     steps[-1])) for s in steps]
    assert float(rows[-1]["lr"]) < 0.2 * cfg.train.lr        # the cosine's tail, not a constant


def test_init_from_static_checkpoint(tmp_path, pairs_dir):
    static_cfg = load_config(TINY, ["gate.enabled=false"])
    torch.manual_seed(3)
    static = build_model(static_cfg)
    ckpt = save_model(static, tmp_path / "static.pt")
    gated = build_model(load_config(TINY))
    fresh = T.init_from_checkpoint(gated, ckpt)
    assert fresh and all(".gate." in k for k in fresh)
    sd, ssd = gated.state_dict(), static.state_dict()
    assert all(torch.equal(sd[k], ssd[k]) for k in ssd)
    # fresh gates start open: every channel on
    with torch.no_grad():
        _, gates = gated.eval()(torch.rand(1, static_cfg.stft.n_freq, 20))
    assert all(bool(g.all()) for g in gates)
    # fine-tuning through train(init=...)
    T.train(_cfg(pairs_dir), tmp_path / "ft", init=ckpt, progress=False)
    assert load_model(tmp_path / "ft" / "best.pt")[0].gated
    # a budget model starts from a static or a gated (non-budget) checkpoint: its budget slopes
    # and calibration table stay fresh, everything else is copied (the shipped budget model is
    # fine-tuned from the static one)
    gated_ckpt = save_model(gated, tmp_path / "gated.pt")
    for src, fresh_gates in ((ckpt, True), (gated_ckpt, False)):
        bud = build_model(load_config(TINY, ["gate.budget=true"]))
        fresh = T.init_from_checkpoint(bud, src)
        assert "budget_table" in fresh and any(k.endswith(".budget_slope") for k in fresh)
        assert any(".gate.score" in k for k in fresh) == fresh_gates
        want = load_model(src)[0].state_dict()
        assert all(torch.equal(bud.state_dict()[k], want[k]) for k in want)
    # a budget checkpoint initialises a budget model whole
    assert T.init_from_checkpoint(build_model(load_config(TINY, ["gate.budget=true"])),
                                  save_model(bud, tmp_path / "bud.pt")) == []
    # a checkpoint of another width cannot initialise this config
    wide = save_model(build_model(load_config(TINY, ["model.hidden=48"])), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="blocks.0.pw1"):
        T.init_from_checkpoint(build_model(load_config(TINY)), wide)


def test_distillation_from_a_teacher(tmp_path, pairs_dir):
    # a frozen teacher (here a random static model, far from the student) adds its term to the
    # training loss; the run's validation loss stays the task's loss
    torch.manual_seed(7)
    teacher = save_model(build_model(load_config(TINY, ["gate.enabled=false"])),
                         tmp_path / "teacher.pt")
    before = _weights(teacher)
    plain = T.train(_cfg(pairs_dir), tmp_path / "plain", progress=False)
    taught = T.train(_cfg(pairs_dir, "loss.distill_weight=1000", f"train.teacher={teacher}"),
                     tmp_path / "taught", progress=False)
    log = {k: list(csv.DictReader((p.parent / "log.csv").open()))[0]
           for k, p in (("plain", plain), ("taught", taught))}
    assert float(log["taught"]["train_loss"]) > float(log["plain"]["train_loss"]) + 5
    assert float(log["taught"]["valid_loss"]) < float(log["taught"]["train_loss"])
    assert all(torch.equal(v, before[k]) for k, v in _weights(teacher).items())  # untouched
    with pytest.raises(ConfigError, match="train.teacher"):
        T.train(_cfg(pairs_dir, "loss.distill_weight=1"), tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()                 # refused before anything is written
    with pytest.raises(CheckpointError, match="train.teacher.*nope.pt"):
        T.train(_cfg(pairs_dir, "loss.distill_weight=1", f"train.teacher={tmp_path}/nope.pt"),
                tmp_path / "bad", progress=False)


def test_ddp_two_processes(tmp_path, pairs_dir):
    """torchrun, 2 CPU processes (gloo): rank 0 writes a loadable best.pt."""
    run = tmp_path / "ddp"
    sets = [a for s in [f"data.train=pairs:{pairs_dir}", *SHORT] for a in ("--set", s)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dyncp", "train", "--config", str(TINY), *sets, "--run-dir", str(run),
           "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, meta = load_model(run / "best.pt")
    assert model.gated and meta["epoch"] == 1 and meta["step"] == 2
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert len(rows) == 1
    # 2 ranks x batch 4 x 2 steps of 1 s: the speed counts both ranks' audio
    assert float(rows[0]["audio_s_per_s"]) * float(rows[0]["epoch_seconds"]) == \
        pytest.approx(2 * 4 * 2 * 1.0, rel=1e-3)


def test_cli_end_to_end(tmp_path, pairs_dir, capsys):
    """dyncp train -> evaluate -> enhance on configs/tiny.toml."""
    run = tmp_path / "run"
    sets = [a for s in [f"data.train=pairs:{pairs_dir}", *SHORT] for a in ("--set", s)]
    assert main(["train", "--config", str(TINY), *sets, "--run-dir", str(run),
                 "--no-progress"]) == 0
    assert "best checkpoint" in capsys.readouterr().out
    out_json = tmp_path / "eval.json"
    assert main(["evaluate", "-c", str(run / "best.pt"), "--data", str(pairs_dir),
                 "--limit", "3", "--json", str(out_json), "--no-progress"]) == 0
    res = json.loads(out_json.read_text())
    assert res["mean"]["n_files"] == 3 and 0.0 <= res["mean"]["pruning_ratio"] <= 1.0
    assert res["mean"]["gated"] is True
    assert main(["enhance", str(pairs_dir / "noisy"), "-c", str(run / "best.pt"),
                 "-o", str(tmp_path / "enh"), "--no-progress"]) == 0
    outs = sorted(p.name for p in (tmp_path / "enh").glob("*.wav"))
    assert outs == sorted(p.name for p in (pairs_dir / "noisy").glob("*.wav"))
    assert sf.info(tmp_path / "enh" / outs[0]).frames == sf.info(pairs_dir / "noisy" / outs[0]).frames


def test_cli_train_bad_inputs(tmp_path, pairs_dir, capsys):
    unpaired = write_pairs(tmp_path / "unpaired", n=3)
    (unpaired / "clean" / "u01.wav").unlink()
    not_ckpt = tmp_path / "x.pt"
    not_ckpt.write_text("not a checkpoint")
    cases = [["--set", "train.epoch=3"],                                  # wrong key
             ["--set", f"data.train=pairs:{tmp_path / 'missing'}"],        # missing folder
             ["--set", f"data.train=pairs:{unpaired}"],                    # unpaired files
             ["--set", f"data.train=pairs:{pairs_dir}", "--init", str(not_ckpt)],
             ["--set", f"data.train=pairs:{pairs_dir}", "--resume"]]       # nothing to resume
    for i, extra in enumerate(cases):
        run = tmp_path / f"run{i}"
        code = main(["train", "--config", str(TINY), *extra, "--run-dir", str(run),
                     "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2, (extra, err)
        assert err.startswith("dyncp train: error:") and "\n" not in err, err
        assert not (run / "best.pt").exists() and not (run / "state.pt").exists()


# -- issue 15 ------------------------------------------------------------------------------------
class _Indices(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor(i)


def _order(cfg, world: int, rank: int, epoch: int, steps: int) -> list[int]:
    from types import SimpleNamespace

    d = SimpleNamespace(world=world, rank=rank, device=torch.device("cpu"))
    return [int(i) for b in T._epoch_batches(_Indices(40), cfg, d, epoch, steps) for i in b]


@pytest.mark.parametrize("world", [1, 2])
def test_epoch_order_changes_with_the_epoch(world):
    """Each epoch (and each extra pass within one) sees the data in a new order, a function of
    (seed, epoch, rank) only; under DDP the ranks split every epoch without overlap."""
    cfg = load_config(TINY, ["train.batch_size=4", "train.num_workers=0"])
    per_rank = 40 // world // 4                        # batches in one pass over a rank's share
    orders = {(e, r): _order(cfg, world, r, e, per_rank) for e in range(3) for r in range(world)}
    for r in range(world):
        assert orders[(0, r)] != orders[(1, r)] != orders[(2, r)] != orders[(0, r)]
        assert orders[(1, r)] == _order(cfg, world, r, 1, per_rank)       # deterministic
        assert len(set(orders[(0, r)])) == len(orders[(0, r)])             # no repeat in a pass
    for e in range(3):
        seen = [i for r in range(world) for i in orders[(e, r)]]
        assert sorted(seen) == list(range(40))         # the ranks share the set, no overlap
    # more steps than one pass: the second pass is shuffled afresh
    two = _order(cfg, world, 0, 0, 2 * per_rank)
    assert two[: 4 * per_rank] == orders[(0, 0)] and two[4 * per_rank:] != orders[(0, 0)]
    assert _order(load_config(TINY, ["train.batch_size=4", "train.num_workers=0",
                                     "train.seed=7"]), world, 0, 0, per_rank) != orders[(0, 0)]


@pytest.mark.slow
def test_sigkill_after_an_epoch_then_resume_equals_uninterrupted(tmp_path, pairs_dir):
    """`dyncp train` on configs/tiny.toml killed with SIGKILL as soon as the first epoch's
    state.pt is on disk, then `--resume`d, ends bit for bit where an uninterrupted run does."""
    import signal
    import time

    sets = [a for s in [f"data.train=pairs:{pairs_dir}", "train.epochs=3",
                        "train.steps_per_epoch=4", "data.valid_files=2", "train.batch_size=4",
                        "train.threads=1", "gate.surrogate=stochastic"] for a in ("--set", s)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def cmd(run: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "dyncp", "train", "--config", str(TINY), *sets,
                "--run-dir", str(run), "--no-progress", *extra]

    def finish(run: Path, *extra: str) -> None:
        p = subprocess.run(cmd(run, *extra), capture_output=True, text=True, timeout=300,
                           env=env, cwd=ROOT)
        assert p.returncode == 0, p.stderr[-3000:]

    finish(tmp_path / "a")
    run = tmp_path / "b"
    proc = subprocess.Popen(cmd(run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, cwd=ROOT)
    deadline = time.monotonic() + 300
    while not (run / "state.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no state.pt after 300 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    err = proc.communicate(timeout=60)[1].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"finished before the kill: {err[-2000:]}"
    assert T.load_state(run / "state.pt")["epoch"] < 3           # killed mid-run
    finish(run, "--resume")
    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(run / "last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la = list(csv.DictReader((tmp_path / "a" / "log.csv").open()))
    lb = list(csv.DictReader((run / "log.csv").open()))
    keys = ("epoch", "step", "train_loss", "train_phi", "valid_loss", "valid_phi")
    assert [[r[k] for k in keys] for r in la] == [[r[k] for k in keys] for r in lb]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]   # no temporary files


def test_best_checkpoint_waits_for_the_ramp(tmp_path, pairs_dir, monkeypatch):
    """A gated run's best.pt is chosen among epochs that end with Φ_trgt ramped up: epoch 1 ends
    mid-ramp (and scores best, as an early, little-pruned epoch would), yet best.pt is epoch 2's;
    a static model has no ramp and takes its best epoch."""
    scores = iter([3.0, 2.0, 3.0, 2.0])
    real = T.validate

    def fake(*a, **k):
        v = real(*a, **k)
        return {**v, "valid_pesq_wb": next(scores)}

    monkeypatch.setattr(T, "validate", fake)
    cfg = _cfg(pairs_dir, "train.epochs=2", "train.ramp_fraction=0.75")   # ramp ends at step 3
    assert T.phi_target(cfg, 2, 4) < cfg.loss.prune_target
    T.train(cfg, tmp_path / "gated", progress=False)
    assert load_model(tmp_path / "gated" / "best.pt")[1]["epoch"] == 2
    T.train(_cfg(pairs_dir, "train.epochs=2", "gate.enabled=false"), tmp_path / "static",
            progress=False)
    assert load_model(tmp_path / "static" / "best.pt")[1]["epoch"] == 1

"""The DynCP study on real speech (issue 12): do per-frame gates beat a static model of equal cost?

    python benchmarks/study.py --config configs/real_static.toml --runs ~/dyncp-runs/study \\
        --steps 6000 --dev ../shared/data/realdev [--rows a1,a3] [--set KEY=VALUE ...]

One training run per row, each in its own folder ``RUNS/<id>_<name>``; a row whose folder holds
``eval.json`` is done and is neither retrained nor rescored, an interrupted one resumes where it
stopped. ``--rows`` picks rows (ids or names); the rows they need (a DynCP row needs the static
model it is fine-tuned from, an equal-cost row the DynCP row it matches) are added. Every row is
trained on the recipe of ``--config`` (plus ``--set``; fine-tuned rows also ``--finetune-set``)
and scored on ``--dev``; the table covers every finished row in ``RUNS``.

Steps: N = ``--steps`` per run. A row fine-tuned from a model of S steps has S + N in total; the
rows trained from scratch that stand against them (equal-cost, DynCP from scratch) get S + N too,
so every compared row has seen the same number of batches. The output states both.

Rows (``--list`` prints them): a) static paper model, its static twin, DynCP at Φ_trgt 0.25 / 0.5
/ 0.75; b) equal-cost static models and static structured pruning; c) a wider DynCP model at the
static model's MACs; d) ablations at Φ 0.75; e) per-frame vs per-utterance vs fixed masks;
f) usage targets tied to speech.
Writes ``benchmarks/results/study.json``, ``docs/study.md`` and ``docs/study.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_report  # noqa: E402  (the sibling module: table, markdown, plot)

from dyncp.atomic import atomic_path, write_json  # noqa: E402
from dyncp.checkpoint import load_model, save_model  # noqa: E402
from dyncp.config import Config, apply_overrides, load_config  # noqa: E402
from dyncp.errors import ConfigError, DyncpError  # noqa: E402
from dyncp.macs import static_macs_per_frame  # noqa: E402
from dyncp.masks import ForcedMasks, channel_usage, constant_gate_, top_channels  # noqa: E402
from dyncp.model import build_model  # noqa: E402
from dyncp.train_state import _read_log, recipe_diff  # noqa: E402
from dyncp.widths import equal_cost_config, phi_for_macs  # noqa: E402

# Study-wide settings on top of --config: the dev set is scored once per row at the end, not
# every epoch (a monitor pass costs about a minute per epoch at paper size). --set wins.
STUDY_SET = ["data.monitor="]
# Fine-tuned rows (an --init): the fine-tuning recipe of configs/real_dyncp75.toml, EMA off as
# there (the averaged weights broke the gated fine-tunes: docs/training.md).
FINETUNE_SET = ["train.lr=5e-4", "train.lr_decay=0.93", "train.ema=0"]


@dataclass(frozen=True)
class Row:
    id: str
    name: str
    what: str
    deps: tuple[str, ...] = ()


ROWS = [
    Row("a1", "static", "static paper model (gates off), from scratch"),
    Row("a2", "static_twin", "a1 fine-tuned N more steps without gates (total steps of a3-a5)",
        ("a1",)),
    *(Row(f"a{i}", f"dyncp{p}", f"DynCP Φ_trgt 0.{p}, fine-tuned from a1", ("a1",))
      for i, p in ((3, 25), (4, 50), (5, 75))),
    *(Row(f"b{i}", f"eqcost{p}", f"static, widths solved for a{i + 2}'s measured MACs, "
          "from scratch", (f"a{i + 2}",)) for i, p in ((1, 25), (2, 50), (3, 75))),
    *(Row(f"b{i}", f"struct{p}", f"a1 with a fixed per-block mask (a{i - 1}'s most-used "
          "channels, its count), fine-tuned", ("a1", f"a{i - 1}"))
      for i, p in ((4, 25), (5, 50), (6, 75))),
    Row("c1", "wide_static", "static with wider hidden channels, from scratch"),
    Row("c2", "wide_dyncp", "wide DynCP at the Φ whose MACs equal a1's, fine-tuned from c1",
        ("c1",)),
    Row("d1", "static_nc", "non-causal static, from scratch"),
    Row("d2", "noncausal75", "non-causal DynCP Φ_trgt 0.75, fine-tuned from d1", ("d1",)),
    *(Row(f"d{i}", f"{s}75", f"as a5 with the {s} surrogate gradient", ("a1",))
      for i, s in ((3, "ste"), (4, "sigmoid"), (5, "stochastic"))),
    Row("d6", "perblock75", "as a5 with the per-block usage loss", ("a1",)),
    Row("d7", "scratch75", "DynCP Φ_trgt 0.75 from scratch (steps of a5 in total)"),
    Row("e1", "utter75", "a5's gates frozen per utterance (most-used, same Φ; evaluation only)",
        ("a5",)),
    Row("e2", "fixed75", "a5 with one fixed mask for all inputs (most-used; evaluation only)",
        ("a5",)),
    Row("f1", "speech75", "as a5 with the speech-tied usage target (non-speech frames Φ_trgt "
        "+ 0.2, the mean at 0.75; loss.frame_target)", ("a1",)),
    Row("f2", "speech50", "as a4 with the speech-tied usage target (non-speech frames Φ_trgt "
        "+ 0.3, the mean at 0.5)", ("a1",)),
    Row("f3", "contrast75", "as a5 plus the contrast term (non-speech frames pruned at least "
        "0.15 more than speech ones, pooled over the batch; loss.frame_target)", ("a1",)),
    Row("f4", "snr75", "as a5 plus the difficulty contrast (the batch's cleaner half of frames "
        "by input SNR pruned at least 0.15 more than its harder half; loss.frame_target "
        "= \"snr\")", ("a1",)),
]
BY_KEY = {**{r.id: r for r in ROWS}, **{r.name: r for r in ROWS}}


@dataclass
class Plan:
    """What one row runs: a training config (None: evaluation only) and how it is scored."""

    cfg: Config | None
    steps: int = 0                   # this run's optimiser steps
    total_steps: int = 0             # with the steps of the model it starts from
    init: str | None = None          # the row (or file) it is fine-tuned from
    gate_cost: bool = True           # False: a fixed mask needs no gate at inference
    extra: dict[str, Any] = field(default_factory=dict)


def schedule(total: int, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, steps per epoch) with about ``steps_per_epoch`` steps an epoch and at least
    ``total`` steps in all (at most epochs - 1 more)."""
    epochs = max(1, round(total / max(1, steps_per_epoch)))
    return epochs, math.ceil(total / epochs)


def _put(d: dict, key: str, value: Any) -> None:
    *parts, last = key.split(".")
    for p in parts:
        d = d.setdefault(p, {})
    d[last] = value


class Study:
    """The rows' plans, run folders and results, from the parsed command line."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.runs = Path(args.runs).expanduser()
        base = load_config(args.config, STUDY_SET + list(args.set or []))
        self.base = base.to_dict()
        self.finetune = list(FINETUNE_SET if args.finetune_set is None else args.finetune_set)
        spe = base.train.steps_per_epoch or 400
        self.n = math.prod(schedule(args.steps, spe))
        self.spe = spe
        self.static_cfg = self.config({"gate.enabled": False}, self.n)
        self.paper_macs = static_macs_per_frame(self.static_cfg)
        self._dev = None
        # rows carried from an earlier record (--keep): they stand in for their run folders
        self.kept, self.kept_noisy = ({}, {})
        if getattr(args, "keep", None):
            rows, self.kept_noisy = study_report.kept_rows(args.keep, self)
            self.kept = {r["row"]: r for r in rows}

    # -- folders and results ----------------------------------------------------------------
    def dir(self, row: Row) -> Path:
        return self.runs / f"{row.id}_{row.name}"

    def result(self, rid: str) -> dict:
        """A finished row's record; for a row carried by --keep, the parts later rows read
        from it (its total steps and its measured MACs per frame, gates included)."""
        path = self.dir(BY_KEY[rid]) / "eval.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        kept = self.kept.get(BY_KEY[rid].id)
        if kept is not None and kept["plan"]["gate_cost"]:
            return {"row": kept["row"], "plan": {"total_steps": kept["total_steps"]},
                    "eval": {"mean": {"dynamic_macs_per_frame": kept["macs_per_frame"]}}}
        raise DyncpError(f"row {rid}: not finished ({path} missing)")

    def ckpt(self, rid: str) -> Path:
        if rid == "a1" and self.args.static_model:
            return Path(self.args.static_model).expanduser()
        return self.dir(BY_KEY[rid]) / "best.pt"

    def static_steps(self) -> int:
        """Steps of the static model a1: the study's N, or those of --static-model."""
        if not self.args.static_model:
            return self.n
        step = load_model(self.ckpt("a1"))[1].get("step")
        if not isinstance(step, int) or step < 1:
            raise ConfigError(f"{self.args.static_model}: its metadata names no step count")
        return step

    def dev(self, cfg: Config):
        if self._dev is None:
            from dyncp.data import eval_pairs
            self._dev = eval_pairs(self.args.dev, cfg, split="test", limit=self.args.dev_limit)
        return self._dev

    # -- plans --------------------------------------------------------------------------------
    def config(self, sets: dict[str, Any], steps: int, finetune: bool = False) -> Config:
        d = apply_overrides(self.base, self.finetune if finetune else [])
        for k, v in sets.items():
            _put(d, k, v)
        epochs, spe = schedule(steps, self.spe)
        _put(d, "train.epochs", epochs)
        _put(d, "train.steps_per_epoch", spe)
        return Config.from_dict(d)

    def _train(self, sets: dict, steps: int, init: str | None = None, **kw) -> Plan:
        cfg = self.config(sets, steps, finetune=init is not None)
        done = cfg.train.epochs * cfg.train.steps_per_epoch
        before = 0 if init is None else (self.static_steps() if init == "a1"
                                         else self.result(init)["plan"]["total_steps"])
        return Plan(cfg, done, before + done, init, **kw)

    def plan(self, row: Row) -> Plan:
        n, s0 = self.n, self.static_steps()
        dyn = {"gate.enabled": True}
        name = row.name
        if name == "static":
            if self.args.static_model:
                return Plan(None, 0, s0, extra={"checkpoint": str(self.ckpt("a1"))})
            return self._train({"gate.enabled": False}, s0)
        if name == "static_twin":
            return self._train({"gate.enabled": False}, n, "a1")
        if name.startswith("dyncp"):
            return self._train({**dyn, "loss.prune_target": int(name[5:]) / 100}, n, "a1")
        if name.startswith("eqcost"):
            target = self.result(row.deps[0])["eval"]["mean"]["dynamic_macs_per_frame"]
            cfg, w = equal_cost_config(self.static_cfg, target)
            sets = {"gate.enabled": False, "model.residual": w.residual, "model.hidden": w.hidden,
                    "gate.min_active": cfg.gate.min_active}
            return self._train(sets, s0 + n, extra={"target_macs_per_frame": target,
                                                    "widths": [w.residual, w.hidden],
                                                    "macs_per_frame": w.macs, "error": w.error})
        if name.startswith("struct"):
            return self._train({**dyn, "gate.surrogate": "ste_clipped", "gate.min_active": 0,
                                "loss.usage_weight": 0.0}, n, "a1", gate_cost=False,
                               extra={"mask_from": row.deps[1]})
        hidden = self.args.wide_hidden or 2 * self.static_cfg.model.hidden
        if name == "wide_static":
            return self._train({"gate.enabled": False, "model.hidden": hidden}, s0)
        if name == "wide_dyncp":
            gated = self.config({**dyn, "model.hidden": hidden}, n)
            phi = round(phi_for_macs(gated, self.paper_macs), 4)
            return self._train({**dyn, "model.hidden": hidden, "loss.prune_target": phi}, n,
                               "c1", extra={"target_macs_per_frame": self.paper_macs})
        if name == "static_nc":
            return self._train({"gate.enabled": False, "model.causal": False}, s0)
        if name == "noncausal75":
            return self._train({**dyn, "model.causal": False, "loss.prune_target": 0.75}, n, "d1")
        if name in ("ste75", "sigmoid75", "stochastic75"):
            return self._train({**dyn, "loss.prune_target": 0.75, "gate.surrogate": name[:-2]},
                               n, "a1")
        if name == "perblock75":
            return self._train({**dyn, "loss.prune_target": 0.75,
                                "loss.usage_mode": "per_block"}, n, "a1")
        if name == "scratch75":
            return self._train({**dyn, "loss.prune_target": 0.75}, s0 + n)
        if name in ("speech75", "speech50"):
            return self._train({**dyn, "loss.prune_target": int(name[6:]) / 100,
                                "loss.frame_target": "speech",
                                "loss.frame_spread": 0.2 if name == "speech75" else 0.3},
                               n, "a1")
        if name in ("contrast75", "snr75"):
            return self._train({**dyn, "loss.prune_target": 0.75, "loss.frame_target": name[:-2],
                                "loss.frame_spread": 0.15}, n, "a1")
        if name in ("utter75", "fixed75"):
            return Plan(None, 0, self.result("a5")["plan"]["total_steps"], "a5",
                        gate_cost=name == "utter75")
        raise AssertionError(name)  # pragma: no cover

    # -- running ------------------------------------------------------------------------------
    def _mask(self, row: Row, cfg: Config) -> torch.Tensor:
        """The fixed mask of a struct/fixed row: per block the most-used channels of the DynCP
        row it copies, as many as that row keeps per frame on average, measured on the held-out
        split of the training data (never on the dev set). Kept in the row folder."""
        path = self.dir(row) / "mask.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
        from dyncp.data import eval_pairs
        src = row.deps[-1]
        model, _ = load_model(self.ckpt(src))
        pairs = eval_pairs(cfg.data.valid or cfg.data.train, cfg, split="valid",
                           limit=cfg.data.valid_files)
        usage, active = channel_usage(model, pairs)
        mask = top_channels(usage, active.round().long().tolist())
        with atomic_path(path) as tmp:
            torch.save(mask, tmp)
        return mask

    def record(self, row: Row, plan: Plan) -> dict:
        return {"row": row.id, "name": row.name, "what": row.what,
                "plan": {"config": plan.cfg.to_dict() if plan.cfg else None, "init": plan.init,
                         "steps": plan.steps, "total_steps": plan.total_steps,
                         "gate_cost": plan.gate_cost, **plan.extra}}

    def finished(self, row: Row) -> dict | None:
        """The row's stored result, or None; ConfigError when it was run with another plan
        (config, steps, init): every row of one table shares the recipe and the budget."""
        if not (self.dir(row) / "eval.json").is_file():
            return None
        old = self.result(row.id)
        if _plan_differs(old["plan"], json.loads(json.dumps(
                self.record(row, self.plan(row))["plan"]))):
            raise ConfigError(f"{self.dir(row)}: holds row {row.id} run with another plan "
                              "(config, steps or init); use another --runs or remove the folder")
        return old

    def run(self, row: Row, progress: bool) -> dict:
        from dyncp.evaluate import evaluate
        from dyncp.train import init_from_checkpoint, train

        done = self.finished(row)
        if done is not None:
            return done
        out = self.dir(row)
        plan = self.plan(row)
        record = self.record(row, plan)
        out.mkdir(parents=True, exist_ok=True)
        print(f"[{row.id} {row.name}] {row.what}; {plan.steps} steps"
              + (f" from {plan.init}" if plan.init else "") + f" ({plan.total_steps} in all)",
              file=sys.stderr)
        if plan.cfg is not None:
            init = None if plan.init is None else self.ckpt(plan.init)
            if row.name.startswith("struct"):
                init = out / "init.pt"
                if not init.is_file():   # a1's weights, the gates a constant mask
                    mask = self._mask(row, plan.cfg)
                    model = build_model(plan.cfg)
                    init_from_checkpoint(model, self.ckpt("a1"))
                    save_model(constant_gate_(model, mask), init, {"mask_from": row.deps[1]})
            # a row trained elsewhere (scripts/gpu/study.sh) whose scoring was cut off comes
            # back without its resume state: every planned epoch logged and best.pt are enough
            ckpt = out / "best.pt"
            if not _trained_elsewhere(out, plan.cfg):
                ckpt = train(plan.cfg, out, resume=(out / "state.pt").is_file(), init=init,
                             progress=progress)
            model, _ = load_model(ckpt)
            if row.name.startswith("struct"):
                _check_constant(model, self._mask(row, plan.cfg))
        elif row.name == "static":
            model, _ = load_model(self.ckpt("a1"))
        else:
            model, _ = load_model(self.ckpt("a5"))
            policy = "utterance" if row.name == "utter75" else self._mask(row, model.cfg)
            model = ForcedMasks(model, policy)
        result = evaluate(model, self.dev(model.cfg), dnsmos=self.args.dnsmos, progress=progress)
        record["train"] = _train_log(out)
        record["eval"] = result
        write_json(out / "eval.json", record)
        return json.loads(json.dumps(record))


def _check_constant(model, mask: torch.Tensor) -> None:
    """A structured-pruning row must still gate exactly its mask after fine-tuning."""
    for block, row in zip(model.blocks, mask):
        if (block.gate.score2.weight.abs().max() != 0
                or not torch.equal(block.gate.score2.bias > 0, row > 0)):
            raise DyncpError("structured pruning: the constant gates moved in fine-tuning")


def _plan_differs(old: dict, new: dict) -> bool:
    """Whether a finished row's plan is another than the one asked for now: steps, init or any
    other entry, or a config that differs as a recipe (:func:`dyncp.train_state.recipe_diff`, the
    rule of ``--resume``: machine keys such as threads and data workers do not count, keys added
    since the row ran take their defaults), so a row trained on another machine, e.g. a GPU with
    data workers, or by an older version joins the table."""
    rest = ({k: v for k, v in p.items() if k != "config"} for p in (old, new))
    if next(rest) != next(rest):
        return True
    a, b = old.get("config"), new.get("config")
    return (a is None) != (b is None) or (a is not None and bool(recipe_diff(a, b)))


def _trained_elsewhere(run_dir: Path, cfg: Config) -> bool:
    """``run_dir`` holds a finished training of ``cfg`` without its resume state: best.pt, every
    planned epoch in log.csv and the same recipe in config.toml (another one: ConfigError)."""
    log, saved = run_dir / "log.csv", run_dir / "config.toml"
    if (run_dir / "state.pt").is_file() or not (run_dir / "best.pt").is_file() \
            or not log.is_file() or not saved.is_file():
        return False
    diff = recipe_diff(load_config(saved).to_dict(), cfg.to_dict())
    if diff:
        raise ConfigError(f"{run_dir}: holds a run of another recipe (differs at "
                          f"{', '.join(diff[:6])}); use another --runs or remove the folder")
    return max((int(r["epoch"]) for r in _read_log(log)), default=0) >= cfg.train.epochs


def _train_log(run_dir: Path) -> dict[str, float]:
    """Training time and speed from ``log.csv`` (absent for evaluation-only rows)."""
    rows = _read_log(run_dir / "log.csv")
    if not rows:
        return {}
    secs = sum(float(r["epoch_seconds"]) for r in rows)
    hours = float(rows[-1]["audio_hours"]) if rows else 0.0
    return {"seconds": secs, "audio_hours": hours,
            "audio_s_per_s": hours * 3600 / secs if secs else None}


def selected(spec: str | None) -> list[Row]:
    """Rows named in ``spec`` (ids or names, comma-separated) and the rows they need, in table
    order; every row when ``spec`` is empty."""
    if not spec:
        return list(ROWS)
    want: set[str] = set()
    todo = [s.strip() for s in spec.split(",") if s.strip()]
    while todo:
        key = todo.pop()
        if key not in BY_KEY:
            raise ConfigError(f"--rows: unknown row {key!r} (known: "
                              f"{', '.join(r.id for r in ROWS)} or their names)")
        if BY_KEY[key].id not in want:
            want.add(BY_KEY[key].id)
            todo.extend(BY_KEY[key].deps)
    return [r for r in ROWS if r.id in want]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/real_static.toml"))
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    ap.add_argument("--finetune-set", action="append", metavar="KEY=VALUE",
                    help=f"overrides of fine-tuned rows (default: {' '.join(FINETUNE_SET)})")
    ap.add_argument("--runs", default="runs/study", help="one folder per row under it")
    ap.add_argument("--steps", type=int, default=6000, help="optimiser steps per run (N)")
    ap.add_argument("--dev", default=str(ROOT.parent / "shared/data/realdev"))
    ap.add_argument("--dev-limit", type=int, default=0, help="score only the first files")
    ap.add_argument("--rows", help="comma-separated ids or names (default: all)")
    ap.add_argument("--static-model", help="use this trained static checkpoint as row a1")
    ap.add_argument("--wide-hidden", type=int, default=0, help="hidden width of rows c (2x)")
    ap.add_argument("--dnsmos", action=argparse.BooleanOptionalAction,
                    default=importlib.util.find_spec("speechmos") is not None)
    ap.add_argument("--report-only", action="store_true", help="rebuild the table only")
    ap.add_argument("--keep", metavar="JSON",
                    help="carry the rows of this earlier study JSON whose run folders are gone "
                         "(same N and recipe), e.g. benchmarks/results/study.json")
    ap.add_argument("--list", action="store_true", help="print the rows and exit")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/study.json"))
    ap.add_argument("--md", default=str(ROOT / "docs/study.md"))
    ap.add_argument("--plot", help="PNG (default: next to --md)")
    args = ap.parse_args(argv)
    if args.list:
        for r in ROWS:
            print(f"{r.id:3s} {r.name:12s} {r.what}" + (f"  [needs {', '.join(r.deps)}]"
                                                         if r.deps else ""))
        return 0
    try:
        study = Study(args)
        rows = selected(args.rows)
        print(f"study: {len(rows)} row(s) ({', '.join(r.id for r in rows)}), N = {study.n} "
              f"steps per run, base {args.config}, runs in {study.runs}", file=sys.stderr)
        if not args.report_only:
            for row in rows:
                if row.id in study.kept and study.finished(row) is None:
                    continue                # carried (--keep): not trained again
                study.run(row, progress=not args.no_progress)
        done = [rec for rec in map(study.finished, ROWS) if rec is not None]
        finished = {r["row"] for r in done}
        kept = ([r for r in study.kept.values() if r["row"] not in finished], study.kept_noisy)
        report = study_report.build(study, done,
                                    command=" ".join(["python benchmarks/study.py",
                                                      *(argv if argv is not None
                                                        else sys.argv[1:])]), kept=kept)
    except (DyncpError, ValueError) as e:
        print(f"study: {e}", file=sys.stderr)
        return 2
    print(study_report.table(report))
    plot = args.plot or str(Path(args.md).with_suffix(".png"))
    study_report.write(report, args.json, args.md, plot)
    print(f"wrote {args.json}, {args.md}, {plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

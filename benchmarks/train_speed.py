"""Training speed: seconds of audio trained per second, static vs gated paper-size model.

One step = forward + backward + AdamW step on a batch of 16 x 4 s of synthetic audio (noise and
tones; the speed does not depend on the content), with ``--threads`` torch threads (default 2).
The two models take turns step by step (``--steps`` each, the first model alternating), so a
busy spell of the shared machine slows both alike; the speeds come from the median step time,
with the best step and CPU time as cross-checks. Goal (issue 4): the gates cost at most 15 % of
the static model's training speed, i.e. gated / static >= 0.85 on the median steps.

    python benchmarks/train_speed.py [--json OUT] [--steps N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from dyncp.config import load_config
from dyncp.enhance import enhance_tensor
from dyncp.losses import total_loss
from dyncp.malloc import keep_freed_memory
from dyncp.model import build_model

ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.15


def _setup(config: Path, batch: int, seconds: float):
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    n = round(seconds * cfg.stft.sample_rate)
    g = torch.Generator().manual_seed(1)
    t = torch.arange(n) / cfg.stft.sample_rate
    clean = 0.3 * torch.sin(2 * torch.pi * (100 + 300 * torch.rand(batch, 1, generator=g)) * t)
    noisy = clean + 0.1 * torch.randn(batch, n, generator=g)
    return cfg, model, opt, noisy, clean


def _step(cfg, model, opt, noisy, clean, target: float) -> None:
    est, gates = enhance_tensor(model, noisy)
    loss = total_loss(est, clean, gates, cfg.loss, cfg.stft, target=target)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    opt.step()


def _timed(cfg, *rest) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    _step(cfg, *rest, target=cfg.loss.prune_target)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results as JSON")
    ap.add_argument("--steps", type=int, default=80, help="timed steps per model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--segment", type=float, default=4.0, help="seconds of audio per item")
    ap.add_argument("--static-config", default=str(ROOT / "configs/static.toml"))
    ap.add_argument("--gated-config", default=str(ROOT / "configs/paper.toml"))
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="leave glibc's allocator defaults (dyncp train tunes them)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    torch.set_num_threads(args.threads)
    tuned = False if args.no_malloc_tuning else keep_freed_memory()  # as `dyncp train` does

    models = {"static": _setup(Path(args.static_config), args.batch, args.segment),
              "gated": _setup(Path(args.gated_config), args.batch, args.segment)}
    for _ in range(2):  # warm-up (allocator, first-call overheads)
        for setup in models.values():
            _timed(*setup)
    wall: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    order = list(models)
    for i in range(args.steps):
        # Step by step, alternating which model goes first: both see the same machine.
        for name in (order if i % 2 == 0 else order[::-1]):
            w, c = _timed(*models[name])
            wall[name].append(w)
            cpu[name].append(c)
    audio = args.batch * args.segment
    speed = {k: audio / statistics.median(v) for k, v in wall.items()}
    speed_best = {k: audio / min(v) for k, v in wall.items()}
    speed_cpu = {k: audio / statistics.median(v) for k, v in cpu.items()}
    ratio = speed["gated"] / speed["static"]
    ratio_best = speed_best["gated"] / speed_best["static"]
    ratio_cpu = speed_cpu["gated"] / speed_cpu["static"]
    result = {"static_audio_s_per_s": speed["static"], "gated_audio_s_per_s": speed["gated"],
              "gated_over_static": ratio, "gate_cost_fraction": 1.0 - ratio,
              "gate_cost_fraction_best_step": 1.0 - ratio_best,
              "static_audio_s_per_cpu_s": speed_cpu["static"],
              "gated_audio_s_per_cpu_s": speed_cpu["gated"],
              "gate_cost_fraction_cpu": 1.0 - ratio_cpu,
              "static_step_s": wall["static"], "gated_step_s": wall["gated"],
              "goal_max_cost": GOAL, "meets_goal": 1.0 - ratio <= GOAL,
              "malloc_tuned": tuned, "steps": args.steps, "threads": args.threads, "batch": args.batch,
              "segment_s": args.segment, "torch": torch.__version__}
    print(f"{'model':8s} {'s audio/s (median step)':>24s} {'(best step)':>12s} {'s audio/CPU s':>14s}")
    for k in models:
        print(f"{k:8s} {speed[k]:24.1f} {speed_best[k]:12.1f} {speed_cpu[k]:14.1f}")
    print(f"gated / static = {ratio:.3f}: gate cost {100 * (1 - ratio):.1f} % (median steps; "
          f"best steps {100 * (1 - ratio_best):.1f} %, CPU time {100 * (1 - ratio_cpu):.1f} %); "
          f"goal <= {100 * GOAL:.0f} %: {'met' if result['meets_goal'] else 'NOT met'}")
    print(f"allocator: {'glibc tuned to keep freed memory (as dyncp train)' if tuned else 'defaults'}")
    if args.json:
        from dyncp.atomic import write_json

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

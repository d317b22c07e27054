"""Training speed: seconds of audio trained per second, static vs gated paper-size model.

One step = forward + backward + AdamW step on a batch of 16 x 4 s of synthetic audio (noise and
tones; the speed does not depend on the content), with ``--threads`` torch threads (default 2).
The two models are timed alternately, ``--rounds`` times, for about ``--seconds`` each in total;
the best round counts (the machine is shared, so the fastest round is the least disturbed).
Goal (issue 4): the gates cost at most 15 % of the static model's training speed.

    python benchmarks/train_speed.py [--json OUT] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dyncp.config import load_config
from dyncp.enhance import enhance_tensor
from dyncp.losses import total_loss
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results as JSON")
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per model")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--segment", type=float, default=4.0, help="seconds of audio per item")
    ap.add_argument("--static-config", default=str(ROOT / "configs/static.toml"))
    ap.add_argument("--gated-config", default=str(ROOT / "configs/paper.toml"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    models = {"static": _setup(Path(args.static_config), args.batch, args.segment),
              "gated": _setup(Path(args.gated_config), args.batch, args.segment)}
    for name, (cfg, *rest) in models.items():  # warm-up (allocator, first-call overheads)
        _step(cfg, *rest, target=cfg.loss.prune_target)
    audio_per_step = args.batch * args.segment
    best = {k: 0.0 for k in models}
    best_cpu = {k: 0.0 for k in models}
    per_round = args.seconds / args.rounds
    for _ in range(args.rounds):
        for name, (cfg, *rest) in models.items():
            steps, t0, c0 = 0, time.perf_counter(), time.process_time()
            while True:
                _step(cfg, *rest, target=cfg.loss.prune_target)
                steps += 1
                dt = time.perf_counter() - t0
                if dt >= per_round:
                    break
            best[name] = max(best[name], steps * audio_per_step / dt)
            # CPU seconds of this process: less sensitive to other jobs taking the cores
            best_cpu[name] = max(best_cpu[name],
                                 steps * audio_per_step / (time.process_time() - c0))
    ratio = best["gated"] / best["static"]
    ratio_cpu = best_cpu["gated"] / best_cpu["static"]
    result = {"static_audio_s_per_s": best["static"], "gated_audio_s_per_s": best["gated"],
              "gated_over_static": ratio, "gate_cost_fraction": 1.0 - ratio,
              "static_audio_s_per_cpu_s": best_cpu["static"],
              "gated_audio_s_per_cpu_s": best_cpu["gated"],
              "gate_cost_fraction_cpu": 1.0 - ratio_cpu,
              "goal_max_cost": GOAL, "meets_goal": 1.0 - ratio <= GOAL,
              "threads": args.threads, "batch": args.batch, "segment_s": args.segment,
              "torch": torch.__version__}
    print(f"{'model':8s} {'s audio / s':>12s} {'s audio / CPU s':>16s}")
    print(f"{'static':8s} {best['static']:12.1f} {best_cpu['static']:16.1f}")
    print(f"{'gated':8s} {best['gated']:12.1f} {best_cpu['gated']:16.1f}")
    print(f"gated / static = {ratio:.3f}  (gate cost {100 * (1 - ratio):.1f} % wall-clock, "
          f"{100 * (1 - ratio_cpu):.1f} % CPU time; goal <= {100 * GOAL:.0f} %: "
          f"{'met' if result['meets_goal'] else 'NOT met'})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

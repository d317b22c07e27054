"""The ``dyncp`` command. Each subcommand parses its arguments and calls one library function;
library errors (:class:`dyncp.errors.DyncpError`) become a one-line message and exit code 2.

Subcommands register themselves in ``COMMANDS`` below: ``name -> (add_arguments, run)``.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import DyncpError


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", "-C", required=required, help="experiment TOML (configs/*.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set gate.pool=4 (repeatable)")


# -- info ---------------------------------------------------------------------------------------
def _info_args(p: argparse.ArgumentParser) -> None:
    _add_config_args(p)
    p.add_argument("-c", "--checkpoint", help="read the config from a model checkpoint instead")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _info_run(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .config import load_config
    from .macs import summary
    from .model import build_model, count_params

    if args.checkpoint:
        model, _ = load_model(args.checkpoint)
        cfg = model.cfg
    else:
        cfg = load_config(args.config, args.overrides)
        model = build_model(cfg)
    info = summary(cfg, params=count_params(model))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"config            {cfg.name}  ({'causal' if cfg.model.causal else 'non-causal'}, "
          f"{'gated' if cfg.gate.enabled else 'static'})")
    print(f"parameters        {info['params']:,}")
    print(f"static MACs/frame {info['static_macs_per_frame']:,}  "
          f"({info['static_mmac_per_s']:.2f} MMAC/s)")
    print(f"gate MACs/frame   {info['gate_macs_per_frame']:,}  "
          f"({100 * info['gate_overhead_fraction']:.1f} % of static)")
    print(f"prunable share    {100 * info['prunable_fraction']:.1f} % of static")
    if "dynamic_macs_per_frame_at_target" in info:
        d = info["dynamic_macs_per_frame_at_target"]
        print(f"dynamic at target {d:,.0f} MACs/frame at Phi={cfg.loss.prune_target} "
              f"({100 * (1 - d / info['static_macs_per_frame']):.1f} % saved)")
    print(f"receptive field   {info['receptive_field_frames']} frames "
          f"({info['gate_receptive_field_frames']} with gate pooling)")
    print(f"latency           {info['latency_ms']:.1f} ms  ({info['frames_per_second']} frames/s)")
    print(f"note              {info['note']}")
    return 0


COMMANDS: dict[str, tuple] = {
    "info": (_info_args, _info_run, "model size, MACs, receptive field and latency of a config"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="dyncp", description="Speech enhancement with Dynamic "
                                     "Channel Pruning (DynCP).")
    parser.add_argument("--version", action="version", version=f"dyncp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (add, run, helptext) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        add(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except DyncpError as e:
        print(f"dyncp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dyncp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

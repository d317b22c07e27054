"""The ``dyncp`` command. Each subcommand parses its arguments and calls one library function;
library errors (:class:`dyncp.errors.DyncpError`) become a one-line message and exit code 2.

Subcommands register themselves in ``COMMANDS`` below: ``name -> (add_arguments, run)``.
"""

from __future__ import annotations

import argparse
import json
import sys

from .atomic import write_json
from .cli_deploy import (_MODEL_HELP, _add_budget, _budget_phi, _default_model, _export_args,
                         _export_run, _models_args, _models_run, _ship_args, _ship_run,
                         _stream_args, _stream_run)
from .errors import DyncpError


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", "-C", required=required, help="experiment TOML (configs/*.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set gate.pool=4 (repeatable)")


def _add_data_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=V",
                   help="override how the data is read, e.g. --set data.skip_bad=true "
                        "(data.* only: the rest of a checkpoint's config is its model's)")


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
        if args.config or args.overrides:
            given = " ".join(([f"--config {args.config}"] if args.config else [])
                             + [f"--set {o}" for o in args.overrides])
            raise DyncpError(f"{given}: with -c the checkpoint's embedded config is used as "
                             f"it is (--config/--set describe a config to build)")
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


# -- demo and report (issue 5) -------------------------------------------------------------------
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--static-config", default="configs/demo_static.toml")
    p.add_argument("--dyncp-config", default="configs/demo_dyncp.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in both configs (repeatable)")
    p.add_argument("--examples", type=int, default=3, help="audio examples in the report")
    p.add_argument("--recordings", default="demo/recordings",
                   help="real noisy recordings the shipped models enhance in the report "
                        "(default demo/recordings; skipped with a note without a shipped model)")
    p.add_argument("--no-progress", action="store_true")


def _demo_run(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, args.static_config, args.dyncp_config, args.overrides,
             n_examples=args.examples, progress=not args.no_progress,
             recordings=args.recordings)
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--checkpoint", action="append", required=True, metavar="[NAME=]CKPT",
                   help="model checkpoint, optionally named (repeatable); a static one is the "
                        "reference for MACs saved")
    p.add_argument("--data", required=True, help="data spec: builtin, pairs:DIR, DIR, "
                   "voicebank:ROOT, mix:SPEECH,NOISE")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=0, help="evaluate at most N files (0: all)")
    p.add_argument("--examples", type=int, default=3)
    p.add_argument("-o", "--out", required=True, help="report folder")
    _add_data_set(p)
    p.add_argument("--no-progress", action="store_true")


def _report_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .checkpoint import load_model
    from .config import with_data_overrides
    from .data import eval_pairs
    from .evaluate import evaluate
    from .report import build_report, format_table

    models, evals, pairs = {}, {}, None
    for item in args.checkpoint:
        name, _, path = item.rpartition("=")
        model, _ = load_model(path)
        name = name or Path(path).parent.name or Path(path).stem
        if pairs is None:
            pairs = eval_pairs(args.data, with_data_overrides(model.cfg, args.overrides),
                               split=args.split, limit=args.limit)
        models[name] = model
        evals[name] = evaluate(model, pairs, progress=not args.no_progress)
    static = [n for n, m in models.items() if not m.gated]
    report = build_report(args.out, models, evals, pairs, n_examples=args.examples,
                          static_name=static[0] if static else None)
    print(format_table(json.loads((Path(args.out) / "results.json").read_text())))
    print(f"report: {report.resolve()}")
    return 0


# -- train, evaluate, enhance (issue 4) ----------------------------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    _add_config_args(p, required=True)
    p.add_argument("--run-dir", required=True, help="folder for checkpoints, log and state")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--init", metavar="CKPT", help="start from a model checkpoint's weights, a "
                   "path or a shipped name (fine-tuning; fresh, open gates when it has none)")
    p.add_argument("--no-progress", action="store_true")


def _train_run(args: argparse.Namespace) -> int:
    import os

    from .config import load_config
    from .train import train

    cfg = load_config(args.config, args.overrides)
    best = train(cfg, args.run_dir, resume=args.resume, init=args.init,
                 progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":
        print(f"best checkpoint: {best}")
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--checkpoint", required=True,
                   help="model checkpoint (.pt) or shipped model name (see `dyncp models`)")
    p.add_argument("--data", required=True, help="data spec: builtin, pairs:DIR, DIR, "
                   "voicebank:ROOT, mix:SPEECH,NOISE")
    p.add_argument("--split", default="test", help="split for builtin/voicebank (default test)")
    p.add_argument("--limit", type=int, default=0, help="evaluate at most N files (0: all)")
    p.add_argument("--json", metavar="OUT", help="write the full result (per file and mean)")
    p.add_argument("--dnsmos", action="store_true", help="also DNSMOS (needs speechmos)")
    _add_budget(p)
    _add_data_set(p)
    p.add_argument("--no-progress", action="store_true")


def _evaluate_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate import evaluate_checkpoint, format_table

    if args.json and Path(args.json).is_dir():
        raise DyncpError(f"--json {args.json}: is a folder, give a file name")
    result = evaluate_checkpoint(args.checkpoint, args.data, split=args.split, limit=args.limit,
                                 dnsmos=args.dnsmos, progress=not args.no_progress,
                                 overrides=args.overrides, phi=args.phi, mmac=args.budget)
    if args.dnsmos and "dnsmos_ovrl" not in result["mean"]:
        print("note: DNSMOS skipped (install speechmos, librosa and onnxruntime)", file=sys.stderr)
    print(format_table(result))
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return 0


def _enhance_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="IN", help="sound files or folders (wav, flac "
                   "and whatever else this soundfile build reads; others are skipped and named)")
    p.add_argument("-c", "--checkpoint", default=_default_model(), help=_MODEL_HELP)
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files "
                   "(default: refuse before anything is written)")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--normalize", dest="on_clip", action="store_const", const="normalize",
                       help="output beyond ±1 (float input above full scale): scale the file down "
                       "by its peak (default)")
    level.add_argument("--clip", dest="on_clip", action="store_const", const="clip",
                       help="output beyond ±1: keep the level and clip those samples")
    p.set_defaults(on_clip="normalize")
    _add_budget(p)
    p.add_argument("--no-progress", action="store_true")


def _enhance_run(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .enhance import enhance_files

    model, _ = load_model(args.checkpoint)
    written = enhance_files(model, args.inputs, args.out, progress=not args.no_progress,
                            overwrite=args.overwrite, on_clip=args.on_clip,
                            phi=_budget_phi(model, args))
    print(f"wrote {len(written)} file(s) to {args.out}")
    return 0


# -- compare (issue 7) ---------------------------------------------------------------------------
def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="folder with noisy/ and clean/ (same names, any rate), or 'builtin'")
    p.add_argument("--models", nargs="*", default=[], metavar="CKPT",
                   help="dyncp checkpoints (each: an offline row and a sparse-runtime row)")
    p.add_argument("--json", help="write the rows as a JSON list")
    p.add_argument("--md", help="write the Markdown table")
    p.add_argument("--plot", help="write PESQ vs MMAC/s and vs RTF (PNG)")
    p.add_argument("--limit", type=int, default=0, help="first N pairs only (0: all)")
    p.add_argument("--max-lag", type=float, default=0.1, help="delay search range, +- seconds")
    p.add_argument("--no-peers", action="store_true", help="only the noisy row and --models")
    p.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS")
    p.add_argument("--quiet", action="store_true")


def _compare_run(args: argparse.Namespace) -> int:
    from .compare import compare, save

    rows = compare(args.data, args.models, peers=not args.no_peers, limit=args.limit,
                   max_lag_s=args.max_lag, use_dnsmos=not args.no_dnsmos,
                   progress=not args.quiet)
    print(save(rows, args.json, args.md, args.plot))
    return 0


# -- data (issue 4) ------------------------------------------------------------------------------
def _data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    b = sub.add_parser("build", help="write a corpus as <split>/noisy, <split>/clean and "
                       "<split>/manifest.csv for train, valid and test",
                       description="Build the built-in corpus (sizes, SNR range and seed from "
                       "the config's [data] section) or export another data spec's splits.")
    _add_config_args(b)
    b.add_argument("--out", required=True, help="output folder (new or empty)")
    b.add_argument("--data", default="builtin", help="data spec to write (default builtin; "
                   "also voicebank:ROOT, pairs:DIR, mix:SPEECH,NOISE)")
    b.add_argument("--no-progress", action="store_true")


def _data_run(args: argparse.Namespace) -> int:
    import time

    from .config import load_config
    from .data import export_pairs

    cfg = load_config(args.config, args.overrides)
    t0 = time.perf_counter()
    root = export_pairs(args.data, cfg, args.out, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    total = 0
    for split in ("train", "valid", "test"):
        n = len(list((root / split / "clean").glob("*.wav")))
        total += n
        print(f"{split:<6} {n:6d} pairs  {root / split}")
    meta = root / "corpus.json"  # the built-in corpus records its own build time (or reuse)
    if meta.is_file():
        seconds = json.loads(meta.read_text()).get("build_seconds", seconds)
    print(f"{total} pairs in {root} (built in {seconds:.1f} s, "
          f"{total / max(seconds, 1e-9):.1f} pairs/s)")
    return 0


COMMANDS: dict[str, tuple] = {
    "data": (_data_args, _data_run, "build the built-in corpus (or export a data spec) as "
             "noisy/clean folders with a manifest"),
    "stream": (_stream_args, _stream_run, "stream a file frame by frame (torch, dense or sparse "
               "engine): us per frame, real-time factor, pruning, difference to offline"),
    "export": (_export_args, _export_run, "export the streaming step to ONNX (verified with "
               "onnxruntime) or a C99 library for microcontrollers (--format c)"),
    "train": (_train_args, _train_run, "train a model (single process or under torchrun)"),
    "evaluate": (_evaluate_args, _evaluate_run, "score a checkpoint: PESQ, STOI, SI-SDR, "
                 "composite measures, static and dynamic MACs, pruning ratio"),
    "enhance": (_enhance_args, _enhance_run, "enhance audio files and folders with a checkpoint"),
    "info": (_info_args, _info_run, "model size, MACs, receptive field and latency of a config"),
    "demo": (_demo_args, _demo_run, "the main job: train static + DynCP on the built-in corpus, "
             "evaluate, write the report"),
    "models": (_models_args, _models_run, "list the shipped models with their cards"),
    "ship": (_ship_args, _ship_run, "package a trained checkpoint as a shipped model with its "
             "card (scores measured on the written file)"),
    "report": (_report_args, _report_run, "evaluate checkpoints and write the HTML report "
               "(Fig. 1 channel-state maps, trade-off plot, audio)"),
    "compare": (_compare_args, _compare_run, "benchmark dyncp checkpoints against RNNoise, GTCRN, "
                "DeepFilterNet3 and spectral gating on noisy/clean pairs"),
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
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"dyncp {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():     # one line per warning, no source lines
            warnings.showwarning = show
            return int(args._run(args) or 0)
    except DyncpError as e:
        print(f"dyncp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dyncp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

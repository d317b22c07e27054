"""The deployment side of the ``dyncp`` command: shipped models (``models``, ``ship``), the
run-time budget options shared by ``enhance``, ``evaluate`` and ``stream``, and ``stream`` and
``export``. Registered in :data:`dyncp.cli.COMMANDS`; each subcommand calls one library function.
"""

from __future__ import annotations

import argparse
import json
import sys

from .atomic import write_json
from .errors import DyncpError
from .governor import Governor


# -- shipped models (issue 11) and the run-time budget (issue 13) --------------------------------
def _add_budget(p: argparse.ArgumentParser):
    """--phi / --budget, mutually exclusive; returns the group (stream adds the governor)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--phi", type=float, default=None, help="budget models: the pruning ratio to "
                   "run (0 = every channel; otherwise within the model's range, e.g. 0.1-0.85)")
    g.add_argument("--budget", type=float, default=None, metavar="MMAC_PER_S",
                   help="budget models: the compute budget in MMAC/s (the lowest Φ that fits)")
    return g


def _budget_phi(model, args: argparse.Namespace):
    from .budget import phi_for
    return phi_for(model.cfg, args.phi, args.budget)



def _default_model() -> str:
    from .zoo import DEFAULT_MODEL
    return DEFAULT_MODEL


_MODEL_HELP = ("model checkpoint (.pt) or shipped model name (see `dyncp models`); default: the "
               "shipped model %(default)r")


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the list with full cards as JSON")
    p.add_argument("--plot", metavar="PNG", help="also draw PESQ-WB against MMAC/s from the "
                   "cards (dedicated models as points, a budget model as a curve; the figure "
                   "of the demo report and docs/budget.md)")


def _models_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .zoo import WEIGHTS_DIR, list_models

    models = list_models()
    if args.plot:
        from .report_zoo import quality_compute_figure, shipped_rows

        rows = shipped_rows(models)
        if not rows:
            raise DyncpError(f"--plot: no shipped model in {WEIGHTS_DIR} has development-set "
                             "scores in its card (`dyncp ship --dev` writes them)")
        noisy = next(((m["card"].get("dev") or {}).get("noisy_pesq_wb") for m in models
                      if (m["card"].get("dev") or {}).get("noisy_pesq_wb") is not None), None)
        quality_compute_figure(rows, args.plot, references={"noisy input": noisy})
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print(f"no shipped models in {WEIGHTS_DIR}")
        return 0
    print(f"shipped models ({WEIGHTS_DIR}); '*' marks the default of enhance and stream\n")
    for m in models:
        c = m["card"]
        dev = c.get("dev") or {}
        print(f"{'*' if m['default'] else ' '} {m['name']:<9} {c.get('description', '')}")
        if dev:
            print(f"    {Path(str(dev.get('set', 'dev'))).name:<9} PESQ-WB {dev.get('pesq_wb', float('nan')):.3f}  STOI "
                  f"{dev.get('stoi', float('nan')):.3f}  SI-SDR {dev.get('si_sdr', float('nan')):.2f}"
                  f" dB  {dev.get('mmac_per_s', float('nan')):.2f} MMAC/s  Φ "
                  f"{dev.get('phi', float('nan')):.3f}")
        since = ""
        if c.get("init"):   # a fine-tune: its own run, then all the model has seen
            since = (f" (fine-tuned from {c['init']}: {c.get('total_steps', '?')} steps, "
                     f"{c.get('total_audio_hours', float('nan')):.0f} h in all)")
        print(f"    trained   {c.get('steps', '?')} steps, {c.get('audio_hours', float('nan')):.0f}"
              f" h of audio{since} on {c.get('training_data', '?')}")
        print(f"    command   {c.get('command', '?')}\n")
    return 0


def _ship_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="trained model checkpoint (best.pt of a run)")
    p.add_argument("--name", required=True, help="shipped name, e.g. dyncp75")
    p.add_argument("--dev", required=True, help="development pairs scored into the card "
                   "(e.g. ../shared/data/realdev)")
    p.add_argument("--command", required=True, dest="made_by", help="the command that "
                   "reproduces the model (written into the card)")
    p.add_argument("--training-data", required=True, help="what it was trained on (card)")
    p.add_argument("--recipe", default="", help="recipe notes for the card")
    p.add_argument("--init", metavar="CKPT", default=None, help="the checkpoint or shipped name "
                   "the run was started from (`dyncp train --init`), for runs whose checkpoint "
                   "does not record it; the card's total steps and hours then count it too")
    p.add_argument("--weights-dir", default=None, help="folder to write to (default: the "
                   "package's dyncp/weights)")
    p.add_argument("--no-progress", action="store_true")


def _ship_run(args: argparse.Namespace) -> int:
    from .zoo import ship_scored

    path, c = ship_scored(args.checkpoint, args.name, dev=args.dev, command=args.made_by,
                          training_data=args.training_data, recipe=args.recipe,
                          weights_dir=args.weights_dir, progress=not args.no_progress,
                          init=args.init)
    print(json.dumps(c, indent=2))
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


# -- stream and export (issue 6) -----------------------------------------------------------------
def _stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--checkpoint", default=_default_model(),
                   help=_MODEL_HELP + " (causal models only)")
    p.add_argument("input", help="noisy sound file (resampled to the model's rate)")
    p.add_argument("-o", "--output", required=True, help="enhanced WAV to write")
    p.add_argument("--engine", choices=["torch", "dense", "sparse"], default="sparse")
    p.add_argument("--chunk", type=int, default=0, help="samples per feed call (0: one hop)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a "
                   "single-core device)")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    g = _add_budget(p)
    g.add_argument("--governor", type=float, default=None, metavar="MMAC_PER_S",
                   help="budget models: hold this average MMAC/s over every --window, frame by "
                   "frame (more on hard frames, less on easy ones)")
    g.add_argument("--governor-us", type=float, default=None, metavar="US",
                   help="budget models: hold this average compute time per frame (µs, measured "
                   "on this machine)")
    p.add_argument("--window", type=float, default=10.0, metavar="S",
                   help="governor: the window its average is held over (default 10 s)")
    p.add_argument("--cap", type=float, default=None, metavar="MMAC_PER_S",
                   help="governor: a hard cap on any single frame's compute")
    p.add_argument("--speech-gain", type=float, default=None, metavar="K",
                   help="governor: how far (in Φ) input activity (speech) lowers the next "
                   f"frame's Φ against its recent mean (default {Governor.SPEECH:g}; 0: off)")


def _governor(args: argparse.Namespace):
    if args.governor is None and args.governor_us is None:
        if args.cap is not None:
            raise DyncpError("--cap needs --governor or --governor-us")
        if args.speech_gain is not None:
            raise DyncpError("--speech-gain needs --governor or --governor-us")
        return None
    return Governor(mmac=args.governor, us=args.governor_us, window_s=args.window,
                    cap_mmac=args.cap, speech=args.speech_gain)


def _stream_run(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_model
    from .stream_io import stream_file

    torch.set_num_threads(max(args.threads, 1))
    gov = _governor(args)
    model, _ = load_model(args.checkpoint)
    r = stream_file(model, args.input, args.output, engine=args.engine, chunk=args.chunk,
                    phi=args.phi, mmac=args.budget, governor=gov)
    print(f"engine            {r['engine']}  ({r['frames']} frames, {r['seconds']:.2f} s)")
    print(f"us per frame      median {r['us_per_frame_median']:.1f}  p99 "
          f"{r['us_per_frame_p99']:.1f}")
    print(f"real-time factor  {r['rtf']:.4f}")
    if r["phi"] is not None:
        print(f"budget            Φ {r['phi']:g}" + ("  (every channel, no gate)"
                                                     if r["phi"] == 0 else ""))
    print(f"pruning ratio     {r['pruning_ratio']:.3f}")
    print(f"dynamic MMAC/s    {r['dynamic_mmac_per_s']:.2f}")
    gs = r["governor"]
    if gs is not None:
        fmt = (lambda v: "-" if v is None else f"{v:.2f}")
        print(f"governor          target {gs['target']:g} {gs['unit']}, mean {fmt(gs['mean'])}; "
              f"{gs['window_s']:g} s window mean {fmt(gs['window_mean_min'])} to "
              f"{fmt(gs['window_mean_max'])}" + ("" if gs["window_mean_max"] is not None
                                                  else " (stream shorter than one window)"))
    else:
        print(f"max |stream - offline| {r['max_abs_diff_offline']:.2e}")
    print(f"wrote {args.output}")
    if args.json:
        write_json(args.json, r)
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--checkpoint", required=True, help="model checkpoint (causal) or a "
                   "shipped model name")
    p.add_argument("-o", "--output", required=True, help="ONNX file, or the folder of the C "
                   "library (--format c)")
    p.add_argument("--format", choices=["onnx", "c"], default="onnx",
                   help="onnx: the streaming step for onnxruntime (dense compute with the gate "
                   "mask); c: a C99 library for microcontrollers (default onnx)")
    p.add_argument("--frames", type=int, default=128, help="onnx: frames to verify with "
                   "onnxruntime (>= 100)")
    p.add_argument("--variant", choices=["fp32", "int8"], default="fp32",
                   help="c: float32 weights, or int8 weights with int16 activations")
    p.add_argument("--calib", metavar="SPEC", help="c, int8: calibration audio, a data spec "
                   "(mix:SPEECH_DIR,NOISE_DIR, pairs:DIR, builtin) or a folder of sound files")
    p.add_argument("--calib-files", type=int, default=16, help="c, int8: files of --calib used")
    p.add_argument("--prefix", default="dyncp", help="c: prefix of file names and C symbols "
                   "(several models in one firmware)")
    p.add_argument("--no-check", action="store_true", help="c: skip compiling the library with "
                   "the host C compiler and comparing it with the sparse Streamer")


def _export_run(args: argparse.Namespace) -> int:
    from .checkpoint import load_model

    model, _ = load_model(args.checkpoint)
    if args.format == "c":
        return _export_c(model, args)
    from .export import export_onnx

    r = export_onnx(model, args.output, frames=args.frames)
    print(f"verified with onnxruntime over {r['frames']} frames: max |mask diff| "
          f"{r['mask']:.2e}, max |state diff| {r['state']:.2e}, gate mismatches "
          f"{r['gate_mismatches']}")
    print(f"inputs  {', '.join(r['inputs'])}")
    print(f"outputs {', '.join(r['outputs'])}")
    print(f"wrote {r['path']} ({r['bytes']:,} bytes; dense compute with the gate mask applied)")
    return 0


def _export_c(model, args: argparse.Namespace) -> int:
    from .export_c import calibration_audio, export_c

    calib = None
    if args.variant == "int8":
        if not args.calib:
            raise DyncpError("--variant int8 needs --calib (calibration audio: a data spec such "
                             "as mix:SPEECH_DIR,NOISE_DIR, or a folder of sound files)")
        calib = calibration_audio(args.calib, model.cfg, args.calib_files)
    r = export_c(model, args.output, args.variant, calib=calib, prefix=args.prefix,
                 check=False if args.no_check else None)
    c = r.get("check")
    if c:
        gates = (f"{c['gate_mismatches']} of {c['gate_decisions']:,} gate decisions differ"
                 if model.gated else "static model")
        print(f"checked with the host C compiler over {c['frames']} frames against the sparse "
              f"Streamer: max |diff| {c['max_abs_diff']:.2e} (SNR {c['snr_db']:.1f} dB), {gates}")
    else:
        print("not checked (--no-check, or no C compiler found)")
    print(f"weights {r['weight_bytes']:,} bytes ({args.variant}) + tables {r['table_bytes']:,}; "
          f"state per stream {r['state_bytes']:,} bytes")
    print(f"wrote {r['path']}: {', '.join(r['files'])}")
    return 0

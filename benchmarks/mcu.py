"""DynCP on an emulated Cortex-M: do pruned channels save instructions on a microcontroller?

The C library of ``dyncp export --format c`` is cross-compiled for a Cortex-M4F (qemu's
``mps2-an386``; ``--m7``: also a Cortex-M7, ``mps2-an500``) with ``benchmarks/mcu/`` (start-up,
linker script, a harness that streams a file through ``dyncp_process`` over semihosting). qemu
runs with ``-icount shift=0``: the virtual clock advances one nanosecond per executed instruction,
and SysTick (processor clock) is read around every ``dyncp_process`` call; a calibration loop of
known length converts ticks to instructions (40 per tick on these boards). **Instructions are a
proxy for cycles**: a real Cortex-M4 needs more than one cycle for loads, floating-point
multiply-adds and flash wait states, so read the MHz column as a lower bound.

Rows: ``dense`` is the same code compiled with ``-DDYNCP_DENSE=1``: no gate evaluated, every
channel computed (the static network's cost); ``sparse`` at Φ 0.5 and 0.75 evaluates the gates and
computes only the active channels; each in fp32 and int8. Flash = text + data of the library's
objects (``arm-none-eabi-size``; weights included); RAM = the per-stream state (all scratch
included) + the stack depth ``dyncp_process`` reached (stack painting); the library has no other
static RAM (its objects have empty .data and .bss). Every qemu output is compared with the same
library built for the host (``cc``) and run through ctypes: output samples and gates.

The models. With ``--model75/--model50`` (checkpoints or shipped names) those are used; otherwise
[decided] the paper config with random weights (seed 0) whose gate biases are set, block by block,
to each channel's Φ-quantile of its scores on the hops measured (in-sample, as
benchmarks/streaming.py does): every channel is then on in 1 - Φ of those frames. Instruction
counts depend on the weights only through the gates. int8 calibration: trainpack mixtures
(training split).

Host speed: the fp32 library's network (``dyncp_mask``, built with ``-O3 -march=native
-ffp-contract=fast``: fused multiply-adds, as the numba kernel's ``contract`` flag allows it)
against the numba sparse kernel (``SparseRuntime.step_into``), both called from Python per frame,
one thread, the best of interleaved rounds; the same library built without contraction (the
bit-exact build every target reproduces) is timed beside it; and a whole hop (``dyncp_process``)
against ``Streamer.feed`` of one hop. The goal reads CPU time per frame over a whole pass
(``process_time``, which a training job preempting us does not inflate); the median wall time
per call is printed beside it.

Goals (one run): sparse at Φ 0.75 <= 0.5 x dense instructions per hop on the M4; int8 paper model
<= 1 MB flash and <= 64 KB RAM (state + scratch + stack); fp32 host network <= 1.2 x numba.

    python benchmarks/mcu.py [--json benchmarks/results/mcu.json] [--hops 250] [--m7]
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dyncp.atomic import write_json  # noqa: E402
from dyncp.checkpoint import load_model  # noqa: E402
from dyncp.config import load_config  # noqa: E402
from dyncp.dsp import stft  # noqa: E402
from dyncp.export_c import HostLibrary, calibration_audio, export_c, probe_signal  # noqa: E402
from dyncp.model import ConvFSENet  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "benchmarks" / "mcu"
TRAINPACK = Path("/work/shared/data/trainpack")
REALDEV = Path("/work/shared/data/realdev")
CPUS = {"M4": ("mps2-an386", ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16"]),
        "M7": ("mps2-an500", ["-mcpu=cortex-m7", "-mfpu=fpv5-sp-d16"])}
ARM_FLAGS = ["-std=c99", "-O2", "-ffp-contract=off", "-fno-math-errno", "-mthumb",
             "-mfloat-abi=hard", "-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra"]
HOST_EXACT = ["-O3", "-march=native"]                 # CFLAGS keep -ffp-contract=off
HOST_FAST = [*HOST_EXACT, "-ffp-contract=fast"]       # a host deployer's build: FMA allowed
GOALS = {"sparse75_vs_dense": 0.5, "int8_flash_bytes": 1 << 20, "int8_ram_bytes": 64 << 10,
         "host_vs_numba": 1.2}
LIB_OBJECTS = ("dyncp.o", "dyncp_net.o", "dyncp_weights.o")


def need_tools() -> None:
    missing = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
               if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run `make mcu` (installs gcc-arm-none-eabi, "
                 f"libnewlib-arm-none-eabi, qemu-system-arm)")


# -- models and audio -----------------------------------------------------------------------------
def bench_audio(cfg, seconds: float) -> tuple[np.ndarray, str]:
    """Trainpack test-split mixtures (disjoint from the int8 calibration's training split),
    concatenated to ``seconds``, trimmed to whole hops; synthetic when ../shared is absent."""
    sr, hop = cfg.stft.sample_rate, cfg.stft.hop
    if TRAINPACK.is_dir():
        from dyncp.data import eval_pairs
        spec = f"mix:{TRAINPACK / 'speech'},{TRAINPACK / 'noise'}"
        wavs, n = [], int(seconds * sr)
        for p in eval_pairs(spec, cfg, split="test", limit=12):
            wavs.append(p.noisy)
            if sum(w.size for w in wavs) >= n:
                break
        x, src = np.concatenate(wavs)[:n], "trainpack test-split mixtures"
    else:
        x, src = probe_signal(sr, seconds), "synthetic (../shared absent)"
    return np.ascontiguousarray(x[: x.size // hop * hop], np.float32), src


def mags_of(wav: np.ndarray, cfg) -> np.ndarray:
    """[T, F] float32 magnitudes, the frames a streamer sees."""
    return stft(torch.from_numpy(wav), cfg.stft).abs().T.contiguous().numpy()


@torch.no_grad()
def calibrate_gates(model: ConvFSENet, mags: np.ndarray, target: float) -> None:
    """Each gated channel's score bias shifted by its ``target`` quantile on ``mags`` [T, F]."""
    h = torch.relu(model.front(model._features(torch.from_numpy(mags.T.copy()).unsqueeze(0))))
    for blk in model.blocks:
        blk.gate.score2.bias -= torch.quantile(blk.gate.scores(h)[0], target, dim=1)
        h, _ = blk(h)


def models(args, wav: np.ndarray) -> tuple[dict[str, ConvFSENet], str]:
    """The Φ 0.75 and 0.5 models; random ones are calibrated on ``wav``, the audio measured."""
    given = {"sparse75": args.model75, "sparse50": args.model50}
    out, how = {}, []
    for name, target in (("sparse75", 0.75), ("sparse50", 0.5)):
        if given[name]:
            out[name] = load_model(given[name])[0]
            how.append(f"{name}: {given[name]}")
            continue
        torch.manual_seed(0)
        m = ConvFSENet(load_config(ROOT / "configs/paper.toml")).eval()
        calibrate_gates(m, mags_of(wav, m.cfg), target)
        out[name] = m
        how.append(f"{name}: paper config, random weights, gates calibrated to Φ {target}")
    return out, "; ".join(how)


# -- builds and runs ------------------------------------------------------------------------------
def sizes(objects: list[Path]) -> dict[str, int]:
    r = subprocess.run(["arm-none-eabi-size", *map(str, objects)], capture_output=True,
                       text=True, check=True)
    tot = {"text": 0, "data": 0, "bss": 0}
    for line in r.stdout.splitlines()[1:]:
        text, data, bss = map(int, line.split()[:3])
        tot["text"] += text
        tot["data"] += data
        tot["bss"] += bss
    return tot


def cross_build(lib: Path, work: Path, cpu: str, dense: bool) -> tuple[Path, dict]:
    flags = ARM_FLAGS + CPUS[cpu][1] + (["-DDYNCP_DENSE=1"] if dense else [])
    objs = []
    for src in [lib / "dyncp.c", lib / "dyncp_net.c", lib / "dyncp_weights.c",
                HARNESS / "harness.c"]:
        obj = work / (src.stem + ".o")
        subprocess.run(["arm-none-eabi-gcc", *flags, f"-I{lib}", "-c", str(src), "-o", str(obj)],
                       check=True)
        objs.append(obj)
    start = work / "startup.o"
    subprocess.run(["arm-none-eabi-gcc", "-std=gnu99", "-O2", "-mthumb", "-mfloat-abi=hard",
                    *CPUS[cpu][1], "-c", str(HARNESS / "startup.c"), "-o", str(start)], check=True)
    elf = work / "bench.elf"
    subprocess.run(["arm-none-eabi-gcc", "-mthumb", "-mfloat-abi=hard", *CPUS[cpu][1],
                    "-nostartfiles", "-T", str(HARNESS / "mps2.ld"), "-Wl,--gc-sections",
                    *map(str, objs), str(start), "-lm", "-lc", "-lgcc", "-o", str(elf)],
                   check=True)
    return elf, sizes([work / o for o in LIB_OBJECTS])


def run_qemu(elf: Path, work: Path, cpu: str, x: np.ndarray, n_gates: int) -> dict:
    x.astype(np.float32).tofile(work / "in.f32")
    cmd = ["qemu-system-arm", "-M", CPUS[cpu][0], "-nographic", "-monitor", "none", "-serial",
           "none", "-semihosting-config", "enable=on,target=native", "-icount",
           "shift=0,align=off,sleep=off", "-kernel", str(elf)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"qemu failed ({r.returncode}): {r.stderr[-2000:]}")
    rep = dict(line.rsplit(" ", 1) for line in (work / "report.txt").read_text().splitlines())
    per_insn = 2_000_000 / int(rep["calibration_ticks_per_2M_insns"])
    ticks = np.fromfile(work / "ticks.u32", np.uint32).astype(np.float64)
    return {"insns": ticks * per_insn, "insns_per_tick": per_insn,
            "out": np.fromfile(work / "out.f32", np.float32),
            "gates": np.fromfile(work / "gates.u8", np.uint8).reshape(ticks.size, n_gates),
            "stack_bytes": int(rep["stack_bytes"]), "state_bytes": int(rep["state_bytes"]),
            "qemu_seconds": wall}


def host_run(lib: HostLibrary, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per hop outputs and gates, exactly as the harness calls the library."""
    st, hop = lib.new_state(), lib.hop
    outs, gates = [], []
    for j in range(x.size // hop):
        o, rc = lib.process(st, x[j * hop:(j + 1) * hop])
        assert rc == 0
        outs.append(o.copy())
        gates.append(lib.gates(st)[0].reshape(-1).copy())
    return np.concatenate(outs), np.stack(gates)


# -- host speed -----------------------------------------------------------------------------------
def host_speed(model: ConvFSENet, folder: Path, mags: np.ndarray, wav: np.ndarray,
               work: Path, rounds: int) -> dict:
    from dyncp.runtime import SparseRuntime
    from dyncp.streaming import Streamer

    lib = HostLibrary(folder, flags=HOST_FAST, build=work / "libfast.so")
    exact = HostLibrary(folder, flags=HOST_EXACT, build=work / "libexact.so")
    rt = SparseRuntime(model, "sparse")
    frames = [np.ascontiguousarray(m) for m in mags]
    hop = model.cfg.stft.hop
    hops = [np.ascontiguousarray(wav[i:i + hop]) for i in range(0, wav.size - hop + 1, hop)]

    def numba_net():
        st = rt.initial_state()
        return _timed([lambda m=m: rt.step_into(m, st) for m in frames])

    def net(library):
        buf = library.new_state()
        f, sa = library._f("mask"), ctypes.addressof(buf)
        out = np.zeros(library.n_freq, np.float32)
        return _timed([lambda m=m: f(sa, m.ctypes.data, out.ctypes.data) for m in frames])

    def numba_hop():
        s = Streamer(rt, record_gates=False)
        return _timed([lambda h=h: s.feed(h) for h in hops])

    def c_hop():
        buf = lib.new_state()
        f, sa = lib._f("process"), ctypes.addressof(buf)
        out = np.zeros(hop, np.float32)
        return _timed([lambda h=h: f(sa, h.ctypes.data, out.ctypes.data, hop) for h in hops])

    fns = {"numba_net": numba_net, "c_net": lambda: net(lib), "cexact_net": lambda: net(exact),
           "numba_hop": numba_hop, "c_hop": c_hop}
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(rounds):          # interleaved: a busy spell on the machine hits all alike
        for k, fn in fns.items():
            w, c = fn()
            wall[k].append(w)
            cpu[k].append(c)
    out = {f"{k}_us": min(v) for k, v in wall.items()}
    out.update({f"{k}_cpu_us": min(v) for k, v in cpu.items()})
    for what in ("net", "hop"):
        out[f"{what}_ratio"] = out[f"c_{what}_us"] / out[f"numba_{what}_us"]
        out[f"{what}_cpu_ratio"] = out[f"c_{what}_cpu_us"] / out[f"numba_{what}_cpu_us"]
    out["exact_net_ratio"] = out["cexact_net_us"] / out["numba_net_us"]
    out["exact_net_cpu_ratio"] = out["cexact_net_cpu_us"] / out["numba_net_cpu_us"]
    out["flags"] = " ".join(HOST_FAST)
    out["exact_flags"] = " ".join(HOST_EXACT) + " (-ffp-contract=off)"
    return out


def _timed(calls) -> tuple[float, float]:
    """(median wall µs per call, CPU µs per call over the whole pass): the CPU time of the
    process, which a neighbour preempting us on a shared machine does not inflate."""
    times = np.empty(len(calls))
    c0 = time.process_time()
    for i, fn in enumerate(calls):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    cpu = (time.process_time() - c0) / max(len(calls), 1)
    return float(np.median(times)) * 1e6, cpu * 1e6


# -- int8 against fp32 ----------------------------------------------------------------------------
def int8_quality(fp32: HostLibrary, int8: HostLibrary, files: int) -> dict:
    """Gate disagreement and output SNR int8 vs fp32 on realdev noisy files, and PESQ-WB of both
    against clean (meaningful only for a trained model)."""
    from dyncp.audio import load_audio
    from dyncp.metrics import pesq_score

    if not (REALDEV / "noisy").is_dir():
        return {}
    names = sorted((REALDEV / "noisy").glob("*.wav"))[:files]
    flips = decisions = 0
    snr, p32, p8 = [], [], []
    for f in names:
        x = load_audio(f, 16000)
        clean = load_audio(REALDEV / "clean" / f.name, 16000)
        y32, g32 = fp32.run(x)
        y8, g8 = int8.run(x)
        flips += int((g32 != g8).sum())
        decisions += g32.size
        snr.append(10 * np.log10(np.sum(y32.astype(np.float64) ** 2)
                                 / max(np.sum((y8 - y32).astype(np.float64) ** 2), 1e-30)))
        p32.append(pesq_score(y32, clean, 16000, "wb"))
        p8.append(pesq_score(y8, clean, 16000, "wb"))
    return {"files": len(names), "gate_flip_rate": flips / max(decisions, 1),
            "snr_db_mean": float(np.mean(snr)), "pesq_wb_fp32": float(np.mean(p32)),
            "pesq_wb_int8": float(np.mean(p8)),
            "pesq_wb_diff": float(np.mean(p8) - np.mean(p32))}


# -- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures to this JSON file")
    ap.add_argument("--hops", type=int, default=250, help="hops streamed on each qemu run")
    ap.add_argument("--m7", action="store_true", help="also run the Cortex-M7 (mps2-an500)")
    ap.add_argument("--model75", help="checkpoint or shipped name for the Φ 0.75 rows")
    ap.add_argument("--model50", help="checkpoint or shipped name for the Φ 0.5 rows")
    ap.add_argument("--rounds", type=int, default=5, help="host timing rounds")
    ap.add_argument("--pesq-files", type=int, default=5, help="realdev files for int8 vs fp32")
    ap.add_argument("--keep", help="keep the exported libraries and builds in this folder")
    args = ap.parse_args(argv)
    need_tools()
    torch.set_num_threads(1)
    cfg = load_config(ROOT / "configs/paper.toml")
    wav, source = bench_audio(cfg, 20.0)
    x = wav[: args.hops * cfg.stft.hop]
    nets, how = models(args, x)
    cfg = nets["sparse75"].cfg
    hop, sr = cfg.stft.hop, cfg.stft.sample_rate
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dyncp-mcu-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = f"mix:{TRAINPACK / 'speech'},{TRAINPACK / 'noise'}"
    calib = calibration_audio(spec, cfg, 16) if TRAINPACK.is_dir() else [wav]
    print(f"audio: {source}; {args.hops} hops ({args.hops * hop / sr:.1f} s) per run\n"
          f"models: {how}")

    libs = {}
    for name, model in nets.items():
        for variant in ("fp32", "int8"):
            folder = work / f"{name}_{variant}"
            export_c(model, folder, variant, calib=calib, check=False)
            libs[(name, variant)] = folder
    rows = []
    cpus = ["M4"] + (["M7"] if args.m7 else [])
    n_gates = cfg.model.n_blocks * cfg.model.hidden
    for cpu in cpus:
        for variant in ("fp32", "int8"):
            for name, dense in (("dense", True), ("sparse50", False), ("sparse75", False)):
                folder = libs[("sparse75" if dense else name, variant)]
                bdir = work / f"build_{cpu}_{name}_{variant}"
                bdir.mkdir(exist_ok=True)
                elf, size = cross_build(folder, bdir, cpu, dense)
                q = run_qemu(elf, bdir, cpu, x, n_gates)
                host = HostLibrary(folder, flags=["-DDYNCP_DENSE=1"] if dense else [],
                                   build=bdir / "host.so")
                h_out, h_gates = host_run(host, x)
                phi = 0.0 if dense else 1.0 - float(q["gates"][1:].mean())
                rows.append({
                    "cpu": cpu, "variant": variant, "name": name, "phi": phi,
                    "insns_mean": float(q["insns"].mean()), "insns_max": float(q["insns"].max()),
                    "insns_median": float(np.median(q["insns"])),
                    "flash_bytes": size["text"] + size["data"],
                    "lib_static_ram_bytes": size["data"] + size["bss"],
                    "state_bytes": q["state_bytes"], "stack_bytes": q["stack_bytes"],
                    "ram_bytes": q["state_bytes"] + q["stack_bytes"],
                    "mhz_16ms_mean": q["insns"].mean() * sr / hop / 1e6,
                    "mhz_16ms_max": q["insns"].max() * sr / hop / 1e6,
                    "equal_host_max_abs": float(np.abs(q["out"] - h_out).max()),
                    "bit_exact_host": bool(np.array_equal(q["out"].view(np.uint32),
                                                          h_out.view(np.uint32))),
                    "gates_equal_host": bool(np.array_equal(q["gates"], h_gates)),
                    "qemu_seconds": q["qemu_seconds"], "insns_per_tick": q["insns_per_tick"]})
                print(f"  {cpu} {name:8s} {variant}: {rows[-1]['insns_mean']:,.0f} insns/hop, "
                      f"qemu {q['qemu_seconds']:.1f} s", flush=True)
    for r in rows:
        d = next(o for o in rows if o["cpu"] == r["cpu"] and o["variant"] == r["variant"]
                 and o["name"] == "dense")
        r["vs_dense"] = r["insns_mean"] / d["insns_mean"]

    mags = mags_of(wav, cfg)
    speed = host_speed(nets["sparse75"], libs[("sparse75", "fp32")], mags, wav, work, args.rounds)
    q8 = int8_quality(HostLibrary(libs[("sparse75", "fp32")], build=work / "q32.so"),
                      HostLibrary(libs[("sparse75", "int8")], build=work / "q8.so"),
                      args.pesq_files)
    m4 = {(r["name"], r["variant"]): r for r in rows if r["cpu"] == "M4"}
    i8 = m4[("sparse75", "int8")]
    checks = {
        "sparse75_vs_dense": all(m4[("sparse75", v)]["vs_dense"] <= GOALS["sparse75_vs_dense"]
                                 for v in ("fp32", "int8")),
        "int8_flash": i8["flash_bytes"] <= GOALS["int8_flash_bytes"],
        "int8_ram": i8["ram_bytes"] <= GOALS["int8_ram_bytes"],
        "host_vs_numba": speed["net_cpu_ratio"] <= GOALS["host_vs_numba"],
        "qemu_equals_host": all(r["gates_equal_host"] and r["equal_host_max_abs"] < 1e-6
                                for r in rows)}

    print(f"\n{'cpu':3s} {'variant':13s} {'Φ':>5s} {'insns/hop':>11s} {'max':>11s} "
          f"{'vs dense':>8s} {'MHz@16ms':>8s} {'flash KB':>9s} {'state KB':>8s} {'stack B':>7s} "
          f"{'RAM KB':>7s} {'= host':>6s}")
    for r in rows:
        same = "bits" if r["bit_exact_host"] else f"{r['equal_host_max_abs']:.0e}"
        print(f"{r['cpu']:3s} {r['name'] + ' ' + r['variant']:13s} {r['phi']:5.2f} "
              f"{r['insns_mean']:11,.0f} {r['insns_max']:11,.0f} {r['vs_dense']:8.2f} "
              f"{r['mhz_16ms_max']:8.1f} {r['flash_bytes'] / 1024:9.1f} "
              f"{r['state_bytes'] / 1024:8.1f} {r['stack_bytes']:7d} {r['ram_bytes'] / 1024:7.1f} "
              f"{same:>6s}")
    print("instructions per hop (qemu -icount, SysTick) are a proxy for cycles; MHz@16ms = the "
          "clock at which the slowest hop fits its 16 ms at 1 instruction/cycle")
    print(f"\nhost (1 thread, {speed['flags']}), C library vs numba, CPU µs per frame (median "
          f"wall µs per call):\n  network   {speed['c_net_cpu_us']:.1f} vs sparse kernel "
          f"{speed['numba_net_cpu_us']:.1f} -> {speed['net_cpu_ratio']:.2f}x "
          f"({speed['c_net_us']:.1f} vs {speed['numba_net_us']:.1f} -> {speed['net_ratio']:.2f}x)"
          f"\n  network, bit-exact build (no FMA) {speed['cexact_net_cpu_us']:.1f} -> "
          f"{speed['exact_net_cpu_ratio']:.2f}x ({speed['exact_net_ratio']:.2f}x wall)"
          f"\n  whole hop {speed['c_hop_cpu_us']:.1f} vs Streamer.feed "
          f"{speed['numba_hop_cpu_us']:.1f} -> {speed['hop_cpu_ratio']:.2f}x "
          f"({speed['c_hop_us']:.1f} vs {speed['numba_hop_us']:.1f} -> {speed['hop_ratio']:.2f}x)")
    if q8:
        print(f"int8 vs fp32 on {q8['files']} realdev files: gate decisions differ "
              f"{100 * q8['gate_flip_rate']:.2f} %, output SNR {q8['snr_db_mean']:.1f} dB, PESQ-WB "
              f"{q8['pesq_wb_int8']:.3f} vs {q8['pesq_wb_fp32']:.3f} ({q8['pesq_wb_diff']:+.3f})")
    for k, ok in checks.items():
        print(f"goal {k:18s} {'OK' if ok else 'MISSED'}")
    version = lambda tool: subprocess.run([tool, "--version"], capture_output=True,  # noqa
                                          text=True).stdout.split("\n")[0]
    from machine import describe
    out = {"machine": describe(), "rows": rows, "host_speed": speed, "int8_vs_fp32": q8,
           "goals": GOALS, "goals_met": checks, "audio": source, "models": how, "hops": args.hops,
           "arm_flags": ARM_FLAGS, "qemu": version("qemu-system-arm"),
           "gcc": version("arm-none-eabi-gcc")}
    if args.json:
        write_json(args.json, out)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

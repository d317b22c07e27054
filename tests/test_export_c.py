"""C export (issue 14): the compiled library equals the sparse Streamer, gates included; int8 stays
close; errors are codes, not crashes; no mutable globals.

Each exported library is compiled once per module (``cc``, ctypes). The paper-size tests stream a
real-speech realdev file and skip when ../shared is absent.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import randomize_model
from dyncp.config import load_config
from dyncp.errors import DyncpError
from dyncp.export_c import HostLibrary, calibration_audio, export_c, probe_signal
from dyncp.model import ConvFSENet
from dyncp.streaming import Streamer

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REALDEV, TRAINPACK = SHARED / "realdev", SHARED / "trainpack"
TINY_CASES = {"gated": [], "floor": ["gate.min_active=20"], "static": ["gate.enabled=false"],
              "compress": ["model.feature_compress=0.3", "model.dilations=[1, 3]",
                           "model.kernel=5"],
              "log": ["model.feature_compress=0"]}
OK, ERR_NULL, ERR_LENGTH, ERR_MEMORY, ERR_STATE, ERR_VALUE, ERR_BUDGET = 0, -1, -2, -3, -4, -5, -6


def tiny(overrides: list[str], seed: int = 0) -> ConvFSENet:
    torch.manual_seed(seed)
    return randomize_model(ConvFSENet(load_config("configs/tiny.toml", overrides)), seed)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """``build(name, model, variant="fp32", calib=None, flags=(), prefix="dyncp")`` ->
    HostLibrary, exported and compiled once per module and name."""
    root, cache = tmp_path_factory.mktemp("export_c"), {}

    def make(name, model, variant="fp32", calib=None, flags=(), prefix="dyncp"):
        if name not in cache:
            export_c(model, root / name, variant, calib=calib, prefix=prefix, check=False)
            cache[name] = HostLibrary(root / name, prefix, flags=flags,
                                      build=root / f"{name}.so")
        return cache[name]
    return make


def stream(model, wav):
    s = Streamer(model, "sparse")
    return s.process(wav), s.gates


# -- tiny models: every code path, no data needed -------------------------------------------------
@pytest.mark.parametrize("case", list(TINY_CASES))
def test_fp32_equals_sparse_streamer(build, case):
    model = tiny(TINY_CASES[case])
    lib = build(case, model)
    wav = probe_signal(16000, 3.0)[: 47 * 64]            # whole hops: both give every sample
    ref, ref_gates = stream(model, wav)
    out, gates = lib.run(wav)
    assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-4
    assert gates.shape[-1] == 48
    if model.gated:
        assert np.array_equal(gates, ref_gates)
        assert 0 < gates.mean() < 1                     # the gates really switch
        n_on = gates.sum(axis=1)                        # [blocks, frames]
        if case == "floor":
            assert n_on.min() >= 20 and (n_on == 20).any()   # the floor did bind
    else:
        assert gates.all()                              # static: every channel computed


def test_mask_entry_equals_runtime(build):
    from dyncp.runtime import SparseRuntime

    model = tiny(TINY_CASES["gated"])
    lib, rt = build("gated", model), SparseRuntime(model, "sparse")
    st = lib.new_state()
    rng = np.random.default_rng(1)
    for t in range(60):
        mag = (rng.random(lib.n_freq) ** 3 * (4 if t % 9 else 1e-3)).astype(np.float32)
        mask, rc = lib.mask(st, mag)
        ref, g = rt.step(mag)
        assert rc == OK and np.abs(mask - ref).max() < 1e-5
        assert np.array_equal(lib.gates(st)[0], g) and lib.gates(st)[1] == g.sum()


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_budget_model_follows_torch_step(build, variant):
    """A budget model (gate.budget): dyncp_set_budget moves the gates as model.step(phi) does,
    Φ = 0 runs every channel, and switching back finds the pooling history intact."""
    model = tiny(["gate.budget=true"])
    with torch.no_grad():
        for blk in model.blocks:
            blk.gate.budget_slope.uniform_(-1.0, 1.0)
        model.budget_table[1].copy_(model.budget_table[0] * 0.8 + 0.05)   # a calibrated table
    lib = build(f"budget_{variant}", model, variant,
                calib=[probe_signal(16000, 4.0, seed=3)])
    st, state = lib.new_state(), model.initial_state(1)
    rng = np.random.default_rng(2)
    flips = decisions = 0
    for t, phi in enumerate([None] * 15 + [0.3] * 15 + [0.0] * 15 + [0.7] * 15):
        if phi is not None:
            assert lib.set_budget(st, phi) == OK
        mag = (rng.random(lib.n_freq) ** 3 * 4).astype(np.float32)
        mask, rc = lib.mask(st, mag)
        with torch.no_grad():
            ref, g, state = model.step(torch.from_numpy(mag)[None], state, phi=phi)
        gates, n = lib.gates(st)
        ref_g = (torch.stack([x[0] for x in g]).to(torch.uint8).numpy() if g
                 else np.ones_like(gates))                        # Φ = 0: no gate, all on
        flips += int((gates != ref_g).sum())
        decisions += gates.size
        assert rc == OK and np.abs(mask - ref[0].numpy()).max() < (1e-5 if variant == "fp32"
                                                                   else 2e-2)
    assert flips == 0 if variant == "fp32" else flips < 0.01 * decisions
    for bad in (0.05, 0.9, -0.1, float("nan")):
        assert lib.set_budget(st, bad) == ERR_BUDGET
    assert build("gated", tiny(TINY_CASES["gated"])).set_budget(st, 0.5) == ERR_BUDGET


def test_dense_build_is_the_static_twin(build):
    """-DDYNCP_DENSE=1 computes every channel: the same weights with the gates taken out."""
    model = tiny(TINY_CASES["gated"])
    lib = build("dense", model, flags=["-DDYNCP_DENSE=1"])
    twin = ConvFSENet(load_config("configs/tiny.toml", ["gate.enabled=false"])).eval()
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if ".gate." not in k})
    wav = probe_signal(16000, 2.0)[: 30 * 64]
    out, gates = lib.run(wav)
    assert gates.all() and np.abs(out - stream(twin, wav)[0]).max() < 1e-4


def test_errors_are_codes(build):
    lib = build("gated", tiny(TINY_CASES["gated"]))
    hop, x = lib.hop, probe_signal(16000, 0.1)
    st = lib.new_state()
    fresh = lib.process(lib.new_state(), x[:hop])[0].copy()
    for n in (0, hop - 1, hop + 1, 10 * hop):
        out = np.full(10 * hop, 7.0, np.float32)
        _, rc = lib.process(st, np.zeros(10 * hop, np.float32), out, n=n)
        assert rc == ERR_LENGTH and (out == 7.0).all()          # nothing written
    bad = x[:hop].copy()
    bad[5] = np.nan
    out, rc = lib.process(st, bad)
    assert rc == ERR_VALUE and not out.any()
    out, rc = lib.process(st, x[:hop])                 # the state did not move
    assert rc == OK and np.array_equal(out, fresh)
    f = lib._f
    assert f("process")(None, x.ctypes.data, out.ctypes.data, hop) == ERR_NULL
    assert f("process")(ctypes.addressof(st), None, out.ctypes.data, hop) == ERR_NULL
    raw = (ctypes.c_uint64 * (lib.state_bytes // 8 + 1))()
    assert f("process")(ctypes.addressof(raw), x.ctypes.data, out.ctypes.data, hop) == ERR_STATE
    assert f("gates")(ctypes.addressof(raw), None, 0) == ERR_STATE
    assert lib.init(ctypes.addressof(raw), lib.state_bytes - 1) == ERR_MEMORY
    assert lib.init(ctypes.addressof(raw) + 2, lib.state_bytes) == ERR_MEMORY
    assert lib.init(None, lib.state_bytes) == ERR_NULL
    g = np.zeros(10, np.uint8)
    assert f("gates")(ctypes.addressof(st), g.ctypes.data, g.size) == ERR_LENGTH


def test_library_has_no_mutable_globals(build, tmp_path):
    """Weights const, state in caller memory: the objects have no .data/.bss symbols, call no
    malloc or stdio, and the state fits DYNCP_STATE_BYTES."""
    lib = build("gated", tiny(TINY_CASES["gated"]))
    objs = []
    for src in ("dyncp.c", "dyncp_net.c", "dyncp_weights.c"):
        obj = tmp_path / (src + ".o")
        subprocess.run(["cc", "-std=c99", "-O2", "-c", str(lib.folder / src), "-o", str(obj)],
                       check=True)
        objs.append(str(obj))
    nm = subprocess.run(["nm", *objs], capture_output=True, text=True, check=True).stdout
    symbols = [line.split() for line in nm.splitlines()]
    assert not [s for s in symbols if len(s) == 3 and s[1] in "dDbBcC"], nm   # data, bss, common
    undefined = {s.split()[-1] for s in nm.splitlines() if s.split()[:1] == ["U"]}
    assert undefined - {"sqrtf", "fabsf", "memcpy", "memset"} <= {
        n for n in undefined if n.startswith("dyncp_")}, undefined
    v = {k: int(x) for k, x in [line.split()[1:3] for line in (lib.folder / "dyncp.h")
         .read_text().splitlines() if line.startswith("#define DYNCP_STATE_BYTES")]}
    assert lib.state_bytes <= v["DYNCP_STATE_BYTES"] < lib.state_bytes + 8


def test_prefix_renames_everything(build):
    model = tiny(TINY_CASES["gated"])
    lib = build("prefixed", model, prefix="nc")
    assert sorted(p.name for p in lib.folder.iterdir() if p.suffix in (".c", ".h")) == [
        "nc.c", "nc.h", "nc_internal.h", "nc_model.h", "nc_net.c", "nc_weights.c"]
    text = "".join(p.read_text() for p in lib.folder.iterdir() if p.suffix in (".c", ".h", ".md"))
    assert "dyncp_" not in text and "DYNCP_" not in text
    wav = probe_signal(16000, 1.0)[: 16 * 64]
    assert np.array_equal(lib.run(wav)[0], build("gated", model).run(wav)[0])


@pytest.mark.parametrize("case", list(TINY_CASES))
def test_int8_tiny_close_to_fp32(build, case):
    model = tiny(TINY_CASES[case])
    wav = probe_signal(16000, 3.0)[: 47 * 64]
    lib8 = build(f"int8_{case}", model, "int8", calib=[probe_signal(16000, 4.0, seed=3)])
    out, gates = lib8.run(wav)
    ref, ref_gates = stream(model, wav)
    snr = 10 * np.log10(np.sum(ref ** 2) / np.sum((out - ref) ** 2))
    flips = (gates != ref_gates).mean() if model.gated else 0.0
    assert snr > 45 and flips < 0.01, (snr, flips)


def test_export_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(DyncpError, match="calibration"):
        export_c(tiny([]), tmp_path / "x", "int8")
    with pytest.raises(DyncpError, match="power of two"):
        export_c(tiny(["stft.n_fft=96", "stft.hop=48"]), tmp_path / "y")
    with pytest.raises(DyncpError, match="variant"):
        export_c(tiny([]), tmp_path / "z", "int4")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_export_c(tmp_path):
    from dyncp.checkpoint import save_model
    from dyncp.cli import main

    save_model(tiny([]), tmp_path / "m.pt")
    assert main(["export", "--format", "c", "-c", str(tmp_path / "m.pt"), "-o",
                 str(tmp_path / "lib")]) == 0
    readme = (tmp_path / "lib" / "README.md").read_text()
    assert "dyncp_process(st, buf, buf, DYNCP_HOP)" in readme and "@" not in readme
    assert main(["export", "--format", "c", "--variant", "int8", "-c",
                 str(tmp_path / "m.pt"), "-o", str(tmp_path / "lib8")]) == 2   # needs --calib


# -- the paper-size model on real speech ----------------------------------------------------------
def paper_model(cal_wavs: list[np.ndarray], target: float = 0.75, seed: int = 0) -> ConvFSENet:
    """Paper config, random weights, gates that switch like trained ones: score weights
    U(-0.5, 0.5), each channel's bias at its ``target`` quantile on calibration audio."""
    from dyncp.dsp import stft

    torch.manual_seed(seed)
    model = ConvFSENet(load_config("configs/paper.toml")).eval()
    g = torch.Generator().manual_seed(seed)
    mag = stft(torch.from_numpy(np.concatenate(cal_wavs)), model.cfg.stft).abs().unsqueeze(0)
    with torch.no_grad():
        h = torch.relu(model.front(model._features(mag)))
        for blk in model.blocks:
            w = blk.gate.score2.weight
            w.copy_(torch.rand(w.shape, generator=g) - 0.5)
            blk.gate.score2.bias -= torch.quantile(blk.gate.scores(h)[0], target, dim=1)
            h, _ = blk(h)
    return model


@pytest.fixture(scope="module")
def realdev_case():
    if not (REALDEV / "noisy").is_dir() or not TRAINPACK.is_dir():
        pytest.skip("../shared/data (realdev, trainpack) is absent")
    from dyncp.audio import load_audio

    cfg = load_config("configs/paper.toml")
    cal = calibration_audio(f"mix:{TRAINPACK / 'speech'},{TRAINPACK / 'noise'}", cfg, 16)
    wav = load_audio(REALDEV / "noisy" / "d_mix_009.wav", 16000)     # 9.6 s, the longest
    return paper_model(cal[:6]), cal, wav[: wav.size // 256 * 256]


def test_paper_fp32_equals_sparse_streamer_on_real_speech(build, realdev_case):
    model, _, wav = realdev_case
    lib = build("paper", model)
    ref, ref_gates = stream(model, wav)
    out, gates = lib.run(wav)
    assert gates.shape[-1] >= 500
    phi = 1 - gates.mean()
    assert 0.5 < phi < 0.9 and 0 < gates.mean(axis=-1).mean() < 1
    bad = np.argwhere(gates != ref_gates)
    assert bad.size == 0, f"gates differ first at (block, channel, frame) {bad[0]}"
    assert np.abs(out - ref).max() < 1e-4


def test_paper_int8_gates_and_output(build, realdev_case):
    """int8 (calibrated on trainpack) against fp32 on real speech: few gate decisions differ."""
    model, cal, wav = realdev_case
    out8, g8 = build("paper8", model, "int8", calib=cal).run(wav)
    out, g = build("paper", model).run(wav)
    flips = (g8 != g).mean()
    snr = 10 * np.log10(np.sum(out.astype(np.float64) ** 2) / np.sum((out8 - out) ** 2))
    assert flips < 0.03 and snr > 33, (flips, snr)      # measured: 1.3 %, 41.5 dB


def test_int8_pesq_within_005_of_fp32_shipped(build):
    """The shipped dyncp75 model, int8 vs fp32, PESQ-WB on 5 realdev files."""
    from dyncp.audio import load_audio
    from dyncp.checkpoint import load_model
    from dyncp.errors import CheckpointError
    from dyncp.metrics import pesq_score

    if not (REALDEV / "noisy").is_dir() or not TRAINPACK.is_dir():
        pytest.skip("../shared/data (realdev, trainpack) is absent")
    try:
        model, _ = load_model("dyncp75")
    except CheckpointError:
        pytest.skip("no shipped dyncp75 model yet (dyncp/weights/dyncp75.pt): PESQ of a random "
                    "model says nothing")
    cal = calibration_audio(f"mix:{TRAINPACK / 'speech'},{TRAINPACK / 'noise'}", model.cfg, 16)
    lib, lib8 = build("ship", model), build("ship8", model, "int8", calib=cal)
    d = []
    for f in sorted((REALDEV / "noisy").glob("*.wav"))[:5]:
        x, clean = load_audio(f, 16000), load_audio(REALDEV / "clean" / f.name, 16000)
        d.append(pesq_score(lib8.run(x, gates=False)[0], clean, 16000, "wb")
                 - pesq_score(lib.run(x, gates=False)[0], clean, 16000, "wb"))
    assert abs(np.mean(d)) <= 0.05, d

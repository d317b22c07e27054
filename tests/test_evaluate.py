"""dyncp.evaluate: metric rows, the noisy reference row, MACs and gate statistics (issue 4)."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dyncp.checkpoint import save_model
from dyncp.cli import main
from dyncp.config import load_config
from dyncp.evaluate import METRIC_KEYS, evaluate, format_table
from dyncp.macs import (fixed_macs_per_frame, gate_macs_per_frame, per_channel_macs,
                        static_macs_per_frame)
from dyncp.model import build_model

ROOT = Path(__file__).resolve().parent.parent
SR = 16000


@dataclass
class _Pair:
    name: str
    noisy: np.ndarray
    clean: np.ndarray


def _speechlike(seed: int, seconds: float, silent_head: float = 0.0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal (PESQ's VAD accepts it), optionally with
    ``silent_head`` seconds of silence first."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 120 + 40 * rng.random() + 15 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum((0.6 / k) * np.sin(k * phase + rng.random() * 6) for k in range(1, 12))
    env = 0.1 + 0.9 * np.clip(np.sin(2 * np.pi * 3.5 * t + rng.random()), 0, None) ** 0.5
    x = 0.2 * x * env
    x[: int(silent_head * SR)] = 0.0
    return x.astype(np.float32)


def _pairs(n: int = 3, snr_db: float = 5.0, silent_head: float = 0.0) -> list[_Pair]:
    out = []
    for i in range(n):
        clean = _speechlike(i, 2.0 + 0.5 * i, silent_head)
        noise = np.random.default_rng(100 + i).standard_normal(clean.size).astype(np.float32)
        noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
        out.append(_Pair(f"p{i}.wav", (clean + noise).astype(np.float32), clean))
    return out


def _model(gated: bool = True, bias: float = 0.0):
    cfg = load_config(ROOT / "configs/tiny.toml",
                      [f"gate.enabled={'true' if gated else 'false'}", "gate.init_scale=1.0",
                       f"gate.init_bias={bias}"])
    torch.manual_seed(0)
    return build_model(cfg).eval()


@pytest.fixture(scope="module")
def gated_result():
    pairs = _pairs(3)
    model = _model(gated=True)
    return model, pairs, evaluate(model, pairs, progress=False)


def test_keys_and_noisy_row(gated_result):
    from dyncp.metrics import score

    model, pairs, res = gated_result
    assert set(res) >= {"mean", "files", "noisy"}
    m = res["mean"]
    for k in METRIC_KEYS + ("static_macs_per_frame", "dynamic_macs_per_frame",
                            "dynamic_mmac_per_s", "pruning_ratio", "pruning_ratio_per_block",
                            "pruning_ratio_frame_std", "channels_never_on",
                            "channels_always_on", "pruning_ratio_speech",
                            "pruning_ratio_nonspeech"):
        assert k in m, k
    assert m["gated"] is True and m["n_files"] == 3
    assert [f["name"] for f in res["files"]] == ["p0.wav", "p1.wav", "p2.wav"]
    # the noisy row is the plain metric of the noisy input, averaged over files
    direct = [score(p.noisy, p.clean, sr=SR) for p in pairs]
    for k in METRIC_KEYS:
        vals = [d[k] for d in direct if d[k] is not None and np.isfinite(d[k])]
        if vals:
            assert res["noisy"][k] == pytest.approx(float(np.mean(vals)), rel=1e-6, abs=1e-9), k
    # per-file enhanced rows agree with a direct score of the enhanced signal
    from dyncp.enhance import enhance
    est = enhance(model, pairs[1].noisy, SR)
    assert res["files"][1]["si_sdr"] == pytest.approx(score(est, pairs[1].clean)["si_sdr"],
                                                      abs=1e-3)
    json.dumps(res, allow_nan=False)   # strict JSON: NaN became None


def test_gate_statistics_and_macs(gated_result):
    model, pairs, res = gated_result
    cfg, m = model.cfg, res["mean"]
    assert 0.0 < m["pruning_ratio"] < 1.0        # random gates: some on, some off
    pb = m["pruning_ratio_per_block"]
    assert len(pb) == cfg.model.n_blocks and all(0.0 <= x <= 1.0 for x in pb)
    # Φ overall = mean of the per-block ratios (every block sees the same frames)
    assert m["pruning_ratio"] == pytest.approx(float(np.mean(pb)), abs=1e-9)
    # dynamic MACs follow from Φ: fixed + gates + active channels x per-channel MACs
    n_gated = cfg.model.hidden * cfg.model.n_blocks
    expect = (fixed_macs_per_frame(cfg) + gate_macs_per_frame(cfg)
              + (1 - m["pruning_ratio"]) * n_gated * per_channel_macs(cfg))
    assert m["dynamic_macs_per_frame"] == pytest.approx(expect, rel=1e-9)
    assert m["static_macs_per_frame"] == static_macs_per_frame(cfg)
    assert m["dynamic_mmac_per_s"] == pytest.approx(
        m["dynamic_macs_per_frame"] * cfg.stft.frames_per_second / 1e6)
    assert 0.0 <= m["channels_never_on"] <= 1.0 and 0.0 <= m["channels_always_on"] <= 1.0
    assert m["channels_never_on"] + m["channels_always_on"] <= 1.0
    assert m["pruning_ratio_frame_std"] >= 0.0
    # per-file ratios, weighted by frames, give the overall ratio
    frames = [cfg.stft.sample_rate * f["seconds"] // cfg.stft.hop + 1 for f in res["files"]]
    assert np.average([f["pruning_ratio"] for f in res["files"]], weights=frames) == \
        pytest.approx(m["pruning_ratio"], abs=1e-6)
    assert "pruning ratio" in format_table(res)
    # with groups (a dev set's manifest), a gated model's table gives Φ per group
    res["by"] = {"snr_db": {"-5": {"n": 1, "pesq_wb": 1.2, "pruning_ratio": 0.61},
                            "15": {"n": 1, "pesq_wb": 2.2, "pruning_ratio": 0.74}}}
    table = format_table(res)
    assert "PESQ-WB and Φ by SNR (dB):" in table and "Φ 0.610" in table and "Φ 0.740" in table
    res["by"]["snr_db"] = {k: {"n": 1, "pesq_wb": 1.0} for k in ("0", "5")}
    assert "PESQ-WB by SNR (dB):" in format_table(res) and "Φ 1.000" not in format_table(res)


def test_static_model_dynamic_equals_static():
    model = _model(gated=False)
    res = evaluate(model, _pairs(2), progress=False)
    m = res["mean"]
    assert m["gated"] is False
    assert m["dynamic_macs_per_frame"] == m["static_macs_per_frame"] == \
        static_macs_per_frame(model.cfg)
    assert m["pruning_ratio"] == 0.0 and m["macs_saved_fraction"] == 0.0
    assert m["pruning_ratio_per_block"] == [0.0] * model.cfg.model.n_blocks
    assert "static model" in format_table(res)


def test_closed_gates_and_speech_split():
    """Gates shut everywhere (bias -50): Φ = 1, every channel never on, only the fixed and gate
    MACs remain; a 1 s silent head gives non-speech frames."""
    model = _model(gated=True, bias=-50.0)
    res = evaluate(model, _pairs(2, silent_head=1.0), progress=False)
    m, cfg = res["mean"], model.cfg
    assert m["pruning_ratio"] == 1.0 and m["channels_never_on"] == 1.0
    assert m["channels_always_on"] == 0.0 and m["pruning_ratio_frame_std"] == 0.0
    assert m["dynamic_macs_per_frame"] == fixed_macs_per_frame(cfg) + gate_macs_per_frame(cfg)
    assert m["pruning_ratio_speech"] == 1.0 and m["pruning_ratio_nonspeech"] == 1.0
    # 1 s of 2.0 and 2.5 s is silent (the frames straddling the edge count as speech)
    assert 0.45 < m["speech_frame_fraction"] < 0.65


def _write_pairs(root: Path, pairs) -> Path:
    for sub in ("noisy", "clean"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for p in pairs:
        sf.write(root / "noisy" / p.name, p.noisy, SR, subtype="FLOAT")
        sf.write(root / "clean" / p.name, p.clean, SR, subtype="FLOAT")
    return root


def test_cli_evaluate_json_and_bad_inputs(tmp_path, capsys):
    model = _model(gated=True)
    ckpt = save_model(model, tmp_path / "m.pt")
    data = _write_pairs(tmp_path / "pairs", _pairs(2))
    out = tmp_path / "res" / "eval.json"
    assert main(["evaluate", "-c", str(ckpt), "--data", f"pairs:{data}", "--json", str(out),
                 "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["mean"]["n_files"] == 2 and len(res["files"]) == 2
    assert res["noisy"]["si_sdr"] == pytest.approx(5.0, abs=0.3)   # mixed at 5 dB SNR
    assert "dynamic MACs/frame" in capsys.readouterr().out

    bad_ckpt = tmp_path / "not_a_checkpoint.pt"
    bad_ckpt.write_bytes(b"hello")
    cases = [["-c", str(bad_ckpt), "--data", str(data)],
             ["-c", str(ckpt), "--data", str(tmp_path / "missing")]]
    unpaired = _write_pairs(tmp_path / "unpaired", _pairs(2))
    (unpaired / "clean" / "p1.wav").unlink()
    cases.append(["-c", str(ckpt), "--data", f"pairs:{unpaired}"])
    for args in cases:
        bad_out = tmp_path / "bad.json"
        assert main(["evaluate", *args, "--json", str(bad_out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("dyncp evaluate: error:") and "\n" not in err, err
        assert not bad_out.exists()


# -- issue 15 --------------------------------------------------------------------------------------
def test_validation_and_evaluation_share_the_frame_weighted_phi():
    """Φ over a set is frame-weighted, and training's validation reports the very number that
    evaluation does (dyncp.macs.PhiMeter), not a mean over files."""
    from conftest import randomize_model
    from dyncp.macs import PhiMeter
    from dyncp.train import validate

    model = randomize_model(_model(), gate_bias=-0.3)
    p = _pairs(2)
    hush = 1e-4 * np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    pairs = [_Pair("hush.wav", hush, p[0].clean[:8000]), _Pair("long.wav", p[1].noisy, p[1].clean)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                   # short: STOI may be left out
        res = evaluate(model, pairs, progress=False)
        valid = validate(model, pairs, model.cfg, torch.device("cpu"))
    per_file = [f["pruning_ratio"] for f in res["files"]]
    assert abs(per_file[0] - per_file[1]) > 0.005         # the two weightings differ here
    meter = PhiMeter(model.cfg.model.n_blocks, model.cfg.model.hidden)
    model.eval()                                          # validate() leaves it training
    for p in pairs:
        with torch.inference_mode():
            _, gates = model(_mag(model, p.noisy))
        meter.add(gates)
    assert res["mean"]["pruning_ratio"] == pytest.approx(meter.value, abs=1e-12)
    assert abs(meter.value - float(np.mean(per_file))) > 1e-3
    assert valid["valid_phi"] == pytest.approx(res["mean"]["pruning_ratio"], abs=1e-12)


def _mag(model, wav: np.ndarray) -> torch.Tensor:
    from dyncp.dsp import stft
    return stft(torch.from_numpy(np.asarray(wav, np.float32)).unsqueeze(0), model.cfg.stft).abs()


def test_pairs_too_short_for_a_metric_are_scored_without_it_and_named(tmp_path, capsys):
    ckpt = save_model(_model(), tmp_path / "m.pt")
    ok = _pairs(1)[0]
    tiny = _Pair("tiny.wav", ok.noisy[:100], ok.clean[:100])   # pystoi raised AxisError here
    data = _write_pairs(tmp_path / "pairs", [ok, tiny])
    out = tmp_path / "eval.json"
    assert main(["evaluate", "-c", str(ckpt), "--data", str(data), "--json", str(out),
                 "--no-progress"]) == 0
    warn = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    for metric in ("PESQ-WB", "STOI", "eSTOI"):
        assert any(ln.startswith("dyncp evaluate: warning: tiny (enhanced): " + metric)
                   for ln in warn), (metric, warn)
    assert all(": tiny (" in ln for ln in warn)           # every warning names its file
    res = json.loads(out.read_text())
    row = {f["name"]: f for f in res["files"]}
    assert row["tiny"]["stoi"] is None and row["tiny"]["pesq_wb"] is None
    assert res["mean"]["stoi"] == pytest.approx(row[ok.name.removesuffix(".wav")]["stoi"])


def test_set_reads_the_data_of_a_trained_model(tmp_path, capsys):
    """--set on evaluate (and report): data.* overrides of the checkpoint's config, e.g. skip
    a bad pair instead of stopping; a model key is refused, naming it."""
    ckpt = save_model(_model(), tmp_path / "m.pt")
    data = _write_pairs(tmp_path / "pairs", _pairs(2))
    (data / "clean" / "p1.wav").unlink()
    base = ["evaluate", "-c", str(ckpt), "--data", str(data), "--no-progress"]
    assert main(base) == 2
    capsys.readouterr()
    out = tmp_path / "e.json"
    assert main(base + ["--set", "data.skip_bad=true", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["mean"]["n_files"] == 1
    capsys.readouterr()
    assert main(base + ["--set", "model.hidden=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dyncp evaluate: error: --set model.hidden=8") and "\n" not in err

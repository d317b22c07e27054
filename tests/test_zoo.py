"""Shipped models (dyncp/zoo.py): names resolve like paths, cards travel inside the file, float16
storage computes like the float32 original, and the files that do ship are good models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import dyncp
from dyncp import zoo
from dyncp.checkpoint import load_dict, load_model, save_model
from dyncp.cli import main
from dyncp.errors import CheckpointError
from dyncp.model import build_model

REALDEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "realdev"


@pytest.fixture()
def weights(tmp_path, tiny_cfg, randomize, monkeypatch):
    """A weights folder holding one shipped tiny model, installed as the package's."""
    src = save_model(randomize(build_model(tiny_cfg), seed=3), tmp_path / "run" / "best.pt",
                     {"step": 1200, "epoch": 3, "audio_hours": 21.5})
    d = tmp_path / "weights"
    zoo.ship(src, "tinyship", {"description": "a test", "training_data": "none",
                               "command": "pytest"}, weights_dir=d)
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", d)
    return d, src


def test_a_name_resolves_and_a_path_wins(weights, tmp_path):
    d, src = weights
    assert zoo.resolve("tinyship") == d / "tinyship.pt"
    assert zoo.resolve(src) == src
    model, meta = dyncp.load_model("tinyship")
    assert meta["card"]["name"] == "tinyship" and meta["step"] == 1200
    assert isinstance(model, dyncp.ConvFSENet)
    # a file of the same name in the working directory wins over the shipped one
    assert zoo.resolve(str(src)) == src


def test_training_starts_from_a_shipped_name(weights, tmp_path, monkeypatch):
    """`dyncp train --init NAME` resolves a shipped model as -c does."""
    import dyncp.train as T
    from test_train import _cfg, write_pairs

    d, _ = weights
    cfg = _cfg(write_pairs(tmp_path / "pairs", n=6, seconds=1.0))
    with pytest.raises(CheckpointError, match=r"nosuch.*shipped: tinyship"):
        T.train(cfg, tmp_path / "a", init="nosuch", progress=False)
    assert not (tmp_path / "a").exists()                      # refused before anything is written
    calls, real = [], T.init_from_checkpoint
    monkeypatch.setattr(T, "init_from_checkpoint",
                        lambda model, path: calls.append(path) or real(model, path))
    T.train(cfg, tmp_path / "b", init="tinyship", progress=False)
    assert calls == [d / "tinyship.pt"] and (tmp_path / "b" / "best.pt").is_file()


def test_unknown_name_lists_the_shipped(weights):
    with pytest.raises(CheckpointError, match=r"nosuch.*shipped: tinyship"):
        dyncp.load_model("nosuch")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        dyncp.load_model("dir/nosuch.pt")


def test_float16_storage_computes_like_the_original(weights, tiny_cfg):
    d, src = weights
    obj = load_dict(d / "tinyship.pt", "dyncp-model", 1)
    sd = obj["state_dict"]
    assert any(v.dtype == torch.float16 for v in sd.values())
    assert all(v.dtype == torch.float32 for k, v in sd.items() if "running" in k)
    a, _ = load_model(src)
    b, _ = load_model(d / "tinyship.pt")
    assert all(p.dtype == torch.float32 for p in b.parameters())
    x = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        ya, ga = dyncp.enhance_tensor(a, x)
        yb, gb = dyncp.enhance_tensor(b, x)
    assert torch.allclose(ya, yb, atol=2e-3)
    agree = np.mean([float((p == q).float().mean()) for p, q in zip(ga, gb)])
    assert agree > 0.97


def test_card_and_models_command(weights, capsys):
    d, _ = weights
    c = zoo.card("tinyship")
    assert c["name"] == "tinyship" and c["command"] == "pytest"
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed] == ["tinyship"]
    assert listed[0]["card"]["description"] == "a test"
    assert main(["models"]) == 0
    assert "tinyship" in capsys.readouterr().out
    zoo.set_card(d / "tinyship.pt", {"dev": {"pesq_wb": 2.5}})
    assert zoo.card("tinyship")["dev"] == {"pesq_wb": 2.5} and zoo.card("tinyship")["name"]


def test_models_plot_draws_the_cards_or_says_why_not(weights, tmp_path, capsys):
    d, _ = weights
    assert main(["models", "--plot", str(tmp_path / "none.png")]) != 0
    assert "no shipped model" in capsys.readouterr().err
    assert not (tmp_path / "none.png").exists()
    zoo.set_card(d / "tinyship.pt", {"dev": {"pesq_wb": 2.5, "stoi": 0.9, "si_sdr": 10.0,
                                             "mmac_per_s": 3.0, "phi": 0.5,
                                             "noisy_pesq_wb": 1.5}})
    assert main(["models", "--plot", str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ship_refuses_bad_names_and_big_files(weights, monkeypatch):
    d, src = weights
    with pytest.raises(CheckpointError, match="letters"):
        zoo.ship(src, "../evil", {}, weights_dir=d)
    monkeypatch.setattr(zoo, "MAX_FILE_BYTES", 1000)
    with pytest.raises(CheckpointError, match="limit"):
        zoo.ship(src, "big", {}, weights_dir=d)
    assert not (d / "big.pt").exists()


def test_unknown_format_version_names_both(weights, tmp_path):
    d, _ = weights
    obj = load_dict(d / "tinyship.pt", "dyncp-model", 1)
    obj["version"] = 7
    torch.save(obj, tmp_path / "v7.pt")
    with pytest.raises(CheckpointError, match=r"version 7 .*reads version 1"):
        load_model(tmp_path / "v7.pt")


def test_ship_scored_puts_dev_scores_into_the_card(weights, tmp_path):
    from test_train import write_pairs

    d, src = weights
    pairs = write_pairs(tmp_path / "dev", n=3, seconds=1.0)
    (pairs / "manifest.csv").write_text("id,noise_kind,band,snr_db\nu00,white,wide,0\n"
                                        "u01,white,narrow,5\nu02,hum,wide,5\n")
    path, c = zoo.ship_scored(src, "scored", dev=str(pairs), command="x", training_data="y",
                              weights_dir=d)
    dev = c["dev"]
    assert dev["files"] == 3 and dev["pesq_wb"] > 1.0 and 0 <= dev["phi"] <= 1
    assert dev["by"]["noise_kind"]["white"]["n"] == 2
    # a gated model's Φ per group too: the groups' files average to the whole set's Φ here
    by_snr = dev["by"]["snr_db"]
    assert all(0 <= g["pruning_ratio"] <= 1 for g in by_snr.values())
    assert (by_snr["0"]["pruning_ratio"] + 2 * by_snr["5"]["pruning_ratio"]) / 3 == \
        pytest.approx(dev["phi"], abs=0.05)
    assert c["steps"] == 1200 and c["audio_hours"] == 21.5
    # the card's figures are those of the written (float16) file
    from dyncp.evaluate import evaluate_checkpoint
    again = evaluate_checkpoint(path, str(pairs), progress=False)["mean"]
    assert again["pesq_wb"] == pytest.approx(dev["pesq_wb"], abs=1e-6)


def test_a_fine_tune_counts_every_stage_in_its_card(weights, tmp_path):
    """`dyncp train --init` records where the run began (through --resume too); the card of the
    shipped fine-tune counts that model's steps and hours as well as its own run's."""
    import dyncp.train as T
    from test_train import _cfg, write_pairs

    d, _ = weights                                   # tinyship: 1,200 steps, 21.5 h
    pairs = write_pairs(tmp_path / "pairs", n=6, seconds=1.0)
    cfg = _cfg(pairs, "train.epochs=1")
    T.train(cfg, tmp_path / "ft", init="tinyship", progress=False)
    meta = load_model(tmp_path / "ft" / "best.pt")[1]
    assert meta["init"]["name"] == "tinyship" and meta["init"]["total_steps"] == 1200
    # resumed later without --init: the start comes back from the resume state
    T.train(_cfg(pairs, "train.epochs=2"), tmp_path / "ft", resume=True, progress=False)
    meta = load_model(tmp_path / "ft" / "best.pt")[1]
    assert meta["init"]["total_audio_hours"] == 21.5 and meta["step"] > 0
    # shipped over the very model it began from: the card adds both stages
    path, c = zoo.ship_scored(tmp_path / "ft" / "best.pt", "tinyship", dev=str(pairs),
                              command="x", training_data="y", weights_dir=d)
    assert c["init"] == "tinyship" and c["steps"] == meta["step"]
    assert c["total_steps"] == 1200 + meta["step"]
    assert c["total_audio_hours"] == pytest.approx(21.5 + meta["audio_hours"])
    # and a fine-tune of that shipped file counts all three
    assert zoo.resolve("tinyship") == path
    from dyncp.checkpoint import init_record
    assert init_record("tinyship")["total_steps"] == 1200 + meta["step"]


def test_ship_takes_the_start_of_an_older_run_and_refuses_a_second(weights, tmp_path):
    d, src = weights
    from test_train import write_pairs
    pairs = write_pairs(tmp_path / "dev", n=2, seconds=1.0)
    _, c = zoo.ship_scored(src, "ft", dev=str(pairs), command="x", training_data="y",
                           weights_dir=d, init="tinyship")
    assert (c["steps"], c["total_steps"], c["init"]) == (1200, 2400, "tinyship")
    with pytest.raises(CheckpointError, match="records its start already"):
        zoo.ship_scored(d / "ft.pt", "ft2", dev=str(pairs), command="x", training_data="y",
                        weights_dir=d, init="tinyship")


def test_a_failed_ship_leaves_the_shipped_file_untouched(weights, tmp_path, monkeypatch):
    import dyncp.evaluate

    d, src = weights
    before = (d / "tinyship.pt").read_bytes()

    def broken(*a, **k):
        raise KeyboardInterrupt      # e.g. Ctrl-C while the dev set is scored
    monkeypatch.setattr(dyncp.evaluate, "evaluate_checkpoint", broken)
    with pytest.raises(KeyboardInterrupt):
        zoo.ship_scored(src, "tinyship", dev=str(tmp_path), command="x", training_data="y",
                        weights_dir=d)
    assert (d / "tinyship.pt").read_bytes() == before
    assert sorted(p.name for p in d.iterdir()) == ["tinyship.pt"]     # no staging left


def test_enhance_uses_the_default_model(weights, tmp_path, monkeypatch):
    import soundfile as sf

    from dyncp import cli

    monkeypatch.setattr(zoo, "DEFAULT_MODEL", "tinyship")
    x = (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, 16000)
    parser = cli.build_parser()
    args = parser.parse_args(["enhance", str(tmp_path / "in.wav"), "-o", str(tmp_path / "out")])
    assert args.checkpoint == "tinyship"
    assert main(["enhance", str(tmp_path / "in.wav"), "-o", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    assert (tmp_path / "out" / "in.wav").is_file()


# -- the models that ship ----------------------------------------------------------------------
SHIPPED = zoo.shipped_names()
TARGETS = {"static": 0.0, "dyncp50": 0.5, "dyncp75": 0.75}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_shipped_model(name):
    if name not in SHIPPED:
        pytest.skip(f"{name} is not shipped yet (dyncp/weights/{name}.pt)")
    path = zoo.resolve(name)
    assert path.stat().st_size <= zoo.MAX_FILE_BYTES
    torch.load(path, map_location="cpu", weights_only=True)
    c = zoo.card(name)
    for key in ("training_data", "command", "steps", "audio_hours", "dev"):
        assert c.get(key) is not None, key
    for key in ("pesq_wb", "stoi", "si_sdr", "mmac_per_s", "phi"):
        assert c["dev"].get(key) is not None, key
    assert abs(c["dev"]["phi"] - TARGETS[name]) <= 0.03
    assert sum(p.stat().st_size for p in zoo.WEIGHTS_DIR.glob("*.pt")) <= 15_000_000


FIVE = ["d_mix_002", "d_mix_006", "d_mix_013", "d_mix_024", "d_mix_030"]


@pytest.mark.skipif(not REALDEV.is_dir(), reason="shared realdev data not present")
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_shipped_model_improves_real_recordings(name, tmp_path):
    if name not in SHIPPED:
        pytest.skip(f"{name} is not shipped yet")
    from dyncp.data import Pair
    from dyncp.evaluate import evaluate
    from dyncp.audio import load_audio

    model, _ = dyncp.load_model(name)
    pairs = [Pair(n, load_audio(REALDEV / "noisy" / f"{n}.wav", 16000),
                  load_audio(REALDEV / "clean" / f"{n}.wav", 16000)) for n in FIVE]
    res = evaluate(model, pairs, progress=False)
    # five hard files (noisy PESQ-WB 1.07, SI-SDR 2.0 dB); the shipped models gave static +0.205
    # PESQ-WB / +4.66 dB, dyncp50 +0.168 / +4.46 dB, dyncp75 +0.148 / +3.56 dB (2026-12-04), a
    # model that does nothing +0 / +0
    assert res["mean"]["pesq_wb"] - res["noisy"]["pesq_wb"] >= 0.10
    assert res["mean"]["si_sdr"] - res["noisy"]["si_sdr"] >= 2.5
    card = zoo.card(name)["dev"]
    per_file = {f["name"]: f for f in res["files"]}
    assert abs(res["mean"]["pruning_ratio"] - TARGETS[name]) <= 0.03 + 0.02
    # the card's per-file figures match a fresh evaluation of the same files
    assert card["files"] == 30
    assert np.isfinite([per_file[n]["pesq_wb"] for n in FIVE]).all()


def test_a_budget_model_ships_calibrated_with_scores_per_budget(tmp_path, randomize):
    from dyncp.config import load_config
    from test_train import TINY, write_pairs

    train = write_pairs(tmp_path / "train", n=6, seconds=1.0, seed=1)
    dev = write_pairs(tmp_path / "dev", n=2, seconds=1.0, seed=2)
    cfg = load_config(TINY, ["gate.budget=true", f"data.train=pairs:{train}"])
    model = randomize(build_model(cfg), seed=5)
    src = save_model(model, tmp_path / "run" / "best.pt", {"step": 10})
    path, c = zoo.ship_scored(src, "budget", dev=str(dev), command="x", training_data="y",
                              weights_dir=tmp_path / "w")
    assert c["calibration"]["measured"] == sorted(c["calibration"]["measured"])
    assert "valid split" in c["calibration"]["data"]
    assert sorted(c["dev_by_phi"], key=float) == ["0", "0.1", "0.25", "0.5", "0.75", "0.85"]
    assert c["dev_by_phi"]["0"]["phi"] == 0.0
    # the shipped table is the calibrated one, and the temporary copy is gone
    shipped, _ = load_model(path)
    assert not torch.equal(shipped.budget_table[0], shipped.budget_table[1])
    assert not list((tmp_path / "run").glob(".*calibrated*"))

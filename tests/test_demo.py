"""`dyncp demo` end to end on a tiny setting (issue 5): results.json, report, and re-use on re-run;
the shipped models on the bundled real recordings (issue 11 item 5), or a note when none ships."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import pytest
import soundfile as sf

from dyncp import zoo
from dyncp.checkpoint import save_model
from dyncp.cli import main
from dyncp.config import load_config
from dyncp.demo import SHIPPED_FOR_DEMO, check_expectations, shipped_on_recordings
from dyncp.model import build_model

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = ROOT / "demo" / "recordings"
KEYS = {"model", "pesq_wb", "stoi", "si_sdr", "dynamic_mmac_per_s", "macs_saved_fraction",
        "pruning_ratio", "prune_target"}


@pytest.fixture()
def tiny_configs(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNCP_CACHE", str(tmp_path / "cache"))
    cfg = load_config(ROOT / "configs/tiny.toml",
                      ["train.epochs=1", "train.steps_per_epoch=2", "data.valid_files=2",
                       "data.builtin_train=12", "data.builtin_valid=4", "data.builtin_test=4"])
    dyn = tmp_path / "dyn.toml"
    dyn.write_text(cfg.to_toml())
    static = tmp_path / "static.toml"
    static.write_text(cfg.replace(gate=dataclasses.replace(cfg.gate, enabled=False)).to_toml())
    return static, dyn


@pytest.fixture()
def weights(tmp_path, tiny_cfg, randomize, monkeypatch):
    """An empty weights folder installed as the package's; ``ship(name, gated)`` puts a tiny
    randomly initialised stand-in there under a shipped model's name."""
    d = tmp_path / "weights"
    d.mkdir()
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", d)

    def ship(name: str, gated: bool = True) -> None:
        cfg = tiny_cfg.replace(gate=dataclasses.replace(tiny_cfg.gate, enabled=gated))
        src = save_model(randomize(build_model(cfg), seed=3), tmp_path / f"{name}_src.pt")
        zoo.ship(src, name, {"description": "test stand-in"}, weights_dir=d)

    return d, ship


def _real_section(report: Path) -> dict:
    """{recording name: (audio sources, image sources)} of the report's real-recordings part."""
    text = report.read_text()
    if "id='real-recordings'" not in text:
        return {}
    part = text.split("id='real-recordings'", 1)[1]
    out = {}
    for block in part.split("<div class='ex real'>")[1:]:
        name = block.split("<h3>", 1)[1].split("</h3>", 1)[0]
        out[name] = (re.findall(r"<audio [^>]*src='([^']+)'", block),
                     re.findall(r"<img src='([^']+)'", block))
    return out


@pytest.mark.slow
def test_demo_end_to_end_and_reuse(tmp_path, tiny_configs, weights, capsys):
    static, dyn = tiny_configs
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--static-config", str(static), "--dyncp-config", str(dyn),
            "--examples", "1", "--no-progress", "--recordings", str(RECORDINGS)]
    assert main(argv) == 0                               # no shipped model yet
    printed = capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in rows] == ["noisy", "static", "dyncp"]
    for r in rows:
        assert set(r) == KEYS
    assert rows[1]["macs_saved_fraction"] == pytest.approx(0.0)
    assert rows[2]["prune_target"] == 0.5 and 0.0 <= rows[2]["pruning_ratio"] <= 1.0
    assert rows[1]["prune_target"] is None
    report = out / "report" / "report.html"
    assert report.is_file()
    assert str(report.resolve()) in printed          # the demo ends with the report's path
    assert "PESQ-WB" in printed and "MACs saved" in printed
    # Without a shipped model the real-recordings section is skipped, and a note says why.
    assert "skipped: no shipped model (static, dyncp50, dyncp75)" in printed
    assert _real_section(report) == {} and "real-recordings-skipped" in report.read_text()

    # A second run reuses the finished runs and evaluations instead of starting over; with
    # shipped models present (stand-ins) the report shows them on every bundled recording.
    d, ship = weights
    ship("static", gated=False)
    ship("dyncp75")
    ckpt = out / "dyncp" / "best.pt"
    before = (ckpt.stat().st_mtime_ns, (out / "eval_dyncp.json").stat().st_mtime_ns)
    assert main(argv) == 0
    after = (ckpt.stat().st_mtime_ns, (out / "eval_dyncp.json").stat().st_mtime_ns)
    assert before == after
    assert "skipped" not in capsys.readouterr().out
    section = _real_section(report)
    names = sorted(p.stem for p in RECORDINGS.glob("*.flac"))
    assert sorted(section) == names
    for name, (audio, figs) in section.items():
        assert audio == [f"audio/real_{name}_{m}.wav" for m in ("noisy", "static", "dyncp75")]
        assert figs == [f"figures/fig1_real_{name}_dyncp75.png"]
        for src in audio + figs:
            assert (report.parent / src).stat().st_size > 1000, src


def test_real_recordings_skip_with_a_note_naming_what_is_missing(weights, tmp_path):
    d, ship = weights
    models, recs, note = shipped_on_recordings(RECORDINGS)
    assert (models, recs) == ({}, [])
    assert "no shipped model (static, dyncp50, dyncp75)" in note and str(d) in note
    ship("tinyship")                                     # a shipped name the demo does not use
    assert shipped_on_recordings(RECORDINGS)[0] == {}
    ship("dyncp50")
    models, recs, note = shipped_on_recordings(tmp_path / "nowhere")
    assert (models, recs) == ({}, []) and "no recordings" in note and "nowhere" in note


def test_real_recordings_use_the_shipped_models_present(weights):
    d, ship = weights
    ship("dyncp75")
    ship("static", gated=False)
    models, recs, note = shipped_on_recordings(RECORDINGS)
    assert list(models) == ["static", "dyncp75"]         # SHIPPED_FOR_DEMO order, present only
    assert [m.gated for m in models.values()] == [False, True]
    assert [r.name for r in recs] == sorted(p.stem for p in RECORDINGS.glob("*.flac"))
    assert all(r.note and r.wav.dtype.name == "float32" for r in recs)
    assert "static, dyncp75" in note and str(len(recs)) in note
    assert set(SHIPPED_FOR_DEMO) == {"static", "dyncp50", "dyncp75"}


def test_bundled_recordings_are_small_documented_16k_mono():
    files = sorted(RECORDINGS.glob("*.flac"))
    assert 3 <= len(files) <= 4
    assert sum(f.stat().st_size for f in files) <= 2_000_000
    with open(RECORDINGS / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    readme = (RECORDINGS / "README.md").read_text()
    for f in files:
        info = sf.info(str(f))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), f.name
        assert 3.0 <= info.duration <= 8.0, f.name
        row = rows[f.name]
        assert row["source"] and row["licence"] and row["kind"], f.name
        assert abs(float(row["seconds"]) - info.duration) < 0.01, f.name
        assert f.name in readme
    assert set(rows) == {f.name for f in files}


def test_demo_rejects_swapped_configs(tmp_path, tiny_configs, capsys):
    static, dyn = tiny_configs
    code = main(["demo", "--out", str(tmp_path / "d"), "--static-config", str(dyn),
                 "--dyncp-config", str(static), "--no-progress"])
    assert code == 2
    assert "gate.enabled" in capsys.readouterr().err


def test_demo_missing_config_names_the_file(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "d"), "--static-config",
                 str(tmp_path / "nope.toml"), "--no-progress"])
    assert code == 2
    assert "nope.toml" in capsys.readouterr().err


def test_check_expectations_flags_misses():
    rows = [{"model": "noisy", "pesq_wb": 1.5, "si_sdr": 5.0},
            {"model": "static", "pesq_wb": 2.0, "si_sdr": 9.0, "prune_target": None},
            {"model": "dyncp", "pesq_wb": 1.4, "si_sdr": 8.0, "prune_target": 0.75,
             "pruning_ratio": 0.70, "macs_saved_fraction": 0.35}]
    checks = dict(check_expectations(rows))
    verdicts = list(checks.values())
    assert verdicts == [True, True, False, True, False, False]

"""`dyncp demo` end to end on a tiny setting (issue 5): results.json, report, and re-use on re-run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dyncp.cli import main
from dyncp.config import load_config
from dyncp.demo import check_expectations

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.mark.slow
def test_demo_end_to_end_and_reuse(tmp_path, tiny_configs, capsys):
    static, dyn = tiny_configs
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--static-config", str(static), "--dyncp-config", str(dyn),
            "--examples", "1", "--no-progress"]
    assert main(argv) == 0
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

    # A second run reuses the finished runs and evaluations instead of starting over.
    ckpt = out / "dyncp" / "best.pt"
    before = (ckpt.stat().st_mtime_ns, (out / "eval_dyncp.json").stat().st_mtime_ns)
    assert main(argv) == 0
    after = (ckpt.stat().st_mtime_ns, (out / "eval_dyncp.json").stat().st_mtime_ns)
    assert before == after


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

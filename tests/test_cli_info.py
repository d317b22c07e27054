"""``dyncp info``: the paper config's numbers as JSON, in-process and through ``python -m dyncp``;
a bad ``--set`` is a one-line error naming the key, exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dyncp.checkpoint import save_model
from dyncp.cli import main
from dyncp.config import load_config
from dyncp.model import ConvFSENet, count_params

from conftest import CONFIGS, ROOT

PAPER = str(CONFIGS / "paper.toml")
# 682,497 dense parameters + 9 gates x (128*16 + 16 + 16*256 + 256)
PAPER_PARAMS = 682497 + 9 * 6416


def _check_paper(info: dict) -> None:
    assert info["params"] == PAPER_PARAMS == count_params(ConvFSENet(load_config(PAPER)))
    assert info["static_macs_per_frame"] == 662528
    assert info["gate_macs_per_frame"] == 55296
    assert info["frames_per_second"] == 62.5
    assert info["receptive_field_frames"] == 43
    assert info["latency_ms"] == 32.0
    assert info["prunable_fraction"] == pytest.approx(0.9007, abs=1e-4)
    assert info["static_mmac_per_s"] == pytest.approx(41.408)


def test_info_json(capsys):
    assert main(["info", "--config", PAPER, "--json"]) == 0
    out = capsys.readouterr().out
    _check_paper(json.loads(out))


def test_info_json_through_python_m(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "dyncp", "info", "--config", PAPER, "--json"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    _check_paper(json.loads(r.stdout))


def test_info_text_and_overrides(capsys):
    assert main(["info", "--config", PAPER, "--set", "gate.reduction=32"]) == 0
    out = capsys.readouterr().out
    assert "662,528" in out and "110,592" in out and "43 frames" in out and "32.0 ms" in out
    assert main(["info", "--config", str(CONFIGS / "static.toml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["gate_macs_per_frame"] == 0 and info["params"] == 682497


def test_info_from_checkpoint(tmp_path, capsys):
    cfg = load_config(CONFIGS / "tiny.toml")
    path = save_model(ConvFSENet(cfg), tmp_path / "tiny.pt")
    assert main(["info", "-c", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "tiny" and info["static_macs_per_frame"] == 4320
    assert info["frames_per_second"] == 250.0 and info["latency_ms"] == 8.0


@pytest.mark.parametrize("override,key", [("model.hiden=3", "model.hiden"),
                                          ("gate.surrogate=foo", "gate.surrogate"),
                                          ("loss.prune_target=1.5", "loss.prune_target")])
def test_bad_set_is_a_one_line_error(override, key, capsys):
    assert main(["info", "--config", PAPER, "--set", override, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dyncp info: error: ") and key in lines[0]


def test_missing_config_and_checkpoint(tmp_path, capsys):
    assert main(["info", "--config", str(tmp_path / "none.toml")]) == 2
    assert "none.toml" in capsys.readouterr().err
    assert main(["info", "-c", str(tmp_path / "none.pt")]) == 2
    assert "none.pt" in capsys.readouterr().err


def _parsers():
    """{command (or "data build"): its argparse parser}."""
    import argparse

    from dyncp.cli import build_parser

    out = {}

    def walk(p, prefix):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    out[f"{prefix}{name}"] = sub
                    walk(sub, f"{prefix}{name} ")
    walk(build_parser(), "")
    return out


def test_every_command_that_reads_a_config_takes_set(tmp_path, capsys):
    """README: `--set a.b=v` overrides; an unknown key or bad value is an error naming it. That
    holds on every command that builds a config (--config) or reads data through a
    checkpoint's config (--data: data.* keys); with a checkpoint's config `info` refuses --set
    rather than ignoring it."""
    parsers = _parsers()
    options = {n: {o for a in p._actions for o in a.option_strings} for n, p in parsers.items()}
    reads = [n for n, o in options.items() if "--config" in o or ("--data" in o and "-c" in o)]
    assert {"info", "train", "data build", "evaluate", "report"} <= set(reads)
    assert all("--set" in options[n] for n in reads + ["demo"]), reads
    ckpt = save_model(ConvFSENet(load_config(CONFIGS / "tiny.toml")), tmp_path / "t.pt")
    tiny = str(CONFIGS / "tiny.toml")
    cases = {"info": ["info", "--config", tiny],
             "info -c": ["info", "-c", str(ckpt)],
             "train": ["train", "--config", tiny, "--run-dir", str(tmp_path / "run")],
             "data build": ["data", "build", "--config", tiny, "--out", str(tmp_path / "d")],
             "demo": ["demo", "--out", str(tmp_path / "demo"), "--static-config", tiny,
                      "--dyncp-config", tiny],
             "evaluate": ["evaluate", "-c", str(ckpt), "--data", "builtin"],
             "report": ["report", "-c", str(ckpt), "--data", "builtin", "-o",
                        str(tmp_path / "rep")]}
    for name, args in cases.items():
        key = "data.no_such_key" if name in ("evaluate", "report") else "model.no_such_key"
        if name == "info -c":
            key = "model.hidden"
        assert main(args + ["--set", f"{key}=3"]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"dyncp {name.split()[0]}") and "error:" in err, (name, err)
        assert key in err and "\n" not in err, (name, err)
    assert not any((tmp_path / d).exists() for d in ("run", "d", "demo", "rep"))

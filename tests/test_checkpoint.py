"""Checkpoints: plain dicts, atomic writes, identical outputs after reload, and clear refusals
(wrong format/version, truncated, missing, needs pickle) that never execute code."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dyncp.checkpoint import (MODEL_FORMAT, MODEL_VERSION, load_dict, load_model, model_dict,
                              save_atomic, save_model)
from dyncp.config import Config, load_config
from dyncp.errors import CheckpointError
from dyncp.model import ConvFSENet

from conftest import CONFIGS

torch.set_num_threads(1)


def _write_marker(path: str) -> None:
    Path(path).write_text("code ran")


class Evil:
    """Unpickling this calls ``_write_marker``: proof that a loader executed code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


class Plain:
    """A harmless custom class: still needs pickle's class lookup, so it must be refused too."""

    def __init__(self) -> None:
        self.x = 1


@pytest.fixture()
def tiny_model(tiny_cfg, randomize):
    torch.manual_seed(0)
    return randomize(ConvFSENet(tiny_cfg))


def test_round_trip_gives_identical_outputs(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "sub" / "model.pt", meta={"epoch": 3, "pesq": 2.5})
    assert path == tmp_path / "sub" / "model.pt"
    model, meta = load_model(path)
    assert meta == {"epoch": 3, "pesq": 2.5}
    assert not model.training
    assert model.cfg == tiny_model.cfg
    x = torch.rand(2, tiny_model.cfg.stft.n_freq, 30) ** 3 * 4
    with torch.no_grad():
        m1, g1 = tiny_model(x)
        m2, g2 = model(x)
    assert torch.equal(m1, m2)
    assert len(g1) == len(g2) == 2 and all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert 0.0 < float(torch.stack([g.mean() for g in g1]).mean()) < 1.0
    # the file is a plain dict, readable without dyncp's classes
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "version", "config", "state_dict", "meta"}
    assert raw["format"] == MODEL_FORMAT and raw["version"] == MODEL_VERSION
    assert Config.from_dict(raw["config"]) == tiny_model.cfg


def test_static_round_trip(tmp_path):
    static = ConvFSENet(load_config(CONFIGS / "tiny.toml", ["gate.enabled=false"])).eval()
    model, meta = load_model(save_model(static, tmp_path / "s.pt"))
    assert not model.gated and meta == {}
    x = torch.rand(1, 65, 7)
    with torch.no_grad():
        assert torch.equal(static(x)[0], model(x)[0])


def test_atomic_write_leaves_no_temp_files(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "m.pt")
    save_model(tiny_model, tmp_path / "m.pt", meta={"again": True})      # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    assert load_model(tmp_path / "m.pt")[1] == {"again": True}
    # a failing write (an object torch.save cannot pickle) keeps the old file, leaves no temp
    with pytest.raises(Exception):
        save_atomic({"format": MODEL_FORMAT, "bad": lambda: None}, tmp_path / "m.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    assert load_model(tmp_path / "m.pt")[1] == {"again": True}


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path)                                            # a folder


def test_wrong_format_and_version(tiny_model, tmp_path):
    d = model_dict(tiny_model)
    save_atomic({**d, "format": "dyncp-train-state"}, tmp_path / "f.pt")
    with pytest.raises(CheckpointError, match=r"format is 'dyncp-train-state', expected "
                                              r"'dyncp-model'"):
        load_model(tmp_path / "f.pt")
    save_atomic({**d, "version": 99}, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        load_model(tmp_path / "v.pt")
    torch.save(d["state_dict"], tmp_path / "sd.pt")                      # a bare state_dict
    with pytest.raises(CheckpointError, match="format is None"):
        load_model(tmp_path / "sd.pt")
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_model(tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match="format"):
        load_dict(tmp_path / "f.pt", "other", 1)


def test_inconsistent_contents(tiny_model, tmp_path):
    d = model_dict(tiny_model)
    save_atomic({k: v for k, v in d.items() if k != "state_dict"}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        load_model(tmp_path / "a.pt")
    bad_cfg = {**d, "config": {**d["config"], "gate": {**d["config"]["gate"], "pool": 0}}}
    save_atomic(bad_cfg, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"embedded config is invalid: gate\.pool"):
        load_model(tmp_path / "b.pt")
    wider = {**d, "config": {**d["config"], "model": {**d["config"]["model"], "hidden": 48}}}
    save_atomic(wider, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_model(tmp_path / "c.pt")
    for i, bad in enumerate([{**d, "state_dict": [1, 2]}, {**d, "meta": 3},
                             {**d, "state_dict": {**d["state_dict"], "front.weight": 3}}]):
        save_atomic(bad, tmp_path / f"d{i}.pt")
        with pytest.raises(CheckpointError, match=f"d{i}.pt"):
            load_model(tmp_path / f"d{i}.pt")


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.0])
def test_truncated_file(tiny_model, tmp_path, keep):
    data = save_model(tiny_model, tmp_path / "full.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_model(cut)


def test_garbage_file(tmp_path):
    p = tmp_path / "junk.pt"
    p.write_bytes(b"\x00not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_model(p)


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_are_called_corrupt_not_pickle(tmp_path, seed):
    """Random bytes trip torch's weights-only unpickler ("Unsupported operand"): that is a
    corrupt file, not one that needs pickle, and torch's advice to turn off weights_only is
    never passed on."""
    p = tmp_path / "noise.pt"
    rng = np.random.default_rng(seed)
    p.write_bytes((b"\x80\x02" if seed % 2 else b"") + rng.bytes(4096))
    with pytest.raises(CheckpointError) as e:
        load_model(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: not a readable checkpoint") and "corrupt" in msg, msg
    assert "pickle" not in msg and "weights_only" not in msg.lower() and "\n" not in msg, msg


@pytest.mark.parametrize("how", ["top_level", "inside_dict", "legacy_pickle", "zip_plain_class"])
def test_files_that_need_pickle_are_refused_without_running_code(tiny_model, tmp_path, how):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    if how == "top_level":
        torch.save(Evil(marker), path)
    elif how == "inside_dict":
        torch.save({**model_dict(tiny_model), "meta": {"x": Evil(marker)}}, path)
    elif how == "legacy_pickle":
        path.write_bytes(pickle.dumps({"format": MODEL_FORMAT, "x": Evil(marker)}, protocol=2))
    else:
        torch.save({**model_dict(tiny_model), "meta": {"x": Plain()}}, path)
    assert not marker.exists()                          # saving only records the reduce call
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    assert not marker.exists(), "loading executed code from the checkpoint"
    msg = str(e.value)
    assert "evil.pt" in msg and "\n" not in msg
    assert "needs pickle" in msg and "nothing was executed" in msg
    assert "\x1b" not in msg and "weights_only" not in msg   # no advice on how to bypass
    assert "safe_globals" not in msg and "trusted source" not in msg
    if how == "zip_plain_class":
        assert "references test_checkpoint.Plain" in msg
    elif how != "legacy_pickle":
        assert "references test_checkpoint._write_marker" in msg
    # the same bytes through plain pickle WOULD run the code: the test's marker works
    if how == "legacy_pickle":
        pickle.loads(path.read_bytes())
        assert marker.exists()

"""benchmarks/level.py: input level against quality (the level-normalisation row of
docs/training.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dyncp import build_model, load_config, save_model
from dyncp.data.folders import Pair

from test_train import TINY, write_pairs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import level
finally:
    sys.path.pop(0)


def test_gains_and_normalisation():
    rng = np.random.default_rng(0)
    pairs = [Pair(f"p{i}", (0.01 * (i + 1) * rng.standard_normal(800)).astype(np.float32),
                  (0.005 * rng.standard_normal(800)).astype(np.float32)) for i in range(3)]
    up = level.scaled(pairs, 20.0)
    for p, q in zip(pairs, up):
        assert np.allclose(q.noisy, 10 * p.noisy) and np.allclose(q.clean, 10 * p.clean)
    norm = level.normalised(pairs, -30.0)
    assert [round(level.rms_db(p.noisy), 3) for p in norm] == [-30.0] * 3
    for p, q in zip(pairs, norm):   # the clean file moves with its noisy one
        assert np.allclose(q.clean / p.clean, q.noisy / p.noisy)
    assert pairs[0].noisy.std() == pytest.approx(0.01, rel=0.1)   # inputs untouched


def test_main_writes_a_row_per_gain(tmp_path):
    data = write_pairs(tmp_path / "pairs", n=2, seconds=1.0)
    model = build_model(load_config(TINY, ["gate.enabled=false"]))
    ckpt = save_model(model, tmp_path / "m.pt")
    out = tmp_path / "level.json"
    assert level.main(["--model", f"tiny={ckpt}", "--data", str(data), "--gains", "-20", "0",
                       "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    rows = rec["models"]["tiny"]["rows"]
    assert [r["input"] for r in rows] == ["-20 dB", "+0 dB", "norm -25 dBFS"]
    assert rows[0]["median_level_dbfs"] == pytest.approx(rows[1]["median_level_dbfs"] - 20, abs=1e-3)
    assert rows[2]["median_level_dbfs"] == pytest.approx(-25.0, abs=1e-3)
    assert all(r["pesq_wb"] > 1.0 for r in rows) and rec["models"]["tiny"]["files"] == 2
    with pytest.raises(SystemExit, match="no such folder"):
        level.main(["--model", str(ckpt), "--data", str(tmp_path / "none")])

"""benchmarks/learning_curve.py: the record behind docs/training.md's learning-curve figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dyncp.train_state import LOG_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import learning_curve
finally:
    sys.path.pop(0)


def _log(path: Path, rows: list[dict]) -> Path:
    lines = [",".join(LOG_COLUMNS)]
    for r in rows:
        lines.append(",".join(str(r.get(k, "")) for k in LOG_COLUMNS))
    path.write_text("\n".join(lines) + "\n")
    return path


def _row(epoch: int, hours: float, dev: float | str) -> dict:
    return {"epoch": epoch, "step": 100 * epoch, "lr": 1e-3, "valid_pesq_wb": 2.0,
            "audio_hours": hours, "monitor_pesq_wb": dev, "monitor_si_sdr": 9.0,
            "monitor_phi": 0.5}


def test_offset_shifts_a_continuation_and_keep_carries_earlier_curves(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _log(run / "log.csv", [_row(1, 10.0, 1.6), _row(2, 20.0, ""), _row(3, 30.0, 1.7)])
    cont = _log(tmp_path / "cont.csv", [_row(1, 5.0, 1.72)])
    first = tmp_path / "first.json"
    assert learning_curve.main([f"base={run}", "--json", str(first)]) == 0
    rows = json.loads(first.read_text())["curves"]["base"]["rows"]
    assert [(r["audio_hours"], r["dev_pesq_wb"]) for r in rows] == [(10.0, 1.6), (30.0, 1.7)]

    # the run folder is gone; its curve is carried, the continuation (a log file) shifted
    (run / "log.csv").unlink()
    second = tmp_path / "second.json"
    assert learning_curve.main([f"more={cont}", "--offset", "more=30", "--keep", str(first),
                                "--json", str(second), "--plot", str(tmp_path / "c.png")]) == 0
    curves = json.loads(second.read_text())["curves"]
    assert curves["base"]["rows"] == rows and curves["base"]["kept_from"] == str(first)
    assert [r["audio_hours"] for r in curves["more"]["rows"]] == [35.0]
    assert (tmp_path / "c.png").stat().st_size > 5_000
    for bad in (["--offset", "nobody=3"], ["--raw", "nobody"]):
        with pytest.raises(SystemExit):
            learning_curve.main([f"more={cont}", "--keep", str(first), *bad])

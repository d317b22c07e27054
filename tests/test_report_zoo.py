"""The shipped models' section of the report (dyncp/report_zoo.py): rows come from the cards, a
budget model gives one row per budget in order, a model without dev scores is left out, and the
figure and table are written."""

from __future__ import annotations

from dyncp.report_zoo import shipped_rows, shipped_section


def _models():
    def dev(p, m, phi):
        return {"set": "realdev", "pesq_wb": p, "stoi": 0.9, "si_sdr": 10.0, "mmac_per_s": m,
                "phi": phi}
    return [
        {"name": "static", "default": False, "card": {"dev": dev(1.9, 41.4, 0.0)}},
        {"name": "dyncp50", "default": True, "card": {"dev": dev(1.85, 26.2, 0.5)}},
        {"name": "budget", "default": False, "card": {
            "dev": dev(1.8, 25.0, 0.49),
            "dev_by_phi": {"0.75": dev(1.7, 17.0, 0.76), "0": dev(1.88, 41.4, 0.0),
                           "0.5": dev(1.8, 25.0, 0.49)}}},
        {"name": "untested", "default": False, "card": {}},
    ]


def test_rows_from_cards():
    rows = shipped_rows(_models())
    assert [r["model"] for r in rows] == ["static", "dyncp50", "budget", "budget", "budget"]
    budget = [r for r in rows if r["budget"]]
    assert [r["phi_request"] for r in budget] == [0.0, 0.5, 0.75]
    assert [r["mmac_per_s"] for r in budget] == [41.4, 25.0, 17.0]
    assert rows[1] == {"model": "dyncp50", "budget": False, "phi_request": None, "pesq_wb": 1.85,
                       "stoi": 0.9, "si_sdr": 10.0, "mmac_per_s": 26.2, "phi": 0.5}


def test_section_writes_figure_and_table(tmp_path):
    html = shipped_section(tmp_path, _models())
    png = tmp_path / "figures" / "shipped.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "src='figures/shipped.png'" in html and "realdev" in html
    assert html.count("<tr>") == 1 + 5                      # header + one row per point
    assert "<td data-key='pesq_wb'>1.700</td>" in html and "untested" not in html
    assert shipped_section(tmp_path / "none", [_models()[-1]]) == ""
    assert not (tmp_path / "none").exists()

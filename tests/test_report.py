"""Figures and the HTML report (issue 5): Fig. 1 panels, trade-off plot, tables == evaluation JSON,
and a real render in headless Chromium when it is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from dyncp import build_model, load_config
from dyncp.data import Pair
from dyncp.demo import load_recordings
from dyncp.evaluate import evaluate
from dyncp.report import (RESULT_COLUMNS, _fmt, build_report, channel_state_figure,
                          results_rows, tradeoff_figure)
from conftest import missing_tool

ROOT = Path(__file__).resolve().parents[1]


def _tiny(gated: bool = True):
    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs/tiny.toml",
                      [f"gate.enabled={'true' if gated else 'false'}",
                       f"name={'dyncp' if gated else 'static'}"])
    model = build_model(cfg).eval()
    if gated:  # mixed, input-dependent gates
        for b in model.blocks:
            b.gate.score2.bias.data.normal_(0, 0.5)
            b.gate.score2.weight.data.normal_(0, 0.5)
    return model


def _pairs(n: int = 3, seconds: float = 1.0) -> list[Pair]:
    rng = np.random.default_rng(0)
    out = []
    t = np.arange(int(16000 * seconds)) / 16000
    for i in range(n):
        clean = (0.3 * np.sin(2 * np.pi * (180 + 40 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))
                 ).astype(np.float32)
        noisy = (clean + 0.1 * rng.standard_normal(t.size)).astype(np.float32)
        out.append(Pair(name=f"ex{i}", noisy=noisy, clean=clean))
    return out


def test_channel_state_figure_has_one_panel_per_block(tmp_path):
    model = _tiny()
    pair = _pairs(1, 1.5)[0]
    info = channel_state_figure(model, pair.noisy, tmp_path / "fig1.png")
    png = Path(info["path"])
    assert png.is_file() and png.stat().st_size > 10_000
    n_frames = pair.noisy.size // model.cfg.stft.hop + 1
    assert info["frames"] == n_frames
    assert len(info["panels"]) == model.cfg.model.n_blocks
    with torch.inference_mode():
        from dyncp.enhance import enhance_tensor
        _, gates = enhance_tensor(model, torch.from_numpy(pair.noisy)[None])
    for panel, g in zip(info["panels"], gates):
        assert panel["channels"] == model.cfg.model.hidden
        assert panel["frames"] == n_frames
        assert panel["pruning_ratio"] == pytest.approx(float(1 - g.mean()), abs=1e-6)


def test_channel_state_figure_rejects_static_model(tmp_path):
    with pytest.raises(ValueError, match="gated"):
        channel_state_figure(_tiny(gated=False), _pairs(1)[0].noisy, tmp_path / "x.png")


class _Cells(HTMLParser):
    """Collect the cells of table#results as {row index: {data-key: text}}."""

    def __init__(self):
        super().__init__()
        self.rows, self._in, self._key, self._row = [], False, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._in = a.get("id") == "results"
        elif self._in and tag == "tr":
            self._row = {}
        elif self._in and tag == "td":
            self._key = a.get("data-key")

    def handle_endtag(self, tag):
        if tag == "table":
            self._in = False
        elif self._in and tag == "tr" and self._row:
            self.rows.append(self._row)
            self._row = None
        elif tag == "td":
            self._key = None

    def handle_data(self, data):
        if self._key and self._row is not None:
            self._row[self._key] = self._row.get(self._key, "") + data


RECORDINGS = ROOT / "demo" / "recordings"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The built-in examples plus the real-recordings section (the bundled recordings, enhanced
    by tiny stand-ins for the shipped models: one static, one gated)."""
    out = tmp_path_factory.mktemp("report")
    models = {"static": _tiny(gated=False), "dyncp": _tiny()}
    pairs = _pairs(3)
    evals = {n: evaluate(m, pairs, progress=False) for n, m in models.items()}
    shipped = {"static": _tiny(gated=False), "dyncp75": _tiny()}
    path = build_report(out, models, evals, pairs, n_examples=2,
                        recordings=load_recordings(RECORDINGS), recording_models=shipped,
                        recordings_note="stand-ins for the shipped models")
    return out, path, models, evals


def test_report_tables_equal_evaluation_json(report):
    out, path, models, evals = report
    parser = _Cells()
    parser.feed(path.read_text())
    rows = parser.rows
    assert [r["model"] for r in rows] == ["noisy", "static", "dyncp"]
    # The noisy row and every model row carry the evaluation JSON's numbers.
    assert rows[0]["pesq_wb"] == _fmt(evals["static"]["noisy"]["pesq_wb"], "{:.3f}")
    for r in rows[1:]:
        mean = evals[r["model"]]["mean"]
        for key, fmt in (("pesq_wb", "{:.3f}"), ("stoi", "{:.3f}"), ("si_sdr", "{:.2f}"),
                         ("dynamic_mmac_per_s", "{:.2f}")):
            assert r[key] == _fmt(mean[key], fmt), (r["model"], key)
    dyn = evals["dyncp"]["mean"]
    saved = 1 - dyn["dynamic_macs_per_frame"] / evals["static"]["mean"]["static_macs_per_frame"]
    assert rows[2]["macs_saved_fraction"] == _fmt(saved, "{:.1%}")
    assert rows[2]["pruning_ratio"] == _fmt(dyn["pruning_ratio"], "{:.3f}")
    assert rows[1]["macs_saved_fraction"] == _fmt(0.0, "{:.1%}")
    # results.json beside it is the same table.
    js = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in js] == ["noisy", "static", "dyncp"]
    assert js[2]["pesq_wb"] == pytest.approx(dyn["pesq_wb"])
    assert js[2]["prune_target"] == models["dyncp"].cfg.loss.prune_target
    assert js[1]["prune_target"] is None


def test_report_folder_is_self_contained(report):
    out, path, _, _ = report
    text = path.read_text()
    refs = re.findall(r"(?:src|href)='([^']+)'", text)
    assert refs, "the report references no figure or audio"
    for ref in refs:
        assert not ref.startswith(("http:", "https:", "/")), ref
        f = out / ref
        assert f.is_file() and f.stat().st_size > 1000, ref
    n_rec = len(load_recordings(RECORDINGS))
    assert len(list((out / "figures").glob("fig1_ex*.png"))) == 2   # 2 examples x 1 gated model
    assert len(list((out / "audio").glob("ex*.wav"))) == 2 * 4      # noisy, clean, static, dyncp
    assert len(list((out / "figures").glob("fig1_real_*.png"))) == n_rec   # x 1 gated model
    assert len(list((out / "audio").glob("real_*.wav"))) == n_rec * 3     # noisy + 2 models


class _Sections(HTMLParser):
    """The real-recordings section: per recording (div.ex.real) its h3 name, audio sources and
    image sources; plus the ids seen in the page."""

    def __init__(self):
        super().__init__()
        self.ids, self.real, self._cur, self._h3 = set(), [], None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "div" and a.get("class") == "ex real":
            self._cur = {"name": "", "audio": [], "img": []}
            self.real.append(self._cur)
        elif self._cur is not None and tag == "h3":
            self._h3 = True
        elif self._cur is not None and tag == "audio":
            self._cur["audio"].append(a["src"])
        elif self._cur is not None and tag == "img":
            self._cur["img"].append(a["src"])

    def handle_endtag(self, tag):
        if tag == "h3":
            self._h3 = False

    def handle_data(self, data):
        if self._h3 and self._cur is not None:
            self._cur["name"] += data


def test_report_shows_real_recordings_with_players_and_channel_maps(report):
    out, path, _, _ = report
    page = _Sections()
    page.feed(path.read_text())
    assert "real-recordings" in page.ids and "real-recordings-skipped" not in page.ids
    names = [r.name for r in load_recordings(RECORDINGS)]
    assert [r["name"] for r in page.real] == names
    for rec in page.real:
        stem = "real_" + rec["name"]
        assert rec["audio"] == [f"audio/{stem}_{m}.wav" for m in ("noisy", "static", "dyncp75")]
        assert rec["img"] == [f"figures/fig1_{stem}_dyncp75.png"]     # the gated model only
        for src in rec["audio"] + rec["img"]:
            assert (out / src).stat().st_size > 1000, src
    text = path.read_text()
    assert "recorded in noise" in text and "mixed by us" in text     # the manifest's kinds
    assert "dyncp75: Φ" in text                                       # Φ measured per file


def test_report_without_recordings_has_only_the_note(tmp_path):
    models = {"dyncp": _tiny()}
    pairs = _pairs(1)
    evals = {"dyncp": evaluate(models["dyncp"], pairs, progress=False)}
    path = build_report(tmp_path, models, evals, pairs, n_examples=1,
                        recordings_note="skipped: no shipped model")
    page = _Sections()
    page.feed(path.read_text())
    assert "real-recordings-skipped" in page.ids and "real-recordings" not in page.ids
    assert page.real == [] and "skipped: no shipped model" in path.read_text()
    assert not list((tmp_path / "audio").glob("real_*"))


def test_tradeoff_figure(tmp_path):
    rows = [{"model": "noisy", "pesq_wb": 1.3},
            {"model": "static", "pesq_wb": 2.0, "dynamic_mmac_per_s": 11.5, "prune_target": None,
             "pruning_ratio": None},
            {"model": "dyncp", "pesq_wb": 1.9, "dynamic_mmac_per_s": 5.3, "prune_target": 0.75,
             "pruning_ratio": 0.75}]
    p = tradeoff_figure(rows, tmp_path / "t.png")
    assert p.stat().st_size > 5000


def test_results_rows_macs_saved_against_static():
    evals = {"static": {"noisy": {"pesq_wb": 1.0, "stoi": 0.5, "si_sdr": 0.0},
                        "mean": {"static_macs_per_frame": 1000, "dynamic_macs_per_frame": 1000}},
             "dyncp": {"noisy": {"pesq_wb": 1.0, "stoi": 0.5, "si_sdr": 0.0},
                       "mean": {"static_macs_per_frame": 1000, "dynamic_macs_per_frame": 400,
                                "pruning_ratio": 0.7}}}
    rows = results_rows(evals, {"static": None, "dyncp": 0.75})
    assert rows[1]["macs_saved_fraction"] == pytest.approx(0.0)
    assert rows[2]["macs_saved_fraction"] == pytest.approx(0.6)


def test_report_renders_in_headless_chromium(report, tmp_path):
    if shutil.which("chromium") is None:
        missing_tool("Chromium not installed")
    _, path, _, _ = report
    common = ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", "--allow-file-access-from-files"]
    uri = path.resolve().as_uri()
    dom = subprocess.run(common + [f"--user-data-dir={tmp_path / 'ud1'}",
                                   "--virtual-time-budget=5000", "--dump-dom", uri],
                         capture_output=True, text=True, timeout=120)
    m = re.search(r'data-images-total="(\d+)"[^>]*data-images-loaded="(\d+)"', dom.stdout)
    assert m, dom.stderr[-2000:]
    total, loaded = int(m.group(1)), int(m.group(2))
    # trade-off plot + 2 Fig. 1 of the examples + 1 per real recording, all decoded
    assert total == 3 + len(load_recordings(RECORDINGS)) and loaded == total
    assert 'id="real-recordings"' in dom.stdout and dom.stdout.count("<audio") >= 8 + 9
    shot = tmp_path / "shot.png"
    subprocess.run(common + [f"--user-data-dir={tmp_path / 'ud2'}", f"--screenshot={shot}",
                             "--window-size=1200,2400", uri],
                   capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    # A rendered page with figures is far from blank: many non-white pixels.
    assert (img[..., :3].mean(axis=-1) < 0.9).mean() > 0.05

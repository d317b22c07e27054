"""The DynCP study harness (issue 12): benchmarks/study.py end to end on the tiny config, the
width solver, forced masks and constant gates (dyncp.widths, dyncp.masks)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from dyncp.dsp import stft
from dyncp.enhance import enhance_tensor
from dyncp.losses import total_loss
from dyncp.macs import dynamic_macs, static_macs_per_frame, summary
from dyncp.masks import ForcedMasks, constant_gate_, top_channels, utterance_masks
from dyncp.model import build_model
from dyncp.widths import phi_for_macs, solve_widths, with_widths
from test_train import TINY, write_pairs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import study
finally:
    sys.path.pop(0)


# -- the width solver -------------------------------------------------------------------------
@pytest.mark.parametrize("target", [120_000, 268_800, 404_000, 520_000, 662_528, 900_000])
def test_solver_lands_within_one_percent_on_the_paper_model(paper_cfg, target):
    w = solve_widths(paper_cfg, target)
    macs = static_macs_per_frame(with_widths(paper_cfg, w.residual, w.hidden, gated=False))
    assert macs == w.macs                                  # the solver's count is macs.py's
    assert abs(macs / target - 1) <= 0.01
    assert w.residual == paper_cfg.model.residual          # hidden alone gets there
    step = static_macs_per_frame(with_widths(paper_cfg, 128, w.hidden + 1, gated=False)) - macs
    assert abs(macs - target) <= step / 2                   # and it is the nearest hidden width


def test_solver_changes_residual_only_when_needed(paper_cfg, tiny_cfg):
    # Below the front- and back-end's cost (65,792 at B = 128) only a narrower residual fits.
    w = solve_widths(paper_cfg, 60_000)
    assert w.residual < 128 and abs(w.error) <= 0.01
    for target in (2_500, 3_000, 4_704, 7_000):
        w = solve_widths(tiny_cfg, target)
        assert abs(w.error) <= 0.01
        widths = with_widths(tiny_cfg, w.residual, w.hidden, gated=False)
        assert w.macs == static_macs_per_frame(widths)
    with pytest.raises(ValueError, match="within"):
        solve_widths(tiny_cfg, 10_000.5, tol=1e-6)


def test_phi_for_macs_gives_the_target_cost(paper_cfg):
    wide = with_widths(paper_cfg, 128, 512, gated=True)
    phi = phi_for_macs(wide, static_macs_per_frame(paper_cfg))
    assert 0.5 < phi < 0.65
    at = summary(wide.replace(loss=dataclasses.replace(wide.loss, prune_target=phi)))
    assert at["dynamic_macs_per_frame_at_target"] == pytest.approx(662_528, rel=1e-9)
    with pytest.raises(ValueError, match="out of reach"):
        phi_for_macs(wide, 10_000)


# -- forced masks ---------------------------------------------------------------------------
@pytest.fixture
def gated(tiny_cfg, randomize):
    torch.manual_seed(0)
    return randomize(build_model(tiny_cfg), seed=1, gate_bias=0.0)


def _mag(cfg, batch=2, seconds=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    wav = 0.1 * torch.randn(batch, int(seconds * cfg.stft.sample_rate), generator=g)
    return stft(wav, cfg.stft).abs()


def test_own_gates_as_forced_masks_reproduce_the_forward(gated):
    mag = _mag(gated.cfg)
    with torch.no_grad():
        mask, gates = gated(mag)
        forced, used = gated(mag, masks=gates)
        other, _ = gated(mag, masks=[torch.ones_like(g) for g in gates])
    assert 0.2 < float(torch.stack(gates).mean()) < 0.8     # gates really switch
    assert torch.equal(forced, mask)
    assert all(torch.equal(a, b) for a, b in zip(used, gates))
    assert not torch.allclose(other, mask)                  # the masks are not ignored
    with pytest.raises(ValueError, match="masks"):
        gated(mag, masks=gates[:1])


def test_fixed_and_utterance_policies(gated):
    cfg, mag = gated.cfg, _mag(gated.cfg)
    with torch.no_grad():
        _, gates = gated(mag)
    fixed = top_channels(torch.rand(cfg.model.n_blocks, cfg.model.hidden), [3, 10])
    assert fixed.sum(-1).tolist() == [3.0, 10.0]
    with torch.no_grad():
        _, used = ForcedMasks(gated, fixed)(mag)
    for u, row in zip(used, fixed):
        assert torch.equal(u, row.view(1, -1, 1).expand_as(u))
    frozen = utterance_masks(gates)
    for g, f in zip(gates, frozen):
        assert torch.equal(f, f[..., :1].expand_as(f))                   # constant in time
        assert torch.equal(f[..., 0].sum(-1), g.mean(-1).sum(-1).round())  # same Φ, rounded
        kept_use = (g.mean(-1) * f[..., 0]).sum(-1) / f[..., 0].sum(-1).clamp_min(1)
        assert bool((kept_use >= g.mean(-1).mean(-1) - 1e-9).all())     # the most-used ones
    with torch.no_grad():
        _, used = ForcedMasks(gated, "utterance")(mag)
    assert all(torch.equal(a, b) for a, b in zip(used, frozen))


def test_constant_gate_holds_its_mask_through_training(tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg)
    mask = top_channels(torch.rand(tiny_cfg.model.n_blocks, tiny_cfg.model.hidden), [5, 20])
    constant_gate_(model, mask)
    before = {k: v.clone() for k, v in model.named_parameters() if ".gate." in k}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=tiny_cfg.train.weight_decay)
    model.train()
    wav = 0.1 * torch.randn(2, 8000)
    for _ in range(3):
        est, gates = enhance_tensor(model, wav)
        loss = total_loss(est, wav, gates, tiny_cfg.loss, tiny_cfg.stft, target=0.9)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in model.named_parameters():
        if ".gate.score2" in k:
            assert torch.equal(v, before[k]), k
    model.eval()
    with torch.no_grad():
        _, gates = enhance_tensor(model, 0.1 * torch.randn(1, 8000))
    for g, row in zip(gates, mask):
        assert torch.equal(g[0], row.view(-1, 1).expand_as(g[0]))
    per_frame = dynamic_macs(tiny_cfg, gates).mean_per_frame
    assert per_frame > 0


# -- the study end to end ---------------------------------------------------------------------
def test_rows_bring_what_they_need():
    assert [r.id for r in study.selected("b2")] == ["a1", "a4", "b2"]
    assert [r.id for r in study.selected("struct75,e1")] == ["a1", "a5", "b6", "e1"]
    assert len(study.selected(None)) == len(study.ROWS) == 26
    assert [r.id for r in study.selected("speech75")] == ["a1", "f1"]
    assert [r.id for r in study.selected("contrast75")] == ["a1", "f3"]
    assert [r.id for r in study.selected("snr75")] == ["a1", "f4"]
    with pytest.raises(Exception, match="unknown row"):
        study.selected("z9")


def test_speech_rows_differ_from_their_twin_only_in_the_usage_target(tmp_path):
    args = argparse.Namespace(config=str(TINY), set=[], finetune_set=None, steps=4,
                              runs=str(tmp_path), static_model=None, dev="", dev_limit=0,
                              wide_hidden=0)
    s = study.Study(args)
    plans = {k: s.plan(study.BY_KEY[k]).cfg.to_dict() for k in ("a5", "f1", "f3", "f4")}
    for k, target, spread in (("f1", "speech", 0.2), ("f3", "contrast", 0.15),
                              ("f4", "snr", 0.15)):
        loss = plans[k]["loss"]
        assert (loss["frame_target"], loss["frame_spread"], loss["prune_target"]) == (
            target, spread, 0.75)
        twin = dict(plans[k], loss=dict(loss, frame_target="none", frame_spread=0.2),
                    name=plans["a5"]["name"])
        assert twin == plans["a5"], k
    assert s.plan(study.BY_KEY["f3"]).init == s.plan(study.BY_KEY["f4"]).init == "a1"


def test_study_runs_two_rows_end_to_end(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", n=10, seconds=1.0)
    dev = write_pairs(tmp_path / "dev", n=2, seconds=1.0, seed=1)
    out = tmp_path / "out"
    args = ["--config", str(TINY), "--runs", str(tmp_path / "runs"), "--dev", str(dev),
            "--steps", "2", "--rows", "a1,a3", "--no-progress", "--no-dnsmos",
            "--set", f"data.train=pairs:{pairs}", "--set", "data.valid_files=1",
            "--set", "train.batch_size=4", "--set", "train.steps_per_epoch=2",
            "--json", str(out / "study.json"), "--md", str(out / "study.md")]
    assert study.main(args) == 0
    report = json.loads((out / "study.json").read_text())
    assert report["steps_per_run"] == 2
    rows = {r["row"]: r for r in report["rows"]}
    assert list(rows) == ["a1", "a3"]
    assert (rows["a1"]["steps"], rows["a3"]["steps"], rows["a3"]["total_steps"]) == (2, 2, 4)
    assert rows["a3"]["plan"]["init"] == "a1" and rows["a3"]["phi_target"] == 0.25
    assert rows["a1"]["macs_saved"] == 0 and rows["a3"]["gated"]
    for r in rows.values():
        for k in ("pesq_wb", "stoi", "si_sdr", "mmac_per_s", "phi", "phi_std", "never_on"):
            assert r[k] is not None, k
    md = (out / "study.md").read_text()
    assert "| a3 dyncp25 | 2 (4) |" in md and "N = 2 optimiser steps" in md
    assert (out / "study.png").stat().st_size > 5_000

    # Finished rows are neither retrained nor rescored; hand-written notes survive a rewrite.
    (out / "study.md").write_text(md + "\nA note.\n")
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.pt")}
    assert study.main(args) == 0
    assert stamp == {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.pt")}
    assert "A note." in (out / "study.md").read_text()
    # Another budget does not mix into the same runs, nor does another recipe; the machine's
    # keys (threads, data workers: a row trained elsewhere, e.g. on a GPU) do not count.
    assert study.main([*args[:7], "3", *args[8:]]) == 2
    assert study.main([*args, "--set", "train.lr=0.002"]) == 2
    assert study.main([*args, "--set", "train.threads=1", "--set", "train.num_workers=2"]) == 0
    # a row recorded before a config key existed joins with the key at its default
    ev = tmp_path / "runs" / "a3_dyncp25" / "eval.json"
    rec = json.loads(ev.read_text())
    del rec["plan"]["config"]["loss"]["distill_weight"], rec["plan"]["config"]["train"]["teacher"]
    ev.write_text(json.dumps(rec))
    assert study.main(args) == 0
    assert stamp == {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.pt")}

    # A row trained elsewhere comes back without state.pt and eval.json (scoring cut off): it is
    # scored, not retrained; with another recipe in its config.toml it is refused.
    row3 = tmp_path / "runs" / "a3_dyncp25"
    (row3 / "state.pt").unlink()
    ev.unlink()
    assert study.main(args) == 0 and ev.is_file()
    assert stamp[row3 / "best.pt"] == (row3 / "best.pt").stat().st_mtime_ns
    ev.unlink()
    saved = (row3 / "config.toml").read_text()
    (row3 / "config.toml").write_text(saved.replace("lr = ", "lr = 0.5 #", 1))
    assert study.main(args) == 2
    (row3 / "config.toml").write_text(saved)
    assert study.main(args) == 0

    # --keep carries the rows of an earlier record whose run folders are gone, and a new row's
    # PESQ drop is taken against the carried reference as it was against the record.
    before = {r["row"]: r for r in json.loads((out / "study.json").read_text())["rows"]}
    keep = tmp_path / "keep.json"
    keep.write_text((out / "study.json").read_text())
    for p in (tmp_path / "runs" / "a1_static").iterdir():
        if p.name != "best.pt":   # a3's plan needs a1's checkpoint only to train
            p.unlink() if p.is_file() else None
    assert study.main([*args, "--report-only", "--keep", str(keep)]) == 0
    after = {r["row"]: r for r in json.loads((out / "study.json").read_text())["rows"]}
    assert list(after) == ["a1", "a3"] and after["a1"]["kept_from"] == str(keep)
    assert "kept_from" not in after["a3"]
    assert after["a3"]["pesq_drop"] == pytest.approx(before["a3"]["pesq_drop"])
    assert "Rows a1: carried from" in (out / "study.md").read_text()
    assert study.main([*args[:7], "3", *args[8:], "--report-only", "--keep", str(keep)]) == 2
    # A carried row is not trained again, and what a later row reads from it (a3's measured
    # MACs for b1's widths) comes from the record.
    for p in sorted(row3.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    row3.rmdir()
    b1 = [*args[:9], "b1", *args[10:], "--keep", str(keep)]
    assert study.main(b1) == 0
    assert not row3.exists()
    got = {r["row"]: r for r in json.loads((out / "study.json").read_text())["rows"]}
    assert got["b1"]["plan"]["target_macs_per_frame"] == before["a3"]["macs_per_frame"]
    assert got["a3"]["kept_from"] == str(keep) and "kept_from" not in got["b1"]


def test_goals_compare_the_rows_issue_12_names():
    import study_report

    def row(name, pesq, mmac, sp=None, ns=None):
        return {"name": name, "pesq_wb": pesq, "mmac_per_s": mmac, "phi_speech": sp,
                "phi_nonspeech": ns}

    rows = {"a5": row("dyncp75", 1.60, 16.8, 0.75, 0.76), "b3": row("eqcost75", 1.58, 16.9),
            "f3": row("contrast75", 1.64, 17.0, 0.70, 0.85)}
    got = {(g["rows"][0], g["rows"][-1], "Φ" in g["goal"] and "speech" in g["goal"]): g
           for g in study_report.goals(rows)}
    eq = got[("a5", "b3", False)]
    assert eq["value"] == pytest.approx(0.02) and eq["met"] is False
    assert got[("f3", "b3", False)]["met"] is True                  # +0.06 >= 0.05
    assert got[("a5", "a5", True)]["met"] is False                  # 0.01 gap
    assert got[("f3", "f3", True)]["value"] == pytest.approx(0.15)
    assert got[("f3", "f3", True)]["met"] is True
    wide = got[("c2", "a2", False)]
    assert wide["met"] is None and "not both finished" in wide["detail"]
    assert not any(g["rows"][0] == "f1" for g in study_report.goals(rows))   # f1 did not run


def test_phi_by_snr_groups_the_dev_files_by_the_manifest():
    import study_report
    files = [{"name": "x1", "pruning_ratio": 0.8}, {"name": "x2", "pruning_ratio": 0.6},
             {"name": "x3", "pruning_ratio": 0.7}, {"name": "x4", "pruning_ratio": 0.5}]
    manifest = {"x1": {"snr_db": "-5"}, "x2": {"snr_db": "15"}, "x3": {"snr_db": "-5"},
                "x4": {"snr_db": "5"}}
    rec = {"eval": {"mean": {"gated": True}, "files": files}}
    by = study_report._phi_by_snr(rec, manifest)
    assert by == pytest.approx({"-5": 0.75, "5": 0.5, "15": 0.6})
    assert list(by) == ["-5", "5", "15"]                        # by value, not as text
    assert study_report._snr_cell({"phi_by_snr": by}) == "0.750 / 0.600 (-5 / 15 dB)"
    assert study_report._phi_by_snr(rec, {}) is None
    assert study_report._phi_by_snr({"eval": {"mean": {"gated": False}, "files": files}},
                                     manifest) is None

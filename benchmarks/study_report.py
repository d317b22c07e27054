"""The table, goals, markdown and plot of benchmarks/study.py (issue 12), from the rows' eval.json.

Cost is MACs per frame of the convolutions (bias, normalisation, activations and gate pooling
excluded, as everywhere in dyncp.macs), averaged over every dev frame, with the gates' score
stacks included; rows that run one fixed mask (structured pruning, the fixed-mask ablation) need
no gate at inference and are counted without it. "MACs saved" is against the static paper model
(row a1's dense MACs); "PESQ drop" is relative to the static twin a2 (same total steps as a
fine-tuned row), or to a1 while a2 is missing.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

from dyncp.atomic import atomic_path, write_json, write_text
from dyncp.devset import breakdown, read_manifest
from dyncp.errors import ConfigError

NOTES = "<!-- hand-written below this line; kept when benchmarks/study.py rewrites the file -->"
GOALS = [  # (what, row, against, how)
    ("DynCP Φ 0.75 ≥ 0.05 PESQ-WB above the equal-MACs static model", "a5", "b3", 0.05),
    ("wider DynCP at the static model's MACs at least level with it (same total steps)",
     "c2", "a2", 0.0),
]


#: Issue 12 item 3's rows at Φ_trgt 0.75 (speech-tied, contrast, difficulty contrast).
ITEM3_ROWS = ("f1", "f3", "f4")


def _phi_by_snr(rec: dict, manifest: dict[str, dict[str, str]]) -> dict[str, float] | None:
    """A gated row's Φ per dev-set SNR group (the manifest's ``snr_db``; mean over the group's
    files): does the row spend less on easy recordings? None without gates or a manifest."""
    if not manifest or not rec["eval"]["mean"]["gated"]:
        return None
    groups = breakdown(rec["eval"]["files"], manifest, ("pruning_ratio",)).get("snr_db")
    return {k: v["pruning_ratio"] for k, v in groups.items()} if groups else None


def _row(rec: dict, fps: float, paper_macs: int, ref: dict | None,
         manifest: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    m, plan = rec["eval"]["mean"], rec["plan"]
    cfg = plan["config"]
    gate = m["gate_macs_per_frame"] if m["gated"] else 0
    macs = m["dynamic_macs_per_frame"] - (0 if plan["gate_cost"] else gate)
    train = rec.get("train") or {}
    drop = None
    if ref is not None and ref["eval"]["mean"]["pesq_wb"] and m["pesq_wb"] is not None:
        p0 = ref["eval"]["mean"]["pesq_wb"]
        drop = (p0 - m["pesq_wb"]) / p0
    target = None
    if cfg and cfg["gate"]["enabled"] and cfg["loss"]["usage_weight"] > 0:
        target = cfg["loss"]["prune_target"]
    return {
        "row": rec["row"], "name": rec["name"], "what": rec["what"],
        "init": plan["init"], "steps": plan["steps"], "total_steps": plan["total_steps"],
        "widths": [cfg["model"]["residual"], cfg["model"]["hidden"]] if cfg else None,
        "causal": cfg["model"]["causal"] if cfg else True, "gated": bool(m["gated"]),
        "pesq_wb": m.get("pesq_wb"), "stoi": m.get("stoi"), "si_sdr": m.get("si_sdr"),
        "dnsmos_ovrl": m.get("dnsmos_ovrl"),
        "macs_per_frame": macs, "mmac_per_s": macs * fps / 1e6,
        "gate_macs_per_frame": gate if plan["gate_cost"] else 0,
        "macs_saved": 1.0 - macs / paper_macs,
        "pesq_drop": drop, "pesq_drop_vs": ref["row"] if ref else None,
        "phi_target": target, "phi": m["pruning_ratio"], "phi_std": m["pruning_ratio_frame_std"],
        "never_on": m["channels_never_on"], "always_on": m["channels_always_on"],
        "phi_speech": m["pruning_ratio_speech"], "phi_nonspeech": m["pruning_ratio_nonspeech"],
        "phi_per_block": m["pruning_ratio_per_block"],
        "phi_by_snr": _phi_by_snr(rec, manifest or {}),
        "train_hours": train.get("seconds", 0.0) / 3600,
        "audio_s_per_s": train.get("audio_s_per_s"),
        "plan": {k: v for k, v in plan.items() if k != "config"},
    }


def kept_rows(path: str | Path, study) -> tuple[list[dict], dict]:
    """The rows of an earlier study JSON (``--keep``: rows whose run folders are gone), each
    marked with the file it came from, and that file's noisy reference. The earlier run must
    have had this study's budget and recipe: ConfigError otherwise."""
    path = Path(path)
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        rows, n = old["rows"], old["steps_per_run"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--keep {path}: not a study JSON ({e})") from None
    if n != study.n or old.get("config") != str(study.args.config) \
            or old.get("finetune_set") != study.finetune:
        raise ConfigError(f"--keep {path}: another budget or recipe (N = {n}, "
                          f"{old.get('config')}; this study: N = {study.n}, "
                          f"{study.args.config})")
    return [{**r, "kept_from": str(path)} for r in rows], old.get("noisy") or {}


def build(study, records: list[dict], command: str,
          kept: tuple[list[dict], dict] = ([], {})) -> dict[str, Any]:
    """The study's JSON record: settings, noisy reference, one entry per finished row (``kept``:
    rows carried from an earlier record, see :func:`kept_rows`), goals."""
    by = {r["row"]: r for r in records}
    ref = by.get("a2") or by.get("a1")
    if ref is None:   # the reference may be a carried row: the same numbers a record would give
        old = {r["row"]: r for r in kept[0]}
        ref_row = old.get("a2") or old.get("a1")
        if ref_row is not None:
            ref = {"row": ref_row["row"], "eval": {"mean": {"pesq_wb": ref_row["pesq_wb"]}}}
    fps = study.static_cfg.stft.frames_per_second
    manifest = read_manifest(study.args.dev) if study.args.dev else {}
    rows = sorted([_row(r, fps, study.paper_macs, ref, manifest) for r in records] + kept[0],
                  key=lambda r: r["row"])   # ids sort in table order (a1 ... f4)
    noisy = records[0]["eval"]["noisy"] if records else kept[1]
    out = {"command": command, "date": datetime.date.today().isoformat(),
           "config": str(study.args.config), "set": list(study.args.set or []),
           "finetune_set": study.finetune, "dev": str(study.args.dev),
           "steps_per_run": study.n, "static_steps": rows[0]["total_steps"] if rows else None,
           "paper_macs_per_frame": study.paper_macs,
           "paper_mmac_per_s": study.paper_macs * fps / 1e6,
           "noisy": noisy, "rows": rows, "goals": goals({r["row"]: r for r in rows})}
    return out


def _both(rows: dict[str, dict], a: str, b: str) -> bool:
    return all(k in rows and rows[k]["pesq_wb"] is not None for k in (a, b))


def _compare(rows: dict[str, dict], what: str, a: str, b: str, margin: float) -> dict[str, Any]:
    """A goal "row a at least ``margin`` PESQ-WB above row b", with its numbers."""
    d = rows[a]["pesq_wb"] - rows[b]["pesq_wb"]
    return {"goal": what, "rows": [a, b], "value": d, "met": d >= margin,
            "detail": f"{a} {rows[a]['pesq_wb']:.3f} at {rows[a]['mmac_per_s']:.1f} MMAC/s vs "
                      f"{b} {rows[b]['pesq_wb']:.3f} at {rows[b]['mmac_per_s']:.1f} MMAC/s: "
                      f"{d:+.3f}"}


def goals(rows: dict[str, dict]) -> list[dict[str, Any]]:
    """Each goal of issue 12 with its numbers: met, not met, or rows missing."""
    out = []
    for what, a, b, margin in GOALS:
        if _both(rows, a, b):
            out.append(_compare(rows, what, a, b, margin))
        else:
            out.append({"goal": what, "rows": [a, b], "value": None, "met": None,
                        "detail": f"rows {a} and {b} not both finished"})
    # The rows of item 3 (usage targets per frame) answer the same goals as a5 where they ran:
    # the equal-MACs comparison against b3 and the speech/non-speech gap.
    for a in ITEM3_ROWS:
        b = "b3"
        if _both(rows, a, b):
            out.append(_compare(rows, f"{GOALS[0][0]} ({a} {rows[a]['name']} in a5's place)",
                                a, b, GOALS[0][3]))
    what = "DynCP Φ 0.75: Φ on non-speech frames ≥ 0.1 above Φ on speech frames"
    for a in ("a5", *ITEM3_ROWS):
        r = rows.get(a)
        if a != "a5" and r is None:
            continue
        label = what if a == "a5" else f"{what} ({a} {r['name']})"
        if r and r["phi_speech"] is not None and r["phi_nonspeech"] is not None:
            d = r["phi_nonspeech"] - r["phi_speech"]
            out.append({"goal": label, "rows": [a], "value": d, "met": d >= 0.1,
                        "detail": f"{r['phi_nonspeech']:.3f} - {r['phi_speech']:.3f} = {d:+.3f}"})
        else:
            out.append({"goal": label, "rows": [a], "value": None, "met": None,
                        "detail": "row a5 not finished" if not r else
                        "the dev set has no speech or no non-speech frames"})
    return out


def _f(v, fmt: str = "{:.3f}") -> str:
    return "–" if v is None else fmt.format(v)


COLUMNS = ["row", "steps (total)", "PESQ-WB", "STOI", "SI-SDR", "DNSMOS", "MMAC/s", "saved",
           "PESQ drop", "Φ (trgt)", "Φ std", "never / always on", "Φ speech / non",
           "Φ lowest / highest SNR"]


def _snr_cell(r: dict) -> str:
    by = r.get("phi_by_snr")
    if not by:
        return "–"
    lo, hi = list(by)[0], list(by)[-1]          # breakdown sorts the groups by value
    return f"{by[lo]:.3f} / {by[hi]:.3f} ({lo} / {hi} dB)"


def _cells(r: dict) -> list[str]:
    gated = r["gated"]
    return [f"{r['row']} {r['name']}", f"{r['steps']} ({r['total_steps']})", _f(r["pesq_wb"]),
            _f(r["stoi"]), _f(r["si_sdr"], "{:.2f}"), _f(r["dnsmos_ovrl"]),
            _f(r["mmac_per_s"], "{:.1f}"), _f(100 * r["macs_saved"], "{:.1f} %"),
            _f(None if r["pesq_drop"] is None else 100 * r["pesq_drop"], "{:.1f} %"),
            (_f(r["phi"]) + (f" ({r['phi_target']:g})" if r["phi_target"] is not None else ""))
            if gated else "–",
            _f(r["phi_std"]) if gated else "–",
            f"{100 * r['never_on']:.1f} / {100 * r['always_on']:.1f} %" if gated else "–",
            f"{_f(r['phi_speech'])} / {_f(r['phi_nonspeech'])}" if gated else "–",
            _snr_cell(r)]


def table(report: dict) -> str:
    """Plain-text table of every finished row, the noisy input first, then the goals."""
    n = report["noisy"]
    lines = [[*COLUMNS], ["noisy", "–", _f(n.get("pesq_wb")), _f(n.get("stoi")),
                          _f(n.get("si_sdr"), "{:.2f}"), _f(n.get("dnsmos_ovrl")),
                          *["–"] * (len(COLUMNS) - 6)]]
    lines += [_cells(r) for r in report["rows"]]
    width = [max(len(x[i]) for x in lines) for i in range(len(COLUMNS))]
    text = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(x, width)))
            for x in lines]
    text.append(f"\nN = {report['steps_per_run']} steps per run; static paper model "
                f"{report['paper_mmac_per_s']:.2f} MMAC/s; PESQ drop vs "
                f"{report['rows'][0]['pesq_drop_vs'] if report['rows'] else '–'}")
    text += [f"goal: {g['goal']}: {_met(g)} ({g['detail']})" for g in report["goals"]]
    return "\n".join(text)


def _met(g: dict) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[g["met"]]


def markdown(report: dict, plot_name: str, notes: str) -> str:
    rows = report["rows"]
    md = ["# The DynCP study on real speech (issue 12)", "",
          "Generated by `benchmarks/study.py` (the part above the notes marker is rewritten on "
          "every run).", "",
          f"- command: `{report['command']}`", f"- date: {report['date']}",
          f"- recipe: `{report['config']}`" + (f" with `--set {' '.join(report['set'])}`"
                                              if report["set"] else "")
          + f"; fine-tuned rows also `{' '.join(report['finetune_set'])}`",
          f"- budget: N = {report['steps_per_run']} optimiser steps per run; the static model "
          f"a1 has {report['static_steps']}; a row fine-tuned from it has a1's steps + N in "
          "total, and the rows trained from scratch against them get the same total "
          "(`steps (total)` column)",
          f"- scored on `{report['dev']}`; the static paper model costs "
          f"{report['paper_macs_per_frame']:,} MACs per frame "
          f"({report['paper_mmac_per_s']:.2f} MMAC/s)", "",
          "| " + " | ".join(COLUMNS) + " |", "|---" + "|---:" * (len(COLUMNS) - 1) + "|"]
    n = report["noisy"]
    md.append(f"| noisy | – | {_f(n.get('pesq_wb'))} | {_f(n.get('stoi'))} | "
              f"{_f(n.get('si_sdr'), '{:.2f}')} | {_f(n.get('dnsmos_ovrl'))} |"
              + " – |" * (len(COLUMNS) - 6))
    md += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    for src in sorted({r["kept_from"] for r in rows if r.get("kept_from")}):
        ids = ", ".join(r["row"] for r in rows if r.get("kept_from") == src)
        md += ["", f"Rows {ids}: carried from `{src}` (`--keep`); their run folders are gone, "
               "so they are not rescored."]
    md += ["", "## Goals (issue 12)", ""]
    md += [f"- {g['goal']}: **{_met(g)}** ({g['detail']})" for g in report["goals"]]
    md += ["", f"![PESQ-WB against MMAC/s, every row]({plot_name})", "", "## Rows", ""]
    md += [f"- **{r['row']} {r['name']}**: {r['what']}"
           + (f"; widths B = {r['widths'][0]}, H = {r['widths'][1]}" if r["widths"] else "")
           + ("" if r["causal"] else "; non-causal")
           + ("; no gate cost (one fixed mask)" if not r["plan"]["gate_cost"] else "")
           + (f"; trained {60 * r['train_hours']:.0f} min at {r['audio_s_per_s']:.0f} s audio/s"
              if r["audio_s_per_s"] else "") for r in rows]
    md += ["", "MACs exclude bias, normalisation, activations and gate pooling. PESQ drop is "
           "relative. Φ std is the standard deviation over dev frames of the per-frame Φ; a "
           "frame is speech when its clean energy is within 40 dB of the file's loudest frame. "
           "Φ lowest / highest SNR: the mean Φ of the dev files mixed at the lowest and at the "
           "highest SNR of the dev set's manifest (does a row spend less on easy recordings?).",
           "", NOTES, notes.rstrip() or "\n(no notes yet)", ""]
    return "\n".join(md)


def plot(report: dict, path: str | Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"a": "C0", "b": "C1", "c": "C2", "d": "C3", "e": "C4", "f": "C5"}
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    for r in report["rows"]:
        if r["pesq_wb"] is None:
            continue
        ax.scatter(r["mmac_per_s"], r["pesq_wb"], color=colors[r["row"][0]], s=28, zorder=3)
        ax.annotate(f"{r['row']} {r['name']}", (r["mmac_per_s"], r["pesq_wb"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if report["noisy"].get("pesq_wb") is not None:
        ax.axhline(report["noisy"]["pesq_wb"], color="0.5", ls="--", lw=1, label="noisy input")
    ax.axvline(report["paper_mmac_per_s"], color="0.7", ls=":", lw=1, label="static paper MACs")
    for g in sorted({r["row"][0] for r in report["rows"]}):
        ax.scatter([], [], color=colors[g], label=f"rows {g}")
    ax.set_xlabel("MMAC/s (dynamic; gate overhead counted where gates run)")
    ax.set_ylabel("PESQ-WB (dev)")
    ax.grid(alpha=0.3)
    ax.ticklabel_format(useOffset=False)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def write(report: dict, json_path: str | Path, md_path: str | Path, png_path: str | Path) -> None:
    """study.json, the markdown (keeping its hand-written notes) and the plot."""
    write_json(json_path, report)
    md_path = Path(md_path)
    notes = ""
    if md_path.is_file():
        old = md_path.read_text(encoding="utf-8")
        if NOTES in old:
            notes = old.split(NOTES, 1)[1].strip("\n")
            notes = "" if notes.strip() == "(no notes yet)" else notes
    plot(report, png_path)
    rel = os.path.relpath(Path(png_path).resolve(), md_path.resolve().parent)
    write_text(md_path, markdown(report, rel, notes))

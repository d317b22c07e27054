"""The shipped models in the report and the docs: quality against compute on the development set
their cards were scored on (issue 11 item 1, issue 13 item 4).

Everything here reads the model cards (:func:`dyncp.zoo.list_models`), which ``dyncp ship``
filled by scoring the shipped file itself; nothing is re-measured. :func:`shipped_rows` turns the
cards into rows (one per model; a budget model adds one row per budget in its ``dev_by_phi``),
:func:`quality_compute_figure` draws PESQ-WB against MMAC/s (dedicated models as points, a
budget model as a curve through its budgets), and :func:`shipped_html` is the report's section.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

#: Columns of the shipped-models table: (key, header, format).
SHIPPED_COLUMNS = [
    ("model", "model", "{}"),
    ("phi_request", "Φ asked", "{:g}"),
    ("pesq_wb", "PESQ-WB", "{:.3f}"),
    ("stoi", "STOI", "{:.3f}"),
    ("si_sdr", "SI-SDR (dB)", "{:.2f}"),
    ("mmac_per_s", "dyn. MMAC/s", "{:.2f}"),
    ("phi", "Φ measured", "{:.3f}"),
]


def shipped_rows(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows from ``list_models()``: ``model``, ``budget`` (True for a budget model's rows),
    ``phi_request`` (a budget model's request, else None) and the card's dev scores. Models
    without dev scores are left out."""
    rows = []
    for m in models:
        c = m["card"]
        dev = c.get("dev") or {}
        by_phi = c.get("dev_by_phi") or {}
        if by_phi:
            for req, s in sorted(by_phi.items(), key=lambda kv: float(kv[0])):
                rows.append({"model": m["name"], "budget": True, "phi_request": float(req),
                             **{k: s.get(k) for k in ("pesq_wb", "stoi", "si_sdr",
                                                       "mmac_per_s", "phi")}})
        elif dev.get("pesq_wb") is not None:
            rows.append({"model": m["name"], "budget": False, "phi_request": None,
                         **{k: dev.get(k) for k in ("pesq_wb", "stoi", "si_sdr",
                                                     "mmac_per_s", "phi")}})
    return rows


def quality_compute_figure(rows: list[dict[str, Any]], path: str | Path,
                           title: str = "shipped models on the development set",
                           references: dict[str, float] | None = None) -> Path:
    """PESQ-WB against dynamic MMAC/s: dedicated models as squares (labelled), each budget model
    as a line through its budgets (labelled by Φ asked); ``references`` (label -> PESQ-WB, e.g.
    the noisy input or a peer) as dashed lines. Written atomically; returns the path."""
    from .report import _plt, save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, value in (references or {}).items():
        if value is not None:
            ax.axhline(value, color="gray", ls="--", lw=1)
            ax.annotate(label, (0, value), xycoords=("axes fraction", "data"),
                        textcoords="offset points", xytext=(4, 3), fontsize=7, color="gray")
    for name in dict.fromkeys(r["model"] for r in rows if r["budget"]):
        pts = [r for r in rows if r["model"] == name and r["mmac_per_s"] is not None]
        pts.sort(key=lambda r: r["mmac_per_s"])
        ax.plot([r["mmac_per_s"] for r in pts], [r["pesq_wb"] for r in pts], "o-",
                color="tab:blue", label=f"{name} (one model, Φ set at run time)", zorder=3)
        for r in pts:
            ax.annotate(f"Φ {r['phi_request']:g}", (r["mmac_per_s"], r["pesq_wb"]),
                        textcoords="offset points", xytext=(4, -10), fontsize=7,
                        color="tab:blue")
    first = True
    for r in rows:
        if r["budget"] or r["mmac_per_s"] is None:
            continue
        ax.scatter(r["mmac_per_s"], r["pesq_wb"], s=60, marker="s", color="tab:orange",
                   zorder=4, label="dedicated models" if first else None)
        first = False
        ax.annotate(r["model"], (r["mmac_per_s"], r["pesq_wb"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    ax.set_xlabel("dynamic MMAC per second of audio")
    ax.set_ylabel("PESQ-WB")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def _fmt(value: Any, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def shipped_html(rows: list[dict[str, Any]], figure: str, dev: str) -> str:
    """The report's section on the shipped models: the table and ``figure`` (a path relative to
    the report); empty without rows."""
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in SHIPPED_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td data-key='{k}'>{html.escape(_fmt(r.get(k), f))}</td>"
                         for k, _, f in SHIPPED_COLUMNS) + "</tr>" for r in rows)
    return (f"<h2 id='shipped'>Shipped models: quality against compute</h2>"
            f"<p class='note'>From the model cards (dyncp/weights/, `dyncp models`): each file "
            f"scored by `dyncp ship` on {html.escape(dev)}. A budget model is one file run at "
            f"several Φ.</p><table id='shipped-table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table><img src='{html.escape(figure)}' "
            f"alt='shipped models: PESQ-WB against MMAC/s'>")


def shipped_section(out: str | Path, shipped: list[dict[str, Any]]) -> str:
    """The report's shipped-models section for ``list_models()`` output: writes
    ``out/figures/shipped.png`` and returns the HTML (empty when no card has dev scores)."""
    rows = shipped_rows(shipped)
    if not rows:
        return ""
    out = Path(out)
    fig = quality_compute_figure(rows, out / "figures" / "shipped.png")
    dev = next(str((m["card"].get("dev") or {}).get("set", "the development set"))
               for m in shipped)
    return shipped_html(rows, str(fig.relative_to(out)), dev)

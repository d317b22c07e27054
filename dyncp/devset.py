"""Scores of a development set read per group: a folder's ``manifest.csv`` (as realdev has, with
``id``, ``noise_kind``, ``band`` and ``snr_db`` columns) splits an evaluation result's per-file
rows into bands (wide / narrow), noise kinds and SNRs. A mean hides what a model cannot do: one
that fails on white noise or on telephone-band speech shows it here.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

GROUP_COLUMNS = ("band", "noise_kind", "snr_db")


def read_manifest(folder: str | Path) -> dict[str, dict[str, str]]:
    """``{file id: row}`` from ``folder/manifest.csv``; empty when there is none."""
    path = Path(str(folder).split(":", 1)[-1] if str(folder).startswith("pairs:") else folder)
    path = path.expanduser() / "manifest.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    key = "id" if rows and "id" in rows[0] else "name"
    return {r[key]: r for r in rows if r.get(key)}


def breakdown(files: list[dict[str, Any]], manifest: dict[str, dict[str, str]],
              metrics: tuple[str, ...] = ("pesq_wb", "stoi", "si_sdr")) -> dict[str, Any]:
    """Mean of each metric per value of each manifest column in :data:`GROUP_COLUMNS`:
    ``{"band": {"wide": {"n": 25, "pesq_wb": ...}, ...}, "noise_kind": {...}, ...}``. Files
    missing from the manifest are left out; NaN/None scores are skipped."""
    out: dict[str, Any] = {}
    for col in GROUP_COLUMNS:
        groups: dict[str, list[dict[str, Any]]] = {}
        for f in files:
            row = manifest.get(str(f.get("name")))
            if row is not None and row.get(col, "") != "":
                groups.setdefault(row[col], []).append(f)
        if not groups:
            continue
        table = {}
        for value in sorted(groups, key=_sort_key):
            rows = groups[value]
            entry: dict[str, Any] = {"n": len(rows)}
            for m in metrics:
                xs = [float(r[m]) for r in rows if r.get(m) is not None
                      and math.isfinite(float(r[m]))]
                entry[m] = sum(xs) / len(xs) if xs else None
            table[value] = entry
        out[col] = table
    return out


def _sort_key(v: str):
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)

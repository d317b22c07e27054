"""The main job (``make demo`` / ``dyncp demo``): train a static and a DynCP model on the built-in
corpus, evaluate both on its test split, print one table and write the HTML report.

Everything goes under ``OUT`` (default ``runs/demo``)::

    OUT/static/  OUT/dyncp/        training runs (best.pt, last.pt, state.pt, log.csv, config.toml)
    OUT/eval_static.json ...       evaluation JSON per model (dyncp evaluate format)
    OUT/results.json               one row for the noisy input and one per model
    OUT/report/report.html         the report (figures, tables, audio examples)

The report also shows the shipped models (``dyncp/weights/``: static, dyncp50, dyncp75, whichever
are present) on the real noisy recordings bundled in ``demo/recordings/`` (audio players and
Fig. 1 channel maps; no clean reference, so no scores). Without a shipped model or without the
recordings that section is skipped with a printed note saying what is missing.

Interrupting and running again reuses what is finished: the corpus cache, finished training runs
(an unfinished one resumes from its ``state.pt``) and evaluations newer than their checkpoint.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_json
from .checkpoint import load_model
from .config import Config, load_config
from .errors import ConfigError

#: What the demo is expected to show (issue 5); checked and printed at the end of every run.
EXPECT_PHI_TOL = 0.03
EXPECT_MIN_MACS_SAVED = 0.40
#: Shipped models the real-recordings section uses, in this order, when present.
SHIPPED_FOR_DEMO = ("static", "dyncp50", "dyncp75")
#: The bundled real recordings (relative to the repository root, like the demo configs).
RECORDINGS_DIR = "demo/recordings"
AUDIO_SUFFIXES = (".flac", ".wav")


@dataclass
class DemoModel:
    name: str
    cfg: Config


@dataclass
class Recording:
    """A real recording without a clean reference: ``wav`` [N] float32 at the models' rate;
    ``note`` says what it is and where it comes from (``manifest.csv`` beside it)."""
    name: str
    wav: np.ndarray
    note: str = ""


def load_recordings(folder: str | Path, sample_rate: int = 16000) -> list[Recording]:
    """The sound files of ``folder`` (sorted by name) as :class:`Recording`, each with the
    ``kind`` and ``description`` of its row in ``folder/manifest.csv`` as its note."""
    from .audio import load_audio

    folder = Path(folder)
    notes = {}
    if (folder / "manifest.csv").is_file():
        with open(folder / "manifest.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                notes[row["file"]] = f"{row.get('description', '')} [{row.get('kind', '')}]"
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    return [Recording(p.stem, load_audio(p, sample_rate), notes.get(p.name, "")) for p in files]


def _shipped_cards() -> list[dict]:
    from . import zoo
    return zoo.list_models()


def shipped_on_recordings(recordings_dir: str | Path = RECORDINGS_DIR
                          ) -> tuple[dict, list[Recording], str]:
    """What the report's real-recordings section needs: (shipped models by name, recordings,
    note). Models and recordings are empty when something is missing; the note then names it."""
    from . import zoo

    rec_dir = Path(recordings_dir)
    names = [n for n in SHIPPED_FOR_DEMO if n in zoo.shipped_names()]
    if not names:
        return {}, [], (f"Shipped models on real recordings: skipped: no shipped model "
                        f"({', '.join(SHIPPED_FOR_DEMO)}) in {zoo.WEIGHTS_DIR} yet.")
    files = sorted(p for p in rec_dir.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        return {}, [], (f"Shipped models on real recordings: skipped: no recordings (.flac, "
                        f".wav) in {rec_dir} (run from the repository root).")
    models = {n: load_model(n)[0] for n in names}
    sr = next(iter(models.values())).cfg.stft.sample_rate
    recordings = load_recordings(rec_dir, sr)
    seconds = sum(r.wav.size for r in recordings) / sr
    note = (f"The shipped models ({', '.join(names)}; dyncp/weights/, trained on real speech and "
            f"noise) on {len(recordings)} real noisy recordings bundled in {rec_dir} "
            f"({seconds:.1f} s; sources and licences in its README.md). There is no clean "
            "reference, so there are no scores: listen, and see which channels each DynCP model "
            "switched off on each file.")
    return models, recordings, note


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _load(path: Path, overrides: list[str], name: str) -> Config:
    if not path.is_file():
        raise ConfigError(f"demo config not found: {path} (run from the repository root, or pass "
                          f"--static-config/--dyncp-config)")
    return load_config(path, list(overrides) + [f"name={name}"])


def _evaluate_cached(ckpt: Path, out_json: Path, pairs, progress: bool) -> dict:
    from .evaluate import evaluate

    if out_json.is_file() and out_json.stat().st_mtime >= ckpt.stat().st_mtime:
        return json.loads(out_json.read_text())
    model, _ = load_model(ckpt)
    result = evaluate(model, pairs, progress=progress)
    write_json(out_json, result)
    return result


def check_expectations(rows: list[dict]) -> list[tuple[str, bool]]:
    """The demo's promises (issue 5) as (statement, holds) pairs."""
    by = {r["model"]: r for r in rows}
    noisy, out = by.get("noisy"), []
    for r in rows:
        if r["model"] == "noisy" or noisy is None:
            continue
        out.append((f"{r['model']} improves PESQ-WB over noisy ({r['pesq_wb']:.3f} > "
                    f"{noisy['pesq_wb']:.3f})", r["pesq_wb"] > noisy["pesq_wb"]))
        out.append((f"{r['model']} improves SI-SDR over noisy ({r['si_sdr']:.2f} > "
                    f"{noisy['si_sdr']:.2f} dB)", r["si_sdr"] > noisy["si_sdr"]))
        if r.get("prune_target") is not None:
            err = abs(r["pruning_ratio"] - r["prune_target"])
            out.append((f"{r['model']} measured Φ {r['pruning_ratio']:.3f} within "
                        f"{EXPECT_PHI_TOL} of its target {r['prune_target']:.2f}",
                        err <= EXPECT_PHI_TOL))
            out.append((f"{r['model']} dynamic MACs {r['macs_saved_fraction']:.1%} below the "
                        f"static model's (goal >= {EXPECT_MIN_MACS_SAVED:.0%})",
                        r["macs_saved_fraction"] >= EXPECT_MIN_MACS_SAVED))
    return out


def run_demo(out: str | Path = "runs/demo", static_config: str | Path = "configs/demo_static.toml",
             dyncp_config: str | Path = "configs/demo_dyncp.toml", overrides: list[str] | None = None,
             n_examples: int = 3, progress: bool = True,
             recordings: str | Path = RECORDINGS_DIR) -> dict:
    """Run the whole demo; returns ``{"rows", "checks", "report", "recordings"}`` (the last:
    names of the real recordings in the report, empty when that section was skipped)."""
    from .data import build_builtin, eval_pairs
    from .report import build_report, format_table
    from .train import train

    out = Path(out)
    overrides = list(overrides or [])
    models = [DemoModel("static", _load(Path(static_config), overrides, "static")),
              DemoModel("dyncp", _load(Path(dyncp_config), overrides, "dyncp"))]
    if models[0].cfg.gate.enabled or not models[1].cfg.gate.enabled:
        raise ConfigError("demo: the static config must have gate.enabled = false and the dyncp "
                          "config gate.enabled = true")
    # The shipped models and recordings are read first: a broken file fails before the training.
    rec_models, recs, rec_note = shipped_on_recordings(recordings)
    out.mkdir(parents=True, exist_ok=True)          # after the configs: a bad --set writes nothing
    t0 = time.time()
    _log("building (or reusing) the built-in corpus ...")
    root = build_builtin(models[0].cfg, progress=progress)
    _log(f"corpus ready at {root}")

    ckpts = {}
    for m in models:
        run_dir = out / m.name
        resume = (run_dir / "state.pt").is_file()
        _log(f"training {m.name} ({'resuming' if resume else 'from scratch'}) -> {run_dir}")
        ckpts[m.name] = train(m.cfg, run_dir, resume=resume, progress=progress)

    pairs = eval_pairs("builtin", models[0].cfg, split="test")
    evals, loaded = {}, {}
    for m in models:
        _log(f"evaluating {m.name} on the built-in test split ({len(pairs)} files) ...")
        evals[m.name] = _evaluate_cached(ckpts[m.name], out / f"eval_{m.name}.json", pairs,
                                         progress)
        loaded[m.name], _ = load_model(ckpts[m.name])

    t_rec = time.time()
    if rec_models:
        _log(f"real recordings: {len(recs)} files x shipped {', '.join(rec_models)} ...")
    else:
        _log(rec_note)
    _log("writing the report ...")
    report = build_report(out / "report", loaded, evals, pairs, n_examples=n_examples,
                          title="dyncp demo: static vs DynCP on the built-in corpus",
                          notes=f"Built-in corpus (eSpeak NG speech + generated noise), test "
                                f"split of {len(pairs)} files. Configs: {static_config}, "
                                f"{dyncp_config}.",
                          recordings=recs, recording_models=rec_models,
                          recordings_note=rec_note, shipped=_shipped_cards())
    _log(f"report written in {time.time() - t_rec:.1f} s")
    rows = json.loads((out / "report" / "results.json").read_text())
    write_json(out / "results.json", rows)
    checks = check_expectations(rows)
    print()
    print(format_table(rows))
    print()
    for statement, ok in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {statement}")
    print(f"\ndemo finished in {time.time() - t0:.0f} s; report: {report.resolve()}")
    return {"rows": rows, "checks": checks, "report": report,
            "recordings": [r.name for r in recs]}

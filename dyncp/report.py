"""Figures and the HTML report: the paper's Fig. 1, the quality/compute trade-off, audio examples.

- :func:`channel_state_figure` draws Fig. 1 of the paper for one file: the noisy spectrogram, one
  channel-state map per gated block (white = kept, black = omitted) with the instantaneous pruning
  ratio drawn over it and the block average in its title, and the enhanced spectrogram.
- :func:`tradeoff_figure` plots PESQ against dynamic MMAC/s for the static model and every DynCP
  model (the noisy input as a reference line).
- :func:`build_report` writes a self-contained folder (``report.html``, ``figures/*.png``,
  ``audio/*.wav``) that opens in a browser without a server; with ``recordings`` it adds a
  section on real recordings without a clean reference (:func:`recording_examples`: audio
  players and Fig. 1 per gated model, no scores).

The figures read the same gate tensors as the loss and the MAC counter (``model.forward``).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_path, write_json, write_text
from .audio import save_audio
from .enhance import enhance_tensor
from .model import ConvFSENet

#: Columns of the demo/report results table: (key, header, format).
RESULT_COLUMNS = [
    ("model", "model", "{}"),
    ("pesq_wb", "PESQ-WB", "{:.3f}"),
    ("stoi", "STOI", "{:.3f}"),
    ("si_sdr", "SI-SDR (dB)", "{:.2f}"),
    ("dynamic_mmac_per_s", "dyn. MMAC/s", "{:.2f}"),
    ("macs_saved_fraction", "MACs saved", "{:.1%}"),
    ("pruning_ratio", "Φ measured", "{:.3f}"),
    ("prune_target", "Φ target", "{:.2f}"),
]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def save_figure(fig, path: str | Path, dpi: int = 90) -> Path:
    """Lay out, write atomically (creating the folder) and close a matplotlib figure; returns
    the path. The format follows the suffix."""
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or None)
    finally:
        _plt().close(fig)
    return path


# -- results rows --------------------------------------------------------------------------------
def results_rows(evals: dict[str, dict], targets: dict[str, float | None],
                 static_name: str | None = "static") -> list[dict]:
    """One row for the noisy input and one per evaluated model, keys of :data:`RESULT_COLUMNS`.

    ``evals``: model name -> evaluation JSON (``dyncp.evaluate.evaluate``); ``targets``: model
    name -> its Φ_trgt (None for a static model). ``macs_saved_fraction`` is measured against the
    static model's dense MACs (``static_name``), or the model's own dense count without one.
    """
    if not evals:
        raise ValueError("results_rows needs at least one evaluation")
    first = next(iter(evals.values()))
    noisy = first["noisy"]
    rows = [{"model": "noisy", "pesq_wb": noisy.get("pesq_wb"), "stoi": noisy.get("stoi"),
             "si_sdr": noisy.get("si_sdr"), "dynamic_mmac_per_s": None,
             "macs_saved_fraction": None, "pruning_ratio": None, "prune_target": None}]
    ref = None
    if static_name and static_name in evals:
        ref = evals[static_name]["mean"]["static_macs_per_frame"]
    for name, ev in evals.items():
        m = ev["mean"]
        base = ref if ref is not None else m["static_macs_per_frame"]
        rows.append({
            "model": name, "pesq_wb": m.get("pesq_wb"), "stoi": m.get("stoi"),
            "si_sdr": m.get("si_sdr"), "dynamic_mmac_per_s": m.get("dynamic_mmac_per_s"),
            "macs_saved_fraction": 1.0 - m["dynamic_macs_per_frame"] / base,
            "pruning_ratio": m.get("pruning_ratio"), "prune_target": targets.get(name),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    """Plain-text table of :func:`results_rows` for the terminal."""
    cells = [[h for _, h, _ in RESULT_COLUMNS]]
    cells += [[_fmt(r.get(k), f) for k, _, f in RESULT_COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(RESULT_COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- figures -------------------------------------------------------------------------------------
def _db(spec: torch.Tensor) -> np.ndarray:
    return (20 * torch.log10(spec.abs() + 1e-6)).numpy()


def channel_state_figure(model: ConvFSENet, noisy: np.ndarray, path: str | Path,
                         title: str = "", enhanced: tuple | None = None) -> dict:
    """The paper's Fig. 1 for one signal ``noisy`` [N] at the model's rate; writes a PNG.

    ``enhanced``: ``enhance_tensor(model, noisy[None])``'s (wav [1, N], gates) when the caller
    has them already (saves enhancing twice).
    Returns ``{"path", "frames", "panels": [{"block", "channels", "frames", "pruning_ratio"}]}``
    describing what was drawn (tests check it against the model).
    """
    if not model.gated:
        raise ValueError("channel_state_figure needs a gated model (this one has no gates)")
    plt = _plt()
    cfg = model.cfg
    from .dsp import stft

    model.eval()
    wav = torch.as_tensor(np.asarray(noisy, dtype=np.float32)).unsqueeze(0)
    if enhanced is None:
        with torch.inference_mode():
            enhanced = enhance_tensor(model, wav)
    est, gates = enhanced
    spec_n, spec_e = stft(wav, cfg.stft)[0], stft(est, cfg.stft)[0]
    n_frames = spec_n.shape[-1]
    t_end = n_frames / cfg.stft.frames_per_second
    f_end = cfg.stft.sample_rate / 2000
    nb = len(gates)
    heights = [2.0] + [1.0] * nb + [2.0]
    fig, axes = plt.subplots(nb + 2, 1, figsize=(10, 1.2 * sum(heights) + 0.8), sharex=True,
                             gridspec_kw={"height_ratios": heights})
    vmax = float(_db(spec_n).max())
    extent = (0, t_end, 0, f_end)
    axes[0].imshow(_db(spec_n), origin="lower", aspect="auto", extent=extent, cmap="magma",
                   vmin=vmax - 80, vmax=vmax)
    axes[0].set_title("noisy input")
    axes[0].set_ylabel("kHz")
    panels = []
    for i, g in enumerate(gates):
        state = g[0].numpy()                                   # [H, T], 1 = kept
        ratio = 1.0 - state.mean(axis=0)                       # instantaneous pruning ratio [T]
        avg = float(1.0 - state.mean())
        ax = axes[1 + i]
        ax.imshow(state, origin="lower", aspect="auto", cmap="gray", vmin=0, vmax=1,
                  extent=(0, t_end, 0, state.shape[0]), interpolation="nearest")
        ax.set_ylabel(f"B{i}", rotation=0, labelpad=14, va="center")
        ax.set_yticks([])
        tw = ax.twinx()
        times = (np.arange(n_frames) + 0.5) / cfg.stft.frames_per_second
        tw.plot(times, ratio, color="#ff2020", lw=1.2)
        tw.set_ylim(0, 1)
        tw.set_yticks([0, 1])
        tw.tick_params(labelsize=6)
        ax.set_title(f"block {i}: mean pruning ratio {avg:.2f}", fontsize=8, loc="left", pad=2)
        panels.append({"block": i, "channels": int(state.shape[0]), "frames": int(state.shape[1]),
                       "pruning_ratio": avg})
    axes[-1].imshow(_db(spec_e), origin="lower", aspect="auto", extent=extent, cmap="magma",
                    vmin=vmax - 80, vmax=vmax)
    axes[-1].set_title("enhanced")
    axes[-1].set_ylabel("kHz")
    axes[-1].set_xlabel("time (s)")
    overall = float(1.0 - torch.stack(gates).mean())
    fig.suptitle(title or f"{cfg.name}: channel states (white kept, black omitted), "
                 f"red = instantaneous pruning ratio; overall {overall:.2f}", fontsize=9)
    path = save_figure(fig, path)
    return {"path": str(path), "frames": int(n_frames), "panels": panels,
            "pruning_ratio": overall}


def tradeoff_figure(rows: list[dict], path: str | Path) -> Path:
    """PESQ-WB against dynamic MMAC/s: one point per model, the noisy input as a dashed line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["model"] == "noisy":
            if r.get("pesq_wb") is not None:
                ax.axhline(r["pesq_wb"], color="gray", ls="--", lw=1, label="noisy input")
            continue
        gated = r.get("prune_target") is not None
        ax.scatter(r["dynamic_mmac_per_s"], r["pesq_wb"], s=60, marker="o" if gated else "s",
                   color="tab:blue" if gated else "tab:orange", zorder=3)
        label = r["model"] + (f"  Φ={r['pruning_ratio']:.2f}" if gated else "")
        ax.annotate(label, (r["dynamic_mmac_per_s"], r["pesq_wb"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    ax.set_xlabel("dynamic MMAC per second of audio")
    ax.set_ylabel("PESQ-WB")
    ax.set_title("quality vs compute (squares: static, circles: DynCP)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


# -- HTML ----------------------------------------------------------------------------------------
def _table_html(rows: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in RESULT_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td data-key='{k}'>{html.escape(_fmt(r.get(k), f))}</td>"
                         for k, _, f in RESULT_COLUMNS) + "</tr>" for r in rows)
    return f"<table id='results'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _per_block_html(evals: dict[str, dict]) -> str:
    parts = []
    for name, ev in evals.items():
        pb = ev["mean"].get("pruning_ratio_per_block")
        if not pb:
            continue
        cells = "".join(f"<td>{v:.3f}</td>" for v in pb)
        heads = "".join(f"<th>B{i}</th>" for i in range(len(pb)))
        m = ev["mean"]
        dyn = "".join(
            f"<li>{html.escape(k)}: {html.escape(_fmt(m.get(k), '{:.3f}'))}</li>"
            for k in ("pruning_ratio_frame_std", "channels_never_on", "channels_always_on",
                      "pruning_ratio_speech", "pruning_ratio_nonspeech") if k in m)
        parts.append(f"<h3>{html.escape(name)}: pruning ratio per block</h3>"
                     f"<table><tr>{heads}</tr><tr>{cells}</tr></table><ul>{dyn}</ul>")
    return "".join(parts)


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}img{max-width:100%;
border:1px solid #ddd}.ex{margin:1.5em 0;padding:1em;border:1px solid #eee}
.note{color:#555;font-size:90%}audio{vertical-align:middle;margin-right:1em}"""


def _example_html(ex: dict, cls: str = "ex") -> str:
    players = "".join(f"<div>{html.escape(label)} <audio controls preload='none' "
                      f"src='{html.escape(src)}'></audio></div>"
                      for label, src in ex["audio"])
    figs = "".join(f"<img src='{html.escape(f)}' alt='channel states'>" for f in ex["figures"])
    note = f"<p class='note'>{html.escape(ex['note'])}</p>" if ex.get("note") else ""
    return f"<div class='{cls}'><h3>{html.escape(ex['name'])}</h3>{note}{players}{figs}</div>"


def _recordings_html(recordings: list[dict] | None, note: str) -> str:
    """The real-recordings section, or only its note (why it is missing) without recordings."""
    if not recordings:
        return (f"<p class='note' id='real-recordings-skipped'>{html.escape(note)}</p>"
                if note else "")
    return (f"<h2 id='real-recordings'>Shipped models on real recordings</h2>"
            f"<p class='note'>{html.escape(note)}</p>"
            + "".join(_example_html(ex, "ex real") for ex in recordings))


def write_html(out_dir: Path, rows: list[dict], evals: dict[str, dict], figures: dict[str, str],
               examples: list[dict], title: str = "dyncp report", notes: str = "",
               recordings: list[dict] | None = None, recordings_note: str = "",
               shipped: str = "") -> Path:
    """Write ``out_dir/report.html``. ``figures``/``examples`` hold paths relative to out_dir;
    ``shipped``: the shipped-models section (:func:`dyncp.report_zoo.shipped_html`);
    ``recordings`` (from :func:`recording_examples`) adds the section on real recordings,
    introduced by ``recordings_note``; without recordings the note alone says why."""
    ex_html = [_example_html(ex) for ex in examples]
    fig_html = "".join(f"<h3>{html.escape(k)}</h3><img src='{html.escape(v)}' alt='{html.escape(k)}'>"
                       for k, v in figures.items())
    doc = f"""<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>
<p class='note'>{html.escape(notes)}</p>
<h2>Quality and compute</h2>{_table_html(rows)}
<p class='note'>MACs count convolution multiply-accumulates per second of audio (bias, norm,
activations and gate pooling excluded); dynamic MACs include the gates' own cost. Φ is the share of
gated channels omitted, averaged over files, frames, channels and blocks.</p>
{fig_html}{_per_block_html(evals)}
<h2>Examples: which channels the gates switched off, and when</h2>{''.join(ex_html)}
{shipped}{_recordings_html(recordings, recordings_note)}
<script type='application/json' id='results-json'>{json.dumps(rows)}</script>
<script>window.addEventListener('load', function () {{
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {{ if (imgs[i].naturalWidth > 0) ok++; }}
  document.body.setAttribute('data-images-total', imgs.length);
  document.body.setAttribute('data-images-loaded', ok);
}});</script>
</body></html>"""
    return write_text(Path(out_dir) / "report.html", doc)


def build_report(out_dir: str | Path, models: dict[str, ConvFSENet], evals: dict[str, dict],
                 pairs: list, targets: dict[str, float | None] | None = None,
                 n_examples: int = 3, title: str = "dyncp report", notes: str = "",
                 static_name: str | None = "static", recordings: list | None = None,
                 recording_models: dict[str, ConvFSENet] | None = None,
                 recordings_note: str = "", shipped: list[dict] | None = None) -> Path:
    """Evaluated models + a few example pairs -> a self-contained report folder.

    ``pairs``: objects with ``name``, ``noisy``, ``clean`` (numpy [N] at the models' rate).
    ``recordings`` (objects with ``name``, ``wav`` [N] at ``recording_models``' rate and
    ``note``) are enhanced by ``recording_models`` (e.g. the shipped ones) into a section of
    their own (:func:`recording_examples`); ``recordings_note`` introduces it, or says why it
    is missing. ``shipped`` (:func:`dyncp.zoo.list_models`) adds the shipped models' quality
    against compute from their cards. Returns the path of ``report.html``.
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    if targets is None:
        targets = {n: (m.cfg.loss.prune_target if m.gated else None) for n, m in models.items()}
    rows = results_rows(evals, targets, static_name)
    write_json(out / "results.json", rows)
    figures = {"Quality vs compute": str(tradeoff_figure(rows, out / "figures" / "tradeoff.png")
                                         .relative_to(out))}
    examples = []
    for pair in _pick_examples(pairs, n_examples):
        sr = next(iter(models.values())).cfg.stft.sample_rate
        stem = _safe(pair.name)
        audio = [("noisy", _rel(save_audio(out / "audio" / f"{stem}_noisy.wav", pair.noisy, sr), out)),
                 ("clean", _rel(save_audio(out / "audio" / f"{stem}_clean.wav", pair.clean, sr), out))]
        more, figs, _ = _enhance_example(out, stem, pair.name, pair.noisy, models)
        examples.append({"name": pair.name, "audio": audio + more, "figures": figs})
    real = (recording_examples(out, recording_models, recordings)
            if recordings and recording_models else None)
    from .report_zoo import shipped_section
    return write_html(out, rows, evals, figures, examples, title=title, notes=notes,
                      recordings=real, recordings_note=recordings_note,
                      shipped=shipped_section(out, shipped or []))



def _enhance_example(out: Path, stem: str, label: str, noisy: np.ndarray,
                     models: dict[str, ConvFSENet]) -> tuple[list, list, dict]:
    """Enhance ``noisy`` [N] with every model: audio ``out/audio/STEM_MODEL.wav``, and Fig. 1
    ``out/figures/fig1_STEM_MODEL.png`` for each gated model. Returns (audio [(model, path)],
    figure paths, {gated model: Φ on this signal}), paths relative to ``out``."""
    audio, figs, phi = [], [], {}
    for name, model in models.items():
        sr = model.cfg.stft.sample_rate
        model.eval()
        with torch.inference_mode():
            est, gates = enhance_tensor(model, torch.from_numpy(noisy).unsqueeze(0))
        audio.append((name, _rel(save_audio(out / "audio" / f"{stem}_{_safe(name)}.wav",
                                            est[0].numpy(), sr), out)))
        if model.gated:
            info = channel_state_figure(model, noisy,
                                        out / "figures" / f"fig1_{stem}_{_safe(name)}.png",
                                        title=f"{name} on {label}: channel states "
                                              "(white kept, black omitted); red: "
                                              "instantaneous pruning ratio",
                                        enhanced=(est, gates))
            figs.append(_rel(Path(info["path"]), out))
            phi[name] = info["pruning_ratio"]
    return audio, figs, phi


def recording_examples(out_dir: str | Path, models: dict[str, ConvFSENet],
                       recordings: list) -> list[dict]:
    """Real recordings without a clean reference, enhanced by every model.

    ``recordings``: objects with ``name``, ``wav`` (numpy [N] at the models' rate) and ``note``
    (where it comes from). Writes ``audio/real_NAME_noisy.wav``, ``audio/real_NAME_MODEL.wav`` and,
    per gated model, ``figures/fig1_real_NAME_MODEL.png`` under ``out_dir``; returns one example
    per recording for :func:`write_html` (name, note with each gated model's Φ on the file,
    audio, figures).
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    sr = next(iter(models.values())).cfg.stft.sample_rate
    examples = []
    for rec in recordings:
        stem = "real_" + _safe(rec.name)
        wav = np.asarray(rec.wav, dtype=np.float32)
        audio = [("noisy", _rel(save_audio(out / "audio" / f"{stem}_noisy.wav", wav, sr), out))]
        more, figs, phi = _enhance_example(out, stem, rec.name, wav, models)
        measured = "; ".join(f"{n}: Φ {v:.2f} on this file" for n, v in phi.items())
        note = " ".join(x for x in (rec.note, f"({measured})" if measured else "") if x)
        examples.append({"name": rec.name, "note": note, "audio": audio + more,
                         "figures": figs})
    return examples


def _pick_examples(pairs: list, n: int) -> list:
    """Spread the examples over the set (first, middle, last ...), deterministic."""
    if n <= 0 or not pairs:
        return []
    idx = sorted({round(i * (len(pairs) - 1) / max(n - 1, 1)) for i in range(min(n, len(pairs)))})
    return [pairs[i] for i in idx]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]


def _rel(p: Path, root: Path) -> str:
    return str(Path(p).relative_to(root))

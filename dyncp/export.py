"""ONNX export of the streaming step, verified with onnxruntime before it is reported.

The graph is ``ConvFSENet.step``: one frame in, one frame out, the state passed explicitly::

    inputs : mag_t [1, F], then per block i: pool_i [1, B_res, L-1], dw_i [1, H, (k-1)*d_i]
    outputs: mask_t [1, F], gates [n_blocks, 1, H] (float 0/1; absent for a static model),
             then per block i: pool_i_out, dw_i_out (feed them back as pool_i, dw_i)

Zero-size state (a static model's pooling cache) is kept inside the graph, not exposed.
Start a stream with all-zero state tensors.

What a deployer needs around the graph is in the file's ``metadata_props``
(:func:`metadata`): sample rate, n_fft, hop, window, padding, how the input is made and the
output applied, the state names, shapes and initial values, the config. docs/deploy.md shows
the frame loop in numpy + onnxruntime. The ONNX graph computes every channel densely and
multiplies by the gate mask (the training semantics): it gives the same output as the sparse
runtime, not its savings; ONNX has no per-frame data-dependent channel skipping.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import atomic_path
from .errors import DyncpError
from .model import ConvFSENet, budget_code, require_causal

OPSET = 17


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as e:
        raise DyncpError(f"ONNX export needs the optional packages onnx and onnxruntime "
                         f"({e.name} is missing): pip install 'dyncp[export]'") from None
    return onnxruntime


def state_names(model: ConvFSENet) -> list[str | None]:
    """Name of each entry of ``model.initial_state(1)``; None for zero-size (internal) ones."""
    names: list[str | None] = []
    for i, s in enumerate(model.initial_state(1)):
        names.append(None if s.numel() == 0 else f"{'pool' if i % 2 == 0 else 'dw'}_{i // 2}")
    return names


class StepGraph(nn.Module):
    """``model.step`` with flat tensor inputs/outputs, the form the exporter traces."""

    def __init__(self, model: ConvFSENet) -> None:
        super().__init__()
        self.model = model
        self.names = state_names(model)
        self.empty = [s for s in model.initial_state(1)]

    def forward(self, mag_t: torch.Tensor, *inputs: torch.Tensor):
        """``(mag_t, *states)``, or for a budget model ``(mag_t, phi [1], *states)``: the
        requested Φ is an input, 0 meaning every channel on (the gates still run in the graph;
        only the C and numba runtimes skip them)."""
        code = force_on = None
        if self.model.budgeted:
            phi, inputs = inputs[0].reshape(1), inputs[1:]
            code, force_on = budget_code(self.model.budget_table, phi), phi <= 0
        it = iter(inputs)
        full = [next(it) if n is not None else e for n, e in zip(self.names, self.empty)]
        mask, gates, new = self.model.step(mag_t, full, code=code, force_on=force_on)
        keep = [s for n, s in zip(self.names, new) if n is not None]
        if gates:
            return (mask, torch.stack(gates), *keep)
        return (mask, *keep)


def metadata(model: ConvFSENet) -> dict[str, str]:
    """The ONNX ``metadata_props``: everything around the graph a deployer would otherwise guess."""
    import json

    from . import __version__

    cfg = model.cfg
    st = cfg.stft
    states = [{"name": n, "output": f"{n}_out", "shape": list(s.shape), "dtype": "float32",
               "initial": "zeros"}
              for n, s in zip(state_names(model), model.initial_state(1)) if n is not None]
    meta = {
        "producer": f"dyncp {__version__}", "model": cfg.name,
        "sample_rate": str(st.sample_rate), "n_fft": str(st.n_fft), "hop": str(st.hop),
        "n_freq": str(st.n_freq),
        "window": f"hann, periodic, {st.n_fft} samples (torch.hann_window(n_fft, periodic=True))",
        "padding": f"centered with zeros: {st.n_fft // 2} zeros before the first sample (and "
                   f"after the last); frame t covers samples [t*hop - n_fft/2, t*hop + n_fft/2)",
        "input": "mag_t [1, n_freq] float32 = |rfft(window * frame)| of one frame (any "
                 "feature compression is inside the graph)",
        "output": "mask_t [1, n_freq] in [0, 1]: enhanced spectrum = mask_t * rfft(window * "
                  "frame) (noisy phase); synthesis: overlap-add window * irfft(spectrum, n_fft), "
                  "divided by the overlap-added window^2 (torch.istft)",
        "state": json.dumps(states),
        "state_usage": "start with zeros; feed each state's *_out of frame t as its input at "
                       "frame t+1",
        "gates": (f"gates [{cfg.model.n_blocks}, 1, {cfg.model.hidden}] float 0/1, 1 = channel "
                  f"computed (the graph computes all channels and applies the mask)"
                  if model.gated else "none (static model)"),
        "latency_samples": str(st.n_fft),
        "feature_compress": str(cfg.model.feature_compress),
        "config": json.dumps(cfg.to_dict()),
    }
    if model.budgeted:
        from .budget import feasible
        f = feasible(cfg)
        meta["budget"] = (f"input phi [1] float32: the requested pruning ratio, changeable every "
                          f"frame: 0 (every channel on, {f['mmac_static']:.2f} MMAC/s where a "
                          f"runtime skips the gates) or {f['phi_min']:g} to {f['phi_max']:g} "
                          f"({f['mmac_at_phi_min']:.2f} down to {f['mmac_min']:.2f} MMAC/s); "
                          f"the calibration table is inside the graph")
    return meta


def _add_metadata(path: str | Path, model: ConvFSENet) -> None:
    import onnx

    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, metadata(model))
    onnx.save(proto, str(path))


def verify(path: str | Path, model: ConvFSENet, frames: int = 128, seed: int = 0) -> dict:
    """Run the ONNX file and ``model.step`` side by side for ``frames`` frames, each with its own
    fed-back state, on random magnitudes. Returns max abs differences; raises DyncpError when
    the mask differs by more than 1e-4, a gate differs, or a state differs by more than 1e-4."""
    ort = _require_onnx()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = state_names(model)
    gen = torch.Generator().manual_seed(seed)
    n_freq = model.cfg.stft.n_freq
    t_state = model.initial_state(1)
    o_state = {n: s.numpy() for n, s in zip(names, t_state) if n is not None}
    out_names = [o.name for o in sess.get_outputs()]
    diff = {"mask": 0.0, "state": 0.0, "gate_mismatches": 0, "frames": frames}
    g_cfg = model.cfg.gate
    # a budget model: a budget that changes every few frames, 0 and both ends of the range
    schedule = (0.5, g_cfg.budget_min, 0.0, g_cfg.budget_max, 0.3, 0.75)
    for t in range(frames):
        # |STFT|-like input: positive, heavy-tailed, some silent frames
        mag = torch.rand(1, n_freq, generator=gen) ** 3 * (4.0 if t % 7 else 0.01)
        feed = {"mag_t": mag.numpy(), **o_state}
        phi = None
        if model.budgeted:
            phi = schedule[(t // 5) % len(schedule)]
            feed["phi"] = np.array([phi], np.float32)
        with torch.inference_mode():
            mask, gates, t_state = model.step(mag, t_state, phi=phi)
        res = dict(zip(out_names, sess.run(None, feed)))
        diff["mask"] = max(diff["mask"], float(np.abs(res["mask_t"] - mask.numpy()).max()))
        if model.gated:
            g = (torch.stack(gates).numpy() if gates else     # Φ = 0: every channel on
                 np.ones((model.cfg.model.n_blocks, 1, model.cfg.model.hidden), np.float32))
            diff["gate_mismatches"] += int((res["gates"] != g).sum())
        for n, s in zip(names, t_state):
            if n is not None:
                o_state[n] = res[f"{n}_out"]
                diff["state"] = max(diff["state"], float(np.abs(o_state[n] - s.numpy()).max()))
    if diff["mask"] > 1e-4 or diff["state"] > 1e-4 or diff["gate_mismatches"]:
        raise DyncpError(f"{path}: onnxruntime disagrees with the PyTorch step over {frames} "
                         f"frames (mask max abs diff {diff['mask']:.2e}, state "
                         f"{diff['state']:.2e}, {diff['gate_mismatches']} gate mismatches)")
    return diff


def export_onnx(model: ConvFSENet, path: str | Path, frames: int = 128) -> dict:
    """Export the streaming step of a causal ``model`` to ``path`` and verify it with
    onnxruntime over ``frames`` (>= 100) frames. Written to a temporary file first: on any
    failure no file is left at ``path``. Returns the verification summary (max abs diffs)."""
    _require_onnx()
    require_causal(model.cfg, "ONNX export (of the streaming step)")
    if frames < 100:
        raise ValueError(f"verify over at least 100 frames, got {frames}")
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = StepGraph(model).eval()
    names = state_names(model)
    inputs = ["mag_t"] + (["phi"] if model.budgeted else []) + [n for n in names if n is not None]
    outputs = ["mask_t"] + (["gates"] if model.gated else []) + [
        f"{n}_out" for n in names if n is not None]
    args = (torch.zeros(1, model.cfg.stft.n_freq),
            *([torch.full((1,), 0.5)] if model.budgeted else []),
            *[s for n, s in zip(names, model.initial_state(1)) if n is not None])
    with atomic_path(path) as tmp:      # a failed export or verification leaves no file
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notes
            torch.onnx.export(graph, args, str(tmp), input_names=inputs, output_names=outputs,
                              opset_version=OPSET, dynamo=False)
        _add_metadata(str(tmp), model)
        summary = verify(str(tmp), model, frames)
    summary.update(path=str(path), inputs=inputs, outputs=outputs, opset=OPSET,
                   bytes=path.stat().st_size)
    return summary

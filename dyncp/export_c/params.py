"""The numbers the C library is made of: folded fp32 weights, int8 weights with their scales, and
the DSP tables (window, overlap-add normalisation, FFT twiddles).

Everything here is a pure function of the model (and, for int8, of activation ranges measured by
:func:`calibrate`). The writer (:mod:`dyncp.export_c.writer`) turns the arrays into C.

BatchNorm folding follows :mod:`dyncp.runtime` (where the reasons are written out): BN1's scale
folds into the PW1 row where it is positive, its shift stays per channel (the depthwise conv reads
zeros, not the shift, before the clip and across pruned frames); for fp32 BN2's scale folds into
the PW2 column with the shift kept as ``c2 / s2``. For int8 BN2 is *not* folded: the BN output
has a similar range in every channel, which is what one per-block activation scale needs.

int8 ([decided], not from the paper): weights int8, symmetric, one scale per output channel
(rows of front-end, PW1, gate layers and back-end; PW2's scale is per residual channel);
activations int16 (the spectrum and the residual stream scaled per frame by their maximum, the
hidden channels ``u`` by a calibrated per-channel range, ``v`` by a calibrated per-block range);
products accumulate in int32 (at most 260 terms of 127 x 32767 < 2^31). Per-channel constants
(biases, PReLU slopes, BN, depthwise taps) stay float: 12 floats a channel against 256 int8
weights. Dot-product rows are stored in groups of four as bytes ``[w0, w2, w1, w3]``, the order in
which Cortex-M's SXTB16 unpacks them into int16 pairs for SMLAD; the portable C reads them the
same way, so both give the same integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..model import ConvFSENet

N_CONST_F32 = 8          # b1 a1 s1 c1 bd a2 s2 c2 (per channel, fp32 variant)
HEADROOM = 2.0           # calibrated activation ranges x2 (6 dB; costs 1 of int16's 15 bits)
Q_ACT = 32767.0
Q_W = 127.0


def ceil_to(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass(frozen=True)
class Geometry:
    """Every size the C code is compiled for, from the model's config."""

    sample_rate: int
    n_fft: int
    hop: int
    n_freq: int
    res: int
    hid: int
    kernel: int
    dilations: tuple[int, ...]
    gated: bool
    pool: int
    red: int
    min_active: int
    compress: float
    budget: bool = False          # gate.budget: Φ chosen at run time (docs/budget.md)
    budget_min: float = 0.0
    budget_max: float = 0.0
    budget_nominal: float = 0.0   # loss.prune_target: the Φ of dyncp_init

    @classmethod
    def of(cls, model: ConvFSENet) -> "Geometry":
        c = model.cfg
        g = c.gate
        return cls(c.stft.sample_rate, c.stft.n_fft, c.stft.hop, c.stft.n_freq, c.model.residual,
                   c.model.hidden, c.model.kernel, tuple(c.model.block_dilations()),
                   bool(g.enabled), g.pool if g.enabled else 1, g.reduction if g.enabled else 1,
                   g.min_active if g.enabled else 0, float(c.model.feature_compress),
                   bool(g.enabled and g.budget), float(g.budget_min), float(g.budget_max),
                   float(c.loss.prune_target))

    @property
    def n_blocks(self) -> int:
        return len(self.dilations)

    @property
    def res_pad(self) -> int:    # dot products run 16 partial sums (fp32) or 4 int8 (SMLAD)
        return ceil_to(self.res, 16)

    @property
    def freq_pad(self) -> int:
        return ceil_to(self.n_freq, 16)

    @property
    def red_pad(self) -> int:
        return ceil_to(self.red, 16)

    @property
    def ring_lens(self) -> list[int]:
        """Depthwise ring length per block: (k-1)*d past frames + the current one."""
        return [(self.kernel - 1) * d + 1 for d in self.dilations]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _bn(bn: torch.nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    s = _np(bn.weight) / np.sqrt(_np(bn.running_var) + bn.eps)
    return s, _np(bn.bias) - _np(bn.running_mean) * s


def _block(blk) -> dict[str, np.ndarray]:
    """One block's weights, float64, BN1's positive scales folded into PW1 (exact)."""
    w1, b1 = _np(blk.pw1.weight)[:, :, 0], _np(blk.pw1.bias)
    s1, c1 = _bn(blk.bn1)
    pos = s1 > 0
    w1 = np.where(pos[:, None], w1 * s1[:, None], w1)
    b1 = np.where(pos, b1 * s1, b1)
    s1 = np.where(pos, 1.0, s1)
    s2, c2 = _bn(blk.bn2)
    H = w1.shape[0]
    d = dict(w1=w1, b1=b1, a1=_np(blk.act1.weight) * np.ones(H), s1=s1, c1=c1,
             dw=_np(blk.dw.weight)[:, 0, :], bd=_np(blk.dw.bias),
             a2=_np(blk.act2.weight) * np.ones(H), s2=s2, c2=c2,
             w2=_np(blk.pw2.weight)[:, :, 0], b2=_np(blk.pw2.bias))
    if blk.gate is not None:
        d.update(gw1=_np(blk.gate.score1.weight)[:, :, 0], gb1=_np(blk.gate.score1.bias),
                 gw2=_np(blk.gate.score2.weight)[:, :, 0], gb2=_np(blk.gate.score2.bias))
    return d


def _pad(a: np.ndarray, n: int, axis: int = -1) -> np.ndarray:
    width = [(0, 0)] * a.ndim
    width[axis] = (0, n - a.shape[axis])
    return np.pad(a, width)


def budget_params(model: ConvFSENet) -> dict[str, np.ndarray]:
    """A budget model's extra arrays: ``gk`` [n_blocks, H] = softplus(slope) (float32, as torch
    computes it) and ``budget_table`` [2, P] (requested Φ -> Φ code); empty otherwise."""
    if not Geometry.of(model).budget:
        return {}
    import torch.nn.functional as F

    with torch.no_grad():
        gk = torch.stack([F.softplus(b.gate.budget_slope.float()) for b in model.blocks])
    return {"gk": gk.numpy().astype(np.float32),
            "budget_table": model.budget_table.float().numpy().astype(np.float32)}


def fp32_params(model: ConvFSENet) -> dict[str, np.ndarray]:
    """Arrays of the fp32 variant (float32; layouts in the C source, ``dyncp_model.h``)."""
    g = Geometry.of(model)
    B, Bp, k, R = g.res, g.res_pad, g.kernel, g.red
    blocks = [_block(b) for b in model.blocks]
    stride = ceil_to(Bp + B + k + N_CONST_F32, 4)
    chan = np.zeros((g.n_blocks, g.hid, stride))
    out = {k_: np.zeros((g.n_blocks,) + s) for k_, s in
           (("pw2_b", (B,)), ("gw1", (R, Bp)), ("gb1", (R,)), ("gw2t", (R, g.hid)),
            ("gb2", (g.hid,)))}
    for i, d in enumerate(blocks):
        s2, c2 = d["s2"], d["c2"]
        nz = s2 != 0
        w2 = np.where(nz[None, :], d["w2"] * s2[None, :], d["w2"])
        c2 = np.where(nz, c2 / np.where(nz, s2, 1.0), c2)
        s2 = np.where(nz, 1.0, s2)
        chan[i, :, :B] = d["w1"]
        chan[i, :, Bp:Bp + B] = w2.T
        chan[i, :, Bp + B:Bp + B + k] = d["dw"]
        chan[i, :, Bp + B + k:Bp + B + k + N_CONST_F32] = np.stack(
            [d["b1"], d["a1"], d["s1"], d["c1"], d["bd"], d["a2"], s2, c2], axis=1)
        out["pw2_b"][i] = d["b2"]
        if g.gated:
            out["gw1"][i, :, :B], out["gb1"][i] = d["gw1"], d["gb1"]
            out["gw2t"][i], out["gb2"][i] = d["gw2"].T, d["gb2"]
    out.update(budget_params(model))
    out.update(chan=chan,
               front_w=_pad(_np(model.front.weight)[:, :, 0], g.freq_pad),  # [B, Fp]: dots
               front_b=_np(model.front.bias),
               back_w=_pad(_np(model.back.weight)[:, :, 0], Bp),          # [F, Bp]: dot per bin
               back_b=_np(model.back.bias))
    return {k_: np.ascontiguousarray(v, dtype=np.float32) for k_, v in out.items()}


# -- int8 -----------------------------------------------------------------------------------------
def quantize_rows(w: np.ndarray, pad: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: w [..., n] -> (q int8 [..., pad], scale float [...]), w ~ q*scale.
    An all-zero row gets scale 0 (its q is 0)."""
    m = np.abs(w).max(axis=-1)
    scale = m / Q_W
    q = np.round(w / np.where(scale > 0, scale, 1.0)[..., None])
    q = np.clip(q, -Q_W, Q_W).astype(np.int8)
    return (q if pad is None else _pad(q, pad)), scale


def smlad_order(q: np.ndarray) -> np.ndarray:
    """Reorder the last axis (a multiple of 4) in groups of four as [w0, w2, w1, w3]."""
    n = q.shape[-1]
    assert n % 4 == 0
    idx = np.arange(n).reshape(-1, 4)[:, [0, 2, 1, 3]].reshape(-1)
    return np.ascontiguousarray(q[..., idx])


@torch.no_grad()
def calibrate(model: ConvFSENet, wavs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Activation ranges on calibration audio: ``u`` [n_blocks, H] (max |u| per hidden channel,
    over frames where the channel is on) and ``v`` [n_blocks] (max |v| of the unfolded BN2
    output over active channels). The same modules as ``GatedBlock.forward``, unrolled to read u
    and v (offline, eval mode: the gates decide as in streaming). A budget model is measured at
    its nominal Φ and at Φ = 0 (every channel on), the extremes of what it will run."""
    from ..dsp import stft
    import torch.nn.functional as F

    model.eval()
    nb, H = len(model.blocks), model.cfg.model.hidden
    u_max, v_max = np.zeros((nb, H)), np.zeros(nb)
    codes: list = [None]
    if Geometry.of(model).budget:
        codes = [model.budget_code(torch.tensor([model.cfg.loss.prune_target])), "all"]
    for wav in wavs:
        mag = stft(torch.as_tensor(wav, dtype=torch.float32), model.cfg.stft).abs().unsqueeze(0)
        for code in codes:
            h = F.relu(model.front(model._features(mag)))
            for i, blk in enumerate(model.blocks):
                on = blk.gate is None or isinstance(code, str)
                g = torch.ones(1, H, h.shape[-1]) if on else blk.gate(h, code)
                u = blk.bn1(blk.act1(blk.pw1(h))) * g
                v = blk.bn2(blk.act2(blk.dw(F.pad(u, (blk.context, 0))))) * g
                u_max[i] = np.maximum(u_max[i], _np(u.abs().amax(dim=(0, 2))))
                v_max[i] = max(v_max[i], float(v.abs().max()))
                h = h + blk.pw2(v)
    return {"u": u_max, "v": v_max}


def int8_params(model: ConvFSENet, ranges: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays of the int8 variant. ``ranges``: :func:`calibrate`'s output. Channels never on in
    the calibration audio borrow their block's largest range."""
    g = Geometry.of(model)
    B, Bp, k, H = g.res, g.res_pad, g.kernel, g.hid
    f32: dict[str, list] = {n: [] for n in ("chan_f", "pw2_b", "pw2_k", "gw1_k", "gb1", "gw2_k",
                                            "gb2")}
    i8: dict[str, list] = {n: [] for n in ("chan_q", "gw1_q", "gw2_q")}
    for i, blk in enumerate(model.blocks):
        d = _block(blk)
        u_rng = ranges["u"][i].copy()
        u_rng[u_rng <= 0] = max(u_rng.max(), 1e-6)
        su = u_rng * HEADROOM / Q_ACT                                   # u ~ uq * su
        sv = max(ranges["v"][i], 1e-6) * HEADROOM / Q_ACT               # v ~ vq * sv
        w1q, k1 = quantize_rows(d["w1"], Bp)
        w2q, k2 = quantize_rows(d["w2"])                                # rows: residual channel b
        # per channel: k1 b1 a1 s1/su c1/su | dw*su (k) | bd a2 s2/sv c2/sv
        consts = np.concatenate([np.stack([k1, d["b1"], d["a1"], d["s1"] / su, d["c1"] / su], 1),
                                 d["dw"] * su[:, None],
                                 np.stack([d["bd"], d["a2"], d["s2"] / sv, d["c2"] / sv], 1)], 1)
        f32["chan_f"].append(consts)
        i8["chan_q"].append(np.concatenate([smlad_order(w1q), _pad(w2q.T, Bp)], axis=1))  # [H, 2Bp]
        f32["pw2_b"].append(d["b2"])
        f32["pw2_k"].append(k2 * sv)
        if g.gated:
            q, s = quantize_rows(d["gw1"], Bp)
            i8["gw1_q"].append(smlad_order(q)), f32["gw1_k"].append(s), f32["gb1"].append(d["gb1"])
            q, s = quantize_rows(d["gw2"], g.red_pad)
            i8["gw2_q"].append(smlad_order(q)), f32["gw2_k"].append(s), f32["gb2"].append(d["gb2"])
        else:
            i8["gw1_q"].append(np.zeros((1, Bp))), f32["gw1_k"].append(np.zeros(1))
            f32["gb1"].append(np.zeros(1))
            i8["gw2_q"].append(np.zeros((H, g.red_pad))), f32["gw2_k"].append(np.zeros(H))
            f32["gb2"].append(np.zeros(H))
    front_q, front_k = quantize_rows(_np(model.front.weight)[:, :, 0], g.freq_pad)  # [B, Fp]
    back_q, back_k = quantize_rows(_np(model.back.weight)[:, :, 0], Bp)            # [F, Bp]
    out = {n: np.ascontiguousarray(np.stack(v), dtype=np.float32) for n, v in f32.items()}
    out.update({n: np.ascontiguousarray(np.stack(v), dtype=np.int8) for n, v in i8.items()})
    out.update(budget_params(model))
    out.update(front_q=smlad_order(front_q), front_k=front_k.astype(np.float32),
               front_b=_np(model.front.bias).astype(np.float32),
               back_q=smlad_order(back_q), back_k=back_k.astype(np.float32),
               back_b=_np(model.back.bias).astype(np.float32))
    return out


# -- DSP tables -----------------------------------------------------------------------------------
def dsp_tables(g: Geometry) -> dict[str, np.ndarray]:
    """Analysis window, synthesis window (with the inverse FFT's 1/n_fft), the inverse of the
    overlap-added window square for the first frames and the steady state, FFT tables."""
    n, hop = g.n_fft, g.hop
    if n & (n - 1) or n % hop:
        raise ValueError(f"the C export needs n_fft a power of two and a multiple of hop "
                         f"(n_fft={n}, hop={hop})")
    w = torch.hann_window(n, periodic=True, dtype=torch.float64).numpy()
    overlap = n // hop
    env = np.zeros((overlap, hop))
    for row in range(overlap):                  # frame t uses row min(t, overlap-1)
        for m in range(row + 1):
            env[row] += w[m * hop:(m + 1) * hop] ** 2
    inv_env = np.where(env > 0, 1.0 / np.where(env > 0, env, 1.0), 0.0)
    m = n // 2
    kk = np.arange(m + 1)
    bits = int(math.log2(m)) if m > 1 else 0
    rev = np.array([int(format(i, f"0{bits}b")[::-1], 2) if bits else 0 for i in range(m)])
    return {"window": w.astype(np.float32), "win_syn": (w / n).astype(np.float32),
            "inv_env": inv_env.astype(np.float32),
            "tw_cos": np.cos(2 * np.pi * kk / n).astype(np.float32),
            "tw_sin": np.sin(2 * np.pi * kk / n).astype(np.float32),
            "bitrev": rev.astype(np.uint16)}

"""Analytic MAC accounting (SPEC §4). Pure functions of the config and the gate tensors.

What is counted: multiply-accumulates of the convolutions, per frame. Excluded, and said so
everywhere: bias additions, normalisation, activations, the gates' moving-average pooling and the
mask multiply (all O(channels) per frame, not O(channels^2)).

- static MACs/frame: the dense network (gates excluded), per layer;
- gate MACs/frame: the score stacks, ``B_res*R + R*H`` per block, never pruned;
- dynamic MACs/frame: front-end + back-end + sum over blocks of
  (gate + active_channels * (B_res + k + B_res)).

A hook-based counter cannot see the gates; ``tests/test_macs.py`` uses one only to cross-check the
static count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Config


def frames_per_second(cfg: Config) -> float:
    return cfg.stft.frames_per_second


def per_channel_macs(cfg: Config) -> int:
    """MACs one hidden channel costs per frame: its PW1 row, its depthwise taps, its PW2 column."""
    m = cfg.model
    return m.residual + m.kernel + m.residual


def gate_macs_per_block(cfg: Config) -> int:
    if not cfg.gate.enabled:
        return 0
    m, r = cfg.model, cfg.gate.reduction
    return m.residual * r + r * m.hidden


def static_layer_macs(cfg: Config) -> list[tuple[str, int]]:
    """[(layer name, MACs per frame)] of the dense network, gates excluded."""
    m, n_freq = cfg.model, cfg.stft.n_freq
    rows = [("front", n_freq * m.residual)]
    for i in range(m.n_blocks):
        rows += [(f"blocks.{i}.pw1", m.residual * m.hidden),
                 (f"blocks.{i}.dw", m.hidden * m.kernel),
                 (f"blocks.{i}.pw2", m.hidden * m.residual)]
    rows.append(("back", m.residual * n_freq))
    return rows


def static_macs_per_frame(cfg: Config) -> int:
    return sum(v for _, v in static_layer_macs(cfg))


def gate_macs_per_frame(cfg: Config) -> int:
    return gate_macs_per_block(cfg) * cfg.model.n_blocks


def fixed_macs_per_frame(cfg: Config) -> int:
    """MACs that no gate can prune: front-end + back-end (gate overhead not included)."""
    return 2 * cfg.stft.n_freq * cfg.model.residual


def macs_at(cfg: Config, active):
    """MACs of one frame at ``active`` hidden channels computed, summed over the blocks (SPEC §4):
    front-end + back-end + every gate's score stack + ``active`` x per-channel MACs. ``active``
    may be a number, an array or a tensor; pass ``n_blocks * hidden`` for a static model (the
    static count). The one formula: :func:`dynamic_macs` and the streamer's statistics use it."""
    return fixed_macs_per_frame(cfg) + gate_macs_per_frame(cfg) + per_channel_macs(cfg) * active


def prunable_fraction(cfg: Config) -> float:
    """Share of the dense MACs that sit in gated channels (90.1 % for the paper config)."""
    return 1.0 - fixed_macs_per_frame(cfg) / static_macs_per_frame(cfg)


def receptive_field_frames(cfg: Config) -> int:
    """Frames of input the mask at one frame depends on through the convolutions:
    1 + (k-1) * sum of dilations (43 for the paper config). The gates' pooling widens the
    context of the *gating decision*; see :func:`gate_receptive_field_frames`."""
    m = cfg.model
    return 1 + (m.kernel - 1) * sum(m.block_dilations())


def gate_receptive_field_frames(cfg: Config) -> int:
    """Receptive field including the gates' pooling windows (pool-1 extra frames per block)."""
    extra = (cfg.gate.pool - 1) * cfg.model.n_blocks if cfg.gate.enabled else 0
    return receptive_field_frames(cfg) + extra


def latency_ms(cfg: Config) -> float:
    """Algorithmic latency: one window for a causal model; plus the look-ahead when not causal."""
    s = cfg.stft
    window_ms = 1000.0 * s.n_fft / s.sample_rate
    if cfg.model.causal:
        return window_ms
    lookahead = (receptive_field_frames(cfg) - 1) // 2
    if cfg.gate.enabled:
        lookahead += (cfg.gate.pool - 1 - (cfg.gate.pool - 1) // 2) * cfg.model.n_blocks
    return window_ms + 1000.0 * lookahead * s.hop / s.sample_rate


@dataclass
class DynamicMacs:
    """Dynamic MACs of one batch of gate tensors.

    ``per_frame`` [B, T]: MACs spent at each frame; ``active`` [n_blocks, B, T]: active channels.
    ``valid`` [B, T] marks real frames (padding excluded) when lengths are given.
    """

    per_frame: torch.Tensor
    active: torch.Tensor
    valid: torch.Tensor
    cfg: Config

    @property
    def mean_per_frame(self) -> float:
        return float(self.per_frame[self.valid].double().mean())

    @property
    def mean_per_second(self) -> float:
        return self.mean_per_frame * frames_per_second(self.cfg)

    def per_block_mean_active(self) -> list[float]:
        v = self.valid.unsqueeze(0).expand_as(self.active)
        return [float(a[vb].double().mean()) for a, vb in zip(self.active, v)]

    def per_block_macs(self) -> list[float]:
        """Mean MACs per frame of each block: gate + active channels x per-channel MACs."""
        g, c = gate_macs_per_block(self.cfg), per_channel_macs(self.cfg)
        return [g + a * c for a in self.per_block_mean_active()]

    def pruning_ratio(self) -> float:
        return 1.0 - sum(self.per_block_mean_active()) / (len(self.active) * self.cfg.model.hidden)


def dynamic_macs(cfg: Config, gates: list[torch.Tensor], lengths: list[int] | None = None
                 ) -> DynamicMacs:
    """Dynamic MACs from the gate tensors a forward pass returned.

    ``gates``: one binary [B, H, T] tensor per block, or an empty list for a static model (every
    channel on). ``lengths``: valid frames per batch item, when the batch was padded.
    With every gate open the result equals ``static_macs_per_frame + gate_macs_per_frame``.
    """
    m = cfg.model
    if not gates:
        raise ValueError("dynamic_macs needs gate tensors; for a static model use "
                         "static_macs_per_frame (every channel is always on)")
    if len(gates) != m.n_blocks:
        raise ValueError(f"expected {m.n_blocks} gate tensors, got {len(gates)}")
    active = torch.stack([g.detach().sum(dim=1) for g in gates])        # [n_blocks, B, T]
    per_frame = macs_at(cfg, active.sum(dim=0).double())               # [B, T]
    b, t = per_frame.shape
    dev = per_frame.device                      # gates may live on an accelerator
    valid = torch.ones(b, t, dtype=torch.bool, device=dev)
    if lengths is not None:
        valid = (torch.arange(t, device=dev).unsqueeze(0)
                 < torch.as_tensor(lengths, device=dev).unsqueeze(1))
    return DynamicMacs(per_frame=per_frame, active=active, valid=valid, cfg=cfg)


def summary(cfg: Config, params: int | None = None) -> dict:
    """The numbers ``dyncp info --json`` prints."""
    fps = frames_per_second(cfg)
    static = static_macs_per_frame(cfg)
    gate = gate_macs_per_frame(cfg)
    out = {
        "name": cfg.name,
        "params": params,
        "static_macs_per_frame": static,
        "gate_macs_per_frame": gate,
        "static_mmac_per_s": static * fps / 1e6,
        "gate_overhead_fraction": gate / static,
        "prunable_fraction": prunable_fraction(cfg),
        "per_channel_macs": per_channel_macs(cfg),
        "gated_channels_per_frame": cfg.model.hidden * cfg.model.n_blocks if cfg.gate.enabled else 0,
        "frames_per_second": fps,
        "receptive_field_frames": receptive_field_frames(cfg),
        "gate_receptive_field_frames": gate_receptive_field_frames(cfg),
        "latency_ms": latency_ms(cfg),
        "causal": cfg.model.causal,
        "gated": cfg.gate.enabled,
        "layers": dict(static_layer_macs(cfg)),
        "note": "MACs exclude bias, normalisation, activations and gate pooling",
    }
    if cfg.gate.enabled:
        # Expected dynamic cost if the measured pruning ratio equals the target.
        expected = macs_at(cfg, (1 - cfg.loss.prune_target) * cfg.model.hidden
                           * cfg.model.n_blocks)
        out["dynamic_macs_per_frame_at_target"] = expected
    return out


class PhiMeter:
    """The measured pruning ratio Φ of a set of files, frame-weighted: gated channels off over
    every frame of every block, ``1 - active / (frames * n_blocks * H)``, so a long file counts
    for its length (a mean over per-file Φ would not). The one aggregation used by validation
    (:func:`dyncp.train.validate`) and evaluation (:func:`dyncp.evaluate.evaluate`)."""

    def __init__(self, n_blocks: int, hidden: int) -> None:
        self.active = [0.0] * n_blocks     # per block: active channels summed over frames
        self.frames = 0
        self.hidden = hidden

    def add(self, gates) -> float:
        """Add one file's gates: one binary [B, H, T] tensor per block (B items of T frames
        each, no padding) or a numpy array [n_blocks, H, T]. Returns that file's Φ."""
        if len(gates) != len(self.active):
            raise ValueError(f"PhiMeter: {len(gates)} gate tensors for {len(self.active)} blocks")
        active = [float(g.sum()) for g in gates]
        n = gates[0].numel() if hasattr(gates[0], "numel") else gates[0].size
        frames = int(n // self.hidden)
        self.active = [a + b for a, b in zip(self.active, active)]
        self.frames += frames
        return 1.0 - sum(active) / (frames * len(active) * self.hidden) if frames else 0.0

    @property
    def value(self) -> float:
        """Φ over every frame added so far (0 before the first)."""
        if not self.frames:
            return 0.0
        return 1.0 - sum(self.active) / (self.frames * len(self.active) * self.hidden)

    def per_block(self) -> list[float]:
        return [1.0 - a / (self.frames * self.hidden) if self.frames else 0.0
                for a in self.active]

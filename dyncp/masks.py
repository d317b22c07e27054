"""Masks chosen outside the gates: how much of DynCP's benefit is *per-frame* (issue 12).

A trained DynCP model is run with its gate decisions replaced (``ConvFSENet.forward(mag,
masks=...)``), or fine-tuned with its gates frozen to a constant mask:

- :func:`channel_usage`: how often each gated channel fires over a set of files, and how many
  channels each block keeps per frame on average;
- :func:`top_channels`: per block, the ``k`` channels with the highest score: one fixed mask;
- :func:`utterance_masks`: the gates frozen per utterance (each block keeps, for the whole
  file, the channels its gates used most in that file, as many as they kept on average);
- :class:`ForcedMasks`: a model that runs with one fixed mask for every input, or with its own
  gates frozen per utterance; it looks like a model to :func:`dyncp.evaluate.evaluate`;
- :func:`constant_gate_`: turns each gate of a gated model into a constant mask that training
  cannot move: static structured pruning, fine-tuned by the ordinary training loop.
"""

from __future__ import annotations

import torch
from torch import nn

from .enhance import enhance_tensor
from .model import ConvFSENet

# Scores of a constant gate: far outside the clipped surrogate's window (|s| < 1), so the mask
# gets no gradient; exactly +-CONST whatever the input, as the score stack's last weights are 0.
CONST = 10.0


@torch.no_grad()
def channel_usage(model: ConvFSENet, pairs) -> tuple[torch.Tensor, torch.Tensor]:
    """Over the noisy side of ``pairs`` (whole files): (fraction of frames each channel is on
    [n_blocks, H], mean channels on per frame of each block [n_blocks]), frame-weighted."""
    if not model.gated:
        raise ValueError("channel_usage needs a gated model")
    model.eval()
    m = model.cfg.model
    on = torch.zeros(m.n_blocks, m.hidden, dtype=torch.float64)
    frames = 0
    for p in pairs:
        noisy = torch.as_tensor(p.noisy, dtype=torch.float32).unsqueeze(0)
        _, gates = enhance_tensor(model, noisy)
        on += torch.stack([g[0].double().sum(-1) for g in gates])
        frames += gates[0].shape[-1]
    if frames == 0:
        raise ValueError("channel_usage: no frames")
    usage = on / frames
    return usage, usage.sum(-1)


def top_channels(score: torch.Tensor, counts) -> torch.Tensor:
    """Binary [n_blocks, H]: per block ``b`` the ``counts[b]`` channels with the highest score
    (ties: the lower channel index)."""
    out = torch.zeros_like(score, dtype=torch.float32)
    for b, k in enumerate(counts):
        k = int(k)
        if k > 0:
            order = torch.sort(-score[b].double(), stable=True).indices
            out[b, order[:k]] = 1.0
    return out


def utterance_masks(gates: list[torch.Tensor]) -> list[torch.Tensor]:
    """The gates frozen per utterance: one binary [B, H, T] per block, constant over T.

    Each item and block keeps its ``round(mean channels on per frame)`` most-used channels (its
    mean gate over the file, thresholded so that Φ stays that of the per-frame gates up to
    rounding). Needs the whole file: an offline oracle, not a causal policy."""
    out = []
    for g in gates:                                               # [B, H, T]
        mean = g.double().mean(-1)                                # [B, H]
        k = mean.sum(-1).round().long()                           # [B]
        order = torch.sort(-mean, dim=-1, stable=True).indices    # [B, H]
        rank = torch.empty_like(order)
        rank.scatter_(-1, order, torch.arange(g.shape[1]).expand_as(order).contiguous())
        keep = (rank < k.unsqueeze(-1)).to(g.dtype)               # [B, H]
        out.append(keep.unsqueeze(-1).expand_as(g))
    return out


class ForcedMasks(nn.Module):
    """``model`` run with other masks than its gates' per-frame decisions.

    ``policy``: ``"utterance"`` (its own gates frozen per utterance, see
    :func:`utterance_masks`) or a binary [n_blocks, H] tensor (one fixed mask for every input
    and frame). ``forward(mag) -> (mask, masks used)`` like :class:`ConvFSENet`; ``cfg`` and
    ``gated`` are the model's, so evaluation measures Φ and MACs from the masks used (gate
    overhead included, as the model's config counts it).
    """

    def __init__(self, model: ConvFSENet, policy: str | torch.Tensor) -> None:
        super().__init__()
        m = model.cfg.model
        if isinstance(policy, str):
            if policy != "utterance":
                raise ValueError(f"ForcedMasks: unknown policy {policy!r} (utterance or a mask)")
            if not model.gated:
                raise ValueError("ForcedMasks: the utterance policy needs a gated model")
        elif tuple(policy.shape) != (m.n_blocks, m.hidden):
            raise ValueError(f"ForcedMasks: mask must be [{m.n_blocks}, {m.hidden}], "
                             f"got {tuple(policy.shape)}")
        self.net = model
        self.policy = policy

    @property
    def cfg(self):
        return self.net.cfg

    @property
    def gated(self) -> bool:
        return True

    def forward(self, mag: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if isinstance(self.policy, str):
            _, gates = self.net(mag)
            masks = utterance_masks(gates)
        else:
            b, t = mag.shape[0], mag.shape[-1]
            masks = [row.to(mag.dtype).view(1, -1, 1).expand(b, -1, t) for row in self.policy]
        return self.net(mag, masks=masks)


@torch.no_grad()
def constant_gate_(model: ConvFSENet, mask: torch.Tensor) -> ConvFSENet:
    """Make every gate of ``model`` output ``mask`` [n_blocks, H] whatever its input, in place.

    The last score layer's weights become 0 and its bias +-CONST, so scores are exactly +-CONST;
    with the clipped straight-through surrogate (gradient only on |s| < 1) no gradient reaches
    the gate, and AdamW without weight decay leaves it as it is: fine-tuning trains the network
    around a fixed channel selection. Needs ``gate.surrogate = "ste_clipped"``, no noise and
    ``gate.min_active = 0`` (checked)."""
    g = model.cfg.gate
    if not model.gated or g.surrogate != "ste_clipped" or g.min_active != 0:
        raise ValueError("constant_gate_ needs a gated model with gate.surrogate = ste_clipped "
                         "and gate.min_active = 0 (else gradients or the floor move the mask)")
    m = model.cfg.model
    if tuple(mask.shape) != (m.n_blocks, m.hidden):
        raise ValueError(f"constant_gate_: mask must be [{m.n_blocks}, {m.hidden}], "
                         f"got {tuple(mask.shape)}")
    for block, row in zip(model.blocks, mask):
        block.gate.score2.weight.zero_()
        block.gate.score2.bias.copy_(torch.where(row > 0, CONST, -CONST))
    return model

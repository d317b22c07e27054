"""Shared fixtures: repository paths, the shipped configs, and a model randomiser.

Keep this small; module-specific helpers live in their test file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from dyncp.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def missing_tool(reason: str, allowed_in_ci: bool = False) -> None:
    """Skip a test whose outside tool (Chromium, a peer) is not installed, except in CI: .ci/run
    sets DYNCP_CI=1 after `make test` has installed every tool, so there it is a failure."""
    if os.environ.get("DYNCP_CI") and not allowed_in_ci:
        pytest.fail(f"{reason} (CI installs it: make test)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state (torch, numpy, random), whatever ran
    before it: a test that draws from them (a layer's default initialisation, ``torch.randn``)
    gives the same numbers alone, in the suite, or in mutmut's subset of the suite."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def root() -> Path:
    """The repository root (tests may run from any working directory)."""
    return ROOT


@pytest.fixture(scope="session")
def paper_cfg() -> Config:
    return load_config(CONFIGS / "paper.toml")


@pytest.fixture(scope="session")
def tiny_cfg() -> Config:
    return load_config(CONFIGS / "tiny.toml")


def randomize_model(model: torch.nn.Module, seed: int = 0, gate_bias: float = 0.0):
    """Give a model non-trivial BatchNorm statistics/affines (negative scales too), PReLU slopes
    and gates that switch (score2 re-drawn around ``gate_bias``); returns it in eval mode."""
    g = torch.Generator().manual_seed(seed)

    def fill(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g))

    with torch.no_grad():
        for blk in model.blocks:
            for bn in (blk.bn1, blk.bn2):
                fill(bn.running_mean, -0.3, 0.3)
                fill(bn.running_var, 0.5, 2.0)
                fill(bn.weight, -0.5, 1.5)
                fill(bn.bias, -0.3, 0.3)
            fill(blk.act1.weight, 0.0, 0.5)
            fill(blk.act2.weight, -0.2, 0.5)
            if blk.gate is not None:
                fill(blk.gate.score2.weight, -0.5, 0.5)
                fill(blk.gate.score2.bias, gate_bias - 0.8, gate_bias + 0.8)
    return model.eval()


@pytest.fixture(scope="session")
def randomize():
    """``randomize(model, seed=0, gate_bias=0.0) -> model`` (see :func:`randomize_model`)."""
    return randomize_model

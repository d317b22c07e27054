"""README.md's Python snippet runs as written (issue 15), against the files it names."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dyncp.checkpoint import save_model
from dyncp.config import load_config
from dyncp.model import build_model

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    blocks = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python block"
    # the files the snippet names: a checkpoint (the tiny config) and a noisy recording
    torch.manual_seed(0)
    save_model(build_model(load_config(ROOT / "configs/tiny.toml")),
               tmp_path / "runs" / "paper" / "best.pt")
    noisy = 0.1 * np.random.default_rng(0).standard_normal(24000)
    sf.write(tmp_path / "noisy.wav", noisy.astype(np.float32), 24000)
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        ns: dict = {"__name__": "__readme__"}
        exec(compile(code, "README.md", "exec"), ns)
    assert ns["enhanced"].shape == (48000,) and ns["enhanced"].dtype == np.float32
    assert sf.info("enhanced.wav").samplerate == 48000
    assert len(ns["gates"]) == ns["model"].cfg.model.n_blocks
    assert ns["mask"].shape == ns["mag"].shape

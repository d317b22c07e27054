"""The training allocator settings (dyncp/malloc.py): applied on glibc, off by environment."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = ("import dyncp.malloc as m; a = m.keep_freed_memory(); b = m.keep_freed_memory(); "
        "import torch; x = torch.ones(3000, 3000); del x; print(a, b)")


def _run(env_value: str | None) -> str:
    env = dict(os.environ)
    env.pop("DYNCP_MALLOC_TUNING", None)
    if env_value is not None:
        env["DYNCP_MALLOC_TUNING"] = env_value
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_applied_on_glibc_and_idempotent():
    assert _run(None) == "True True"


def test_environment_switch_turns_it_off():
    assert _run("0") == "False False"

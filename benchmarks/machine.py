"""What machine a benchmark ran on, for its JSON: CPU model, vector extensions, cache sizes and
library versions. This development VM is not always the same machine (some have AVX-512, some
not; caches differ), and speed ratios move with it: a figure is only comparable with one measured
on the same kind of machine.

    from machine import describe      # benchmarks/ is on sys.path when a benchmark runs
    out["machine"] = describe()

Reads Linux's /proc/cpuinfo and /sys/devices/system/cpu/cpu0/cache; elsewhere those fields are
None (never an error: a benchmark must not fail for want of a description).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

#: Vector extensions worth knowing for the numba and C kernels.
ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni")


def _cpuinfo(root: Path) -> tuple[str | None, list[str]]:
    try:
        text = (root / "proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, []
    model, flags = None, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = value.split()
    return model, flags


def _caches(root: Path) -> dict[str, str]:
    """Cache sizes of CPU 0 as the kernel states them ("L1d": "32K", "L2": "1024K", ...)."""
    out: dict[str, str] = {}
    base = root / "sys/devices/system/cpu/cpu0/cache"
    for idx in sorted(base.glob("index*")) if base.is_dir() else []:
        try:
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        name = f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")
        out[name] = size
    return out


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(root: str | Path = "/") -> dict:
    """The machine as a JSON-ready dict (``root``: where /proc and /sys live, for tests)."""
    root = Path(root)
    model, flags = _cpuinfo(root)
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "isa": [f for f in ISA if f in flags] if flags else None,
        "caches_cpu0": _caches(root) or None,
        "python": platform.python_version(),
        **{pkg: _version(pkg) for pkg in ("numpy", "numba", "torch")},
    }


if __name__ == "__main__":
    import json
    print(json.dumps(describe(), indent=1))

"""benchmarks/machine.py: the machine a benchmark ran on, recorded in its JSON."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import machine
finally:
    sys.path.pop(0)


def _fake_root(tmp_path: Path, flags: str) -> Path:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 fma\n\n"
        "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 fma "
        f"{flags}\n")
    for i, (level, kind, size) in enumerate([(1, "Data", "32K"), (1, "Instruction", "32K"),
                                              (2, "Unified", "1024K"), (3, "Unified", "32768K")]):
        d = tmp_path / f"sys/devices/system/cpu/cpu0/cache/index{i}"
        d.mkdir(parents=True)
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    return tmp_path


def test_describe_reads_the_first_cpu_and_its_caches(tmp_path):
    info = machine.describe(_fake_root(tmp_path, "avx512f"))
    assert info["cpu"] == "Test CPU 9000"
    assert info["isa"] == ["sse4_2", "avx", "avx2", "fma"]      # CPU 0's flags, not CPU 1's
    assert info["caches_cpu0"] == {"L1d": "32K", "L1i": "32K", "L2": "1024K", "L3": "32768K"}
    assert info["torch"] and info["numpy"] and info["logical_cpus"] >= 1


def test_describe_without_proc_or_sys_gives_nones(tmp_path):
    info = machine.describe(tmp_path)
    assert (info["cpu"], info["isa"], info["caches_cpu0"]) == (None, None, None)


"""Allocator settings for CPU training on Linux (glibc).

A training step allocates and frees the same large activations every step. glibc's defaults give
memory at the top of the heap back to the kernel once more than the (dynamic) trim threshold is
free, so the next step faults the same pages in again: with the gated paper-size model that was
about 5,500 page faults and 16 ms of system time per step, none for the static twin (whose working
set stays under the threshold). Keeping freed memory in the process removes them
(benchmarks/train_speed.py measures both).

The cost: the process keeps its peak memory until it exits (RSS does not shrink between steps),
which is what a training process does anyway. ``dyncp train`` calls :func:`keep_freed_memory`;
set ``DYNCP_MALLOC_TUNING=0`` to leave the allocator alone. Elsewhere (macOS, Windows, musl) it
does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 << 20   # glibc's maximum on 64-bit: smaller blocks come from the heap
_TRIM_THRESHOLD = 1 << 30    # keep up to 1 GiB of free heap instead of returning it
_TOP_PAD = 64 << 20          # grow the heap in 64 MiB steps

@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc to keep freed memory for reuse (once per process). True when the settings took
    effect, False where they do not apply or ``DYNCP_MALLOC_TUNING=0``."""
    if not sys.platform.startswith("linux") or os.environ.get("DYNCP_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it (and a working mallopt)
    except (OSError, AttributeError):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Setting any of these turns off glibc's dynamic thresholds, so set all three: the trim
    # threshold alone would drop the mmap threshold to 128 KiB (every activation mmap'ed and
    # faulted in: 3x slower steps).
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
                and mallopt(_M_TOP_PAD, _TOP_PAD))

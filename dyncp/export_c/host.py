"""The exported C library on the host: compiled with the system C compiler, driven via ctypes.

Used by the export's self-check (:func:`verify`, the C twin of ``dyncp.export.verify``), the
tests and ``benchmarks/mcu.py``. Needs a C compiler (``cc``, or ``$CC``); nothing else.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..errors import DyncpError

# -std=c99: ISO mode, so no FMA contraction: the same float results on every IEEE target.
CFLAGS = ("-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror")
ERRORS = {0: "DYNCP_OK", -1: "DYNCP_ERR_NULL", -2: "DYNCP_ERR_LENGTH", -3: "DYNCP_ERR_MEMORY",
          -4: "DYNCP_ERR_STATE", -5: "DYNCP_ERR_VALUE", -6: "DYNCP_ERR_BUDGET"}


def find_cc() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def header_values(folder: Path, prefix: str = "dyncp") -> dict[str, int]:
    """The ``#define PREFIX_NAME <int>`` values of the public header."""
    text = (folder / f"{prefix}.h").read_text()
    p = prefix.upper()
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(rf"#define {p}_([A-Z_]+) (-?\d+)\b", text)}


def compile_shared(folder: Path, out: Path, prefix: str = "dyncp", flags=(),
                   cc: str | None = None) -> Path:
    """Compile the library in ``folder`` into the shared object ``out``."""
    cc = cc or find_cc()
    if cc is None:
        raise DyncpError("no C compiler found (set CC or install cc)")
    srcs = [str(folder / f"{prefix}{s[len('dyncp'):]}") for s in
            ("dyncp.c", "dyncp_net.c", "dyncp_weights.c")]
    cmd = [cc, *CFLAGS, *flags, "-fPIC", "-shared", "-o", str(out), *srcs, "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise DyncpError(f"compiling {folder} failed:\n{' '.join(cmd)}\n{r.stderr[-4000:]}")
    return out


class HostLibrary:
    """``HostLibrary(folder)``: compile and load an exported library. ``run(wav)`` streams a whole
    signal hop by hop through a fresh state and returns (enhanced [N], gates [n_blocks, H, T])."""

    def __init__(self, folder: str | Path, prefix: str = "dyncp", flags=(), build: str | Path |
                 None = None, cc: str | None = None) -> None:
        self.folder, self.prefix = Path(folder), prefix
        so = Path(build) if build else self.folder / f"lib{prefix}.so"
        compile_shared(self.folder, so, prefix, flags, cc)
        self.lib = ctypes.CDLL(str(so.resolve()))
        f = lambda n: getattr(self.lib, f"{prefix}_{n}")  # noqa: E731
        f("state_size").restype = ctypes.c_size_t
        f("init").argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        f("process").argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_size_t]
        f("mask").argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        f("gates").argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        f("set_budget").argtypes = [ctypes.c_void_p, ctypes.c_float]
        f("info").restype = ctypes.c_char_p
        self._f = f
        v = header_values(self.folder, prefix)
        self.hop, self.n_fft, self.latency = v["HOP"], v["N_FFT"], v["LATENCY"]
        self.n_freq, self.n_blocks, self.channels = v["N_FREQ"], v["N_BLOCKS"], v["CHANNELS"]
        self.state_bytes = int(f("state_size")())
        self.info = f("info")().decode()

    # -- raw calls --------------------------------------------------------------------------------
    def new_state(self) -> ctypes.Array:
        buf = (ctypes.c_uint64 * ((self.state_bytes + 7) // 8))()   # 8-byte aligned
        rc = self._f("init")(ctypes.addressof(buf), self.state_bytes)
        if rc != 0:
            raise DyncpError(f"{self.prefix}_init returned {ERRORS.get(rc, rc)}")
        return buf

    def init(self, state, nbytes: int) -> int:
        return int(self._f("init")(state, nbytes))

    def process(self, state, x: np.ndarray, out: np.ndarray | None = None,
                n: int | None = None) -> tuple[np.ndarray, int]:
        """One call of ``process`` on float32 ``x``; returns (out, return code)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros(max(x.size, self.hop), np.float32) if out is None else out
        rc = self._f("process")(_addr(state), x.ctypes.data, out.ctypes.data,
                                x.size if n is None else n)
        return out, int(rc)

    def mask(self, state, mag: np.ndarray) -> tuple[np.ndarray, int]:
        mag = np.ascontiguousarray(mag, dtype=np.float32)
        out = np.zeros(self.n_freq, np.float32)
        rc = self._f("mask")(_addr(state), mag.ctypes.data, out.ctypes.data)
        return out, int(rc)

    def set_budget(self, state, phi: float) -> int:
        return int(self._f("set_budget")(_addr(state), phi))

    def gates(self, state) -> tuple[np.ndarray, int]:
        g = np.zeros(self.n_blocks * self.channels, np.uint8)
        n = self._f("gates")(_addr(state), g.ctypes.data, g.size)
        return g.reshape(self.n_blocks, self.channels), int(n)

    # -- whole signals ----------------------------------------------------------------------------
    def run(self, wav: np.ndarray, gates: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Stream ``wav`` [N] (then zeros to flush the latency) through a fresh state; returns
        (enhanced [N] aligned with the input, gates uint8 [n_blocks, H, T] of every frame)."""
        hop = self.hop
        x = np.asarray(wav, np.float32)
        n_calls = -(-x.size // hop) + self.latency // hop
        xp = np.zeros(n_calls * hop, np.float32)
        xp[:x.size] = x
        out = np.zeros_like(xp)
        st = self.new_state()
        skip = self.n_fft // (2 * hop) - 1
        g_all = []
        for j in range(n_calls):
            _, rc = self.process(st, xp[j * hop:(j + 1) * hop], out[j * hop:(j + 1) * hop])
            if rc != 0:
                raise DyncpError(f"{self.prefix}_process returned {ERRORS.get(rc, rc)}")
            if gates and j >= skip:
                g_all.append(self.gates(st)[0])
        g = (np.stack(g_all, -1) if g_all else
             np.zeros((self.n_blocks, self.channels, 0), np.uint8))
        return out[self.latency:self.latency + x.size], g


def _addr(state) -> int:
    return ctypes.addressof(state) if isinstance(state, ctypes.Array) else int(state)


def reference(model, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the library must give: ``dyncp.Streamer(model, "sparse")`` (enhanced [N], gates
    [n_blocks, H, T]); for a budget model, whose gates the numba runtime does not move, offline
    enhancement at the nominal budget (equal to streaming by dyncp's own tests)."""
    import torch

    from ..streaming import Streamer

    if getattr(model, "budgeted", False):
        from ..enhance import enhance_tensor

        with torch.inference_mode():
            y, g = enhance_tensor(model, torch.from_numpy(np.asarray(wav, np.float32))[None])
        return y[0].numpy(), torch.stack([gi[0] for gi in g]).to(torch.uint8).numpy()
    s = Streamer(model, "sparse")
    return s.process(wav), s.gates


def verify(folder: str | Path, model, wav: np.ndarray, prefix: str = "dyncp",
           build: str | Path | None = None) -> dict:
    """Run the compiled library and :func:`reference` on ``wav`` (trimmed to whole hops, where
    both give the same samples); returns ``max_abs_diff``, ``gate_mismatches``,
    ``gate_decisions``, ``frames``, ``snr_db`` (reference output over the difference)."""
    lib = HostLibrary(folder, prefix, build=build)
    hop = lib.hop
    x = np.asarray(wav, np.float32)[: (len(wav) // hop) * hop]
    ref, rg = reference(model, x)
    out, g = lib.run(x)
    diff = out - ref
    res = {"frames": int(g.shape[-1]), "max_abs_diff": float(np.abs(diff).max()),
           "snr_db": float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) /
                                         max(np.sum(diff.astype(np.float64) ** 2), 1e-30))),
           "state_bytes": lib.state_bytes}
    if model.gated:
        t = min(rg.shape[-1], g.shape[-1])
        res["gate_mismatches"] = int((rg[..., :t] != g[..., :t]).sum())
        res["gate_decisions"] = int(rg[..., :t].size)
    else:
        res["gate_mismatches"], res["gate_decisions"] = 0, 0
    return res

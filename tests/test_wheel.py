"""The wheel carries the shipped models: built with ``pip wheel --no-deps .``, installed without
an index into a fresh virtual environment, and run from a folder that has no ../shared, it
enhances a file with the default model (issue 11)."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dyncp import zoo

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.mark.skipif(zoo.DEFAULT_MODEL not in zoo.shipped_names(),
                    reason=f"the default model {zoo.DEFAULT_MODEL!r} is not shipped yet")
def test_wheel_installs_and_enhances_without_the_repository(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(ROOT)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("dyncp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.startswith("dyncp/weights/") and n.endswith(".pt"))
    assert shipped == [f"dyncp/weights/{n}.pt" for n in zoo.shipped_names()]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig."
                                   "get_paths()['purelib'])"], check=True, capture_output=True,
                                  text=True).stdout.strip())
    # The dependencies (torch, numpy, ...) come from this environment, listed after the new
    # environment's own site-packages; dyncp itself only from the wheel.
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]]
            if Path(p).is_dir()]
    (purelib / "deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(purelib), str(wheel)], check=True)

    work = tmp_path / "elsewhere"
    work.mkdir()
    x = 0.05 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    sf.write(work / "noisy.wav", x, 16000)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    code = ("import dyncp, sys, dyncp.cli; assert 'site-packages' in dyncp.__file__ or "
            "'purelib' in dyncp.__file__, dyncp.__file__; print(dyncp.__file__); "
            "sys.exit(dyncp.cli.main(['enhance', 'noisy.wav', '-o', 'out', '--no-progress']))")
    r = subprocess.run([str(py), "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert str(ROOT) not in r.stdout.splitlines()[0]            # not the repository's copy
    y, sr = sf.read(work / "out" / "noisy.wav")
    assert sr == 16000 and len(y) == len(x) and np.isfinite(y).all()

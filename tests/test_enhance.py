"""dyncp.enhance: the Python call on arrays/tensors and file/folder enhancement (issue 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import dyncp
from dyncp.checkpoint import save_model
from dyncp.cli import main
from dyncp.config import load_config
from dyncp.enhance import collect_inputs, enhance, enhance_files, enhance_tensor
from dyncp.errors import AudioError, DataError
from dyncp.model import build_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs/tiny.toml", ["gate.init_scale=1.0", "gate.init_bias=0.0"])
    return build_model(cfg).eval()


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def test_enhance_numpy_tensor_and_rates(model):
    x = _noise(16000)
    y = dyncp.enhance(model, x, 16000)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.array_equal(y, enhance(model, torch.from_numpy(x), 16000))
    with torch.inference_mode():
        ref = enhance_tensor(model, torch.from_numpy(x)[None])[0][0].numpy()
    assert np.array_equal(y, ref)
    # another rate: same length out, close to enhancing the resampled signal
    y8 = enhance(model, x[::2], 8000)
    assert y8.shape == (8000,) and np.all(np.isfinite(y8))
    # stereo [N, 2] is downmixed; gates come back as uint8 [n_blocks, H, T]
    ys, g = enhance(model, np.stack([x, x], axis=1), 16000, return_gates=True)
    assert np.allclose(ys, y, atol=1e-6)
    assert g.dtype == np.uint8 and g.shape == (2, 32, 16000 // 64 + 1) and 0 < g.mean() < 1
    with pytest.raises(AudioError):
        enhance(model, np.zeros(0, np.float32), 16000)


def test_enhance_files_and_folders(model, tmp_path):
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    sf.write(src / "one.wav", _noise(8000, 1), 16000)
    sf.write(src / "a" / "two.flac", _noise(4410, 2), 44100)
    sf.write(src / "a" / "b" / "three.WAV", _noise(12000, 3), 16000)
    (src / "a" / "notes.txt").write_text("not audio")
    single = tmp_path / "single.wav"
    sf.write(single, _noise(3000, 4), 16000)

    out = tmp_path / "out"
    written = enhance_files(model, [src, single], out, progress=False)
    rel = sorted(str(p.relative_to(out)) for p in written)
    assert rel == ["a/b/three.wav", "a/two.wav", "one.wav", "single.wav"]
    info = sf.info(out / "a" / "two.wav")
    assert info.samplerate == 44100 and info.frames == 4410       # rate and length kept
    y, sr = sf.read(out / "one.wav", dtype="float32")
    expect = enhance(model, sf.read(src / "one.wav", dtype="float32")[0], 16000)
    assert sr == 16000 and np.allclose(y, expect, atol=1.0 / 32767)   # 16-bit PCM rounding
    assert not list(out.rglob(".*"))                                   # no temporary files left
    # an output folder inside the input folder: earlier outputs are not enhanced again
    inner = src / "enhanced"
    enhance_files(model, [src], inner, progress=False)
    again = enhance_files(model, [src], inner, progress=False)
    assert sorted(str(p.relative_to(inner)) for p in again) == \
        ["a/b/three.wav", "a/two.wav", "one.wav"]


def test_enhance_refuses_bad_targets(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "x.wav", _noise(1000), 16000)
    before = (src / "x.wav").read_bytes()
    with pytest.raises(AudioError, match="overwrite an input"):
        enhance_files(model, [src], src, progress=False)
    assert (src / "x.wav").read_bytes() == before
    with pytest.raises(AudioError, match="no such file"):
        enhance_files(model, [tmp_path / "missing.wav"], tmp_path / "o", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .wav or .flac"):
        collect_inputs([tmp_path / "empty"])
    sf.write(tmp_path / "x.wav", _noise(1000), 16000)
    with pytest.raises(AudioError, match="both be written"):
        collect_inputs([src / "x.wav", tmp_path / "x.wav"])
    bad = src / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(AudioError, match="broken.wav"):
        enhance_files(model, [src], tmp_path / "o2", progress=False)
    assert not (tmp_path / "o2").exists()                  # checked before writing anything


def test_cli_enhance_errors(model, tmp_path, capsys):
    ckpt = save_model(model, tmp_path / "m.pt")
    sf.write(tmp_path / "x.wav", _noise(2000), 16000)
    assert main(["enhance", str(tmp_path / "x.wav"), "-c", str(ckpt), "-o",
                 str(tmp_path / "o"), "--no-progress"]) == 0
    assert sf.info(tmp_path / "o" / "x.wav").frames == 2000
    capsys.readouterr()
    not_ckpt = tmp_path / "x.wav"
    for args in (["-c", str(not_ckpt), "-o", str(tmp_path / "o3")],
                 ["-c", str(ckpt), "-o", str(tmp_path)]):
        assert main(["enhance", str(tmp_path / "x.wav"), *args, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("dyncp enhance: error:") and "\n" not in err, err
    assert not (tmp_path / "o3").exists()

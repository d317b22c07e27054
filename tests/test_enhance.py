"""dyncp.enhance: the Python call on arrays/tensors and file/folder enhancement (issue 4)."""

from __future__ import annotations

import os
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
from dyncp.errors import AudioError, DataError, DyncpWarning, OutputError
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
    # stereo [2, N] is downmixed; gates come back as uint8 [n_blocks, H, T]
    ys, g = enhance(model, np.stack([x, x]), 16000, return_gates=True)
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
    with pytest.warns(DyncpWarning, match="notes.txt"):   # skipped, and said so
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
    with pytest.warns(DyncpWarning, match="notes.txt"):
        enhance_files(model, [src], inner, progress=False)
        again = enhance_files(model, [src], inner, progress=False, overwrite=True)
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
    with pytest.raises(DataError, match="no sound files"):
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



# -- issue 15: data safety and honest output ---------------------------------------------------
def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_enhance_never_overwrites_unless_asked(model, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b"):
        sf.write(src / f"{name}.wav", _noise(2000), 16000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.wav").write_bytes(b"precious")
    with pytest.raises(OutputError, match="b.wav.*exist"):
        enhance_files(model, [src], out, progress=False)
    assert _files(out) == {"b.wav": b"precious"}          # refused before anything was written
    ckpt = save_model(model, tmp_path / "m.pt")
    cmd = ["enhance", str(src), "-c", str(ckpt), "-o", str(out), "--no-progress"]
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dyncp enhance: error:") and "--overwrite" in err and "\n" not in err
    assert (out / "b.wav").read_bytes() == b"precious"
    assert main(cmd + ["--overwrite"]) == 0
    assert sf.info(out / "b.wav").frames == 2000 and sf.info(out / "a.wav").frames == 2000


def test_inputs_that_share_an_output_name_are_refused_first(model, tmp_path):
    sf.write(tmp_path / "in.flac", _noise(1000), 16000)
    sf.write(tmp_path / "in.ogg", _noise(1000), 16000, format="OGG", subtype="VORBIS")
    sf.write(tmp_path / "In.wav", _noise(1000), 16000)
    for pair in (["in.flac", "in.ogg"], ["in.flac", "In.wav"]):   # the same name on macOS/Windows
        with pytest.raises(AudioError, match="would both be written"):
            enhance_files(model, [tmp_path / n for n in pair], tmp_path / "o", progress=False)
        assert not (tmp_path / "o").exists()


def test_output_folders_are_checked_before_the_first_file(model, tmp_path, capsys):
    src = tmp_path / "in"
    for sub in ("a", "b"):
        (src / sub).mkdir(parents=True)
        sf.write(src / sub / "x.wav", _noise(1000), 16000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b").write_text("a file where a folder must go")
    with pytest.raises(OutputError, match="not writable"):
        enhance_files(model, [src], out, progress=False)
    assert not (out / "a" / "x.wav").exists()              # nothing enhanced before the check
    # -o naming an existing file: a one-line message, not FileExistsError
    ckpt = save_model(model, tmp_path / "m.pt")
    assert main(["enhance", str(src), "-c", str(ckpt), "-o", str(out / "b"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dyncp enhance: error:") and "is a file" in err and "\n" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_output_folder_is_refused_before_the_first_file(model, tmp_path):
    src = tmp_path / "in"
    for sub in ("a", "b"):
        (src / sub).mkdir(parents=True)
        sf.write(src / sub / "x.wav", _noise(1000), 16000)
    out = tmp_path / "out"
    (out / "b").mkdir(parents=True)
    (out / "b").chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            enhance_files(model, [src], out, progress=False)
        assert not (out / "a" / "x.wav").exists()
    finally:
        (out / "b").chmod(0o755)


def test_outputs_get_the_usual_permissions(model, tmp_path):
    sf.write(tmp_path / "x.wav", _noise(1000), 16000)
    old = os.umask(0o022)
    try:
        (written,) = enhance_files(model, [tmp_path / "x.wav"], tmp_path / "o", progress=False)
    finally:
        os.umask(old)
    assert written.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("flag", [None, "--normalize", "--clip"])
def test_output_that_would_clip_is_reported_and_handled_as_chosen(model, tmp_path, flag,
                                                                 capsys):
    x = 3.0 * _noise(16000) / 0.1 * 0.5          # float WAV far beyond full scale
    sf.write(tmp_path / "loud.wav", x, 16000, subtype="FLOAT")
    ckpt = save_model(model, tmp_path / "m.pt")
    args = ["enhance", str(tmp_path / "loud.wav"), "-c", str(ckpt), "-o", str(tmp_path / "o"),
            "--no-progress"] + ([flag] if flag else [])
    assert main(args) == 0
    (msg,) = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert msg.startswith(f"dyncp enhance: warning: {tmp_path / 'loud.wav'}: ")
    assert "% of the enhanced samples exceed ±1" in msg
    y, _ = sf.read(tmp_path / "o" / "loud.wav", dtype="float32")
    ref = enhance(model, x, 16000)
    peak = np.abs(ref).max()
    assert peak > 1.5
    if flag == "--clip":
        assert "clipped" in msg
        assert np.allclose(y, np.clip(ref, -1, 1), atol=2 / 32767)
    else:                                            # default: scaled down, nothing clipped
        assert "scaled by" in msg
        assert np.allclose(y, ref / peak, atol=2 / 32767)


def test_files_a_folder_walk_skips_are_counted_and_named(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "x.wav", _noise(1000), 16000)
    (src / "notes.txt").write_text("not audio")
    (src / "talk.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")  # a format libsndfile lacks
    (src / ".hidden.wav").write_bytes(b"")
    with pytest.warns(DyncpWarning, match=r"skipped 2 file\(s\)") as rec:
        written = enhance_files(model, [src], tmp_path / "o", progress=False)
    msg = str(rec[0].message)
    assert "notes.txt" in msg and "talk.m4a" in msg and ".hidden" not in msg
    assert [p.name for p in written] == ["x.wav"]


def test_enhance_shapes_and_integer_samples(model):
    x = _noise(4000)
    y = enhance(model, x, 16000)
    # [C, N] with few channels: averaged
    assert np.allclose(enhance(model, np.stack([x, x, x]), 16000), y, atol=1e-6)
    # soundfile's [N, C] and many-channel [10, N] arrays are refused, not misread
    with pytest.raises(AudioError, match=r"at most 8 channels.*\(4000, 2\).*wav\.T"):
        enhance(model, np.stack([x, x], axis=1), 16000)
    with pytest.raises(AudioError, match=r"at most 8 channels.*\(10, 4000\)"):
        enhance(model, np.stack([x] * 10), 16000)
    with pytest.raises(AudioError, match=r"shape \(2, 2, 4000\)"):
        enhance(model, np.zeros((2, 2, 4000), np.float32), 16000)
    # integer PCM is scaled to ±1 (int16 / 32768), not read in integer scale
    pcm = np.round(x * 32768).astype(np.int16)
    assert np.allclose(enhance(model, pcm, 16000), enhance(model, pcm / 32768.0, 16000),
                       atol=1e-6)
    assert np.allclose(enhance(model, torch.from_numpy(pcm), 16000),
                       enhance(model, pcm / 32768.0, 16000), atol=1e-6)
    for bad in (pcm.astype(np.int64), pcm > 0):
        with pytest.raises(AudioError, match=f"type {bad.dtype}"):
            enhance(model, bad, 16000)


def test_an_input_far_from_the_training_levels_is_named_in_a_warning(tmp_path):
    """A model mixed at U[-35, -15] dBFS warns below -45 and above -5 dBFS (active level), naming
    the file, in `enhance`, `dyncp enhance` and `dyncp stream`; other training data: no check."""
    import warnings

    from dyncp.enhance import check_level
    from dyncp.stream_io import stream_file

    mixed = build_model(load_config(ROOT / "configs/tiny.toml", ["data.train=mix:speech,noise"]))
    x = _noise(16000)
    x = x / np.sqrt(np.mean(x ** 2)) * 10 ** (-25 / 20)           # -25 dBFS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert abs(check_level(mixed, x) + 25) < 0.5
        assert abs(check_level(mixed, x * 10 ** (-19 / 20)) + 44) < 0.5   # inside the tolerance
        assert check_level(build_model(load_config(ROOT / "configs/tiny.toml")), x * 1e-3) is None
        enhance(mixed, x)
    sine = np.sqrt(2) * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)   # RMS 1, peak 1.41
    for name, wav, level in [("quiet", x * 10 ** (-30 / 20), "-55"),
                             ("loud", sine * 10 ** (-4 / 20), "-4")]:
        with pytest.warns(DyncpWarning, match=rf"{name}.wav: active level {level}\.\d dBFS is "
                                              r"outside .* \(-35 to -15 dBFS"):
            sf.write(tmp_path / f"{name}.wav", wav, 16000, subtype="FLOAT")
            enhance_files(mixed, [tmp_path / f"{name}.wav"], tmp_path / name, progress=False)
    with pytest.warns(DyncpWarning, match="quiet.wav: active level"):
        stream_file(mixed, tmp_path / "quiet.wav", engine="dense")

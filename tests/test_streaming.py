"""Streaming == offline (issue 6): any chunk size, frame-exact gates, every engine; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dyncp.checkpoint import save_model
from dyncp.config import load_config
from dyncp.enhance import enhance_tensor
from dyncp.errors import AudioError, ConfigError, DyncpError
from dyncp.model import ConvFSENet
from dyncp.streaming import Streamer, stream_file
from conftest import randomize_model

torch.set_num_threads(1)
CHUNKS = [0, 1, 160, 256, 1000, "random"]


randomize = randomize_model  # shared with the core tests (tests/conftest.py)


def model_for(name: str, *overrides: str) -> ConvFSENet:
    torch.manual_seed(0)
    return randomize(ConvFSENet(load_config(f"configs/{name}.toml", list(overrides))))


def offline(model, wav):
    with torch.inference_mode():
        y, gates = enhance_tensor(model, torch.from_numpy(wav).unsqueeze(0))
    g = (torch.stack([x[0] for x in gates]).to(torch.uint8).numpy() if gates
         else np.zeros((0, model.cfg.model.hidden, 0), np.uint8))
    return y[0].numpy(), g


def run_chunks(streamer, wav, chunk, rng):
    streamer.reset()
    outs, i = [], 0
    while i < wav.shape[0]:
        n = int(rng.integers(0, 700)) if chunk == "random" else (chunk or wav.shape[0])
        outs.append(streamer.feed(wav[i:i + n]))
        i += n
    outs.append(streamer.flush())
    return np.concatenate(outs)


@pytest.fixture(scope="module")
def tiny():
    return model_for("tiny")


@pytest.fixture(scope="module")
def signal():
    rng = np.random.default_rng(1)
    n = 16000 // 2 + 37                       # not a multiple of the hop
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (t > 0.1)
            + 0.1 * rng.standard_normal(n)).astype(np.float32)


def test_gates_are_mixed(tiny, signal):
    _, g = offline(tiny, signal)
    assert 0.2 < g.mean() < 0.8               # the equality below is not a trivial one
    assert (np.diff(g.astype(int), axis=-1) != 0).any()   # channels switch over time


@pytest.mark.parametrize("engine", ["torch", "dense", "sparse"])
def test_tiny_stream_equals_offline(tiny, signal, engine):
    ref, ref_gates = offline(tiny, signal)
    streamer = Streamer(tiny, engine)
    rng = np.random.default_rng(2)
    for chunk in CHUNKS:
        out = run_chunks(streamer, signal, chunk, rng)
        assert out.shape == ref.shape, chunk
        assert np.abs(out - ref).max() < 1e-5, chunk
        assert np.array_equal(streamer.gates, ref_gates), chunk
    assert streamer.pruning_ratio == pytest.approx(1 - ref_gates.mean(), abs=1e-9)


@pytest.mark.parametrize("engine", ["torch", "sparse"])
def test_paper_stream_equals_offline(signal, engine):
    model = model_for("paper")
    ref, ref_gates = offline(model, signal)
    streamer = Streamer(model, engine)
    rng = np.random.default_rng(3)
    for chunk in ([256, "random"] if engine == "torch" else CHUNKS):
        out = run_chunks(streamer, signal, chunk, rng)
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() < 1e-5
        assert np.array_equal(streamer.gates, ref_gates)


@pytest.mark.parametrize("overrides", [["stft.hop=32"], ["stft.hop=48"], ["gate.enabled=false"],
                                       ["gate.min_active=24"], ["model.feature_compress=0.3"]])
def test_other_configs_equal_offline(signal, overrides):
    """hop < n_fft/2 (a window-square envelope that is not flat at the clip start), a static
    model, the floor of kept channels, compressed features."""
    model = model_for("tiny", *overrides)
    ref, ref_gates = offline(model, signal)
    rng = np.random.default_rng(4)
    for engine in ("torch", "sparse"):
        streamer = Streamer(model, engine)
        for chunk in (1, 100, "random"):
            out = run_chunks(streamer, signal, chunk, rng)
            assert np.abs(out - ref).max() < 1e-5, (engine, chunk)
            assert np.array_equal(streamer.gates, ref_gates)


@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 200])
def test_short_signals(tiny, n):
    wav = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    ref, _ = offline(tiny, wav)
    out = run_chunks(Streamer(tiny, "sparse"), wav, 7, np.random.default_rng(0))
    assert out.shape == (n,)
    # A signal that ends just before a hop boundary leaves its last samples under the tail of one
    # window only: torch.istft divides by a window-square sum ~1e-6 there and amplifies its own
    # float32 rounding (ref reaches ~5 here), so the end is checked relative to the value.
    np.testing.assert_allclose(out, ref, rtol=2e-4, atol=1e-5)


def test_output_is_causal_and_incremental(tiny, signal):
    """feed() returns every sample whose frames are all done: after N samples fed, at least
    N - n_fft + 1 have come out, and the early output does not change when more input follows."""
    s = Streamer(tiny, "torch")
    got = s.feed(signal[:3000])
    n_fft = tiny.cfg.stft.n_fft
    assert 3000 - n_fft + 1 <= got.shape[0] <= 3000
    full = run_chunks(s, signal, 0, None)
    assert np.array_equal(got, full[: got.shape[0]])


def test_state_is_explicit_and_reset_restarts(tiny, signal):
    s = Streamer(tiny, "sparse")
    first = run_chunks(s, signal, 256, None)
    state0 = s.initial_state()
    assert state0.stft.pending.shape == (tiny.cfg.stft.n_fft // 2,)
    assert not state0.stft.pending.any() and not state0.net.dw.any()
    second = run_chunks(s, signal, 256, None)       # run_chunks resets first
    assert np.array_equal(first, second)


def test_empty_chunk_is_noop(tiny, signal):
    s = Streamer(tiny, "torch")
    s.feed(signal[:500])
    before = (s.state.stft.n_in, s.state.stft.frames, s.state.stft.pending.copy())
    out = s.feed(np.zeros(0, np.float32))
    assert out.shape == (0,) and out.dtype == np.float32
    assert (s.state.stft.n_in, s.state.stft.frames) == before[:2]
    assert np.array_equal(s.state.stft.pending, before[2])
    assert Streamer(tiny).flush().shape == (0,)


def test_bad_input(tiny, signal):
    s = Streamer(tiny, "sparse")
    for bad in (np.array([0.1, np.nan], np.float32), np.array([np.inf], np.float32)):
        with pytest.raises(AudioError, match="NaN or Inf"):
            s.feed(bad)
    with pytest.raises(AudioError, match="multi-channel"):
        s.feed(np.zeros((100, 2), np.float32))
    with pytest.raises(AudioError, match="float"):
        s.feed(np.zeros(10, np.int16))
    with pytest.raises(AudioError, match="44100 Hz"):
        Streamer(tiny, sr=44100)
    assert Streamer(tiny, sr=16000).feed(signal[:10]).shape == (0,)
    s.flush()
    with pytest.raises(DyncpError, match="reset"):
        s.feed(signal[:10])
    with pytest.raises(ValueError, match="engine"):
        Streamer(tiny, engine="cuda")


def test_non_causal_model_is_refused():
    model = model_for("tiny", "model.causal=false")
    for engine in ("torch", "sparse"):
        with pytest.raises(ConfigError, match="causal"):
            Streamer(model, engine)


def test_stream_cli(tmp_path, tiny, signal):
    from dyncp.audio import save_audio
    from dyncp.cli import main

    ckpt = save_model(tiny, tmp_path / "tiny.pt")
    wav = save_audio(tmp_path / "in.wav", signal)
    out, js = tmp_path / "out.wav", tmp_path / "s.json"
    assert main(["stream", "-c", str(ckpt), str(wav), "-o", str(out), "--engine", "sparse",
                 "--chunk", "160", "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    for key in ("us_per_frame_median", "us_per_frame_p99", "rtf", "pruning_ratio",
                "dynamic_mmac_per_s", "max_abs_diff_offline"):
        assert np.isfinite(r[key]), key
    assert r["max_abs_diff_offline"] < 1e-5
    assert 0.2 < r["pruning_ratio"] < 0.8
    assert r["frames"] == signal.shape[0] // tiny.cfg.stft.hop + 1
    direct = stream_file(tiny, wav, engine="torch")
    assert direct["dynamic_mmac_per_s"] == pytest.approx(r["dynamic_mmac_per_s"])
    assert out.is_file()
    non_causal = save_model(model_for("tiny", "model.causal=false"), tmp_path / "nc.pt")
    assert main(["stream", "-c", str(non_causal), str(wav), "-o", str(out)]) == 2


@pytest.mark.parametrize("engine", ["torch", "dense", "sparse"])
def test_streamer_leaves_the_callers_model_as_it_was(signal, engine, tmp_path):
    """The Streamer runs eval-mode semantics (BatchNorm running statistics, no gate noise) without
    switching the caller's model: a model in training mode stays there, one in eval mode too, a
    model with one submodule in training mode keeps that mix (issue 15)."""
    from dyncp.audio import save_audio

    model = model_for("tiny").train()
    s = Streamer(model, engine)
    out = run_chunks(s, signal, 160, None)
    assert model.training and all(m.training for m in model.modules())
    wav = save_audio(tmp_path / "in.wav", signal)
    assert stream_file(model, wav, engine=engine)["max_abs_diff_offline"] < 1e-5
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    model.blocks[0].bn1.train()
    Streamer(model, engine).process(signal[:1000])
    assert [m.training for m in model.modules()].count(True) == 1 and model.blocks[0].bn1.training
    ref, _ = offline(model_for("tiny"), signal)            # a fresh copy in eval mode
    assert np.abs(out - ref).max() < 1e-5

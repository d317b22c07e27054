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
from dyncp.stream_io import stream_file
from dyncp.streaming import Streamer
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
                                       ["gate.min_active=24"], ["model.feature_compress=0.3"],
                                       ["model.feature_compress=0"]])
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


# -- pruned weights never read, through the whole streaming path (issue 15) ------------------------
def test_sparse_streamer_never_reads_pruned_weights(tiny, signal):
    """Fed one frame per call, with NaN in every weight of the channels the offline gates prune
    at that frame: the sparse Streamer's output is finite and equal to offline enhancement. The
    dense engine under the same poison is the control (it must read them)."""
    ref, ref_gates = offline(tiny, signal)
    hop, n_fft = tiny.cfg.stft.hop, tiny.cfg.stft.n_fft
    assert hop == n_fft // 2          # then the first feed, each later one and flush: one frame

    def poisoned(engine):
        s = Streamer(tiny, engine)
        chan, outs = s.runtime.chan, []
        clean = chan.copy()
        cuts = list(range(n_fft // 2, signal.shape[0] - hop + 1, hop)) + [signal.shape[0]]
        pieces = [signal[:n_fft // 2]] + [signal[i:j] for i, j in zip(cuts, cuts[1:])] + [None]
        for t, piece in enumerate(pieces):
            off = ref_gates[:, :, t] == 0
            chan[off] = np.nan
            outs.append(s.flush() if piece is None else s.feed(piece))
            chan[off] = clean[off]
            assert s.stats.frames == t + 1
        return np.concatenate(outs), s.gates

    out, gates = poisoned("sparse")
    assert np.isfinite(out).all() and np.abs(out - ref).max() < 1e-5
    assert np.array_equal(gates, ref_gates)
    assert not np.isfinite(poisoned("dense")[0]).all()


# -- many streams, one runtime (issue 15) ----------------------------------------------------------
def test_streamers_in_threads_share_one_runtime(signal):
    """Four Streamers over one SparseRuntime, each in its own thread, chunks of random sizes:
    every output equals the same stream run alone."""
    import threading

    from dyncp.runtime import SparseRuntime

    model = model_for("paper")
    rt = SparseRuntime(model, "sparse")
    rng = np.random.default_rng(5)
    long = np.tile(signal, 6)                                       # 3 s, ~190 frames
    signals = [np.roll(long, 1000 * j) * (0.5 + 0.2 * j) for j in range(4)]
    chunks = [[int(c) for c in rng.integers(1, 500, 160)] for _ in signals]

    def run(j, barrier=None):
        s = Streamer(rt, record_gates=True)
        if barrier is not None:
            barrier.wait()
        outs, i = [], 0
        for n in chunks[j]:
            outs.append(s.feed(signals[j][i:i + n]))
            i += n
        outs.append(s.feed(signals[j][i:]))
        outs.append(s.flush())
        return np.concatenate(outs), s.gates

    alone = [run(j) for j in range(len(signals))]
    for _ in range(3):
        barrier = threading.Barrier(len(signals))
        got = [None] * len(signals)

        def worker(j):
            got[j] = run(j, barrier)

        threads = [threading.Thread(target=worker, args=(j,)) for j in range(len(signals))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for (a_out, a_gates), (g_out, g_gates) in zip(alone, got):
            assert np.array_equal(a_out, g_out) and np.array_equal(a_gates, g_gates)


# -- the streaming statistics use macs.py's formula (issue 15) -------------------------------------
@pytest.mark.parametrize("engine", ["torch", "dense", "sparse"])
def test_stream_statistics_equal_offline_accounting(tiny, signal, engine, tmp_path):
    """Frames, gated channels open, Φ and dynamic MMAC/s of a stream equal what
    dyncp.macs.dynamic_macs says of the offline gates; with and without recorded gates."""
    from dyncp.audio import save_audio
    from dyncp.macs import dynamic_macs, static_macs_per_frame

    ref, ref_gates = offline(tiny, signal)
    d = dynamic_macs(tiny.cfg, [torch.from_numpy(g[None].astype(np.float32)) for g in ref_gates])
    for record in (True, False):
        s = Streamer(tiny, engine, record_gates=record)
        run_chunks(s, signal, 100, None)
        assert s.stats.frames == ref_gates.shape[-1]
        assert s.stats.active == int(ref_gates.sum())
        assert s.gates.shape[-1] == (ref_gates.shape[-1] if record else 0)
    r = stream_file(tiny, save_audio(tmp_path / "in.wav", signal), engine=engine)
    assert r["frames"] == ref_gates.shape[-1]
    assert r["pruning_ratio"] == pytest.approx(d.pruning_ratio(), abs=1e-12)
    assert r["dynamic_mmac_per_s"] == pytest.approx(d.mean_per_second / 1e6, rel=1e-12)
    static = model_for("tiny", "gate.enabled=false")
    r = stream_file(static, tmp_path / "in.wav", engine=engine)
    fps = tiny.cfg.stft.frames_per_second
    assert r["dynamic_mmac_per_s"] == pytest.approx(static_macs_per_frame(static.cfg) * fps / 1e6)
    assert r["pruning_ratio"] == 0.0


@pytest.mark.parametrize("engine", ["torch", "sparse"])
def test_a_refused_chunk_leaves_the_stream_as_it_was(tiny, signal, engine):
    """A chunk with a NaN raises and does nothing: the stream goes on as if it never came."""
    ref = run_chunks(Streamer(tiny, engine), signal, 500, None)
    s = Streamer(tiny, engine)
    outs = [s.feed(signal[:3000])]
    bad = signal[3000:3500].copy()
    bad[7] = np.nan
    with pytest.raises(AudioError, match="1 sample"):
        s.feed(bad)
    outs += [s.feed(signal[3000:]), s.flush()]
    assert np.array_equal(np.concatenate(outs), ref)

"""The training recipe's pieces: several speech/noise folders, generated noise, babble, band-limited
speech and noise, room reverberation (dyncp/data/mixing.py, dyncp/data/reverb.py), the EMA of the weights and the monitored set
(dyncp/train.py), the development-set breakdown (dyncp/devset.py), and `make models` as the chain
the shipped files came from."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import dyncp.train as T
from dyncp.checkpoint import load_model
from dyncp.config import load_config
from dyncp.data import eval_pairs, training_set
from dyncp.data.mixing import Mixer
from dyncp.data.noise import lowpass
from dyncp.data.reverb import EARLY_MS, align, generated_rir, reverberate
from dyncp.devset import breakdown, read_manifest
from dyncp.errors import ConfigError, DataError

from test_train import TINY, write_pairs

SR = 16000


def _write(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), SR)


def _broadband(seed: int, seconds: float) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    for i in range(12):
        _write(root / "sa" / f"a{i:02d}.flac", _broadband(i, 1.5))
        _write(root / "sb" / f"b{i:02d}.flac", _broadband(100 + i, 1.5))
    # the file noise is a pure 100 Hz tone, so anything else in a mixture came from elsewhere
    t = np.arange(2 * SR) / SR
    _write(root / "na" / "tone__low__a.flac", 0.1 * np.sin(2 * np.pi * 100 * t))
    _write(root / "nb" / "tone__low__b.flac", 0.1 * np.sin(2 * np.pi * 100 * t + 1))
    return root


def _cfg(*extra: str):
    return load_config(TINY, ["data.snr_min=0", "data.snr_max=0", *extra])


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum() / max(spec.sum(), 1e-20))


def test_several_folders_are_joined(folders):
    m = Mixer(f"{folders / 'sa'}+{folders / 'sb'}", f"{folders / 'na'}+{folders / 'nb'}",
              _cfg(), "train")
    names = {c.path.stem for c in m.speech}
    assert any(n.startswith("a") for n in names) and any(n.startswith("b") for n in names)
    assert len(m.noise) == 2
    # a single folder keeps the split it had before folders could be joined
    one = Mixer(folders / "sa", folders / "na", _cfg(), "valid")
    both = Mixer(f"{folders / 'sa'}+{folders / 'sb'}", folders / "na", _cfg(), "valid")
    assert {c.path for c in one.speech} <= {c.path for c in both.speech}
    spec = f"mix:{folders / 'sa'}+{folders / 'sb'},{folders / 'na'}"
    assert len(training_set(_cfg(), "train", spec=spec)) > len(
        training_set(_cfg(), "train", spec=f"mix:{folders / 'sa'},{folders / 'na'}"))


def test_generated_noise_and_babble_replace_the_file_noise(folders):
    rng = np.random.default_rng(0)
    n = SR

    def high_share(cfg) -> float:
        m = Mixer(folders / "sa", folders / "na", cfg, "train")
        return np.mean([_band_energy(m.noise_for(rng, n), 1000, 8000) for _ in range(8)])

    assert high_share(_cfg()) < 1e-3                                  # the 100 Hz tone only
    assert high_share(_cfg("data.generated_noise=1.0",
                           'data.generated_kinds=["white"]')) > 0.7   # white noise
    assert high_share(_cfg("data.babble=1.0")) > 0.5                  # broadband "talkers"
    m = Mixer(folders / "sa", folders / "na", _cfg("data.babble=1.0"), "train")
    b = m.babble(np.random.default_rng(1), n)
    assert b.shape == (n,) and np.isfinite(b).all() and abs(np.sqrt(np.mean(b ** 2)) - 1) < 1e-3


def test_narrowband_speech_is_the_target_too(folders):
    m = Mixer(folders / "sa", folders / "na", _cfg("data.narrowband=1.0"), "train")
    clean = _broadband(7, 1.0).astype(np.float32)
    noisy, target = m.mix(np.random.default_rng(0), clean)
    assert _band_energy(target, 4100, 8000) < 1e-4          # the target lost its upper band
    assert _band_energy(clean, 4100, 8000) > 0.4
    m = Mixer(folders / "sa", folders / "na", _cfg(), "train")
    _, target = m.mix(np.random.default_rng(0), clean)
    assert _band_energy(target, 4100, 8000) > 0.4            # off: untouched


def test_noise_narrowband(folders):
    m = Mixer(folders / "sa", folders / "na", _cfg(
        "data.generated_noise=1.0", 'data.generated_kinds=["white"]',
        "data.noise_narrowband=1.0"), "train")
    clean = np.zeros(SR, np.float32)
    clean[::400] = 0.5                                         # clicks: some signal power
    noisy, target = m.mix(np.random.default_rng(3), clean)
    assert _band_energy(noisy - target, 4100, 8000) < 1e-3


def test_reverberate_keeps_the_early_part_as_target():
    rir = np.zeros(SR, np.float32)
    rir[5], rir[5 + 160], rir[5 + 3200] = -2.0, 0.6, 0.4     # direct (a negative peak), 10 ms, 200 ms
    h = align(rir)
    assert h[0] == 1.0 and h[160] == pytest.approx(-0.3) and len(h) == SR - 5
    x = np.zeros(SR, np.float32)
    x[100] = 1.0
    wet, early = reverberate(x, rir, SR)
    assert wet.shape == early.shape == x.shape and x[100] == 1.0 and x.sum() == 1.0
    assert wet[100] == pytest.approx(1.0, abs=1e-5) and early[100] == pytest.approx(1.0, abs=1e-5)
    assert wet[260] == pytest.approx(-0.3, abs=1e-5) == early[260]      # inside 50 ms: kept
    assert wet[3300] == pytest.approx(-0.2, abs=1e-5) and abs(early[3300]) < 1e-5   # late: not
    assert abs(early[100 + int(EARLY_MS * SR / 1000) + 2:]).max() < 1e-5
    with pytest.raises(ValueError, match="all zeros"):
        align(np.zeros(8))


def test_generated_rirs():
    for seed in range(5):
        h = generated_rir(np.random.default_rng(seed), SR)
        assert h.dtype == np.float32 and h[0] == 1.0 and np.argmax(np.abs(h)) == 0
        assert int(0.002 * SR) <= np.flatnonzero(h[1:])[0] + 1 <= int(0.010 * SR) + 1
        drr = 10 * np.log10(1.0 / float(np.sum(h[1:].astype(np.float64) ** 2)))
        assert -3.01 <= drr <= 12.01
        tail = h[1:].astype(np.float64) ** 2      # decays: the last fifth holds little energy
        assert tail[-len(tail) // 5:].sum() < 0.05 * tail.sum()
    assert not np.array_equal(generated_rir(np.random.default_rng(0), SR),
                              generated_rir(np.random.default_rng(1), SR))


def _echo_room(root: Path) -> Path:
    rir = np.zeros(SR // 2, np.float32)
    rir[0], rir[3200] = 0.8, 0.4                  # a direct path and an echo 200 ms later
    _write(root / "rooms" / "echo.flac", rir)
    return root / "rooms"


@pytest.mark.parametrize("narrow", [False, True])
def test_reverberant_mixture_early_target(folders, tmp_path, narrow):
    rooms = _echo_room(tmp_path)
    cfg = _cfg("data.snr_min=100", "data.snr_max=100", "data.reverb=1.0",
               f"data.rir={rooms}", f"data.narrowband={1.0 if narrow else 0.0}")
    m = Mixer(folders / "sa", folders / "na", cfg, "train")
    assert len(m.rirs) == 1 and m.rirs[0][0] == 1.0
    clean = np.zeros(SR, np.float32)
    clean[1000] = 0.5
    noisy, target = m.mix(np.random.default_rng(0), clean)
    g = target[1000] / 0.5 if not narrow else np.max(np.abs(target)) / 0.5
    assert abs(target[1000 + 3200]) < 1e-3 * g                # the echo is not in the target
    echo = noisy[1000 + 3200 - 20:1000 + 3200 + 20]
    assert np.max(np.abs(echo)) > 0.1 * g                     # but it is in the mixture
    if narrow:   # the phone line comes after the room: the mixture is band-limited as well
        assert _band_energy(noisy, 4100, 8000) < 1e-3 and _band_energy(target, 4100, 8000) < 1e-3
    # without reverberation the target is the input itself (scaled)
    dry = Mixer(folders / "sa", folders / "na", _cfg("data.snr_min=100", "data.snr_max=100"),
                "train")
    _, t = dry.mix(np.random.default_rng(0), clean)
    assert np.flatnonzero(np.abs(t) > 1e-6).tolist() == [1000]


def test_generated_rooms_when_no_rir_folder(folders):
    m = Mixer(folders / "sa", folders / "na",
              _cfg("data.snr_min=100", "data.snr_max=100", "data.reverb=1.0"), "train")
    assert m.rirs == []
    clean = np.zeros(SR, np.float32)
    clean[1000] = 0.5
    noisy, target = m.mix(np.random.default_rng(2), clean)
    late = slice(1000 + int(0.06 * SR), None)
    assert np.sum(noisy[late] ** 2) > 1e-3 * np.sum(noisy ** 2)      # a reverberant tail
    assert np.sum(target[late] ** 2) < 1e-9 * np.sum(target ** 2)    # none in the target


def test_bad_rir_folders(folders, tmp_path):
    with pytest.raises(DataError, match="data.rir: .*nowhere: no such folder"):
        Mixer(folders / "sa", folders / "na", _cfg("data.reverb=0.5",
                                                   f"data.rir={tmp_path / 'nowhere'}"), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="data.rir: .*empty: no wav/flac"):
        Mixer(folders / "sa", folders / "na", _cfg("data.reverb=0.5",
                                                   f"data.rir={tmp_path / 'empty'}"), "train")
    _write(tmp_path / "silent" / "zero.wav", np.zeros(100))
    with pytest.raises(DataError, match="zero.wav: room impulse response is empty or all zeros"):
        Mixer(folders / "sa", folders / "na", _cfg("data.reverb=0.5",
                                                   f"data.rir={tmp_path / 'silent'}"), "train")


@pytest.mark.parametrize("lo, hi", [(-35.0, -15.0), (-25.0, -25.0), (-50.0, -40.0)])
def test_mixture_level_range(folders, lo, hi):
    m = Mixer(folders / "sa", folders / "na", _cfg(f"data.level_min={lo}", f"data.level_max={hi}"),
              "train")
    clean = _broadband(3, 1.0).astype(np.float32)
    levels = [20 * np.log10(np.sqrt(np.mean(m.mix(np.random.default_rng(s), clean)[0]
                                            .astype(np.float64) ** 2))) for s in range(20)]
    assert lo - 1e-3 <= min(levels) and max(levels) <= hi + 1e-3
    assert max(levels) - min(levels) >= 0.5 * (hi - lo)      # spread over the range


def test_lowpass():
    x = _broadband(0, 1.0).astype(np.float32)
    y = lowpass(x, SR, 3800.0)
    assert y.shape == x.shape and y.dtype == np.float32
    assert _band_energy(y, 3950, 8000) < 1e-4
    # the pass band keeps its energy: the share of it in y is its share in x over what is kept
    kept = _band_energy(x, 0, 3600) / _band_energy(y, 0, 3600)
    assert abs(float(np.sum(y.astype(np.float64) ** 2) / np.sum(x.astype(np.float64) ** 2)) - kept
               ) < 0.05
    assert lowpass(np.zeros(0, np.float32), SR, 3800.0).shape == (0,)


def test_augmented_validation_is_fixed(folders):
    spec = f"mix:{folders / 'sa'},{folders / 'na'}"
    cfg = _cfg("data.babble=0.5", "data.generated_noise=0.3", "data.narrowband=0.5")
    a, b = eval_pairs(spec, cfg, "valid"), eval_pairs(spec, cfg, "valid")
    assert all(np.array_equal(x.noisy, y.noisy) for x, y in zip(a, b))


@pytest.mark.parametrize("bad, match", [
    ("data.babble=1.5", "data.babble"),
    ("data.narrowband=-0.1", "data.narrowband"),
    ("data.reverb=1.1", "data.reverb"),
    ("data.level_min=-10", "data.level_min"),
    ("data.level_max=3", "data.level_max"),
    ('data.generated_kinds=["purple"]', "purple"),
    ("train.ema=1.0", "train.ema"),
    ("data.monitor_every=0", "monitor_every"),
])
def test_bad_recipe_values(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TINY, [bad])
    with pytest.raises(ConfigError, match="generated_noise"):
        load_config(TINY, ["data.generated_noise=0.7", "data.babble=0.5"])


# -- EMA and the monitored set --------------------------------------------------------------------
@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs"))


def _train_cfg(pairs: Path, *extra: str):
    return load_config(TINY, [f"data.train=pairs:{pairs}", "train.epochs=2",
                              "train.steps_per_epoch=3", "data.valid_files=2",
                              "train.batch_size=4", *extra])


def test_ema_weights_and_monitor(tmp_path, pairs_dir):
    cfg = _train_cfg(pairs_dir, "train.ema=0.9", f"data.monitor=pairs:{pairs_dir}")
    T.train(cfg, tmp_path / "r", progress=False)
    ema = load_model(tmp_path / "r" / "last.pt")[0].state_dict()
    raw = load_model(tmp_path / "r" / "last_raw.pt")[0].state_dict()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema if "running" not in k)
    # buffers (BatchNorm statistics) are the raw model's
    assert all(torch.equal(ema[k], raw[k]) for k in ema if "running" in k)
    rows = list(csv.DictReader((tmp_path / "r" / "log.csv").open()))
    assert all(float(r["monitor_pesq_wb"]) > 1.0 for r in rows)
    assert all(r["monitor_raw_pesq_wb"] for r in rows)
    assert float(rows[-1]["audio_hours"]) == pytest.approx(6 * 4 * 1.0 / 3600)
    meta = load_model(tmp_path / "r" / "best.pt")[1]
    assert meta["ema"] == 0.9 and meta["audio_hours"] > 0


def test_ema_update_rule():
    model = torch.nn.Linear(2, 1)
    ema = T._EMA(model, 0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.model.weight.clone()
    ema.update(model, step=1000)                  # decay min(0.5, ...) = 0.5: halfway
    assert torch.allclose(ema.model.weight, before + 0.5)
    ema.update(model, step=0)                     # warm-up: decay 1/10
    assert torch.allclose(ema.model.weight, 0.1 * (before + 0.5) + 0.9 * model.weight)


def test_ema_resume_equals_uninterrupted(tmp_path, pairs_dir, monkeypatch):
    cfg = _train_cfg(pairs_dir, "train.ema=0.9")
    T.train(cfg, tmp_path / "a", progress=False)
    calls, real = [], T.validate

    def dies_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "validate", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(T, "validate", real)
    T.train(cfg, tmp_path / "b", resume=True, progress=False)
    for name in ("last.pt", "last_raw.pt"):
        a = load_model(tmp_path / "a" / name)[0].state_dict()
        b = load_model(tmp_path / "b" / name)[0].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


# -- development-set breakdown ---------------------------------------------------------------------
def test_breakdown_by_manifest(tmp_path):
    (tmp_path / "manifest.csv").write_text(
        "id,noise_kind,snr_db,band\nx1,white,0,wide\nx2,white,5,narrow\nx3,babble,0,wide\n")
    man = read_manifest(tmp_path)
    assert read_manifest(f"pairs:{tmp_path}") == man
    files = [{"name": "x1", "pesq_wb": 1.0, "stoi": 0.5, "si_sdr": 1.0},
             {"name": "x2", "pesq_wb": 2.0, "stoi": None, "si_sdr": 3.0},
             {"name": "x3", "pesq_wb": 3.0, "stoi": 0.7, "si_sdr": float("nan")},
             {"name": "unlisted", "pesq_wb": 9.0}]
    b = breakdown(files, man)
    assert b["noise_kind"]["white"] == {"n": 2, "pesq_wb": 1.5, "stoi": 0.5, "si_sdr": 2.0}
    assert b["band"]["wide"]["pesq_wb"] == 2.0 and b["band"]["narrow"]["n"] == 1
    assert list(b["snr_db"]) == ["0", "5"]
    assert b["noise_kind"]["babble"]["si_sdr"] is None
    assert read_manifest(tmp_path / "nothing") == {}


def test_resume_on_another_thread_count(tmp_path, pairs_dir):
    T.train(_train_cfg(pairs_dir, "train.epochs=1", "train.threads=2"), tmp_path / "r",
            progress=False)
    T.train(_train_cfg(pairs_dir, "train.threads=1"), tmp_path / "r", resume=True,
            progress=False)
    assert T.load_state(tmp_path / "r" / "state.pt")["epoch"] == 2
    with pytest.raises(ConfigError, match="train.lr"):
        T.train(_train_cfg(pairs_dir, "train.epochs=3", "train.lr=0.5"), tmp_path / "r",
                resume=True, progress=False)


def test_make_models_is_the_chain_the_shipped_files_came_from(tmp_path):
    """`make models` (dry run): every config exists, every --init and teacher is a run an earlier
    line trains, each shipped name is written from its level stage, and that stage's level range
    is the one the shipped file was trained at (its embedded config)."""
    import re
    import shlex
    import subprocess

    from dyncp import zoo

    root = Path(__file__).resolve().parents[1]
    runs = tmp_path / "runs"
    out = subprocess.run(["make", "-n", "--no-print-directory", "models", f"MODEL_RUNS={runs}"],
                         cwd=root, capture_output=True, text=True, check=True).stdout
    trained, shipped = {}, {}
    for line in out.splitlines():
        if " train " in line:
            args = shlex.split(line[line.index("dyncp train"):].replace("$r", ""))
            a = dict(zip(args, args[1:]))
            assert (root / a["--config"]).is_file(), a["--config"]
            sets = dict(v.split("=", 1) for k, v in zip(args, args[1:]) if k == "--set")
            for dep in [a.get("--init"), sets.get("train.teacher")]:
                if dep:
                    assert Path(dep).parent.name in trained, f"{dep} is trained by no earlier line"
            trained[Path(a["--run-dir"]).name] = sets
        elif " ship " in line:
            args = shlex.split(line)
            a = dict(zip(args, args[1:]))
            shipped[a["--name"]] = Path(args[args.index("ship") + 1]).parent.name
    assert set(shipped) == set(zoo.shipped_names())
    for name, run in shipped.items():
        assert run == f"{name}_levels" and run in trained
        cfg = load_model(name)[0].cfg.data
        lo, hi = float(trained[run]["data.level_min"]), float(trained[run]["data.level_max"])
        assert (lo, hi) == (cfg.level_min, cfg.level_max), name
    assert re.search(r"static_levels/best\.pt", trained["dyncp75_levels"]["train.teacher"])

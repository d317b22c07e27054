"""Data: the built-in corpus (tiny sizes, temporary cache), paired folders, a fake VoiceBank tree,
on-the-fly mixing, bad inputs, realdev (when present) and `dyncp data build`."""

from __future__ import annotations

import csv
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dyncp.config import load_config
from dyncp.data import builtin, eval_pairs, parse_spec, speech, training_set
from dyncp.data.noise import KINDS, loop, make_noise, mix_at_snr
from dyncp.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
REALDEV = Path("/work/shared/data/realdev")
SR = 16000


def tiny(tmp: Path, *extra: str):
    return load_config(TINY, [f"data.cache_dir={tmp}", *extra])


def write(path: Path, wav: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, sr)
    return path


def tone(seconds: float, sr: int = SR, f: float = 220.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * f * t) + noise).astype(np.float32)


# -- built-in corpus -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    cache = tmp_path_factory.mktemp("cache")
    cfg = tiny(cache)
    root = builtin.build_builtin(cfg, progress=False)
    return cfg, root


def _manifest(root: Path, split: str) -> list[dict]:
    with open(root / split / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_builtin_corpus_layout_sizes_and_levels(corpus):
    cfg, root = corpus
    assert root.parent == Path(cfg.data.cache_dir) and builtin.is_complete(root)
    for split, n in (("train", 48), ("valid", 8), ("test", 8)):
        rows = _manifest(root, split)
        assert len(rows) == n
        for row in rows[:8]:
            clean, sr = sf.read(str(root / split / "clean" / f"{row['name']}.wav"))
            noisy, _ = sf.read(str(root / split / "noisy" / f"{row['name']}.wav"))
            assert sr == SR and len(clean) == len(noisy)
            assert 1.5 - 0.3 <= len(clean) / SR <= 5.0  # trimmed speech may end a bit short
            assert 0.09 <= np.abs(noisy).max() <= 0.95
            snr = 10 * np.log10(np.sum(clean ** 2) / np.sum((noisy - clean) ** 2))
            assert snr == pytest.approx(float(row["snr_db"]), abs=0.3)
            assert cfg.data.snr_min - 0.3 <= snr <= cfg.data.snr_max + 0.3
    kinds = {k for r in _manifest(root, "train") for k in r["noise"].split("+")}
    assert len(kinds) >= 7 and kinds <= set(KINDS)


def test_builtin_splits_have_disjoint_voices_and_sentences(corpus):
    _, root = corpus
    variants = {s: {r["voice"].split("+")[1] for r in _manifest(root, s)} for s in builtin.SPLITS}
    texts = {s: {r["text"] for r in _manifest(root, s)} for s in builtin.SPLITS}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not variants[a] & variants[b]
        sentences_a = {t for x in texts[a] for t in x.split(". ")}
        sentences_b = {t for x in texts[b] for t in x.split(". ")}
        assert not sentences_a & sentences_b
    assert len(variants["train"]) >= 20
    assert len({r["language"] for r in _manifest(root, "train")}) >= 3


def test_builtin_plan_is_deterministic_and_seeded(tmp_path):
    voices = speech.synth().voices() if _has_espeak() else [f"v{i}" for i in range(40)]
    a = builtin.plan(tiny(tmp_path), voices)
    assert a == builtin.plan(tiny(tmp_path), voices)
    assert a != builtin.plan(tiny(tmp_path, "data.seed=7"), voices)
    assert builtin.corpus_key(tiny(tmp_path)) != builtin.corpus_key(tiny(tmp_path,
                                                                        "data.snr_max=10"))


def _has_espeak() -> bool:
    try:
        import espeakng_loader  # noqa: F401
        return True
    except ImportError:
        return False


def test_builtin_is_reused_from_the_cache(corpus, monkeypatch):
    cfg, root = corpus
    monkeypatch.setattr(builtin, "_build_split", lambda *a: pytest.fail("rebuilt"))
    assert builtin.build_builtin(cfg, progress=False) == root


def test_builtin_interrupted_build_leaves_nothing_half_done(tmp_path, monkeypatch):
    pytest.importorskip("espeakng_loader")
    cfg = tiny(tmp_path)
    real = builtin._build_split

    def boom(split, *a):
        if split == "valid":
            raise KeyboardInterrupt
        return real(split, *a)

    monkeypatch.setattr(builtin, "_build_split", boom)
    with pytest.raises(KeyboardInterrupt):
        builtin.build_builtin(cfg, progress=False)
    assert list(tmp_path.iterdir()) == []  # no corpus, no temporary folder
    monkeypatch.setattr(builtin, "_build_split", real)
    root = builtin.build_builtin(cfg, progress=False)
    assert json.loads((root / "corpus.json").read_text())["utterances"]["test"] == 8


def test_builtin_without_espeak_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails
    monkeypatch.setattr(speech, "_instance", None)
    with pytest.raises(DataError, match=r"pip install dyncp\[corpus\]"):
        builtin.build_builtin(tiny(tmp_path), progress=False)


def test_builtin_training_set_and_eval_pairs(corpus):
    cfg, root = corpus
    ds = training_set(cfg, "train")
    assert len(ds) == 48 and ds.skipped == 0
    noisy, clean = ds[3]
    assert noisy.shape == clean.shape == (SR,) and str(noisy.dtype) == "torch.float32"
    assert not np.allclose(noisy.numpy(), clean.numpy())
    again = ds[3]
    assert np.array_equal(again[0].numpy(), noisy.numpy())  # deterministic per (seed, epoch, i)
    ds.set_epoch(1)
    assert any(not np.array_equal(ds[i][1].numpy(), training_set(cfg)[i][1].numpy())
               for i in range(8))  # a new epoch draws new crops
    pairs = eval_pairs("builtin", cfg, split="test")
    assert [p.name for p in pairs] == [f"test_{i:05d}" for i in range(8)]
    assert all(len(p.noisy) == len(p.clean) >= SR for p in pairs)
    assert len(eval_pairs("builtin", cfg, split="valid", limit=3)) == 3


# -- noise generators ----------------------------------------------------------------------------
def test_noise_generators_are_seeded_and_unit_rms():
    pool = [tone(1.0, f=f) for f in (150, 230, 310)]
    for kind in KINDS:
        a = make_noise(kind, np.random.default_rng(1), 12345, SR, pool)
        b = make_noise(kind, np.random.default_rng(1), 12345, SR, pool)
        assert a.shape == (12345,) and np.array_equal(a, b), kind
        assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)
    spec = lambda x: np.abs(np.fft.rfft(x)) ** 2  # noqa: E731
    f = np.fft.rfftfreq(SR, 1 / SR)
    for kind, slope in (("white", 0.0), ("pink", -1.0), ("brown", -2.0)):
        p = spec(make_noise(kind, np.random.default_rng(2), SR, SR))
        lo, hi = p[(f > 200) & (f < 400)].mean(), p[(f > 3200) & (f < 6400)].mean()
        assert np.log2(hi / lo) / 4 == pytest.approx(slope, abs=0.3), kind  # per octave


def test_loop_and_mix_at_snr():
    x = tone(0.1)
    y = loop(x, 16000, SR, np.random.default_rng(0))
    assert y.shape == (16000,) and np.abs(y).max() < 1.0
    clean, noise = tone(1.0), np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    noisy = mix_at_snr(clean, noise, 7.5)
    assert 10 * np.log10(np.sum(clean ** 2) / np.sum((noisy - clean) ** 2)) == \
        pytest.approx(7.5, abs=1e-3)


# -- paired folders ------------------------------------------------------------------------------
def make_pairs(root: Path, n: int = 20) -> Path:
    for i in range(n):
        c = tone(1.2 + 0.1 * i, seed=i)
        write(root / "clean" / f"utt{i:03d}.wav", c)
        write(root / "noisy" / f"utt{i:03d}.wav", c + 0.05 * tone(len(c) / SR, f=50, seed=99))
    return root


def test_pair_folder_splits_and_resampling(tmp_path):
    cfg = tiny(tmp_path)
    root = make_pairs(tmp_path / "set")
    # one pair at 48 kHz stereo, one flac at 8 kHz: resampled and downmixed
    c48 = tone(1.0, sr=48000)
    write(root / "clean" / "hi.wav", np.stack([c48, c48], 1), 48000)
    write(root / "noisy" / "hi.wav", np.stack([c48, 0 * c48], 1), 48000)
    write(root / "clean" / "lo.flac", tone(1.0, sr=8000), 8000)
    write(root / "noisy" / "lo.flac", tone(1.0, sr=8000), 8000)
    test = eval_pairs(f"pairs:{root}", cfg, "test")
    assert len(test) == 22 and test.skipped == 0
    hi = next(p for p in test if p.name == "hi")
    assert len(hi.clean) == SR and np.allclose(hi.noisy, 0.5 * hi.clean, atol=1e-3)
    assert len(next(p for p in test if p.name == "lo").clean) == SR
    train = {p.name for p in eval_pairs(str(root), cfg, "train")}
    valid = {p.name for p in eval_pairs(str(root), cfg, "valid")}
    assert valid and not train & valid and train | valid == {p.name for p in test}
    ds = training_set(cfg, "train", spec=f"pairs:{root}")
    assert len(ds) == len(train) and ds[0][0].shape == (SR,)
    short = training_set(load_config(TINY, ["data.segment_seconds=3.0"]), spec=str(root))
    noisy, clean = short[0]
    assert noisy.shape == (48000,) and float(clean[-100:].abs().max()) == 0.0  # zero-padded


@pytest.mark.parametrize("case", ["empty", "unreadable", "unpaired", "lengths"])
def test_bad_pairs_raise_naming_the_file_or_are_skipped(tmp_path, case):
    root = make_pairs(tmp_path / "set", n=5)
    bad = root / "noisy" / "bad.wav"
    if case == "empty":
        write(root / "clean" / "bad.wav", tone(1.0))
        sf.write(str(bad), np.zeros(0, np.float32), SR)
    elif case == "unreadable":
        write(root / "clean" / "bad.wav", tone(1.0))
        bad.write_bytes(b"RIFF\x00\x00garbage, not a wav file")
    elif case == "unpaired":
        write(bad, tone(1.0))
    else:
        write(root / "clean" / "bad.wav", tone(1.0))
        write(bad, tone(1.5))
    with pytest.raises(DataError, match="bad.wav"):
        eval_pairs(str(root), tiny(tmp_path), "test")
    cfg = tiny(tmp_path, "data.skip_bad=true")
    with pytest.warns(UserWarning, match="bad.wav"):
        pairs = eval_pairs(str(root), cfg, "test")
    assert len(pairs) == 5 and pairs.skipped == 1
    with pytest.warns(UserWarning):
        assert training_set(cfg, "test", spec=str(root)).skipped == 1


def test_specs_and_missing_folders(tmp_path):
    assert parse_spec("builtin") == ("builtin", [])
    assert parse_spec("voicebank:/x") == ("voicebank", ["/x"])
    assert parse_spec("mix:/a, /b") == ("mix", ["/a", "/b"])
    assert parse_spec(str(tmp_path)) == ("pairs", [str(tmp_path)])
    for bad in ("nonsense", "mix:/a", "", "voicebank:"):
        with pytest.raises(DataError, match="data spec"):
            parse_spec(bad)
    with pytest.raises(DataError, match="noisy/ and clean/"):
        eval_pairs(f"pairs:{tmp_path}", tiny(tmp_path))
    with pytest.raises(DataError, match="clean_trainset_28spk_wav"):
        eval_pairs(f"voicebank:{tmp_path}", tiny(tmp_path), "train")


# -- VoiceBank+DEMAND ----------------------------------------------------------------------------
def test_voicebank_fake_tree(tmp_path):
    vb = tmp_path / "vb"
    files = {"trainset_28spk_wav": ["p226_001", "p226_002", "p230_001", "p230_002", "p287_010",
                                    "p250_003"],
             "testset_wav": ["p232_001", "p257_002"]}
    for folder, names in files.items():
        for i, name in enumerate(names):
            c = tone(0.5 + 0.05 * i, sr=48000, seed=i)
            write(vb / f"clean_{folder}" / f"{name}.wav", c, 48000)
            write(vb / f"noisy_{folder}" / f"{name}.wav", c + 0.1 * tone(len(c) / 48000,
                                                                          48000, 60.0), 48000)
    cfg = tiny(tmp_path / "cache")
    train = eval_pairs(f"voicebank:{vb}", cfg, "train")
    valid = eval_pairs(f"voicebank:{vb}", cfg, "valid")
    test = eval_pairs(f"voicebank:{vb}", cfg, "test")
    assert [p.name for p in train] == ["p230_001", "p230_002", "p250_003"]
    assert [p.name for p in valid] == ["p226_001", "p226_002", "p287_010"]
    assert [p.name for p in test] == ["p232_001", "p257_002"]
    assert len(train[0].clean) == len(train[0].noisy) == 9600  # 0.6 s at 48 kHz -> 16 kHz
    cached = list((tmp_path / "cache").glob("voicebank-*/clean_trainset_28spk_wav/*.wav"))
    assert len(cached) == 6 and sf.info(str(cached[0])).samplerate == SR
    ds = training_set(cfg, "train", spec=f"voicebank:{vb}")
    assert len(ds) == 3 and ds[0][0].shape == (SR,)


# -- on-the-fly mixing ---------------------------------------------------------------------------
def test_mixing_from_speech_and_noise_folders(tmp_path):
    for i in range(20):
        write(tmp_path / "speech" / f"spk{i:02d}.flac", tone(2.0 + 0.1 * i, f=120 + 10 * i,
                                                             seed=i))
    write(tmp_path / "noise" / "hum__mains__a.flac", tone(0.3, f=50.0))  # shorter: looped
    write(tmp_path / "noise" / "hiss__white__b.wav",
          0.1 * np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32))
    spec = f"mix:{tmp_path / 'speech'},{tmp_path / 'noise'}"
    cfg = tiny(tmp_path, "data.snr_min=0", "data.snr_max=10")
    ds = training_set(cfg, "train", spec=spec)
    assert 18 <= len(ds) // 2 <= 19 * 2  # ~90 % of the files, about two 1 s items each
    noisy, clean = ds[5]
    assert noisy.shape == clean.shape == (SR,) and float(noisy.abs().max()) <= 0.99
    snr = 10 * np.log10(float((clean ** 2).sum() / ((noisy - clean) ** 2).sum()))
    assert -0.1 <= snr <= 10.1
    assert np.array_equal(ds[5][0].numpy(), noisy.numpy())
    ds.set_epoch(3)
    assert not np.array_equal(ds[5][0].numpy(), noisy.numpy())
    valid = eval_pairs(spec, cfg, "valid")
    train_names = {p.path.stem for p in ds.mixer.speech}
    assert valid and not {p.name for p in valid} & train_names
    assert all(len(p.noisy) >= 2 * SR for p in valid)
    again = eval_pairs(spec, cfg, "valid")
    assert np.array_equal(again[0].noisy, valid[0].noisy)  # fixed-seed mixtures


@pytest.mark.skipif(not REALDEV.is_dir(), reason="shared realdev data not present")
def test_realdev_pairs(tmp_path):
    pairs = eval_pairs(f"pairs:{REALDEV}", tiny(tmp_path))
    assert len(pairs) == 30
    assert all(len(p.noisy) == len(p.clean) > SR for p in pairs)
    assert all(p.noisy.dtype == np.float32 for p in pairs)


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_data_build(tmp_path, capsys):
    pytest.importorskip("espeakng_loader")
    from dyncp.cli import main

    out = tmp_path / "corpus"
    argv = ["data", "build", "--out", str(out), "--config", str(TINY), "--set",
            f"data.cache_dir={tmp_path}", "--set", "data.builtin_train=6", "--set",
            "data.builtin_valid=2", "--set", "data.builtin_test=2", "--no-progress"]
    assert main(argv) == 0
    assert "10 pairs in" in capsys.readouterr().out
    assert len(list((out / "train" / "noisy").glob("*.wav"))) == 6
    assert len(_manifest(out, "valid")) == 2
    assert main(argv) == 0  # the same corpus again: reused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("not a corpus")
    argv[3] = str(tmp_path / "other")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 2  # refuses to write into a folder holding something else

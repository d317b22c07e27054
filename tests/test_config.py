"""Typed configs: TOML in, --set overrides, dict/TOML round trips, errors that name the key."""

from __future__ import annotations

import tomllib

import pytest

from dyncp.config import Config, apply_overrides, load_config
from dyncp.errors import ConfigError

from conftest import CONFIGS


@pytest.mark.parametrize("name", ["paper", "static", "tiny"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / f"{name}.toml")
    assert cfg.name == name
    assert cfg.gate.enabled == (name != "static")
    assert cfg.model.causal


def test_every_toml_in_configs_loads():
    paths = sorted(CONFIGS.glob("*.toml"))
    assert len(paths) >= 3
    for p in paths:
        assert isinstance(load_config(p), Config)


def test_paper_values(paper_cfg):
    c = paper_cfg
    assert (c.stft.sample_rate, c.stft.n_fft, c.stft.hop) == (16000, 512, 256)
    assert (c.model.residual, c.model.hidden, c.model.kernel) == (128, 256, 3)
    assert c.model.dilations == (1, 2, 4) and c.model.stacks == 3 and c.model.n_blocks == 9
    assert c.model.block_dilations() == [1, 2, 4] * 3
    assert c.loss.prune_target == 0.75 and c.loss.usage_mode == "global"
    assert c.gate.surrogate == "ste_clipped" and c.gate.pool == 4 and c.gate.reduction == 16
    assert c.stft.n_freq == 257 and c.stft.frames_per_second == 62.5
    # static twin: same network, gates off
    s = load_config(CONFIGS / "static.toml")
    assert s.model == c.model and s.stft == c.stft and not s.gate.enabled


def test_defaults_equal_paper_network(paper_cfg):
    d = load_config()
    assert d.model == paper_cfg.model and d.stft == paper_cfg.stft and d.gate.enabled


def test_overrides_of_every_type(tiny_cfg):
    cfg = load_config(CONFIGS / "tiny.toml", [
        "gate.pool=5",                    # int
        "loss.prune_target=0.6",          # float
        "loss.usage_weight=2",            # int given for a float: coerced
        "model.causal=false",             # bool
        "gate.surrogate=sigmoid",         # bare word -> string
        'data.train="pairs:/tmp/x y"',    # quoted string
        "model.dilations=[1, 3, 9]",      # list -> tuple
        "name=renamed",
    ])
    assert cfg.gate.pool == 5 and isinstance(cfg.gate.pool, int)
    assert cfg.loss.prune_target == 0.6
    assert cfg.loss.usage_weight == 2.0 and isinstance(cfg.loss.usage_weight, float)
    assert cfg.model.causal is False
    assert cfg.gate.surrogate == "sigmoid"
    assert cfg.data.train == "pairs:/tmp/x y"
    assert cfg.model.dilations == (1, 3, 9)
    assert cfg.name == "renamed"
    # untouched values stay as in the file
    assert cfg.model.hidden == tiny_cfg.model.hidden == 32
    # the later override wins
    assert load_config(CONFIGS / "tiny.toml", ["gate.pool=2", "gate.pool=7"]).gate.pool == 7


def test_overrides_do_not_mutate_input():
    d = {"gate": {"pool": 3}}
    out = apply_overrides(d, ["gate.pool=9"])
    assert d == {"gate": {"pool": 3}} and out == {"gate": {"pool": 9}}


@pytest.mark.parametrize("name", ["paper", "static", "tiny"])
def test_round_trip_dict_and_toml(name, tmp_path):
    cfg = load_config(CONFIGS / f"{name}.toml", ["model.dilations=[1, 2]", "loss.mix=0.25"])
    d = cfg.to_dict()
    assert isinstance(d["model"]["dilations"], list)     # plain builtins only
    assert Config.from_dict(d) == cfg
    text = cfg.to_toml()
    assert Config.from_dict(tomllib.loads(text)) == cfg
    p = tmp_path / "cfg.toml"
    p.write_text(text)
    assert load_config(p) == cfg                         # name kept from the file, not the stem
    assert hash(cfg) == hash(Config.from_dict(d))        # frozen and hashable


def test_toml_escapes_strings():
    cfg = load_config(None, ['data.cache_dir="a \\"quoted\\" \\\\ path"'])
    assert cfg.data.cache_dir == 'a "quoted" \\ path'
    assert Config.from_dict(tomllib.loads(cfg.to_toml())) == cfg
    odd = Config.from_dict({"data": {"cache_dir": "tab\there\nnewline \x7f é 😀 \\ \""}})
    assert Config.from_dict(tomllib.loads(odd.to_toml())) == odd


BAD_OVERRIDES = [
    ("foo=1", "foo"),                                   # unknown top-level key
    ("model.hiden=3", "model.hiden"),                   # unknown nested key
    ("gate.surrogate=foo", "gate.surrogate"),           # invalid choice
    ("loss.prune_target=1.5", "loss.prune_target"),     # out of range
    ("loss.usage_mode=both", "loss.usage_mode"),
    ("model.kernel=2", "model.kernel"),                 # even kernel
    ("model.hidden=abc", "model.hidden"),               # wrong type: string for int
    ("model.hidden=2.5", "model.hidden"),               # wrong type: float for int
    ("model.causal=1", "model.causal"),                 # wrong type: int for bool
    ("gate.beta=true", "gate.beta"),                    # wrong type: bool for float
    ("data.train=3", "data.train"),                     # wrong type: int for str
    ("model.dilations=3", "model.dilations"),           # wrong type: scalar for list
    ('model.dilations=[1, "x"]', "model.dilations[1]"),
    ("model.dilations=[]", "model.dilations"),
    ("stft.hop=0", "stft.hop"),
    ("loss.usage_weight=nan", "loss.usage_weight"),     # TOML allows nan/inf: rejected
    ("data.segment_seconds=inf", "data.segment_seconds"),
    ("gate.min_active=999", "gate.min_active"),         # cross-field check
    ("model=3", "model"),                               # a value where a table belongs
    ("model.hidden.x=1", "model.hidden"),               # a table where a value belongs
]


@pytest.mark.parametrize("override,key", BAD_OVERRIDES)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "tiny.toml", [override])
    assert str(e.value).startswith(key), str(e.value)


def test_unknown_key_lists_known_keys():
    with pytest.raises(ConfigError, match=r"model\.hiden: unknown key \(known: .*hidden"):
        load_config(None, ["model.hiden=3"])


def test_unknown_key_in_toml_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[gate]\npool = 4\nsurogate = 'ste'\n")
    with pytest.raises(ConfigError, match=r"^gate\.surogate: unknown key"):
        load_config(p)
    p.write_text("[extra]\na = 1\n")
    with pytest.raises(ConfigError, match=r"^extra: unknown key"):
        load_config(p)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    p = tmp_path / "broken.toml"
    p.write_text("[model\nhidden = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["gate.pool"])
    with pytest.raises(ConfigError, match="empty key"):
        load_config(None, ["gate..pool=3"])
    with pytest.raises(ConfigError):
        Config.from_dict([1, 2])

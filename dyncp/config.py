"""Typed, frozen configuration: TOML in, dict out.

One TOML file per experiment (``configs/*.toml``); ``--set a.b=v`` overrides on the command line.
Unknown keys and invalid values raise :class:`ConfigError` naming the dotted key, e.g.
``model.hiden: unknown key (known: causal, hidden, ...)``.

Every section is a frozen dataclass so a resolved config can be embedded in checkpoints as a
plain dict and compared for equality.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from .errors import ConfigError

SURROGATES = ("ste", "ste_clipped", "sigmoid", "stochastic")
# [decided] the floor of the log features (model.feature_compress = 0): ln(|X| + 1e-4), -9.2 at
# digital silence; a -60 dBFS noise floor gives |X| of about 1e-2 with the 512-point Hann window
LOG_FEATURE_FLOOR = 1e-4
USAGE_MODES = ("global", "per_block")
FRAME_TARGETS = ("none", "speech", "contrast", "snr")


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass(frozen=True)
class STFTConfig:
    """Short-time Fourier transform. 16 kHz, 512-point Hann, hop 256 (SPEC §1)."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 256

    def validate(self, p: str = "stft") -> None:
        _check(self.sample_rate > 0, f"{p}.sample_rate", "must be positive")
        _check(self.n_fft >= 16 and self.n_fft % 2 == 0, f"{p}.n_fft", "must be even and >= 16")
        _check(0 < self.hop <= self.n_fft // 2, f"{p}.hop",
               "must be in (0, n_fft/2] so that the Hann window overlaps")

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop


@dataclass(frozen=True)
class ModelConfig:
    """Conv-FSENet widths (SPEC §1). ``residual`` is B, ``hidden`` is H."""

    residual: int = 128
    hidden: int = 256
    kernel: int = 3
    stacks: int = 3
    dilations: tuple[int, ...] = (1, 2, 4)
    causal: bool = True
    # [decided] Exponent applied to |spec| before the front-end. 1.0 = raw magnitude, as the
    # backbone is described; < 1 compresses the dynamic range (MAC-free); 0 = log magnitude,
    # ln(|spec| + LOG_FEATURE_FLOOR) (the exponent's limit, as in Box-Cox); docs/decisions.md.
    feature_compress: float = 1.0

    def validate(self, p: str = "model") -> None:
        for k in ("residual", "hidden", "kernel", "stacks"):
            _check(getattr(self, k) > 0, f"{p}.{k}", "must be a positive integer")
        _check(self.kernel % 2 == 1, f"{p}.kernel", "must be odd (centred padding when non-causal)")
        _check(len(self.dilations) > 0 and all(d > 0 for d in self.dilations), f"{p}.dilations",
               "must be a non-empty list of positive integers")
        _check(0 <= self.feature_compress <= 1.0, f"{p}.feature_compress",
               "must be in [0, 1] (1: |X|, c in (0, 1): |X|^c, 0: log |X|)")

    @property
    def n_blocks(self) -> int:
        return self.stacks * len(self.dilations)

    def block_dilations(self) -> list[int]:
        return [d for _ in range(self.stacks) for d in self.dilations]


@dataclass(frozen=True)
class GateConfig:
    """The DynCP gate (SPEC §2). ``enabled = false`` gives the static twin."""

    enabled: bool = True
    pool: int = 4            # L, moving-average length in frames [decided]
    reduction: int = 16      # R, width of the score stack [decided]
    surrogate: str = "ste_clipped"
    beta: float = 4.0        # slope of the sigmoid surrogate
    noise: float = 1.0       # scale of the logistic noise of the "stochastic" surrogate
    min_active: int = 0      # floor: at least this many channels per block and frame stay on
    init_bias: float = 0.5   # gates start open: last layer bias (SPEC §3a)
    init_scale: float = 0.01  # ... and its weights scaled down
    # Run-time budget (issue 13, docs/budget.md): one model, Φ chosen at run time in
    # [budget_min, budget_max] (or 0: gates bypassed, the static cost). Each gated channel's
    # threshold moves with the requested Φ by a learned slope; training samples Φ per item.
    budget: bool = False
    budget_min: float = 0.1
    budget_max: float = 0.85
    budget_static: float = 0.1   # share of training items run at Φ = 0 (every channel on)

    def validate(self, p: str = "gate") -> None:
        _check(self.pool >= 1, f"{p}.pool", "must be >= 1")
        _check(self.reduction >= 1, f"{p}.reduction", "must be >= 1")
        _check(self.surrogate in SURROGATES, f"{p}.surrogate",
               f"must be one of {', '.join(SURROGATES)}, got {self.surrogate!r}")
        _check(self.beta > 0, f"{p}.beta", "must be positive")
        _check(self.noise >= 0, f"{p}.noise", "must be >= 0")
        _check(self.min_active >= 0, f"{p}.min_active", "must be >= 0")
        _check(0 < self.budget_min <= self.budget_max < 1, f"{p}.budget_min",
               "need 0 < gate.budget_min <= gate.budget_max < 1")
        _check(0 <= self.budget_static < 1, f"{p}.budget_static", "must be in [0, 1)")
        _check(not self.budget or self.enabled, f"{p}.budget", "needs gate.enabled = true")


@dataclass(frozen=True)
class LossConfig:
    """L = L_SE + usage_weight * L_DCP (SPEC §2-3)."""

    compress: float = 0.3     # c, power-law exponent
    mix: float = 0.3          # alpha, weight of the complex term
    si_sdr_weight: float = 0.0
    prune_target: float = 0.75  # Phi_trgt: fraction of gated channels omitted on average
    usage_weight: float = 5.0   # lambda
    usage_mode: str = "global"
    # Speech-tied usage target (issue 12 item 3, docs/method.md) [decided]: "speech" trains
    # non-speech frames toward Φ_trgt + frame_spread and speech frames toward what keeps each
    # item's mean at Φ_trgt (losses.speech_usage_loss); "contrast" keeps the paper's L_DCP and
    # adds a hinge that asks the batch's non-speech frames to be pruned at least frame_spread
    # more than its speech frames (losses.contrast_loss); "snr" is that hinge with the frames
    # split by difficulty (the batch's cleaner half by input SNR pruned frame_spread more than
    # its harder half, losses.hard_frames); "none" is the paper's L_DCP.
    frame_target: str = "none"
    frame_spread: float = 0.2
    # Distillation [decided]: + distill_weight * L_SE(output, teacher's output), the teacher a
    # frozen model (train.teacher; for a DynCP fine-tune, the static model it starts from), so
    # the gated model is asked to do what its dense twin does on every frame. 0 = off.
    distill_weight: float = 0.0

    def validate(self, p: str = "loss") -> None:
        _check(0 < self.compress <= 1, f"{p}.compress", "must be in (0, 1]")
        _check(0 <= self.mix <= 1, f"{p}.mix", "must be in [0, 1]")
        _check(self.si_sdr_weight >= 0, f"{p}.si_sdr_weight", "must be >= 0")
        _check(0 <= self.prune_target < 1, f"{p}.prune_target", "must be in [0, 1)")
        _check(self.usage_weight >= 0, f"{p}.usage_weight", "must be >= 0")
        _check(self.usage_mode in USAGE_MODES, f"{p}.usage_mode",
               f"must be one of {', '.join(USAGE_MODES)}, got {self.usage_mode!r}")
        _check(self.frame_target in FRAME_TARGETS, f"{p}.frame_target",
               f"must be one of {', '.join(FRAME_TARGETS)}, got {self.frame_target!r}")
        _check(0 < self.frame_spread < 1, f"{p}.frame_spread", "must be in (0, 1)")
        _check(self.distill_weight >= 0, f"{p}.distill_weight", "must be >= 0 (0 disables)")
        _check(self.frame_target == "none" or self.usage_mode == "global", f"{p}.frame_target",
               "a per-frame target needs usage_mode = \"global\"")


@dataclass(frozen=True)
class DataConfig:
    """Where training data comes from.

    ``train`` is a data spec: ``builtin`` (the offline eSpeak NG corpus), ``voicebank:ROOT``,
    ``pairs:DIR`` (noisy/ and clean/ folders) or ``mix:SPEECH_DIR,NOISE_DIR`` (on-the-fly mixing).
    """

    train: str = "builtin"
    valid: str = ""            # empty: derived from ``train`` (held-out split)
    segment_seconds: float = 4.0
    snr_min: float = -5.0
    snr_max: float = 20.0
    level_min: float = -35.0   # mixture RMS of ``mix:`` items ~ U[level_min, level_max] dBFS
    level_max: float = -15.0
    builtin_train: int = 400   # utterances in the built-in corpus splits
    builtin_valid: int = 40
    builtin_test: int = 40
    cache_dir: str = ""        # empty: $DYNCP_CACHE or ~/.cache/dyncp
    valid_files: int = 0       # 0: every validation file
    skip_bad: bool = False     # skip (and count) unreadable/unpaired files instead of failing
    seed: int = 1234
    # Augmentation of ``mix:`` data (docs/training.md measures each): probabilities per item.
    generated_noise: float = 0.0   # noise generated on the fly (kinds below) instead of a file
    generated_kinds: tuple[str, ...] = ("white", "pink", "brown", "hum", "band", "modulated",
                                        "nonstationary", "clicks")
    babble: float = 0.0        # babble of 3-7 talkers drawn from the same split's speech
    narrowband: float = 0.0    # speech (and so the target) low-passed at 3.4-4 kHz
    noise_narrowband: float = 0.0  # noise low-passed at 3.4-4 kHz (8 kHz sources)
    reverb: float = 0.0        # speech through a room: target its first 50 ms (dyncp/data/reverb.py)
    rir: str = ""              # "+"-joined folders of measured RIRs; empty: generated RIRs
    monitor: str = ""          # a further data spec scored during training (logged only)
    monitor_every: int = 1     # ... every this many epochs

    def validate(self, p: str = "data") -> None:
        _check(bool(self.train), f"{p}.train", "must name a data spec (e.g. builtin)")
        _check(self.segment_seconds > 0, f"{p}.segment_seconds", "must be positive")
        _check(self.snr_min <= self.snr_max, f"{p}.snr_min", "must be <= data.snr_max")
        _check(self.level_min <= self.level_max, f"{p}.level_min", "must be <= data.level_max")
        _check(self.level_max <= 0, f"{p}.level_max", "must be <= 0 dBFS (full scale)")
        for k in ("builtin_train", "builtin_valid", "builtin_test"):
            _check(getattr(self, k) >= 1, f"{p}.{k}", "must be >= 1")
        _check(self.valid_files >= 0, f"{p}.valid_files", "must be >= 0")
        for k in ("generated_noise", "babble", "narrowband", "noise_narrowband", "reverb"):
            _check(0 <= getattr(self, k) <= 1, f"{p}.{k}", "must be a probability in [0, 1]")
        _check(self.generated_noise + self.babble <= 1, f"{p}.babble",
               "data.generated_noise + data.babble must be <= 1")
        from .data.noise import KINDS
        for k in self.generated_kinds:
            _check(k in KINDS and k != "babble", f"{p}.generated_kinds",
                   f"unknown kind {k!r} (known: {', '.join(sorted(set(KINDS) - {'babble'}))})")
        _check(len(self.generated_kinds) > 0 or self.generated_noise == 0,
               f"{p}.generated_kinds", "must name at least one kind when generated_noise > 0")
        _check(self.monitor_every >= 1, f"{p}.monitor_every", "must be >= 1")


LR_SCHEDULES = ("exponential", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16
    lr: float = 1e-3
    lr_decay: float = 0.98     # "exponential": multiplied into lr after every epoch
    lr_schedule: str = "exponential"  # or "cosine": per step from lr to 0 over all steps
    warmup_steps: int = 0      # linear ramp of lr from lr/warmup_steps over the first steps
    weight_decay: float = 0.0
    epochs: int = 100
    steps_per_epoch: int = 0   # 0: one pass over the training set
    grad_clip: float = 5.0
    ramp_fraction: float = 0.3  # Phi_trgt ramps 0 -> target over this share of all steps
    seed: int = 0
    num_workers: int = 0
    threads: int = 0           # torch intra-op threads; 0 = leave torch's default
    ema: float = 0.0           # decay of an exponential moving average of the weights; 0 = off.
                               # When on, validation, best.pt and last.pt use the averaged weights
    teacher: str = ""          # model checkpoint (or shipped name) for loss.distill_weight

    def validate(self, p: str = "train") -> None:
        for k in ("batch_size", "epochs"):
            _check(getattr(self, k) >= 1, f"{p}.{k}", "must be >= 1")
        _check(self.lr > 0, f"{p}.lr", "must be positive")
        _check(0 < self.lr_decay <= 1, f"{p}.lr_decay", "must be in (0, 1]")
        _check(self.lr_schedule in LR_SCHEDULES, f"{p}.lr_schedule",
               f"unknown schedule {self.lr_schedule!r} (known: {', '.join(LR_SCHEDULES)})")
        _check(self.warmup_steps >= 0, f"{p}.warmup_steps", "must be >= 0")
        _check(self.steps_per_epoch >= 0, f"{p}.steps_per_epoch", "must be >= 0")
        _check(self.grad_clip >= 0, f"{p}.grad_clip", "must be >= 0 (0 disables)")
        _check(0 <= self.ramp_fraction <= 1, f"{p}.ramp_fraction", "must be in [0, 1]")
        _check(self.num_workers >= 0, f"{p}.num_workers", "must be >= 0")
        _check(self.threads >= 0, f"{p}.threads", "must be >= 0")
        _check(0 <= self.ema < 1, f"{p}.ema", "must be in [0, 1) (0 disables)")


@dataclass(frozen=True)
class Config:
    name: str = "paper"
    stft: STFTConfig = field(default_factory=STFTConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                v.validate(f.name)
        _check(self.gate.min_active <= self.model.hidden, "gate.min_active",
               f"must be <= model.hidden ({self.model.hidden})")

    # -- conversion ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of builtins (tuples become lists), safe for TOML/JSON/checkpoints."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        if not isinstance(d, dict):
            raise ConfigError(f"config: expected a table/dict, got {type(d).__name__}")
        return _build(cls, d, "")

    def replace(self, **sections: Any) -> "Config":
        return dataclasses.replace(self, **sections)

    def to_toml(self) -> str:
        return _dump_toml(self.to_dict())


def _to_plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = get_origin(typ)
    if origin is tuple:
        (inner, *_rest) = get_args(typ)
        _check(isinstance(value, (list, tuple)), key, f"expected a list, got {value!r}")
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if typ is bool:
        _check(isinstance(value, bool), key, f"expected true/false, got {value!r}")
        return value
    if typ is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key,
               f"expected an integer, got {value!r}")
        return value
    if typ is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key,
               f"expected a number, got {value!r}")
        # TOML accepts inf/nan, and nan slips through every range check; no field needs them.
        _check(math.isfinite(value), key, f"must be a finite number, got {value!r}")
        return float(value)
    if typ is str:
        _check(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {typ}")  # pragma: no cover


def _build(cls: type, d: dict[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if k not in known:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(known))})")
        typ = hints[k]
        if dataclasses.is_dataclass(typ):
            _check(isinstance(v, dict), key, f"expected a table, got {v!r}")
            kwargs[k] = _build(typ, v, f"{key}.")
        else:
            kwargs[k] = _coerce(v, typ, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # pragma: no cover - defensive
        raise ConfigError(f"{prefix or 'config'}: {e}") from e


def _parse_value(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value`` as a TOML value; bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(d: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b=v`` overrides to a nested dict (copied). Unknown keys are caught later."""
    out = _to_plain(d)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. gate.pool=4")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key part")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{key}: {p} is a value, not a table")
            node = nxt
        node[parts[-1]] = _parse_value(text.strip())
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a TOML file (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    d: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            d = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid TOML ({e})") from e
        d.setdefault("name", p.stem)
    return Config.from_dict(apply_overrides(d, overrides))


def with_data_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    """A trained model's config with ``--set data.KEY=VALUE`` overrides: how evaluation data is
    read (e.g. ``data.skip_bad=true``). Any other key would describe another model than the
    weights: ConfigError naming it."""
    for item in overrides or []:
        if not item.split("=", 1)[0].strip().startswith("data."):
            raise ConfigError(f"--set {item}: a trained model's config takes data.* overrides "
                              f"only (the rest describes its weights)")
    return Config.from_dict(apply_overrides(cfg.to_dict(), overrides)) if overrides else cfg


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        # TOML basic string: escape backslash and quote; control characters as \uXXXX.
        return '"' + "".join("\\\\" if c == "\\" else '\\"' if c == '"'
                             else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c
                             for c in v) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _dump_toml(d: dict[str, Any]) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines.extend(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items())
    return "\n".join(lines) + "\n"

"""Typed, validated configuration.

The packaged YAML (configs/tactical_marl_v1.yaml) is the single source of defaults; a user's
file is merged over it, so it may hold only the keys it changes. Loading checks every key
against the dataclasses below: an unknown key or a wrong type raises ConfigError naming it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from configs import DEFAULT_CONFIG_PATH
from tactical.errors import UserError

AGENT_NAMES = ("fvg", "momentum", "entry")
AUDIT_POLICIES = ("fail-open", "fail-closed")
PROMOTION_GATES = ("off", "better", "significant")  # tactical_engine.promotion
PUBLISH_POLICIES = ("auto", "every", "improved")  # training.publish; see training/selection.py


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used; the message names the offending key."""


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    window: int
    fvg_max_age: int
    level_scale: float
    level_clip: float
    momentum_period: int
    momentum_scale: float
    momentum_clip: float
    volume_window: int
    volume_ratio_cap: float

    @property
    def warmup_bars(self) -> int:
        """Bars of history before a window's first bar that its features depend on."""
        return max(self.fvg_max_age + 2, self.volume_window, self.momentum_period)

    @property
    def min_bars(self) -> int:
        """Bars needed to compute one exact window from raw bars."""
        return self.window + self.warmup_bars

    def check(self, at: str) -> None:
        _positive(at, self, "window", "fvg_max_age", "level_scale", "level_clip", "momentum_period",
                  "momentum_scale", "momentum_clip", "volume_window", "volume_ratio_cap")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    hidden_dim: int
    conv_channels: list[int]
    kernel_size: int
    pooled_steps: int
    critic_hidden_dims: list[int]
    critic_heads: int
    dropout: float
    temperature_init: float
    init_seed: int
    focus: dict[str, list[float]]

    def check(self, at: str) -> None:
        _positive(at, self, "hidden_dim", "kernel_size", "pooled_steps", "critic_heads", "temperature_init")
        _non_negative(at, self, "init_seed")
        if len(self.conv_channels) != 2:
            raise ConfigError(f"{at}.conv_channels: expected two channel counts, got {self.conv_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{at}.dropout: must be in [0, 1), got {self.dropout}")
        _agent_keys(f"{at}.focus", self.focus)
        for name, weights in self.focus.items():
            if len(weights) != 7 or min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-6:
                raise ConfigError(f"{at}.focus.{name}: expected 7 non-negative weights summing to 1, got {weights}")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    learning_rate: float
    gamma: float
    gae_lambda: float
    clip_epsilon: float
    clip_value_loss: bool
    entropy_coef_start: float
    entropy_coef_end: float
    value_loss_coef: float
    max_grad_norm: float
    normalize_advantages: bool
    value_normalization: bool
    num_envs: int
    episode_length: int
    epochs: int
    minibatch_size: int
    prioritized_sampling: bool
    priority_alpha: float
    priority_beta: float
    target_kl: float
    updates: int
    seed: int
    reward_scale: float
    transaction_cost: float
    holdout_fraction: float
    publish: str
    early_stop: int
    torch_threads: int

    def check(self, at: str) -> None:
        _positive(at, self, "learning_rate", "clip_epsilon", "max_grad_norm", "num_envs", "episode_length",
                  "epochs", "minibatch_size", "updates", "reward_scale", "torch_threads")
        for key in ("gamma", "gae_lambda"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise ConfigError(f"{at}.{key}: must be in (0, 1], got {getattr(self, key)}")
        for key in ("priority_alpha", "priority_beta"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{at}.{key}: must be in [0, 1], got {getattr(self, key)}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ConfigError(f"{at}.holdout_fraction: must be in [0, 1), got {self.holdout_fraction}")
        if self.publish not in PUBLISH_POLICIES:
            raise ConfigError(f"{at}.publish: one of {', '.join(PUBLISH_POLICIES)}, got {self.publish!r}")
        _non_negative(at, self, "entropy_coef_start", "entropy_coef_end", "value_loss_coef", "target_kl",
                      "transaction_cost", "seed", "early_stop")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    bars: int
    seed: int
    sigma: float
    trend_drift: float
    mean_reversion: float
    burst_vol: float
    mean_duration: float

    def check(self, at: str) -> None:
        _positive(at, self, "bars", "sigma", "burst_vol", "mean_duration")
        _non_negative(at, self, "seed")


@dataclasses.dataclass(frozen=True)
class AggregationConfig:
    weights: dict[str, float]
    min_confidence: float
    min_agents: int

    def check(self, at: str) -> None:
        _agent_keys(f"{at}.weights", self.weights)
        if min(self.weights.values()) < 0 or sum(self.weights.values()) <= 0:
            raise ConfigError(f"{at}.weights: must be non-negative with a positive sum, got {self.weights}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"{at}.min_confidence: must be in [0, 1], got {self.min_confidence}")
        if not 1 <= self.min_agents <= len(AGENT_NAMES):
            raise ConfigError(f"{at}.min_agents: must be between 1 and {len(AGENT_NAMES)}, got {self.min_agents}")


@dataclasses.dataclass(frozen=True)
class AgentEndpoint:
    port: int
    core: int
    metrics_port: int

    def check(self, at: str) -> None:
        _port(f"{at}.port", self.port, allow_zero=True)
        _port(f"{at}.metrics_port", self.metrics_port, allow_zero=True)
        if self.core < -1:
            raise ConfigError(f"{at}.core: a CPU index, or -1 for round-robin, got {self.core}")


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    host: str
    coordinator_port: int
    agents: dict[str, AgentEndpoint]
    deadline_ms: float
    max_batch: int
    max_in_flight: int
    batch_linger_ms: float
    max_bars: int
    max_instruments: int
    max_batch_items: int
    max_bar_gap_ms: int
    max_message_bytes: int
    max_concurrent_calls: int
    versions_kept: int
    admin_token: str
    tls_cert: str
    tls_key: str
    tls_ca: str
    audit_flush_ms: float
    audit_policy: str
    audit_backlog_bytes: int
    audit_spill_bytes: int
    audit_window_days: float
    metrics_port: int
    health_window: int
    coordinators: list[str]
    promotion_gate: str
    promotion_bars: int
    guard_max_drawdown: float
    guard_max_disagreement: float
    guard_max_invalid_votes: float
    guard_min_decisions: int
    reuse_port: bool

    @property
    def local_coordinator(self) -> str:
        """Where a client on this machine reaches the coordinator by default."""
        if self.coordinator_port == 0:
            raise ConfigError("serving.coordinator_port is 0: the coordinator picked its port when it started; "
                              "give --target HOST:PORT as `tactical up` printed it")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{host}:{self.coordinator_port}"

    def check(self, at: str) -> None:
        _port(f"{at}.coordinator_port", self.coordinator_port, allow_zero=True)
        _port(f"{at}.metrics_port", self.metrics_port, allow_zero=True)
        _agent_keys(f"{at}.agents", self.agents)
        _non_negative(at, self, "max_bar_gap_ms", "audit_window_days", "guard_min_decisions")
        for key in ("guard_max_drawdown", "guard_max_disagreement", "guard_max_invalid_votes"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{at}.{key}: a share between 0 and 1 (0: off), got {getattr(self, key)}")
        _positive(at, self, "deadline_ms", "max_batch", "max_in_flight", "max_bars", "max_instruments",
                  "max_batch_items", "max_message_bytes",
                  "max_concurrent_calls", "versions_kept", "audit_flush_ms", "audit_backlog_bytes",
                  "audit_spill_bytes", "health_window", "promotion_bars")
        if self.promotion_gate not in PROMOTION_GATES:
            raise ConfigError(f"{at}.promotion_gate: one of {', '.join(PROMOTION_GATES)}, got {self.promotion_gate!r}")
        if self.audit_policy not in AUDIT_POLICIES:
            raise ConfigError(f"{at}.audit_policy: one of {', '.join(AUDIT_POLICIES)}, got {self.audit_policy!r}")
        if self.batch_linger_ms < 0:
            raise ConfigError(f"{at}.batch_linger_ms: must be >= 0, got {self.batch_linger_ms}")
        for i, address in enumerate(self.coordinators):
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(f"{at}.coordinators[{i}]: expected HOST:PORT, got {address!r}")
        tls = [bool(self.tls_cert), bool(self.tls_key), bool(self.tls_ca)]
        if any(tls) and not all(tls):
            raise ConfigError(f"{at}.tls_cert/tls_key/tls_ca: set all three for TLS, or none")


@dataclasses.dataclass(frozen=True)
class PathsConfig:
    model_store: str
    agent_store: str
    coordinator_state: str
    audit_log: str
    audit_spill: str
    admin_token_file: str
    study_storage: str
    metrics: str
    logs: str


@dataclasses.dataclass(frozen=True)
class Config:
    features: FeatureConfig
    model: ModelConfig
    training: TrainingConfig
    synthetic: SyntheticConfig
    aggregation: AggregationConfig
    serving: ServingConfig
    paths: PathsConfig

    def to_dict(self) -> dict[str, Any]:
        """Plain dict form, as YAML would hold it."""
        return dataclasses.asdict(self)

    def shareable_dict(self) -> dict[str, Any]:
        """to_dict without secrets (the admin token), for files that travel: checkpoints, tuned configs."""
        data = self.to_dict()
        data["serving"]["admin_token"] = ""
        return data

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some keys changed, validated: `cfg.replace(training={"updates": 3})`."""
        return config_from_dict(_deep_merge(self.to_dict(), sections))


def _positive(at: str, section: Any, *keys: str) -> None:
    for key in keys:
        if getattr(section, key) <= 0:
            raise ConfigError(f"{at}.{key}: must be > 0, got {getattr(section, key)}")


def _non_negative(at: str, section: Any, *keys: str) -> None:
    """Refuse values below 0; seeds too, which numpy's generators refuse with a traceback at first use."""
    for key in keys:
        if getattr(section, key) < 0:
            raise ConfigError(f"{at}.{key}: must be >= 0, got {getattr(section, key)}")


def _port(at: str, port: int, *, allow_zero: bool) -> None:
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ConfigError(f"{at}: not a TCP port: {port}")


def _agent_keys(at: str, mapping: Mapping[str, Any]) -> None:
    if set(mapping) != set(AGENT_NAMES):
        raise ConfigError(f"{at}: expected exactly the agents {list(AGENT_NAMES)}, got {sorted(mapping)}")


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _convert(value: Any, hint: Any, at: str) -> Any:
    """Check `value` against a type hint and convert it (ints are accepted where floats are)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{at}: expected a mapping, got {type(value).__name__}")
        return _build(hint, value, at)
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{at}: expected a mapping, got {type(value).__name__}")
        return {_convert(k, key_type, f"{at}"): _convert(v, value_type, f"{at}.{k}") for k, v in value.items()}
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{at}: expected a list, got {type(value).__name__} {value!r}")
        return [_convert(v, item_type, f"{at}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _convert(value, option, at)
            except ConfigError:
                continue
        raise ConfigError(f"{at}: {value!r} matches none of {hint}")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{at}: expected a number, got {type(value).__name__} {value!r}")
        # NaN passes every `< 0` / `<= 0` check and .inf makes a deadline wait forever: refuse both here, once.
        try:
            number = float(value)
        except OverflowError:  # an integer past float's range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{at}: must be a finite number, got {value}")
        return number
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{at}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{at}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{at}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} at {at}")


def _build(cls: type, data: Mapping[str, Any], at: str) -> Any:
    hints = typing.get_type_hints(cls)
    prefix = f"{at}." if at else ""
    unknown = set(data) - set(hints)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{sorted(unknown)[0]}' (known: {', '.join(hints)})")
    missing = [k for k in hints if k not in data]
    if missing:
        raise ConfigError(f"missing config key '{prefix}{missing[0]}'")
    section = cls(**{k: _convert(data[k], hints[k], f"{prefix}{k}") for k in hints})
    if hasattr(section, "check"):
        section.check(at)
    return section


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Validate a complete configuration mapping (for example a parsed YAML file)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    return _build(Config, data, "")


@functools.cache
def _default_dict() -> dict[str, Any]:
    with open(DEFAULT_CONFIG_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def default_config() -> Config:
    """The packaged defaults."""
    return config_from_dict(_default_dict())


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Load `path` merged over the packaged defaults, then `overrides`; validate everything.

    `overrides` is a nested mapping, e.g. {"training": {"updates": 3}}, as CLI flags produce.
    """
    data = copy.deepcopy(_default_dict())
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                user = yaml.safe_load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from exc
        if user is not None:
            if not isinstance(user, Mapping):
                raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
            data = _deep_merge(data, user)
    if overrides:
        data = _deep_merge(data, overrides)
    return config_from_dict(data)


def as_config(config: Config | Mapping[str, Any] | str | Path | None) -> Config:
    """Accept a Config, a parsed YAML mapping (merged over the defaults), a path, or None (defaults)."""
    if isinstance(config, Config):
        return config
    if config is None or isinstance(config, (str, Path)):
        return load_config(config)
    return config_from_dict(_deep_merge(_default_dict(), config))

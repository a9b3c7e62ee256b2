"""Config loading: defaults, the shipped file, and errors that name file and key."""

from __future__ import annotations

import json
import math
from pathlib import Path

import attrs
import pytest

from engine import Config, ConfigError, config_from_dict, load_config
from engine._config import env_overrides, parse_value, set_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_loads_and_resolves_the_sample():
    config = load_config(ROOT / "config.toml")
    assert config.engine.mode == "replay"
    assert config.resolve(config.data.paths[0]).exists()


def test_empty_document_gives_defaults():
    config = config_from_dict({}, source="x.toml")
    assert config.strategy == Config().strategy


@pytest.mark.parametrize(
    ("doc", "key", "expected"),
    [
        ({"bogus": {}}, "bogus", "unknown section"),
        ({"risk": {"max_notional": 1}}, "risk.max_notional", "unknown key"),
        ({"risk": {"max_notional_total": -5}}, "risk.max_notional_total", "must be > 0"),
        ({"strategy": {"fast": "12"}}, "strategy.fast", "expected an integer"),
        ({"strategy": {"fast": 40}}, "strategy.fast", "must be smaller than slow"),
        ({"engine": {"mode": "backtest"}}, "engine.mode", "expected one of 'replay'"),
        ({"data": {"paths": "x.gz"}}, "data.paths", "expected a list of a string"),
        ({"data": {"paths": [3]}}, "data.paths[0]", "expected a string"),
        ({"venue": {"latency_ms": True}}, "venue.latency_ms", "expected a number"),
        ({"logging": 3}, "logging", "expected a [table]"),
    ],
)
def test_bad_config_names_file_and_dotted_key(doc, key, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc, source="cfg.toml")
    assert info.value.source == "cfg.toml"
    assert info.value.key == key
    assert expected in str(info.value)
    assert str(info.value).startswith(f"cfg.toml: {key}: ")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine\nmode=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_int_accepted_for_float():
    config = config_from_dict({"venue": {"latency_ms": 3}}, source="x")
    assert config.venue.latency_ms == 3.0
    assert isinstance(config.venue.latency_ms, float)


def _float_keys(cls: type, prefix: str) -> list[str]:
    """Every float key of ``cls`` (recursively), dotted, found from the classes themselves."""
    keys = []
    for field in attrs.fields(cls):
        key = f"{prefix}.{field.name}"
        if field.type is float:
            keys.append(key)
        elif attrs.has(field.type):
            keys.extend(_float_keys(field.type, key))
    return keys


FLOAT_KEYS = [
    k for f in attrs.fields(Config) if attrs.has(f.type) for k in _float_keys(f.type, f.name)
]


def _nested(key: str, value: object) -> dict:
    doc: dict = {}
    node = doc
    *tables, last = key.split(".")
    for part in tables:
        node = node.setdefault(part, {})
    node[last] = value
    return doc


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_no_float_key_takes_a_non_finite_number(value):
    assert {"risk.capital", "risk.max_notional_per_symbol", "venue.latency_ms"} <= set(FLOAT_KEYS)
    for key in FLOAT_KEYS:
        with pytest.raises(ConfigError) as info:
            config_from_dict(_nested(key, value), source="cfg.toml")
        assert info.value.key == key
        assert "expected a finite number" in info.value.problem


def test_non_finite_numbers_in_a_list_of_floats_are_refused():
    with pytest.raises(ConfigError, match=r"model.weights\[1\]: expected a finite number"):
        config_from_dict({"model": {"weights": [1.0, math.inf, 1.0]}}, source="cfg.toml")


@pytest.mark.parametrize(
    ("doc", "key", "expected"),
    [
        ({"channels": {"market": 0}}, "channels.market", "must be >= 1, got 0"),
        ({"model": {"weights": [1.0, -0.5, 1.0]}}, "model.weights", "must be >= 0"),
        ({"model": {"weights": [0, 0, 0]}}, "model.weights", "at least one weight must be > 0"),
    ],
)
def test_values_that_cannot_work_are_refused(doc, key, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc, source="cfg.toml")
    assert info.value.key == key
    assert expected in info.value.problem


def test_override_values_are_toml_or_plain_strings():
    assert parse_value("5000") == 5000
    assert parse_value("1e3") == 1000.0
    assert parse_value("true") is True
    assert parse_value('["BTCUSDT", "ETHUSDT"]') == ["BTCUSDT", "ETHUSDT"]
    assert parse_value('"quoted"') == "quoted"
    assert parse_value("paper") == "paper"
    assert parse_value("-") == "-"
    assert parse_value("1\nb = 2") == "1\nb = 2"  # one value, never extra keys


def test_file_then_environment_then_set(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[risk]\ncapital = 1000.0\n[risk.triggers]\nmax_drawdown = 50.0\n")
    env = {"TRIREME__RISK__CAPITAL": "2000", "TRIREME__ENGINE__MODE": "paper", "OTHER": "x"}
    config = load_config(cfg, overrides=env_overrides(env))
    assert (config.risk.capital, config.engine.mode) == (2000.0, "paper")
    assert config.risk.triggers.max_drawdown == 50.0  # the rest of the table stays
    config = load_config(
        cfg,
        overrides=[
            *env_overrides(env),
            *set_overrides(["risk.capital=3000", "risk.triggers.max_drawdown=70"]),
        ],
    )
    assert (config.risk.capital, config.risk.triggers.max_drawdown) == (3000.0, 70.0)
    assert config.where("risk.capital") == "--set"
    assert config.where("engine.mode") == "environment variable TRIREME__ENGINE__MODE"
    assert config.where("strategy.fast") == str(cfg)


def _leaf_keys(cls: type, prefix: str) -> list[tuple[str, object]]:
    out = []
    for field in attrs.fields(cls):
        key = f"{prefix}.{field.name}"
        if attrs.has(field.type):
            out.extend(_leaf_keys(field.type, key))
        elif field.default is not attrs.NOTHING:
            default = field.default
            out.append((key, default.factory() if isinstance(default, attrs.Factory) else default))
    return out


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def test_every_key_can_be_set_from_the_environment():
    # The shipped config differs from the code defaults in many keys: setting every key
    # to its default through its variable must give exactly the defaults back.
    leaves = [
        (key, value)
        for f in attrs.fields(Config)
        if attrs.has(f.type)
        for key, value in _leaf_keys(f.type, f.name)
    ]
    assert len(leaves) > 100
    env = {"TRIREME__" + key.upper().replace(".", "__"): _toml(value) for key, value in leaves}
    shipped = load_config(ROOT / "config.toml")
    assert shipped != Config()
    config = load_config(ROOT / "config.toml", overrides=env_overrides(env))
    assert config == Config()
    assert {config.where(key) for key, _ in leaves} == {f"environment variable {n}" for n in env}


@pytest.mark.parametrize(
    ("make", "source", "key", "expected"),
    [
        (lambda: set_overrides(["risk.capital=-1"]), "--set", "risk.capital", "must be > 0"),
        (lambda: set_overrides(["risk.capitl=1"]), "--set", "risk.capitl", "unknown key"),
        (lambda: set_overrides(["risk.capital"]), "--set", "risk.capital", "expected dotted"),
        (lambda: set_overrides(["risk..x=1"]), "--set", "risk..x", "expected a dotted key"),
        (
            lambda: set_overrides(["risk.capital.x=1"]),
            "--set",
            "risk.capital.x",
            "risk.capital is not a table",
        ),
        (
            lambda: set_overrides(["risk={capital = nan}"]),
            "--set",
            "risk.capital",
            "expected a finite number",
        ),
        (
            lambda: env_overrides({"TRIREME__STRATEGY__FAST": "x"}),
            "environment variable TRIREME__STRATEGY__FAST",
            "strategy.fast",
            "expected an integer, got 'x'",
        ),
    ],
)
def test_override_errors_name_the_key_and_where_it_came_from(make, source, key, expected):
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "config.toml", overrides=make())
    assert (info.value.source, info.value.key) == (source, key)
    assert expected in info.value.problem

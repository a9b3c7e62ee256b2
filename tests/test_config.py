"""Config loading: defaults, the shipped file, and errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Config, ConfigError, config_from_dict, load_config

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

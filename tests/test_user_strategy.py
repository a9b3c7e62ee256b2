"""Users' own strategies: a file outside the engine, selected and parameterised in config."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine import ConfigError
from engine.strategy import resolve_strategy
from engine.testing import replay_config, run_strategy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/strategies/breakout.py"


def breakout():
    from engine.strategy import load_strategy

    return load_strategy(EXAMPLE, "Breakout", "<test>")


def test_the_example_strategy_trades_and_exits_by_its_own_rules(sample):
    params = {"lookback": 100, "stop_bps": 2.0, "take_bps": 3.0, "max_hold_ms": 20_000}
    run = run_strategy(breakout(), [sample], params=params, venue={"latency_ms": 5.0})
    assert run.report.fills >= 4 and len(run.orders) == run.report.fills
    exits = run.exits()
    assert sum(exits.values()) >= 2
    assert set(exits) <= {"stop_loss", "take_profit", "time_limit"}
    # The same run again: deterministic.
    again = run_strategy(breakout(), [sample], params=params, venue={"latency_ms": 5.0})
    assert again.report.journal_sha256 == run.report.journal_sha256
    # Its parameters matter: a longer channel trades differently.
    other = run_strategy(breakout(), [sample], params={**params, "lookback": 400})
    assert other.report.journal_sha256 != run.report.journal_sha256


def config_with(tmp_path: Path, strategy: dict) -> object:
    return replay_config(tmp_path, [ROOT / "data/sample"], strategy=strategy)


@pytest.mark.parametrize(
    ("strategy", "key", "problem"),
    [
        ({"path": str(EXAMPLE), "name": "Nope"}, "strategy.name", "no class 'Nope'"),
        ({"path": "missing.py", "name": "X"}, "strategy.path", "no such file"),
        ({"name": "Breakout"}, "strategy.path", "required with name"),
        (
            {"path": str(EXAMPLE), "name": "Breakout", "params": {"lookbak": 5}},
            "strategy.params.lookbak",
            "unknown key",
        ),
        (
            {"path": str(EXAMPLE), "name": "Breakout", "params": {"lookback": "long"}},
            "strategy.params.lookback",
            "expected an integer",
        ),
        (
            {"path": str(EXAMPLE), "name": "Breakout", "params": {"lookback": 1}},
            "strategy.params.lookback",
            "must be >= 2",
        ),
        ({"params": {"fast": 3}}, "strategy.params.fast", "takes no [strategy.params]"),
    ],
)
def test_a_wrong_strategy_setting_names_its_key(tmp_path, strategy, key, problem):
    with pytest.raises(ConfigError) as err:
        resolve_strategy(config_with(tmp_path, strategy))
    assert err.value.key == key and problem in str(err.value)


def test_a_file_that_fails_to_import_or_misses_part_of_the_interface(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import engine\n\nraise RuntimeError('boom at import')\n")
    with pytest.raises(ConfigError, match=r"broken.py:3: cannot import: RuntimeError"):
        resolve_strategy(config_with(tmp_path, {"path": str(broken), "name": "X"}))
    half = tmp_path / "half.py"
    half.write_text(
        textwrap.dedent(
            """
            from engine.strategy import Strategy

            class Half(Strategy):
                def __init__(self, config, sizing, params=None):
                    pass
            """
        )
    )
    with pytest.raises(ConfigError, match=r"Half does not implement \['last_ask', 'last_bid'"):
        resolve_strategy(config_with(tmp_path, {"path": str(half), "name": "Half"}))


def test_the_cli_refuses_a_bad_strategy_with_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[data]\npaths = ["{ROOT / "data/sample"}"]\n[journal]\ndir = "{tmp_path}/runs"\n'
        f'[strategy]\npath = "{EXAMPLE}"\nname = "Breakout"\n[strategy.params]\nlookback = 0\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--config", str(cfg)], capture_output=True, text=True
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "strategy.params.lookback" in line and "Traceback" not in done.stderr


def test_the_cli_replays_a_user_strategy_with_set_overrides(tmp_path):
    done = subprocess.run(
        [
            sys.executable, "-m", "engine", "--config", str(ROOT / "config.toml"),
            "--set", f"strategy.path={EXAMPLE}", "--set", "strategy.name=Breakout",
            "--set", "strategy.params.lookback=100", "--set", "model.enabled=false",
            "--set", f"journal.dir={tmp_path}/runs",
        ],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "fills" in done.stdout

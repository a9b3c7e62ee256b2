"""Indicators reached by a strategy by name from config: ``[[strategy.indicators]]``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import engine.indicators as ind
from engine import ConfigError
from engine.messages import EventKind
from engine.models._features import ticks_of
from engine.strategy import Mode, Signal, load_strategy, resolve_strategy
from engine.testing import replay_config, run_strategy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/strategies/indicator_cross.py"
SECOND = 1_000_000_000

# KAMA over every trade, EMA over 1 s bars of trades, crossed.
INDICATORS = [
    {"name": "kama", "timeperiod": 10},
    {"name": "ema", "timeperiod": 30, "bar_ns": SECOND, "label": "slow"},
]
PARAMS = {"fast": "kama_10", "slow": "slow", "stop_bps": 2.0, "take_bps": 3.0}


def example_config(tmp_path: Path, data: Path, indicators=INDICATORS, params=PARAMS, **strategy):
    chosen = {"path": str(EXAMPLE), "name": "IndicatorCross", "params": params}
    return replay_config(
        tmp_path, [data], strategy={**chosen, "indicators": indicators, **strategy}
    )


def bar_closes(ts: np.ndarray, price: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Closes of the time bars completed by each trade, and per trade how many are done.

    A bar completes when the first trade of a later bar arrives (the set's rule).
    """
    bucket = ts // width
    new = np.r_[False, bucket[1:] != bucket[:-1]]
    closes = price[np.flatnonzero(new) - 1]
    return closes, np.cumsum(new)


def test_the_example_reads_configured_values_equal_to_the_batch_functions(tmp_path, sample):
    config = example_config(tmp_path, sample)
    strategy = resolve_strategy(config).new(config.strategy, config.sizing)
    ticks = ticks_of([sample])
    n = len(ticks)
    signals: list[tuple[int, int, float, float]] = []
    i = 0
    while i < n:
        at, signal = strategy.scan(ticks, i, n, Mode.FLAT)
        if signal:
            signals.append((at, signal, strategy.indicator("kama_10"), strategy.indicator("slow")))
        i = at + 1
    assert len(signals) >= 6
    assert {s for _, s, _, _ in signals} == {Signal.ENTER_LONG, Signal.ENTER_SHORT}

    trade = ticks.kind == EventKind.TRADE
    price = ticks.price[trade]
    trades_before = np.cumsum(trade)  # row -> trades up to and including it
    kama = ind.kama(price, timeperiod=10)
    closes, done = bar_closes(ticks.ts[trade], price, SECOND)
    ema = ind.ema(closes, timeperiod=30)
    for at, signal, fast, slow in signals:
        assert ticks.kind[at] == EventKind.TRADE
        j = trades_before[at] - 1  # this trade's index among trades
        assert fast == pytest.approx(kama[j], rel=1e-12, abs=0.0)
        assert slow == pytest.approx(ema[done[j] - 1], rel=1e-12, abs=0.0)
        # A signal is a cross: the fast value went through the slow one at this trade.
        assert (fast > slow) == (signal == Signal.ENTER_LONG)


def test_the_example_trades_through_the_engine(sample):
    cross = load_strategy(EXAMPLE, "IndicatorCross", "<test>")
    run = run_strategy(
        cross, [sample], params=PARAMS, strategy={"indicators": INDICATORS}, venue={"latency_ms": 5}
    )
    assert run.report.fills >= 4 and len(run.orders) == run.report.fills
    assert set(run.exits()) <= {"stop_loss", "take_profit", "time_limit"}


@pytest.mark.parametrize(
    ("indicators", "params", "key", "problem"),
    [
        ([{"name": "kamma"}], PARAMS, "strategy.indicators[0].name", "unknown indicator 'kamma'"),
        (
            [INDICATORS[0], {"name": "ema", "timeperod": 3}],
            PARAMS,
            "strategy.indicators[1].timeperod",
            "unknown parameter of ema",
        ),
        (
            [{"name": "kama", "timeperiod": 2.5}],
            PARAMS,
            "strategy.indicators[0].timeperiod",
            "must be int",
        ),
        (
            [{"name": "kama", "timeperiod": 0}],
            PARAMS,
            "strategy.indicators[0].timeperiod",
            "must be an integer in [1",
        ),
        ([{"name": "vwap", "bar_ns": SECOND}], PARAMS, "strategy.indicators[0].bar_ns", "not bars"),
        (
            [INDICATORS[0], {"name": "kama", "timeperiod": 10}],
            PARAMS,
            "strategy.indicators[1].label",
            "'kama_10' is also entry 0's",
        ),
        ([{"name": "garch"}], PARAMS, "strategy.indicators[0].omega", "required parameter"),
        ([{"name": "ema", "timeperiod": [3]}], PARAMS, "strategy.indicators[0].timeperiod", ""),
        ({"name": "ema"}, PARAMS, "strategy.indicators", "expected a list of a table"),
        (
            INDICATORS,
            {**PARAMS, "slow": "ema_30"},
            "strategy.params.slow",
            "'ema_30' is not a value of [[strategy.indicators]]",
        ),
    ],
)
def test_a_bad_indicator_entry_names_its_dotted_key(tmp_path, indicators, params, key, problem):
    with pytest.raises(ConfigError) as err:
        resolve_strategy(example_config(tmp_path, ROOT / "data/sample", indicators, params))
    assert err.value.key == key and problem in str(err.value)


def test_indicators_for_a_strategy_that_reads_none_are_refused(tmp_path):
    config = replay_config(tmp_path, [ROOT / "data/sample"], strategy={"indicators": INDICATORS})
    with pytest.raises(ConfigError, match="EmaCross reads no configured indicators") as err:
        resolve_strategy(config)
    assert err.value.key == "strategy.indicators"


def test_the_cli_refuses_a_bad_indicator_with_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[data]\npaths = ["{ROOT / "data/sample"}"]\n[journal]\ndir = "{tmp_path}/runs"\n'
        f'[strategy]\npath = "{EXAMPLE}"\nname = "IndicatorCross"\n'
        '[[strategy.indicators]]\nname = "kama"\ntimeperiod = 10\n'
        '[[strategy.indicators]]\nname = "ema"\ntimeperiod = "long"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--config", str(cfg)], capture_output=True, text=True
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "strategy.indicators[1].timeperiod" in line and "Traceback" not in done.stderr


def test_the_kernel_is_compiled_onto_the_set_and_reads_by_name(tmp_path):
    config = example_config(tmp_path, ROOT / "data/sample")
    strategy = resolve_strategy(config).new(config.strategy, config.sizing)
    iset = strategy.indicator_set
    assert iset is not None and iset.names == ("kama_10", "slow")
    module = sys.modules[strategy._scan.py_func.__module__]
    assert module.update_trade is iset.kernels.update_trade  # not the generic one
    assert np.isnan(strategy.indicator("slow"))  # nothing fed yet
    with pytest.raises(KeyError, match="configured: \\('kama_10', 'slow'\\)"):
        strategy.indicator("kama_30")


def test_readme_declares_indicators_the_way_the_loader_reads_them(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("**Indicators by name.**") :]
    block = section[section.index("```toml\n") + 8 : section.index("```\n", 8)]
    declared = tomllib.loads(block)["strategy"]["indicators"]
    config = replay_config(
        tmp_path, [ROOT / "data/sample"], strategy={"indicators": declared}
    )  # checked at load
    specs = ind.specs_from_config(config.strategy.indicators)
    assert [n for s in specs for n in ind.value_names(s)] == ["kama_10", "slow"]
    # The list of names and parameters it points to is the registry's.
    assert ind.registry_table() in text

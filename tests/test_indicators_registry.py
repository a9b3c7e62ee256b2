"""The indicator registry: every indicator reachable by name, built from config tables."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numba import njit

import engine.indicators as ind

README = Path(__file__).resolve().parents[1] / "README.md"

# Values for the parameters that have no default.
REQUIRED = {
    "bin_size": 1.0,
    "bucket_volume": 5.0,
    "omega": 1e-8,
    "alpha": 0.05,
    "beta": 0.9,
}


def public_indicators() -> set[str]:
    """Names ``x`` with ``x``, ``x_state`` and ``x_update`` in the public surface."""
    names = set(ind.__all__)
    return {n for n in names if f"{n}_state" in names and f"{n}_update" in names}


def test_every_public_indicator_is_registered():
    assert public_indicators() == set(ind.REGISTRY)
    assert len(ind.REGISTRY) >= 50
    assert tuple(ind.REGISTRY) == ind.INDICATOR_NAMES


@pytest.mark.parametrize("name", list(ind.REGISTRY))
def test_entry_points_at_the_public_kernels(name):
    info = ind.REGISTRY[name]
    assert info.name == name
    assert info.batch is getattr(ind, name)
    assert info.update is getattr(ind, f"{name}_update")
    assert info.source in ("bar", "trade", "quote", "depth", "book")
    assert info.outputs and info.inputs
    # The state factory takes exactly the batch function's parameters, same defaults.
    sig = inspect.signature(info.make_state).parameters
    assert [p.name for p in info.params] == list(sig)
    for p in info.params:
        default = sig[p.name].default
        assert (default is inspect.Parameter.empty) == p.required
        if not p.required:
            assert default == p.default and type(p.default) is p.type
    if info.talib is not None:
        talib = pytest.importorskip("talib")
        assert callable(getattr(talib, info.talib))


def one_event(s: ind.IndicatorSet, source: str) -> np.ndarray:
    levels = np.arange(1.0, 6.0)
    if source in ("bar", "trade"):
        s.update_trade(1_000_000_000, 100.0, 1.5, 1)
        return s.update_trade(2_000_000_000, 100.5, 0.5, -1)
    if source == "quote":
        return s.update_quote(99.9, 100.1, 2.0, 3.0)
    if source == "depth":
        return s.update_depth(levels, levels[::-1].copy())
    return s.update_book(100.0 - 0.1 * levels, levels, 100.1 + 0.1 * levels, levels[::-1].copy())


@pytest.mark.parametrize("name", list(ind.REGISTRY))
def test_builds_from_a_config_table_and_runs(name):
    info = ind.REGISTRY[name]
    table: dict[str, Any] = {"name": name}
    table |= {p.name: REQUIRED[p.name] for p in info.params if p.required}
    spec = ind.spec_from_config(table, key="strategy.indicators[0]")
    assert spec.name == name
    s = ind.IndicatorSet([spec])
    assert len(s.names) == len(info.outputs)
    initial = s.state.copy()
    values = one_event(s, info.source)
    assert values.shape == (len(info.outputs),)
    # With every parameter spelled out (defaults), the same state.
    full = table | {p.name: p.default for p in info.params if not p.required}
    np.testing.assert_array_equal(ind.IndicatorSet([ind.spec_from_config(full)]).state, initial)


@pytest.mark.parametrize("name", list(ind.REGISTRY))
def test_unknown_parameter_is_rejected_with_its_name(name):
    table = {"name": name, "windw": 3}
    table |= {p.name: REQUIRED[p.name] for p in ind.REGISTRY[name].params if p.required}
    with pytest.raises(ind.IndicatorConfigError, match=f"unknown parameter of {name}") as err:
        ind.spec_from_config(table, key="strategy.indicators[4]")
    assert err.value.key == "strategy.indicators[4].windw"
    assert "strategy.indicators[4].windw" in str(err.value)
    with pytest.raises(ind.IndicatorConfigError, match="windw"):
        ind.spec(name, **{k: v for k, v in table.items() if k != "name"})


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ({"name": "supertrend"}, "x.name", "unknown indicator 'supertrend'"),
        ({"timeperiod": 3}, "x.name", "missing"),
        ({"name": "rsi", "timeperiod": 14.0}, "x.timeperiod", "must be int for rsi"),
        ({"name": "rsi", "timeperiod": True}, "x.timeperiod", "must be int"),
        ({"name": "bbands", "nbdevup": "2"}, "x.nbdevup", "must be float"),
        ({"name": "vpin"}, "x.bucket_volume", "required parameter of vpin"),
        ({"name": "rsi", "timeperiod": 1}, "x.timeperiod", "timeperiod must be an integer in \\[2"),
        ({"name": "garch", "omega": 1e-6, "alpha": 0.5, "beta": 0.6}, "x", "alpha \\+ beta"),
        ({"name": "market_profile", "bin_size": 0.0}, "x.bin_size", "bin_size and lot_size"),
        ({"name": "vwap", "bar_ns": 10}, "x.bar_ns", "consumes trades"),
        ({"name": "ema", "bar_ns": -1}, "x.bar_ns", "integer >= 0"),
        ({"name": "ema", "label": 3}, "x.label", "string"),
    ],
)
def test_bad_tables_name_the_key(table, key, message):
    with pytest.raises(ind.IndicatorConfigError, match=message) as err:
        ind.spec_from_config(table, key="x")
    assert err.value.key == key


def test_float_parameters_take_integers_and_labels_follow_the_table():
    spec = ind.spec_from_config({"name": "bbands", "timeperiod": 10, "nbdevup": 3, "bar_ns": 5})
    assert spec.params == {"timeperiod": 10, "nbdevup": 3.0}
    assert isinstance(spec.params["nbdevup"], float)
    assert ind.IndicatorSet([spec]).names[0] == "bbands_10_3_bar5.upperband"
    labelled = ind.spec_from_config({"name": "kama", "label": "trend"})
    assert ind.IndicatorSet([labelled]).names == ("trend",)


def test_parameters_and_outputs_of_come_from_the_registry():
    assert ind.parameters_of("t3") == {"timeperiod": 5, "vfactor": 0.7}
    assert "bin_size" not in ind.parameters_of("market_profile")  # required: no default
    assert tuple(ind.outputs_of("ichimoku_cloud")) == ("position", "thickness")


def test_readme_lists_the_registry():
    text = README.read_text()
    assert ind.registry_table() in text, "README's indicator table is stale: paste registry_table()"
    rows = re.findall(r"^\| `(\w+)` \|", text, re.M)
    assert set(ind.REGISTRY) <= set(rows)


@njit
def _feed_books(arrays, bp, bq, ap, aq):  # type: ignore[no-untyped-def]
    for i in range(bp.shape[0]):
        ind.update_book(*arrays, bp[i], bq[i], ap[i], aq[i])


def test_the_whole_registry_in_one_set_allocates_nothing_per_update():
    """Every indicator (defaults) in one fused set: updates never allocate."""
    from numba.core.runtime import _nrt_python, rtsys

    specs = []
    for name, info in ind.REGISTRY.items():
        table = {"name": name} | {p.name: REQUIRED[p.name] for p in info.params if p.required}
        specs.append(ind.spec_from_config(table))
    s = ind.IndicatorSet(specs)
    rng = np.random.default_rng(3)
    n = 5000
    kind = np.where(rng.random(n) < 0.5, ind.EVENT_TRADE, ind.EVENT_QUOTE).astype(np.int8)
    ts = np.cumsum(rng.integers(0, 50_000_000, n)).astype(np.int64)
    price = 100.0 + np.cumsum(rng.standard_normal(n)) * 0.01
    qty = rng.lognormal(-1.0, 1.0, n)
    side = np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8)
    events = (kind, ts, price, qty, side, price - 0.05, price + 0.05, qty, qty[::-1].copy())
    levels = np.arange(1.0, 21.0)
    mids = price[:, None]
    books = (mids - 0.01 * levels, rng.lognormal(0.0, 1.0, (n, 20)), mids + 0.01 * levels)
    books += (rng.lognormal(0.0, 1.0, (n, 20)),)
    s.update_batch(*(a[:100] for a in events))
    _feed_books(s.arrays, *(b[:10] for b in books))
    was_enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        counts = []
        for size in (10, n):
            before = rtsys.get_allocation_stats()
            s.update_batch(*(a[:size] for a in events))
            _feed_books(s.arrays, *(b[:size] for b in books))
            counts.append(rtsys.get_allocation_stats().alloc - before.alloc)
    finally:
        if not was_enabled:
            _nrt_python.memsys_disable_stats()
    # Only the two call boundaries allocate (array wrappers), never an update.
    assert counts[0] == counts[1] <= 32
    assert np.isfinite(s.values[s.index["ema"]])
    assert np.isfinite(s.values[s.index["spoofing.bid"]])

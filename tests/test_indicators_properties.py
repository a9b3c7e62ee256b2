"""Indicator kernels on generated series: TA-Lib parity, NaN policy, incremental == batch.

Series come from hypothesis (a seed plus structure: level, tick grid, flat stretches,
price gaps, single-bar spikes, zero volumes), so shrinking stays cheap and failures are
reproducible (``derandomize=True``). Tolerances are those of ``test_indicators.py``.
Also here: the fused set's contract (dropping NaN ticks, no allocation per update), the
public surface, and the stale-cache guard.
"""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine.indicators as ind
from engine.indicators._common import drop_stale_kernel_cache

talib = pytest.importorskip("talib")

RTOL = 1e-9
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def bars(draw: st.DrawFn, min_size: int = 30, max_size: int = 200) -> dict[str, np.ndarray]:
    n = draw(st.integers(min_size, max_size))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    level = draw(st.sampled_from([1e-3, 0.3, 100.0, 61_800.0]))
    tick = draw(st.sampled_from([0.0, 1e-5, 1e-3]))  # fraction of the level
    shape = draw(st.sampled_from(["walk", "flat", "gaps", "spikes", "mixed", "constant"]))
    steps = rng.standard_normal(n) * 0.002
    if shape in ("flat", "mixed"):
        for _ in range(rng.integers(1, 4)):
            a = int(rng.integers(0, n))
            steps[a : a + int(rng.integers(5, 40))] = 0.0
    if shape in ("gaps", "mixed"):
        steps[rng.integers(0, n, 3)] += rng.choice([-1, 1], 3) * rng.uniform(0.05, 0.2, 3)
    if shape == "constant":
        steps[:] = 0.0
    close = level * np.exp(np.cumsum(steps))
    if shape in ("spikes", "mixed"):
        at = rng.integers(0, n, 3)
        close[at] *= 1.0 + rng.choice([-1, 1], 3) * rng.uniform(0.05, 0.5, 3)
    up = np.abs(rng.standard_normal(n)) * 0.001 * level * (shape != "constant")
    down = np.abs(rng.standard_normal(n)) * 0.001 * level * (shape != "constant")
    high, low = close + up, close - down
    if tick:
        grid = tick * level
        close, high, low = (np.round(a / grid) * grid for a in (close, high, low))
        high, low = np.maximum(high, close), np.minimum(low, close)
    volume = rng.lognormal(0.0, 1.0, n) * (rng.random(n) > 0.1)
    open_ = np.r_[close[0], close[:-1]]  # each bar opens at the previous close
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def assert_close(ours: Any, ref: Any, floor: float = 0.0, rtol: float = RTOL) -> None:
    """Same NaN warm-up, and |ours - ref| <= rtol * max(|ref|, floor) elsewhere."""
    ours = np.atleast_2d(np.asarray(ours, dtype=np.float64))
    ref = np.atleast_2d(np.asarray(ref, dtype=np.float64))
    assert ours.shape == ref.shape
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        ok = ~np.isnan(b)
        diff = np.abs(a[ok] - b[ok])
        err = np.where(diff == 0.0, 0.0, diff / np.maximum(np.abs(b[ok]), max(floor, 1e-300)))
        assert err.max(initial=0.0) <= rtol, f"max relative error {err.max():.3g}"


# name, TA-Lib name, inputs, params, floor ("level", "percent", "diff", "volume")
CASES: list[tuple[str, str, str, dict[str, Any], str]] = [
    ("sma", "SMA", "c", {"timeperiod": 7}, "level"),
    ("ema", "EMA", "c", {"timeperiod": 7}, "level"),
    ("wma", "WMA", "c", {"timeperiod": 7}, "level"),
    ("rsi", "RSI", "c", {"timeperiod": 5}, "percent"),
    ("macd", "MACD", "c", {"fastperiod": 4, "slowperiod": 9, "signalperiod": 3}, "diff"),
    ("bbands", "BBANDS", "c", {"timeperiod": 6, "nbdevup": 2.0, "nbdevdn": 1.5}, "level"),
    ("bbands", "BBANDS", "c", {"timeperiod": 6, "matype": 1}, "level"),
    ("atr", "ATR", "hlc", {"timeperiod": 5}, "diff"),
    ("natr", "NATR", "hlc", {"timeperiod": 5}, "diff"),
    ("stoch", "STOCH", "hlc", {}, "percent"),
    ("stoch", "STOCH", "hlc", {"fastk_period": 4, "slowk_matype": 1, "slowd_matype": 2}, "percent"),
    ("stochrsi", "STOCHRSI", "c", {"timeperiod": 6, "fastk_period": 4}, "percent"),
    ("willr", "WILLR", "hlc", {"timeperiod": 5}, "percent"),
    ("cci", "CCI", "hlc", {"timeperiod": 6}, "percent"),
    ("roc", "ROC", "c", {"timeperiod": 3}, "diff"),
    ("mom", "MOM", "c", {"timeperiod": 3}, "diff"),
    ("trix", "TRIX", "c", {"timeperiod": 4}, "diff"),
    ("obv", "OBV", "cv", {}, "volume"),
    ("adx", "ADX", "hlc", {"timeperiod": 5}, "percent"),
    ("plus_di", "PLUS_DI", "hlc", {"timeperiod": 5}, "percent"),
    ("minus_di", "MINUS_DI", "hlc", {"timeperiod": 5}, "percent"),
    ("aroon", "AROON", "hl", {"timeperiod": 5}, "percent"),
    ("mfi", "MFI", "hlcv", {"timeperiod": 5}, "percent"),
    ("ad", "AD", "hlcv", {}, "volume"),
    ("dema", "DEMA", "c", {"timeperiod": 5}, "level"),
    ("tema", "TEMA", "c", {"timeperiod": 4}, "level"),
    ("t3", "T3", "c", {"timeperiod": 3}, "level"),
    ("kama", "KAMA", "c", {"timeperiod": 6}, "level"),
    ("ht_trendline", "HT_TRENDLINE", "c", {}, "level"),
    ("sar", "SAR", "hl", {}, "level"),
    ("sar", "SAR", "hl", {"acceleration": 0.1, "maximum": 0.3}, "level"),
    ("var", "VAR", "c", {"timeperiod": 4}, "variance"),
    ("stddev", "STDDEV", "c", {"timeperiod": 6, "nbdev": 1.5}, "diff"),
    ("linearreg", "LINEARREG", "c", {"timeperiod": 6}, "level"),
    ("linearreg_intercept", "LINEARREG_INTERCEPT", "c", {"timeperiod": 6}, "level"),
    ("tsf", "TSF", "c", {"timeperiod": 6}, "level"),
    ("linearreg_slope", "LINEARREG_SLOPE", "c", {"timeperiod": 6}, "slope"),
    ("linearreg_angle", "LINEARREG_ANGLE", "c", {"timeperiod": 6}, "angle"),
    ("apo", "APO", "c", {"fastperiod": 3, "slowperiod": 7}, "diff"),
    ("apo", "APO", "c", {"fastperiod": 3, "slowperiod": 7, "matype": 0}, "drift"),
    ("ppo", "PPO", "c", {"fastperiod": 4, "slowperiod": 6, "matype": 2}, "percent"),
    ("cmo", "CMO", "c", {"timeperiod": 5}, "percent"),
    ("ultosc", "ULTOSC", "hlc", {"timeperiod1": 2, "timeperiod2": 4, "timeperiod3": 8}, "percent"),
    ("aroonosc", "AROONOSC", "hl", {"timeperiod": 5}, "percent"),
    ("bop", "BOP", "ohlc", {}, "percent"),
    ("dx", "DX", "hlc", {"timeperiod": 5}, "percent"),
    ("adxr", "ADXR", "hlc", {"timeperiod": 4}, "percent"),
]
OWN: list[tuple[str, str, dict[str, Any]]] = [
    ("realized_vol", "c", {"timeperiod": 10}),
    (
        "ichimoku",
        "hlc",
        {"tenkan_period": 3, "kijun_period": 5, "senkou_period": 9, "displacement": 4},
    ),
    ("market_profile", "cv", {"bin_size": 1.0, "timeperiod": 20, "lot_size": 1e-3}),
    ("rolling_vwap", "cv", {"timeperiod": 10}),
    ("tick_momentum", "cv", {"timeperiod": 10}),
    ("vwma", "cv", {"timeperiod": 7}),
    ("vpt", "cv", {}),
    ("garch", "c", {"omega": 1e-7, "alpha": 0.1, "beta": 0.8}),
    ("volvol", "c", {"timeperiod": 5, "vol_period": 4}),
    (
        "ichimoku_cloud",
        "hlc",
        {"tenkan_period": 3, "kijun_period": 5, "senkou_period": 9, "displacement": 4},
    ),
]

INPUTS = {"c": ("close",), "hlc": ("high", "low", "close"), "hl": ("high", "low")}
INPUTS |= {"cv": ("close", "volume"), "hlcv": ("high", "low", "close", "volume")}
INPUTS |= {"ohlc": ("open", "high", "low", "close")}


def args_of(b: dict[str, np.ndarray], inputs: str) -> list[np.ndarray]:
    return [b[k] for k in INPUTS[inputs]]


def floor_of(kind: str, b: dict[str, np.ndarray]) -> float:
    """The floors of ``test_indicators.floor_of`` (see there), for generated series."""
    level = float(np.median(np.abs(b["close"])))
    return {
        "percent": 1.0,
        "diff": 1e-6 * level,
        "volume": 1e-6 * float(np.sum(b["volume"])),
        "variance": (1e-6 * level) ** 2,
        "drift": 1e-4 * level,
        "slope": 1e-4 * level,
        "angle": 1e-4 * level * 180.0 / np.pi,
    }.get(kind, 0.0)


def case_id(case: tuple) -> str:
    return f"{case[0]}-" + "-".join(f"{v}" for v in case[-2].values()) if case[-2] else case[0]


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
@SETTINGS
@given(b=bars())
def test_matches_talib_on_generated_series(case, b):
    name, ta, inputs, params, kind = case
    ours = getattr(ind, name)(*args_of(b, inputs), **params)
    assert_close(ours, getattr(talib, ta)(*args_of(b, inputs), **params), floor_of(kind, b))


@st.composite
def bars_with_nans(draw: st.DrawFn) -> tuple[dict[str, np.ndarray], np.ndarray]:
    b = draw(bars(min_size=40))
    n = len(b["close"])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bad = rng.random(n) < draw(st.sampled_from([0.02, 0.2]))
    bad[: draw(st.integers(0, 5))] = True  # leading NaNs, as after a feed gap at start
    holes = {k: v.copy() for k, v in b.items()}
    for k in holes:
        # Each NaN row has at least one NaN field; which ones varies.
        holes[k][bad & (rng.random(n) < 0.7)] = np.nan
    bad = np.zeros(n, dtype=bool)
    for v in holes.values():
        bad |= np.isnan(v)
    return holes, bad


ALL_BATCH = [(c[0], c[2], c[3]) for c in CASES] + OWN


@pytest.mark.parametrize("case", ALL_BATCH, ids=[f"{c[0]}-{i}" for i, c in enumerate(ALL_BATCH)])
@settings(SETTINGS, max_examples=10)
@given(data=bars_with_nans())
def test_nan_inputs_are_skipped(case, data):
    """NaN rows give NaN and leave the rest as if they had never been there."""
    name, inputs, params = case
    holes, bad = data
    fn = getattr(ind, name)
    ours = np.atleast_2d(np.array(fn(*args_of(holes, inputs), **params)))
    used = [k for k in INPUTS[inputs]]
    row_bad = np.zeros(len(bad), dtype=bool)
    for k in used:
        row_bad |= np.isnan(holes[k])
    clean = {k: v[~row_bad] for k, v in holes.items()}
    ref = np.atleast_2d(np.array(fn(*args_of(clean, inputs), **params)))
    assert np.all(np.isnan(ours[:, row_bad]))
    np.testing.assert_array_equal(ours[:, ~row_bad], ref)


@SETTINGS
@given(b=bars(min_size=60))
def test_updates_skip_nan_and_leave_state_alone(b):
    states = [ind.sma_state(5), ind.rsi_state(4), ind.atr_state(3), ind.bbands_state(4)]
    out = np.empty(3)
    c = b["close"]
    for i, x in enumerate(c):
        before = [s.copy() for s in states]
        assert math.isnan(ind.sma_update(states[0], math.nan))
        assert math.isnan(ind.rsi_update(states[1], math.nan))
        assert math.isnan(ind.atr_update(states[2], math.nan, x, x))
        ind.bbands_update(states[3], math.nan, out)
        assert np.isnan(out).all()
        for s, s0 in zip(states, before, strict=True):
            np.testing.assert_array_equal(s, s0)
        ind.sma_update(states[0], x)
        ind.rsi_update(states[1], x)
        ind.atr_update(states[2], b["high"][i], b["low"][i], x)
        ind.bbands_update(states[3], x, out)
    assert_close(ind.bbands(c, 4)[0][-1], out[0])


# --- incremental == batch on generated series -----------------------------------------

SET_CASES = [(c[0], c[2], c[3]) for c in CASES if c[0] not in ("bbands", "stoch")] + [
    ("bbands", "c", {"timeperiod": 6, "matype": 2}),
    ("stoch", "hlc", {"fastk_period": 4, "slowk_matype": 1, "slowd_matype": 2}),
    *OWN,
]


def trade_events(b: dict[str, np.ndarray], ts: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    n = len(b["close"])
    ts = np.arange(n, dtype=np.int64) * 1_000_000 if ts is None else ts
    nan = np.full(n, np.nan)
    side = np.where(np.arange(n) % 3 == 0, -1, 1).astype(np.int8)
    kind = np.full(n, ind.EVENT_TRADE, dtype=np.int8)
    return kind, ts, b["close"], b["volume"], side, nan, nan, nan, nan


@pytest.mark.parametrize("case", SET_CASES, ids=[c[0] for c in SET_CASES])
@settings(SETTINGS, max_examples=15)
@given(b=bars())
def test_fused_set_reproduces_batch_row_by_row(case, b):
    """Each trade is one bar (open = high = low = close): values after trade i == row i."""
    name, inputs, params = case
    s = ind.IndicatorSet([ind.spec(name, **params)])
    rows = s.record_batch(*trade_events(b))
    p = {k: b["close"] for k in ("open", "high", "low", "close")} | {"volume": b["volume"]}
    ref = np.atleast_2d(np.array(getattr(ind, name)(*args_of(p, inputs), **params)))
    np.testing.assert_array_equal(rows.T, ref)


@SETTINGS
@given(b=bars(), gap=st.integers(0, 3))
def test_trade_fed_indicators_reproduce_batch(b, gap):
    """Time stamps with repeats (gap 0) and jumps: the per-trade set equals the batch."""
    n = len(b["close"])
    rng = np.random.default_rng(n)
    ts = 1_700_000_000_000_000_000 + np.cumsum(rng.integers(0, 10**gap * 1000 + 1, n))
    side = np.where(np.arange(n) % 3 == 0, -1, 1)
    c, q = b["close"], b["volume"]
    specs = [
        ind.spec("vwap", session_ns=10**9),
        ind.spec("twap", timeperiod=7),
        ind.spec("velocity", timeperiod=4),
        ind.spec("trade_ofi", timeperiod=9),
        ind.spec("vpin", bucket_volume=2.0, timeperiod=5),
    ]
    s = ind.IndicatorSet(specs)
    rows = s.record_batch(*trade_events(b, ts))
    ref = np.vstack([
        ind.vwap(ts, c, q, session_ns=10**9),
        ind.twap(ts, c, 7),
        *ind.velocity(ts, c, 4),
        *ind.trade_ofi(q, side, 9),
        ind.vpin(q, side, 2.0, 5),
    ])  # fmt: skip
    np.testing.assert_array_equal(rows.T, ref)


# --- properties of the indicators TA-Lib lacks ----------------------------------------


@SETTINGS
@given(b=bars(min_size=60))
def test_bounded_outputs(b):
    c, q = b["close"], b["volume"]
    side = np.where(np.diff(c, prepend=c[0]) >= 0, 1.0, -1.0)
    for values, lo, hi in [
        (ind.tick_momentum(c, q, 7), -1.0, 1.0),
        (ind.trade_ofi(q, side, 7)[1], -1.0, 1.0),
        (ind.vpin(q, side, 1.5, 4), 0.0, 1.0),
        (ind.book_imbalance(q, q[::-1]), -1.0, 1.0),
        (ind.realized_vol(c, 5), 0.0, np.inf),
    ]:
        v = values[~np.isnan(values)]
        assert np.all((v >= lo) & (v <= hi))
    poc, vah, val = ind.market_profile(c, q, bin_size=float(np.ptp(c) / 30 or 1.0), timeperiod=15)
    ok = ~np.isnan(poc)
    assert np.all((val[ok] <= poc[ok]) & (poc[ok] <= vah[ok]))


@SETTINGS
@given(b=bars(min_size=60))
def test_ichimoku_lines(b):
    h, lo, c = b["high"], b["low"], b["close"]
    tenkan, kijun, span_a, span_b, chikou = ind.ichimoku(h, lo, c, 3, 5, 9, 4)
    for i in range(8, len(c)):
        assert tenkan[i] == (h[i - 2 : i + 1].max() + lo[i - 2 : i + 1].min()) / 2.0
        assert kijun[i] == (h[i - 4 : i + 1].max() + lo[i - 4 : i + 1].min()) / 2.0
    assert np.array_equal(span_a[4:], ((tenkan + kijun) / 2.0)[:-4], equal_nan=True)
    assert np.isnan(span_b[: 9 - 1 + 4]).all() and not np.isnan(span_b[9 - 1 + 4 :]).any()
    np.testing.assert_array_equal(chikou, c)


def test_twap_weights_prices_by_holding_time():
    ts = np.array([0, 1, 3, 6, 10], dtype=np.int64) * 1_000_000_000
    p = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    # Over the last 2 intervals at row 3: 20 held 2 s, 30 held 3 s.
    assert ind.twap(ts, p, 2)[3] == (20.0 * 2 + 30.0 * 3) / 5
    # All at one time stamp: plain mean of the prices that stood.
    assert ind.twap(np.zeros(5, dtype=np.int64), p, 2)[4] == 35.0


def test_vpin_splits_a_trade_across_buckets():
    # One 25-lot buy fills two 10-lot buckets (|0 - 10| each) and leaves 5 pending.
    v = ind.vpin(np.array([25.0, 5.0]), np.array([1.0, -1.0]), 10.0, 2)
    assert v[0] == 1.0
    # The pending bucket then completes half buy, half sell: (10 + 0) / (2 * 10).
    assert v[1] == 0.5


# --- the fused set --------------------------------------------------------------------


def test_set_drops_a_nan_trade_whole():
    s = ind.IndicatorSet(
        [ind.spec("ema", timeperiod=2), ind.spec("vwap"), ind.spec("atr", timeperiod=2)]
    )
    for i, p in enumerate([10.0, 11.0, 12.0, 13.0]):
        s.update_trade(i, p, 1.0, 1)
    state, values = s.state.copy(), s.values.copy()
    s.update_trade(5, math.nan, 1.0, 1)
    s.update_trade(6, 14.0, math.nan, 1)
    np.testing.assert_array_equal(s.state, state)
    np.testing.assert_array_equal(s.values, values)


def test_set_reset_keeps_array_identity():
    s = ind.IndicatorSet(ind.default_specs(bin_size=1.0, bucket_volume=5.0))
    arrays = tuple(id(a) for a in s.arrays)
    s.update_trade(0, 100.0, 1.0, 1)
    s.update_quote(99.9, 100.1, 1.0, 2.0)
    s.reset()
    assert tuple(id(a) for a in s.arrays) == arrays
    assert np.isnan(s.values).all()


def test_set_depth_events():
    s = ind.IndicatorSet([ind.spec("book_imbalance_n", levels=2, decay=0.5)])
    s.update_depth(np.array([3.0, 1.0, 100.0]), np.array([1.0, 1.0, 0.0]))
    assert s.values[0] == (2.0 + 0.0) / (4.0 + 1.0)
    n = 4
    kind = np.full(n, ind.EVENT_DEPTH, dtype=np.int8)
    z = np.zeros(n)
    depth_b, depth_a = np.ones((n, 2)), np.full((n, 2), 3.0)
    s.update_batch(kind, z.astype(np.int64), z, z, z.astype(np.int8), z, z, z, z, depth_b, depth_a)
    assert s.values[0] == -0.5


@pytest.mark.parametrize(
    ("specs", "error"),
    [
        ([ind.IndicatorSpec(name="rsi", params={"timeperiod": 1})], "period"),
        ([ind.spec("vwap", bar_ns=10)], "bar_ns must be 0"),
        ([ind.spec("ema"), ind.spec("ema")], "duplicate value names"),
        ([], "at least one"),
    ],
)
def test_set_rejects_bad_specs(specs, error):
    with pytest.raises(ValueError, match=error):
        ind.IndicatorSet(specs)


def test_unknown_indicator_is_rejected():
    with pytest.raises(ValueError, match="unknown indicator"):
        ind.spec("supertrend")


def test_value_names_and_defaults():
    s = ind.IndicatorSet([ind.spec("macd"), ind.spec("atr", bar_ns=60_000_000_000, timeperiod=5)])
    assert s.names == ("macd.macd", "macd.macdsignal", "macd.macdhist", "atr_5_bar60000000000")
    assert ind.parameters_of("bbands")["timeperiod"] == 20
    assert tuple(ind.outputs_of("aroon")) == ("aroondown", "aroonup")
    assert set(ind.INDICATOR_NAMES) >= {n for n, *_ in CASES}


def test_no_allocation_per_update():
    """100k updates through the fused kernels: no numba (NRT) and no Python allocation."""
    from numba.core.runtime import _nrt_python, rtsys

    s = ind.IndicatorSet(ind.default_specs(bin_size=1.0, bucket_volume=5.0))
    n = 100_000
    rng = np.random.default_rng(1)
    kind = np.where(rng.random(n) < 0.3, ind.EVENT_TRADE, ind.EVENT_QUOTE).astype(np.int8)
    ts = np.cumsum(rng.integers(0, 50_000_000, n)).astype(np.int64)
    price = 60_000.0 + np.cumsum(rng.standard_normal(n)) * 0.1
    qty = rng.lognormal(-3.0, 1.0, n)
    side = np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8)
    events = (kind, ts, price, qty, side, price - 0.05, price + 0.05, qty, qty[::-1].copy())
    s.update_batch(*(a[:100] for a in events))  # compile or load before measuring
    s.update_trade(int(ts[0]), float(price[0]), float(qty[0]), int(side[0]))
    was_enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        counts = []
        for size in (10, n):
            before = rtsys.get_allocation_stats()
            s.update_batch(*(a[:size] for a in events))
            after = rtsys.get_allocation_stats()
            counts.append(after.alloc - before.alloc)
    finally:
        if not was_enabled:
            _nrt_python.memsys_disable_stats()
    # Only the call boundary allocates (one wrapper per array argument), never an update.
    assert counts[0] == counts[1] <= 16
    # Per-tick calls from Python: whatever the call boxes is freed, nothing accumulates.
    args = list(zip(ts.tolist(), price.tolist(), qty.tolist(), side.tolist(), strict=True))
    tracemalloc.start()
    try:
        for a in args[:1000]:
            s.update_trade(*a)
        base, _ = tracemalloc.get_traced_memory()
        for a in args:
            s.update_trade(*a)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current - base < 4096


# --- surface and cache hygiene --------------------------------------------------------


def test_all_is_the_public_surface():
    public = {
        n
        for n, v in vars(ind).items()
        if not n.startswith("_") and not (hasattr(v, "__file__") or type(v).__name__ == "module")
    }
    assert set(ind.__all__) == public
    for name in ind.INDICATOR_NAMES:
        assert callable(getattr(ind, name))
        assert callable(getattr(ind, f"{name}_state"))
        assert callable(getattr(ind, f"{name}_update"))


def test_existing_kernel_api_is_kept():
    st_e, st_r = ind.ema_state(3), ind.rsi_state(3)
    assert st_e.shape == (ind.EMA_STATE_SIZE,) and st_r.shape == (ind.RSI_STATE_SIZE,)
    x = np.array([1.0, 2.0, 3.0, 2.0, 4.0, 5.0])
    e = [ind.ema_update(st_e, v) for v in x]
    r = [ind.rsi_update(st_r, v) for v in x]
    np.testing.assert_array_equal(e, ind.ema(x, timeperiod=3))
    np.testing.assert_array_equal(r, ind.rsi(x, timeperiod=3))


def test_stale_kernel_cache_is_dropped(tmp_path: Path):
    (tmp_path / "a.py").write_text("x = 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / "a.f-1.py311.nbi").write_text("index")
    (cache / "a.f-1.py311.1.nbc").write_text("code")
    (cache / "a.cpython-311.pyc").write_text("bytecode")
    drop_stale_kernel_cache(tmp_path)
    assert sorted(p.name for p in cache.iterdir()) == ["a.cpython-311.pyc", "numba-kernels.sha256"]
    (cache / "a.f-1.py311.nbi").write_text("index")
    drop_stale_kernel_cache(tmp_path)  # unchanged sources: the cache stays
    assert (cache / "a.f-1.py311.nbi").exists()
    (tmp_path / "a.py").write_text("x = 2\n")
    drop_stale_kernel_cache(tmp_path)
    assert not (cache / "a.f-1.py311.nbi").exists()

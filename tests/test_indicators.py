"""Indicator kernels on real market data: TA-Lib parity, incremental == batch, references.

Data (skipped when ``../shared/data`` is absent): the BTCUSDT capture
(``hftbacktest/btcusdt_20240808.gz``: 21k trades, 66k top-of-book quotes), 1-second bars
built from its trades, and the ADAUSDT minute bars (``lean/20221213_trade.zip``).

Tolerance. "Relative error" is ``|ours - ref| / max(|ref|, floor)`` and must be <= 1e-9
after warm-up, with warm-up NaNs identical. The floor only matters where an output crosses
zero: for oscillators in percent it is 1 (one percentage point); for outputs that are
differences of price-level quantities (MACD, MOM, ATR...) it is 1e-6 of the input's price
level, because their absolute error is set by the rounding of the price level (TA-Lib's
no better) and relative error is meaningless at a zero crossing. Price-level outputs
(moving averages, bands) have no floor. In practice the errors are 1e-13 or less.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine.indicators as ind

talib = pytest.importorskip("talib")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BTC = DATA / "external" / "hftbacktest" / "btcusdt_20240808.gz"
ADA = DATA / "external" / "lean" / "20221213_trade.zip"
SECOND = 1_000_000_000
RTOL = 1e-9


# --- data -----------------------------------------------------------------------------


def _require(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared beside the repository)")


@pytest.fixture(scope="module")
def btc() -> dict[str, np.ndarray]:
    """Trades and top-of-book quotes of the BTCUSDT capture, in arrival order."""
    _require(BTC)
    kind, ts, price, qty, side, bid, ask, bid_qty, ask_qty = ([] for _ in range(9))
    with gzip.open(BTC, "rt") as f:
        for line in f:
            sp = line.find(" ")
            head = line[sp : sp + 40]
            if "@trade" in head:
                d = json.loads(line[sp + 1 :])["data"]
                row = (ind.EVENT_TRADE, float(d["p"]), float(d["q"]), -1 if d["m"] else 1)
                row += (np.nan, np.nan, np.nan, np.nan)
            elif "@bookTicker" in head:
                d = json.loads(line[sp + 1 :])["data"]
                row = (ind.EVENT_QUOTE, np.nan, np.nan, 0)
                row += (float(d["b"]), float(d["a"]), float(d["B"]), float(d["A"]))
            else:
                continue
            ts.append(int(line[:sp]))
            for col, v in zip(
                (kind, price, qty, side, bid, ask, bid_qty, ask_qty), row, strict=True
            ):
                col.append(v)
    ev = {
        "kind": np.array(kind, dtype=np.int8),
        "ts": np.array(ts, dtype=np.int64),
        "price": np.array(price),
        "qty": np.array(qty),
        "side": np.array(side, dtype=np.int8),
        "bid": np.array(bid),
        "ask": np.array(ask),
        "bid_qty": np.array(bid_qty),
        "ask_qty": np.array(ask_qty),
    }
    trade = ev["kind"] == ind.EVENT_TRADE
    ev["t_ts"], ev["t_price"], ev["t_qty"] = ev["ts"][trade], ev["price"][trade], ev["qty"][trade]
    ev["t_side"] = ev["side"][trade]
    quote = ev["kind"] == ind.EVENT_QUOTE
    for k in ("bid", "ask", "bid_qty", "ask_qty"):
        ev[f"q_{k}"] = ev[k][quote]
    return ev


def bars_of(
    ts: np.ndarray, price: np.ndarray, qty: np.ndarray, width: int
) -> dict[str, np.ndarray]:
    """Time bars on ``ts // width``, as the indicator set builds them."""
    bucket = ts // width
    starts = np.r_[0, np.flatnonzero(np.diff(bucket)) + 1]
    ends = np.r_[starts[1:], len(ts)]
    # Volumes summed left to right, in the order the set's bar builder adds them.
    volume = np.array([float(sum(qty[a:b].tolist())) for a, b in zip(starts, ends, strict=True)])
    return {
        "open": price[starts],
        "high": np.maximum.reduceat(price, starts),
        "low": np.minimum.reduceat(price, starts),
        "close": price[ends - 1],
        "volume": volume,
        "first_trade": starts,
    }


@pytest.fixture(scope="module")
def btc_bars(btc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return bars_of(btc["t_ts"], btc["t_price"], btc["t_qty"], SECOND)


@pytest.fixture(scope="module")
def ada_bars() -> dict[str, np.ndarray]:
    _require(ADA)
    with zipfile.ZipFile(ADA) as z, z.open(z.namelist()[0]) as f:
        rows = np.loadtxt(io.TextIOWrapper(f), delimiter=",")
    return dict(zip(("ms", "open", "high", "low", "close", "volume"), rows.T, strict=True))


@pytest.fixture(scope="module", params=["btc_ticks", "btc_1s", "ada_1m"])
def ohlcv(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    """Three real series: BTC trades as bars (h = l = c), BTC 1 s bars, ADA 1 min bars."""
    if request.param == "btc_ticks":
        b = request.getfixturevalue("btc")
        p = b["t_price"]
        return {"open": p, "high": p, "low": p, "close": p, "volume": b["t_qty"]}
    return request.getfixturevalue("btc_bars" if request.param == "btc_1s" else "ada_bars")


# --- comparison -----------------------------------------------------------------------


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


LEVEL, PERCENT, DIFF, VOLUME = "level", "percent", "diff", "volume"
# VAR is in squared price units; DRIFT and SLOPE are explained at TALIB_CASES.
VARIANCE, DRIFT, SLOPE, ANGLE = "variance", "drift", "slope", "angle"


def floor_of(kind: str, d: dict[str, np.ndarray], timeperiod: int = 14) -> float:
    level = float(np.median(np.abs(d["close"])))
    if kind == PERCENT:
        return 1.0
    if kind == DIFF:
        return 1e-6 * level
    if kind == VOLUME:
        return 1e-6 * float(np.median(np.abs(d["volume"])))
    if kind == VARIANCE:
        return (1e-6 * level) ** 2
    if kind == DRIFT:
        return 1e-4 * level
    if kind in (SLOPE, ANGLE):
        # TA-Lib's n sum(t y) - sum(t) sum(y) of raw prices keeps ~n * 1e-15 of the level.
        return 1e-5 * timeperiod * level * (180.0 / np.pi if kind == ANGLE else 1.0)
    return 0.0


# name, ours(d, params), TA-Lib(d, params), parameter sets, floor kind
C, HLC, HLCV = "c", "hlc", "hlcv"


def _call(fn: Callable[..., Any], inputs: str, d: dict[str, np.ndarray], p: dict[str, Any]) -> Any:
    args = {
        C: (d["close"],),
        HLC: (d["high"], d["low"], d["close"]),
        HLCV: (d["high"], d["low"], d["close"], d["volume"]),
        "hl": (d["high"], d["low"]),
        "cv": (d["close"], d["volume"]),
        "ohlc": (d["open"], d["high"], d["low"], d["close"]),
    }[inputs]
    return fn(*args, **p)


TALIB_CASES: list[tuple[str, str, str, list[dict[str, Any]], str]] = [
    ("sma", "SMA", C, [{}, {"timeperiod": 2}, {"timeperiod": 1}], LEVEL),
    ("ema", "EMA", C, [{}, {"timeperiod": 2}, {"timeperiod": 1}], LEVEL),
    ("wma", "WMA", C, [{}, {"timeperiod": 2}], LEVEL),
    ("rsi", "RSI", C, [{}, {"timeperiod": 2}], PERCENT),
    ("macd", "MACD", C, [{}, {"fastperiod": 5, "slowperiod": 3, "signalperiod": 1}], DIFF),
    ("bbands", "BBANDS", C, [{}, {"timeperiod": 5, "nbdevup": 1.5, "nbdevdn": 1.0}], LEVEL),
    ("bbands", "BBANDS", C, [{"matype": 1}, {"matype": 2, "timeperiod": 7}], LEVEL),
    ("atr", "ATR", HLC, [{}, {"timeperiod": 1}], DIFF),
    ("natr", "NATR", HLC, [{}], DIFF),
    (
        "stoch",
        "STOCH",
        HLC,
        [{}, {"fastk_period": 9, "slowk_period": 4, "slowk_matype": 1}],
        PERCENT,
    ),
    ("stoch", "STOCH", HLC, [{"slowk_matype": 2, "slowd_matype": 2}], PERCENT),
    (
        "stochrsi",
        "STOCHRSI",
        C,
        [{}, {"timeperiod": 9, "fastk_period": 3, "fastd_matype": 1}],
        PERCENT,
    ),
    ("willr", "WILLR", HLC, [{}, {"timeperiod": 2}], PERCENT),
    ("cci", "CCI", HLC, [{}, {"timeperiod": 20}], PERCENT),
    ("roc", "ROC", C, [{}, {"timeperiod": 1}], DIFF),
    ("mom", "MOM", C, [{}, {"timeperiod": 1}], DIFF),
    ("trix", "TRIX", C, [{}, {"timeperiod": 5}], DIFF),
    ("obv", "OBV", "cv", [{}], VOLUME),
    ("adx", "ADX", HLC, [{}, {"timeperiod": 5}], PERCENT),
    ("plus_di", "PLUS_DI", HLC, [{}, {"timeperiod": 5}], PERCENT),
    ("minus_di", "MINUS_DI", HLC, [{}, {"timeperiod": 5}], PERCENT),
    ("aroon", "AROON", "hl", [{}, {"timeperiod": 5}], PERCENT),
    ("mfi", "MFI", HLCV, [{}, {"timeperiod": 5}], PERCENT),
    ("ad", "AD", HLCV, [{}], VOLUME),
    # The rest of TA-Lib's common functions.
    ("dema", "DEMA", C, [{}, {"timeperiod": 2}, {"timeperiod": 1}], LEVEL),
    ("tema", "TEMA", C, [{}, {"timeperiod": 2}, {"timeperiod": 1}], LEVEL),
    (
        "t3",
        "T3",
        C,
        [{}, {"timeperiod": 3, "vfactor": 0.0}, {"timeperiod": 8, "vfactor": 1.0}],
        LEVEL,
    ),
    ("kama", "KAMA", C, [{}, {"timeperiod": 2}, {"timeperiod": 1}], LEVEL),
    ("ht_trendline", "HT_TRENDLINE", C, [{}], LEVEL),
    (
        "sar",
        "SAR",
        "hl",
        [{}, {"acceleration": 0.05, "maximum": 0.1}, {"acceleration": 0.3}],
        LEVEL,
    ),
    ("var", "VAR", C, [{}, {"timeperiod": 1}, {"timeperiod": 20, "nbdev": 3.0}], VARIANCE),
    ("stddev", "STDDEV", C, [{}, {"timeperiod": 2}, {"timeperiod": 20, "nbdev": -2.0}], DIFF),
    ("linearreg", "LINEARREG", C, [{}, {"timeperiod": 2}], LEVEL),
    ("linearreg_intercept", "LINEARREG_INTERCEPT", C, [{}, {"timeperiod": 2}], LEVEL),
    ("tsf", "TSF", C, [{}, {"timeperiod": 2}], LEVEL),
    ("linearreg_slope", "LINEARREG_SLOPE", C, [{}], SLOPE),
    ("linearreg_angle", "LINEARREG_ANGLE", C, [{}], ANGLE),
    # APO/PPO over an EMA (TA-Lib 0.8's default) are exact; over SMA/WMA, TA-Lib's sums
    # run from the first sample and drift by ~1e-14 of the price level (ours re-anchor).
    ("apo", "APO", C, [{}, {"fastperiod": 26, "slowperiod": 5}], DIFF),
    ("apo", "APO", C, [{"matype": 0}, {"matype": 2, "fastperiod": 3, "slowperiod": 9}], DRIFT),
    ("ppo", "PPO", C, [{}, {"matype": 0}, {"matype": 2, "fastperiod": 5}], PERCENT),
    ("cmo", "CMO", C, [{}, {"timeperiod": 2}], PERCENT),
    (
        "ultosc",
        "ULTOSC",
        HLC,
        [{}, {"timeperiod1": 9, "timeperiod2": 2, "timeperiod3": 4}],
        PERCENT,
    ),
    ("aroonosc", "AROONOSC", "hl", [{}, {"timeperiod": 5}], PERCENT),
    ("bop", "BOP", "ohlc", [{}], PERCENT),
    ("dx", "DX", HLC, [{}, {"timeperiod": 2}], PERCENT),
    ("adxr", "ADXR", HLC, [{}, {"timeperiod": 2}], PERCENT),
]
TALIB_PARAMS = [
    pytest.param(name, ta, inputs, p, kind, id=f"{name}-{i}-{'-'.join(map(str, p.values()))}")
    for name, ta, inputs, plist, kind in TALIB_CASES
    for i, p in enumerate(plist)
]


@pytest.mark.parametrize(("name", "ta", "inputs", "params", "kind"), TALIB_PARAMS)
def test_matches_talib_on_real_data(ohlcv, name, ta, inputs, params, kind):
    ours = _call(getattr(ind, name), inputs, ohlcv, params)
    ref = _call(getattr(talib, ta), inputs, ohlcv, params)
    assert_close(ours, ref, floor_of(kind, ohlcv, params.get("timeperiod", 14)))


def test_talib_parity_is_exact_where_the_arithmetic_is_talibs(ohlcv):
    # Same operations in the same order as TA-Lib 0.8: equal to the last bit.
    d = ohlcv
    for ours, ref in [
        (ind.ema(d["close"]), talib.EMA(d["close"])),
        (ind.rsi(d["close"]), talib.RSI(d["close"])),
        (ind.roc(d["close"]), talib.ROC(d["close"])),
        (ind.mom(d["close"]), talib.MOM(d["close"])),
        (ind.trix(d["close"]), talib.TRIX(d["close"])),
        (ind.aroon(d["high"], d["low"]), talib.AROON(d["high"], d["low"])),
        (ind.adx(d["high"], d["low"], d["close"]), talib.ADX(d["high"], d["low"], d["close"])),
        (ind.mfi(d["high"], d["low"], d["close"], d["volume"]),
         talib.MFI(d["high"], d["low"], d["close"], d["volume"])),
        (ind.obv(d["close"], d["volume"]), talib.OBV(d["close"], d["volume"])),
        (ind.macd(d["close"]), talib.MACD(d["close"])),
        (ind.dema(d["close"]), talib.DEMA(d["close"])),
        (ind.tema(d["close"]), talib.TEMA(d["close"])),
        (ind.t3(d["close"]), talib.T3(d["close"])),
        (ind.ht_trendline(d["close"]), talib.HT_TRENDLINE(d["close"])),
        (ind.sar(d["high"], d["low"]), talib.SAR(d["high"], d["low"])),
        (ind.apo(d["close"]), talib.APO(d["close"])),
        (ind.ppo(d["close"]), talib.PPO(d["close"])),
        (ind.cmo(d["close"]), talib.CMO(d["close"])),
        (ind.aroonosc(d["high"], d["low"]), talib.AROONOSC(d["high"], d["low"])),
        (ind.bop(d["open"], d["high"], d["low"], d["close"]),
         talib.BOP(d["open"], d["high"], d["low"], d["close"])),
        (ind.dx(d["high"], d["low"], d["close"]), talib.DX(d["high"], d["low"], d["close"])),
        (ind.adxr(d["high"], d["low"], d["close"]), talib.ADXR(d["high"], d["low"], d["close"])),
    ]:  # fmt: skip
        np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("pre", [1, 2, 3, 7])
def test_bbands_of_a_window_of_equal_samples_is_flat(pre):
    # A price back at the level the sums are shifted by, after two others: the sliding
    # sums keep a rounding residue (~1e-24) that is their whole mean square then, so the
    # relative test alone read it as a spread (3e-12 at a 1e-3 price: 2.2e-9 of TA-Lib's
    # band, which is flat). Found by tests/test_indicators_properties.py.
    a, b1, b2 = 0.0013529636999862974, 0.0010609101654268363, 0.001043642370470374
    x = np.r_[np.full(30 + pre, a), b1, b2, np.full(6, a)]
    for matype in (0, 1, 2):
        upper, middle, lower = ind.bbands(x, 6, 2.0, 2.0, matype)
        ref = talib.BBANDS(x, 6, 2.0, 2.0, matype)
        assert upper[-1] == middle[-1] == lower[-1], matype
        np.testing.assert_allclose(middle, ref[1], rtol=RTOL)
        state, out = ind.bbands_state(6, 2.0, 2.0, matype), np.empty(3)
        for v in x:
            ind.bbands_update(state, v, out)
        assert out[0] == out[1] == out[2], matype


# --- incremental == batch -------------------------------------------------------------

BATCH_OF: dict[str, Callable[..., Any]] = {
    "realized_vol": lambda b, p: ind.realized_vol(b["close"], **p),
    "ichimoku": lambda b, p: ind.ichimoku(b["high"], b["low"], b["close"], **p),
    "market_profile": lambda b, p: ind.market_profile(b["close"], b["volume"], **p),
    "ichimoku_cloud": lambda b, p: ind.ichimoku_cloud(b["high"], b["low"], b["close"], **p),
    "vwma": lambda b, p: ind.vwma(b["close"], b["volume"], **p),
    "vpt": lambda b, p: ind.vpt(b["close"], b["volume"], **p),
    "garch": lambda b, p: ind.garch(b["close"], **p),
    "volvol": lambda b, p: ind.volvol(b["close"], **p),
}
for _name, _ta, _inputs, _plist, _kind in TALIB_CASES:
    BATCH_OF.setdefault(_name, lambda b, p, f=_name, i=_inputs: _call(getattr(ind, f), i, b, p))

SET_PARAMS: dict[str, dict[str, Any]] = {
    name: plist[-1] for name, _ta, _i, plist, _k in TALIB_CASES
} | {
    "stoch": {"fastk_period": 9, "slowk_period": 4, "slowk_matype": 1, "slowd_matype": 2},
    "bbands": {"timeperiod": 7, "matype": 2},
    "realized_vol": {"timeperiod": 30},
    "ichimoku": {"tenkan_period": 5, "kijun_period": 11, "senkou_period": 23, "displacement": 7},
    "market_profile": {"bin_size": 1.0, "timeperiod": 60},
    "ichimoku_cloud": {
        "tenkan_period": 4,
        "kijun_period": 9,
        "senkou_period": 15,
        "displacement": 5,
    },
    "vwma": {"timeperiod": 12},
    "vpt": {},
    "garch": {"omega": 1e-9, "alpha": 0.05, "beta": 0.9},
    "volvol": {"timeperiod": 10, "vol_period": 7},
    "apo": {"matype": 2, "fastperiod": 3, "slowperiod": 9},
}


def _record(
    specs: list[ind.IndicatorSpec], ev: dict[str, np.ndarray]
) -> tuple[ind.IndicatorSet, np.ndarray]:
    s = ind.IndicatorSet(specs)
    rows = s.record_batch(
        ev["kind"],
        ev["ts"],
        ev["price"],
        ev["qty"],
        ev["side"],
        ev["bid"],
        ev["ask"],
        ev["bid_qty"],
        ev["ask_qty"],
    )
    return s, rows


@pytest.mark.parametrize("name", sorted(SET_PARAMS))
def test_incremental_equals_batch_per_trade(btc, name):
    """Bar-fed indicators with one bar per trade: the value after each trade is row i."""
    _s, rows = _record([ind.spec(name, **SET_PARAMS[name])], btc)
    trade = btc["kind"] == ind.EVENT_TRADE
    p = btc["t_price"]
    bars = {"open": p, "high": p, "low": p, "close": p, "volume": btc["t_qty"]}
    ref = np.atleast_2d(BATCH_OF[name](bars, SET_PARAMS[name]))
    np.testing.assert_array_equal(rows[trade].T, ref)


@pytest.mark.parametrize("name", sorted(SET_PARAMS))
def test_incremental_equals_batch_on_one_second_bars(btc, btc_bars, name):
    """With ``bar_ns`` = 1 s, bar k's value appears with the first trade of bar k + 1."""
    _s, rows = _record([ind.spec(name, bar_ns=SECOND, **SET_PARAMS[name])], btc)
    trade_rows = rows[btc["kind"] == ind.EVENT_TRADE]
    completed = trade_rows[btc_bars["first_trade"][1:]]
    ref = np.atleast_2d(BATCH_OF[name](btc_bars, SET_PARAMS[name]))[:, :-1]
    np.testing.assert_array_equal(completed.T, ref)


TRADE_FED = {
    "vwap": (lambda e, p: ind.vwap(e["t_ts"], e["t_price"], e["t_qty"], **p), {}),
    "rolling_vwap": (
        lambda e, p: ind.rolling_vwap(e["t_price"], e["t_qty"], **p),
        {"timeperiod": 50},
    ),
    "twap": (lambda e, p: ind.twap(e["t_ts"], e["t_price"], **p), {"timeperiod": 50}),
    "tick_momentum": (
        lambda e, p: ind.tick_momentum(e["t_price"], e["t_qty"], **p),
        {"timeperiod": 30},
    ),
    "velocity": (lambda e, p: ind.velocity(e["t_ts"], e["t_price"], **p), {"timeperiod": 10}),
    "trade_ofi": (lambda e, p: ind.trade_ofi(e["t_qty"], e["t_side"], **p), {"timeperiod": 40}),
    "vpin": (
        lambda e, p: ind.vpin(e["t_qty"], e["t_side"], **p),
        {"bucket_volume": 2.0, "timeperiod": 20},
    ),
    "cvd": (
        lambda e, p: ind.cvd(e["t_ts"], e["t_qty"], e["t_side"], **p),
        {"session_ns": 60 * SECOND},
    ),
    "kyle_lambda": (
        lambda e, p: ind.kyle_lambda(e["t_price"], e["t_qty"], e["t_side"], **p),
        {"timeperiod": 50},
    ),
}
QUOTE_FED = {
    "book_imbalance": lambda e: ind.book_imbalance(e["q_bid_qty"], e["q_ask_qty"]),
    "spread_bps": lambda e: ind.spread_bps(e["q_bid"], e["q_ask"]),
}


@pytest.mark.parametrize("name", sorted(TRADE_FED))
def test_incremental_equals_batch_trade_fed(btc, name):
    batch, params = TRADE_FED[name]
    _s, rows = _record([ind.spec(name, **params)], btc)
    trade = btc["kind"] == ind.EVENT_TRADE
    np.testing.assert_array_equal(rows[trade].T, np.atleast_2d(batch(btc, params)))


@pytest.mark.parametrize("name", sorted(QUOTE_FED))
def test_incremental_equals_batch_quote_fed(btc, name):
    _s, rows = _record([ind.spec(name)], btc)
    quote = btc["kind"] == ind.EVENT_QUOTE
    np.testing.assert_array_equal(rows[quote, 0], QUOTE_FED[name](btc))


def test_default_set_rows_equal_the_batch_functions(btc, btc_bars):
    """The whole default set, fed the capture in one call, row by row."""
    s, rows = _record(list(ind.default_specs(bin_size=1.0, bucket_volume=5.0)), btc)
    trade = btc["kind"] == ind.EVENT_TRADE
    tr = rows[trade]
    p, q = btc["t_price"], btc["t_qty"]
    np.testing.assert_array_equal(tr[:, s.index["rsi_14"]], ind.rsi(p, 14))
    np.testing.assert_array_equal(tr[:, s.index["macd_12_26_9.macdhist"]], ind.macd(p)[2])
    np.testing.assert_array_equal(tr[:, s.index["vpin_5_50"]], ind.vpin(q, btc["t_side"], 5.0, 50))
    first = btc_bars["first_trade"][1:]
    atr = ind.atr(btc_bars["high"], btc_bars["low"], btc_bars["close"], 14)[:-1]
    np.testing.assert_array_equal(tr[first, s.index[f"atr_14_bar{SECOND}"]], atr)
    quote = btc["kind"] == ind.EVENT_QUOTE
    np.testing.assert_array_equal(
        rows[quote, s.index["spread_bps"]], ind.spread_bps(btc["q_bid"], btc["q_ask"])
    )
    # The final values are those of the last event of each kind.
    np.testing.assert_array_equal(s.values, rows[-1])


# --- indicators TA-Lib lacks, against direct references -------------------------------


def window_sums(x: np.ndarray, n: int) -> np.ndarray:
    """Sums of every window of n, each computed independently (exact-ish reference)."""
    return np.array([np.sum(x[i - n + 1 : i + 1]) for i in range(n - 1, len(x))])


def test_vwap_session_reference(btc):
    ts, p, q = btc["t_ts"], btc["t_price"], btc["t_qty"]
    ref = np.cumsum(p * q) / np.cumsum(q)
    assert_close(ind.vwap(ts, p, q), ref, rtol=1e-12)
    # Sessions of one minute restart the average at each boundary.
    minute = 60 * SECOND
    out = ind.vwap(ts, p, q, session_ns=minute)
    sid = ts // minute
    for s in np.unique(sid):
        m = sid == s
        assert_close(out[m], np.cumsum(p[m] * q[m]) / np.cumsum(q[m]), rtol=1e-12)


def test_rolling_vwap_twap_rvol_reference(btc):
    ts, p, q = btc["t_ts"], btc["t_price"], btc["t_qty"]
    n = 100
    assert_close(ind.rolling_vwap(p, q, n)[n - 1 :], window_sums(p * q, n) / window_sums(q, n))
    dt = np.diff(ts).astype(np.float64)
    span = window_sums(dt, n)
    ref = np.where(
        span > 0,
        window_sums(p[:-1] * dt, n) / np.where(span > 0, span, 1.0),
        window_sums(p[:-1], n) / n,
    )
    assert_close(ind.twap(ts, p, n)[n:], ref)
    r = np.log(p[1:] / p[:-1])
    assert_close(ind.realized_vol(p, n)[n:], np.sqrt(window_sums(r * r, n)), floor=1e-12)


def test_tick_momentum_ofi_reference(btc):
    p, q, side = btc["t_price"], btc["t_qty"], btc["t_side"].astype(np.float64)
    n = 50
    sign = np.zeros_like(p)
    for i in range(1, len(p)):
        sign[i] = 1.0 if p[i] > p[i - 1] else -1.0 if p[i] < p[i - 1] else sign[i - 1]
    assert_close(
        ind.tick_momentum(p, q, n)[n - 1 :], window_sums(sign * q, n) / window_sums(q, n), floor=1.0
    )
    net, imb = ind.trade_ofi(q, side, n)
    # A rolling sum's rounding is set by the gross volume it adds and removes, not by
    # the (possibly near-zero) net: measure the error against the window's volume.
    gross = window_sums(q, n)
    assert np.max(np.abs(net[n - 1 :] - window_sums(side * q, n)) / gross) <= 1e-12
    assert_close(imb[n - 1 :], window_sums(side * q, n) / window_sums(q, n), floor=1.0)
    assert np.all(np.abs(imb[n - 1 :]) <= 1.0)


def test_velocity_reference(btc):
    ts, p = btc["t_ts"], btc["t_price"]
    n = 10
    v, a = ind.velocity(ts, p, n)
    dt = (ts[n:] - ts[:-n]) / 1e9
    moving = dt > 0
    assert_close(v[n:][moving], ((p[n:] - p[:-n]) / np.where(moving, dt, 1.0))[moving])
    # A window of ticks sharing one time stamp keeps the previous velocity.
    for i in np.flatnonzero(~moving)[:50] + n:
        assert v[i] == v[i - 1] or (np.isnan(v[i]) and np.isnan(v[i - 1]))
    dt2 = dt[n:]
    ok = (dt2 > 0) & ~np.isnan(v[:-n][n:])
    ref = (v[2 * n :] - v[n:-n]) / np.where(dt2 > 0, dt2, 1.0)
    assert_close(a[2 * n :][ok], ref[ok], floor=1e-6)


def test_book_imbalance_and_spread_reference(btc):
    b, a, bq, aq = btc["q_bid"], btc["q_ask"], btc["q_bid_qty"], btc["q_ask_qty"]
    assert_close(ind.book_imbalance(bq, aq), (bq - aq) / (bq + aq), floor=1.0)
    assert_close(ind.spread_bps(b, a), 1e4 * (a - b) / ((a + b) / 2), floor=1e-6)
    levels = np.stack([bq, bq / 2, bq / 4], axis=1), np.stack([aq, aq * 2, aq / 3], axis=1)
    w = 0.5 ** np.arange(3)
    ref = ((levels[0] - levels[1]) @ w) / ((levels[0] + levels[1]) @ w)
    assert_close(ind.book_imbalance_n(*levels, levels=3, decay=0.5), ref, floor=1.0)


def vpin_reference(qty: np.ndarray, side: np.ndarray, bucket: float, n: int) -> np.ndarray:
    """VPIN by splitting trades into buckets one at a time, then averaging windows."""
    imbalances: list[float] = []
    out = np.full(len(qty), np.nan)
    filled = buy = sell = 0.0
    for i, (q, s) in enumerate(zip(qty, side, strict=True)):
        rest = q
        while rest > 0:
            take = min(rest, bucket - filled)
            if s > 0:
                buy += take
            else:
                sell += take
            filled += take
            rest -= take
            if rest > 0 or filled >= bucket:
                imbalances.append(abs(sell - buy))
                filled = buy = sell = 0.0
        if len(imbalances) >= n:
            out[i] = sum(imbalances[-n:]) / (n * bucket)
    return out


def test_vpin_reference():
    rng = np.random.default_rng(7)
    # Integer lots keep the bucket arithmetic exact in both implementations.
    qty = rng.integers(1, 40, 3000).astype(np.float64)
    side = np.where(rng.random(3000) < 0.6, 1.0, -1.0)
    assert_close(ind.vpin(qty, side, 25.0, 10), vpin_reference(qty, side, 25.0, 10), floor=1e-3)


def test_vpin_on_capture_is_a_fraction(btc):
    v = ind.vpin(btc["t_qty"], btc["t_side"], 2.0, 20)
    ok = ~np.isnan(v)
    assert ok.sum() > 1000
    assert np.all((v[ok] >= 0.0) & (v[ok] <= 1.0 + 1e-12))


def ichimoku_reference(
    h: np.ndarray, lo: np.ndarray, c: np.ndarray, t: int, k: int, s: int, d: int
):
    def mid(n: int) -> np.ndarray:
        out = np.full(len(c), np.nan)
        for i in range(n - 1, len(c)):
            out[i] = (h[i - n + 1 : i + 1].max() + lo[i - n + 1 : i + 1].min()) / 2.0
        return out

    tenkan, kijun, span_b = mid(t), mid(k), mid(s)
    span_a = (tenkan + kijun) / 2.0
    shift = lambda x: np.r_[np.full(d, np.nan), x[: len(x) - d]]  # noqa: E731
    return tenkan, kijun, shift(span_a), shift(span_b), c


def test_ichimoku_reference(btc_bars, ada_bars):
    for b in (btc_bars, ada_bars):
        ours = ind.ichimoku(b["high"], b["low"], b["close"])
        for o, r in zip(
            ours, ichimoku_reference(b["high"], b["low"], b["close"], 9, 26, 52, 26), strict=True
        ):
            np.testing.assert_array_equal(o, r)


def market_profile_reference(price, qty, bin_size, n, va, lot):
    """Counter of integer lots per bin over each window; POC and value area by the rules."""
    bins = np.floor(price / bin_size + 0.5).astype(np.int64)
    lots = np.floor(qty / lot + 0.5)
    out = np.full((3, len(price)), np.nan)
    for i in range(n - 1, len(price)):
        hist = Counter()
        for b, v in zip(bins[i - n + 1 : i + 1], lots[i - n + 1 : i + 1], strict=True):
            hist[b] += v
        lo, hi = min(bins[i - n + 1 : i + 1]), max(bins[i - n + 1 : i + 1])
        total = sum(hist.values())
        if total <= 0:
            continue
        poc = min(range(lo, hi + 1), key=lambda k: (-hist[k], abs(2 * k - lo - hi), k))
        acc, a, b = hist[poc], poc, poc
        while acc < va * total:
            up = hist[b + 1] if b < hi else -1.0
            down = hist[a - 1] if a > lo else -1.0
            if up < 0 and down < 0:
                break
            if up >= down:
                b, acc = b + 1, acc + up
            else:
                a, acc = a - 1, acc + down
        out[:, i] = (poc * bin_size, b * bin_size, a * bin_size)
    return out


def test_market_profile_reference(btc, ada_bars):
    p, q = btc["t_price"][:4000], btc["t_qty"][:4000]
    ours = ind.market_profile(p, q, bin_size=0.5, timeperiod=200, lot_size=0.001)
    np.testing.assert_array_equal(
        np.array(ours), market_profile_reference(p, q, 0.5, 200, 0.7, 0.001)
    )
    c, v = ada_bars["close"], ada_bars["volume"]
    ours = ind.market_profile(c, v, bin_size=0.0005, timeperiod=60, value_area=0.6, lot_size=1.0)
    np.testing.assert_array_equal(
        np.array(ours), market_profile_reference(c, v, 0.0005, 60, 0.6, 1.0)
    )


def test_market_profile_out_of_range_is_nan():
    price = np.array([100.0, 100.5, 150.0, 100.0])
    poc, vah, val = ind.market_profile(price, np.ones(4), bin_size=0.5, timeperiod=2, n_bins=50)
    assert np.isnan(poc[0])  # warm-up
    # Equal volumes at 100.0 and 100.5: equidistant from the mid-range, the lower wins.
    assert (poc[1], vah[1], val[1]) == (100.0, 100.5, 100.0)
    # 100.5 .. 150.0 spans 99 bins, more than the 50 the histogram has.
    assert np.isnan(poc[2]) and np.isnan(poc[3])


def test_rolling_sums_do_not_drift_after_a_spike():
    """A 1e9x outlier leaves the window and the sums recover exactly within one window."""
    rng = np.random.default_rng(3)
    p = 100.0 + np.cumsum(rng.standard_normal(20_000)) * 0.01
    q = rng.random(20_000)
    q[5_000] = 1e9
    n = 50
    got = ind.rolling_vwap(p, q, n)
    exact = []
    for i in range(5_000 + 2 * n, 20_000, 997):
        w = slice(i - n + 1, i + 1)
        pv = sum(Fraction(a) * Fraction(b) for a, b in zip(p[w], q[w], strict=True))
        exact.append(float(pv / sum(Fraction(b) for b in q[w])))
    assert_close(got[5_000 + 2 * n : 20_000 : 997], exact, rtol=1e-13)
    # Running sums that are never re-anchored stay off long after the spike has left.
    pv, v = np.cumsum(p * q), np.cumsum(q)
    naive = (pv[n:] - pv[:-n]) / (v[n:] - v[:-n])  # window ending at row k + n
    after = slice(5_000 + n, None)
    assert np.max(np.abs(naive[after] - got[5_000 + 2 * n :]) / got[5_000 + 2 * n :]) > 1e-9

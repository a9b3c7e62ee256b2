"""Indicators added for issue 18 against independent references on real data.

TA-Lib parity and incremental == batch for them are in ``test_indicators.py`` (with the
older ones); here each indicator TA-Lib lacks (and the regression and variance families,
which TA-Lib computes less exactly than we do) is checked against a plain-Python
implementation written from its definition: exact rationals where rounding matters,
window-by-window sums otherwise. Data: the BTCUSDT capture (trades, 1-second bars and the
depth book rebuilt from its diffs) and the ADAUSDT minute bars, as in ``test_indicators``.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from fractions import Fraction

import numpy as np
import pytest
from test_indicators import (  # the data fixtures and the comparison of test_indicators
    BTC,
    SECOND,
    _require,
    ada_bars,
    assert_close,
    btc,
    btc_bars,
    ichimoku_reference,
)

import engine.indicators as ind
from engine.book import ApplyResult, BookSync, OrderBook, Side, decode_snapshot
from engine.feeds._capture import CaptureStats, DepthUpdate, open_capture, parse_line

__all__ = ["ada_bars", "btc", "btc_bars"]  # fixtures re-exported for pytest


@pytest.fixture(scope="module", params=["btc_1s", "ada_1m"])
def bars(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    return request.getfixturevalue("btc_bars" if request.param == "btc_1s" else "ada_bars")


# --- regression and variance against exact rationals ----------------------------------


def linreg_reference(y: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Least squares over each window in exact rational arithmetic, rounded once."""
    out = {k: np.full(len(y), np.nan) for k in ("value", "slope", "intercept", "tsf")}
    t_mean = Fraction(n - 1, 2)
    sxx = sum((Fraction(t) - t_mean) ** 2 for t in range(n))
    for i in range(n - 1, len(y)):
        w = [Fraction(v) for v in y[i - n + 1 : i + 1]]
        y_mean = sum(w) / n
        m = sum((Fraction(t) - t_mean) * (v - y_mean) for t, v in enumerate(w)) / sxx
        b = y_mean - m * t_mean
        out["slope"][i] = float(m)
        out["intercept"][i] = float(b)
        out["value"][i] = float(b + m * (n - 1))
        out["tsf"][i] = float(b + m * n)
    return out


@pytest.mark.parametrize("n", [2, 14])
def test_linear_regression_family_is_exact(bars, n):
    y = bars["close"][:1500]
    ref = linreg_reference(y, n)
    level = float(np.median(y))
    # O(1) sliding sums, re-anchored: within a few ulps of the exact fit, where TA-Lib's
    # raw-price formula is off by up to ~1e-14 of the price level in the slope.
    assert_close(ind.linearreg(y, n), ref["value"], rtol=1e-14)
    assert_close(ind.linearreg_intercept(y, n), ref["intercept"], rtol=1e-14)
    assert_close(ind.tsf(y, n), ref["tsf"], rtol=1e-14)
    assert_close(ind.linearreg_slope(y, n), ref["slope"], floor=1e-3 * level, rtol=1e-12)
    angle = np.degrees(np.arctan(ref["slope"]))
    assert_close(ind.linearreg_angle(y, n), angle, floor=1e-3 * level, rtol=1e-12)


def variance_reference(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for i in range(n - 1, len(x)):
        w = [Fraction(v) for v in x[i - n + 1 : i + 1]]
        mean = sum(w) / n
        out[i] = float(sum((v - mean) ** 2 for v in w) / n)
    return out


@pytest.mark.parametrize("n", [2, 5, 20])
def test_var_and_stddev_are_exact(bars, n):
    x = bars["close"][:1500]
    ref = variance_reference(x, n)
    floor = (1e-9 * float(np.median(x))) ** 2
    assert_close(ind.var(x, n), ref, floor=floor, rtol=1e-9)
    assert_close(ind.stddev(x, n, 2.0), 2.0 * np.sqrt(ref), floor=np.sqrt(floor), rtol=1e-9)
    # A window of equal prices reads exactly 0, not rounding residue of earlier windows.
    flat = np.flatnonzero(ref == 0.0)
    np.testing.assert_array_equal(ind.var(x, n)[flat], 0.0)


# --- bar indicators TA-Lib lacks --------------------------------------------------------


def test_vwma_and_vpt_reference(bars):
    c, v = bars["close"], bars["volume"]
    n = 20
    ref = np.full(len(c), np.nan)
    for i in range(n - 1, len(c)):
        w = slice(i - n + 1, i + 1)
        vol = math.fsum(v[w])
        ref[i] = math.fsum(c[w] * v[w]) / vol if vol > 0 else math.fsum(c[w]) / n
    assert_close(ind.vwma(c, v, n), ref, rtol=1e-13)
    terms = np.r_[0.0, v[1:] * (np.diff(c) / c[:-1])]
    vpt_ref = np.array([math.fsum(terms[: i + 1]) for i in range(len(c))])
    assert_close(ind.vpt(c, v), vpt_ref, floor=1e-9 * float(np.sum(v)), rtol=1e-12)


def test_ichimoku_cloud_position_and_thickness(bars):
    h, lo, c = bars["high"], bars["low"], bars["close"]
    _t, _k, span_a, span_b, _c = ichimoku_reference(h, lo, c, 9, 26, 52, 26)
    position, thickness = ind.ichimoku_cloud(h, lo, c)
    ok = ~(np.isnan(span_a) | np.isnan(span_b))
    np.testing.assert_array_equal(np.isnan(position), ~ok)
    top, bottom = np.maximum(span_a, span_b)[ok], np.minimum(span_a, span_b)[ok]
    expected = np.where(c[ok] > top, 1.0, np.where(c[ok] < bottom, -1.0, 0.0))
    np.testing.assert_array_equal(position[ok], expected)
    np.testing.assert_array_equal(thickness[ok], (span_a - span_b)[ok])
    assert {-1.0, 0.0, 1.0} <= set(position[ok])  # the real series visits all three


def realized_vol_windows(c: np.ndarray, n: int) -> np.ndarray:
    r = np.log(c[1:] / c[:-1])
    out = np.full(len(c), np.nan)
    for i in range(n, len(c)):
        out[i] = math.sqrt(math.fsum(r[i - n : i] ** 2))
    return out


def test_volvol_reference(bars):
    c = bars["close"]
    tp, vp = 20, 10
    sigma = realized_vol_windows(c, tp)
    ref = np.full(len(c), np.nan)
    for i in range(tp + vp - 1, len(c)):
        ref[i] = float(np.std(sigma[i - vp + 1 : i + 1]))
    out = ind.volvol(c, tp, vp)
    assert_close(out, ref, floor=1e-6 * float(np.nanmedian(sigma)), rtol=1e-9)


def garch_reference(c: np.ndarray, omega: float, alpha: float, beta: float) -> np.ndarray:
    h = omega / (1.0 - alpha - beta)
    out = [math.nan]
    for prev, now in itertools.pairwise(c):
        r = math.log(now / prev)
        h = omega + alpha * r * r + beta * h
        out.append(math.sqrt(h))
    return np.array(out)


def test_garch_recursion_reference(bars):
    c = bars["close"]
    params = {"omega": 2e-9, "alpha": 0.07, "beta": 0.9}
    assert_close(ind.garch(c, **params), garch_reference(c, **params), rtol=1e-13)


def simulate_garch(n: int, omega: float, alpha: float, beta: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = omega / (1.0 - alpha - beta)
    r = np.empty(n)
    for i in range(n):
        r[i] = math.sqrt(h) * rng.standard_normal()
        h = omega + alpha * r[i] ** 2 + beta * h
    return 100.0 * np.exp(np.cumsum(np.r_[0.0, r]))


def test_garch_fit_recovers_simulated_parameters():
    true = {"omega": 2e-6, "alpha": 0.1, "beta": 0.85}
    prices = simulate_garch(20_000, **true, seed=11)
    fit = ind.garch_fit(prices)
    assert fit.n_returns == 20_000
    assert abs(fit.alpha - true["alpha"]) < 0.03
    assert abs(fit.beta - true["beta"]) < 0.05
    assert fit.omega == pytest.approx(true["omega"], rel=0.5)
    # A maximum: no worse than the true parameters, or than constant variance.
    assert fit.log_likelihood >= ind.garch_log_likelihood(prices, **true) - 1e-6
    st = ind.garch_state(fit.omega, fit.alpha, fit.beta)
    assert np.isfinite([ind.garch_update(st, p) for p in prices[:10]][1:]).all()


def test_garch_fit_on_real_bars_beats_constant_variance(btc_bars):
    c = btc_bars["close"]
    fit = ind.garch_fit(c)
    assert fit.alpha + fit.beta < 1.0
    r = np.diff(np.log(c))
    flat = ind.garch_log_likelihood(c, omega=float(np.mean(r * r)), alpha=0.0, beta=0.0)
    assert fit.log_likelihood >= flat - 1e-6
    # Parameters fitted offline drive the online kernel, bar by bar.
    online = ind.IndicatorSet([ind.spec("garch", bar_ns=SECOND, **_garch_params(fit))])
    assert online.names == (online.specs[0].value_label,)


def _garch_params(fit: ind.GarchFit) -> dict[str, float]:
    return {"omega": fit.omega, "alpha": fit.alpha, "beta": fit.beta}


def test_garch_rejects_non_stationary_parameters():
    with pytest.raises(ValueError, match="alpha \\+ beta < 1"):
        ind.garch_state(1e-6, 0.5, 0.5)


# --- trade flow -------------------------------------------------------------------------


def test_cvd_reference(btc):
    ts, q, side = btc["t_ts"], btc["t_qty"], btc["t_side"].astype(np.float64)
    signed = side * q
    assert_close(ind.cvd(ts, q, side), np.cumsum(signed), floor=1e-9 * q.sum(), rtol=1e-9)
    minute = 60 * SECOND
    out = ind.cvd(ts, q, side, session_ns=minute)
    sid = ts // minute
    for s in np.unique(sid):
        m = sid == s
        ref = [math.fsum(signed[m][: i + 1]) for i in range(m.sum())]
        assert_close(out[m], ref, floor=1e-12, rtol=1e-12)


def test_kyle_lambda_reference(btc):
    p, q, side = btc["t_price"], btc["t_qty"], btc["t_side"].astype(np.float64)
    n = 200
    dp = np.diff(p)
    x = (side * q)[1:]
    ref = np.full(len(p), np.nan)
    for i in range(n, len(p)):
        xs, ys = x[i - n : i], dp[i - n : i]
        xc = xs - xs.mean()
        ref[i] = float(np.dot(xc, ys - ys.mean()) / np.dot(xc, xc))
    out = ind.kyle_lambda(p, q, side, n)
    assert_close(out, ref, floor=1e-6 * float(np.nanmedian(np.abs(ref))), rtol=1e-7)
    # Buying pushes the price up: the impact is positive on this capture.
    assert np.nanmedian(out) > 0.0


# --- the book ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def book_snapshots() -> dict[str, np.ndarray]:
    """The best 20 levels a side after every applied diff of the BTCUSDT capture."""
    _require(BTC)
    book = OrderBook("BTCUSDT")
    sync = BookSync(book)
    stats = CaptureStats()
    rows: list[tuple[np.ndarray, ...]] = []

    def take() -> None:
        if book.level_count(Side.BID) >= 20 and book.level_count(Side.ASK) >= 20:
            rows.append((*book.levels(Side.BID, 20), *book.levels(Side.ASK, 20)))

    for line in open_capture(BTC):
        if b'"lastUpdateId"' in line:
            sync.on_snapshot(decode_snapshot(line[line.find(b"{") :]))
            take()
        elif b"@depth" in line:
            parsed = parse_line(line, stats)
            assert parsed is not None and isinstance(parsed[1], DepthUpdate)
            if sync.on_diff(parsed[1]) is ApplyResult.APPLIED:
                take()
    assert len(rows) > 5000
    bp, bq, ap, aq = (np.array(c) for c in zip(*rows, strict=True))
    return {"bid_px": bp, "bid_qty": bq, "ask_px": ap, "ask_qty": aq}


def test_book_depth_reference(book_snapshots):
    b = book_snapshots
    bid, ask = ind.book_depth(b["bid_px"], b["bid_qty"], b["ask_px"], b["ask_qty"], bps=2.0)
    for i in range(0, len(bid), 7):
        mid = (b["bid_px"][i, 0] + b["ask_px"][i, 0]) / 2
        near_b = b["bid_px"][i] >= mid * (1 - 2e-4)
        near_a = b["ask_px"][i] <= mid * (1 + 2e-4)
        assert bid[i] == pytest.approx(math.fsum(b["bid_qty"][i][near_b]), rel=1e-12, abs=1e-12)
        assert ask[i] == pytest.approx(math.fsum(b["ask_qty"][i][near_a]), rel=1e-12, abs=1e-12)
    assert np.all(bid > 0.0) and np.all(ask > 0.0)


def spoofing_reference(
    snaps: list[tuple[np.ndarray, ...]], near_bps: float, large: float, n: int
) -> np.ndarray:
    """The module docstring's rules, level by level with dicts, windows by deque sums."""
    out = np.full((2, len(snaps)), np.nan)
    window: deque[tuple[float, float]] = deque(maxlen=n)
    for i in range(1, len(snaps)):
        bp0, bq0, ap0, aq0 = snaps[i - 1]
        bp1, bq1, ap1, aq1 = snaps[i]
        m0 = (bp0[0] + ap0[0]) / 2
        m1 = (bp1[0] + ap1[0]) / 2
        pulled = [0.0, 0.0]
        for side, (p0, q0, p1, q1), moved, behind, seen in (
            (0, (bp0, bq0, bp1, bq1), m1 < m0, lambda p, s: p < s[0], lambda p, s: p >= s[-1]),
            (1, (ap0, aq0, ap1, aq1), m1 > m0, lambda p, s: p > s[0], lambda p, s: p <= s[-1]),
        ):
            if not moved:
                continue
            now = dict(zip(p1.tolist(), q1.tolist(), strict=True))
            threshold = large * (sum(q0.tolist()) / len(q0))
            for p, q in zip(p0.tolist(), q0.tolist(), strict=True):
                near = abs(m0 - p) <= near_bps * 1e-4 * m0
                if q >= threshold and near and behind(p, p1) and seen(p, p1):
                    pulled[side] += max(q - now.get(p, 0.0), 0.0)
        window.append((pulled[0], pulled[1]))
        if len(window) == n:
            out[:, i] = [math.fsum(w[0] for w in window), math.fsum(w[1] for w in window)]
    return out


def test_spoofing_reference_on_the_capture(book_snapshots):
    b = book_snapshots
    k = 3000
    snaps = [tuple(b[f][i] for f in ("bid_px", "bid_qty", "ask_px", "ask_qty")) for i in range(k)]
    params = {"levels": 20, "near_bps": 3.0, "large": 3.0, "timeperiod": 50}
    ours = np.array(
        ind.spoofing(*(b[f][:k] for f in ("bid_px", "bid_qty", "ask_px", "ask_qty")), **params)
    )
    ref = spoofing_reference(snaps, params["near_bps"], params["large"], params["timeperiod"])
    assert_close(ours, ref, floor=1e-6, rtol=1e-9)
    # The capture has pulls on both sides, so the comparison is not all zeros.
    assert np.nanmax(ref[0]) > 0.0 and np.nanmax(ref[1]) > 0.0


def _snap(
    bids: list[tuple[float, float]], asks: list[tuple[float, float]]
) -> tuple[np.ndarray, ...]:
    return (
        np.array([p for p, _ in bids]),
        np.array([q for _, q in bids]),
        np.array([p for p, _ in asks]),
        np.array([q for _, q in asks]),
    )


def _pulled_after(first: tuple, second: tuple) -> tuple[float, float]:
    s = ind.IndicatorSet([ind.spec("spoofing", levels=5, near_bps=50.0, large=3.0, timeperiod=1)])
    s.update_book(*first)
    v = s.update_book(*second)
    return float(v[0]), float(v[1])


BIDS = [(100.0, 1.0), (99.9, 1.0), (99.8, 1.0), (99.7, 40.0), (99.6, 1.0)]
ASKS = [(100.1, 1.0), (100.2, 1.0), (100.3, 1.0), (100.4, 1.0), (100.5, 1.0)]


def test_spoofing_counts_a_large_bid_pulled_as_the_price_falls():
    # The touch drops to 99.8: the 40-lot bid at 99.7 is now one tick away, and vanishes.
    second = _snap([(99.8, 1.0), (99.6, 1.0), (99.5, 1.0)], [(99.9, 1.0), (100.0, 1.0)])
    assert _pulled_after(_snap(BIDS, ASKS), second) == (40.0, 0.0)


@pytest.mark.parametrize(
    "second",
    [
        # Traded through: the touch is at or below 99.7, fills may explain the size.
        _snap([(99.6, 1.0), (99.5, 1.0)], [(99.7, 1.0), (99.8, 1.0)]),
        # Reached: 99.7 is the new touch, so sellers may have filled part of it.
        _snap([(99.7, 10.0), (99.6, 1.0)], [(99.75, 1.0), (99.8, 1.0)]),
        # The price moved away (up): a withdrawal, but not as the price approached.
        _snap([(100.1, 1.0), (99.6, 1.0)], [(100.2, 1.0), (100.3, 1.0)]),
        # Still resting in full.
        _snap([(99.8, 1.0), (99.7, 40.0), (99.6, 1.0)], [(99.9, 1.0), (100.0, 1.0)]),
        # Out of view: the new snapshot ends above 99.7, so absence says nothing.
        _snap([(99.85, 1.0), (99.8, 1.0)], [(99.9, 1.0), (100.0, 1.0)]),
    ],
)
def test_spoofing_ignores_what_is_not_a_pull(second):
    assert _pulled_after(_snap(BIDS, ASKS), second) == (0.0, 0.0)


def test_spoofing_ignores_small_orders():
    small = [(p, 1.0) for p, _q in BIDS]
    second = _snap([(99.8, 1.0), (99.6, 1.0), (99.5, 1.0)], [(99.9, 1.0), (100.0, 1.0)])
    assert _pulled_after(_snap(small, ASKS), second) == (0.0, 0.0)


def test_book_fed_set_equals_batch(book_snapshots):
    b = book_snapshots
    k = 2000
    s = ind.IndicatorSet(
        [
            ind.spec("book_depth", bps=5.0),
            ind.spec("spoofing", levels=10, near_bps=3.0, large=3.0, timeperiod=20),
            ind.spec("book_imbalance_n", levels=5),
        ]
    )
    rows = np.array(
        [
            s.update_book(b["bid_px"][i], b["bid_qty"][i], b["ask_px"][i], b["ask_qty"][i]).copy()
            for i in range(k)
        ]
    )
    cols = [b[f][:k] for f in ("bid_px", "bid_qty", "ask_px", "ask_qty")]
    np.testing.assert_array_equal(rows[:, :2].T, np.array(ind.book_depth(*cols, bps=5.0)))
    spoof = ind.spoofing(*cols, levels=10, near_bps=3.0, large=3.0, timeperiod=20)
    np.testing.assert_array_equal(rows[:, 2:4].T, np.array(spoof))
    np.testing.assert_array_equal(rows[:, 4], ind.book_imbalance_n(cols[1], cols[3], levels=5))

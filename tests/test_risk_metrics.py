"""Risk metrics against closed forms and hand computations."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from engine.risk import (
    RiskMetrics,
    historical_cvar,
    historical_var,
    parametric_cvar,
    parametric_var,
    profit_factor,
    sharpe_ratio,
    sortino_ratio,
)


def test_historical_var_and_cvar_on_a_known_sample():
    r = np.arange(1, 101, dtype=float) / 1000.0 - 0.05  # -0.049 .. 0.05
    q = np.quantile(r, 0.05)
    assert historical_var(r, 0.95) == pytest.approx(-q)
    assert historical_cvar(r, 0.95) == pytest.approx(-r[r <= q].mean())
    assert historical_cvar(r, 0.95) >= historical_var(r, 0.95)


def test_parametric_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(7)
    r = rng.normal(0.001, 0.02, 200_000)
    mu, sd = r.mean(), r.std(ddof=1)
    z = NormalDist().inv_cdf(0.99)
    assert parametric_var(r, 0.99) == pytest.approx(-(mu - z * sd))
    expected_cvar = -(mu - sd * math.exp(-z * z / 2) / math.sqrt(2 * math.pi) / 0.01)
    assert parametric_cvar(r, 0.99) == pytest.approx(expected_cvar)
    # On Gaussian data the historical figures agree with the parametric ones.
    assert historical_var(r, 0.99) == pytest.approx(parametric_var(r, 0.99), rel=0.03)
    assert historical_cvar(r, 0.99) == pytest.approx(parametric_cvar(r, 0.99), rel=0.03)


def test_ratios_and_profit_factor():
    r = np.array([0.01, -0.02, 0.03, 0.0])
    assert sharpe_ratio(r) == pytest.approx(r.mean() / r.std(ddof=1))
    assert sortino_ratio(r) == pytest.approx(r.mean() / math.sqrt((0.02**2) / 4))
    assert profit_factor([3.0, -1.0, 2.0, -4.0]) == pytest.approx(1.0)
    assert profit_factor([1.0]) is None
    assert sharpe_ratio(np.array([0.1])) is None


def test_equity_curve_drawdown_and_returns():
    m = RiskMetrics(capital=100.0, step_ns=10**9)
    for e in (0.0, 10.0, 4.0, 12.0, 6.0):
        m.record_equity(e)
    assert m.max_drawdown == pytest.approx(6.0)
    assert m.max_drawdown_pct == pytest.approx(6.0 / 110.0)
    np.testing.assert_allclose(m.returns(), [0.0, 0.1, -6 / 110, 8 / 104, -6 / 112])
    summary = m.summary()
    assert summary["steps"] == 5 and summary["var_hist_95"] is not None


def _curve(n: int, seed: int) -> list[float]:
    """A random walk of mark-to-market PnL with a drift, as the risk actor records it."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0.05, 3.0, n)).tolist()


def _whole_curve_returns(equity: list[float], capital: float) -> np.ndarray:
    """The returns of the whole curve, as the unbounded implementation computed them."""
    e = np.asarray([0.0, *equity])
    return np.diff(e) / (capital + e[:-1])


def _fed(equity: list[float], pnls: list[float], window: int) -> RiskMetrics:
    m = RiskMetrics(capital=1_000.0, step_ns=250_000_000, window=window)
    for e in equity:
        m.record_equity(e)
    for p in pnls:
        m.record_trade(p)
    return m


def test_summary_is_exactly_the_whole_curve_while_the_window_holds_it():
    equity = _curve(700, seed=3)
    pnls = [1.5, -0.25, 3.0, -2.0, 0.0, -0.125]
    m = _fed(equity, pnls, window=700)
    r = _whole_curve_returns(equity, 1_000.0)
    s = m.summary()
    np.testing.assert_array_equal(m.returns(), r)
    assert s["steps"] == s["hist_steps"] == 700 and s["trades"] == 6
    for level, tag in ((0.95, "95"), (0.99, "99")):
        assert s[f"var_hist_{tag}"] == historical_var(r, level)
        assert s[f"cvar_hist_{tag}"] == historical_cvar(r, level)
        assert s[f"var_param_{tag}"] == parametric_var(r, level)
        assert s[f"cvar_param_{tag}"] == parametric_cvar(r, level)
    assert s["sharpe_per_step"] == sharpe_ratio(r)
    assert s["sortino_per_step"] == sortino_ratio(r)
    assert s["profit_factor"] == profit_factor(pnls)


def test_past_the_window_quantiles_use_the_latest_steps_and_the_rest_the_whole_run():
    equity = _curve(5_000, seed=4)
    m = _fed(equity, [], window=500)
    r = _whole_curve_returns(equity, 1_000.0)
    s = m.summary()
    assert s["steps"] == 5_000 and s["hist_steps"] == 500
    np.testing.assert_array_equal(m.returns(), r[-500:])  # the ring, oldest first
    for level, tag in ((0.95, "95"), (0.99, "99")):
        assert s[f"var_hist_{tag}"] == historical_var(r[-500:], level)
        assert s[f"cvar_hist_{tag}"] == historical_cvar(r[-500:], level)
        # Running sums over the whole run: the whole curve's figures, to rounding.
        assert s[f"var_param_{tag}"] == pytest.approx(parametric_var(r, level), rel=1e-9)
        assert s[f"cvar_param_{tag}"] == pytest.approx(parametric_cvar(r, level), rel=1e-9)
    assert s["sharpe_per_step"] == pytest.approx(sharpe_ratio(r), rel=1e-9)
    assert s["sortino_per_step"] == pytest.approx(sortino_ratio(r), rel=1e-9)
    # Drawdown from the running peak covers the whole run, exactly.
    e = np.asarray([0.0, *equity])
    peak = np.maximum.accumulate(e)
    assert s["max_drawdown"] == float((peak - e).max())
    assert s["max_drawdown_pct"] == pytest.approx(float(((peak - e) / (1_000.0 + peak)).max()))


def test_running_moments_stay_accurate_on_a_long_steady_curve():
    # Steady compounding with little noise: the mean return is 1000 standard deviations.
    # sum(r^2) / n - mean^2 loses digits of the variance there (4e-9 relative on this
    # curve); Welford's update keeps them (4e-14).
    rng = np.random.default_rng(5)
    growth = np.cumprod(1.0 + 1e-5 + rng.normal(0.0, 1e-8, 200_000))
    equity = (1_000.0 * growth - 1_000.0).tolist()
    m = _fed(equity, [], window=2)
    r = _whole_curve_returns(equity, 1_000.0)
    assert sharpe_ratio(r) > 500
    assert m.summary()["sharpe_per_step"] == pytest.approx(sharpe_ratio(r), rel=1e-11)


def test_memory_stays_flat_however_long_the_run():
    import tracemalloc

    m = RiskMetrics(capital=1_000.0, step_ns=10_000_000, window=1_000)
    equity = _curve(200_000, seed=6)
    for e in equity[:2_000]:  # fill the window
        m.record_equity(e)
        m.record_trade(e * 1e-3)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for e in equity[2_000:]:
            m.record_equity(e)
            m.record_trade(e * 1e-3)
        m.summary()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # An equity list grew 8 B a step plus the float (32 B): ~6 MB over these steps.
    assert grown < 16_000

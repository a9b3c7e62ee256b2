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

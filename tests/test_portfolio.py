"""Portfolio problems against closed forms and independent solutions on small cases."""

from __future__ import annotations

import numpy as np
import pytest

from engine.portfolio import (
    Constraints,
    Objective,
    Optimizer,
    PortfolioError,
    risk_contributions,
    shrunk_covariance,
)

FREE = Constraints(max_weight=10.0, leverage=10.0, long_only=False)


def returns(n: int, periods: int = 400, seed: int = 1, corr: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vols = np.linspace(0.01, 0.03, n)
    c = np.full((n, n), corr) + (1 - corr) * np.eye(n)
    cov = np.outer(vols, vols) * c
    return rng.multivariate_normal(np.linspace(-1e-3, 2e-3, n), cov, size=periods)


def test_two_asset_minimum_variance_closed_form():
    r = returns(2)
    s = shrunk_covariance(r)
    w1 = (s[1, 1] - s[0, 1]) / (s[0, 0] + s[1, 1] - 2 * s[0, 1])
    got = Optimizer(2, Objective.MIN_VARIANCE, FREE).solve(r).weights
    np.testing.assert_allclose(got, [w1, 1 - w1], atol=1e-5)


def test_mean_variance_matches_the_lagrangian_solution():
    r = returns(4)
    gamma = 50.0
    s = shrunk_covariance(r)
    mu = r.mean(axis=0)
    inv = np.linalg.inv(s)
    ones = np.ones(4)
    a = inv @ mu / (2 * gamma)
    expected = a + inv @ ones * (1 - ones @ a) / (ones @ inv @ ones)
    got = Optimizer(4, Objective.MEAN_VARIANCE, FREE, risk_aversion=gamma).solve(r).weights
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_risk_parity_two_assets_and_equal_contributions():
    r = returns(2, corr=0.5)
    s = shrunk_covariance(r)
    vol = np.sqrt(np.diag(s))
    got = Optimizer(2, Objective.RISK_PARITY).solve(r).weights
    # With two assets, equal risk contribution gives w_i proportional to 1/vol_i.
    # (Clarabel's exponential-cone accuracy leaves ~2e-6 here.)
    np.testing.assert_allclose(got, [vol[1], vol[0]] / vol.sum(), atol=1e-5)
    r5 = returns(5)
    w5 = Optimizer(5, Objective.RISK_PARITY).solve(r5).weights
    np.testing.assert_allclose(risk_contributions(w5, shrunk_covariance(r5)), 0.2, atol=1e-5)


def test_equal_volatility_uncorrelated_risk_parity_is_equal_weight():
    rng = np.random.default_rng(3)
    r = rng.normal(0, 0.01, (20_000, 3))
    w = Optimizer(3, Objective.RISK_PARITY).solve(r).weights
    np.testing.assert_allclose(w, 1 / 3, atol=0.01)


def empirical_cvar(losses: np.ndarray, beta: float) -> float:
    k = round((1 - beta) * losses.shape[0])
    return float(np.sort(losses)[-k:].mean())


def test_cvar_minimisation_against_a_brute_force_grid():
    r = returns(2, periods=200, seed=5)
    beta = 0.95
    grid = np.linspace(0, 1, 2001)
    cvars = [empirical_cvar(-(r @ np.array([g, 1 - g])), beta) for g in grid]
    best = grid[int(np.argmin(cvars))]
    opt = Optimizer(2, Objective.MIN_CVAR, Constraints(), cvar_beta=beta, periods=200)
    w = opt.solve(r).weights
    assert empirical_cvar(-(r @ w), beta) <= min(cvars) + 1e-9
    assert w[0] == pytest.approx(best, abs=2e-3)


def test_constraints_bind():
    r = returns(4)
    c = Constraints(max_weight=0.3, leverage=1.0, long_only=True)
    for objective in (Objective.MIN_VARIANCE, Objective.MEAN_VARIANCE, Objective.MIN_CVAR):
        w = Optimizer(4, objective, c, periods=400).solve(r).weights
        assert w.sum() == pytest.approx(1.0, abs=1e-6)
        assert np.all(w <= 0.3 + 1e-6) and np.all(w >= -1e-6)


def test_bad_input_is_a_portfolio_error():
    opt = Optimizer(3, Objective.MIN_VARIANCE)
    with pytest.raises(PortfolioError, match="NaN"):
        opt.solve(np.full((10, 3), np.nan))
    with pytest.raises(PortfolioError, match="returns must be"):
        opt.solve(np.zeros((10, 2)))
    infeasible = Optimizer(3, Objective.MIN_VARIANCE, Constraints(max_weight=0.2))
    with pytest.raises(PortfolioError, match="status"):
        infeasible.solve(returns(3))


# -- the actor in a multi-symbol replay ------------------------------------------------

FAST = {
    "strategy": {"sample_ms": 200, "fast": 3, "slow": 8, "rsi_period": 5, "max_hold_ms": 3000},
    "replay": {"step_ms": 50},
}


def replay_with_budget(tmp_path, data, budget: float):
    import trio

    from engine.testing import replay, replay_config

    config = replay_config(
        tmp_path,
        [data],
        portfolio={"every_steps": 20, "min_periods": 20, "exposure_budget": budget},
        **FAST,
    )
    return trio.run(replay, config)


def test_portfolio_limits_bound_entries_in_a_four_symbol_replay(tmp_path, cryptofeed_dir):
    tight = replay_with_budget(tmp_path / "tight", cryptofeed_dir, 3000.0)
    loose = replay_with_budget(tmp_path / "loose", cryptofeed_dir, 40_000.0)
    for report in (tight, loose):
        assert report.portfolio["solves"] > 0 and report.portfolio["failures"] == 0
        assert set(report.portfolio["last_limits"]) == set(report.symbols)
    limits = tight.portfolio["last_limits"]
    assert all(limit < 1000.0 for limit in limits.values())  # below one 1000 USDT entry
    # Once limits are in force, every entry is denied by them; before, some trade.
    assert tight.denied.get("portfolio_limit", 0) > 0
    assert loose.denied.get("portfolio_limit", 0) == 0
    assert loose.fills > tight.fills

"""The solver status policy: replay-sized returns, inaccurate solutions, solver limits.

pytest runs with warnings as errors: cvxpy's "Solution may be inaccurate" warning
crashed the portfolio actor of 2-symbol replays. These inputs reproduce it.
"""

from __future__ import annotations

import numpy as np
import pytest
import structlog

from engine._config import PortfolioSection
from engine.messages import PortfolioRequest
from engine.portfolio import (
    Constraints,
    Objective,
    Optimizer,
    PortfolioActor,
    PortfolioError,
    risk_contributions,
    shrunk_covariance,
)
from engine.portfolio._optimize import _SOLVER_OPTIONS

DEFAULT = Constraints(max_weight=0.6, leverage=1.0, long_only=True)  # [portfolio] defaults


def replay_like(seed: int) -> np.ndarray:
    """Per-step returns of two symbols as a replay sees them: tiny (1e-7 to 1e-2),
    many steps without a price change, sometimes one symbol a multiple of the other.
    (Seeds 202 and 23 are two of those that made the solver stop at its reduced
    tolerances before the data were scaled.)"""
    rng = np.random.default_rng(seed)
    periods = int(rng.integers(40, 241))
    scale = 10.0 ** rng.uniform(-7, -2)
    r = rng.normal(0, scale, (periods, 2))
    r[rng.random((periods, 2)) < rng.uniform(0, 0.98)] = 0.0
    if rng.random() < 0.3:
        r[:, 1] = r[:, 0] * rng.uniform(0.5, 2)
    return r


def test_replay_sized_returns_solve_accurately_without_a_warning():
    # Covariance ~1e-10, at the solver's absolute tolerance: the solve warned
    # "Solution may be inaccurate" (an error here) and stopped at 0.485 / 0.515.
    r = replay_like(202)
    s = shrunk_covariance(r)
    assert s.max() < 1e-8  # the scale that caused it
    solution = Optimizer(2, Objective.MIN_VARIANCE, DEFAULT).solve(r)
    assert (solution.status, solution.accurate) == ("optimal", True)
    # Closed form of two assets, clipped to the weight cap (0.6 each, so [0.4, 0.6]).
    w0 = (s[1, 1] - s[0, 1]) / (s[0, 0] + s[1, 1] - 2 * s[0, 1])
    np.testing.assert_allclose(solution.weights, [min(max(w0, 0.4), 0.6), 1 - min(w0, 0.6)])


def test_tiny_collinear_returns_find_the_true_minimum():
    # A wrong point passed for "optimal": w' S w ~ 1e-10 is under tol_gap_abs, so any
    # feasible weights met the gap. The second symbol moves 1.6x the first: the
    # minimum variance puts the cap (0.6) on the first.
    rng = np.random.default_rng(7)
    first = rng.normal(0, 1.6e-5, 80)
    first[rng.random(80) < 0.5] = 0.0
    r = np.c_[first, 1.6 * first]
    solution = Optimizer(2, Objective.MIN_VARIANCE, DEFAULT).solve(r)
    np.testing.assert_allclose(solution.weights, [0.6, 0.4], atol=1e-7)
    assert solution.accurate


@pytest.mark.parametrize(
    "objective", [Objective.MIN_VARIANCE, Objective.RISK_PARITY, Objective.MIN_CVAR]
)
def test_scaling_the_returns_does_not_change_the_weights(objective):
    # True of these three problems, so the solver's answer must not move either.
    # (Mean-variance is not scale-free; test_portfolio checks it against its closed
    # form, with the data normalised inside.)
    rng = np.random.default_rng(11)
    r = rng.multivariate_normal([1e-3, -5e-4, 2e-3], np.diag([1e-4, 4e-4, 9e-4]), 300)
    opt = Optimizer(3, objective, DEFAULT, risk_aversion=20.0, periods=300)
    base = opt.solve(r).weights
    for factor in (1e-4, 1e3):
        np.testing.assert_allclose(opt.solve(r * factor).weights, base, atol=1e-5)


def test_an_inaccurate_solution_that_meets_the_constraints_is_used_and_flagged():
    r = replay_like(23)
    solution = Optimizer(2, Objective.RISK_PARITY, DEFAULT).solve(r)
    if solution.status != "optimal_inaccurate":
        pytest.fail("the solver now solves this input accurately: find another one")
    assert not solution.accurate
    # Still the right answer, to the reduced tolerance: equal risk contributions.
    s = shrunk_covariance(r)
    np.testing.assert_allclose(risk_contributions(solution.weights, s), 0.5, atol=1e-5)


def test_an_inaccurate_solution_that_misses_a_constraint_is_refused():
    # Stopped after two iterations, accepted by loose reduced tolerances: the
    # weights are not a portfolio yet.
    r = np.random.default_rng(1).normal(0, 0.01, (200, 3))
    loose = {f"reduced_tol_{k}": 1.0 for k in ("feas", "gap_abs", "gap_rel", "ktratio")}
    opt = Optimizer(
        3,
        Objective.MEAN_VARIANCE,
        DEFAULT,
        solver_options={**_SOLVER_OPTIONS, "max_iter": 2, **loose},
    )
    with pytest.raises(PortfolioError, match="optimal_inaccurate and the weights miss"):
        opt.solve(r)


def test_an_iteration_limit_is_a_portfolio_error_not_a_warning():
    r = np.random.default_rng(1).normal(0, 0.01, (200, 3))
    opt = Optimizer(
        3, Objective.MIN_VARIANCE, DEFAULT, solver_options={**_SOLVER_OPTIONS, "max_iter": 1}
    )
    with pytest.raises(PortfolioError, match="solver status user_limit"):
        opt.solve(r)


def test_the_actor_counts_and_logs_an_inaccurate_solve():
    logged = []

    def capture(_logger, _method, event_dict):
        logged.append(dict(event_dict))
        raise structlog.DropEvent

    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[capture])
    actor = PortfolioActor(
        config=PortfolioSection(objective="risk_parity"), requests=None, answers=None, log=log
    )
    request = PortfolioRequest(step=40, symbols=("BTCUSDT", "ETHUSDT"), returns=replay_like(23))
    answer = actor.solve(request)
    assert answer.status == "optimal_inaccurate"
    assert set(answer.limits) == {"BTCUSDT", "ETHUSDT"}  # used, not dropped
    summary = actor.stats.summary()
    assert (summary["solves"], summary["inaccurate"], summary["failures"]) == (1, 1, 0)
    (line,) = [e for e in logged if e["event"] == "portfolio limits"]
    assert line["status"] == "optimal_inaccurate"

"""Portfolio optimisation on cvxpy: minimum variance, mean-variance, risk parity, CVaR.

All problems take a matrix of per-period returns (rows: periods, columns:
symbols). The covariance is Ledoit-Wolf shrunk (scikit-learn). Constraints,
where the problem allows them: weights sum to 1, ``|w_i| <= max_weight``, gross
leverage ``sum |w_i| <= leverage``, and ``w >= 0`` when ``long_only``.

- minimum variance: ``min w' S w``;
- mean-variance: ``max mu' w - gamma w' S w``;
- risk parity (equal risk contribution), Spinu's convex form:
  ``min 1/2 y' S y - sum_i b_i log y_i`` over ``y > 0``, ``w = y / sum(y)``
  (long-only by construction; weight caps and leverage do not apply);
- CVaR minimisation (Rockafellar-Uryasev):
  ``min a + 1 / ((1 - beta) T) sum_t u_t`` with ``u_t >= -r_t' w - a``, ``u >= 0``.

Each solve builds the problem with the data as constants: measured here, that
beats a DPP-parametrised problem (a covariance factor parameter costs a dense
n x n parameter tensor: 850 ms to re-solve for 200 assets, against ~40 ms fresh).

The data are scaled to unit average variance before the solve. Per-step returns of
a replay are ~1e-5, so their covariance (~1e-10) sat at the solver's absolute
tolerances: a wrong point passed for optimal, or the solver stopped at its reduced
tolerances ("Solution may be inaccurate"). No problem's weights change under a
positive scaling of its data (mean-variance scales mean and covariance alike).

Solver status policy (deliberate, not a warning filter):

- ``optimal``: the weights are used;
- ``optimal_inaccurate`` (Clarabel's ``AlmostSolved``: it met its reduced
  tolerances only): the weights are used if they are finite and meet every
  constraint to ``FEASIBILITY_TOL``; the solution says so (``accurate`` is False,
  ``status`` is ``optimal_inaccurate``) and the portfolio actor counts and logs it.
  An inaccurate point that breaks a constraint is a :class:`PortfolioError`;
- anything else (infeasible, iteration limit, solver error) is a
  :class:`PortfolioError`; the portfolio actor answers with no limits and risk
  keeps the last good ones.

cvxpy's ``Problem.solve`` warns (``UserWarning``) on every inaccurate status, which
under warnings-as-errors crashed the solve inside the portfolio actor; the solve
goes through cvxpy's solving chain instead, which returns the status without
warning, and the policy above decides.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping

import attrs
import cvxpy as cp
import numpy as np
from sklearn.covariance import ledoit_wolf

from .._errors import EngineError


class PortfolioError(EngineError):
    """The optimiser failed (solver status not optimal, or bad input)."""


class Objective(enum.Enum):
    """Which portfolio problem to solve."""

    MIN_VARIANCE = "min_variance"
    MEAN_VARIANCE = "mean_variance"
    RISK_PARITY = "risk_parity"
    MIN_CVAR = "min_cvar"


@attrs.frozen(kw_only=True)
class Constraints:
    """Bounds on the weights."""

    max_weight: float = 1.0
    leverage: float = 1.0
    long_only: bool = True


FEASIBILITY_TOL = 1e-6
"""How far an inaccurate solution's weights may miss a constraint and still be used."""


@attrs.frozen(kw_only=True)
class Solution:
    """Optimal weights and how they were found.

    ``accurate`` is False when the solver met only its reduced tolerances
    (``status`` ``optimal_inaccurate``; see the module's status policy).
    """

    weights: np.ndarray
    objective: Objective
    status: str
    solve_seconds: float
    accurate: bool = True


def shrunk_covariance(returns: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf covariance of the columns of ``returns``.

    The function, not the ``LedoitWolf`` estimator: the estimator also inverts the
    matrix (``store_precision``), several times the cost for 200 assets.
    """
    covariance, _shrinkage = ledoit_wolf(returns)
    return covariance


class Optimizer:
    """Solves one kind of problem for ``n`` assets; call :meth:`solve` with new data.

    Args:
        n: number of assets.
        objective: the problem.
        constraints: weight bounds (ignored by risk parity).
        risk_aversion: ``gamma`` of mean-variance.
        cvar_beta: confidence level of CVaR minimisation.
        periods: accepted for compatibility; CVaR uses however many rows it gets.
        solver_options: Clarabel settings (default: this module's tight tolerances).
    """

    def __init__(
        self,
        n: int,
        objective: Objective,
        constraints: Constraints = Constraints(),
        *,
        risk_aversion: float = 1.0,
        cvar_beta: float = 0.95,
        periods: int = 0,
        solver_options: Mapping[str, object] | None = None,
    ) -> None:
        if n < 1:
            raise PortfolioError("need at least one asset")
        self.n = n
        self.objective = objective
        self.constraints = constraints
        self.risk_aversion = risk_aversion
        self.cvar_beta = cvar_beta
        self.solver_options = dict(_SOLVER_OPTIONS if solver_options is None else solver_options)

    def _bounds(self, w: cp.Variable) -> list[cp.Constraint]:
        c = self.constraints
        bounds = [cp.sum(w) == 1, cp.abs(w) <= c.max_weight, cp.norm1(w) <= c.leverage]
        if c.long_only:
            bounds.append(w >= 0)
        return bounds

    def _problem(
        self, r: np.ndarray, cov: np.ndarray, budgets: np.ndarray
    ) -> tuple[cp.Problem, cp.Variable]:
        n = self.n
        # psd_wrap: the shrunk estimate is PSD by construction; skip cvxpy's eigen-check.
        s = cp.psd_wrap(cov)
        if self.objective is Objective.RISK_PARITY:
            y = cp.Variable(n, pos=True)
            risk = 0.5 * cp.quad_form(y, s) - budgets @ cp.log(y)
            return cp.Problem(cp.Minimize(risk)), y
        w = cp.Variable(n)
        if self.objective is Objective.MIN_VARIANCE:
            return cp.Problem(cp.Minimize(cp.quad_form(w, s)), self._bounds(w)), w
        if self.objective is Objective.MEAN_VARIANCE:
            utility = r.mean(axis=0) @ w - self.risk_aversion * cp.quad_form(w, s)
            return cp.Problem(cp.Maximize(utility), self._bounds(w)), w
        periods = r.shape[0]
        alpha = cp.Variable()
        u = cp.Variable(periods, nonneg=True)
        tail = alpha + cp.sum(u) / ((1.0 - self.cvar_beta) * periods)
        return cp.Problem(cp.Minimize(tail), [*self._bounds(w), u >= -r @ w - alpha]), w

    def solve(self, returns: np.ndarray, budgets: np.ndarray | None = None) -> Solution:
        """Solve for the given returns (rows: periods, columns: assets).

        Args:
            returns: per-period returns; CVaR uses them directly, the others
                through their Ledoit-Wolf covariance (and mean, for mean-variance).
            budgets: risk budgets for risk parity (default equal).

        Raises:
            PortfolioError: bad input or a solver failure.
        """
        r = np.asarray(returns, dtype=np.float64)
        if r.ndim != 2 or r.shape[1] != self.n or r.shape[0] < 2:
            raise PortfolioError(f"returns must be (periods >= 2, {self.n}), got {r.shape}")
        if not np.all(np.isfinite(r)):
            raise PortfolioError("returns contain NaN or inf")
        b = np.full(self.n, 1.0 / self.n) if budgets is None else np.asarray(budgets, float)
        started = time.perf_counter()
        cov = shrunk_covariance(r)
        # Unit average variance (see the module docstring); all-zero returns stay as they are.
        scale = float(np.trace(cov)) / self.n
        if scale > 0 and np.isfinite(scale):
            cov = cov / scale
            # Mean-variance weighs the mean against the variance: both scale alike.
            # CVaR is linear in the returns: any positive factor will do.
            mean_variance = self.objective is Objective.MEAN_VARIANCE
            r = r / (scale if mean_variance else np.sqrt(scale))
        problem, x = self._problem(r, cov, b)
        status = self._solve(problem)
        took = time.perf_counter() - started
        if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or x.value is None:
            raise PortfolioError(f"{self.objective.value}: solver status {status}")
        weights = np.asarray(x.value, dtype=np.float64)
        if self.objective is Objective.RISK_PARITY:
            weights = weights / weights.sum()
        accurate = status == cp.OPTIMAL
        if not accurate and (miss := self._violation(weights)) > FEASIBILITY_TOL:
            raise PortfolioError(
                f"{self.objective.value}: solver status {status} and the weights miss"
                f" a constraint by {miss:.3g}"
            )
        return Solution(
            weights=weights,
            objective=self.objective,
            status=status,
            solve_seconds=took,
            accurate=accurate,
        )

    def _solve(self, problem: cp.Problem) -> str:
        """Solve with Clarabel and return cvxpy's status (see the status policy).

        ``Problem.solve`` is this chain plus ``unpack_results``, which warns on the
        inaccurate statuses that the policy handles; ``unpack`` stores the values
        without the warning.

        Raises:
            PortfolioError: the solver failed.
        """
        try:
            options = dict(self.solver_options)
            data, chain, inverse = problem.get_problem_data(solver=cp.CLARABEL, solver_opts=options)
            raw = chain.solve_via_data(problem, data, solver_opts=options)
            solution = chain.invert(raw, inverse)
        except cp.error.SolverError as exc:
            raise PortfolioError(f"{self.objective.value}: solver failed ({exc})") from exc
        if solution.status in cp.settings.SOLUTION_PRESENT:
            problem.unpack(solution)
        return str(solution.status)

    def _violation(self, weights: np.ndarray) -> float:
        """By how much ``weights`` miss the problem's constraints (inf: not finite)."""
        if not np.all(np.isfinite(weights)):
            return float("inf")
        if self.objective is Objective.RISK_PARITY:
            return float(max(0.0, -weights.min()))  # normalised: only the sign can miss
        c = self.constraints
        misses = [
            abs(float(weights.sum()) - 1.0),
            float(np.abs(weights).max()) - c.max_weight,
            float(np.abs(weights).sum()) - c.leverage,
        ]
        if c.long_only:
            misses.append(-float(weights.min()))
        return max(0.0, *misses)


# Clarabel (interior point) for every problem: it handles the QPs, the LP of CVaR
# and the exponential cone of risk parity, to about 1e-8, in ~40 ms for 200 assets
# here; OSQP needed tolerances so tight to match that it was slower.
_SOLVER_OPTIONS: dict[str, object] = {
    "tol_gap_abs": 1e-10,
    "tol_gap_rel": 1e-10,
    "tol_feas": 1e-10,
    "tol_ktratio": 1e-8,
}


def risk_contributions(weights: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Each asset's share of portfolio variance: ``w_i (S w)_i / w' S w``."""
    marginal = cov @ weights
    return weights * marginal / float(weights @ marginal)

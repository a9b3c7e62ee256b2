"""Portfolio risk metrics from the equity curve and closed trades.

Returns are per replay step: ``r_t = (E_t - E_{t-1}) / (capital + E_{t-1})``
where ``E`` is mark-to-market PnL after fees. Formulas:

- historical VaR at level a: ``-quantile(r, 1 - a)`` (a loss, reported positive);
  historical CVaR: ``-mean(r[r <= quantile(r, 1 - a)])``;
- parametric (Gaussian) VaR: ``-(mu + sigma * z_{1-a})`` and CVaR
  ``-(mu - sigma * phi(z_a) / (1 - a))``;
- Sharpe: ``mean(r) / std(r)``; Sortino: ``mean(r) / sqrt(mean(min(r, 0)^2))``,
  both per step and annualised by ``sqrt(steps per year)``;
- profit factor: gross profit / gross loss of closed trades (realized PnL
  increments after fees);
- max drawdown: largest fall of ``E`` from its running peak, in quote currency and
  as a fraction of ``capital + peak``.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import attrs
import numpy as np

_YEAR_NS = 365.25 * 24 * 3600 * 1e9
_NORMAL = NormalDist()


@attrs.define
class RiskMetrics:
    """Accumulates the equity curve and closed-trade PnL; :meth:`summary` computes.

    Args:
        capital: starting equity, the base for returns.
        step_ns: market time per step (for annualising).
    """

    capital: float
    step_ns: int
    equity: list[float] = attrs.Factory(list)
    trade_pnls: list[float] = attrs.Factory(list)
    exposure: dict[str, float] = attrs.Factory(dict)
    peak: float = 0.0
    max_drawdown: float = 0.0
    max_drawdown_pct: float = 0.0

    def record_equity(self, equity: float) -> None:
        """Add the step's mark-to-market PnL (after fees)."""
        self.equity.append(equity)
        self.peak = max(self.peak, equity)
        dd = self.peak - equity
        self.max_drawdown = max(self.max_drawdown, dd)
        self.max_drawdown_pct = max(self.max_drawdown_pct, dd / (self.capital + self.peak))

    def record_trade(self, pnl: float) -> None:
        """Add a closed trade's (or partial close's) realized PnL after fees."""
        self.trade_pnls.append(pnl)

    def returns(self) -> np.ndarray:
        """Per-step returns of the equity curve."""
        e = np.asarray([0.0, *self.equity])
        return np.diff(e) / (self.capital + e[:-1])

    def summary(self) -> dict[str, float | int | dict[str, float] | None]:
        """Every metric; None where there is not enough data."""
        r = self.returns()
        out: dict[str, float | int | dict[str, float] | None] = {
            "steps": int(r.shape[0]),
            "max_drawdown": self.max_drawdown,
            "max_drawdown_pct": self.max_drawdown_pct,
            "exposure": dict(sorted(self.exposure.items())),
        }
        for level in (0.95, 0.99):
            tag = str(round(level * 100))
            out[f"var_hist_{tag}"] = historical_var(r, level)
            out[f"cvar_hist_{tag}"] = historical_cvar(r, level)
            out[f"var_param_{tag}"] = parametric_var(r, level)
            out[f"cvar_param_{tag}"] = parametric_cvar(r, level)
        per_year = math.sqrt(_YEAR_NS / self.step_ns)
        sharpe = sharpe_ratio(r)
        sortino = sortino_ratio(r)
        out["sharpe_per_step"] = sharpe
        out["sharpe_annualized"] = None if sharpe is None else sharpe * per_year
        out["sortino_per_step"] = sortino
        out["sortino_annualized"] = None if sortino is None else sortino * per_year
        out["profit_factor"] = profit_factor(self.trade_pnls)
        out["trades"] = len(self.trade_pnls)
        return out


def historical_var(r: np.ndarray, level: float) -> float | None:
    """Historical value at risk of returns ``r`` at ``level`` (positive = loss)."""
    if r.shape[0] < 2:
        return None
    return float(-np.quantile(r, 1.0 - level)) + 0.0  # + 0.0 turns -0.0 into 0.0


def historical_cvar(r: np.ndarray, level: float) -> float | None:
    """Historical conditional VaR (expected shortfall) at ``level``."""
    if r.shape[0] < 2:
        return None
    q = np.quantile(r, 1.0 - level)
    return float(-r[r <= q].mean()) + 0.0


def parametric_var(r: np.ndarray, level: float) -> float | None:
    """Gaussian VaR from the mean and standard deviation of ``r``."""
    if r.shape[0] < 2:
        return None
    mu, sigma = float(r.mean()), float(r.std(ddof=1))
    return -(mu + sigma * _NORMAL.inv_cdf(1.0 - level))


def parametric_cvar(r: np.ndarray, level: float) -> float | None:
    """Gaussian CVaR: ``-(mu - sigma * pdf(z) / (1 - level))`` with ``z = inv_cdf(level)``."""
    if r.shape[0] < 2:
        return None
    mu, sigma = float(r.mean()), float(r.std(ddof=1))
    z = _NORMAL.inv_cdf(level)
    return -(mu - sigma * _NORMAL.pdf(z) / (1.0 - level))


def sharpe_ratio(r: np.ndarray) -> float | None:
    """Mean over standard deviation of ``r`` (per period; no risk-free rate)."""
    if r.shape[0] < 2:
        return None
    sd = float(r.std(ddof=1))
    return None if sd == 0.0 else float(r.mean()) / sd


def sortino_ratio(r: np.ndarray) -> float | None:
    """Mean over downside deviation ``sqrt(mean(min(r, 0)^2))``."""
    if r.shape[0] < 2:
        return None
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    return None if downside == 0.0 else float(r.mean()) / downside


def profit_factor(pnls: list[float]) -> float | None:
    """Gross profit over gross loss; None without a losing trade."""
    gains = sum(p for p in pnls if p > 0)
    losses = -sum(p for p in pnls if p < 0)
    if losses == 0.0:
        return None
    return gains / losses

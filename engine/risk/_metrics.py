"""Portfolio risk metrics from the equity curve and closed trades, in bounded memory.

Returns are per step: ``r_t = (E_t - E_{t-1}) / (capital + E_{t-1})`` where ``E``
is mark-to-market PnL after fees. Formulas:

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

Memory does not grow with the run (a live engine steps up to ~100 times a second,
for days). :class:`RiskMetrics` keeps:

- the last ``window`` returns in a ring buffer, for the historical VaR and CVaR:
  they are quantiles, which need the samples. Past ``window`` steps they describe
  the latest ``window`` steps only (``hist_steps`` in the summary says how many);
- running sums for every other figure, over the whole run: drawdown from the
  running peak; mean, variance (Welford) and downside square sum of the returns
  for the parametric VaR/CVaR, Sharpe and Sortino; gross profit and loss and the
  trade count for the profit factor.

While the window holds every step of the run (131,072 steps by default: 9 h of
250 ms replay steps), the moments are computed from the window with the same
numpy calls as the array functions below, so the figures are exactly those of the
whole curve; past it they come from the running sums, which agree to rounding
(about 1e-12 relative).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from statistics import NormalDist

import attrs
import numpy as np

_YEAR_NS = 365.25 * 24 * 3600 * 1e9
_NORMAL = NormalDist()
DEFAULT_WINDOW = 1 << 17  # returns kept for the historical VaR/CVaR (1 MiB of float64)


@attrs.frozen
class _Moments:
    """What the parametric figures and the ratios need from a return series (n >= 2)."""

    n: int
    mean: float
    sd: float  # sample standard deviation (ddof=1)
    downside: float  # sqrt(mean(min(r, 0)^2))


# No setattr hook: it would run on every field write of record_equity (7x slower).
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class RiskMetrics:
    """Takes the equity of each step and the PnL of each closed trade; :meth:`summary`
    computes every metric. Memory is bounded by ``window`` (see the module docstring).

    Args:
        capital: starting equity, the base for returns.
        step_ns: market time per step (for annualising).
        window: how many of the latest returns the historical VaR/CVaR use.

    Attributes:
        peak: the highest equity so far (0 before the first step).
        max_drawdown: the largest fall from ``peak``, quote currency.
        max_drawdown_pct: the same as a fraction of ``capital + peak``.
        exposure: symbol -> notional, filled in by whoever reports it.
        steps: equity records so far; ``trades``: closed trades so far.
        gross_profit: sum of the winning trades' PnL; ``gross_loss``: of the
            losing ones', positive.
    """

    capital: float
    step_ns: int
    window: int = attrs.field(default=DEFAULT_WINDOW, validator=attrs.validators.ge(2))
    exposure: dict[str, float] = attrs.Factory(dict)
    peak: float = 0.0
    max_drawdown: float = 0.0
    max_drawdown_pct: float = 0.0
    steps: int = attrs.field(default=0, init=False)
    trades: int = attrs.field(default=0, init=False)
    gross_profit: float = attrs.field(default=0.0, init=False)
    gross_loss: float = attrs.field(default=0.0, init=False)
    _last: float = attrs.field(default=0.0, init=False)  # the previous step's equity
    _ring: np.ndarray = attrs.field(init=False)
    _head: int = attrs.field(default=0, init=False)  # the ring's next slot
    # Welford's running mean and sum of squared deviations (stable over millions of
    # steps, unlike sum(r^2) - n * mean^2), and the downside sum of squares.
    _mean: float = attrs.field(default=0.0, init=False)
    _m2: float = attrs.field(default=0.0, init=False)
    _down_sq: float = attrs.field(default=0.0, init=False)

    @_ring.default
    def _new_ring(self) -> np.ndarray:
        # Written through at once (np.full, not np.zeros, whose pages the kernel maps
        # only when first written): the ring's 1 MiB is resident from the start, so
        # RSS is flat from there instead of creeping up ~0.8 MB per hour for the
        # first hours of a run (measured by ``tools/bench soak``).
        return np.full(self.window, 0.0)

    def record_equity(self, equity: float) -> None:
        """Add the step's mark-to-market PnL (after fees)."""
        last = self._last
        r = (equity - last) / (self.capital + last)
        self._last = equity
        self._ring[self._head] = r
        self._head = (self._head + 1) % self.window
        self.steps += 1
        delta = r - self._mean
        self._mean += delta / self.steps
        self._m2 += delta * (r - self._mean)
        if r < 0.0:
            self._down_sq += r * r
        self.peak = max(self.peak, equity)
        dd = self.peak - equity
        self.max_drawdown = max(self.max_drawdown, dd)
        self.max_drawdown_pct = max(self.max_drawdown_pct, dd / (self.capital + self.peak))

    def record_equities(self, equities: Iterable[float]) -> None:
        """:meth:`record_equity` for each (Python floats), in order, with the same
        arithmetic (a calm replay stretch takes its samples in one call)."""
        last, head, steps, window = self._last, self._head, self.steps, self.window
        mean, m2, down_sq = self._mean, self._m2, self._down_sq
        peak, max_dd, max_dd_pct = self.peak, self.max_drawdown, self.max_drawdown_pct
        capital, returns = self.capital, []
        for equity in equities:
            r = (equity - last) / (capital + last)
            last = equity
            returns.append(r)
            steps += 1
            delta = r - mean
            mean += delta / steps
            m2 += delta * (r - mean)
            if r < 0.0:
                down_sq += r * r
            # max(a, b) without the call: the same value (b only where b > a).
            if equity > peak:
                peak = equity
            dd = peak - equity
            if dd > max_dd:
                max_dd = dd
            dd_pct = dd / (capital + peak)
            if dd_pct > max_dd_pct:
                max_dd_pct = dd_pct
        kept = np.array(returns[-window:])  # into the ring, as one write per step would
        slots = (head + len(returns) - kept.shape[0] + np.arange(kept.shape[0])) % window
        self._ring[slots] = kept
        head = (head + len(returns)) % window
        self._last, self._head, self.steps = last, head, steps
        self._mean, self._m2, self._down_sq = mean, m2, down_sq
        self.peak, self.max_drawdown, self.max_drawdown_pct = peak, max_dd, max_dd_pct

    def record_trade(self, pnl: float) -> None:
        """Add a closed trade's (or partial close's) realized PnL after fees."""
        self.trades += 1
        if pnl > 0:
            self.gross_profit += pnl
        elif pnl < 0:
            self.gross_loss -= pnl

    def returns(self) -> np.ndarray:
        """The latest per-step returns (at most ``window``), oldest first."""
        if self.steps < self.window:
            return self._ring[: self.steps].copy()
        return np.concatenate((self._ring[self._head :], self._ring[: self._head]))

    def _moments(self, r: np.ndarray) -> _Moments | None:
        """Whole-run moments: from ``r`` while it is the whole run, else the running sums."""
        n = self.steps
        if n < 2:
            return None
        if r.shape[0] == n:
            return _array_moments(r)
        return _Moments(
            n=n,
            mean=self._mean,
            sd=math.sqrt(self._m2 / (n - 1)),
            downside=math.sqrt(self._down_sq / n),
        )

    def summary(self) -> dict[str, float | int | dict[str, float] | None]:
        """Every metric; None where there is not enough data."""
        r = self.returns()
        m = self._moments(r)
        out: dict[str, float | int | dict[str, float] | None] = {
            "steps": self.steps,
            "hist_steps": int(r.shape[0]),
            "max_drawdown": self.max_drawdown,
            "max_drawdown_pct": self.max_drawdown_pct,
            "exposure": dict(sorted(self.exposure.items())),
        }
        for level in (0.95, 0.99):
            tag = str(round(level * 100))
            out[f"var_hist_{tag}"] = historical_var(r, level)
            out[f"cvar_hist_{tag}"] = historical_cvar(r, level)
            out[f"var_param_{tag}"] = None if m is None else _parametric_var(m, level)
            out[f"cvar_param_{tag}"] = None if m is None else _parametric_cvar(m, level)
        per_year = math.sqrt(_YEAR_NS / self.step_ns)
        sharpe = None if m is None else _sharpe(m)
        sortino = None if m is None else _sortino(m)
        out["sharpe_per_step"] = sharpe
        out["sharpe_annualized"] = None if sharpe is None else sharpe * per_year
        out["sortino_per_step"] = sortino
        out["sortino_annualized"] = None if sortino is None else sortino * per_year
        out["profit_factor"] = (
            None if self.gross_loss == 0.0 else self.gross_profit / self.gross_loss
        )
        out["trades"] = self.trades
        return out


def _array_moments(r: np.ndarray) -> _Moments | None:
    if r.shape[0] < 2:
        return None
    return _Moments(
        n=int(r.shape[0]),
        mean=float(r.mean()),
        sd=float(r.std(ddof=1)),
        downside=math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))),
    )


def _parametric_var(m: _Moments, level: float) -> float:
    return -(m.mean + m.sd * _NORMAL.inv_cdf(1.0 - level))


def _parametric_cvar(m: _Moments, level: float) -> float:
    z = _NORMAL.inv_cdf(level)
    return -(m.mean - m.sd * _NORMAL.pdf(z) / (1.0 - level))


def _sharpe(m: _Moments) -> float | None:
    return None if m.sd == 0.0 else m.mean / m.sd


def _sortino(m: _Moments) -> float | None:
    return None if m.downside == 0.0 else m.mean / m.downside


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
    m = _array_moments(r)
    return None if m is None else _parametric_var(m, level)


def parametric_cvar(r: np.ndarray, level: float) -> float | None:
    """Gaussian CVaR: ``-(mu - sigma * pdf(z) / (1 - level))`` with ``z = inv_cdf(level)``."""
    m = _array_moments(r)
    return None if m is None else _parametric_cvar(m, level)


def sharpe_ratio(r: np.ndarray) -> float | None:
    """Mean over standard deviation of ``r`` (per period; no risk-free rate)."""
    m = _array_moments(r)
    return None if m is None else _sharpe(m)


def sortino_ratio(r: np.ndarray) -> float | None:
    """Mean over downside deviation ``sqrt(mean(min(r, 0)^2))``."""
    m = _array_moments(r)
    return None if m is None else _sortino(m)


def profit_factor(pnls: list[float]) -> float | None:
    """Gross profit over gross loss; None without a losing trade."""
    gains = sum(p for p in pnls if p > 0)
    losses = -sum(p for p in pnls if p < 0)
    if losses == 0.0:
        return None
    return gains / losses

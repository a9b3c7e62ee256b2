"""Volatility models: GARCH(1,1) (fitted offline, updated online) and volatility of volatility.

GARCH(1,1) (Bollerslev, "Generalized Autoregressive Conditional Heteroskedasticity",
J. Econometrics 31, 1986) on log returns ``r_t = ln(c_t / c_{t-1})`` with zero mean:
``h_{t+1} = omega + alpha r_t^2 + beta h_t``, started at the unconditional variance
``h_1 = omega / (1 - alpha - beta)``. The indicator reports ``sqrt(h_{t+1})``, the
volatility forecast for the *next* bar's return, per bar (not annualized). The
parameters come from :func:`garch_fit`, a Gaussian maximum-likelihood fit over a
history of closes run offline (it uses scipy); the online update is O(1).

Volatility of volatility: the population standard deviation of the last ``vol_period``
values of the realized volatility ``sigma_t = sqrt(sum of r^2)`` over ``timeperiod``
returns (:func:`~engine.indicators.realized_vol`), in the same units as ``sigma``.
"""

from __future__ import annotations

import math

import attrs
import numpy as np
from numba import njit

from ._common import as_f64, check_int
from ._micro import realized_vol_state, realized_vol_update
from ._stats import _moments_state, moments_push

# --- GARCH(1,1) -----------------------------------------------------------------------
# [omega, alpha, beta, started, prev_close, h]
_G_OMEGA, _G_ALPHA, _G_BETA, _G_STARTED, _G_PREV, _G_H = range(6)


def _check_garch(omega: float, alpha: float, beta: float) -> tuple[float, float, float]:
    o, a, b = float(omega), float(alpha), float(beta)
    if not (o > 0.0 and a >= 0.0 and b >= 0.0 and a + b < 1.0 and math.isfinite(o)):
        raise ValueError(
            "GARCH(1,1) needs omega > 0, alpha >= 0, beta >= 0 and alpha + beta < 1, "
            f"got omega={omega!r}, alpha={alpha!r}, beta={beta!r}"
        )
    return o, a, b


def garch_state(omega: float, alpha: float, beta: float) -> np.ndarray:
    """Allocate the state of a GARCH(1,1) volatility forecast (see :func:`garch_fit`)."""
    o, a, b = _check_garch(omega, alpha, beta)
    st = np.zeros(6, dtype=np.float64)
    st[_G_OMEGA] = o
    st[_G_ALPHA] = a
    st[_G_BETA] = b
    st[_G_H] = o / (1.0 - a - b)
    return st


@njit(nogil=True, error_model="numpy")
def garch_update(state: np.ndarray, x: float) -> float:
    """One more close; returns ``sqrt(h_{t+1})`` (NaN at the first close).

    Non-positive closes are skipped like NaN (a log return needs positive prices).
    """
    if not x > 0.0:
        return np.nan
    if state[_G_STARTED] == 0.0:
        state[_G_STARTED] = 1.0
        state[_G_PREV] = x
        return np.nan
    r = math.log(x / state[_G_PREV])
    state[_G_PREV] = x
    h = state[_G_OMEGA] + state[_G_ALPHA] * (r * r) + state[_G_BETA] * state[_G_H]
    state[_G_H] = h
    return math.sqrt(h)


@njit(cache=True, nogil=True, error_model="numpy")
def _garch_run(state: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        out[i] = garch_update(state, x[i])


def garch(real: np.ndarray, omega: float, alpha: float, beta: float) -> np.ndarray:
    """GARCH(1,1) one-bar-ahead volatility of closes ``real`` (see the module docstring)."""
    x = as_f64(real)
    out = np.empty(x.shape[0], dtype=np.float64)
    _garch_run(garch_state(omega, alpha, beta), x, out)
    return out


@attrs.frozen(kw_only=True)
class GarchFit:
    """A fitted GARCH(1,1): pass ``omega``, ``alpha``, ``beta`` to :func:`garch_state`.

    Attributes:
        omega: constant term, in squared log-return units per bar.
        alpha: weight of the last squared return.
        beta: weight of the last variance.
        log_likelihood: Gaussian log-likelihood of the fitted returns.
        n_returns: number of returns fitted.
    """

    omega: float
    alpha: float
    beta: float
    log_likelihood: float
    n_returns: int


@njit(cache=True, nogil=True, error_model="numpy")
def _garch_nll(r: np.ndarray, omega: float, alpha: float, beta: float) -> float:
    """Negative Gaussian log-likelihood, with the recursion of :func:`garch_update`."""
    h = omega / (1.0 - alpha - beta)
    total = 0.0
    for i in range(r.shape[0]):
        total += math.log(h) + r[i] * r[i] / h
        h = omega + alpha * (r[i] * r[i]) + beta * h
    return 0.5 * (total + r.shape[0] * math.log(2.0 * math.pi))


def garch_log_likelihood(real: np.ndarray, omega: float, alpha: float, beta: float) -> float:
    """Gaussian log-likelihood of the log returns of ``real`` under GARCH(1,1) parameters."""
    o, a, b = _check_garch(omega, alpha, beta)
    r = _returns(real)
    return -_garch_nll(r, o, a, b)


def _returns(real: np.ndarray) -> np.ndarray:
    x = as_f64(real)
    x = x[np.isfinite(x) & (x > 0.0)]
    if x.shape[0] < 3:
        raise ValueError("garch needs at least 3 positive prices")
    return np.diff(np.log(x))


def garch_fit(real: np.ndarray) -> GarchFit:
    """Fit GARCH(1,1) to the log returns of closes ``real`` by Gaussian maximum likelihood.

    Offline (seconds for 10^5 bars): the optimizer works on returns scaled to unit
    variance, with ``alpha + beta < 1`` kept by the parametrization
    ``alpha = p s``, ``beta = p (1 - s)``, ``p, s`` in (0, 1).

    Raises:
        ValueError: fewer than 3 positive prices, or returns without variance.
    """
    from scipy.optimize import minimize

    r = _returns(real)
    scale = float(np.sqrt(np.mean(r * r)))
    if not scale > 0.0:
        raise ValueError("garch_fit: the returns have no variance")
    z = r / scale

    def unpack(theta: np.ndarray) -> tuple[float, float, float]:
        persist = 1.0 / (1.0 + math.exp(-theta[1]))
        share = 1.0 / (1.0 + math.exp(-theta[2]))
        return math.exp(theta[0]), persist * share, persist * (1.0 - share)

    def nll(theta: np.ndarray) -> float:
        o, a, b = unpack(theta)
        return _garch_nll(z, o, a, b)

    best = None
    for start in ([math.log(0.05), 2.0, -2.0], [math.log(0.2), 0.5, 0.0]):
        res = minimize(
            nll,
            np.array(start),
            method="Nelder-Mead",
            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000},
        )
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    o, a, b = unpack(best.x)
    omega = o * scale * scale
    return GarchFit(
        omega=omega,
        alpha=a,
        beta=b,
        log_likelihood=-_garch_nll(r, omega, a, b),
        n_returns=int(r.shape[0]),
    )


# --- volatility of volatility ---------------------------------------------------------
# [rvol_len, realized_vol state[...], moments state[...]]


def volvol_state(timeperiod: int = 20, vol_period: int = 20) -> np.ndarray:
    """Allocate the state of a volatility of volatility."""
    rv = realized_vol_state(timeperiod)
    mo = _moments_state(check_int("vol_period", vol_period, 2))
    return np.concatenate((np.array([float(rv.shape[0])]), rv, mo))


@njit(nogil=True, error_model="numpy")
def volvol_update(state: np.ndarray, x: float) -> float:
    """Std of the last ``vol_period`` realized volatilities (first value at ``tp + vp - 1``)."""
    if not x > 0.0:
        return np.nan
    n = int(state[0])
    sigma = realized_vol_update(state[1 : 1 + n], x)
    if sigma != sigma:
        return np.nan
    v = moments_push(state[1 + n :], sigma)
    if v != v:
        return np.nan
    return math.sqrt(v) if v > 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _volvol_run(state: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        out[i] = volvol_update(state, x[i])


def volvol(real: np.ndarray, timeperiod: int = 20, vol_period: int = 20) -> np.ndarray:
    """Volatility of volatility of closes ``real`` (see the module docstring)."""
    x = as_f64(real)
    out = np.empty(x.shape[0], dtype=np.float64)
    _volvol_run(volvol_state(timeperiod, vol_period), x, out)
    return out

"""A Gaussian hidden Markov regime model on bars, run online as a forward filter.

The model is fitted offline (``python -m tools.regime fit``, with hmmlearn under the ``train``
extra) and saved as a small JSON file (:class:`HmmParams`); the engine needs neither hmmlearn
nor scikit-learn to run it.

Per bar, three features of the bar's close and volume (:class:`BarFeatures`, one numba kernel
shared by the online path and the offline tool):

* ``ret_z``: the bar's log return over the slow volatility level;
* ``log_rvol_ratio``: log of the realized volatility of the last ``window`` bars over its slow
  level (an EMA with half-life ``level_half_life`` bars), the same ratio that
  :meth:`RegimeDetector.vol <engine.models.RegimeDetector.vol>` thresholds;
* ``log_volume_ratio``: log of a fast over a slow EMA of the bar volume (the bar analogue of
  the ``volume_ratio`` feature).

Each is NaN until warm. :class:`HmmFilter` keeps the filtered state probabilities
``P(state_t | x_1..x_t)``: each update is one O(states²) predict-and-correct step into
preallocated arrays (no allocation per bar); a bar whose features are NaN is a missing
observation (predict only). States are ordered by the mean of ``log_rvol_ratio``, so state 0 is
the calmest and the last the most turbulent, whatever order the fit found them in.

Incremental and batch give the same numbers: :func:`forward_filter` and
:func:`bar_features` loop over the same step kernels as :meth:`HmmFilter.update` and
:meth:`BarFeatures.update`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from numba import njit

from .._errors import DataError

#: Feature names, in column order.
FEATURE_NAMES = ("ret_z", "log_rvol_ratio", "log_volume_ratio")
#: Version of the feature definitions (a fitted file names the version it was fitted on).
FEATURE_VERSION = 1
#: Format version of the parameter file.
FORMAT_VERSION = 1

_LOG_2PI = math.log(2.0 * math.pi)

# BarFeatures state slots.
_PREV_CLOSE, _N_RET, _LEVEL, _VOL_FAST, _VOL_SLOW, _N_BARS = range(6)
_N_SLOTS = 6


@attrs.frozen(kw_only=True)
class BarFeatureSpec:
    """How :class:`BarFeatures` turns bars into features.

    Attributes:
        window: bars in the realized volatility.
        level_half_life: half-life, in bars, of the slow volatility level.
        volume_fast: half-life, in bars, of the fast volume EMA.
        volume_slow: half-life, in bars, of the slow volume EMA.
        warm_bars: bars (after the first ``window`` returns) before features are given.
    """

    window: int = attrs.field(default=30, validator=attrs.validators.gt(1))
    level_half_life: float = attrs.field(default=120.0, validator=attrs.validators.gt(0.0))
    volume_fast: float = attrs.field(default=5.0, validator=attrs.validators.gt(0.0))
    volume_slow: float = attrs.field(default=60.0, validator=attrs.validators.gt(0.0))
    warm_bars: int = attrs.field(default=120, validator=attrs.validators.ge(0))

    def as_dict(self) -> dict[str, Any]:
        """The spec as the JSON object the parameter file keeps."""
        return attrs.asdict(self)


def _alpha(half_life: float) -> float:
    return 1.0 - 2.0 ** (-1.0 / half_life)


@njit(cache=True, nogil=True)
def _feature_step(
    close: float,
    volume: float,
    state: np.ndarray,
    ring: np.ndarray,
    window: int,
    a_level: float,
    a_fast: float,
    a_slow: float,
    warm_bars: int,
    out: np.ndarray,
) -> bool:
    """One bar into ``state``/``ring``; writes the features to ``out`` (NaN while cold)."""
    for j in range(out.shape[0]):
        out[j] = np.nan
    if not (close > 0.0 and math.isfinite(close) and volume >= 0.0 and math.isfinite(volume)):
        return False  # a bad bar changes nothing
    n_bars = state[_N_BARS]
    if n_bars == 0.0:
        state[_VOL_FAST] = volume
        state[_VOL_SLOW] = volume
    else:
        state[_VOL_FAST] += a_fast * (volume - state[_VOL_FAST])
        state[_VOL_SLOW] += a_slow * (volume - state[_VOL_SLOW])
    state[_N_BARS] = n_bars + 1.0
    prev = state[_PREV_CLOSE]
    state[_PREV_CLOSE] = close
    if n_bars == 0.0:
        return False
    r = math.log(close / prev)
    n_ret = int(state[_N_RET])
    ring[n_ret % window] = r * r
    n_ret += 1
    state[_N_RET] = n_ret
    if n_ret < window:
        return False
    # Summed afresh each bar (window adds): no running-sum drift, same result in any order.
    s = 0.0
    for j in range(window):
        s += ring[j]
    rvol = math.sqrt(s / window)
    if n_ret == window:
        state[_LEVEL] = rvol
    else:
        state[_LEVEL] += a_level * (rvol - state[_LEVEL])
    level = state[_LEVEL]
    if n_ret < window + warm_bars or not (level > 0.0 and rvol > 0.0):
        return False
    if not (state[_VOL_FAST] > 0.0 and state[_VOL_SLOW] > 0.0):
        return False
    out[0] = r / level
    out[1] = math.log(rvol / level)
    out[2] = math.log(state[_VOL_FAST] / state[_VOL_SLOW])
    return True


@njit(cache=True, nogil=True)
def _features_batch(
    close: np.ndarray,
    volume: np.ndarray,
    window: int,
    a_level: float,
    a_fast: float,
    a_slow: float,
    warm_bars: int,
    out: np.ndarray,
    rvol: np.ndarray,
    level: np.ndarray,
) -> None:
    state = np.zeros(_N_SLOTS)
    ring = np.zeros(window)
    for t in range(close.shape[0]):
        _feature_step(
            close[t], volume[t], state, ring, window, a_level, a_fast, a_slow, warm_bars, out[t]
        )
        if state[_N_RET] >= window:
            s = 0.0
            for j in range(window):
                s += ring[j]
            rvol[t] = math.sqrt(s / window)
            level[t] = state[_LEVEL]
        else:
            rvol[t] = np.nan
            level[t] = np.nan


class BarFeatures:
    """Online features of one symbol's bars (preallocated; no allocation per bar).

    Args:
        spec: the feature definitions.
    """

    def __init__(self, spec: BarFeatureSpec) -> None:
        self.spec = spec
        self._state = np.zeros(_N_SLOTS)
        self._ring = np.zeros(spec.window)
        self._out = np.full(len(FEATURE_NAMES), np.nan)
        self._args = (
            spec.window,
            _alpha(spec.level_half_life),
            _alpha(spec.volume_fast),
            _alpha(spec.volume_slow),
            spec.warm_bars,
        )

    def update(self, close: float, volume: float) -> bool:
        """Add one closed bar; True when :attr:`values` holds warm features."""
        return bool(_feature_step(close, volume, self._state, self._ring, *self._args, self._out))

    @property
    def values(self) -> np.ndarray:
        """The last bar's features (a view, overwritten by the next update; NaN while cold)."""
        return self._out


def bar_features(
    close: np.ndarray, volume: np.ndarray, spec: BarFeatureSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of a whole series of one symbol's bars, as :class:`BarFeatures` gives them.

    Returns:
        ``(X, rvol, level)``: the ``(T, 3)`` features (NaN rows while cold), the realized
        volatility of the last ``window`` bars and its slow level (per-bar log-return units,
        NaN until ``window`` returns are seen).
    """
    c = np.ascontiguousarray(close, dtype=np.float64)
    v = np.ascontiguousarray(volume, dtype=np.float64)
    if c.shape != v.shape or c.ndim != 1:
        raise ValueError("close and volume must be 1-D arrays of one length")
    out = np.empty((c.shape[0], len(FEATURE_NAMES)))
    rvol = np.empty(c.shape[0])
    level = np.empty(c.shape[0])
    f = BarFeatures(spec)
    _features_batch(c, v, *f._args, out, rvol, level)
    return out, rvol, level


@njit(cache=True, nogil=True)
def _forward_step(
    x: np.ndarray,
    probs: np.ndarray,
    transmat: np.ndarray,
    means: np.ndarray,
    chol_inv: np.ndarray,
    log_norm: np.ndarray,
    shift: np.ndarray,
    scale: np.ndarray,
    z: np.ndarray,
    work: np.ndarray,
) -> float:
    """One filter step in place on ``probs``; returns ``log p(x_t | x_<t)`` (0 if missing)."""
    k = probs.shape[0]
    d = x.shape[0]
    missing = False
    for j in range(d):
        if not math.isfinite(x[j]):
            missing = True
        z[j] = (x[j] - shift[j]) / scale[j]
    # Predict: work = probs @ transmat.
    for j in range(k):
        acc = 0.0
        for i in range(k):
            acc += probs[i] * transmat[i, j]
        work[j] = acc
    if missing:
        for j in range(k):
            probs[j] = work[j]
        return 0.0
    # Correct with log-densities, shifted by their max before exp (no underflow).
    top = -np.inf
    for s in range(k):
        quad = 0.0
        for a in range(d):
            acc = 0.0
            for b in range(a + 1):
                acc += chol_inv[s, a, b] * (z[b] - means[s, b])
            quad += acc * acc
        ll = log_norm[s] - 0.5 * quad
        probs[s] = ll
        if ll > top:
            top = ll
    total = 0.0
    for s in range(k):
        p = work[s] * math.exp(probs[s] - top)
        probs[s] = p
        total += p
    for s in range(k):
        probs[s] /= total
    # The features were standardized: the Jacobian keeps the likelihood in raw units.
    jac = 0.0
    for j in range(d):
        jac += math.log(scale[j])
    return top + math.log(total) - jac


@njit(cache=True, nogil=True)
def _forward_batch(
    X: np.ndarray,
    start: np.ndarray,
    transmat: np.ndarray,
    means: np.ndarray,
    chol_inv: np.ndarray,
    log_norm: np.ndarray,
    shift: np.ndarray,
    scale: np.ndarray,
    out: np.ndarray,
    loglik: np.ndarray,
) -> None:
    k = start.shape[0]
    d = X.shape[1]
    probs = np.empty(k)
    z = np.empty(d)
    work = np.empty(k)
    # The first bar is drawn from ``start`` itself: step 0 transitions by the identity.
    for s in range(k):
        probs[s] = start[s]
    eye = np.eye(k)
    for t in range(X.shape[0]):
        a = eye if t == 0 else transmat
        loglik[t] = _forward_step(X[t], probs, a, means, chol_inv, log_norm, shift, scale, z, work)
        for s in range(k):
            out[t, s] = probs[s]


def _as_array(doc: Mapping[str, Any], key: str, shape: tuple[int, ...], source: str) -> np.ndarray:
    try:
        a = np.asarray(doc[key], dtype=np.float64)
    except KeyError:
        raise DataError(f"{source}: missing key {key!r}") from None
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: {key}: not numbers ({exc})") from None
    if a.shape != shape:
        raise DataError(f"{source}: {key}: shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{source}: {key}: non-finite values")
    return a


@attrs.frozen(kw_only=True, eq=False)
class HmmParams:
    """A fitted Gaussian HMM over :data:`FEATURE_NAMES`, states ordered calm to turbulent.

    Attributes:
        labels: one name per state (``calm``, ``normal``, ``turbulent`` for three).
        startprob: ``(K,)`` initial state probabilities.
        transmat: ``(K, K)`` row-stochastic transition matrix.
        means: ``(K, D)`` state means, in standardized feature units.
        covars: ``(K, D, D)`` full covariances, standardized units.
        shift, scale: ``(D,)`` standardization, ``z = (x - shift) / scale``.
        features: the bar feature definitions the model was fitted on.
        bar_ms: the length of the bars it was fitted on, ms (the engine builds bars of this
            length from trades; files without the key were fitted on 1-minute klines).
        meta: what the file says about its fit (data window, symbols, scores).
    """

    labels: tuple[str, ...]
    startprob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    covars: np.ndarray
    shift: np.ndarray
    scale: np.ndarray
    features: BarFeatureSpec
    bar_ms: int = 60_000
    meta: Mapping[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        k, d = self.means.shape
        if len(self.labels) != k:
            raise ValueError("one label per state")
        if d != len(FEATURE_NAMES):
            raise ValueError(f"means must have {len(FEATURE_NAMES)} columns")
        if not np.allclose(self.transmat.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError("transmat rows must sum to 1")
        if not np.isclose(self.startprob.sum(), 1.0, atol=1e-6):
            raise ValueError("startprob must sum to 1")
        if np.any(self.transmat < 0) or np.any(self.startprob < 0):
            raise ValueError("probabilities must be non-negative")
        if np.any(self.scale <= 0):
            raise ValueError("scale must be positive")
        if isinstance(self.bar_ms, bool) or not isinstance(self.bar_ms, int) or self.bar_ms <= 0:
            raise ValueError(f"bar_ms must be a positive integer, got {self.bar_ms!r}")
        for s in range(k):
            try:
                np.linalg.cholesky(self.covars[s])
            except np.linalg.LinAlgError:
                raise ValueError(f"covariance of state {s} is not positive definite") from None

    @property
    def n_states(self) -> int:
        """Number of hidden states."""
        return int(self.means.shape[0])

    def kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(means, chol_inv, log_norm, transmat)`` for the step kernel.

        ``chol_inv[s]`` is the inverse of the Cholesky factor of state ``s``'s covariance and
        ``log_norm[s]`` its Gaussian's log normalizer, computed once here, not per bar.
        """
        k, d = self.means.shape
        chol_inv = np.zeros((k, d, d))
        log_norm = np.zeros(k)
        for s in range(k):
            low = np.linalg.cholesky(self.covars[s])
            chol_inv[s] = np.linalg.inv(low)
            log_norm[s] = -0.5 * d * _LOG_2PI - float(np.sum(np.log(np.diag(low))))
        return np.ascontiguousarray(self.means), chol_inv, log_norm, self.transmat

    def to_json(self) -> dict[str, Any]:
        """The parameter file's JSON object (:meth:`load` reads it back)."""
        return {
            "format_version": FORMAT_VERSION,
            "model": "gaussian_hmm",
            "feature_names": list(FEATURE_NAMES),
            "feature_version": FEATURE_VERSION,
            "features": self.features.as_dict(),
            "bar_ms": self.bar_ms,
            "labels": list(self.labels),
            "startprob": self.startprob.tolist(),
            "transmat": self.transmat.tolist(),
            "means": self.means.tolist(),
            "covars": self.covars.tolist(),
            "shift": self.shift.tolist(),
            "scale": self.scale.tolist(),
            **dict(self.meta),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], source: str = "<json>") -> HmmParams:
        """Parse and check a parameter file's object.

        Raises:
            DataError: a missing key, a wrong shape, a version this engine does not know, or
                parameters that are not a valid HMM, naming ``source`` and the key.
        """
        if doc.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{source}: format_version {doc.get('format_version')!r} unknown")
        if doc.get("feature_version") != FEATURE_VERSION:
            raise DataError(f"{source}: feature_version {doc.get('feature_version')!r} unknown")
        if list(doc.get("feature_names", ())) != list(FEATURE_NAMES):
            raise DataError(f"{source}: feature_names must be {list(FEATURE_NAMES)}")
        labels = doc.get("labels")
        if not isinstance(labels, list) or not labels:
            raise DataError(f"{source}: labels: expected a non-empty list")
        k, d = len(labels), len(FEATURE_NAMES)
        try:
            features = BarFeatureSpec(**doc["features"])
        except KeyError:
            raise DataError(f"{source}: missing key 'features'") from None
        except (TypeError, ValueError) as exc:
            raise DataError(f"{source}: features: {exc}") from None
        known = {
            "format_version", "model", "feature_names", "feature_version", "features",
            "labels", "startprob", "transmat", "means", "covars", "shift", "scale", "bar_ms",
        }  # fmt: skip
        try:
            return cls(
                labels=tuple(str(x) for x in labels),
                startprob=_as_array(doc, "startprob", (k,), source),
                transmat=_as_array(doc, "transmat", (k, k), source),
                means=_as_array(doc, "means", (k, d), source),
                covars=_as_array(doc, "covars", (k, d, d), source),
                shift=_as_array(doc, "shift", (d,), source),
                scale=_as_array(doc, "scale", (d,), source),
                features=features,
                bar_ms=doc.get("bar_ms", 60_000),
                meta={key: v for key, v in doc.items() if key not in known},
            )
        except ValueError as exc:
            raise DataError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> HmmParams:
        """Read a parameter file.

        Raises:
            DataError: the file cannot be read or is not a valid parameter file.
        """
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read HMM parameters ({exc})") from None
        if not isinstance(doc, dict):
            raise DataError(f"{path}: expected a JSON object")
        return cls.from_json(doc, str(path))


class HmmFilter:
    """Filtered state probabilities of one symbol, one bar at a time.

    Args:
        params: the fitted model.
    """

    def __init__(self, params: HmmParams) -> None:
        self.params = params
        means, chol_inv, log_norm, transmat = params.kernel_args()
        self._means = means
        self._chol_inv = chol_inv
        self._log_norm = log_norm
        self._transmat = np.ascontiguousarray(transmat)
        self._eye = np.eye(params.n_states)
        self._shift = np.ascontiguousarray(params.shift)
        self._scale = np.ascontiguousarray(params.scale)
        self._probs = np.empty(params.n_states)
        self._z = np.empty(len(FEATURE_NAMES))
        self._work = np.empty(params.n_states)
        self._started = False
        self.reset()

    def reset(self) -> None:
        """Back to the start probabilities (no bar seen)."""
        self._probs[:] = self.params.startprob
        self._started = False

    def update(self, x: np.ndarray) -> float:
        """One bar's features (NaN: a missing observation, predict only).

        Returns:
            ``log p(x_t | x_1..x_{t-1})`` in raw feature units (0.0 for a missing bar).
        """
        # The first bar is drawn from the start probabilities, not one transition later.
        a = self._transmat if self._started else self._eye
        self._started = True
        return float(
            _forward_step(
                x,
                self._probs,
                a,
                self._means,
                self._chol_inv,
                self._log_norm,
                self._shift,
                self._scale,
                self._z,
                self._work,
            )
        )

    @property
    def probs(self) -> np.ndarray:
        """``P(state | bars so far)``, calm first (a view, overwritten by the next update)."""
        return self._probs

    @property
    def state(self) -> int:
        """The most probable state now."""
        return int(np.argmax(self._probs))

    @property
    def label(self) -> str:
        """Name of :attr:`state`."""
        return self.params.labels[self.state]


class HmmRegime:
    """Bars in, regime out: :class:`BarFeatures` feeding an :class:`HmmFilter`.

    Args:
        params: the fitted model (its feature spec is used).
    """

    def __init__(self, params: HmmParams) -> None:
        self.features = BarFeatures(params.features)
        self.filter = HmmFilter(params)
        self._warm = False

    def update(self, close: float, volume: float) -> int:
        """One closed bar; returns the most probable state, -1 until the features are warm."""
        warm = self.features.update(close, volume)
        if warm:
            self._warm = True
        if not self._warm:
            return -1
        self.filter.update(self.features.values)
        return self.filter.state


def forward_filter(params: HmmParams, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Filtered probabilities of a whole series, as :class:`HmmFilter` gives them bar by bar.

    Args:
        params: the model.
        X: ``(T, D)`` raw features; NaN rows are missing observations.

    Returns:
        ``(probs, loglik)``: ``(T, K)`` filtered probabilities and ``(T,)`` per-bar
        ``log p(x_t | x_<t)`` (0.0 for missing rows).
    """
    x = np.ascontiguousarray(X, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"X must be (T, {len(FEATURE_NAMES)})")
    means, chol_inv, log_norm, transmat = params.kernel_args()
    out = np.empty((x.shape[0], params.n_states))
    loglik = np.empty(x.shape[0])
    _forward_batch(
        x,
        np.ascontiguousarray(params.startprob),
        np.ascontiguousarray(transmat),
        means,
        chol_inv,
        log_norm,
        np.ascontiguousarray(params.shift),
        np.ascontiguousarray(params.scale),
        out,
        loglik,
    )
    return out, loglik


# TradeBars state slots.
_BAR_ID, _BAR_CLOSE, _BAR_VOLUME, _BAR_OPEN = range(4)
_TRADE = 2  # engine.messages.EventKind.TRADE (not imported: the models package stays leaf)


@njit(cache=True, nogil=True)
def _trade_bars(
    ts: np.ndarray,
    kind: np.ndarray,
    price: np.ndarray,
    qty: np.ndarray,
    lo: int,
    hi: int,
    bar_ns: int,
    max_gap: int,
    state: np.ndarray,
    close_out: np.ndarray,
    volume_out: np.ndarray,
) -> tuple[int, int]:
    """Trades ``lo..hi`` into bars; the closed bars go to ``close_out``/``volume_out``.

    A bar closes when a trade of a later bar arrives. Bars without a trade in between are
    given as ``(previous close, 0)``, as a kline would be; a gap of more than ``max_gap``
    bars is one NaN close instead (a break: the caller starts afresh). Stops early when the
    outputs could overflow.

    Returns:
        ``(bars written, row to resume from)``.
    """
    cap = close_out.shape[0]
    n = 0
    for i in range(lo, hi):
        if kind[i] != _TRADE:
            continue
        p = price[i]
        q = qty[i]
        if not (math.isfinite(p) and math.isfinite(q) and p > 0.0 and q >= 0.0):
            continue
        b = float(ts[i] // bar_ns)
        if state[_BAR_OPEN] != 0.0 and b > state[_BAR_ID]:
            gap = int(b - state[_BAR_ID]) - 1
            need = 1 + (1 if gap > max_gap else gap)
            if n + need > cap:
                return n, i
            close_out[n] = state[_BAR_CLOSE]
            volume_out[n] = state[_BAR_VOLUME]
            n += 1
            if gap > max_gap:
                close_out[n] = np.nan
                volume_out[n] = 0.0
                n += 1
            else:
                for _ in range(gap):
                    close_out[n] = state[_BAR_CLOSE]
                    volume_out[n] = 0.0
                    n += 1
            state[_BAR_VOLUME] = 0.0
            state[_BAR_ID] = b
        elif state[_BAR_OPEN] == 0.0:
            state[_BAR_OPEN] = 1.0
            state[_BAR_ID] = b
            state[_BAR_VOLUME] = 0.0
        state[_BAR_CLOSE] = p
        state[_BAR_VOLUME] += q
    return n, hi


class TradeBarRegime:
    """A symbol's HMM regime from its trades: bars of ``params.bar_ms``, one filter step each.

    The tick rows are cut into bars by their replay time (trades only: a bar's close is its
    last trade price, its volume the traded quantity, as a kline's). Each closed bar updates
    :class:`HmmRegime` in O(states²) into preallocated arrays, so the regime at a moment
    depends on the bars closed before it only, and on nothing of how the rows were batched.
    A gap of more than ``window + warm_bars`` bars without a trade (e.g. between the captures
    of a multi-window replay) starts the features and the filter afresh: warm-up again.

    Args:
        params: the fitted model (its ``bar_ms`` and feature spec are used).
        trace: when a list, each closed bar appends ``(close, volume, state)`` (tests).
    """

    def __init__(self, params: HmmParams, trace: list[tuple[float, float, int]] | None = None):
        self.params = params
        spec = params.features
        self.max_gap = spec.window + spec.warm_bars
        self._bar_ns = int(params.bar_ms) * 1_000_000
        self._state = np.zeros(4)
        cap = self.max_gap + 64
        self._close = np.empty(cap)
        self._volume = np.empty(cap)
        self._regime = HmmRegime(params)
        self._trace = trace
        self.state = -1  # the most probable state after the last closed bar; -1: not warm
        self.bars = 0  # bars closed
        self.breaks = 0  # gaps that restarted the warm-up

    def on_ticks(
        self, ts: np.ndarray, kind: np.ndarray, price: np.ndarray, qty: np.ndarray, lo: int, hi: int
    ) -> None:
        """Consume rows ``lo..hi`` of a batch's columns (only read)."""
        while lo < hi:
            n, lo = _trade_bars(
                ts,
                kind,
                price,
                qty,
                lo,
                hi,
                self._bar_ns,
                self.max_gap,
                self._state,
                self._close,
                self._volume,
            )
            for j in range(n):
                self._bar(float(self._close[j]), float(self._volume[j]))

    def _bar(self, close: float, volume: float) -> None:
        if not math.isfinite(close):
            self._regime = HmmRegime(self.params)
            self.state = -1
            self.breaks += 1
            return
        self.bars += 1
        self.state = self._regime.update(close, volume)
        if self._trace is not None:
            self._trace.append((close, volume, self.state))

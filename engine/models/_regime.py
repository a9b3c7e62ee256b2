"""Market regimes and a regime-aware, self-correcting score threshold.

A :class:`Regime` is three small ints read from a :class:`~engine.models.FeatureBuilder`'s
state by a :class:`RegimeDetector` (pure thresholds, no state of its own):

* ``vol``: realized volatility (30 one-second bars) against its own slow running level (a
  time-weighted EMA the builder keeps, half-life :attr:`RegimeDetector.level_half_life_s`):
  :data:`LOW` below ``vol_low`` times the level, :data:`HIGH` above ``vol_high`` times it.
* ``volume``: the fast (5 s) over slow (60 s) decayed traded volume rate (the
  ``volume_ratio`` feature): :data:`LOW` below ``volume_low``, :data:`HIGH` above
  ``volume_high``.
* ``trend``: ADX(14) on one-second bars, :data:`TREND` at or above ``adx_trend``, else
  :data:`RANGE`.

Each is :data:`UNKNOWN` (-1) while its inputs are not warm. The builder exposes them as the
``regime_vol``, ``regime_volume`` and ``regime_trend`` features (NaN while unknown), computed by
the same :meth:`RegimeDetector.classify` that :meth:`FeatureBuilder.regime` calls.

:class:`AdaptiveThreshold` turns a regime into the probability a model score must reach: a
base scaled by per-regime multipliers, nudged by how far the realized win rate of recent taken
entries is from a target, and clamped.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType

import attrs

#: Component value while its inputs are not warm.
UNKNOWN = -1
#: ``vol`` / ``volume`` levels.
LOW, NORMAL, HIGH = 0, 1, 2
#: ``trend`` levels.
RANGE, TREND = 0, 1

_LEVEL_NAMES = MappingProxyType({UNKNOWN: "unknown", LOW: "low", NORMAL: "normal", HIGH: "high"})
_TREND_NAMES = MappingProxyType({UNKNOWN: "unknown", RANGE: "range", TREND: "trend"})


@attrs.frozen(kw_only=True)
class Regime:
    """The market's regime at one moment.

    Attributes:
        vol: :data:`LOW`, :data:`NORMAL`, :data:`HIGH` or :data:`UNKNOWN`.
        volume: same scale as ``vol``.
        trend: :data:`RANGE`, :data:`TREND` or :data:`UNKNOWN`.
    """

    vol: int = attrs.field(validator=attrs.validators.in_(tuple(_LEVEL_NAMES)))
    volume: int = attrs.field(validator=attrs.validators.in_(tuple(_LEVEL_NAMES)))
    trend: int = attrs.field(validator=attrs.validators.in_(tuple(_TREND_NAMES)))

    @property
    def parts(self) -> tuple[str, str, str]:
        """``("vol=high", "volume=normal", "trend=range")``: the keys of each component."""
        return (
            f"vol={_LEVEL_NAMES[self.vol]}",
            f"volume={_LEVEL_NAMES[self.volume]}",
            f"trend={_TREND_NAMES[self.trend]}",
        )

    @property
    def key(self) -> str:
        """``"vol=high,volume=normal,trend=range"`` (for metrics and per-regime tables)."""
        return ",".join(self.parts)

    @property
    def known(self) -> bool:
        """Whether every component is warm."""
        return UNKNOWN not in (self.vol, self.volume, self.trend)


def _level(x: float, lo: float, hi: float) -> int:
    if not math.isfinite(x):
        return UNKNOWN
    if x < lo:
        return LOW
    if x > hi:
        return HIGH
    return NORMAL


@attrs.frozen(kw_only=True)
class RegimeDetector:
    """Thresholds that classify the builder's state into a :class:`Regime`.

    Part of :class:`~engine.models.FeatureSpec` (the regime features depend on it).

    Attributes:
        vol_low: ``vol`` is LOW when realized vol < ``vol_low`` x its slow level.
        vol_high: ``vol`` is HIGH when realized vol > ``vol_high`` x its slow level.
        level_half_life_s: half-life of the slow realized-vol level, seconds of market time.
        volume_low: ``volume`` is LOW when the fast/slow volume rate ratio is below this.
        volume_high: ``volume`` is HIGH when the ratio is above this.
        adx_trend: ``trend`` is TREND when ADX(14) is at least this.
    """

    vol_low: float = attrs.field(default=0.75, validator=attrs.validators.gt(0.0))
    vol_high: float = attrs.field(default=1.33, validator=attrs.validators.gt(0.0))
    level_half_life_s: float = attrs.field(default=120.0, validator=attrs.validators.gt(0.0))
    volume_low: float = attrs.field(default=0.5, validator=attrs.validators.ge(0.0))
    volume_high: float = attrs.field(default=2.0, validator=attrs.validators.gt(0.0))
    adx_trend: float = attrs.field(default=25.0, validator=attrs.validators.gt(0.0))

    def __attrs_post_init__(self) -> None:
        if not self.vol_low <= self.vol_high:
            raise ValueError("vol_low must not exceed vol_high")
        if not self.volume_low <= self.volume_high:
            raise ValueError("volume_low must not exceed volume_high")

    def vol(self, rvol: float, rvol_level: float) -> int:
        """Volatility level of ``rvol`` against its slow level (UNKNOWN if either is NaN)."""
        if not (math.isfinite(rvol) and math.isfinite(rvol_level)):
            return UNKNOWN
        if rvol_level <= 0.0:
            return NORMAL if rvol <= 0.0 else HIGH
        return _level(rvol / rvol_level, self.vol_low, self.vol_high)

    def volume(self, volume_ratio: float) -> int:
        """Volume level of the fast/slow volume rate ratio."""
        return _level(volume_ratio, self.volume_low, self.volume_high)

    def trend(self, adx: float) -> int:
        """TREND when ``adx >= adx_trend``, RANGE below, UNKNOWN while ADX is NaN."""
        if not math.isfinite(adx):
            return UNKNOWN
        return TREND if adx >= self.adx_trend else RANGE

    def classify(self, rvol: float, rvol_level: float, volume_ratio: float, adx: float) -> Regime:
        """The regime of one state."""
        return Regime(
            vol=self.vol(rvol, rvol_level),
            volume=self.volume(volume_ratio),
            trend=self.trend(adx),
        )


class AdaptiveThreshold:
    """The score an entry must reach, by regime, corrected by the recent realized win rate.

    ``value(regime) = clamp(base * m(regime) + gain * (target_win_rate - win_rate), lo, hi)``
    where ``m(regime)`` is the product of ``regime_scale`` entries found for the regime's
    :attr:`Regime.parts` (``"vol=high"``, ...) and for its whole :attr:`Regime.key` (missing
    entries count as 1), and ``win_rate`` is the fraction of wins among the last ``window``
    outcomes given to :meth:`record`. Until ``min_outcomes`` outcomes have been recorded the
    correction term is 0: a handful of trades says nothing about the win rate.

    Losing more often than the target raises the threshold (fewer, better entries); winning
    more often lowers it. Deterministic: the value depends only on the recorded outcomes.

    Args:
        base: the threshold in a neutral regime with no correction.
        lo, hi: clamp bounds, ``0 <= lo <= hi <= 1``.
        regime_scale: multipliers by regime part or key, each > 0.
        target_win_rate: the win rate the correction steers toward, in [0, 1].
        window: how many recent outcomes the win rate covers (> 0).
        gain: threshold change per unit of win-rate shortfall (>= 0).
        min_outcomes: outcomes needed before any correction (default ``min(10, window)``).

    Raises:
        ValueError: a bound, scale, rate or count out of range.
    """

    def __init__(
        self,
        base: float,
        lo: float,
        hi: float,
        regime_scale: Mapping[str, float],
        target_win_rate: float,
        window: int,
        gain: float,
        min_outcomes: int | None = None,
    ) -> None:
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"need 0 <= lo <= hi <= 1, got lo={lo}, hi={hi}")
        if not math.isfinite(base):
            raise ValueError("base must be finite")
        if not 0.0 <= target_win_rate <= 1.0:
            raise ValueError("target_win_rate must be in [0, 1]")
        if window <= 0:
            raise ValueError("window must be positive")
        if not gain >= 0.0:
            raise ValueError("gain must be non-negative")
        bad = {k: v for k, v in regime_scale.items() if not (math.isfinite(v) and v > 0.0)}
        if bad:
            raise ValueError(f"regime multipliers must be finite and positive: {bad}")
        need = min(10, window) if min_outcomes is None else min_outcomes
        if not 1 <= need <= window:
            raise ValueError("min_outcomes must be in [1, window]")
        self.base = float(base)
        self.lo = float(lo)
        self.hi = float(hi)
        self.regime_scale: Mapping[str, float] = MappingProxyType(dict(regime_scale))
        self.target_win_rate = float(target_win_rate)
        self.window = int(window)
        self.gain = float(gain)
        self.min_outcomes = int(need)
        self._outcomes: deque[bool] = deque(maxlen=self.window)
        self._wins = 0
        self._current = min(self.hi, max(self.lo, self.base))

    def record(self, win: bool) -> None:
        """Add the outcome of one taken entry (the oldest beyond ``window`` drops out)."""
        if len(self._outcomes) == self.window and self._outcomes[0]:
            self._wins -= 1
        self._outcomes.append(bool(win))
        self._wins += bool(win)

    @property
    def outcomes(self) -> int:
        """Outcomes in the window."""
        return len(self._outcomes)

    @property
    def win_rate(self) -> float | None:
        """Realized win rate over the window (None until ``min_outcomes`` are recorded)."""
        n = len(self._outcomes)
        return self._wins / n if n >= self.min_outcomes else None

    def multiplier(self, regime: Regime) -> float:
        """The product of the regime's multipliers."""
        m = 1.0
        for part in (*regime.parts, regime.key):
            m *= self.regime_scale.get(part, 1.0)
        return m

    def value(self, regime: Regime) -> float:
        """The threshold for ``regime`` now (also kept as :attr:`current`)."""
        wr = self.win_rate
        correction = 0.0 if wr is None else self.gain * (self.target_win_rate - wr)
        value = min(self.hi, max(self.lo, self.base * self.multiplier(regime) + correction))
        self._current = value
        return value

    @property
    def current(self) -> float:
        """The last :meth:`value` returned (the clamped base before the first call)."""
        return self._current

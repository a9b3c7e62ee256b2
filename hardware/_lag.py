"""Event-loop lag statistics (how late a timed wake-up came)."""

from __future__ import annotations

import math
from array import array

import attrs


@attrs.define(kw_only=True)
class LoopLagStats:
    """Lag samples in seconds: all-time count, mean and max; percentiles over a window.

    Mutable by design: the hardware actor owns it and records into it; readers
    call :meth:`summary`.

    The window is one array of ``window`` doubles, allocated here and overwritten
    in turn: its memory is the same from the first sample on. A deque of float
    objects grew by 32 B a sample until full, which the soak (``python -m
    tools.bench soak``) saw as growth: at 10 samples a second of wall time the
    shipped 4,096 take 7 minutes to fill (35 market minutes at 5x).

    Attributes:
        window: how many recent samples the percentiles cover.
        count: samples recorded.
        total_s: their sum.
        max_s: the largest.
        last_s: the latest.
    """

    window: int = attrs.field(default=4096, validator=attrs.validators.gt(0))
    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    last_s: float = 0.0
    _recent: array[float] = attrs.field(init=False)

    @_recent.default
    def _make_recent(self) -> array[float]:
        return array("d", bytes(8 * self.window))

    def record(self, lag_s: float) -> None:
        """Add one sample (a negative lag, which a timer cannot have, counts as 0)."""
        lag = max(0.0, lag_s)
        self.count += 1
        self.total_s += lag
        self.last_s = lag
        self.max_s = max(self.max_s, lag)
        self._recent[(self.count - 1) % self.window] = lag

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (nearest rank, 0 < q <= 100) of the window, 0.0 if empty."""
        if not self.count:
            return 0.0
        ordered = sorted(self._recent[: min(self.count, self.window)])
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[min(rank, len(ordered)) - 1]

    def summary(self) -> dict[str, float | int]:
        """Count and lag in milliseconds: ``mean``, ``p50``, ``p99`` (window), ``max``, ``last``."""
        ms = 1000.0
        return {
            "count": self.count,
            "mean_ms": self.total_s / self.count * ms if self.count else 0.0,
            "p50_ms": self.percentile(50) * ms,
            "p99_ms": self.percentile(99) * ms,
            "max_ms": self.max_s * ms,
            "last_ms": self.last_s * ms,
        }

"""Walk-forward windows: ``--walk-forward TRAIN/TEST`` over the data's time range.

``TRAIN`` and ``TEST`` are durations: a number with a unit ``s``, ``m``, ``h`` or
``d`` (``90m``, ``2h``, ``1.5d``); a bare number is days (``3/1`` is three days of
training, then one day of test). Fold ``k`` trains on ``[t0 + k*TEST, t0 + k*TEST +
TRAIN)`` and tests on the ``TEST`` that follows, so the test windows are consecutive
and never overlap; ``t0`` is the first event (to the microsecond). A fold is kept
while at least half of its test window lies within the data (the last one may be
cut short by the data's end).
"""

from __future__ import annotations

import datetime as dt
import re

import attrs

from .._errors import ConfigError

_UNITS_NS = {"s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_UNITS_NS["d"] = 24 * _UNITS_NS["h"]
_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhd]?)\s*$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
WALK_ORIGIN = "--walk-forward"


@attrs.frozen(kw_only=True)
class WalkForward:
    """The train and test lengths, in nanoseconds (whole microseconds)."""

    train_ns: int
    test_ns: int
    text: str


@attrs.frozen(kw_only=True)
class Fold:
    """One walk-forward fold: ``[start, end)`` bounds, int nanoseconds since the epoch."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int


def _duration(text: str, spec: str) -> int:
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(
            WALK_ORIGIN,
            "",
            f"expected TRAIN/TEST durations such as 3d/1d, 90m/30m or 3/1 (days), got {spec!r}",
        )
    ns = round(float(match["n"]) * _UNITS_NS[match["unit"] or "d"] / 1000) * 1000
    if ns <= 0:
        raise ConfigError(WALK_ORIGIN, "", f"durations must be > 0, got {spec!r}")
    return ns


def parse_walk_forward(spec: str) -> WalkForward:
    """``TRAIN/TEST`` as lengths.

    Raises:
        ConfigError: not two positive durations.
    """
    train, sep, test = spec.partition("/")
    if not sep:
        raise ConfigError(WALK_ORIGIN, "", f"expected TRAIN/TEST (such as 3d/1d), got {spec!r}")
    return WalkForward(train_ns=_duration(train, spec), test_ns=_duration(test, spec), text=spec)


def folds(walk: WalkForward, first_ts: int, last_ts: int) -> list[Fold]:
    """The folds over data spanning ``[first_ts, last_ts]``.

    Raises:
        ConfigError: the data is too short for one fold.
    """
    t0 = first_ts - first_ts % 1000  # bounds print as ISO times, which stop at microseconds
    out: list[Fold] = []
    while True:
        k = len(out)
        train_start = t0 + k * walk.test_ns
        test_start = train_start + walk.train_ns
        test_end = test_start + walk.test_ns
        if test_start + walk.test_ns // 2 > last_ts:
            break
        out.append(
            Fold(
                index=k,
                train_start=train_start,
                train_end=test_start,
                test_start=test_start,
                test_end=test_end,
            )
        )
    if not out:
        span = (last_ts - first_ts) / 1e9
        raise ConfigError(
            WALK_ORIGIN,
            "",
            f"{walk.text} needs more data than the {span:,.0f} s the data covers "
            "(train plus half a test window)",
        )
    return out


def iso(ns: int) -> str:
    """Nanoseconds since the epoch as an ISO-8601 UTC time (microsecond precision)."""
    when = _EPOCH + dt.timedelta(microseconds=ns // 1000)
    return when.isoformat().replace("+00:00", "Z")

"""engine.models regimes and the adaptive threshold: pure, deterministic rules."""

from __future__ import annotations

import math

import pytest

from engine.models import AdaptiveThreshold, Regime, RegimeDetector
from engine.models._regime import HIGH, LOW, NORMAL, RANGE, TREND, UNKNOWN


def test_regime_key_and_parts():
    r = Regime(vol=HIGH, volume=NORMAL, trend=RANGE)
    assert r.key == "vol=high,volume=normal,trend=range"
    assert r.parts == ("vol=high", "volume=normal", "trend=range")
    assert r.known
    assert not Regime(vol=UNKNOWN, volume=LOW, trend=TREND).known
    with pytest.raises(ValueError):
        Regime(vol=3, volume=NORMAL, trend=RANGE)


@pytest.mark.parametrize(
    ("rvol", "level", "want"),
    [
        (1.0, 1.0, NORMAL),
        (0.7, 1.0, LOW),
        (0.75, 1.0, NORMAL),  # the bounds are normal
        (1.33, 1.0, NORMAL),
        (1.4, 1.0, HIGH),
        (math.nan, 1.0, UNKNOWN),
        (1.0, math.nan, UNKNOWN),
        (0.0, 0.0, NORMAL),
        (1e-4, 0.0, HIGH),
    ],
)
def test_vol_against_its_level(rvol, level, want):
    assert RegimeDetector().vol(rvol, level) == want


def test_volume_and_trend_thresholds():
    d = RegimeDetector(volume_low=0.5, volume_high=2.0, adx_trend=25.0)
    assert [d.volume(x) for x in (0.4, 0.5, 1.0, 2.0, 2.1, math.nan)] == [
        LOW,
        NORMAL,
        NORMAL,
        NORMAL,
        HIGH,
        UNKNOWN,
    ]
    assert [d.trend(x) for x in (10.0, 24.99, 25.0, 60.0, math.nan)] == [
        RANGE,
        RANGE,
        TREND,
        TREND,
        UNKNOWN,
    ]
    assert d.classify(2.0, 1.0, 0.1, 30.0) == Regime(vol=HIGH, volume=LOW, trend=TREND)
    with pytest.raises(ValueError):
        RegimeDetector(vol_low=2.0, vol_high=1.0)


def _threshold(**kw) -> AdaptiveThreshold:
    args = dict(
        base=0.5,
        lo=0.2,
        hi=0.8,
        regime_scale={"vol=high": 1.2, "trend=range": 0.9},
        target_win_rate=0.5,
        window=10,
        gain=0.4,
        min_outcomes=4,
    )
    return AdaptiveThreshold(**(args | kw))


CALM = Regime(vol=NORMAL, volume=NORMAL, trend=TREND)
WILD_RANGE = Regime(vol=HIGH, volume=NORMAL, trend=RANGE)


def test_regime_multipliers():
    t = _threshold()
    assert t.current == 0.5
    assert t.value(CALM) == 0.5
    assert t.value(WILD_RANGE) == pytest.approx(0.5 * 1.2 * 0.9)
    assert t.current == t.value(WILD_RANGE)
    whole_key = _threshold(regime_scale={WILD_RANGE.key: 1.5})
    assert whole_key.value(WILD_RANGE) == pytest.approx(0.75)
    assert whole_key.value(CALM) == 0.5


def test_no_adaptation_until_min_outcomes():
    t = _threshold()
    for _ in range(3):
        t.record(False)
    assert t.win_rate is None and t.value(CALM) == 0.5
    t.record(False)
    assert t.win_rate == 0.0
    # Losing: 0.5 + 0.4 * (0.5 - 0) = 0.7.
    assert t.value(CALM) == pytest.approx(0.7)


def test_window_slides_and_clamps():
    t = _threshold()
    for _ in range(10):
        t.record(False)
    for _ in range(10):
        t.record(True)  # pushes every loss out of the 10-outcome window
    assert t.outcomes == 10 and t.win_rate == 1.0
    assert t.value(CALM) == pytest.approx(0.5 - 0.4 * 0.5)
    hot = _threshold(gain=5.0)
    for _ in range(4):
        hot.record(False)
    assert hot.value(WILD_RANGE) == 0.8  # clamped to hi
    for _ in range(10):
        hot.record(True)
    assert hot.value(CALM) == 0.2  # clamped to lo


def test_deterministic():
    outcomes = [True, False, False, True, True, False, True, False, False, False, True]
    a, b = _threshold(), _threshold()
    seen_a, seen_b = [], []
    for w in outcomes:
        a.record(w)
        b.record(w)
        seen_a.append(a.value(WILD_RANGE))
        seen_b.append(b.value(WILD_RANGE))
    assert seen_a == seen_b
    assert len(set(seen_a)) > 2


@pytest.mark.parametrize(
    "bad",
    [
        {"lo": 0.9, "hi": 0.1},
        {"hi": 1.5},
        {"target_win_rate": 1.2},
        {"window": 0},
        {"gain": -1.0},
        {"regime_scale": {"vol=high": 0.0}},
        {"min_outcomes": 11},
    ],
)
def test_bad_arguments_refused(bad):
    with pytest.raises(ValueError):
        _threshold(**bad)

"""The live feed's bounded state: latency statistics in constant memory."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from engine.feeds._live import LatencyStats


def test_latency_stats_exact_count_and_max_percentiles_over_the_window():
    stats = LatencyStats(window=1000)
    assert stats.summary() == {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    values = [float(v) for v in range(-2000, 3000)]  # clock offsets make some negative
    values[10] = 1e6  # the largest, long out of the window
    for v in values:
        stats.record(v)
    window = np.array(values[-1000:])
    assert stats.summary() == {
        "count": 5000,
        "p50_ms": float(np.percentile(window, 50)),
        "p99_ms": float(np.percentile(window, 99)),
        "max_ms": 1e6,
    }


def test_latency_stats_before_the_window_fills():
    stats = LatencyStats(window=1000)
    for v in (3.0, 1.0, 2.0):
        stats.record(v)
    assert stats.summary() == {"count": 3, "p50_ms": 2.0, "p99_ms": 2.98, "max_ms": 3.0}


def test_latency_stats_do_not_grow_with_samples():
    stats = LatencyStats()  # the feed's default window
    gc.collect()
    tracemalloc.start()
    try:
        before, _peak = tracemalloc.get_traced_memory()
        for i in range(200_000):  # three times the window
            stats.record(i * 0.001)
        gc.collect()
        after, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 4096  # the ring was allocated up front
    assert stats.summary()["count"] == 200_000


def test_latency_window_must_be_positive():
    with pytest.raises(ValueError, match="window"):
        LatencyStats(window=0)

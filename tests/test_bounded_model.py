"""The model actor's latency window: fixed memory from the start, percentiles of the latest."""

from __future__ import annotations

import numpy as np
import pytest

from engine.actors._model import LATENCY_WINDOW, ModelStats


def test_latency_ring_stays_at_its_bound_and_keeps_the_latest():
    stats = ModelStats()
    nbytes = stats.latency_us.nbytes
    assert stats.latencies().shape == (0,)
    values = np.arange(2.5 * LATENCY_WINDOW)  # 2.5 windows: the ring wraps twice
    for v in values:
        stats.record_latency(float(v))
    assert stats.latency_count == values.shape[0]
    assert stats.latency_us.nbytes == nbytes  # allocated once, never grown
    assert stats.latencies().shape == (LATENCY_WINDOW,)
    latest = values[-LATENCY_WINDOW:]
    assert sorted(stats.latencies()) == sorted(latest)
    summary = stats.summary()
    assert summary["inference_us_p50"] == pytest.approx(np.percentile(latest, 50), abs=0.1)
    assert summary["inference_us_p99"] == pytest.approx(np.percentile(latest, 99), abs=0.1)


def test_latency_percentiles_before_the_ring_is_full():
    stats = ModelStats()
    for v in (10.0, 20.0, 30.0):
        stats.record_latency(v)
    summary = stats.summary()
    assert summary["inference_us_p50"] == 20.0  # the unwritten slots are not counted
    assert ModelStats().summary()["inference_us_p50"] == 0.0

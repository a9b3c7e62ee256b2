"""The soak benchmark's arithmetic (the soak itself runs minutes: ``tools/bench soak``)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tools.bench.soak import _figures, _heap_figures, _heap_now, _memory_kb, _type_growth


def samples(market_s: np.ndarray, anon_kb: np.ndarray, file_kb: np.ndarray) -> list[tuple]:
    """``(wall s, market s, RSS, anon, file KB)`` rows at speed 5."""
    rss = anon_kb + file_kb
    return list(zip(market_s / 5, market_s, rss, anon_kb, file_kb, strict=True))


def test_slope_is_per_market_time_after_warmup():
    market = np.arange(0.0, 601.0, 2.0)
    # Warm-up: +50 MB in the first 2 minutes (left out); then +1 KB per market minute.
    anon = 100_000.0 + np.where(market < 120, market / 120 * 50_000, 50_000 + (market - 120) / 60)
    file = np.full_like(market, 150_000.0)
    out = _figures(samples(market, anon, file), warmup_s=120.0)
    assert out["slope_kb_per_market_min"] == pytest.approx(1.0, abs=1e-6)
    assert out["mb_per_market_hour"] == pytest.approx(60 / 1024, abs=1e-3)
    assert out["kb_per_wall_s"] == pytest.approx(5 / 60, abs=0.01)  # rounded to 0.01
    assert out["late_half_mb_per_market_hour"] == pytest.approx(60 / 1024, abs=1e-3)
    assert out["by_kind"]["file"]["mb_per_market_hour"] == 0.0
    assert out["by_kind"]["anon"]["mb_per_market_hour"] == pytest.approx(60 / 1024, abs=1e-3)
    assert out["rss_mb"]["warmup"] == pytest.approx(300_000 / 1024, abs=0.1)
    assert out["growth_after_warmup_mb"] == pytest.approx(8 / 1024, abs=0.01)


def test_late_half_sees_a_structure_that_fills_then_stays_flat():
    # Pages that come in until a bounded structure is full (here at 6 minutes),
    # then nothing: the whole-window slope is positive, the later half's is zero.
    market = np.arange(0.0, 601.0, 2.0)
    anon = 100_000.0 + np.minimum(market, 360.0) * 10
    file = 150_000.0 + np.minimum(market, 300.0)
    out = _figures(samples(market, anon, file), warmup_s=120.0)
    assert out["mb_per_market_hour"] > 10
    assert out["late_half_mb_per_market_hour"] == pytest.approx(0.0, abs=1e-6)
    assert out["by_kind"]["file"]["mb_per_market_hour"] > 0


def test_memory_of_this_process():
    rss, anon, file = _memory_kb(os.getpid())
    assert anon > 0 and file > 0
    assert anon + file <= rss  # VmRSS = RssAnon + RssFile + RssShmem


def test_heap_slopes_are_per_market_hour_after_warmup():
    market = np.arange(0.0, 601.0, 2.0)
    # malloc: +20 MB during warm-up, then flat; free: +1 KB per market second after
    # it; Python blocks: +100 per market minute throughout.
    used = 50_000.0 + np.minimum(market, 120.0) / 120 * 20_480
    free = 1_000.0 + np.maximum(market - 120.0, 0.0)
    blocks = 300_000.0 + market / 60 * 100
    out = _heap_figures(list(zip(market, used, free, blocks, strict=True)), warmup_s=120.0)
    assert out["malloc_in_use_mb"]["per_market_hour"] == pytest.approx(0.0, abs=1e-6)
    assert out["malloc_in_use_mb"]["warmup"] == pytest.approx(70_480 / 1024, abs=0.01)
    assert out["malloc_free_mb"]["per_market_hour"] == pytest.approx(3600 / 1024, abs=1e-3)
    assert out["python_blocks"]["per_market_hour"] == pytest.approx(6000, abs=1e-3)
    assert out["python_blocks"]["end"] == pytest.approx(301_000)


def test_type_growth_ranks_the_types_that_grew():
    before = {"dict": 100, "list": 50, "Order": 3, "gone": 7}
    after = {"dict": 160, "list": 50, "Order": 40, "tuple": 5}
    assert _type_growth(before, after) == {"dict": 60, "Order": 37, "tuple": 5}


def test_heap_figures_of_this_process():
    held = np.full(4 << 20, 1.0)  # 32 MiB through malloc (mapped on its own)
    used, free, blocks = _heap_now()
    assert used >= held.nbytes / 1024
    assert free >= 0 and blocks > 1000
    del held
    assert _heap_now()[0] < used

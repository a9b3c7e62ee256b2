"""Calm runs (``ReplayDriver._calm_run``): risk samples that can only move figures are
taken in one vectorised call. They must change nothing but the speed: the journal,
every risk figure and the equity curve are those of taking each sample one by one,
with positions held through calm stretches, and with a ``stale`` trigger raised for
the whole run (candle-only data never has a quote)."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pyarrow.feather as feather
import pytest
import trio

from engine.core import ReplayDriver
from engine.risk import RiskMetrics
from engine.testing import replay, replay_config

ROOT = Path(__file__).resolve().parents[1]
KLINES = ROOT.parent / "shared" / "data" / "external" / "freqtrade_1m_usdm"
FAST = {"sample_ms": 200, "fast": 3, "slow": 8, "rsi_period": 5, "max_hold_ms": 3000}
# What may differ between two runs of the same replay: where (journal dir, so the
# config digest) and how fast it ran.
_RUN_ONLY = {
    "journal_path",
    "config_sha256",
    "setup_seconds",
    "wall_seconds",
    "events_per_second",
    "hardware",
}


def _one_by_one(self: ReplayDriver, ts: int) -> int:
    return ts + self._sample_ns


def _run(config, monkeypatch: pytest.MonkeyPatch, calm: bool) -> tuple[dict, tuple]:
    seen = {}
    original = ReplayDriver.run

    async def keep(self):
        await original(self)
        seen["curve"] = self.equity_curve

    with monkeypatch.context() as patch:
        patch.setattr(ReplayDriver, "run", keep)
        if not calm:
            patch.setattr(ReplayDriver, "_calm_run", _one_by_one)
        report = trio.run(replay, config)
    out = {k: v for k, v in attrs.asdict(report).items() if k not in _RUN_ONLY}
    return out, seen["curve"]


def _same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: list[Path], **sections) -> dict:
    results = []
    for calm in (True, False):
        config = replay_config(tmp_path / str(calm), data, **sections)
        results.append(_run(config, monkeypatch, calm))
    (calm_report, (calm_ts, calm_eq)), (plain_report, (plain_ts, plain_eq)) = results
    assert calm_report == plain_report  # bit for bit: journal digest, risk, trades
    assert np.array_equal(calm_ts, plain_ts) and np.array_equal(calm_eq, plain_eq)
    return calm_report


def test_calm_runs_change_nothing_with_positions_held(tmp_path, sample, monkeypatch):
    report = _same(tmp_path, monkeypatch, [sample], strategy=FAST, risk={"sample_ms": 50})
    assert report["fills"] > 0 and report["steps"] > 1000


def test_calm_runs_hold_through_a_stale_trigger_on_candle_data(tmp_path, monkeypatch):
    source = KLINES / "ADA_USDT_USDT-1m-futures.feather"
    if not source.exists():
        pytest.skip("needs ../shared/data/external/freqtrade_1m_usdm")
    data = tmp_path / "klines"
    data.mkdir()
    # Two days and a bit: the calm runs cross a UTC day, where the daily loss restarts.
    feather.write_feather(feather.read_table(source).slice(0, 3000), data / source.name)
    report = _same(tmp_path, monkeypatch, [data / source.name])
    assert report["steps"] > 3000 * 60 * 4 * 0.9  # one sample per 250 ms, none skipped
    assert report["orders"] == 0  # candles only: nothing can trade (the summary says so)


def test_record_equities_is_record_equity_in_a_loop():
    rng = np.random.default_rng(7)
    equities = (rng.standard_normal(2500).cumsum() * 3.0).tolist()
    one = RiskMetrics(capital=1000.0, step_ns=1, window=64)
    many = RiskMetrics(capital=1000.0, step_ns=1, window=64)
    for e in equities:
        one.record_equity(e)
    for chunk in (equities[:10], equities[10:11], equities[11:100], [], equities[100:]):
        many.record_equities(chunk)
    assert attrs.asdict(one, filter=lambda a, v: a.name != "_ring") == attrs.asdict(
        many, filter=lambda a, v: a.name != "_ring"
    )
    assert np.array_equal(one.returns(), many.returns())
    assert one.summary() == many.summary()

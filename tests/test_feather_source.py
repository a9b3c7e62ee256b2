"""Freqtrade's data directory (feather files) as a replay source."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

import engine
from engine import DataError
from engine.feeds import CaptureStats, expand_paths, merge_captures, scan_symbols
from engine.feeds._capture import Kline, MarkPrice
from engine.feeds._feather import read_feather_source
from engine.feeds._tape import load_tape
from engine.ledger import PositionLedger
from engine.messages import EventKind, FundingApplied
from engine.venues.sim import SimVenue

REPO = Path(__file__).resolve().parents[1]
FREQTRADE = REPO.parent / "shared/data/external/freqtrade_1m_usdm"
needs_data = pytest.mark.skipif(not FREQTRADE.is_dir(), reason="shared Freqtrade data absent")
MIN = 60_000_000_000
H8 = 8 * 60 * MIN


def write_candles(path: Path, dates_ns, close, *, high=None, low=None, volume=None) -> Path:
    n = len(dates_ns)
    close = np.asarray(close, dtype=float)
    table = pa.table(
        {
            "date": pa.array(dates_ns, type=pa.timestamp("ns", tz="UTC")),
            "open": close,
            "high": close + 1 if high is None else high,
            "low": close - 1 if low is None else low,
            "close": close,
            "volume": np.ones(n) if volume is None else volume,
        }
    )
    feather.write_feather(table, path)
    return path


def funding_dir(tmp_path: Path, *, with_mark: bool = True) -> Path:
    """Three hours of BTC candles across the 16:00 funding time, 8 h funding, 8 h marks."""
    start = 1_746_374_400_000_000_000  # 2025-05-04 16:00 UTC, a funding time
    dates = [start - 90 * MIN + i * MIN for i in range(180)]
    write_candles(tmp_path / "BTC_USDT_USDT-1m-futures.feather", dates, 95_000 + np.arange(180))
    fund_times = [start - 2 * H8, start - H8, start, start + H8]
    rates = [1e-4, 2e-4, 3e-4, 4e-4]
    feather.write_feather(
        pa.table(
            {
                "date": pa.array(fund_times, type=pa.timestamp("ns", tz="UTC")),
                "open": rates,
                "high": [0.0] * 4,
                "low": [0.0] * 4,
                "close": [0.0] * 4,
                "volume": [0.0] * 4,
            }
        ),
        tmp_path / "BTC_USDT_USDT-8h-funding_rate.feather",
    )
    if with_mark:
        write_candles(
            tmp_path / "BTC_USDT_USDT-8h-mark.feather",
            fund_times,
            [90_000.0, 91_000, 92_000, 93_000],
        )
    return tmp_path


def test_candles_and_funding_become_kline_and_mark_events(tmp_path):
    data = funding_dir(tmp_path)
    stats = CaptureStats()
    paths = expand_paths([data])
    assert scan_symbols(paths) == ["BTCUSDT"]
    events = list(merge_captures(paths, stats))
    klines = [(ts, m) for ts, m in events if isinstance(m, Kline)]
    marks = [(ts, m) for ts, m in events if isinstance(m, MarkPrice)]
    assert len(klines) == 180
    first_open = 1_746_374_400_000_000_000 - 90 * MIN
    # At its close: open time + 1 m - 1 ms, as Binance's close_time.
    assert klines[0][0] == first_open + MIN - 1_000_000
    assert klines[0][1].bar.close == 95_000.0 and klines[0][1].bar.closed
    # 08:00 (before the candles) is announced at the first candle; 16:00 is settled
    # inside; 00:00 the next day is past the last candle.
    assert [ts for ts, _ in marks] == [klines[0][0], 1_746_374_400_000_000_000]
    announce, settle = marks[0][1], marks[1][1]
    assert announce.next_funding_time * 1_000_000 == 1_746_374_400_000_000_000
    assert announce.funding_rate == 3e-4 and announce.mark == 91_000.0
    assert settle.mark == 92_000.0  # the mark candle opening at the funding time
    assert settle.funding_rate == 4e-4
    assert stats.skipped["outside_candles"] == 2


def test_mark_price_falls_back_to_the_candle_close(tmp_path):
    data = funding_dir(tmp_path, with_mark=False)
    marks = [
        m
        for _, m in merge_captures(expand_paths([data]), CaptureStats())
        if isinstance(m, MarkPrice)
    ]
    # The last candle closed at or before 16:00 is the one opened at 15:59 (index 89).
    assert marks[1].mark == 95_000.0 + 89


def test_funding_without_candles_is_skipped_and_counted(tmp_path):
    data = funding_dir(tmp_path)
    (data / "BTC_USDT_USDT-1m-futures.feather").unlink()
    paths = expand_paths([data])
    assert scan_symbols(paths) == []
    stats = CaptureStats()
    assert list(merge_captures(paths, stats)) == []
    assert stats.skipped["no_candles"] == 8  # four funding and four mark rows


def test_bad_rows_are_skipped_by_reason(tmp_path):
    dates = [1_746_374_400_000_000_000 + i * MIN for i in range(5)]
    close = [100.0, math.nan, 102.0, 0.0, 104.0]
    high = [101.0, 102, 101.0, 1.0, 105]  # row 3: close above high
    low = [99.0, 100, 100.0, 0.0, 103]
    path = write_candles(
        tmp_path / "ETH_USDT_USDT-1m-futures.feather", dates, close, high=high, low=low
    )
    stats = CaptureStats()
    events = list(read_feather_source(path, stats))
    assert [m.bar.close for _, m in events] == [100.0, 104.0]
    assert stats.lines == 5
    assert dict(stats.skipped) == {"bad_row": 1, "bad_candle": 1, "bad_price": 1}
    assert [m.symbol for _, m in events] == ["ETHUSDT", "ETHUSDT"]


def test_spot_and_coin_margined_names(tmp_path):
    dates = [1_746_374_400_000_000_000]
    spot = write_candles(tmp_path / "BTC_USDT-1m.feather", dates, [100.0])
    assert scan_symbols([spot]) == ["BTCUSDT.SPOT"]
    inverse = write_candles(tmp_path / "BTC_USD_BTC-1m-futures.feather", dates, [100.0])
    with pytest.raises(DataError, match=r"BTC_USD_BTC-1m-futures\.feather: .*coin-margined"):
        scan_symbols([inverse])


def test_damaged_file_is_refused_naming_it(tmp_path):
    path = write_candles(
        tmp_path / "BTC_USDT_USDT-1m-futures.feather",
        [1_746_374_400_000_000_000 + i * MIN for i in range(1000)],
        np.full(1000, 100.0),
    )
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"BTC_USDT_USDT-1m-futures\.feather: cannot read"):
        list(read_feather_source(path, CaptureStats()))
    # The command line: one line naming the file, exit 2.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "--data",
            str(path),
            "--set",
            "data.tick_store=off",
            "--set",
            f"journal.dir={tmp_path / 'runs'}",
            "--set",
            f"logging.path={tmp_path / 'log.jsonl'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "BTC_USDT_USDT-1m-futures.feather: cannot read" in proc.stderr


def test_not_freqtrades_shape_is_refused(tmp_path):
    path = tmp_path / "BTC_USDT_USDT-1m-futures.feather"
    feather.write_feather(pa.table({"time": [1, 2], "price": [1.0, 2.0]}), path)
    with pytest.raises(DataError, match=r"futures.feather: not Freqtrade's shape"):
        list(read_feather_source(path, CaptureStats()))


@needs_data
def test_real_freqtrade_directory_reads():
    paths = expand_paths([FREQTRADE])
    symbols = scan_symbols(paths)
    assert len(symbols) == 16 and "BTCUSDT" in symbols
    assert "ALGOUSDT" not in symbols  # funding and mark files only: no candles
    btc = [p for p in paths if p.name.startswith("BTC_")]
    stats = CaptureStats()
    events = list(merge_captures(btc, stats, frozenset({"BTCUSDT"})))
    table = feather.read_table(FREQTRADE / "BTC_USDT_USDT-1m-futures.feather")
    klines = [m for _, m in events if isinstance(m, Kline)]
    assert len(klines) == table.num_rows == 43_199
    assert klines[-1].bar.close == table.column("close")[-1].as_py()
    marks = [(ts, m) for ts, m in events if isinstance(m, MarkPrice)]
    # 89 funding times in the candles' span (the funding file ends on 2025-06-03 00:00),
    # plus the one before the first candle, announced at it.
    assert len(marks) == 90
    # Each row names the next one's time: the venue settles each in turn.
    for (_, a), (ts_b, _b) in itertools.pairwise(marks[1:]):
        assert a.next_funding_time * 1_000_000 == ts_b
    assert all(m.mark > 50_000 for _, m in marks)


def test_candle_only_replay_says_the_strategy_cannot_trade(tmp_path):
    (tmp_path / "data").mkdir()
    data = funding_dir(tmp_path / "data")
    result = engine.backtest(
        None,
        data=data,
        **{
            "journal.dir": str(tmp_path / "runs"),
            "logging.path": str(tmp_path / "log.jsonl"),
            "data.tick_store": "off",
        },
    )
    assert result.report.orders == 0
    assert result.report.events == 182
    assert (
        "  WARNING       strategy ema_cross reads quotes; the data has candles and marks only "
        "(BTCUSDT): no signal can fire and no order can fill there"
    ) in result.text.splitlines()
    assert result.report.feed["notes"][0].startswith("strategy ema_cross reads quotes")


def test_funding_from_freqtrade_files_is_settled_on_an_open_position(tmp_path):
    # The venue settles funding from the MARK rows the reader makes (the replay
    # driver hands it each MARK row in turn): a long of 0.5 BTC pays the 16:00 rate
    # (3e-4, announced by the row before) at the 16:00 mark price (92,000).
    data = funding_dir(tmp_path)
    tape = load_tape(expand_paths([data]), ["BTCUSDT"], stats=CaptureStats())
    ticks = tape.ticks["BTCUSDT"]
    venue = SimVenue(latency_ns=0, taker_fee_rate=0.0, ledger=PositionLedger())
    venue.ledger.apply_fill("BTCUSDT", 0.5, 95_000.0, 0.0)
    for row in np.flatnonzero(ticks.kind == EventKind.MARK).tolist():
        venue.on_mark_row("BTCUSDT", ticks, row)
    funding = [e for e in venue.take_ops() if isinstance(e, FundingApplied)]
    assert len(funding) == 1
    assert funding[0].rate == 3e-4 and funding[0].mark_price == 92_000.0
    assert funding[0].amount == pytest.approx(-0.5 * 92_000.0 * 3e-4)
    assert funding[0].ts_event == 1_746_374_400_000_000_000
    assert venue.funding["BTCUSDT"] == pytest.approx(-13.8)

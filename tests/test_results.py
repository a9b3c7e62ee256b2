"""Trade-level results: round trips from a real journal, statistics, the trade list, the
summary and the JSON report (engine.results, --trades, --report)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import trio

from engine._cli import main
from engine.journal import Journal
from engine.ledger import PositionLedger
from engine.messages import FundingApplied, OrderFilled, PositionChanged, Purpose, Side
from engine.results import (
    MAX_CURVE_POINTS,
    MIN_DAILY_RETURNS,
    OPEN_AT_END,
    daily_returns,
    downsample,
    read_round_trips,
    read_trades,
    realized_curve,
    run_results,
    trade_stats,
)
from engine.testing import replay, replay_config

ROOT = Path(__file__).resolve().parents[1]
HISTORY = ROOT.parent / "shared" / "data" / "external" / "hftbacktest_history"
S = 1_000_000_000
FAST = {"sample_ms": 200, "fast": 3, "slow": 8, "rsi_period": 5, "max_hold_ms": 3000}


def _fill(symbol, side, qty, price, fee, t, purpose="ENTRY", corr="c"):
    return OrderFilled(
        client_order_id=f"o{t}",
        symbol=symbol,
        purpose=Purpose(purpose),
        side=side,
        last_qty=qty,
        last_price=price,
        cum_qty=qty,
        order_qty=qty,
        fee=fee,
        ts_event=t * S,
        ts_init=t * S,
        seq=t,
        correlation_id=corr,
    )


def _move(symbol, source, target, trigger, t):
    return PositionChanged(
        symbol=symbol,
        source=source,
        target=target,
        trigger=trigger,
        position_qty=0.0,
        ts_event=t * S,
        ts_init=t * S,
        seq=t,
        correlation_id="m",
    )


def _funding(symbol, amount, t):
    return FundingApplied(
        symbol=symbol,
        rate=0.0001,
        mark_price=100.0,
        position_qty=1.0,
        amount=amount,
        ts_event=t * S,
        ts_init=t * S,
        seq=t,
    )


# BTC: a long entered in two partial fills (1 @ 100, 3 @ 104: average 103), funding paid
# while held, a take-profit exit in two fills (2 @ 110, 2 @ 112: average 111).
# ETH: a short (2 @ 50) stopped out by a buy of 5 @ 52 that flips it: 2 close the
# short, 3 open a long that is still open at the end (funding received on it).
RECORDS = [
    _fill("BTCUSDT", Side.BUY, 1.0, 100.0, 0.1, 1, corr="BTC-d1"),
    _move("BTCUSDT", "ORDERING", "ORDERING", "partially_filled", 1),
    _fill("BTCUSDT", Side.BUY, 3.0, 104.0, 0.3, 2, corr="BTC-d1"),
    _move("BTCUSDT", "ORDERING", "IN_POSITION", "filled", 2),
    _funding("BTCUSDT", -0.05, 3),
    _move("BTCUSDT", "IN_POSITION", "EXITING", "take_profit", 4),
    _move("BTCUSDT", "EXITING", "EXITING", "submitted", 4),
    _fill("ETHUSDT", Side.SELL, 2.0, 50.0, 0.2, 4, corr="ETH-d1"),
    _fill("BTCUSDT", Side.SELL, 2.0, 110.0, 0.2, 5, "EXIT", "BTC-2"),
    _fill("BTCUSDT", Side.SELL, 2.0, 112.0, 0.2, 6, "EXIT", "BTC-2"),
    _move("BTCUSDT", "EXITING", "IDLE", "filled", 6),
    _move("ETHUSDT", "IN_POSITION", "EXITING", "stop_loss", 5),
    _fill("ETHUSDT", Side.BUY, 5.0, 52.0, 0.5, 7, "EXIT", "ETH-2"),
    _funding("ETHUSDT", 0.07, 20),
]


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.append(0, RECORDS[:7])
        journal.append(1, RECORDS[7:])
    return path


def test_round_trips_from_a_journal_partial_fills_funding_and_a_flip(journal_path):
    btc, eth_short, eth_long = read_trades(journal_path)
    assert (btc.symbol, btc.side, btc.exit_reason) == ("BTCUSDT", "LONG", "take_profit")
    assert btc.qty == 4.0 and btc.entry_price == pytest.approx(103.0)
    assert btc.exit_price == pytest.approx(111.0)
    assert (btc.entry_fills, btc.exit_fills, btc.correlation_id) == (2, 2, "BTC-d1")
    assert btc.hold_s == pytest.approx(5.0)
    assert btc.fees == pytest.approx(0.8) and btc.funding == pytest.approx(-0.05)
    assert btc.gross_pnl == pytest.approx(32.0)
    assert btc.net_pnl == pytest.approx(32.0 - 0.8 - 0.05)
    assert btc.ret == pytest.approx(btc.net_pnl / 412.0)

    assert (eth_short.side, eth_short.qty, eth_short.exit_reason) == ("SHORT", 2.0, "stop_loss")
    assert eth_short.exit_price == 52.0 and eth_short.hold_s == pytest.approx(3.0)
    assert eth_short.fees == pytest.approx(0.2 + 0.2)  # 2/5 of the flip's fee
    assert eth_short.net_pnl == pytest.approx(-4.0 - 0.4)

    assert eth_long.side == "LONG" and not eth_long.closed
    assert eth_long.exit_reason == OPEN_AT_END and eth_long.exit_price is None
    assert eth_long.qty == pytest.approx(3.0) and eth_long.entry_price == 52.0
    assert eth_long.fees == pytest.approx(0.3) and eth_long.funding == pytest.approx(0.07)


def test_realized_curve_matches_the_ledger_on_the_same_fills(journal_path):
    """The curve's end is what the engine's own ledger books: realized - fees + funding."""
    ledger = PositionLedger()
    funding = 0.0
    for r in RECORDS:
        if isinstance(r, OrderFilled):
            ledger.apply_fill(r.symbol, int(r.side) * r.last_qty, r.last_price, r.fee)
        elif isinstance(r, FundingApplied):
            funding += r.amount
    booked = sum(a.realized - a.fees for a in ledger.accounts.values()) + funding
    ts, pnl = realized_curve(read_round_trips(journal_path).pnl_events)
    assert np.all(np.diff(ts) >= 0)
    assert pnl[-1] == pytest.approx(booked)


def test_statistics_of_the_journal(journal_path):
    results = run_results(journal_path, start_equity=1000.0)
    s = results.stats
    assert s["trades"] == 2 and s["open_at_end"] == 1
    assert s["win_rate"] == 0.5
    assert s["avg_win"] == pytest.approx(31.15) and s["avg_loss"] == pytest.approx(-4.4)
    assert s["profit_factor"] == pytest.approx(31.15 / 4.4)
    assert s["expectancy"] == pytest.approx((31.15 - 4.4) / 2)
    assert s["avg_hold_s"] == pytest.approx(4.0) and s["max_hold_s"] == pytest.approx(5.0)
    assert s["exit_reasons"] == {"stop_loss": 1, "take_profit": 1}
    assert s["long"]["trades"] == 1 and s["short"]["trades"] == 1
    assert [r["symbol"] for r in s["per_symbol"]] == ["BTCUSDT", "ETHUSDT"]
    assert s["fees"] == pytest.approx(0.8 + 0.4 + 0.3)  # the open trade's entry fee too
    assert s["funding"] == pytest.approx(0.02)
    assert s["start_equity"] == 1000.0
    assert s["end_equity"] == pytest.approx(1000.0 + 31.15 - 4.63) == results.equity[-1]
    assert s["sharpe"] is None and s["sortino"] is None
    assert s["ratio_note"].startswith("n/a (run too short")


def test_sharpe_and_sortino_only_from_enough_daily_returns():
    rng = np.random.default_rng(7)
    start = 1_700_000_000 * S
    for days, expect in ((MIN_DAILY_RETURNS - 5, False), (MIN_DAILY_RETURNS + 20, True)):
        ts = start + np.arange(days * 24, dtype=np.int64) * 3600 * S  # hourly samples
        pnl = np.cumsum(rng.normal(1.0, 20.0, ts.shape[0]))
        s = trade_stats([], start_equity=10_000.0, curve=(ts, pnl))
        assert (s["sharpe"] is not None) is expect, days
        if expect:
            daily = daily_returns(np.r_[ts[0], ts], 10_000.0 + np.r_[0.0, pnl])
            assert s["daily_returns"] == daily.shape[0] >= MIN_DAILY_RETURNS
            want = daily.mean() / daily.std(ddof=1) * math.sqrt(365)
            assert s["sharpe"] == pytest.approx(want)
            assert s["ratio_note"] is None
        else:
            assert "run too short" in s["ratio_note"]


def test_daily_returns_use_the_equity_at_each_utc_midnight():
    day = 86_400 * S
    ts = np.array([0, day // 2, day + 1, 2 * day - 1, 2 * day + 5], dtype=np.int64)
    equity = np.array([100.0, 110.0, 121.0, 99.0, 133.1])
    # midnights at day and 2*day: equity 110 and 99; then the last sample.
    assert daily_returns(ts, equity) == pytest.approx([0.1, 99 / 110 - 1, 133.1 / 99 - 1])


def test_downsample_keeps_extremes_ends_and_is_deterministic():
    rng = np.random.default_rng(1)
    ts = np.arange(100_000, dtype=np.int64)
    values = np.cumsum(rng.normal(size=ts.shape[0]))
    a = downsample(ts, values, 500)
    b = downsample(ts.copy(), values.copy(), 500)
    assert len(a[0]) <= 500 and np.array_equal(a[0], b[0])
    assert a[0][0] == 0 and a[0][-1] == ts[-1] and np.all(np.diff(a[0]) > 0)
    assert a[1].min() == values.min() and a[1].max() == values.max()
    short = downsample(ts[:10], values[:10], 500)
    assert np.array_equal(short[1], values[:10])


def test_bundled_sample_cli_summary_report_and_trade_files(tmp_path, sample, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[data]\npaths = ["{sample}"]\n[journal]\ndir = "{tmp_path / "runs"}"\n'
        f'[logging]\npath = "{tmp_path / "engine.jsonl"}"\n'
    )
    args = ["--config", str(cfg), "--report", str(tmp_path / "r.json")]
    assert main([*args, "--trades", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    stats = report["trades"]
    assert stats["trades"] == report["round_trips"] > 0
    assert stats["net_pnl"] == pytest.approx(report["net_pnl"])  # flat at the end
    assert stats["fees"] == pytest.approx(report["fees"])
    assert sum(stats["exit_reasons"].values()) == stats["trades"]
    for word in ("win rate", "profit factor", "exit reasons", "long / short", "BTCUSDT"):
        assert word in out
    assert "sharpe        n/a (run too short" in out and "-681" not in out
    curve = report["equity_curve"]
    assert 0 < len(curve["ts"]) == len(curve["equity"]) <= MAX_CURVE_POINTS
    assert curve["equity"][-1] == pytest.approx(stats["start_equity"] + report["net_pnl"])
    assert stats["end_equity"] == pytest.approx(curve["equity"][-1])
    with (tmp_path / "t.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == report["round_trips"]
    assert sum(float(r["net_pnl"]) for r in rows) == pytest.approx(report["net_pnl"])

    # Parquet: the same rows, times as UTC timestamps; the journal is the same run's.
    assert main([*args, "--trades", str(tmp_path / "t.parquet")]) == 0
    capsys.readouterr()
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(tmp_path / "t.parquet").to_pylist()
    assert [r["net_pnl"] for r in table] == [float(r["net_pnl"]) for r in rows]
    assert [r["exit_reason"] for r in table] == [r["exit_reason"] for r in rows]
    assert str(pq.read_schema(tmp_path / "t.parquet").field("entry_ts").type).startswith(
        "timestamp[ns"
    )


@pytest.mark.parametrize(
    ("flag", "name"),
    [("--trades", "t.xlsx"), ("--trades", "t"), ("--tearsheet", "t.pdf")],
)
def test_bad_results_path_exits_2_with_one_line_before_running(tmp_path, capsys, flag, name):
    assert main([flag, str(tmp_path / name), "--set", f"journal.dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {flag}: ")
    assert not list(tmp_path.glob("*.sqlite"))  # refused before anything ran


@pytest.mark.skipif(not HISTORY.is_dir(), reason="needs ../shared/data/external")
def test_two_symbol_capture_trades_match_the_ledger_per_symbol(tmp_path):
    data = [HISTORY / "usdm_btcusdt_20240719.gz", HISTORY / "usdm_ethusdt_20240719.gz"]
    config = replay_config(tmp_path, data, strategy=FAST, model={"enabled": False})
    report = trio.run(replay, config)
    trades = read_trades(Path(report.journal_path))
    assert report.trades["trades"] + report.trades["open_at_end"] == len(trades)
    for row in report.per_symbol:
        mine = [t for t in trades if t.symbol == row.symbol]
        closed = [t for t in mine if t.closed]
        assert len(closed) == row.round_trips
        assert sum(t.fees for t in mine) == pytest.approx(row.fees)
        if not any(not t.closed for t in mine):
            assert sum(t.net_pnl for t in closed) == pytest.approx(row.realized_pnl - row.fees)
    assert report.trades["trades"] > 0
    assert report.equity_curve["source"].startswith("equity marked")


def test_a_position_adopted_at_a_live_start_is_a_trade_its_exit_closes(tmp_path):
    from engine.messages import PositionReconciled

    path = tmp_path / "live.sqlite"
    adopted = PositionReconciled(
        symbol="BTCUSDT", qty=-2.0, avg_price=100.0, ts_event=1 * S, ts_init=1 * S, seq=1
    )
    with Journal(path) as journal:
        journal.append(0, [adopted, _move("BTCUSDT", "IN_POSITION", "EXITING", "flatten", 2)])
        journal.append(1, [_fill("BTCUSDT", Side.BUY, 2.0, 99.0, 0.1, 3, "EXIT")])
    (trade,) = read_trades(path)
    assert (trade.side, trade.qty, trade.entry_price, trade.exit_price) == (
        "SHORT",
        2.0,
        100.0,
        99.0,
    )
    assert trade.exit_reason == "flatten" and trade.correlation_id == "reconciled"
    assert trade.entry_fills == 0 and trade.net_pnl == pytest.approx(2.0 - 0.1)

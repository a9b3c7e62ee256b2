"""The per-strategy part of the report: orders by type, fills and fees by liquidity
(engine.results.OrderActivity), next to win rate, average hold and exit reasons; from a
journal written record by record, and from replays whose orders rest (maker) or take."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio

from engine._report import _execution_lines, summary_text
from engine.journal import Journal
from engine.messages import (
    OrderCanceled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    Purpose,
    Side,
    SubmitOrder,
)
from engine.results import OrderActivity, read_order_activity
from engine.testing import replay, replay_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
S = 1_000_000_000


def _submit(t, order_type="MARKET", purpose="ENTRY", reduce_only=False, **prices):
    return SubmitOrder(
        client_order_id=f"o{t}",
        symbol="BTCUSDT",
        side=Side.BUY,
        qty=1.0,
        ref_price=100.0,
        purpose=Purpose(purpose),
        reduce_only=reduce_only,
        order_type=order_type,
        ts_event=t * S,
        ts_init=t * S,
        seq=t,
        correlation_id=f"c{t}",
        **prices,
    )


def _fill(t, qty, price, fee, liquidity):
    return OrderFilled(
        client_order_id=f"o{t}",
        symbol="BTCUSDT",
        purpose=Purpose.ENTRY,
        side=Side.BUY,
        last_qty=qty,
        last_price=price,
        cum_qty=qty,
        order_qty=qty,
        fee=fee,
        liquidity=liquidity,
        ts_event=t * S,
        ts_init=t * S,
        seq=100 + t,
        correlation_id=f"c{t}",
    )


def _event(cls, t, **extra):
    return cls(
        client_order_id=f"o{t}",
        symbol="BTCUSDT",
        purpose=Purpose.ENTRY,
        ts_event=t * S,
        ts_init=t * S,
        seq=200 + t,
        correlation_id=f"c{t}",
        **extra,
    )


RECORDS = [
    _submit(1),
    _fill(1, 1.0, 100.0, 0.05, "TAKER"),
    _submit(2, "LIMIT", price=99.0, time_in_force="GTX"),
    _fill(2, 0.5, 99.0, -0.00495, "MAKER"),
    _fill(2, 0.5, 99.0, -0.00495, "MAKER"),
    _submit(3, "LIMIT", price=98.0),  # GTC: left out of the journal record
    _event(OrderCanceled, 3, cum_qty=0.0, reason="replaced"),
    _submit(4, "LIMIT", price=101.0, time_in_force="IOC"),
    _event(OrderExpired, 4, cum_qty=0.0, reason="IOC"),
    _submit(5, "STOP_MARKET", "EXIT", reduce_only=True, stop_price=95.0),
    _submit(6, "LIMIT", price=100.2, time_in_force="GTX"),
    _event(OrderRejected, 6, reason="-5022"),
    _submit(7),
    _event(OrderDenied, 7, reason="max_notional"),
]


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.append(0, RECORDS[:5])
        journal.append(1, RECORDS[5:])
    return path


def test_orders_by_type_and_fills_by_liquidity_from_a_journal(journal_path):
    got = read_order_activity(journal_path).summary()
    assert got["orders"] == 7
    assert got["by_type"] == {"LIMIT": 4, "MARKET": 2, "STOP_MARKET": 1}
    assert got["limit_by_tif"] == {"GTC": 1, "GTX": 2, "IOC": 1}
    assert got["by_purpose"] == {"ENTRY": 6, "EXIT": 1}
    assert got["reduce_only"] == 1
    assert got["outcomes"] == {"canceled": 1, "denied": 1, "expired": 1, "rejected": 1}
    maker, taker = got["fills"]["MAKER"], got["fills"]["TAKER"]
    assert maker["fills"] == 2 and maker["qty"] == 1.0 and maker["notional"] == 99.0
    assert maker["fees"] == pytest.approx(-0.0099) and maker["fee_bps"] == pytest.approx(-1.0)
    assert taker["fills"] == 1 and taker["fees"] == 0.05 and taker["fee_bps"] == pytest.approx(5)
    assert got["maker_share"] == pytest.approx(99.0 / 199.0)
    lines = _execution_lines(got)
    assert lines[0] == (
        "  order types   LIMIT 4, MARKET 2, STOP_MARKET 1 (LIMIT: GTC 1, GTX 2, IOC 1);"
        " ENTRY 6, EXIT 1; canceled 1, denied 1, expired 1, rejected 1"
    )
    assert lines[1] == (
        "  maker/taker   maker 2 fills, fees -0.0099 (-1.00 bps) / taker 1 fills, fees 0.0500"
        " (5.00 bps); maker share 49.7%"
    )


def test_a_recovered_fill_counts_with_unknown_liquidity():
    activity = OrderActivity()
    activity.feed("FillRecovered", {"qty": 2.0, "price": 10.0, "fee": 0.01, "side": 1})
    activity.feed("PositionChanged", {"symbol": "X"})  # not an order record: ignored
    got = activity.summary()
    assert got["fills"] == {
        "UNKNOWN": {"fills": 1, "qty": 2.0, "notional": 20.0, "fees": 0.01, "fee_bps": 5.0}
    }
    assert got["maker_share"] == 0.0 and got["orders"] == 0
    assert OrderActivity().summary()["maker_share"] is None
    assert _execution_lines(OrderActivity().summary())[1].startswith("  maker/taker   no fills")


@pytest.mark.parametrize(
    ("entry_order", "entry_type"),
    [("market", "MARKET"), ("limit_gtx", "LIMIT")],
)
def test_a_replay_reports_what_its_orders_did(tmp_path, entry_order, entry_type):
    config = replay_config(
        tmp_path,
        [SAMPLE],
        strategy={
            "sample_ms": 200, "fast": 3, "slow": 8, "rsi_period": 5, "max_hold_ms": 3000,
            "entry_order": entry_order, "entry_timeout_ms": 5000,
        },
        model={"enabled": False},
    )  # fmt: skip
    report = trio.run(replay, config)
    ex = report.trades["execution"]
    assert ex["by_type"].get(entry_type, 0) > 0
    assert ex["by_purpose"]["EXIT"] > 0
    fills = ex["fills"]
    # The report's totals are the sums of the liquidity rows.
    assert sum(r["fills"] for r in fills.values()) == report.fills
    assert math.isclose(sum(r["fees"] for r in fills.values()), report.fees, rel_tol=1e-9)
    # The simulated venue's fees: taker 5 bps, maker 2 bps (the [venue] defaults).
    taker = fills["TAKER"]
    assert taker["fee_bps"] == pytest.approx(config.venue.taker_fee_bps)
    if entry_order == "limit_gtx":
        assert ex["limit_by_tif"] == {"GTX": ex["by_type"]["LIMIT"]}
        assert fills["MAKER"]["fills"] > 0 and 0.0 < ex["maker_share"] < 1.0
        assert fills["MAKER"]["fee_bps"] == pytest.approx(config.venue.maker_fee_bps)
    else:
        assert set(fills) == {"TAKER"} and ex["maker_share"] == 0.0
    text = summary_text(report)
    assert "  order types   " in text and "  maker/taker   " in text
    # Win rate, average hold and exit reasons stay beside them.
    assert report.trades["win_rate"] is not None and report.trades["avg_hold_s"] > 0
    assert sum(report.trades["exit_reasons"].values()) == report.trades["trades"]

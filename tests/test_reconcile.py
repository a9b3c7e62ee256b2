"""Start-up reconciliation: the journal's view, the plan, and the driver."""

from __future__ import annotations

import urllib.parse
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

import fsm
from engine.journal import Journal
from engine.messages import (
    FillRecovered,
    OrderAccepted,
    OrderFilled,
    OrderReconciled,
    PositionReconciled,
    Purpose,
    Side,
    SubmitOrder,
)
from engine.testing import quiet_logger
from engine.venues.binance import (
    BinanceRestClient,
    Credentials,
    ExchangeSnapshot,
    JournalView,
    RateLimiter,
    ReconciliationError,
    ServerClock,
    journal_view_from_file,
    journal_view_from_files,
    plan_reconciliation,
    reconcile,
    venue_client_order_id,
)

SYMBOL = "BTCUSDT"
T0 = 1_700_000_000_000_000_000  # ns


def submit(n: int, *, side: Side = Side.BUY, qty: float = 0.01, ts: int = T0) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=f"tr-{SYMBOL}-{n}", symbol=SYMBOL, side=side, qty=qty,
        ref_price=60000.0, purpose=Purpose.ENTRY, reduce_only=False,
        ts_event=ts + n, ts_init=ts + n, seq=n, correlation_id=f"{SYMBOL}-{n}",
    )  # fmt: skip


def vid(order: SubmitOrder) -> str:
    return venue_client_order_id(order.symbol, order.client_order_id, order.ts_event, order.seq)


def filled(order: SubmitOrder, qty: float, cum: float, price: float = 60000.0) -> OrderFilled:
    return OrderFilled(
        client_order_id=order.client_order_id, symbol=SYMBOL, purpose=order.purpose,
        side=order.side, last_qty=qty, last_price=price, cum_qty=cum, order_qty=order.qty,
        fee=0.1, ts_event=order.ts_event + 10, ts_init=order.ts_event + 10, seq=100 + order.seq,
        correlation_id=order.correlation_id,
    )  # fmt: skip


def accepted(order: SubmitOrder, venue_order_id: int) -> OrderAccepted:
    return OrderAccepted(
        client_order_id=order.client_order_id, symbol=SYMBOL, purpose=order.purpose,
        venue_order_id=venue_order_id, ts_event=order.ts_event + 5, ts_init=order.ts_event + 5,
        seq=50 + order.seq, correlation_id=order.correlation_id,
    )  # fmt: skip


@pytest.fixture
def journal_file(tmp_path: Path) -> Path:
    """Order 1 filled (long 0.01); order 2 acked, then the engine died; order 3 sent, no answer."""
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    o1, o2, o3 = submit(1), submit(2), submit(3)
    j.append(0, [o1, accepted(o1, 11), filled(o1, 0.01, 0.01)])
    j.append(1, [o2, accepted(o2, 12), o3])
    j.close()
    return path


def trade(tid: int, order_id: int, qty: str, side: str = "BUY", *, time_ms: int = 1) -> dict:
    return {
        "id": tid, "orderId": order_id, "symbol": SYMBOL, "side": side, "price": "60100.0",
        "qty": qty, "commission": "0.02", "commissionAsset": "USDT", "time": time_ms,
    }  # fmt: skip


def order_json(order: SubmitOrder, order_id: int, status: str, executed: str) -> dict:
    return {"symbol": SYMBOL, "clientOrderId": vid(order), "orderId": order_id,
            "status": status, "executedQty": executed, "avgPrice": "60100.0", "origQty": "0.010",
            "side": "BUY", "updateTime": 5, "reduceOnly": False}  # fmt: skip


def position(amount: str) -> dict:
    return {
        "symbol": SYMBOL, "positionAmt": amount, "entryPrice": "60050.0", "positionSide": "BOTH"
    }  # fmt: skip


def test_journal_view_rebuilds_open_orders_and_positions(journal_file: Path) -> None:
    view = journal_view_from_file(journal_file)
    o2, o3 = submit(2), submit(3)
    assert [(o.client_order_id, o.status) for o in view.orders] == [
        (o2.client_order_id, fsm.OrderStatus.NEW),
        (o3.client_order_id, fsm.OrderStatus.SUBMITTED),
    ]
    assert [o.venue_client_order_id for o in view.orders] == [vid(o2), vid(o3)]
    assert view.orders[0].venue_order_id == 12
    assert view.positions[SYMBOL][0] == pytest.approx(0.01)
    assert view.known_venue_order_ids == {11, 12}
    assert len(view.used_client_order_ids) == 3


def test_ids_never_repeat_after_a_restart() -> None:
    # The engine restarts its numbering: same engine id, later decision time.
    before, after = submit(1, ts=T0), submit(1, ts=T0 + 3_600_000_000_000)
    assert before.client_order_id == after.client_order_id
    assert vid(before) != vid(after)
    assert vid(before) == vid(submit(1, ts=T0))  # a resend keeps its id


def test_fills_the_journal_missed_are_recovered(journal_file: Path) -> None:
    view = journal_view_from_file(journal_file)
    o2, o3 = submit(2), submit(3)
    snapshot = ExchangeSnapshot(
        open_orders=(),
        position_risk=(position("0.025"),),
        trades={SYMBOL: (trade(1, 12, "0.004"), trade(2, 12, "0.006"), trade(3, 13, "0.005"))},
        queried={
            vid(o2): order_json(o2, 12, "FILLED", "0.010"),
            vid(o3): order_json(o3, 13, "PARTIALLY_FILLED", "0.005") | {"status": "CANCELED"},
        },
    )
    plan = plan_reconciliation(view, snapshot, symbols=[SYMBOL], policy="cancel")
    assert [(f.client_order_id, f.qty, f.trade_id) for f in plan.fills] == [
        (o2.client_order_id, Decimal("0.004"), 1),
        (o2.client_order_id, Decimal("0.006"), 2),
        (o3.client_order_id, Decimal("0.005"), 3),
    ]
    assert [(r.client_order_id, r.status) for r in plan.resolutions] == [
        (o2.client_order_id, fsm.OrderStatus.FILLED),
        (o3.client_order_id, fsm.OrderStatus.CANCELED),
    ]
    assert plan.positions == {SYMBOL: (Decimal("0.025"), Decimal("60050.0"))}


def test_order_the_exchange_never_saw_was_not_placed(journal_file: Path) -> None:
    view = journal_view_from_file(journal_file)
    o2, o3 = submit(2), submit(3)
    snapshot = ExchangeSnapshot(
        open_orders=(order_json(o2, 12, "NEW", "0"),),
        position_risk=(position("0.01"),),
        queried={vid(o3): None},
    )
    plan = plan_reconciliation(view, snapshot, symbols=[SYMBOL], policy="adopt")
    (r2, r3) = plan.resolutions
    assert r2.status is fsm.OrderStatus.NEW
    assert (r3.status, r3.reason) == (fsm.OrderStatus.REJECTED, "not_placed")
    (adopted,) = plan.adopt
    assert adopted.engine_order_id == o2.client_order_id and plan.cancel == ()


def test_open_orders_follow_the_policy() -> None:
    foreign = {"symbol": SYMBOL, "clientOrderId": "web_123", "orderId": 77, "status": "NEW",
               "executedQty": "0", "origQty": "1", "side": "SELL"}  # fmt: skip
    other_symbol = dict(foreign, symbol="ETHUSDT", clientOrderId="web_9")
    snapshot = ExchangeSnapshot(open_orders=(foreign, other_symbol))
    cancel = plan_reconciliation(JournalView(), snapshot, symbols=[SYMBOL], policy="cancel")
    adopt = plan_reconciliation(JournalView(), snapshot, symbols=[SYMBOL], policy="adopt")
    assert [r.client_order_id for r in cancel.cancel] == ["web_123"]  # ETHUSDT is not ours
    assert cancel.adopt == () and [r.client_order_id for r in adopt.adopt] == ["web_123"]
    assert adopt.adopt[0].engine_order_id is None


def test_unexplained_position_is_refused(journal_file: Path) -> None:
    view = journal_view_from_file(journal_file)
    o2, o3 = submit(2), submit(3)
    snapshot = ExchangeSnapshot(
        position_risk=(position("0.5"),),
        queried={vid(o2): order_json(o2, 12, "CANCELED", "0"), vid(o3): None},
    )
    with pytest.raises(ReconciliationError) as info:
        plan_reconciliation(view, snapshot, symbols=[SYMBOL], policy="cancel")
    (line,) = info.value.differences
    assert line.startswith(f"{SYMBOL}: journal 0.01") and "exchange 0.5" in line


def test_foreign_trades_after_the_journal_explain_a_position(journal_file: Path) -> None:
    view = journal_view_from_file(journal_file)
    o2, o3 = submit(2), submit(3)
    after_ms = view.last_ts // 1_000_000 + 1
    snapshot = ExchangeSnapshot(
        position_risk=(position("0.11"),),
        trades={SYMBOL: (trade(9, 999, "0.1", time_ms=after_ms),)},
        queried={vid(o2): order_json(o2, 12, "CANCELED", "0"), vid(o3): None},
    )
    plan = plan_reconciliation(view, snapshot, symbols=[SYMBOL], policy="cancel")
    (note,) = plan.notes
    assert "did not place" in note
    # The same trade before the journal's last record explains nothing.
    early = ExchangeSnapshot(
        position_risk=snapshot.position_risk,
        trades={SYMBOL: (trade(9, 999, "0.1", time_ms=1),)},
        queried=snapshot.queried,
    )
    with pytest.raises(ReconciliationError):
        plan_reconciliation(view, early, symbols=[SYMBOL], policy="cancel")


def test_a_journal_order_must_be_queried(journal_file: Path) -> None:
    view = journal_view_from_file(journal_file)
    with pytest.raises(ReconciliationError, match="not open and not queried"):
        plan_reconciliation(
            view, ExchangeSnapshot(position_risk=(position("0.01"),)), symbols=[SYMBOL],
            policy="cancel",
        )  # fmt: skip


async def test_driver_cancels_then_plans_again(journal_file: Path) -> None:
    view = journal_view_from_file(journal_file)
    o2, o3 = submit(2), submit(3)
    state: dict[str, Any] = {"open": [order_json(o2, 12, "PARTIALLY_FILLED", "0.004")]}
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        q = dict(urllib.parse.parse_qsl(request.url.query.decode()))
        calls.append(f"{request.method} {request.url.path}")
        path = request.url.path
        if path == "/fapi/v1/openOrders":
            body: Any = state["open"]
        elif path == "/fapi/v2/positionRisk":
            body = [position("0.014")]
        elif path == "/fapi/v1/order" and request.method == "DELETE":
            state["open"] = []
            body = order_json(o2, 12, "CANCELED", "0.004")
        elif path == "/fapi/v1/order":
            if q["origClientOrderId"] == vid(o2):
                body = order_json(o2, 12, "CANCELED", "0.004")
            else:
                return httpx.Response(400, content=b'{"code":-2013,"msg":"Order does not exist."}')
        elif path == "/fapi/v1/userTrades":
            body = [trade(1, 12, "0.004")]
        else:
            return httpx.Response(404)
        return httpx.Response(200, content=orjson.dumps(body))

    client = BinanceRestClient(
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        credentials=Credentials("k", "s"), limiter=RateLimiter(), clock=ServerClock(),
        base_url="https://fake.invalid",
    )  # fmt: skip
    with trio.fail_after(10):
        plan = await reconcile(client, view, symbols=[SYMBOL], policy="cancel", log=quiet_logger())
    assert calls.count("DELETE /fapi/v1/order") == 1
    assert calls.count("GET /fapi/v1/openOrders") == 2  # before and after the cancel
    assert [r.client_order_id for r in plan.cancel] == [vid(o2)]
    assert [(r.client_order_id, r.status) for r in plan.resolutions] == [
        (o2.client_order_id, fsm.OrderStatus.CANCELED),
        (o3.client_order_id, fsm.OrderStatus.REJECTED),
    ]
    assert [(f.qty, f.trade_id) for f in plan.fills] == [(Decimal("0.004"), 1)]


# -- the whole live history ---------------------------------------------------------------


def write_journal(path: Path, records: list) -> Path:
    j = Journal(path)
    j.append(0, records)
    j.close()
    return path


def recovered(order: SubmitOrder, qty: float, ts: int) -> FillRecovered:
    return FillRecovered(
        symbol=SYMBOL, client_order_id=order.client_order_id, venue_client_order_id=vid(order),
        side=order.side, qty=qty, price=60_100.0, fee=0.02, trade_id=7, ts_event=ts, ts_init=ts,
        seq=1,
    )  # fmt: skip


def resolved(order: SubmitOrder, status: str, ts: int) -> OrderReconciled:
    return OrderReconciled(
        symbol=SYMBOL, client_order_id=order.client_order_id, venue_client_order_id=vid(order),
        action="resolved", status=status, executed_qty=order.qty, reason="", ts_event=ts,
        ts_init=ts, seq=2,
    )  # fmt: skip


def agreed(qty: float, ts: int) -> PositionReconciled:
    return PositionReconciled(
        symbol=SYMBOL, qty=qty, avg_price=60_100.0, ts_event=ts, ts_init=ts, seq=3
    )


def test_recovered_fills_count_and_a_resolved_order_is_final(tmp_path: Path) -> None:
    # Start 1 died with its entry sent; start 2 recovered its fill, adopted the long and
    # closed it with its own order (its engine ids start again at 1).
    entry = submit(1)
    restart_ts = T0 + 60_000_000_000
    exit_ = submit(1, side=Side.SELL, ts=restart_ts)
    killed = write_journal(tmp_path / "live-000001-20240101T000000Z.sqlite", [entry])
    restart = write_journal(
        tmp_path / "live-000002-20240101T000100Z.sqlite",
        [
            recovered(entry, 0.01, T0 + 50),
            resolved(entry, "FILLED", restart_ts),
            agreed(0.01, restart_ts),
            exit_,
            accepted(exit_, 21),
            filled(exit_, 0.01, 0.01, price=60_200.0),
        ],
    )
    # The restart's journal alone: the exit, and the entry it recovered.
    assert journal_view_from_file(restart).positions[SYMBOL][0] == pytest.approx(0.0)
    view = journal_view_from_files([killed, restart])
    assert view.positions[SYMBOL][0] == pytest.approx(0.0)
    assert view.orders == ()  # the killed run's entry was resolved FILLED by the restart
    assert view.known_venue_order_ids == {21}


def test_a_reconciled_position_restarts_the_history(tmp_path: Path) -> None:
    # Start 1 bought 0.01; before start 2 someone bought 0.02 by hand, which start 2
    # explained and agreed: from then on the history holds 0.03, not 0.01 + 0.03.
    o1 = submit(1)
    first = write_journal(tmp_path / "a.sqlite", [o1, accepted(o1, 11), filled(o1, 0.01, 0.01)])
    second = write_journal(tmp_path / "b.sqlite", [agreed(0.03, T0 + 10**12)])
    view = journal_view_from_files([first, second])
    assert view.positions[SYMBOL][0] == pytest.approx(0.03)
    assert view.last_ts == T0 + 10**12


def test_last_ts_is_the_exchanges_time(journal_file: Path, tmp_path: Path) -> None:
    # Decisions are stamped with the local clock, fills with the exchange's; the trades
    # reconciliation weighs are on the exchange's clock, so is the point it compares with.
    later = submit(9, ts=T0 + 10**15)  # a local clock far ahead of the exchange's
    path = write_journal(tmp_path / "j.sqlite", [submit(1), filled(submit(1), 0.01, 0.01), later])
    assert journal_view_from_file(path).last_ts == submit(1).ts_event + 10


def test_a_journal_without_tables_is_an_empty_one(tmp_path: Path) -> None:
    # A start killed between creating its journal file and its first write.
    empty = tmp_path / "live-000002-20240101T000000Z.sqlite"
    empty.touch()
    assert journal_view_from_files([empty]) == JournalView()

"""Protective targets end to end: the engine's CLI live against the loopback exchange.

Beside the protective stop (``ps-``, :mod:`test_protective_stop_e2e`) the venue rests a
TAKE_PROFIT_MARKET ``closePosition`` algo order (``pt-``) at the ``[exits]`` target
while a position is held. The engine runs as its own process; the loopback exchange runs
in the test and plays the bundled BTCUSDT sample only when the test advances it. Every
check of the exchange goes through its signed REST API, every wait is for a condition
(an exchange answer, a journal row, a log line), polled under a failure guard.

1. The market rises through the target: the exchange closes the position by itself and
   the running engine takes its fills and cancels the stop. The engine is paused
   (SIGSTOP) while the market crosses the target, so that the exchange's order, not the
   engine's own ``target_bps`` exit (the same level), closes the position: both race
   otherwise, and either outcome is correct.
2. SIGKILL with the position open: the restart adopts both the stop and the target
   (no second one of either), and both are cancelled when the position closes.

The sample rises from about 61805 (message 2000) to 61828-61839 (messages 5000-6000):
a long entered near 2000 with a 3 bps target has it reached there, and its 10 bps stop
is not.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
import trio
from test_live_trading import journal_rows
from test_protective_stop_e2e import (
    CHUNK,
    ENTRY_WITHIN,
    GUARD_S,
    SAMPLE,
    START_AT,
    TRAIL_START_AT,
    Engine,
    Exchange,
    check_stop,
    kill_9,
    new_server,
    protective,
    started_engine,
    stop,
    until,
)

from engine.venues.sim._recorded import Recording, load_recording

TARGET_BPS = 3.0  # reached (messages 5000-6000) from a long entered near message 2000
FAR_TARGET_BPS = 50.0  # never reached from message 15000 on (the sample falls)
RISE_END = 7_000


@pytest.fixture(scope="module")
def recording() -> Recording:
    return load_recording([SAMPLE])


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["clientAlgoId"].startswith("pt-")]


def check_target(row: dict[str, Any], entry: float, bps: float) -> None:
    """A TAKE_PROFIT_MARKET closePosition sell at the target (rounded up to the tick)."""
    assert row["orderType"] == "TAKE_PROFIT_MARKET" and row["side"] == "SELL"
    assert row["algoType"] == "CONDITIONAL" and row["closePosition"] is True
    level = entry * (1 + bps / 10_000)
    assert level <= float(row["triggerPrice"]) < level + 0.01 + 1e-6  # tick 0.01


async def long_with_both(
    engine: Engine, exchange: Exchange, proc: trio.Process
) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """Play the sample until the engine is long and its stop and target rest."""

    async def long() -> bool:
        return (await exchange.position())[0] > 0

    async def both() -> tuple[dict[str, Any], dict[str, Any]] | None:
        rows = await exchange.algo_orders()
        stops, tps = protective(rows), targets(rows)
        return (stops[0], tps[0]) if stops and tps else None

    by = exchange.server._index + ENTRY_WITHIN
    await until("a long", long, proc, engine, exchange.server, by)
    stop_row, target_row = await until(
        "its stop and target", both, proc, engine, exchange.server, by, chunk=1
    )
    _qty, entry = await exchange.position()
    return entry, stop_row, target_row


async def test_the_exchange_target_closes_the_position_and_the_stop_is_cancelled(
    tmp_path, recording
):
    server = new_server(recording)
    async with trio.open_nursery() as nursery:
        ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
        server.advance(TRAIL_START_AT)
        exchange = Exchange(server, rest_port)
        engine = Engine(tmp_path, ws_port, rest_port, target_bps=TARGET_BPS)
        proc = await started_engine(engine, server, 1)
        try:
            entry, stop_row, target_row = await long_with_both(engine, exchange, proc)
            check_stop(stop_row, entry)
            check_target(target_row, entry, TARGET_BPS)
            held, _ = await exchange.position()

            # The engine paused, the market rises through the target: the exchange closes.
            proc.send_signal(signal.SIGSTOP)
            try:
                with trio.fail_after(GUARD_S):
                    while (await exchange.position())[0] != 0.0:
                        assert server._index < RISE_END, "the target never triggered"
                        server.advance(CHUNK)
                        await trio.lowlevel.checkpoint()
            finally:
                proc.send_signal(signal.SIGCONT)
            (done,) = [
                r
                for r in await exchange.all_algo_orders()
                if r["clientAlgoId"] == target_row["clientAlgoId"]
            ]
            assert done["algoStatus"] in ("TRIGGERED", "FINISHED")
            sells = [t for t in await exchange.trades() if t["side"] == "SELL"]
            assert {str(t["orderId"]) for t in sells} == {done["actualOrderId"]}
            assert sum(float(t["qty"]) for t in sells) == pytest.approx(held)
            assert min(float(t["price"]) for t in sells) > entry  # closed on a gain

            # The engine, resumed, takes the target's fills and cancels the stop.
            async def stop_cancelled() -> bool:
                rows = await exchange.all_algo_orders()
                (row,) = [r for r in rows if r["clientAlgoId"] == stop_row["clientAlgoId"]]
                return row["algoStatus"] == "CANCELED"

            await until("the stop cancelled", stop_cancelled, proc, engine, server, RISE_END)
            journal = engine.journal()

            def recovered() -> list[dict[str, Any]]:
                rows = journal_rows(journal, "FillRecovered")
                return [r for r in rows if r["client_order_id"] == target_row["clientAlgoId"]]

            rows = await until("the target's fills", recovered, proc, engine, server, RISE_END)
            assert sum(r["qty"] for r in rows) == pytest.approx(held)
            assert {r["correlation_id"] for r in rows} == {"protective_target"}
            assert {r["trade_id"] for r in rows} == {t["id"] for t in sells}
            filled = engine.events("protective target filled")
            assert filled and {f["trireme"]["client_order_id"] for f in filled} == {
                target_row["clientAlgoId"]
            }
        finally:
            await stop(proc)
        # Each placed once: nothing was placed twice for the one position.
        first = [
            r["clientAlgoId"]
            for r in await exchange.all_algo_orders()
            if int(r["algoId"]) <= max(int(stop_row["algoId"]), int(target_row["algoId"]))
        ]
        assert sorted(first) == sorted([stop_row["clientAlgoId"], target_row["clientAlgoId"]])
        nursery.cancel_scope.cancel()


async def test_a_restart_adopts_both_the_stop_and_the_target(tmp_path, recording):
    server = new_server(recording)
    async with trio.open_nursery() as nursery:
        ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
        server.advance(START_AT)
        exchange = Exchange(server, rest_port)
        engine = Engine(tmp_path, ws_port, rest_port, target_bps=FAR_TARGET_BPS)
        first = await started_engine(engine, server, 1)
        try:
            entry, stop_row, target_row = await long_with_both(engine, exchange, first)
            check_stop(stop_row, entry)
            check_target(target_row, entry, FAR_TARGET_BPS)
        finally:
            await kill_9(first)
        held, _ = await exchange.position()
        assert held > 0
        killed_at = await exchange.time_ms()
        ours = {stop_row["clientAlgoId"], target_row["clientAlgoId"]}

        second = await started_engine(engine, server, 2)
        try:
            adopted = engine.events("protective stop adopted")
            adopted += engine.events("protective target adopted")
            assert {a["trireme"]["client_order_id"] for a in adopted} == ours
            assert engine.events("orphan protective target cancelled") == []
            journal = engine.journal()

            def adopted_position() -> bool:
                moves = journal_rows(journal, "PositionChanged")
                return any(m["trigger"] == "adopted" for m in moves)

            await until("the adopted position", adopted_position, second, engine, server,
                        server._index + ENTRY_WITHIN)  # fmt: skip
            # Steps later, still exactly the two adopted: no duplicate of either.
            await until("a few steps", lambda: True, second, engine, server, server._index + 50)
            rows = await exchange.algo_orders()
            assert {r["clientAlgoId"] for r in protective(rows) + targets(rows)} == ours

            # The operator flattens: the engine closes, and both are cancelled.
            await engine.control("flatten")

            async def flat_and_none() -> bool:
                qty, _ = await exchange.position()
                rows = await exchange.algo_orders()
                return qty == 0.0 and not protective(rows) and not targets(rows)

            await until("flat, stop and target cancelled", flat_and_none, second, engine,
                        server, server._index + ENTRY_WITHIN)  # fmt: skip
        finally:
            await stop(second)
        rows = await exchange.all_algo_orders()
        mine = protective(rows) + targets(rows)
        assert sorted((r["clientAlgoId"], r["algoStatus"]) for r in mine) == sorted(
            (cid, "CANCELED") for cid in ours
        )
        assert all(int(r["createTime"]) < killed_at for r in mine)  # none placed after
        sells = [t for t in await exchange.trades() if t["side"] == "SELL"]
        assert sum(float(t["qty"]) for t in sells) == pytest.approx(held)
        nursery.cancel_scope.cancel()

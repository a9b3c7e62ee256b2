"""The operator control socket, driven by the real CLI client."""

from __future__ import annotations

import json
import socket
import sys
import tempfile
from pathlib import Path

import pytest
import trio

import fsm
from engine._control import (
    ControlError,
    ControlState,
    check_socket_path,
    send_control,
    serve_control,
)
from engine.messages import ControlCommand
from engine.testing import quiet_logger


def real_risk():
    """A real risk actor (not running) with an account trigger, a symbol trigger and a fill."""
    from engine._config import RiskSection
    from engine.actors import RiskActor
    from engine.ledger import PositionLedger

    ledger = PositionLedger()
    ledger.apply_fill("BTCUSDT", 0.01, 60_000.0, 0.3)
    ledger.mark("BTCUSDT", 60_100.0)
    _orders_tx, _orders_rx = trio.open_memory_channel(1)
    _reports_tx, reports_rx = trio.open_memory_channel(1)
    intents = {s: trio.open_memory_channel(1)[1] for s in ("BTCUSDT", "ETHUSDT")}
    risk = RiskActor(
        config=RiskSection(),
        symbols=["BTCUSDT", "ETHUSDT"],
        intents=intents,
        reports=reports_rx,
        orders=_orders_tx,
        log=quiet_logger(),
        ledger=ledger,
    )
    risk.active["drawdown"] = ("halt", "drawdown 3.50")
    # The per-symbol trigger as risk raises it, and the move it makes.
    risk.symbol_active["ETHUSDT"]["stale"] = ("reduce", "no quote for ETHUSDT")
    risk.symbol_trading["ETHUSDT"].handle(fsm.ReduceRequested(reason="stale: no quote"))
    risk.symbol_changes.append(("ETHUSDT", "ACTIVE", "REDUCING", "stale: no quote for ETHUSDT"))
    risk.approved = 3
    risk.denied = {"price_band": 1}
    risk.equity = -2.5
    for e in (0.0, 1.0, -2.5):
        risk.metrics.record_equity(e)
    return risk


@pytest.fixture
def sock_path():
    # AF_UNIX paths are limited to ~107 bytes: keep it short rather than under tmp_path.
    with tempfile.TemporaryDirectory(prefix="tr") as d:
        yield Path(d) / "c.sock"


async def test_cli_client_queues_commands_and_reads_status(sock_path):
    send, receive = trio.open_memory_channel[ControlCommand](4)
    state = ControlState(risk=real_risk(), mode="paper")
    log = quiet_logger()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, sock_path, send, state, log)
            cli = [sys.executable, "-m", "engine", "control"]
            done = await trio.run_process(
                [*cli, "halt", "--reason", "fat finger", "--socket", str(sock_path)],
                capture_stdout=True,
            )
            assert json.loads(done.stdout) == {"ok": True, "queued": "halt", "reason": "fat finger"}
            assert receive.receive_nowait() == ControlCommand(action="halt", reason="fat finger")
            done = await trio.run_process(
                [*cli, "status", "--socket", str(sock_path)], capture_stdout=True
            )
            status = json.loads(done.stdout)
            assert status["ok"] is True and status["mode"] == "paper"
            assert status["trading_state"] == "ACTIVE"  # the actor has not stepped yet
            assert status["active"] == {"drawdown": {"action": "halt", "reason": "drawdown 3.50"}}
            assert status["metrics"]["max_drawdown"] == 3.5  # live, not only in the report
            # Per-symbol trading states and their triggers (item 3 of issue 15).
            eth, btc = status["symbols"]["ETHUSDT"], status["symbols"]["BTCUSDT"]
            assert eth["trading_state"] == "REDUCING"
            assert eth["triggers"] == {
                "stale": {"action": "reduce", "reason": "no quote for ETHUSDT"}
            }
            assert eth["changes"] == [
                {"from": "ACTIVE", "to": "REDUCING", "reason": "stale: no quote for ETHUSDT"}
            ]
            assert btc["trading_state"] == "ACTIVE" and btc["triggers"] == {}
            assert btc["position"]["qty"] == 0.01
            assert btc["pnl"]["unrealized"] == pytest.approx(1.0)
            assert btc["pnl"]["net"] == pytest.approx(1.0 - 0.3)
            assert status["positions"] == [
                {
                    "symbol": "BTCUSDT",
                    "qty": 0.01,
                    "avg_price": 60_000.0,
                    "mark": 60_100.0,
                    "notional": pytest.approx(601.0),
                    "unrealized": pytest.approx(1.0),
                }
            ]
            done = await trio.run_process(
                [*cli, "flatten", "--socket", str(sock_path)], capture_stdout=True
            )
            answer = json.loads(done.stdout)
            assert answer["queued"] == "flatten" and answer["reason"] == "operator"
            assert "note" in answer  # says how positions close
            assert receive.receive_nowait() == ControlCommand(action="flatten", reason="operator")
            bad = await trio.to_thread.run_sync(send_control, sock_path, "explode", "")
            assert bad["ok"] is False and "unknown action" in bad["error"]
            nursery.cancel_scope.cancel()
    assert not sock_path.exists()  # removed on exit


async def test_refuses_a_second_engine_on_the_same_socket(sock_path):
    send, _receive = trio.open_memory_channel[ControlCommand](4)
    log = quiet_logger()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, sock_path, send, ControlState(), log)
            with pytest.raises(ControlError, match="another engine is listening"):
                await serve_control(sock_path, send, ControlState(), log)
            nursery.cancel_scope.cancel()


def test_unreachable_engine_is_a_clear_error(sock_path):
    with pytest.raises(ControlError, match="no engine is listening"):
        send_control(sock_path, "status")


async def test_refuses_to_replace_a_file_that_is_not_a_socket(sock_path):
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    sock_path.write_text("an operator's notes\n")
    send, _receive = trio.open_memory_channel[ControlCommand](4)
    with trio.fail_after(10), pytest.raises(ControlError, match="exists and is not a socket"):
        await serve_control(sock_path, send, ControlState(), quiet_logger())
    assert sock_path.read_text() == "an operator's notes\n"


async def test_a_stale_socket_of_a_dead_engine_is_replaced(sock_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # the file stays, nobody listens: what a killed engine leaves
    send, _receive = trio.open_memory_channel[ControlCommand](4)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, sock_path, send, ControlState(), quiet_logger())
            answer = await trio.to_thread.run_sync(send_control, sock_path, "status", "")
            assert answer["ok"] is True
            nursery.cancel_scope.cancel()


def test_paths_that_cannot_be_a_socket_are_refused(tmp_path):
    long = tmp_path / ("s" * 120)
    with pytest.raises(
        ControlError, match=r"too long for a Unix socket \(\d+ bytes, at most 107\)"
    ):
        check_socket_path(long)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ControlError, match="is not a directory"):
        check_socket_path(tmp_path / "file" / "c.sock")
    check_socket_path(tmp_path / "new" / "c.sock")  # a directory still to create is fine
    assert not (tmp_path / "new").exists()  # and checking creates nothing

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


class FakeRisk:
    def __init__(self) -> None:
        from engine.risk import RiskMetrics

        self.trading = fsm.new_trading()
        self.active = {"stale:BTCUSDT": ("reduce", "no quote for BTCUSDT")}
        self.approved = 3
        self.denied = {"price_band": 1}
        self.equity = -2.5
        self.exposure_limits = {"BTCUSDT": 5000.0}
        self.metrics = RiskMetrics(capital=10_000.0, step_ns=250_000_000)
        for e in (0.0, 1.0, -2.5):
            self.metrics.record_equity(e)


@pytest.fixture
def sock_path():
    # AF_UNIX paths are limited to ~107 bytes: keep it short rather than under tmp_path.
    with tempfile.TemporaryDirectory(prefix="tr") as d:
        yield Path(d) / "c.sock"


async def test_cli_client_queues_commands_and_reads_status(sock_path):
    send, receive = trio.open_memory_channel[ControlCommand](4)
    state = ControlState(risk=FakeRisk())
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
            assert status["trading_state"] == "ACTIVE"
            assert status["active"]["stale:BTCUSDT"]["action"] == "reduce"
            assert status["metrics"]["max_drawdown"] == 3.5  # live, not only in the report
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

"""Protective stops end to end: the engine's CLI live against the loopback exchange.

The engine runs as its own process (``python -m engine --config ... --mode live``) and is
killed with SIGKILL while a position and its protective stop are open; the loopback
exchange runs in the test (:class:`StreamServer`, ``autoplay=False``), so the market
moves only when the test plays the bundled BTCUSDT sample on (``advance``): between the
kill and the restart the capture falls through the stop, and the exchange closes the
position by itself. Every check of the exchange goes through its signed REST API
(``openAlgoOrders``, ``positionRisk``, ``userTrades``); every wait is for a condition
(a journal row, a log line, an exchange answer), polled under a failure guard.

The strategy is a user's file (written to the test's directory): it buys once, a few
quotes after the start, and never exits by itself, so the position is left to the
``[exits]`` stop, the exchange's protective stop and the operator's ``flatten``.

The sample's price path (index: price): about 15000: 61828, 21000: 61786, 23000: 61760,
the end: 61700. A long entered between 15000 and 21000 with a 10 bps stop has its stop
above 61720, which the capture reaches before its end.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from test_live_trading import (  # the live-run helpers
    KEY,
    QUIET,
    SECRET,
    journal_rows,
    live_doc,
    log_events,
    to_toml,
)

import fsm
from engine._config import ExitsSection, StrategySection
from engine.core import SymbolCore
from engine.journal import journal_files
from engine.ledger import PositionLedger
from engine.messages import Purpose, Side
from engine.venues.sim._exchange_api import sign
from engine.venues.sim._recorded import Recording, load_recording
from engine.venues.sim._stream_server import ServerSettings, StreamServer, TradingSettings
from engine.venues.sim._trading import AccountSettings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
GUARD_S = 300  # a failure guard, not a wait (engine starts take ~20 s on a loaded machine)
START_AT = 15_000  # where the sample is played to before the engine starts
ENTRY_WITHIN = 6_000  # messages of the sample in which the engine must enter and place its stop
STOP_BPS = 10.0
# The sample rises from about 61800 (message 2000) to 61828 (message 5900): a trailing
# stop follows it up.
TRAIL_START_AT = 2_000
TRAIL_END = 8_000
CHUNK = 10  # messages played per poll while the engine is to act on the market
POLL_S = 0.05

STRATEGY = '''
"""Buys once, after a few quotes; never exits by itself (a test's strategy)."""

import attrs

from engine.strategy import Mode, Strategy


class BuyOnce(Strategy):
    kind = "buy_once"

    @attrs.frozen
    class Params:
        after_quotes: int = 5

    def __init__(self, config, sizing, params):
        self.p = params
        self.quotes = 0
        self.bid = self.ask = float("nan")

    def scan(self, ticks, start, stop, mode):
        for i in range(start, stop):
            if ticks.kind[i] != 1:  # quotes only
                continue
            self.bid, self.ask = float(ticks.bid[i]), float(ticks.ask[i])
            self.quotes += 1
            if mode == Mode.FLAT and self.quotes >= self.p.after_quotes:
                return i, 1  # ENTER_LONG
        return stop, 0

    @property
    def last_bid(self):
        return self.bid

    @property
    def last_ask(self):
        return self.ask

    def on_entry_filled(self, side, entry_price, ts):
        pass

    @classmethod
    def warm_up(cls):
        pass
'''


@pytest.fixture(scope="module")
def recording() -> Recording:
    return load_recording([SAMPLE])


class Exchange:
    """The loopback exchange in this process; its books read over its signed REST API."""

    def __init__(self, server: StreamServer, rest_port: int) -> None:
        self.server = server
        self.base_url = f"http://127.0.0.1:{rest_port}"

    async def time_ms(self) -> int:
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            return int((await http.get("/fapi/v1/time")).json()["serverTime"])

    async def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode({**params, "timestamp": str(await self.time_ms())})
        query += "&signature=" + sign(SECRET, query)
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            r = await http.get(f"{path}?{query}", headers={"X-MBX-APIKEY": KEY})
        r.raise_for_status()
        return r.json()

    async def algo_orders(self) -> list[dict[str, Any]]:
        """Open algo (conditional) orders."""
        return list(await self.get("/fapi/v1/openAlgoOrders", symbol="BTCUSDT"))

    async def all_algo_orders(self) -> list[dict[str, Any]]:
        return list(await self.get("/fapi/v1/allAlgoOrders", symbol="BTCUSDT"))

    async def position(self) -> tuple[float, float]:
        """(position amount, entry price)."""
        (risk,) = await self.get("/fapi/v2/positionRisk", symbol="BTCUSDT")
        return float(risk["positionAmt"]), float(risk["entryPrice"])

    async def trades(self) -> list[dict[str, Any]]:
        return list(await self.get("/fapi/v1/userTrades", symbol="BTCUSDT", limit="1000"))


class Engine:
    """``python -m engine`` live, one process per start, on one config and journal dir."""

    def __init__(self, tmp_path: Path, ws_port: int, rest_port: int, **exits: Any) -> None:
        (tmp_path / "buy_once.py").write_text(STRATEGY)
        doc = live_doc(tmp_path, ws_port, rest_port)  # protective stops: on by default
        doc["strategy"] = {"path": "buy_once.py", "name": "BuyOnce"}
        doc["exits"] = {"stop_bps": STOP_BPS, **exits}
        doc["model"] = {"enabled": False}
        doc["feeds"]["stale_ms"] = 600_000  # the market moves only when the test plays it
        doc["control"] = {"socket": str(tmp_path / "control.sock")}
        self.config = tmp_path / "live.toml"
        self.config.write_text(to_toml(doc))
        self.log = tmp_path / "engine.jsonl"
        self.journal_dir = tmp_path / "runs"
        self.tmp_path = tmp_path
        self.env = dict(os.environ, SIM_API_KEY=KEY, SIM_API_SECRET=SECRET, PYTHONUNBUFFERED="1")
        self.starts = 0
        self.doc = doc

    def set_venue(self, **venue: Any) -> None:
        self.doc["venue"].update(venue)
        self.config.write_text(to_toml(self.doc))

    async def start(self) -> trio.Process:
        self.starts += 1
        cmd = [
            sys.executable, "-m", "engine", "--config", str(self.config), "--mode", "live",
            "--i-understand-live", "--report", str(self.tmp_path / f"report-{self.starts}.json"),
        ]  # fmt: skip
        stderr = (self.tmp_path / f"stderr-{self.starts}.txt").open("wb")
        proc = await trio.lowlevel.open_process(
            cmd, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        stderr.close()
        return proc

    def journal(self) -> Path:
        return journal_files(self.journal_dir, "live")[-1]

    def events(self, message: str) -> list[dict[str, Any]]:
        return log_events(self.log, message)

    def report(self, n: int) -> dict[str, Any]:
        return json.loads((self.tmp_path / f"report-{n}.json").read_text())

    def stderr(self, n: int) -> str:
        return (self.tmp_path / f"stderr-{n}.txt").read_text()[-2000:]

    async def control(self, action: str) -> None:
        """An operator command through the control socket (``python -m engine control``)."""
        await trio.run_process(
            [sys.executable, "-m", "engine", "control", action, "--config", str(self.config)],
            cwd=ROOT, env=self.env, capture_stdout=True, capture_stderr=True,
        )  # fmt: skip


async def until(
    what: str,
    done: Callable[[], Any],
    proc: trio.Process,
    engine: Engine,
    server: StreamServer | None = None,
    play_until: int = 0,
    chunk: int = CHUNK,
) -> Any:
    """Poll ``done`` (sync or async) until truthy; meanwhile play the sample on, ``chunk``
    messages at a time once the last ones went out to every client, up to message
    ``play_until`` (the engine steps only on market data)."""
    with trio.fail_after(GUARD_S):
        while True:
            value = done()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return value
            if proc.poll() is not None:
                raise AssertionError(
                    f"engine ended (rc {proc.returncode}) waiting for {what}: "
                    f"{engine.stderr(engine.starts)}"
                )
            if server is not None and play_until:
                if server._index >= play_until:
                    raise AssertionError(f"no {what} before message {play_until} of the sample")
                if all(c.send.statistics().current_buffer_used == 0 for c in server._conns):
                    server.advance(chunk)
            await trio.sleep(POLL_S)


async def kill_9(proc: trio.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL


async def stop(proc: trio.Process) -> None:
    proc.send_signal(signal.SIGINT)
    with trio.fail_after(GUARD_S):
        await proc.wait()
    assert proc.returncode == 0


def protective(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["clientAlgoId"].startswith("ps-")]


async def started_engine(engine: Engine, server: StreamServer, n_ready: int) -> trio.Process:
    proc = await engine.start()
    await until(
        "venue ready",
        lambda: len(engine.events("binance venue ready")) >= n_ready,
        proc,
        engine,
    )
    return proc


async def long_with_stop(
    engine: Engine, exchange: Exchange, proc: trio.Process
) -> tuple[float, dict[str, Any]]:
    """Play the sample until the engine is long and its stop rests at the exchange (once
    long, a message at a time: the stop is placed on the next step)."""

    async def long() -> bool:
        return (await exchange.position())[0] > 0

    async def stop_resting() -> dict[str, Any] | None:
        rows = protective(await exchange.algo_orders())
        return rows[0] if rows else None

    by = exchange.server._index + ENTRY_WITHIN
    await until("a long", long, proc, engine, exchange.server, by)
    row = await until(
        "its protective stop", stop_resting, proc, engine, exchange.server, by, chunk=1
    )
    _qty, entry = await exchange.position()
    return entry, row


def check_stop(row: dict[str, Any], entry: float) -> None:
    """A STOP_MARKET closePosition sell at the [exits] stop level (rounded up to the tick)."""
    assert row["orderType"] == "STOP_MARKET" and row["side"] == "SELL"
    assert row["algoType"] == "CONDITIONAL" and row["closePosition"] is True
    level = entry * (1 - STOP_BPS / 10_000)
    assert level <= float(row["triggerPrice"]) < level + 0.01 + 1e-6  # tick 0.01


def new_server(recording: Recording) -> StreamServer:
    return StreamServer(
        recording,
        ServerSettings(autoplay=False),
        QUIET,
        trading=TradingSettings(account=AccountSettings(balance=100_000)),
        api_keys={KEY: SECRET},
    )


async def test_a_stop_left_on_the_exchange_closes_the_position_after_a_kill(tmp_path, recording):
    """Scenario 1-3: the stop rests at the level; SIGKILL; the market falls through it and
    the exchange closes the position; the restart reconciles cleanly (the stop's fill
    recovered, the journal flat as the exchange, no orphan stop) and trades again."""
    server = new_server(recording)
    async with trio.open_nursery() as nursery:
        ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
        server.advance(START_AT)
        exchange = Exchange(server, rest_port)
        engine = Engine(tmp_path, ws_port, rest_port)

        first = await started_engine(engine, server, 1)
        try:
            entry, stop_row = await long_with_stop(engine, exchange, first)
            check_stop(stop_row, entry)
            assert len(protective(await exchange.algo_orders())) == 1
        finally:
            await kill_9(first)
        first_journal = engine.journal()
        held, _ = await exchange.position()
        assert held > 0

        # The market falls through the stop with nobody watching: the exchange closes.
        async def closed_by_exchange() -> bool:
            return (await exchange.position())[0] == 0.0

        with trio.fail_after(GUARD_S):
            while not await closed_by_exchange():
                assert server._index < len(recording.messages), "the stop never triggered"
                server.advance(CHUNK * 10)
                await trio.lowlevel.checkpoint()
        (done,) = [
            r
            for r in await exchange.all_algo_orders()
            if r["clientAlgoId"] == stop_row["clientAlgoId"]
        ]
        assert done["algoStatus"] in ("TRIGGERED", "FINISHED")
        stop_trades = [t for t in await exchange.trades() if t["side"] == "SELL"]
        assert sum(float(t["qty"]) for t in stop_trades) == pytest.approx(held)
        # The algo order placed a MARKET order when it triggered: these are its fills.
        assert {str(t["orderId"]) for t in stop_trades} == {done["actualOrderId"]}
        assert not protective(await exchange.algo_orders())

        # Restart: reconciles, recovers the stop's fill, is flat as the exchange.
        second = await started_engine(engine, server, 2)
        try:
            _first_start, reconciled = engine.events("reconciled")
            assert reconciled["trireme"]["recovered_fills"] == len(stop_trades)
            # The stop's fill is the engine's own, not a trade by hand.
            assert engine.events("reconciliation note") == []
            second_journal = engine.journal()
            assert second_journal != first_journal
            recovered = journal_rows(second_journal, "FillRecovered")
            assert sum(r["qty"] for r in recovered) == pytest.approx(held), recovered
            assert {r["client_order_id"] for r in recovered} == {stop_row["clientAlgoId"]}
            assert {r["trade_id"] for r in recovered} == {t["id"] for t in stop_trades}
            positions = journal_rows(second_journal, "PositionReconciled")
            assert positions and positions[-1]["qty"] == pytest.approx(0.0), positions
            assert not protective(await exchange.algo_orders())  # no orphan
            assert engine.events("cannot start") == []
            # Trading resumes: a new long, and a new stop for it.
            entry2, stop2 = await long_with_stop(engine, exchange, second)
            check_stop(stop2, entry2)
            assert stop2["clientAlgoId"] != stop_row["clientAlgoId"]
        finally:
            await stop(second)
        (summary,) = engine.report(2)["per_symbol"]
        assert summary["position_qty"] == pytest.approx((await exchange.position())[0])
        nursery.cancel_scope.cancel()


async def flat_and_no_stop(engine: Engine, exchange: Exchange, proc: trio.Process) -> None:
    """The operator flattens: the engine closes the position, and its stop is cancelled."""
    await engine.control("flatten")

    async def done() -> bool:
        qty, _ = await exchange.position()
        return qty == 0.0 and not protective(await exchange.algo_orders())

    await until("the position closed and its stop cancelled", done, proc, engine,
                exchange.server, exchange.server._index + ENTRY_WITHIN)  # fmt: skip


async def test_a_restart_keeps_the_stop_of_the_position_it_adopts(tmp_path, recording):
    """Scenario 4: SIGKILL with the position open; the restart adopts the position and the
    ``ps-`` stop protecting it (no second stop); the engine then closes the position
    itself (the operator's flatten) and the stop is cancelled."""
    server = new_server(recording)
    async with trio.open_nursery() as nursery:
        ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
        server.advance(START_AT)
        exchange = Exchange(server, rest_port)
        engine = Engine(tmp_path, ws_port, rest_port)
        first = await started_engine(engine, server, 1)
        try:
            entry, stop_row = await long_with_stop(engine, exchange, first)
            check_stop(stop_row, entry)
        finally:
            await kill_9(first)
        held, _ = await exchange.position()
        killed_at = await exchange.time_ms()

        second = await started_engine(engine, server, 2)
        try:
            (adopted,) = engine.events("protective stop adopted")
            assert adopted["trireme"]["client_order_id"] == stop_row["clientAlgoId"]
            journal = engine.journal()

            def adopted_position() -> bool:
                moves = journal_rows(journal, "PositionChanged")
                return any(m["trigger"] == "adopted" for m in moves)

            await until("the adopted position", adopted_position, second, engine, server,
                        server._index + ENTRY_WITHIN)  # fmt: skip
            assert [r["clientAlgoId"] for r in protective(await exchange.algo_orders())] == [
                stop_row["clientAlgoId"]
            ]
            await flat_and_no_stop(engine, exchange, second)
        finally:
            await stop(second)
        # The adopted stop was cancelled, and the restart never placed another.
        rows = protective(await exchange.all_algo_orders())
        assert [(r["clientAlgoId"], r["algoStatus"]) for r in rows] == [
            (stop_row["clientAlgoId"], "CANCELED")
        ]
        assert all(int(r["createTime"]) < killed_at for r in rows)
        sells = [t for t in await exchange.trades() if t["side"] == "SELL"]
        assert sum(float(t["qty"]) for t in sells) == pytest.approx(held)
        nursery.cancel_scope.cancel()


async def test_a_trailing_stop_moves_new_first_then_the_old_cancelled(tmp_path, recording):
    """Scenario 5: with a trailing stop the rising market moves the exchange's stop: a new
    one is placed at the higher level, then the old one is cancelled; at the close the
    last one is cancelled."""
    server = new_server(recording)
    async with trio.open_nursery() as nursery:
        ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
        server.advance(TRAIL_START_AT)
        exchange = Exchange(server, rest_port)
        engine = Engine(tmp_path, ws_port, rest_port, trail_bps=STOP_BPS)
        engine.set_venue(protective_move_bps=0.5)
        proc = await started_engine(engine, server, 1)
        try:
            _entry, first = await long_with_stop(engine, exchange, proc)

            async def moved() -> list[dict[str, Any]] | None:
                # One answer: the stops placed so far, all but the newest cancelled.
                rows = protective(await exchange.all_algo_orders())
                statuses = [r["algoStatus"] for r in rows]
                settled = statuses == ["CANCELED"] * (len(rows) - 1) + ["NEW"]
                return rows if len(rows) >= 2 and settled else None

            rows = await until("a move of the stop", moved, proc, engine, server, TRAIL_END)
            assert first["clientAlgoId"] in {r["clientAlgoId"] for r in rows}
            for old, new in itertools.pairwise(rows):
                assert new["algoId"] > old["algoId"]
                assert float(new["triggerPrice"]) > float(old["triggerPrice"])  # it trails up
                # New first, then the old one cancelled: never a moment without a stop.
                assert int(new["createTime"]) <= int(old["updateTime"])
            await flat_and_no_stop(engine, exchange, proc)
        finally:
            await stop(proc)
        nursery.cancel_scope.cancel()


def test_an_adopted_position_flattened_before_any_quote_exits_at_its_entry_price():
    """What the restart test found: an operator's flatten on the restart's first step,
    before the strategy saw a quote, sent an exit with ``ref_price`` NaN (the live
    engine died). The exit's reference is the adopted entry price then."""
    namespace: dict[str, Any] = {}
    exec(STRATEGY, namespace)  # the test's strategy, as the engine loads it
    strategy_cls = namespace["BuyOnce"]
    ledger = PositionLedger()
    core = SymbolCore(
        symbol="BTCUSDT",
        config=StrategySection(),
        log=QUIET,
        ledger=ledger,
        strategy=strategy_cls(None, None, strategy_cls.Params()),
        exits=ExitsSection(stop_bps=STOP_BPS),
    )
    ledger.adopt("BTCUSDT", 0.016, 61_800.0)
    core.adopt_position(1)
    core.set_account(0.0, fsm.TradingState.ACTIVE.value, flatten=True)
    core.retry_exit(2)
    (order,), _records = core.take()
    assert (order.side, order.qty, order.purpose) == (Side.SELL, 0.016, Purpose.EXIT)
    assert order.ref_price == 61_800.0

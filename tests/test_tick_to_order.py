"""The live order path's inline write: an order's request goes out inside ``submit``.

* :meth:`RateLimiter.try_acquire` counts a request only when :meth:`acquire` would
  let it through at once;
* :meth:`LeanTransport.write_now` writes a request on an idle connection before it
  returns (the write hook has run), or sends nothing and says so; :meth:`finish`
  reads the answer and pools the connection again;
* the engine in live mode against the loopback exchange writes every order inline
  and times each one from its tick (``order written``; ``BinanceVenue.write_latency``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import h11
import pytest
import structlog
import trio
from _loopback import KEY, SECRET, loopback_doc

from engine import config_from_dict
from engine._streaming import run_live
from engine._supervisor import new_journal_path
from engine.testing import quiet_logger
from engine.venues.binance import RateLimiter
from engine.venues.binance._ratelimit import Priority, RateLimit
from engine.venues.binance._transport import LeanTransport
from engine.venues.binance._venue import WriteLatency
from engine.venues.sim._recorded import load_recording
from engine.venues.sim._stream_server import ServerSettings, StreamServer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"


# -- the rate limiter's synchronous grant ------------------------------------------


def test_try_acquire_counts_only_what_it_grants_and_never_past_a_429():
    now = [0.0]
    header = "X-MBX-ORDER-COUNT-10S"
    limiter = RateLimiter(
        [RateLimit(kind="ORDERS", interval_s=10.0, limit=10, header=header)],
        clock=lambda: now[0],
        monotonic=lambda: now[0],
    )

    def grant() -> bool:
        return limiter.try_acquire(0, orders=1, priority=Priority.NEW_ORDER)

    grants = 0
    while grant():
        grants += 1
        assert grants <= 10, "granted past the window's limit"
    assert grants >= 1
    assert limiter.used() == {header: grants}  # the refused one was not counted
    assert not grant()
    now[0] = 20.0  # a fresh window
    limiter.on_rate_limited(3.0)  # a 429 holds every request until Retry-After
    assert not grant()
    assert limiter.used() == {header: 0}
    now[0] = 23.5
    assert grant()
    assert limiter.used() == {header: 1}


# -- the lean transport's inline write ------------------------------------------------


class _Server:
    """A keep-alive HTTP/1.1 server (h11 on a Trio socket) answering ``{"n": k}``."""

    def __init__(self) -> None:
        self.requests: list[h11.Request] = []
        self.received = trio.Event()
        self.close_idle = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                with trio.move_on_at(trio.current_time() + 30) as idle:
                    async with trio.open_nursery() as nursery:

                        async def closer(scope: trio.CancelScope = nursery.cancel_scope) -> None:
                            await self.close_idle.wait()
                            scope.cancel()

                        nursery.start_soon(closer)
                        data = await stream.receive_some(65536)
                        nursery.cancel_scope.cancel()
                if idle.cancelled_caught or self.close_idle.is_set():
                    await stream.aclose()
                    return
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                self.requests.append(event)
                self.received.set()
            elif isinstance(event, h11.EndOfMessage):
                body = b'{"n": %d}' % len(self.requests)
                headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
                await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=body)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                conn.start_next_cycle()
            else:
                return


async def _serve(nursery: trio.Nursery, server: _Server) -> int:
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
    )
    return int(listeners[0].socket.getsockname()[1])


async def test_write_now_writes_before_it_returns_and_finish_reads_the_answer():
    server = _Server()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _serve(nursery, server)
            transport = LeanTransport(f"http://127.0.0.1:{port}")
            # No idle connection yet: nothing is written, the caller takes request().
            assert not transport.can_write_now()
            assert transport.write_now("POST", "/fapi/v1/order?a=1", None) is None
            await transport.warm_up()
            assert transport.connections_opened == 1 and transport.can_write_now()
            marks: list[str] = []
            transport.on_written = lambda: marks.append("transport")
            flight = transport.write_now(
                "POST", "/fapi/v1/order?a=1&signature=x", {"X-MBX-APIKEY": "k"},
                written=lambda: marks.append("order"),
            )  # fmt: skip
            assert flight is not None
            assert marks == ["transport", "order"]  # both hooks ran inside write_now
            assert not transport.can_write_now()  # its connection is checked out
            response = await transport.finish(flight)
            assert response.status == 200 and response.body == b'{"n": 1}'
            (request,) = server.requests
            assert request.method == b"POST"
            assert request.target == b"/fapi/v1/order?a=1&signature=x"
            assert (b"x-mbx-apikey", b"k") in request.headers
            # Back in the pool: the next order goes inline on the same connection.
            flight = transport.write_now("POST", "/fapi/v1/order?a=2", None)
            assert flight is not None
            assert (await transport.finish(flight)).body == b'{"n": 2}'
            assert transport.connections_opened == 1
            await transport.aclose()
            assert transport.write_now("POST", "/fapi/v1/order?a=3", None) is None
            nursery.cancel_scope.cancel()


async def test_write_now_sends_nothing_on_a_connection_the_server_closed():
    server = _Server()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _serve(nursery, server)
            transport = LeanTransport(f"http://127.0.0.1:{port}")
            await transport.warm_up()
            server.close_idle.set()  # the server cuts the idle connection
            while not transport._idle[-1].is_stale():  # noqa: ASYNC110 - until the FIN lands
                await trio.sleep(0.001)
            assert transport.write_now("POST", "/fapi/v1/order?a=1", None) is None
            assert server.requests == []
            server.close_idle = trio.Event()
            # The waiting path replaces it and sends.
            response = await transport.request("POST", "/fapi/v1/order?a=1", None)
            assert response.status == 200 and transport.connections_opened == 2
            await transport.aclose()
            nursery.cancel_scope.cancel()


def test_write_latency_ring_is_bounded_with_exact_count_and_max():
    ring = WriteLatency(window=4)
    for i in range(1, 11):
        ring.record(i * 1000, i * 100)
    summary = ring.summary()
    assert summary["count"] == 10
    assert summary["tick_to_written_us"]["max"] == 10.0
    assert summary["tick_to_written_us"]["p50"] == 8.5  # the last 4: 7..10 us
    assert summary["submit_to_written_us"]["max"] == 1.0
    assert WriteLatency().summary() == {
        "count": 0,
        "tick_to_written_us": None,
        "submit_to_written_us": None,
    }


# -- the engine, live, against the loopback exchange -----------------------------------


class _Written:
    """Keeps the ``order written`` log events; wakes the test when there are enough."""

    def __init__(self, wanted: int) -> None:
        self.events: list[dict[str, Any]] = []
        self.enough = trio.Event()
        self._wanted = wanted

    def __call__(self, _logger: Any, _method: str, event_dict: dict[str, Any]) -> Any:
        if event_dict.get("event") == "order written":
            self.events.append(dict(event_dict))
            if len(self.events) >= self._wanted:
                self.enough.set()
        raise structlog.DropEvent

    def logger(self) -> Any:
        return structlog.wrap_logger(
            structlog.ReturnLogger(),
            processors=[self],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        )


async def test_live_engine_writes_each_order_inline_and_times_it_from_its_tick(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SIM_API_KEY", KEY)
    monkeypatch.setenv("SIM_API_SECRET", SECRET)
    server = StreamServer(
        load_recording([SAMPLE]), ServerSettings(speed=30.0), quiet_logger(), api_keys={KEY: SECRET}
    )
    written = _Written(wanted=4)
    with trio.fail_after(240):
        async with trio.open_nursery() as nursery:
            ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
            doc = loopback_doc(
                tmp_path, ws_port, rest_port, "live", streams=["bookTicker", "trade"]
            )
            doc["engine"]["live"] = True
            doc |= {
                "strategy": {
                    "sample_ms": 20,
                    "fast": 3,
                    "slow": 8,
                    "rsi_period": 5,
                    "rsi_long_max": 90.0,
                    "rsi_short_min": 10.0,
                    "stop_loss_bps": 3.0,
                    "take_profit_bps": 5.0,
                    "max_hold_ms": 2000,
                },
                "venue": {
                    "kind": "binance",
                    "rest_url": f"http://127.0.0.1:{rest_port}",
                    "ws_url": f"ws://127.0.0.1:{ws_port}",
                    "api_key_env": "SIM_API_KEY",
                    "api_secret_env": "SIM_API_SECRET",
                    "order_transport": "lean",
                    # A protective stop's placement after each entry holds the pooled
                    # connection for a moment: an exit then would wait for it (queued).
                    "protective_stop": False,
                },
                "hardware": {"enabled": False},
            }
            config = config_from_dict(doc, source="<test>", base_dir=str(tmp_path))
            stop = trio.Event()

            async def stopper() -> None:
                await written.enough.wait()
                stop.set()

            nursery.start_soon(stopper)
            report = await run_live(
                config,
                log=written.logger(),
                stop=stop,
                journal_path=new_journal_path(config, "live"),
            )
            nursery.cancel_scope.cancel()
    events = written.events
    assert len(events) >= 4
    # A connection is open before the first order and the limiter has room: every
    # order is written inside submit, none by the sender task.
    assert [e["queued"] for e in events] == [0] * len(events)
    for e in events:
        assert 0 < e["submit_ms"] <= e["latency_ms"], e
    with contextlib.closing(sqlite3.connect(f"file:{report.journal_path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT payload FROM journal WHERE kind = 'SubmitOrder'").fetchall()
    submitted = {json.loads(payload)["client_order_id"] for (payload,) in rows}
    assert {e["client_order_id"] for e in events} <= submitted
    assert len(server.engine.orders()) >= len(events)


@pytest.fixture(autouse=True)
def _inline_on() -> None:
    from engine.venues.binance import BinanceVenue

    assert BinanceVenue.write_inline  # the default the tests above check

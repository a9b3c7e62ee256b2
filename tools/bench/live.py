"""Live venue over the real loopback exchange: order latency and rate-limit pacing.

``python -m tools.bench live [--orders N] [--warmup N] [--load-s S] [--orders-10s N]``
prints JSON. The exchange is ``python -m engine sim-exchange`` in another process,
playing the bundled BTCUSDT capture (a market-data client keeps playback going so
market orders meet a real book); orders go through :class:`BinanceVenue` exactly as
the execution actor sends them (``submit``; events read by ``on_market``).

``latency`` (per order transport, orders one at a time, no rate limit in the way):

- ``written_us``: decision (just before ``venue.submit``) to the signed request
  handed to the socket (the transport's ``on_written``), p50 / p99; an order the
  venue writes inside ``submit`` (lean: an idle connection, nothing queued) counts
  as one sent by the venue's task does;
- ``ack_us``: decision to the order's first event (``OrderAccepted``, or a fill or
  rejection) queued in the venue, p50 / p99. The engine reads it at its next step;
- ``venue_write_latency``: the venue's own :attr:`BinanceVenue.write_latency` over
  every order sent (warm-up included): its count, and submit-to-written by its stamps.

``rate_limit`` (a second exchange with small order limits, lean transport): new
orders and reduce-only closes (1 in 5) offered at ``overload`` times the exchange's
10-second order limit for ``--load-s`` seconds. Reported: orders offered, sent
(written at least once), acked, rejected ``stale`` (not sent within the venue's
``max_order_age_s``), 429s and 418s received, and the queueing delay (submit to
first write) p50 / p99 for new orders and for closes separately.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import trio
import trio.testing
import trio_websocket

from engine.messages import OrderAccepted, OrderFilled, OrderRejected, Purpose, Side, SubmitOrder
from engine.testing import quiet_logger
from engine.venues.binance import (
    BinanceVenue,
    Credentials,
    IpBannedError,
    RateLimitedError,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
KEY = "benchkey" + "A" * 56
SECRET = "benchsecret" + "b" * 53
SYMBOL = "BTCUSDT"
QTY = 0.002  # above the 100 USDT minimum notional at ~61,800
_FIRST = (OrderAccepted, OrderFilled, OrderRejected)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(values: list[float], scale: float = 1.0, digits: int = 1) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(statistics.median(values) * scale, digits),
        "p99": round(_pct(values, 0.99) * scale, digits),
        "max": round(max(values) * scale, digits),
    }


@contextlib.contextmanager
def _exchange(*limits: str) -> Iterator[tuple[int, int]]:
    """A sim-exchange process at pace 1; yields its (ws port, rest port)."""
    env = dict(os.environ, BENCH_KEY=KEY, BENCH_SECRET=SECRET)
    cmd = [
        sys.executable, "-m", "engine", "sim-exchange", "--data", str(SAMPLE),
        "--port", "0", "--rest-port", "0", "--speed", "1",
        "--api-key-env", "BENCH_KEY", "--api-secret-env", "BENCH_SECRET",
        "--log", os.devnull, *limits,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, env=env, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "sim-exchange: ws://H:P  http://H:P  (...)"
        if not line.startswith("sim-exchange:"):
            raise RuntimeError(f"sim-exchange did not start: {line!r}")
        ws_url, rest_url = line.split()[1:3]
        yield int(ws_url.rsplit(":", 1)[1]), int(rest_url.rsplit(":", 1)[1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def _market(ws_port: int, rest_port: int) -> AsyncIterator[None]:
    """Keep a market-data client connected (playback runs) until the book is synced."""
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{ws_port}/ws/btcusdt@bookTicker"
            ) as ws:
                while True:
                    await ws.get_message()

        nursery.start_soon(reader)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest_port}") as http:
            with trio.fail_after(30):
                while True:  # the exchange answers 503 until its book is synced
                    r = await http.get(f"/fapi/v1/depth?symbol={SYMBOL}&limit=5")
                    if r.status_code == 200:
                        break
                    await trio.sleep(0.1)
        yield
        nursery.cancel_scope.cancel()


class _Probe:
    """Drives a running venue: order numbering, write marks per order, event times."""

    def __init__(self, venue: BinanceVenue) -> None:
        self.venue = venue
        self.n = 0
        self.submitted: dict[str, int] = {}  # engine id -> decision time, ns
        self.written: dict[str, int] = {}  # engine id -> first write, ns
        self.writes = 0
        self.first_event: dict[str, int] = {}  # engine id -> first event seen, ns
        self.accepted: set[str] = set()
        self.rejected: dict[str, str] = {}
        self.rate_limited = 0
        self.banned = 0
        self._task_order: dict[Any, str] = {}
        self._by_venue_id: dict[str, str] = {}
        # The venue's client after start-up (private: this is a measuring probe).
        client = venue._client
        assert client is not None
        transport = client._order_transport
        transport.on_written = self._on_written
        new_order = client.new_order

        async def tracked(prepared: Any, **kw: Any) -> Any:
            # Each order is sent by its own task: the write mark finds the order by task.
            self._task_order[trio.lowlevel.current_task()] = self._by_venue_id[
                prepared.client_order_id
            ]
            try:
                return await new_order(prepared, **kw)
            except RateLimitedError:
                self.rate_limited += 1
                raise
            except IpBannedError:
                self.banned += 1
                raise

        client.new_order = tracked  # type: ignore[method-assign]
        finish_new_order = client.finish_new_order

        async def finishing(sent: Any) -> Any:
            # The reader of an order written inside ``submit`` writes what the socket
            # did not take there: that last write is the order's too.
            self._task_order[trio.lowlevel.current_task()] = self._by_venue_id[
                sent.order.client_order_id
            ]
            return await finish_new_order(sent)

        client.finish_new_order = finishing  # type: ignore[method-assign]

    def _on_written(self) -> None:
        now = time.perf_counter_ns()
        self.writes += 1
        cid = self._task_order.get(trio.lowlevel.current_task())
        if cid is not None:
            self.written.setdefault(cid, now)

    def submit(self, side: Side, *, reduce_only: bool) -> str:
        from engine.venues.binance import venue_client_order_id

        self.n += 1
        cid = f"bench-{self.n}"
        now = time.time_ns()
        order = SubmitOrder(
            client_order_id=cid, symbol=SYMBOL, side=side, qty=QTY, ref_price=61_800.0,
            purpose=Purpose.EXIT if reduce_only else Purpose.ENTRY, reduce_only=reduce_only,
            ts_event=now, ts_init=now, seq=self.n, correlation_id=cid,
        )  # fmt: skip
        self._by_venue_id[venue_client_order_id(SYMBOL, cid, now, self.n)] = cid
        self.submitted[cid] = time.perf_counter_ns()
        # The venue writes the order inside ``submit`` when a connection is idle (the
        # inline write), in this task: its write mark is this order's.
        task = trio.lowlevel.current_task()
        self._task_order[task] = cid
        try:
            events = self.venue.submit(order)
        finally:
            del self._task_order[task]
        for event in events:
            self._on_event(event)
        return cid

    def poll(self) -> None:
        for event in self.venue.on_market({}):
            self._on_event(event)

    def _on_event(self, event: Any) -> None:
        cid = event.client_order_id
        if isinstance(event, _FIRST):
            self.first_event.setdefault(cid, time.perf_counter_ns())
        if isinstance(event, OrderAccepted):
            self.accepted.add(cid)
        elif isinstance(event, OrderRejected):
            self.rejected[cid] = event.reason


@contextlib.asynccontextmanager
async def _venue(rest_port: int, ws_port: int, transport: str) -> AsyncIterator[_Probe]:
    venue = BinanceVenue(
        base_url=f"http://127.0.0.1:{rest_port}",
        ws_url=f"ws://127.0.0.1:{ws_port}",
        credentials=Credentials(KEY, SECRET),
        symbols=[SYMBOL],
        log=quiet_logger(),
        order_transport=transport,
        pool_size=2,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(venue.run)
        yield _Probe(venue)
        nursery.cancel_scope.cancel()


async def _latency(rest_port: int, ws_port: int, transport: str, orders: int, warmup: int) -> Any:
    written: list[float] = []
    acked: list[float] = []
    async with _venue(rest_port, ws_port, transport) as probe:
        for i in range(warmup + orders):
            # Alternate sides so the position stays small.
            cid = probe.submit(Side.BUY if i % 2 == 0 else Side.SELL, reduce_only=False)
            while cid not in probe.first_event:
                await trio.lowlevel.checkpoint()
                probe.poll()
            if cid not in probe.written:
                # The user stream can bring the first event before the sending task
                # is back from its write to call the write mark: let it finish.
                await trio.testing.wait_all_tasks_blocked()
            if i >= warmup and cid in probe.written:
                written.append(probe.written[cid] - probe.submitted[cid])
                acked.append(probe.first_event[cid] - probe.submitted[cid])
        rejected = len(probe.rejected)
        venue_stats = probe.venue.write_latency.summary()
    return {
        "written_us": _summary(written, 1e-3),
        "ack_us": _summary(acked, 1e-3),
        "rejected": rejected,
        "venue_write_latency": venue_stats,
    }


async def _rate_limit(
    rest_port: int, ws_port: int, per_10s: int, seconds: float, overload: float
) -> Any:
    rate = overload * per_10s / 10.0  # orders per second offered
    closes: set[str] = set()
    async with _venue(rest_port, ws_port, "lean") as probe:
        start = trio.current_time()
        n = 0
        while trio.current_time() - start < seconds:
            n += 1
            close = n % 5 == 0
            # Opening buys, and reduce-only sells that close part of them.
            cid = probe.submit(Side.SELL if close else Side.BUY, reduce_only=close)
            if close:
                closes.add(cid)
            probe.poll()
            await trio.sleep_until(start + n / rate)
        # Let the queue drain (or go stale), then read the last events.
        with trio.move_on_after(probe.venue._max_order_age_s + 3.0):
            while probe.venue.pending_orders:
                await trio.sleep(0.05)
                probe.poll()
        probe.poll()
        offered = probe.submitted
        delay_new = [
            (probe.written[c] - offered[c]) / 1e9
            for c in offered
            if c in probe.written and c not in closes
        ]
        delay_close = [(probe.written[c] - offered[c]) / 1e9 for c in closes if c in probe.written]
        stale = sum(1 for r in probe.rejected.values() if r.startswith("stale"))
        return {
            "exchange_orders_per_10s": per_10s,
            "offered_per_s": round(rate, 2),
            "seconds": seconds,
            "offered": len(offered),
            "offered_close": len(closes),
            "sent": len(probe.written),
            "sent_close": sum(1 for c in closes if c in probe.written),
            "writes": probe.writes,
            "acked": len(probe.accepted),
            "rejected_stale": stale,
            "rejected_other": dict(
                collections.Counter(
                    r.split(" ")[0] for r in probe.rejected.values() if not r.startswith("stale")
                )
            ),
            "received_429": probe.rate_limited,
            "received_418": probe.banned,
            "sent_per_10s": round(len(probe.written) / seconds * 10, 1),
            "queue_delay_s_new": _summary(delay_new, 1.0, 3),
            "queue_delay_s_close": _summary(delay_close, 1.0, 3),
        }


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench live")
    parser.add_argument("--orders", type=int, default=1000, help="orders measured per transport")
    parser.add_argument("--warmup", type=int, default=100, help="orders sent first, not measured")
    parser.add_argument("--load-s", type=float, default=25.0, help="seconds of over-limit load")
    parser.add_argument(
        "--orders-10s", type=int, default=50, help="the exchange's 10 s order limit"
    )
    parser.add_argument("--overload", type=float, default=2.0, help="offered / exchange limit")
    args = parser.parse_args(argv)

    async def latency_part(ws_port: int, rest_port: int) -> dict[str, Any]:
        out = {}
        async with _market(ws_port, rest_port):
            for transport in ("httpx", "lean"):
                out[transport] = await _latency(
                    rest_port, ws_port, transport, args.orders, args.warmup
                )
        return out

    async def limit_part(ws_port: int, rest_port: int) -> dict[str, Any]:
        async with _market(ws_port, rest_port):
            return await _rate_limit(
                rest_port, ws_port, args.orders_10s, args.load_s, args.overload
            )

    unlimited = ("--orders-10s", "1000000", "--orders-1m", "1000000", "--weight-limit", "1000000")
    with _exchange(*unlimited) as (ws_port, rest_port):
        latency = trio.run(latency_part, ws_port, rest_port)
    small = (
        "--orders-10s",
        str(args.orders_10s),
        "--orders-1m",
        str(math.ceil(args.orders_10s * 60)),
    )
    with _exchange(*small) as (ws_port, rest_port):
        limits = trio.run(limit_part, ws_port, rest_port)
    return {
        "exchange": "python -m engine sim-exchange (another process, loopback, pace 1)",
        "path": (
            "BinanceVenue.submit -> (inline write, or sender task -> rate limiter) "
            "-> signed POST /fapi/v1/order"
        ),
        "orders": args.orders,
        "latency": latency,
        "rate_limit": limits,
    }

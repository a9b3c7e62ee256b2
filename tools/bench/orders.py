"""Order transport latency and CPU: httpx against lean (h11 on raw Trio sockets).

``python -m tools.bench orders [--orders N] [--warmup N] [--server CMD]`` prints JSON,
per transport:

- ``written_us``: from the decision (before the order is rounded, checked and
  serialised from its template) to the signed request handed to the socket
  (p50, p99);
- ``ack_us``: from the decision to the parsed answer (p50, p99);
- ``cpu_us_per_order``: the client process's CPU time per order (user + system),
  the server running in another process (``tools/bench/_order_server.py``: h11 on
  Trio, keep-alive, an ACK per order).

Orders go one at a time through the real :class:`BinanceRestClient` (rate
limiter, server clock, HMAC signing, error mapping), so the figures are what the
venue's sender pays per order.

``python -m tools.bench orders --venue [--venue-orders N] [--gap-ms G] [--rounds R]
[--reference DIR]`` measures the live venue's own per-order and per-step work
instead: a :class:`BinanceVenue` (lean transport) started against ``python -m engine
sim-exchange`` in another process, orders one at a time ``--gap-ms`` apart (the
engine idles between ticks; what it then runs is cold in the caches, as live), each
through :meth:`BinanceVenue.submit` with the inline write:

- ``submit_to_written_us``: ``submit`` called to the request's last byte written
  (the venue's stamp, ``write_latency``), p50 / p99 of the inline-written orders;
- ``submit_call_us``: the whole ``submit`` call (what the caller's step pays);
- ``on_market_us``: ``on_market`` with one symbol's three-row batch (two QUOTE
  rows), called until the order's first event (warm: back to back).

Each round runs in its own process. With ``--reference DIR`` (a tree such as
``git archive HEAD``) rounds alternate between that tree and this one (interleaved
A/B; the medians of the rounds' medians are compared).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import trio

from engine.messages import Side
from engine.venues.binance import (
    BinanceRestClient,
    Credentials,
    LeanTransport,
    OrderTemplate,
    RateLimit,
    RateLimiter,
    ServerClock,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = OrderTemplate(
    symbol="BTCUSDT", tick_size=Decimal("0.1"), step_size=Decimal("0.001"),
    market_step_size=Decimal("0.001"),
)  # fmt: skip
# Limits far above what the benchmark sends: pacing is not what is measured.
LIMITS = (
    RateLimit(kind="REQUEST_WEIGHT", interval_s=60.0, limit=10**9, header="X-MBX-USED-WEIGHT-1M"),
    RateLimit(kind="ORDERS", interval_s=10.0, limit=10**9, header="X-MBX-ORDER-COUNT-10S"),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(kind: str, base: str, orders: int, warmup: int) -> dict[str, Any]:
    written: list[float] = []
    acked: list[float] = []
    mark = {"t": 0}

    def on_written() -> None:
        mark["t"] = time.perf_counter_ns()

    async with httpx.AsyncClient(timeout=None) as http:
        lean = LeanTransport(base, pool_size=1) if kind == "lean" else None
        client = BinanceRestClient(
            http,
            credentials=Credentials("bench-key", "bench-secret"),
            limiter=RateLimiter(LIMITS),
            clock=ServerClock(),
            base_url=base,
            order_transport=lean,
        )
        transport = lean if lean is not None else client._order_transport
        transport.on_written = on_written
        cpu0 = 0.0
        for i in range(warmup + orders):
            if i == warmup:
                cpu0 = time.process_time()
            t0 = time.perf_counter_ns()
            order = TEMPLATE.prepare(Side.BUY, 0.01, client_order_id=f"tbench-{i}")
            await client.new_order(order)
            t1 = time.perf_counter_ns()
            if i >= warmup:
                written.append((mark["t"] - t0) / 1000)
                acked.append((t1 - t0) / 1000)
        cpu = (time.process_time() - cpu0) / orders * 1e6
        if lean is not None:
            await lean.aclose()
    return {
        "written_us": {"p50": round(statistics.median(written), 1),
                       "p99": round(_pct(written, 0.99), 1)},
        "ack_us": {"p50": round(statistics.median(acked), 1), "p99": round(_pct(acked, 0.99), 1)},
        "cpu_us_per_order": round(cpu, 1),
    }  # fmt: skip


async def _venue_round(orders: int, gap_s: float) -> dict[str, Any]:
    """One round of ``--venue`` in this process (the tree on ``sys.path``)."""
    import numpy as np

    from engine.messages import EventKind, Purpose, SubmitOrder, Ticks
    from engine.venues.binance import venue_client_order_id
    from tools.bench.live import QTY, SYMBOL, _exchange, _market, _venue

    n = 3
    kind = np.array([EventKind.QUOTE, EventKind.TRADE, EventKind.QUOTE], dtype=np.int8)
    full = functools.partial(np.full, n, dtype=np.float64)
    batch = Ticks(
        ts=np.arange(n, dtype=np.int64), ts_exchange=np.arange(n, dtype=np.int64),
        seq=np.arange(n, dtype=np.int64), kind=kind, bid=full(61800.0), bid_qty=full(1.0),
        ask=full(61800.1), ask_qty=full(1.0), price=full(61800.0), qty=full(0.1),
        buyer_maker=np.zeros(n, dtype=np.int8),
    )  # fmt: skip
    ticks = {SYMBOL: batch}
    written: list[int] = []
    called: list[int] = []
    on_market: list[int] = []
    with _exchange() as (ws_port, rest_port):
        async with _market(ws_port, rest_port), _venue(rest_port, ws_port, "lean") as probe:
            venue = probe.venue
            client = venue._client  # a measuring probe: private access
            assert client is not None
            transport = client._order_transport
            for i in range(orders):
                probe.n += 1
                cid = f"vb-{probe.n}"
                now = time.time_ns()
                order = SubmitOrder(
                    client_order_id=cid, symbol=SYMBOL, side=Side.BUY if i % 2 == 0 else Side.SELL,
                    qty=QTY, ref_price=61_800.0, purpose=Purpose.ENTRY, reduce_only=False,
                    ts_event=now, ts_init=now, seq=probe.n, correlation_id=cid,
                )  # fmt: skip
                venue_id = venue_client_order_id(SYMBOL, cid, now, probe.n)
                probe._by_venue_id[venue_id] = cid
                t0 = time.time_ns()
                c0 = time.perf_counter_ns()
                events = venue.submit(order)
                c1 = time.perf_counter_ns()
                assert not events, events
                live = venue._orders.get(venue_id)
                if live is not None and live.inline and live.written_ns:
                    written.append(live.written_ns - t0)
                    called.append(c1 - c0)
                answered = False
                while not answered:
                    await trio.lowlevel.checkpoint()
                    a = time.perf_counter_ns()
                    got = venue.on_market(ticks)
                    on_market.append(time.perf_counter_ns() - a)
                    answered = any(e.client_order_id == cid for e in got)
                # The connection back in the pool and the limiter's tokens refilled.
                while not transport.can_write_now():  # noqa: ASYNC110 - no event to wait on
                    await trio.sleep(0.0005)
                await trio.sleep(gap_s)

    def us(values: list[int]) -> dict[str, float]:
        return {"p50": round(statistics.median(values) / 1e3, 1),
                "p99": round(_pct(values, 0.99) / 1e3, 1)}  # fmt: skip

    return {
        "inline_written": len(written),
        "submit_to_written_us": us(written),
        "submit_call_us": us(called),
        "on_market_us": us(on_market),
    }


def _venue(args: argparse.Namespace) -> dict[str, Any]:
    trees = [("this", ROOT)]
    if args.reference is not None:
        trees.insert(0, ("reference", Path(args.reference).resolve()))
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    for _ in range(args.rounds):
        for name, tree in trees:  # interleaved: reference, this, reference, this, ...
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--venue-round",
                 str(args.venue_orders), str(args.gap_ms / 1000)],
                cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, check=True,
                capture_output=True, text=True,
            )  # fmt: skip
            rounds[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    result: dict[str, Any] = {
        "orders_per_round": args.venue_orders,
        "gap_ms": args.gap_ms,
        "exchange": "python -m engine sim-exchange (another process, loopback)",
    }
    for name, runs in rounds.items():
        result[name] = {
            "rounds": runs,
            "median_p50_us": {
                key: round(statistics.median(r[key]["p50"] for r in runs), 1)
                for key in ("submit_to_written_us", "submit_call_us", "on_market_us")
            },
        }
    return result


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench orders")
    parser.add_argument("--orders", type=int, default=3000, help="orders measured per transport")
    parser.add_argument("--warmup", type=int, default=300, help="orders sent first, not measured")
    parser.add_argument(
        "--venue", action="store_true", help="BinanceVenue.submit and on_market (see above)"
    )
    parser.add_argument("--venue-orders", type=int, default=150, help="orders per --venue round")
    parser.add_argument("--gap-ms", type=float, default=40.0, help="idle time between orders")
    parser.add_argument("--rounds", type=int, default=2, help="--venue rounds per tree")
    parser.add_argument("--reference", help="a tree to compare with, round by round")
    args = parser.parse_args(argv)
    if args.venue:
        return _venue(args)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tools.bench._order_server", "--port", str(port)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "ready"
        base = f"http://127.0.0.1:{port}"
        results = {
            kind: trio.run(_measure, kind, base, args.orders, args.warmup)
            for kind in ("httpx", "lean")
        }
    finally:
        server.terminate()
        server.wait(timeout=10)
    h, lean = results["httpx"], results["lean"]
    return {
        "orders": args.orders,
        "server": "tools/bench/_order_server.py (h11 on Trio, another process, loopback)",
        **results,
        "lean_vs_httpx": {
            "cpu": round(h["cpu_us_per_order"] / lean["cpu_us_per_order"], 2),
            "ack_p50": round(h["ack_us"]["p50"] / lean["ack_us"]["p50"], 2),
        },
    }


if __name__ == "__main__" and sys.argv[1:2] == ["--venue-round"]:
    # One ``--venue`` round, in the tree on PYTHONPATH (see :func:`_venue`).
    print(json.dumps(trio.run(_venue_round, int(sys.argv[2]), float(sys.argv[3]))))

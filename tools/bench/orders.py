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
"""

from __future__ import annotations

import argparse
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


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench orders")
    parser.add_argument("--orders", type=int, default=3000, help="orders measured per transport")
    parser.add_argument("--warmup", type=int, default=300, help="orders sent first, not measured")
    args = parser.parse_args(argv)
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

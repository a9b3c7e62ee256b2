"""The floor under the live tick-to-order figure: the same measurement with nothing but the work.

``python -m tools.bench hot_path [--seconds S] [--cooldown-ms MS] [--rehearse-us US]
[--exchange-cpus ...]`` prints JSON. The exchange is ``python -m engine sim-exchange``
in another process on the bundled BTCUSDT capture at its own pace, kept off this
process's CPU as ``tick_to_order`` keeps it (``--exchange-cpus``). This process,
pinned to the CPU the ``[hardware]`` plan gives the engine's Trio thread (not under
``SCHED_FIFO``: a spinning real-time thread starves the kernel's own threads on its
CPU), is no engine: one loop reads the combined stream's frames off a plain socket
(the websocket handshake by wsproto, then the frames sliced by the engine's own
wsproto transport's parser, pings answered), decodes each ``bookTicker`` with orjson, and fires
on a known message: the first quote at least ``--cooldown-ms`` after the last order
(about four orders a second, alternating buy and sell at 0.002 BTC). The order is a
signed ``POST /fapi/v1/order`` on a kept-alive connection, built either in Python
(``python``: :meth:`OrderTemplate.prepare`, :meth:`Credentials.sign_query` and the
request bytes, the venue's calls) or by one numba call (``compiled``: ``tools.bench
compiled_order``'s ``build_order``, risk's entry checks, digits, HMAC and request), and
the loop waits for the next read either spinning on a non-blocking ``recvmsg``
(``spin``) or in ``epoll_wait`` (``epoll``: as an event loop sleeps). The four
variants take turns order by order. Each order is timed as the engine's figure is,
from the kernel's receive time of the read that brought its quote (``SO_TIMESTAMPNS``)
to the return of the ``send`` that wrote it; ``rx_to_read`` is the part before the
read returned, ``build`` the order's making. The exchange's answers are read and
counted (``accepted``: HTTP 200).

The rehearsing variants (``_rehearsed``) keep the path warm while no frame comes:
every ``--rehearse-us`` they decode the last quote again and build an order for it,
not sent. ``spin_reads_rx_to_read_us`` is every read's kernel-stamp-to-return time
while spinning (the kernel's own receive path, the reader already running), and
``decay_us`` each build's median time after 0-10 ms of spinning on the clock, which
touches next to no memory: how soon what a process left alone is cold again on this
machine (in the session that wrote this, on a 2-vCPU VM: 3.1 us compiled back to
back, 6.1 after 1 ms, 18.9 after 3 ms, 31.8 after 10 ms; Python's 5.8, 9.2, 52, 98).

What it says: how far the engine's figure is from what this machine and CPython allow
for the same frame-to-order work, and how much of that a compiled build, a
busy-polling read or a rehearsed path would take off. It is the floor the issue 12
notes measure the engine against, not a path the engine runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import statistics
import time
import urllib.parse
from typing import Any

import orjson
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from engine.feeds._transport import _ANCILLARY, _SO_TIMESTAMPNS, _Wsproto, rx_stamp
from hardware import HardwareConfig, make_plan, read_topology

from .compiled_order import _Paths
from .tick_to_order import _exchange, _exchange_cpus, _stats

STREAM = "/stream?streams=btcusdt@bookTicker"
QTY = 0.002  # BTC: above the 100 USDT minimum notional at the capture's prices
# (build, wait, rehearse): taking turns order by order.
VARIANTS = (
    ("python", "epoll", False),
    ("python", "spin", False),
    ("compiled", "spin", False),
    ("python", "spin", True),
    ("compiled", "spin", True),
)
DECAY_GAPS_MS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)


def _connect_stream(port: int) -> tuple[socket.socket, _Wsproto]:
    """A websocket on the exchange's combined stream: handshake done, non-blocking,
    ``SO_TIMESTAMPNS`` set; and the engine's frame parser for what it reads."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host=f"127.0.0.1:{port}", target=STREAM)))
    while True:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("the exchange closed the stream during the handshake")
        ws.receive_data(data)
        if any(isinstance(event, AcceptConnection) for event in ws.events()):
            break
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    sock.setblocking(False)
    # Only its parser is used (``_parse``, then the messages and ping answers it
    # queued): the loop below reads and writes the socket itself.
    return sock, _Wsproto(None, ws)  # type: ignore[arg-type]


def _decay(paths: _Paths, rounds: int = 30) -> dict[str, dict[str, float]]:
    """Each build's median time after ``DECAY_GAPS_MS`` of spinning on the clock, which
    touches next to no memory: how soon code and data this process left alone are cold
    again on this machine (whatever else runs on it evicts them)."""
    out: dict[str, dict[str, float]] = {}
    for build in ("python", "compiled"):
        make = paths.python if build == "python" else paths.compiled
        out[build] = {}
        for gap_ms in DECAY_GAPS_MS:
            times = []
            for i in range(rounds):
                until = time.perf_counter_ns() + int(gap_ms * 1e6)
                while time.perf_counter_ns() < until:
                    pass
                started = time.perf_counter_ns()
                make(i % 2, QTY, 60000.0, 60000.1, i + 1, time.time_ns() // 1_000_000)
                times.append((time.perf_counter_ns() - started) / 1e3)
            out[build][f"{gap_ms:g}ms"] = round(statistics.median(times), 1)
    return out


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench hot_path")
    parser.add_argument("--seconds", type=float, default=90.0, help="wall time trading")
    parser.add_argument(
        "--cooldown-ms", type=float, default=250.0, help="at least this long between orders"
    )
    parser.add_argument("--exchange-cpus", default="auto", help="as tick_to_order's")
    parser.add_argument("--exchange-nice", type=int, default=10)
    parser.add_argument(
        "--rehearse-us",
        type=float,
        default=100.0,
        help="the rehearsing variants: while no frame comes, decode the last quote again "
        "and build an order for it (not sent) this often",
    )
    args = parser.parse_args(argv)
    hardware = HardwareConfig()
    plan = make_plan(read_topology(), hardware)
    if plan.pin and plan.trio_cpus:
        os.sched_setaffinity(0, set(plan.trio_cpus))
    paths = _Paths()
    paths.compiled(0, QTY, 100.0, 100.01, 1, 1)  # compiled before the run
    decay = _decay(paths)
    with _exchange(1.0, args.exchange_nice, _exchange_cpus(args, hardware)) as (ws_port, rest):
        feed, frames = _connect_stream(ws_port)
        orders = socket.create_connection(("127.0.0.1", rest))
        orders.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        orders.setblocking(False)
        poller = select.epoll()
        poller.register(feed.fileno(), select.EPOLLIN)
        timed: dict[tuple[str, str, bool], dict[str, list[float]]] = {
            v: {"tick_to_written_us": [], "rx_to_read_us": [], "build_us": []} for v in VARIANTS
        }
        answers = bytearray()
        cooldown_ns = int(args.cooldown_ms * 1e6)
        rehearse_ns = int(args.rehearse_us * 1e3)
        last_order = 0
        last_frame = ""
        rehearsed = 0
        rehearsals = 0
        spin_reads: list[float] = []  # every read while spinning: kernel stamp to return
        n = 0

        def make_order(build: str, quote: dict[str, Any], n: int) -> Any:
            """Order ``n``'s request (alternating sides) at ``quote``'s prices."""
            bid, ask = float(quote["b"]), float(quote["a"])
            ts_ms = time.time_ns() // 1_000_000
            if build == "python":
                return paths.python(n % 2, QTY, bid, ask, n + 1, ts_ms)
            return paths.out[: paths.compiled(n % 2, QTY, bid, ask, n + 1, ts_ms)]

        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            build, wait, rehearse = VARIANTS[n % len(VARIANTS)]
            if wait == "epoll":
                poller.poll(0.5)
            try:
                data, ancillary, _flags, _addr = feed.recvmsg(1 << 16, _ANCILLARY)
            except BlockingIOError:
                now = time.perf_counter_ns()
                if rehearse and last_frame and now - rehearsed > rehearse_ns:
                    # The way a quote goes to an order, but the send.
                    quote = orjson.loads(last_frame)["data"]
                    make_order(build, quote, n)
                    rehearsed = now
                    rehearsals += 1
                continue
            read_ns = time.time_ns()
            if not data:
                raise RuntimeError("the exchange closed the stream")
            rx_ns = rx_stamp(ancillary) or read_ns
            if wait == "spin":
                spin_reads.append((read_ns - rx_ns) / 1e3)
            frames._parse(data)
            for reply in frames._replies:  # pongs
                feed.sendall(reply)
            frames._replies.clear()
            while (frame := frames.get_message_nowait()) is not None:
                quote = orjson.loads(frame)["data"]
                last_frame = frame
                if rx_ns - last_order < cooldown_ns:
                    continue
                started = time.perf_counter_ns()
                request = make_order(build, quote, n)
                built = time.perf_counter_ns()
                orders.send(request)
                written_ns = time.time_ns()
                sample = timed[(build, wait, rehearse)]
                sample["tick_to_written_us"].append((written_ns - rx_ns) / 1e3)
                sample["rx_to_read_us"].append((read_ns - rx_ns) / 1e3)
                sample["build_us"].append((built - started) / 1e3)
                last_order = rx_ns
                n += 1  # the read's later quotes fall in the cooldown
            with contextlib.suppress(BlockingIOError):
                answers += orders.recv(1 << 16)
        feed.close()
        orders.close()
    text = answers.decode("latin-1")
    return {
        "orders": n,
        "accepted": text.count("HTTP/1.1 200"),
        "answered": text.count("HTTP/1.1 "),
        "rehearsals": rehearsals,
        "variants": {
            f"{build}_{wait}{'_rehearsed' if rehearse else ''}": {
                name: _stats(values) for name, values in sample.items()
            }
            for (build, wait, rehearse), sample in timed.items()
        },
        "spin_reads_rx_to_read_us": _stats(spin_reads),
        "decay_us": decay,
        "config": {
            "seconds": args.seconds,
            "cooldown_ms": args.cooldown_ms,
            "cpus": sorted(os.sched_getaffinity(0)),
            "rehearse_us": args.rehearse_us,
            "exchange": "python -m engine sim-exchange (another process), bundled BTCUSDT",
            "exchange_stream": urllib.parse.unquote(STREAM),
        },
    }

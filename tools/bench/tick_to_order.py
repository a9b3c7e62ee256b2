"""Live tick-to-order latency: the engine in live mode against the loopback exchange.

``python -m tools.bench tick_to_order [--seconds S] [--speed X] [--min-step-ms MS]
[--transport lean|httpx] [--no-inline] [--actors]`` prints JSON. The exchange is
``python -m engine sim-exchange`` in another process playing the bundled BTCUSDT
capture at ``--speed``; the engine runs in this process exactly as
``python -m engine --mode live`` runs it (:func:`engine._supervisor.run_live`: live
feed over wsproto, the actor shells, :class:`BinanceVenue` over real HTTP), with a
strategy that trades often (``sample_ms=200, fast=3, slow=8, rsi_period=5``, no ML
filter), for ``--seconds`` of wall time. By default the feed's read loop runs each
step through the symbol, risk and execution cores (``feeds.inline``, the default);
``--actors`` runs them in their actor tasks over channels instead (the path before).

Per order the venue times (``BinanceVenue.write_latency``, logged as ``order
written``), on one clock (``time.time_ns``):

- ``tick_to_written_us``: from the order's ``ts_event`` (for an order a tick decided:
  the tick's receive stamp, taken by the live feed as it decodes the frame read off
  the websocket) to the order request's last byte written to the socket;
- ``submit_to_written_us``: from ``BinanceVenue.submit`` (the execution actor) to the
  same write: the venue's and transport's share of the figure above.

``entries`` is the same for entry orders only (their ``ts_event`` is always a tick's;
an exit may be decided by a timer or a retry at a step's time). Percentiles are
exact over every order of the run (p50 / p99 / max, us).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
import trio

from engine import config_from_dict
from engine._supervisor import new_journal_path, run_live
from engine.venues.binance import BinanceVenue

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
KEY = "benchkey" + "A" * 56
SECRET = "benchsecret" + "b" * 53
STRATEGY = {
    "sample_ms": 200,
    "fast": 3,
    "slow": 8,
    "rsi_period": 5,
    "rsi_long_max": 90.0,
    "rsi_short_min": 10.0,
    "stop_loss_bps": 3.0,
    "take_profit_bps": 5.0,
    "max_hold_ms": 2000,
}


def _stats(values: list[float]) -> dict[str, float | int] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered), 1),
        "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "max": round(ordered[-1], 1),
    }


@contextlib.contextmanager
def _exchange(speed: float, nice: int) -> Iterator[tuple[int, int]]:
    """A sim-exchange process (at ``nice``); yields its (ws port, rest port)."""
    env = dict(os.environ, BENCH_KEY=KEY, BENCH_SECRET=SECRET)
    cmd = [
        sys.executable, "-m", "engine", "sim-exchange", "--data", str(SAMPLE),
        "--port", "0", "--rest-port", "0", "--speed", str(speed),
        "--api-key-env", "BENCH_KEY", "--api-secret-env", "BENCH_SECRET",
        "--log", os.devnull,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
        text=True,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )
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


class _Written:
    """A structlog processor keeping the ``order written`` events; drops every event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, _logger: Any, _method: str, event_dict: dict[str, Any]) -> Any:
        if event_dict.get("event") == "order written":
            self.events.append(dict(event_dict))
        raise structlog.DropEvent

    def logger(self) -> Any:
        return structlog.wrap_logger(
            structlog.ReturnLogger(),
            processors=[self],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        )


def _doc(args: argparse.Namespace, ws_port: int, rest_port: int, tmp: Path) -> dict[str, Any]:
    feeds: dict[str, Any] = {
        "ws_url": f"ws://127.0.0.1:{ws_port}",
        "rest_url": f"http://127.0.0.1:{rest_port}",
        "streams": ["bookTicker", "trade", "depth@0ms"],
    }
    if args.min_step_ms is not None:
        feeds["min_step_ms"] = args.min_step_ms
    if args.actors:
        feeds["inline"] = False
    return {
        "engine": {"mode": "live", "live": True},
        "data": {"symbols": ["BTCUSDT"]},
        "journal": {"dir": str(tmp / "runs")},
        "logging": {"path": str(tmp / "engine.jsonl")},
        "feeds": feeds,
        "strategy": STRATEGY,
        "venue": {
            "kind": "binance",
            "rest_url": f"http://127.0.0.1:{rest_port}",
            "ws_url": f"ws://127.0.0.1:{ws_port}",
            "api_key_env": "BENCH_KEY",
            "api_secret_env": "BENCH_SECRET",
            "order_transport": args.transport,
        },
        "hardware": {"enabled": False},
    }


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench tick_to_order")
    parser.add_argument("--seconds", type=float, default=40.0, help="wall time trading")
    parser.add_argument("--speed", type=float, default=2.0, help="capture playback pace")
    parser.add_argument("--min-step-ms", type=float, default=None, help="feeds.min_step_ms")
    parser.add_argument("--transport", choices=("lean", "httpx"), default="lean")
    parser.add_argument(
        "--exchange-nice",
        type=int,
        default=10,
        help="the exchange process's niceness: on a small machine its wake-up on each "
        "order must not preempt the engine mid-write (a remote exchange would not)",
    )
    parser.add_argument(
        "--no-inline", action="store_true", help="the sender task writes every order"
    )
    parser.add_argument(
        "--actors",
        action="store_true",
        help="feeds.inline = false: the steps run in the actor tasks, over channels",
    )
    args = parser.parse_args(argv)
    os.environ["BENCH_KEY"], os.environ["BENCH_SECRET"] = KEY, SECRET
    BinanceVenue.write_inline = not args.no_inline
    written = _Written()
    with (
        tempfile.TemporaryDirectory() as tmp,
        _exchange(args.speed, args.exchange_nice) as (ws_port, rest_port),
    ):
        doc = _doc(args, ws_port, rest_port, Path(tmp))
        config = config_from_dict(doc, source="<bench>", base_dir=tmp)

        async def main() -> None:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:

                async def stopper() -> None:
                    await trio.sleep(args.seconds)
                    stop.set()

                nursery.start_soon(stopper)
                await run_live(
                    config,
                    log=written.logger(),
                    stop=stop,
                    journal_path=new_journal_path(config, "live"),
                )
                nursery.cancel_scope.cancel()

        trio.run(main)
    events = written.events
    tick = [e["latency_ms"] * 1e3 for e in events]
    submit = [e["submit_ms"] * 1e3 for e in events]
    entries = [e for e in events if e.get("purpose") == "ENTRY"]
    return {
        "orders": len(events),
        "written_inline": sum(1 for e in events if e.get("queued") == 0),
        "tick_to_written_us": _stats(tick),
        "submit_to_written_us": _stats(submit),
        "pipeline_us": _stats([t - s for t, s in zip(tick, submit, strict=True)]),
        "entries": {
            "tick_to_written_us": _stats([e["latency_ms"] * 1e3 for e in entries]),
            "submit_to_written_us": _stats([e["submit_ms"] * 1e3 for e in entries]),
        },
        "config": {
            "seconds": args.seconds,
            "speed": args.speed,
            "exchange_nice": args.exchange_nice,
            "min_step_ms": config.feeds.min_step_ms,
            "order_transport": args.transport,
            "write_inline": not args.no_inline,
            "feeds_inline": config.feeds.inline,
            "strategy": STRATEGY,
            "feed_transport": config.feeds.transport,
            "exchange": "python -m engine sim-exchange (another process), bundled BTCUSDT",
        },
    }

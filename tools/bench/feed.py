"""Live-feed throughput and latency against the loopback exchange.

``python -m tools.bench feed [--repeat N]`` prints JSON:

- ``receive_msgs_per_s``: a bare client of each transport (wsproto, trio-websocket)
  reading the bundled BTCUSDT sample from ``python -m engine sim-exchange
  --speed 0`` running in another process (median of repeats);
- ``pipeline_events_per_s``: the same, through the whole paper-mode pipeline
  into the symbol actors (decode, de-duplicate, book, steps, actors);
- ``ingest_msgs_per_s``: the paper-mode live feed through the transport into the
  symbol actors, fed by a server (:mod:`tools.bench._frame_server`) that writes the
  full BTCUSDT capture's bookTicker and trade frames pre-encoded, flat out (the
  loopback exchange encodes as it plays and is too slow to load a client);
- ``cpu`` (``--cpu-only``): CPU microseconds per message of the frame parser and
  the feed's decode, de-duplication and columns, no socket (steady under load);
- ``latency_ms``: from the server handing a message to its socket to the symbol
  actor processing the batch that holds it (p50, p99), at 2x recorded pace, with
  server and engine in one process so both read the same clock.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio

from engine import config_from_dict
from engine.actors import _symbol
from engine.feeds._transport import TransportClosedError, open_transport
from engine.testing import quiet_logger
from engine.venues.sim._recorded import load_recording
from engine.venues.sim._stream_server import ServerSettings, StreamServer

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
FULL = ROOT.parent / "shared/data/external/hftbacktest/btcusdt_20240808.gz"
STREAMS = "btcusdt@bookTicker/btcusdt@trade/btcusdt@depth@0ms"
QUIET = quiet_logger()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """``python -m engine sim-exchange`` in a subprocess, flat out."""

    def __enter__(self) -> _Server:
        self.ws, self.rest = _free_port(), _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "sim-exchange", "--data", str(SAMPLE),
             "--port", str(self.ws), "--rest-port", str(self.rest), "--speed", "0",
             "--log", "/dev/null"],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "sim-exchange: ws://..." once listening
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _config(tmp: Path, server: _Server, transport: str, **extra: Any) -> Any:
    return config_from_dict(
        {
            "engine": {"mode": "paper"},
            "data": {"symbols": ["BTCUSDT"]},
            "journal": {"dir": str(tmp / "runs")},
            "logging": {"path": str(tmp / "log.jsonl")},
            "feeds": {
                "ws_url": f"ws://127.0.0.1:{server.ws}",
                "rest_url": f"http://127.0.0.1:{server.rest}",
                "streams": ["bookTicker", "trade", "depth@0ms"],
                "transport": transport,
                **extra,
            },
            "hardware": {"enabled": False},
        },
        source="<bench>",
        base_dir=str(tmp),
    )


async def _receive(transport: str, total: int) -> float:
    with _Server() as server:
        url = f"ws://127.0.0.1:{server.ws}/stream?streams={STREAMS}"
        async with open_transport(transport, url) as ws:
            await ws.get_message()
            t0 = time.perf_counter()
            n = 1
            try:
                while n < total:
                    await ws.get_message()
                    n += 1
            except TransportClosedError:
                pass
            return n / (time.perf_counter() - t0)


async def _pipeline(transport: str, total: int) -> float:
    from engine._streaming import run_paper

    with _Server() as server, tempfile.TemporaryDirectory() as tmp:
        config = _config(Path(tmp), server, transport, min_step_ms=0.0)
        stop = trio.Event()
        seen = {"n": 0, "t0": 0.0, "t1": 0.0}
        original = _symbol.SymbolActor._scan_batch

        def counting(self: Any, batch: Any) -> None:
            if not seen["n"]:
                seen["t0"] = time.perf_counter()
            seen["n"] += len(batch.ticks)
            seen["t1"] = time.perf_counter()
            if seen["n"] >= total - 5:
                stop.set()
            original(self, batch)

        _symbol.SymbolActor._scan_batch = counting  # type: ignore[method-assign]
        try:
            with trio.move_on_after(120):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_stop_later, stop, 110)
                    await run_paper(config, log=QUIET, stop=stop)
                    nursery.cancel_scope.cancel()
        finally:
            _symbol.SymbolActor._scan_batch = original  # type: ignore[method-assign]
        return seen["n"] / (seen["t1"] - seen["t0"])


def _ingest(transport: str, capture: Path) -> dict[str, float]:
    """The live feed in paper mode, through ``transport``, into the symbol actors, fed by
    a server sending the capture's bookTicker and trade frames pre-encoded, flat out."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.bench._frame_server", str(capture), "bookTicker,trade",
         str(port)],
        stdout=subprocess.PIPE, cwd=ROOT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        total = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "listening"
        seen = trio.run(_ingest_run, transport, port, total)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return {
        "messages_sent": total,
        "events_into_actors": seen["n"],
        "msgs_per_s": seen["n"] / (seen["t1"] - seen["t0"]) if seen["t1"] > seen["t0"] else 0.0,
    }


async def _ingest_run(transport: str, port: int, total: int) -> dict[str, float]:
    from engine._streaming import run_paper

    if True:
        with tempfile.TemporaryDirectory() as tmp:
            ports = type("Ports", (), {"ws": port, "rest": _free_port()})
            config = _config(
                Path(tmp), ports, transport, min_step_ms=0.0, streams=["bookTicker", "trade"]
            )  # type: ignore[arg-type]
            stop = trio.Event()
            seen = {"n": 0, "t0": 0.0, "t1": 0.0}
            original = _symbol.SymbolActor._scan_batch

            def counting(self: Any, batch: Any) -> None:
                if not seen["n"]:
                    seen["t0"] = time.perf_counter()
                seen["n"] += len(batch.ticks)
                seen["t1"] = time.perf_counter()
                if seen["n"] >= total:
                    stop.set()
                original(self, batch)

            _symbol.SymbolActor._scan_batch = counting  # type: ignore[method-assign]
            try:
                with trio.move_on_after(120):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_stop_later, stop, 110)
                        await run_paper(config, log=QUIET, stop=stop)
                        nursery.cancel_scope.cancel()
            finally:
                _symbol.SymbolActor._scan_batch = original  # type: ignore[method-assign]
    return seen


def _cpu_per_message(capture: Path, repeat: int) -> dict[str, Any]:
    """CPU microseconds per message of the wsproto transport's frame parser and the
    feed's decode, de-duplication and columns (no socket, no steps), over the same
    pre-encoded frames as the ingestion figure, cut into 64 KiB reads.

    Thread CPU time, so it is steadier than the rate on a loaded machine."""
    return trio.run(_cpu_run, capture, repeat)


async def _cpu_run(capture: Path, repeat: int) -> dict[str, Any]:
    import httpx

    from engine.feeds._live import LiveFeed, market_data_client
    from engine.feeds._transport import _RECEIVE, _Wsproto
    from tools.bench._frame_server import frames

    buffer, n = frames(str(capture), {"bookTicker", "trade"})
    config = config_from_dict(
        {"data": {"symbols": ["BTCUSDT"]}, "feeds": {"streams": ["bookTicker", "trade"]}},
        source="<bench>",
        base_dir=str(ROOT),
    )
    out = []
    async with httpx.AsyncClient() as http:
        for _ in range(repeat):
            market_tx, _market_rx = trio.open_memory_channel[Any](math.inf)
            step_tx, _step_rx = trio.open_memory_channel[Any](math.inf)
            feed = LiveFeed(
                settings=config.feeds,
                symbols=["BTCUSDT"],
                step_ns=100_000_000,
                symbol_channels={"BTCUSDT": market_tx},
                execution_channel=step_tx,
                rest=market_data_client(http, "http://127.0.0.1:9"),
                log=QUIET,
                stop=trio.Event(),
            )
            # What ``run`` opens (a trade gap asks for a backfill; nothing serves it).
            feed._backfill_requests, _backfills = trio.open_memory_channel[Any](math.inf)
            feed._resync_requests, _resyncs = trio.open_memory_channel[Any](math.inf)
            ws = _Wsproto(None, None)  # type: ignore[arg-type]
            t0 = time.thread_time()
            for i in range(0, len(buffer), _RECEIVE):
                ws._parse(buffer[i : i + _RECEIVE])
                texts = list(ws._pending)
                ws._pending.clear()
                feed._on_messages(texts, time.time_ns())
                feed._take("BTCUSDT")
            out.append((time.thread_time() - t0) / n * 1e6)
            assert feed.stats.messages == n
    return {"messages": n, "us_per_message": statistics.median(out), "runs": out}


async def _stop_later(stop: trio.Event, seconds: float) -> None:
    await trio.sleep(seconds)
    stop.set()


async def _latency(transport: str, seconds: float) -> dict[str, float]:
    from engine._streaming import run_paper

    recording = load_recording([SAMPLE])
    server = StreamServer(recording, ServerSettings(speed=2.0), QUIET)
    arrivals: list[tuple[float, np.ndarray]] = []
    original = _symbol.SymbolActor._scan_batch

    def stamping(self: Any, batch: Any) -> None:
        arrivals.append((trio.current_time(), np.array(batch.ticks.seq)))
        original(self, batch)

    _symbol.SymbolActor._scan_batch = stamping  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with trio.open_nursery() as nursery:
                ws, rest = await nursery.start(server.serve, "127.0.0.1", 0, 0)

                class _Ports:
                    pass

                ports = _Ports()
                ports.ws, ports.rest = ws, rest  # type: ignore[attr-defined]
                config = _config(Path(tmp), ports, transport)  # type: ignore[arg-type]
                stop = trio.Event()
                nursery.start_soon(_stop_later, stop, seconds)
                await run_paper(config, log=QUIET, stop=stop)
                nursery.cancel_scope.cancel()
    finally:
        _symbol.SymbolActor._scan_batch = original  # type: ignore[method-assign]
    sent = dict(server.send_times)  # k-th message on the connection -> send time
    lat = [(at - sent[int(k)]) * 1e3 for at, seqs in arrivals for k in seqs if int(k) in sent]
    a = np.asarray(lat)
    return {"samples": int(a.size), "p50": float(np.median(a)), "p99": float(np.percentile(a, 99))}


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark and return its JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench feed")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--ingest-only", action="store_true", help="only the pre-encoded-frames ingestion figure"
    )
    parser.add_argument(
        "--cpu-only",
        action="store_true",
        help="only the CPU cost per message of frame parsing and the feed's decode (no socket)",
    )
    parser.add_argument(
        "--transports",
        default="wsproto,trio-websocket",
        help="comma-separated transports to measure (default: both)",
    )
    args = parser.parse_args(argv)
    transports = [t for t in args.transports.split(",") if t]
    for t in transports:
        if t not in ("wsproto", "trio-websocket"):
            parser.error(f"--transports: unknown transport {t!r}")
    capture = FULL if FULL.exists() else SAMPLE
    if args.cpu_only:
        return {
            "benchmark": "feed",
            "capture": str(capture),
            "cpu": _cpu_per_message(capture, max(args.repeat, 1)),
        }
    if args.ingest_only:
        return {
            "benchmark": "feed",
            "capture": str(capture),
            **{
                t: {
                    "ingest": statistics.median_low(
                        [_ingest(t, capture)["msgs_per_s"] for _ in range(args.repeat)]
                    )
                }
                for t in transports
            },
        }
    total = len(load_recording([SAMPLE]).messages)
    out: dict[str, Any] = {"benchmark": "feed", "messages": total, "repeat": args.repeat}
    for transport in transports:
        recv = [trio.run(_receive, transport, total) for _ in range(args.repeat)]
        pipe = [trio.run(_pipeline, transport, total) for _ in range(args.repeat)]
        ingest = [_ingest(transport, capture)["msgs_per_s"] for _ in range(args.repeat)]
        out[transport] = {
            "ingest_msgs_per_s": statistics.median(ingest),
            "receive_msgs_per_s": statistics.median(recv),
            "pipeline_events_per_s": statistics.median(pipe),
            "latency_ms": trio.run(_latency, transport, args.latency_seconds),
        }
    if len(transports) == 2:
        out["receive_ratio_wsproto_over_trio_websocket"] = (
            out["wsproto"]["receive_msgs_per_s"] / out["trio-websocket"]["receive_msgs_per_s"]
        )
    return out


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:]), indent=2))

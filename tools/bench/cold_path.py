"""Cold path: an entry's symbol step, risk step and order write, warm vs. after other work.

``python -m tools.bench cold_path [--rounds R] [--sweep-mib M,M] [--work-msgs K]
[--sleep-ms S] [--events-per-step E] [--entries N] [--perf]`` prints JSON.

The question: the entry path costs ~19 us warm in a microbenchmark but ~150 us live;
is that the code's instruction count, or its footprint going cold between ticks?
The path: the tick-to-order bench's strategy (the scalper, trading as often as it
can) in a :class:`~engine.actors.SymbolActor` and the :class:`~engine.actors.RiskActor`
driven in the caller's task as the inline path runs them (their ``step`` coroutines
never wait without a model), a JSON logger to /dev/null behind the inline path's
deferral (lines held during the step, written after it, untimed), then the approved
entry through the real :class:`~engine.venues.binance.BinanceRestClient`'s inline
write (``new_order_now``: template rounding, limiter, HMAC signing, the lean
transport) to a real socket: ``tools/bench/_order_server.py`` in another process
(at nice 10, as the tick-to-order bench's exchange). Timed (``perf_counter_ns``)
from the symbol step's call to the request handed to the socket (the write hook);
the answer is read after, untimed.

The bundled BTCUSDT capture is cut into steps of E events and driven through the
actors in order, each entry denied at the next step (which returns the symbol to
IDLE, so it enters again at its next signal): about 400 entries, each after some 30
steps without one. A first pass finds the steps that enter (the flow is the same
every pass, whatever runs between steps); then each of R passes runs, right before
each entry step, one condition, in turn (shifted each pass, so each entry step meets
each condition):

- ``warm``: nothing: only the steps before it (the same actors' code, no entry);
- ``sweep_<M>mib``: writing and reading an M-MiB buffer (numpy; little Python run),
  per M (default 1: about a core's L2; 64: past the L3);
- ``python_work``: K messages' worth of the feed's own work (decode and columns:
  :func:`engine.feeds.parse_line`, ``append_message``, ``take``), the kind of
  Python that runs between two entries live;
- ``sleep``: ``trio.sleep(S ms)``: the core idles in epoll, as between ticks live.

Per condition: p50 / p90 of the whole path (``path_us``) and its parts (``symbol_us``,
``risk_us``, ``submit_to_written_us``); the thread CPU time of each
(``cpu_us``, ``symbol_cpu_us``, ...: ``time.thread_time_ns``, the kernel's time in
the write included): against the wall time, the CPU's work apart from time off the
CPU; and each condition's p50 over warm's. The GC is frozen after the first pass
(as the engine does after its warm-up) and left on. With ``--perf``: ``perf stat``
counters per path (``perf_stat_per_path``) on the timed paths only, one ``perf`` per
condition (:class:`_Perf`; its enable/disable round trips wake ``perf`` around each
path, so take its counters, not its times); the hardware ones (cycles,
instructions, cache misses) need a PMU, which a VM often lacks (``<not
supported>``).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import trio

from .tick_to_order import EXITS, STRATEGY

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
SYMBOL = "BTCUSDT"
PERF_EVENTS = (
    "task-clock,page-faults,context-switches,cycles,instructions,cache-misses,"
    "cache-references,L1-icache-load-misses,branch-misses"
)


def _drive(coro: Any) -> Any:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the step waited")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stats(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered), 1),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
    }


class _Rig:
    """The actors, the logger, the capture's steps and lines, the order client."""

    def __init__(self, events_per_step: int) -> None:
        from engine import config_from_dict
        from engine._logging import make_logger
        from engine.actors._inline import deferral_of, deferring
        from engine.feeds import CaptureStats, parse_line
        from engine.feeds._columns import Columns, append_message

        doc = {
            "engine": {"mode": "paper"},
            "data": {"symbols": [SYMBOL]},
            "strategy": STRATEGY,
            "exits": EXITS,
            "risk": {"max_orders_per_second": 50},
            "hardware": {"enabled": False},
        }
        self.config = config_from_dict(doc, source="<bench>", base_dir=ROOT)
        base, self.sink = make_logger(os.devnull)
        self.log = deferring(base)
        logs = deferral_of(self.log)
        assert logs is not None
        self.logs = logs
        self.parse_line, self.append_message, self.Columns = parse_line, append_message, Columns
        self.stats = CaptureStats()
        self.lines: list[bytes] = []
        self.steps: list[tuple[int, Any]] = []
        cols = Columns()
        n = 0
        with gzip.open(SAMPLE, "rb") as fh:
            for raw in fh:
                line = raw.rstrip(b"\n")
                self.lines.append(line)
                parsed = parse_line(line, self.stats)
                if parsed is None or parsed[0] is None or parsed[1].symbol != SYMBOL:
                    continue
                ts, msg = parsed
                n += 1
                append_message(cols, ts, n, msg)
                if n % events_per_step == 0:
                    ticks = cols.take()
                    assert ticks is not None
                    self.steps.append((ts, ticks))
        self._work_at = 0

    def actors(self) -> tuple[Any, Any, Any]:
        from engine.actors import RiskActor, SymbolActor
        from engine.ledger import PositionLedger
        from engine.strategy import resolve_strategy

        config = self.config
        ledger = PositionLedger()
        send, receive = trio.open_memory_channel[Any](0)
        self._keep = (send, receive)
        actor = SymbolActor(
            symbol=SYMBOL,
            config=config.strategy,
            market=receive,
            reports=receive,
            intents=send,
            log=self.log.bind(actor="symbol"),
            ledger=ledger,
            sizing=config.sizing,
            capital=config.risk.capital,
            max_notional=config.risk.max_notional_per_symbol,
            strategy=resolve_strategy(config).new(config.strategy, config.sizing),
            exits=config.exits,
        )
        risk = RiskActor(
            config=config.risk,
            symbols=[SYMBOL],
            intents={SYMBOL: receive},
            reports=receive,
            orders=send,
            log=self.log.bind(actor="risk"),
            ledger=ledger,
        )
        return actor, risk, ledger

    def python_work(self, messages: int) -> None:
        """The feed's decode and columns over the next ``messages`` lines."""
        cols = self.Columns()
        lines, parse, append, stats = self.lines, self.parse_line, self.append_message, self.stats
        i = self._work_at
        for n in range(messages):
            parsed = parse(lines[i], stats)
            i = (i + 1) % len(lines)
            if parsed is not None and parsed[0] is not None:
                append(cols, parsed[0], n, parsed[1])
            if n % 64 == 63:
                cols.take()
        self._work_at = i


def _report(step: int, ts: int, ticks: Any, orders: Any) -> Any:
    from engine.messages import Mark, OrderDenied, ReportBatch, SubmitOrder

    denials = tuple(
        OrderDenied(
            client_order_id=c.client_order_id,
            symbol=c.symbol,
            purpose=c.purpose,
            reason="bench",
            ts_event=ts,
            ts_init=ts,
            seq=c.seq,
            correlation_id=c.correlation_id,
        )
        for c in orders.commands
        if isinstance(c, SubmitOrder)
    )
    bid, ask = ticks.bid[-1], ticks.ask[-1]
    marks = (Mark(symbol=SYMBOL, ts=ts, bid=bid, ask=ask),) if bid == bid else ()
    return ReportBatch(
        step=step,
        events=(*orders.denials, *denials),
        marks=marks,
        trading_state=orders.trading_state,
    )


class _Path:
    """The flow of steps through the actors; an entry's order written to the server."""

    def __init__(self, rig: _Rig, client: Any) -> None:
        from engine.messages import MarketBatch, Purpose, Side, SubmitOrder
        from engine.venues.binance import OrderTemplate

        self._rig, self._client = rig, client
        self._batch, self._submit, self._entry, self._buy = (
            MarketBatch,
            SubmitOrder,
            Purpose.ENTRY,
            Side.BUY,
        )
        self._template = OrderTemplate(
            symbol=SYMBOL,
            tick_size=Decimal("0.1"),
            step_size=Decimal("0.001"),
            market_step_size=Decimal("0.001"),
        )
        self.mark = self.mark_cpu = 0
        self._n = 0

    async def connect(self) -> None:
        """One order the slow way: the connection up, idle after."""
        await self._client.new_order(
            self._template.prepare(self._buy, 0.001, client_order_id="cold-0")
        )

    def _written(self) -> None:
        self.mark = time.perf_counter_ns()
        self.mark_cpu = time.thread_time_ns()

    async def flow(
        self,
        before: dict[int, str] | None = None,
        work: Any = None,
        perf: _Perf | None = None,
    ) -> tuple[list[int], dict[str, list[dict[str, float]]]]:
        """Every step, from new actors; ``before``: step -> the condition to apply
        (``work(cond)``) before it. Returns the steps that entered and, per
        condition, the timed rows of those entries."""
        rig = self._rig
        actor, risk, _ledger = rig.actors()
        report = None
        entered: list[int] = []
        rows: dict[str, list[dict[str, float]]] = {}
        clock, cpu = time.perf_counter_ns, time.thread_time_ns
        for k, (ts, ticks) in enumerate(rig.steps):
            cond = before.get(k) if before is not None else None
            if cond is not None:
                await work(cond)
                if perf is not None:
                    perf.on(cond)
            batch = self._batch(step=k, ts_start=ts, symbol=SYMBOL, ticks=ticks)
            rig.logs.holding = True
            c0 = cpu()
            t0 = clock()
            intents = _drive(actor.step(k, ts, batch, report))
            t1 = clock()
            c1 = cpu()
            if report is not None:
                risk.on_report(report)
            orders = _drive(risk.step(k, None, [intents]))
            t2 = clock()
            c2 = cpu()
            entry = None
            for c in orders.commands:
                if isinstance(c, self._submit) and c.purpose is self._entry:
                    entry = c
                    break
            sent = None
            if entry is not None:
                self._n += 1
                # The venue's inline write: rounded, signed and written in this call
                # (an idle connection, room in the limiter); the answer read after.
                request = self._template.prepare(
                    entry.side,
                    entry.qty,
                    client_order_id=f"cold-{self._n}",
                    reduce_only=entry.reduce_only,
                    ref_price=entry.ref_price,
                )
                self.mark = self.mark_cpu = 0
                sent = self._client.new_order_now(request, written=self._written)
                if sent is None:
                    raise RuntimeError("the order was not written inline")
            if perf is not None and cond is not None:
                perf.off(cond)
            rig.logs.release()
            if entry is not None:
                t3, c3 = self.mark, self.mark_cpu
                entered.append(k)
                if cond is not None:
                    rows.setdefault(cond, []).append(
                        {
                            "path_us": (t3 - t0) / 1e3,
                            "symbol_us": (t1 - t0) / 1e3,
                            "risk_us": (t2 - t1) / 1e3,
                            "submit_to_written_us": (t3 - t2) / 1e3,
                            "cpu_us": (c3 - c0) / 1e3,
                            "symbol_cpu_us": (c1 - c0) / 1e3,
                            "risk_cpu_us": (c2 - c1) / 1e3,
                            "submit_cpu_us": (c3 - c2) / 1e3,
                        }
                    )
                await self._client.finish_new_order(sent)
            report = _report(k, ts, ticks, orders)
        return entered, rows


async def _measure(rig: _Rig, args: argparse.Namespace, base: str) -> dict[str, Any]:
    import httpx

    from engine.venues.binance import (
        BinanceRestClient,
        Credentials,
        LeanTransport,
        RateLimit,
        RateLimiter,
        ServerClock,
    )

    limits = (
        RateLimit(
            kind="REQUEST_WEIGHT", interval_s=60.0, limit=10**9, header="X-MBX-USED-WEIGHT-1M"
        ),
        RateLimit(kind="ORDERS", interval_s=10.0, limit=10**9, header="X-MBX-ORDER-COUNT-10S"),
    )
    sweeps = {f"sweep_{m}mib": np.zeros(m * (1 << 20) // 8) for m in args.sweep_mib}
    conditions = ["warm", *sweeps, "python_work", "sleep"]
    if args.conditions:
        conditions = [c for c in conditions if c in args.conditions.split(",")]

    async def work(cond: str) -> None:
        if cond in sweeps:
            sweep = sweeps[cond]
            sweep += 1.0
            float(sweep.sum())
        elif cond == "python_work":
            rig.python_work(args.work_msgs)
        elif cond == "sleep":
            await trio.sleep(args.sleep_ms / 1e3)  # idle in epoll

    results: dict[str, list[dict[str, float]]] = {c: [] for c in conditions}
    tmp = tempfile.TemporaryDirectory()
    perf = _Perf(conditions, args.perf_events, Path(tmp.name)) if args.perf else None
    async with httpx.AsyncClient(timeout=None) as http:
        lean = LeanTransport(base, pool_size=1)
        client = BinanceRestClient(
            http,
            credentials=Credentials("bench-key", "bench-secret"),
            limiter=RateLimiter(limits),
            clock=ServerClock(),
            base_url=base,
            order_transport=lean,
        )
        path = _Path(rig, client)
        await path.connect()
        # A first pass: which steps enter (the flow is the same every pass: each
        # entry is denied at the next step, whatever ran between).
        entries, _ = await path.flow()
        entries = entries[: args.entries] if args.entries else entries
        gc.collect()
        gc.freeze()  # as the engine does after its warm-up (hardware.gc_freeze)
        for r in range(args.rounds):
            # Round-robin, shifted each round: each entry step meets each condition.
            before = {k: conditions[(i + r) % len(conditions)] for i, k in enumerate(entries)}
            entered, rows = await path.flow(before, work, perf)
            if entered[: len(entries)] != entries:
                raise RuntimeError("the flow entered at other steps this pass")
            for cond, got in rows.items():
                results[cond] += got
        await lean.aclose()
    out: dict[str, Any] = {"entry_steps": len(entries)}
    if perf is not None:
        counters = perf.close()
        out["perf_stat_per_path"] = {
            cond: {
                name: round(v / max(1, len(results[cond])), 1) if isinstance(v, float) else v
                for name, v in c.items()
            }
            for cond, c in counters.items()
        }
    tmp.cleanup()
    names = list(results[conditions[0]][0]) if results[conditions[0]] else []
    for cond in conditions:
        rows_ = results[cond]
        out[cond] = {name: _stats([row[name] for row in rows_]) for name in names}
    if "warm" in conditions:
        warm = out["warm"]
        out["ratio_p50_to_warm"] = {
            cond: {name: round(out[cond][name]["p50"] / warm[name]["p50"], 2) for name in names}
            for cond in conditions
            if cond != "warm"
        }
    return out


class _Perf:
    """``perf stat`` on this process per condition, counting only its timed paths.

    One ``perf stat -p <this pid> -D -1 --control fifo:...`` per condition, started
    disabled; :meth:`on` and :meth:`off` around a timed path write ``enable`` and
    ``disable`` to its control FIFO and wait for the acknowledgement (a few syscalls
    either side of the path, outside its stamps).
    """

    def __init__(self, conditions: list[str], events: str, tmp: Path) -> None:
        self._events = events
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._ctl: dict[str, tuple[int, int]] = {}
        for cond in conditions:
            ctl, ack = tmp / f"{cond}.ctl", tmp / f"{cond}.ack"
            os.mkfifo(ctl)
            os.mkfifo(ack)
            self._procs[cond] = subprocess.Popen(
                ["perf", "stat", "-x", ",", "-e", events, "-D", "-1", "-p", str(os.getpid()),
                 "--control", f"fifo:{ctl},{ack}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            self._ctl[cond] = (os.open(ctl, os.O_WRONLY), os.open(ack, os.O_RDONLY))

    def _send(self, cond: str, word: bytes) -> None:
        ctl, ack = self._ctl[cond]
        os.write(ctl, word + b"\n")
        os.read(ack, 16)

    def on(self, cond: str) -> None:
        self._send(cond, b"enable")

    def off(self, cond: str) -> None:
        self._send(cond, b"disable")

    def close(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cond, proc in self._procs.items():
            for fd in self._ctl[cond]:
                os.close(fd)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
            counters: dict[str, Any] = {}
            for line in err.splitlines():
                fields = line.split(",")
                if len(fields) >= 3 and fields[2].split(":")[0] in self._events.split(","):
                    value = fields[0]
                    counters[fields[2]] = float(value) if value[:1].isdigit() else value
            out[cond] = counters
        return out


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench cold_path")
    parser.add_argument(
        "--entries", type=int, default=0, help="entry steps measured (0: every one)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="passes over the capture")
    parser.add_argument("--events-per-step", type=int, default=3)
    parser.add_argument(
        "--sweep-mib",
        type=lambda text: [int(m) for m in text.split(",") if m],
        default=[1, 64],
        help="buffer sizes swept (MiB, comma-separated)",
    )
    parser.add_argument("--work-msgs", type=int, default=2000)
    parser.add_argument("--sleep-ms", type=float, default=5.0)
    parser.add_argument("--conditions", default="", help="only these (comma-separated)")
    parser.add_argument(
        "--perf", action="store_true", help="perf stat per condition, on its timed paths"
    )
    parser.add_argument("--perf-events", default=PERF_EVENTS, help="perf stat -e")
    args = parser.parse_args(argv)
    rig = _Rig(args.events_per_step)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tools.bench._order_server", "--port", str(port)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        preexec_fn=lambda: os.nice(10),
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "ready"
        result = trio.run(_measure, rig, args, f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        if rig.sink is not None:
            rig.sink.close()
    out: dict[str, Any] = {
        "benchmark": "cold_path",
        "config": {
            "entries": args.entries,
            "rounds": args.rounds,
            "events_per_step": args.events_per_step,
            "sweep_mib": args.sweep_mib,
            "work_msgs": args.work_msgs,
            "sleep_ms": args.sleep_ms,
        },
        "load": os.getloadavg(),
        **result,
    }
    return out

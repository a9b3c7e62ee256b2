"""Live tick-to-order latency: the engine in live mode against the loopback exchange.

``python -m tools.bench tick_to_order [--entries N] [--seconds S] [--speed X]
[--min-step-ms MS] [--transport lean|httpx] [--no-inline] [--actors] [--slow-strategy]
[--no-hardware] [--exchange-cpus auto|any|LIST] [--fifo] [--stages] [--log-file]``
prints JSON. The exchange is ``python -m engine sim-exchange`` in another process
playing the bundled BTCUSDT capture at ``--speed``; the engine runs in this process
exactly as ``python -m engine --mode live`` runs it (:func:`engine._streaming.run_live`:
live feed over wsproto, the actor shells, :class:`BinanceVenue` over real HTTP), with
a strategy set up to trade as often as the capture lets it (the shipped scalper, one
vote enough, ``[exits]`` at 1 bp or 150 ms; no ML filter; ``risk.max_orders_per_second``
raised to 50 so that risk's order rate, still checked, denies none of it), until
``--entries`` entry orders are written (default 200: enough for a p99 over the
entries; 0: no count) or ``--seconds`` of wall time have passed (default 150),
whichever comes first. The capture plays at its own pace (``--speed 1``): about 2-3
entries a second, so 200 take about 80-100 s. Each round trip is six order requests
(the entry, its exit, and the venue's protective stop and target, placed and
cancelled); at ``--speed 2`` they reach ~200 in a 10 s window, the rate limiter's
working share of Binance's 300 orders per 10 s, and the limiter holds the next order
until the window turns (0.2-0.9 s): a policy wait, not the path's. ``queued`` counts
the orders not written inline (held by the limiter, or with no idle connection); it
should be 0 at the default pace. ``--slow-strategy`` trades as the bench did before (ema_cross,
``sample_ms=200, fast=3, slow=8, rsi_period=5``: 9-10 entries in 40 s, too few for a
p99; the EMA cross finds under 50 crossings in the whole capture). By default the
feed's read loop runs each step through the symbol, risk and execution cores
(``feeds.inline``, the default); ``--actors`` runs them in their actor tasks over
channels instead (the path before).

Per order the venue times (``BinanceVenue.write_latency``, logged as ``order
written``), on one clock (``time.time_ns``):

- ``tick_to_written_us``: from the order's ``ts_event`` (for an order a tick decided:
  the tick's receive stamp, which the live feed takes from its websocket transport:
  the kernel's receive time of the read's bytes, ``SO_TIMESTAMPNS``, so the figure
  starts when the triggering frame's bytes were readable on the socket; see
  ``engine/feeds/_transport.py``) to the order request's last byte written to the
  socket;
- ``submit_to_written_us``: from ``BinanceVenue.submit`` (the execution actor) to the
  same write: the venue's and transport's share of the figure above.

``entries`` is the same for entry orders only (their ``ts_event`` is always a tick's;
an exit may be decided by a timer or a retry at a step's time), with, beside it,
``post_read_tick_to_written_us``: the same from the stamp the feed took before the
kernel's (the time the socket read returned: without the wake-up, the event loop's
round and the read), and ``rx_to_read_us``, the difference. ``rx_stamp`` counts the
feed's reads and those without a kernel stamp (``fallbacks``: stamped after the
read). On a TCP stream the kernel's stamp is the read's latest segment's: a
triggering frame that came in an earlier segment of the same read was readable
earlier still. ``rx_to_read_split`` says where ``rx_to_read`` went: ``asleep``, the
event loop was waiting in epoll when the bytes came (``wake_us``, the kernel's stamp
to epoll's return; ``loop_to_read_us``, the loop's round and the read), or ``busy``, it
was running the feed's earlier steps or other tasks and the bytes waited for that
(a trio instrument keeps the loop's last wake-up). Percentiles are exact over every
order of the run (p50 / p99 / max, us).

``--stages`` (inline path) splits each entry's tick-to-written time into stages,
stamped by wrappers around the feed's step, the inline step, the three actors'
steps and ``BinanceVenue.submit`` (a wrapper costs about a microsecond):
``rx_to_read`` (the kernel's receive stamp to the read's return), ``read_to_step``
(the read's return to the feed's step: frame decode and the rest of the read),
``take_batches`` (the step's columns and batch messages),
``symbol``, ``risk``, ``execution_to_submit`` (execution's step up to the venue's
``submit``), ``submit_checks`` (``submit`` up to the venue's own stamp, after its
filter checks), ``submit_to_written``; each as p50 / p99 / max, us. Each entry's
tick is its order's ``ts_event``. ``steps`` times every feed step (what a frame that
comes during one waits for) and an entry's step after its write; ``rx_to_read_split``
then names the tasks a ``busy`` read's bytes waited for.

The engine's log lines are dropped as they are made (after structlog's call and the
first processor) unless ``--log-file``: then they go through the engine's own
processors (:func:`engine._logging.make_logger`'s: time stamp, redaction, ECS, JSON)
to a file, as ``python -m engine`` writes them (``log_lines`` counts them).

The engine runs with the ``[hardware]`` section's defaults, as a live run does (the
hardware actor pins the event loop, sets the gc thresholds and freezes the start-up
heap); ``--no-hardware`` runs it with ``hardware.enabled = false``, as this bench did
before: CPython's default gc thresholds, no freeze, so that full collections walk
the whole heap of numba, numpy and the engine during the run.

The exchange process runs on every CPU but the engine's Trio CPU of that plan
(``--exchange-cpus auto``; ``any`` as before, or a list). Free to run there, the
exchange, woken by the engine's order on loopback (a synchronous wake-up, which the
kernel places on the waker's CPU), preempted the engine inside its ``send`` for 2-3 ms
(its CPU time over the write ~0.2 ms): the p99 of 3.3-3.6 ms in earlier runs, which
nice 10 did not prevent. A remote exchange never runs on the engine's CPU. Other
processes of the machine still may: ``--fifo`` runs the Trio thread under
``SCHED_FIFO`` (``hardware.sched_fifo``), which no ordinary process preempts.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import structlog
import trio

from engine import config_from_dict
from engine._logging import redact_secrets, to_ecs
from engine._streaming import run_live
from engine._supervisor import new_journal_path
from engine.venues.binance import BinanceVenue
from hardware import CpuListError, HardwareConfig, make_plan, parse_cpulist, read_topology

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
KEY = "benchkey" + "A" * 56
SECRET = "benchsecret" + "b" * 53
# Trades as often as the capture lets it (the shipped scalper, one vote enough, exits
# at 1 bp or 150 ms): about 3 entries a second of capture, where an EMA cross finds
# under 50 crossings in the whole 180 s capture.
STRATEGY = {
    "kind": "scalper",
    "params": {
        "min_confirmations": 1,
        "min_strength": 0.0,
        "ofi_period": 5,
        "ofi_threshold": 0.2,
        "bar_ms": 100,
    },
}
EXITS = {"stop_bps": 1.0, "target_bps": 1.0, "time_limit_ms": 150}
# The bench's strategy before ``--entries`` (``--slow-strategy``): 9-10 entries in 40 s.
SLOW_STRATEGY = {
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
def _exchange(speed: float, nice: int, cpus: frozenset[int]) -> Iterator[tuple[int, int]]:
    """A sim-exchange process (at ``nice``, on ``cpus``: empty, wherever the kernel
    puts it); yields its (ws port, rest port)."""

    def setup() -> None:
        if nice:
            os.nice(nice)
        if cpus:
            os.sched_setaffinity(0, cpus)

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
        preexec_fn=setup if nice or cpus else None,
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
    """A structlog processor keeping the ``order written`` events; drops every event,
    or, with ``log_file``, passes it on to the engine's processors writing that file."""

    def __init__(
        self,
        stages: _Stages | None = None,
        log_file: Path | None = None,
        *,
        entries: int = 0,
        stop: trio.Event | None = None,
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self.lines = 0
        self.entries = 0
        self._stages = stages
        self._log_file = log_file
        self._want = entries
        self._stop = stop

    def bind_stop(self, stop: trio.Event) -> None:
        """Set ``stop`` once the wanted number of entries is written."""
        self._stop = stop

    def __call__(self, _logger: Any, _method: str, event_dict: dict[str, Any]) -> Any:
        self.lines += 1
        if event_dict.get("event") == "order written":
            self.events.append(dict(event_dict))
            if self._stages is not None:
                self._stages.written(event_dict)
            if event_dict.get("purpose") == "ENTRY":
                self.entries += 1
                if self._want and self.entries >= self._want and self._stop is not None:
                    self._stop.set()  # the engine stops as at the end of --seconds
        if self._log_file is None:
            raise structlog.DropEvent
        return event_dict

    def logger(self, stack: contextlib.ExitStack) -> Any:
        if self._log_file is None:
            return structlog.wrap_logger(
                structlog.ReturnLogger(),
                processors=[self],
                wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            )
        # engine._logging.make_logger's processors, after this one.
        stream = stack.enter_context(self._log_file.open("ab"))
        return structlog.wrap_logger(
            structlog.BytesLogger(stream),
            processors=[
                self,
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="%Y-%m-%dT%H:%M:%S.%fZ", utc=True),
                redact_secrets,
                to_ecs,
                structlog.processors.JSONRenderer(
                    serializer=lambda obj, **_kw: orjson.dumps(obj, default=str)
                ),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        )


class _LoopWake(trio.abc.Instrument):
    """The event loop's latest wait for I/O: when it returned, and whether it could
    sleep (a timeout above 0: nothing was runnable)."""

    def __init__(self) -> None:
        self.woke_ns = 0
        self.timeout = 0.0
        self.ran: list[tuple[int, str]] = []  # (start, name) of each task step: --stages

    def after_io_wait(self, timeout: float) -> None:
        self.woke_ns = time.time_ns()
        self.timeout = timeout

    def ran_between(self, start: int, end: int) -> list[str]:
        """The tasks stepped from ``start`` to ``end`` (ns; ``before_task_step`` kept),
        the one stepping at ``start`` first."""
        ran = self.ran
        i = max(0, bisect.bisect_left(ran, (start, "")) - 1)
        out: list[str] = []
        while i < len(ran) and ran[i][0] <= end:
            out.append(ran[i][1])
            i += 1
        return out


class _LoopTasks(_LoopWake):
    """:class:`_LoopWake` keeping every task step too (``--stages``)."""

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.ran.append((time.time_ns(), task.name))


def _short(task_name: str) -> str:
    """A task's name without its module (``engine.feeds._live.LiveFeed._pump``:
    ``LiveFeed._pump``)."""
    return ".".join(task_name.split(".")[-2:])


class _Reads:
    """Per feed read, its post-read stamp and the loop's latest wake-up by its receive
    stamp (the kernel's, which the feed gives its ticks), and per order its
    ``ts_event``: the figure from the stamp the feed took before, beside the one from
    the kernel's, and where the time between them went (:meth:`split`)."""

    def __init__(self, *, tasks: bool = False) -> None:
        self.read_ns: dict[int, int] = {}
        self.woke: dict[int, tuple[int, float]] = {}
        self.ts_event: dict[str, int] = {}
        self.conns: dict[int, Any] = {}
        self.loop = _LoopTasks() if tasks else _LoopWake()

    def install(self) -> None:
        """Wrap the transport's parse (after both stamps) and the venue's submit."""
        from engine.feeds._transport import _Wsproto

        parse, submit = _Wsproto._parse, BinanceVenue.submit
        read_ns, ts_event, conns = self.read_ns, self.ts_event, self.conns
        woke, loop = self.woke, self.loop

        def parse_(conn: Any, data: Any) -> None:
            read_ns[conn.received_ns] = conn.read_ns
            woke[conn.received_ns] = (loop.woke_ns, loop.timeout)
            conns[id(conn)] = conn
            parse(conn, data)

        def submit_(venue: Any, order: Any) -> Any:
            ts_event[order.client_order_id] = order.ts_event
            return submit(venue, order)

        _Wsproto._parse = parse_  # type: ignore[method-assign]
        BinanceVenue.submit = submit_  # type: ignore[method-assign]

    def rx_to_read_ns(self, tick: int) -> int | None:
        """The post-read stamp minus the receive stamp of the read stamped ``tick``."""
        read = self.read_ns.get(tick)
        return None if read is None else read - tick

    def split(self, ticks: list[int]) -> dict[str, Any]:
        """Where the reads stamped ``ticks`` spent their kernel-to-read time: ``asleep``,
        the loop was waiting in epoll when the bytes came (``wake``: from the kernel's
        stamp to epoll's return, the wake-up; ``loop_to_read``: from there to the
        read's return, the loop's round and the read); ``busy``, it was running tasks
        (the feed's own earlier steps, answer readers, the journal) and the bytes
        waited for that work to end (``wait``: the whole kernel-to-read time)."""
        asleep: list[tuple[float, float]] = []
        busy: list[float] = []
        busy_with: collections.Counter[str] = collections.Counter()
        for tick in ticks:
            read, (woke_ns, timeout) = self.read_ns.get(tick), self.woke.get(tick, (0, 0.0))
            if read is None:
                continue
            if timeout > 0 and woke_ns >= tick:
                asleep.append(((woke_ns - tick) / 1e3, (read - woke_ns) / 1e3))
            else:
                busy.append((read - tick) / 1e3)
                # The tasks the bytes waited for (the feed's own: its earlier step).
                busy_with.update(set(self.loop.ran_between(tick, read)))
        return {
            "asleep": {
                "n": len(asleep),
                "wake_us": _stats([a for a, _ in asleep]),
                "loop_to_read_us": _stats([b for _, b in asleep]),
            },
            "busy": {
                "n": len(busy),
                "wait_us": _stats(busy),
                # With --stages: per task, in how many of them it ran during the wait.
                "tasks": {_short(name): n for name, n in busy_with.most_common(8)},
            },
        }

    def counts(self) -> dict[str, int]:
        conns = self.conns.values()
        return {
            "reads": sum(c.reads for c in conns),
            "fallbacks": sum(c.rx_stamp_fallbacks for c in conns),
        }


class _Stages:
    """Stamps of the inline path's stages for the step being run (see ``--stages``)."""

    def __init__(self, reads: _Reads) -> None:
        self._reads = reads
        self.step: dict[str, int] = {}
        self.entries: list[dict[str, float]] = []
        self.steps_us: list[float] = []  # every feed step, start to end
        self.after_written_us: list[float] = []  # an entry's step, from its write to its end
        self.written_ns = 0
        self.step_parts: dict[str, list[float]] = {}  # every step's stages, us

    def install(self) -> None:
        """Wrap the stages' methods on their classes (before the engine is built)."""
        from engine.actors import ExecutionActor, InlineStep, RiskActor, SymbolActor
        from engine.feeds._live import LiveFeed

        step = self.step
        send_step, inline_call = LiveFeed._send_step, InlineStep.__call__
        symbol_step, risk_step, execution_step = (
            SymbolActor.step,
            RiskActor.step,
            ExecutionActor.step,
        )
        submit = BinanceVenue.submit

        async def send_step_(feed: Any, *, final: bool) -> None:
            step.clear()
            step["step"] = start = time.time_ns()
            entries = len(self.entries)
            await send_step(feed, final=final)
            end = time.time_ns()
            self.steps_us.append((end - start) / 1e3)
            if "inline" in step:
                inline = step["inline"]
                parts = {n: step.get(n, 0) for n in ("symbol", "risk", "execution")}
                parts["rest"] = end - inline - sum(parts.values())  # journal, held lines
                parts["take_batches"] = inline - start
                for name, ns in parts.items():
                    self.step_parts.setdefault(name, []).append(ns / 1e3)
            if len(self.entries) > entries:  # an entry's step: what followed its write
                self.after_written_us.append((end - self.written_ns) / 1e3)

        async def inline_(inline: Any, *a: Any) -> None:
            step["inline"] = time.time_ns()
            await inline_call(inline, *a)

        def timed(name: str, method: Any) -> Any:
            async def wrapper(actor: Any, *a: Any) -> Any:
                t = time.time_ns()
                step.setdefault(f"{name}_at", t)
                out = await method(actor, *a)
                step[name] = step.get(name, 0) + time.time_ns() - t
                return out

            return wrapper

        def submit_(venue: Any, order: Any) -> Any:
            step["submit_at"] = time.time_ns()
            # Per order: a step may submit several, and its log lines come after them all.
            step[f"order:{order.client_order_id}"] = (step["submit_at"], order.ts_event)
            return submit(venue, order)

        LiveFeed._send_step = send_step_  # type: ignore[method-assign]
        InlineStep.__call__ = inline_  # type: ignore[method-assign]
        SymbolActor.step = timed("symbol", symbol_step)  # type: ignore[method-assign]
        RiskActor.step = timed("risk", risk_step)  # type: ignore[method-assign]
        ExecutionActor.step = timed("execution", execution_step)  # type: ignore[method-assign]
        BinanceVenue.submit = submit_  # type: ignore[method-assign]

    def written(self, event: dict[str, Any]) -> None:
        """An entry's ``order written`` event: its stages from the step's stamps."""
        st = self.step
        order = st.get(f"order:{event.get('client_order_id')}")
        if event.get("purpose") != "ENTRY" or order is None or "inline" not in st:
            return
        submit_at, tick = order  # tick: the order's ts_event, its tick's receive stamp
        submit_ns = event["submit_ms"] * 1e6
        # The venue stamps its submit time (``submit_ms``'s start) after its checks.
        venue_at = tick + event["latency_ms"] * 1e6 - submit_ns
        self.written_ns = round(tick + event["latency_ms"] * 1e6)
        rx_to_read = self._reads.rx_to_read_ns(tick)
        if rx_to_read is None:
            return
        self.entries.append(
            {
                "rx_to_read": rx_to_read / 1e3,
                "read_to_step": (st["step"] - tick - rx_to_read) / 1e3,
                "take_batches": (st["inline"] - st["step"]) / 1e3,
                "symbol": st.get("symbol", 0) / 1e3,
                "risk": st.get("risk", 0) / 1e3,
                "execution_to_submit": (submit_at - st["execution_at"]) / 1e3,
                "submit_checks": (venue_at - submit_at) / 1e3,
                "submit_to_written": submit_ns / 1e3,
            }
        )

    def summary(self) -> dict[str, Any]:
        names = self.entries[0].keys() if self.entries else ()
        return {name: _stats([e[name] for e in self.entries]) for name in names}

    def steps(self) -> dict[str, Any]:
        """Every feed step's time (what a frame coming during it waits for, at most),
        and an entry's step's time after its order was written (held log lines, the
        transitions' records, risk's report, the journal batch)."""
        return {
            "all_us": _stats(self.steps_us),
            "all_stages_us": {name: _stats(v) for name, v in self.step_parts.items()},
            "entry_after_written_us": _stats(self.after_written_us),
        }


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
        "strategy": SLOW_STRATEGY if args.slow_strategy else STRATEGY,
        **({} if args.slow_strategy else {"exits": EXITS}),
        # Risk's order rate must not deny the strategy's orders (checked all the same).
        "risk": {"max_orders_per_second": 50},
        "venue": {
            "kind": "binance",
            "rest_url": f"http://127.0.0.1:{rest_port}",
            "ws_url": f"ws://127.0.0.1:{ws_port}",
            "api_key_env": "BENCH_KEY",
            "api_secret_env": "BENCH_SECRET",
            "order_transport": args.transport,
        },
        # The [hardware] section's defaults, as `python -m engine --mode live` runs with
        # them (pinning, gc thresholds and freeze, malloc settings); --no-hardware: none.
        **({"hardware": {"enabled": False}} if args.no_hardware else {}),
        **({"hardware": {"sched_fifo": True}} if args.fifo and not args.no_hardware else {}),
    }


def _exchange_cpus(args: argparse.Namespace, hardware: HardwareConfig) -> frozenset[int]:
    """The CPUs ``--exchange-cpus`` asks for (empty: any), with the engine's
    ``[hardware]`` section ``hardware``."""
    if args.exchange_cpus == "any":
        return frozenset()
    if args.exchange_cpus != "auto":
        try:
            return frozenset(parse_cpulist(args.exchange_cpus))
        except CpuListError as exc:
            raise SystemExit(f"tick_to_order: --exchange-cpus: {exc}") from None
    allowed = os.sched_getaffinity(0)
    if not hardware.enabled:
        return frozenset()
    plan = make_plan(read_topology(), hardware)
    rest = frozenset(allowed - set(plan.trio_cpus)) if plan.pin else frozenset()
    return rest if rest != allowed else frozenset()


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench tick_to_order")
    parser.add_argument(
        "--entries",
        type=int,
        default=200,
        help="stop once this many entry orders are written (0: run --seconds)",
    )
    parser.add_argument("--seconds", type=float, default=150.0, help="wall time trading, at most")
    parser.add_argument(
        "--slow-strategy",
        action="store_true",
        help="the bench's strategy before --entries (about one entry in 4 s)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="capture playback pace (2 and over: the order-rate limiter holds orders)",
    )
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
        "--exchange-cpus",
        default="auto",
        help="the exchange process's CPUs: a list (0,2-3), 'any' (wherever the kernel "
        "puts it), or 'auto' (default): every CPU but the engine's Trio CPU of the "
        "[hardware] plan. Woken by the engine's send on loopback, an exchange free to "
        "run on the engine's CPU preempts it mid-write for 2-3 ms (nice 10 does not "
        "stop it), a remote exchange never would",
    )
    parser.add_argument(
        "--no-inline", action="store_true", help="the sender task writes every order"
    )
    parser.add_argument(
        "--actors",
        action="store_true",
        help="feeds.inline = false: the steps run in the actor tasks, over channels",
    )
    parser.add_argument(
        "--no-hardware",
        action="store_true",
        help="hardware.enabled = false: no pinning, default gc thresholds, no gc freeze "
        "(the bench before it ran the [hardware] defaults)",
    )
    parser.add_argument(
        "--fifo",
        action="store_true",
        help="hardware.sched_fifo = true: the Trio thread under SCHED_FIFO, so that no "
        "ordinary process on its CPU (the machine's other work) preempts it",
    )
    parser.add_argument(
        "--stages", action="store_true", help="split each entry's time into stages (inline)"
    )
    parser.add_argument(
        "--log-file",
        action="store_true",
        help="write the engine's log lines to a file (JSON, ECS) instead of dropping them",
    )
    args = parser.parse_args(argv)
    os.environ["BENCH_KEY"], os.environ["BENCH_SECRET"] = KEY, SECRET
    BinanceVenue.write_inline = not args.no_inline
    reads = _Reads(tasks=args.stages)
    reads.install()
    stages = _Stages(reads) if args.stages else None
    if stages is not None:
        stages.install()
    with tempfile.TemporaryDirectory() as tmp:  # the engine's [hardware], ports aside
        hardware = config_from_dict(_doc(args, 0, 0, Path(tmp)), source="<bench>").hardware
    exchange_cpus = _exchange_cpus(args, hardware)
    with (
        tempfile.TemporaryDirectory() as tmp,
        contextlib.ExitStack() as files,
        _exchange(args.speed, args.exchange_nice, exchange_cpus) as (ws_port, rest_port),
    ):
        doc = _doc(args, ws_port, rest_port, Path(tmp))
        config = config_from_dict(doc, source="<bench>", base_dir=tmp)
        wall: dict[str, float] = {}

        async def main() -> None:
            stop = trio.Event()
            written.bind_stop(stop)
            wall["start"] = time.monotonic()
            async with trio.open_nursery() as nursery:

                async def stopper() -> None:
                    await trio.sleep(args.seconds)
                    stop.set()

                nursery.start_soon(stopper)
                await run_live(
                    config,
                    log=log,
                    stop=stop,
                    journal_path=new_journal_path(config, "live"),
                )
                nursery.cancel_scope.cancel()
            wall["end"] = time.monotonic()

        written = _Written(
            stages, Path(tmp) / "engine.jsonl" if args.log_file else None, entries=args.entries
        )
        log = written.logger(files)
        trio.run(main, instruments=[reads.loop])
    events = written.events
    tick = [e["latency_ms"] * 1e3 for e in events]
    submit = [e["submit_ms"] * 1e3 for e in events]
    entries = [e for e in events if e.get("purpose") == "ENTRY"]
    rx_to_read: list[float] = []
    post_read: list[float] = []
    ticks: list[int] = []
    for e in entries:
        ts_event = reads.ts_event.get(e["client_order_id"])
        if ts_event is not None:
            ticks.append(ts_event)
        gap = None if ts_event is None else reads.rx_to_read_ns(ts_event)
        if gap is not None:
            rx_to_read.append(gap / 1e3)
            post_read.append(e["latency_ms"] * 1e3 - gap / 1e3)
    out: dict[str, Any] = {
        "orders": len(events),
        "written_inline": sum(1 for e in events if e.get("queued") == 0),
        "queued": sum(1 for e in events if e.get("queued") != 0),
        "tick_to_written_us": _stats(tick),
        "submit_to_written_us": _stats(submit),
        "pipeline_us": _stats([t - s for t, s in zip(tick, submit, strict=True)]),
        "log_lines": written.lines,
        "entries": {
            "tick_to_written_us": _stats([e["latency_ms"] * 1e3 for e in entries]),
            "submit_to_written_us": _stats([e["submit_ms"] * 1e3 for e in entries]),
            "post_read_tick_to_written_us": _stats(post_read),
            "rx_to_read_us": _stats(rx_to_read),
            "rx_to_read_split": reads.split(ticks),
        },
        "rx_stamp": reads.counts(),
        "wall_s": round(wall["end"] - wall["start"], 1),
        "config": {
            "entries": args.entries,
            "seconds": args.seconds,
            "speed": args.speed,
            "exchange_nice": args.exchange_nice,
            "exchange_cpus": sorted(exchange_cpus) or "any",
            "min_step_ms": config.feeds.min_step_ms,
            "order_transport": args.transport,
            "write_inline": not args.no_inline,
            "feeds_inline": config.feeds.inline,
            "log_file": args.log_file,
            "strategy": SLOW_STRATEGY if args.slow_strategy else STRATEGY,
            "exits": None if args.slow_strategy else EXITS,
            "risk_max_orders_per_second": config.risk.max_orders_per_second,
            "feed_transport": config.feeds.transport,
            "hardware": config.hardware.enabled,
            "sched_fifo": config.hardware.sched_fifo,
            "exchange": "python -m engine sim-exchange (another process), bundled BTCUSDT",
        },
    }
    if stages is not None:
        out["entry_stages_us"] = stages.summary()
        out["steps"] = stages.steps()
    return out

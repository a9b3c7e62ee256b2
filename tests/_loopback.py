"""Running the engine in paper or live mode against the loopback exchange, in-process.

The tests that trade on the loopback exchange (:class:`StreamServer` playing a capture,
real websockets and HTTP over 127.0.0.1) all start it the same way: serve on free
ports, put a watched :class:`LiveFeed` in the supervisor's hands, build the config on
those ports, run the engine until a condition (never a pause) and stop it. That is
:func:`run_on_loopback`, with :func:`loopback_doc` for the common part of the config
and :class:`FeedWatch` for "the engine has seen the whole capture". The tests that run
the engine and ``python -m engine sim-exchange`` as processes share :func:`free_port`,
:func:`wait_for` and the exchange's test credentials (:data:`KEY`, :data:`SECRET`).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from engine import config_from_dict
from engine._report import RunReport
from engine._streaming import run_live, run_paper
from engine._supervisor import new_journal_path
from engine.feeds import _live
from engine.feeds._live import LiveFeed
from engine.testing import quiet_logger
from engine.venues.sim._recorded import Recording
from engine.venues.sim._stream_server import StreamServer

QUIET = quiet_logger()
# A guard against a hang, not a speed limit: a loaded CI machine took over 120 s.
GUARD_S = 600
# The loopback exchange's API key and secret in the tests (``SIM_API_KEY`` and
# ``SIM_API_SECRET`` in the environment of the processes that need them).
KEY = "simkey" + "A" * 58
SECRET = "simsecret" + "b" * 55


def final_ids(recording: Recording, symbol: str = "BTCUSDT") -> dict[str, int]:
    """The update id of the last bookTicker and depth update, the last trade's id."""
    last = {}
    for m in recording.messages:
        if m.symbol == symbol:
            data = orjson.loads(m.data)
            last[data["e"]] = data["t" if data["e"] == "trade" else "u"]
    return {k: last[k] for k in ("bookTicker", "depthUpdate", "trade")}


class FeedWatch:
    """What the engine's live feed passes on, seen through its ``record`` hook.

    ``caught_up`` is set once the capture's last bookTicker, depth update and trade
    have all been passed on (received, or backfilled over REST, and de-duplicated):
    on one connection everything before them has come too, and after a drop or a
    hand-over the feed has recovered up to the end. That, not a pause after the
    server's ``finished`` (set when the last message is queued, not yet sent), is
    when a test may stop the run.
    """

    def __init__(self, recording: Recording, symbol: str = "BTCUSDT") -> None:
        self.last = final_ids(recording, symbol)
        self.seen = dict.fromkeys(self.last, -1)
        self.caught_up = trio.Event()

    def make_feed(self, **kwargs: Any) -> LiveFeed:
        """Stands in for ``LiveFeed`` in the supervisor: the real feed, watched."""
        return LiveFeed(**kwargs, record=self._passed)

    def _passed(self, _ts_ns: int, raw: bytes) -> None:
        data = orjson.loads(raw)["data"]
        kind = data["e"]
        if kind in self.seen:
            self.seen[kind] = max(self.seen[kind], data["t" if kind == "trade" else "u"])
            if all(self.seen[k] >= last for k, last in self.last.items()):
                self.caught_up.set()


def patch_live_feed(patch: pytest.MonkeyPatch, make_feed: Callable[..., LiveFeed]) -> None:
    """Have the supervisor build its feed with ``make_feed`` (for as long as ``patch``
    holds), where it looks the class up when it builds one: ``engine.feeds._live`` (it
    imports the module on use, so that a replay never loads it)."""
    patch.setattr(_live, "LiveFeed", make_feed)


def loopback_doc(
    tmp_path: Path, ws_port: int, rest_port: int, mode: str = "paper", **feeds: Any
) -> dict[str, Any]:
    """The config document of a run on the loopback exchange: ``mode``, BTCUSDT, the
    journal and log under ``tmp_path``, the feed on the exchange's ports (bookTicker,
    trade and depth@0ms; ``feeds`` adds or replaces keys of ``[feeds]``)."""
    return {
        "engine": {"mode": mode},
        "data": {"symbols": ["BTCUSDT"]},
        "journal": {"dir": str(tmp_path / "runs")},
        "logging": {"path": str(tmp_path / "engine.jsonl")},
        "feeds": {
            "ws_url": f"ws://127.0.0.1:{ws_port}",
            "rest_url": f"http://127.0.0.1:{rest_port}",
            "streams": ["bookTicker", "trade", "depth@0ms"],
            **feeds,
        },
    }


async def run_on_loopback(
    server: StreamServer,
    tmp_path: Path,
    doc: Callable[[int, int], dict[str, Any]],
    *,
    make_feed: Callable[..., LiveFeed],
    until: trio.Event | Callable[[Path], Awaitable[None]],
    prepare: Callable[[StreamServer, int, int], Awaitable[None]] | None = None,
    guard_s: float = GUARD_S,
) -> RunReport:
    """Serve ``server`` on free ports and run the engine against it until ``until``.

    Args:
        server: the loopback exchange (not yet serving).
        tmp_path: what the config's relative paths are relative to.
        doc: the config document for the exchange's ``(ws_port, rest_port)``; its
            ``engine.mode`` (paper or live) picks the run.
        make_feed: stands in for ``LiveFeed`` in the supervisor (a watched feed).
        until: the run is stopped once this event is set, or this coroutine function
            (given the run's journal path) returns.
        prepare: awaited with the server and its ports before the engine starts.
        guard_s: a failure guard against a hang, not a wait.

    Returns:
        The run's report.
    """
    with pytest.MonkeyPatch.context() as patch, trio.fail_after(guard_s):
        patch_live_feed(patch, make_feed)
        async with trio.open_nursery() as nursery:
            ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
            if prepare is not None:
                await prepare(server, ws_port, rest_port)
            config = config_from_dict(
                doc(ws_port, rest_port), source="<test>", base_dir=str(tmp_path)
            )
            mode = config.engine.mode
            journal_path = new_journal_path(config, mode)
            stop = trio.Event()

            async def stop_when_done() -> None:
                if isinstance(until, trio.Event):
                    await until.wait()
                else:
                    await until(journal_path)
                stop.set()

            nursery.start_soon(stop_when_done)
            run = run_live if mode == "live" else run_paper
            report = await run(config, log=QUIET, stop=stop, journal_path=journal_path)
            nursery.cancel_scope.cancel()
    return report


# -- engine and exchange processes ---------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a process told to listen on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any],
    what: str,
    *procs: subprocess.Popen[Any],
    timeout_s: float = GUARD_S,
    poll_s: float = 0.05,
) -> Any:
    """Poll ``predicate`` until it returns something true (returned) while ``procs`` run:
    a wait for a condition, not a measurement; ``poll_s`` spaces the polls (those of the
    exchange's REST API count request weight).

    Raises:
        AssertionError: a process ended first, or ``timeout_s`` (a hang guard) passed.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args[3:5]} ended (rc {proc.returncode}) before {what}")
        time.sleep(poll_s)
    raise AssertionError(f"no {what} within {timeout_s} s")

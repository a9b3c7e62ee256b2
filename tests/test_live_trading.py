"""The engine trading live against the loopback exchange, faults included.

The loopback exchange plays the bundled BTCUSDT sample at many times its recorded
pace and trades the engine's orders against the replayed book; the engine runs in
live mode (:func:`engine._streaming.run_live`, the Binance venue, real HTTP and
websockets over 127.0.0.1) in the same Trio run. A request fault armed on
``POST /fapi/v1/order`` hits the engine's first order. Once the engine's feed has
passed on the whole capture and nothing is left in flight (every order final at
the exchange, each of its fills journaled: a condition polled, not a pause) the
run is stopped, and the engine's journal is checked against the exchange's books:

* every engine order (``SubmitOrder``) is at most one exchange order, and every
  exchange order is an engine order (nothing lost to a retry, nothing doubled);
* the exchange's fills are the journal's ``OrderFilled`` records, order by order,
  in count and quantity;
* the engine's final position is the exchange's;
* no order the venue took is left without a final event (none UNKNOWN), and no
  false position drift was raised.

The last test kills the engine process (SIGKILL) with an order in flight and
restarts it on the same journal directory against the same exchange process.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import structlog
import trio
import trio_websocket
from _loopback import (
    KEY,
    QUIET,
    SECRET,
    FeedWatch,
    free_port,
    loopback_doc,
    patch_live_feed,
    run_on_loopback,
    wait_for,
)

from engine import config_from_dict
from engine._report import RunReport
from engine._streaming import run_live
from engine._supervisor import new_journal_path
from engine.journal import Journal as JournalFile
from engine.journal import journal_files
from engine.messages import (
    ControlCommand,
    OrderAccepted,
    OrderFilled,
    Purpose,
    Side,
    SubmitOrder,
)
from engine.venues.binance import (
    ReconciliationError,
    StartupDeadlineError,
    venue_client_order_id,
)
from engine.venues.sim._exchange_api import sign
from engine.venues.sim._exchange_faults import RequestFault
from engine.venues.sim._recorded import Recording, load_recording
from engine.venues.sim._stream_server import ServerSettings, StreamServer, TradingSettings
from engine.venues.sim._trading import AccountSettings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
SPEED = 60.0  # the 180 s capture in 3 s
POLL_S = 0.02  # how often a settled run's books are looked at (a poll, not a guess)
# A failure guard, not a wait: a run on a loaded 2-core machine took 39 s.
GUARD_S = 300
ORDER = "@POST/fapi/v1/order"
FINAL = ("OrderRejected", "OrderCanceled", "OrderExpired")
FINAL_AT_EXCHANGE = ("FILLED", "CANCELED", "EXPIRED", "REJECTED")

STRATEGY = {
    # Fast and loose, so that orders flow at 60x: wall-clock buckets of 20 ms.
    "sample_ms": 20,
    "fast": 3,
    "slow": 8,
    "rsi_period": 5,
    "rsi_long_max": 90.0,
    "rsi_short_min": 10.0,
    "stop_loss_bps": 3.0,
    "take_profit_bps": 5.0,
    "max_hold_ms": 2000,
}


@pytest.fixture(scope="module")
def recording() -> Recording:
    return load_recording([SAMPLE])


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_API_KEY", KEY)
    monkeypatch.setenv("SIM_API_SECRET", SECRET)


def live_doc(tmp_path: Path, ws_port: int, rest_port: int, **venue: Any) -> dict[str, Any]:
    doc = loopback_doc(
        tmp_path, ws_port, rest_port, "live", backoff_initial_ms=50, backoff_max_ms=500
    )
    doc["engine"]["live"] = True
    doc["strategy"] = dict(STRATEGY)  # a copy: overrides update it in place
    doc["venue"] = {
        "kind": "binance",
        "rest_url": f"http://127.0.0.1:{rest_port}",
        "ws_url": f"ws://127.0.0.1:{ws_port}",
        "api_key_env": "SIM_API_KEY",
        "api_secret_env": "SIM_API_SECRET",
        "unknown_grace_ms": 1000,
        **venue,
    }
    doc["hardware"] = {"enabled": False}
    return doc


@attrs.frozen(kw_only=True)
class Journal:
    """The records of one run's journal, decoded."""

    records: list[tuple[str, dict[str, Any]]]

    @classmethod
    def read(cls, path: str | Path) -> Journal:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT kind, payload FROM journal ORDER BY id").fetchall()
        return cls(records=[(kind, json.loads(payload)) for kind, payload in rows])

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for k, p in self.records if k == kind]

    def kinds(self) -> collections.Counter[str]:
        return collections.Counter(k for k, _p in self.records)

    def venue_ids(self) -> dict[str, str]:
        """Venue client order id -> engine client order id, for every SubmitOrder."""
        return {
            venue_client_order_id(o["symbol"], o["client_order_id"], o["ts_event"], o["seq"]): o[
                "client_order_id"
            ]
            for o in self.of("SubmitOrder")
        }

    def fills(self) -> dict[str, tuple[int, float]]:
        """Engine client order id -> (fills, quantity) from the OrderFilled records."""
        out: dict[str, tuple[int, float]] = {}
        for f in self.of("OrderFilled"):
            n, qty = out.get(f["client_order_id"], (0, 0.0))
            out[f["client_order_id"]] = (n + 1, round(qty + f["last_qty"], 9))
        return out

    def submitted(self) -> list[str]:
        """Engine ids of the orders handed to the venue, in order."""
        return [o["client_order_id"] for o in self.of("OrderSubmitted")]

    def unfinished(self) -> set[str]:
        """Engine ids of the orders the venue took that have no final event yet."""
        final = {p["client_order_id"] for kind in FINAL for p in self.of(kind)}
        final |= {
            f["client_order_id"] for f in self.of("OrderFilled") if f["cum_qty"] >= f["order_qty"]
        }
        return set(self.submitted()) - final

    def rejection(self, client_order_id: str) -> str | None:
        for r in self.of("OrderRejected"):
            if r["client_order_id"] == client_order_id:
                return r["reason"]
        return None


def exchange_fills(
    server: StreamServer, venue_ids: dict[str, str], foreign: frozenset[str] = frozenset()
) -> dict[str, tuple[int, float]]:
    """Engine client order id -> (fills, quantity) at the exchange (``foreign``: ids of
    orders someone else placed, left out)."""
    out: dict[str, tuple[int, float]] = {}
    for fill in server.engine.fills():
        if fill.client_order_id in foreign:
            continue
        cid = venue_ids[fill.client_order_id]
        n, qty = out.get(cid, (0, 0.0))
        out[cid] = (n + 1, round(qty + float(fill.qty), 9))
    return out


def check_books(
    journals: Iterable[Journal],
    server: StreamServer,
    position: float,
    foreign: frozenset[str] = frozenset(),
) -> None:
    """The invariants of the module docstring, over one or more runs' journals
    (``foreign``: ids of orders placed at the exchange by someone else)."""
    journals = list(journals)
    venue_ids: dict[str, str] = {}
    for j in journals:
        venue_ids.update(j.venue_ids())
    placed = collections.Counter(
        o.client_order_id for o in server.engine.orders() if o.client_order_id not in foreign
    )
    assert set(placed) <= set(venue_ids), "an exchange order no engine order explains"
    assert max(placed.values(), default=1) == 1, "one engine order placed twice"
    journal_fills: dict[str, tuple[int, float]] = {}
    for j in journals:
        journal_fills.update(j.fills())
    assert exchange_fills(server, venue_ids, foreign) == journal_fills
    assert position == pytest.approx(float(server.engine.position("BTCUSDT").amount), abs=1e-9)
    for j in journals:
        assert "ReconciliationFailed" not in j.kinds()
        assert not j.unfinished(), "an order the venue took has no final event"


def books_settled(server: StreamServer, journal_path: Path, foreign: frozenset[str]) -> bool:
    """Whether every order the exchange knows (but ``foreign``) is final there, the
    journal has each of its fills, and every order the venue took has its final
    event in the journal: nothing is left in flight between the two books."""
    if any(
        o.status not in FINAL_AT_EXCHANGE
        for o in server.engine.orders()
        if o.client_order_id not in foreign
    ):
        return False
    try:
        journal = Journal.read(journal_path)
    except sqlite3.Error:
        return False  # not made yet
    try:
        at_exchange = exchange_fills(server, journal.venue_ids(), foreign)
    except KeyError:
        return False  # an exchange order the journal does not have yet
    return at_exchange == journal.fills() and not journal.unfinished()


async def until_settled(
    server: StreamServer,
    watch: FeedWatch,
    journal_path: Path,
    foreign: frozenset[str] = frozenset(),
) -> None:
    """Return once the engine has seen the whole capture and the books are settled
    (see :func:`books_settled`); the caller's ``fail_after`` bounds the wait."""
    await watch.caught_up.wait()
    # No event covers both books (the exchange's and the journal file): poll them.
    while not books_settled(server, journal_path, foreign):  # noqa: ASYNC110
        await trio.sleep(POLL_S)


async def stop_when_settled(
    stop: trio.Event,
    server: StreamServer,
    watch: FeedWatch,
    journal_path: Path,
    foreign: frozenset[str] = frozenset(),
) -> None:
    """Set ``stop`` once :func:`until_settled` returns."""
    await until_settled(server, watch, journal_path, foreign)
    stop.set()


async def live_run(
    tmp_path: Path,
    recording: Recording,
    *,
    faults: tuple[RequestFault, ...] = (),
    overrides: dict[str, dict[str, Any]] | None = None,
    account: AccountSettings | None = None,
    prepare: Callable[[StreamServer, int, int], Awaitable[None]] | None = None,
    foreign: frozenset[str] = frozenset(),
    **venue: Any,
) -> tuple[RunReport, StreamServer, Journal]:
    server = StreamServer(
        recording,
        ServerSettings(speed=SPEED),
        QUIET,
        trading=TradingSettings(faults=faults, account=account or AccountSettings()),
        api_keys={KEY: SECRET},
    )
    watch = FeedWatch(recording)

    def doc(ws_port: int, rest_port: int) -> dict[str, Any]:
        doc = live_doc(tmp_path, ws_port, rest_port, **venue)
        for section, table in (overrides or {}).items():
            doc.setdefault(section, {}).update(table)
        return doc

    report = await run_on_loopback(
        server,
        tmp_path,
        doc,
        make_feed=watch.make_feed,
        until=lambda journal_path: until_settled(server, watch, journal_path, foreign),
        prepare=prepare,
        guard_s=GUARD_S,
    )
    journal = Journal.read(report.journal_path)
    (summary,) = report.per_symbol
    check_books([journal], server, summary.position_qty, foreign)
    assert server.engine.orders(), "no order reached the exchange"
    return report, server, journal


class LogWatch:
    """A structlog processor that counts the engine's log messages and wakes whoever waits
    for one (the test waits for what the engine says it did, not for a time)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._logged = trio.Event()
        self._token = trio.lowlevel.current_trio_token()

    def __call__(self, _logger: Any, _method: str, event_dict: dict[str, Any]) -> Any:
        self.counts[str(event_dict.get("event"))] += 1
        try:
            trio.lowlevel.current_task()
        except RuntimeError:  # a worker thread logged (the portfolio solver)
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._wake)
        else:
            self._wake()
        raise structlog.DropEvent

    def _wake(self) -> None:
        self._logged.set()

    async def wait(self, message: str, count: int = 1) -> None:
        """Until ``message`` was logged ``count`` times."""
        while self.counts[message] < count:
            if self._logged.is_set():
                self._logged = trio.Event()
            await self._logged.wait()

    def logger(self) -> Any:
        return structlog.wrap_logger(
            structlog.ReturnLogger(),
            processors=[self],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        )


def first_order(journal: Journal) -> str:
    submitted = journal.submitted()
    assert submitted, "the engine sent no order"
    return submitted[0]


def venue_id_of(journal: Journal, client_order_id: str) -> str:
    return next(v for v, c in journal.venue_ids().items() if c == client_order_id)


@pytest.mark.parametrize("transport", ["lean", "httpx"])
async def test_clean_run_books_agree(tmp_path, recording, credentials, transport):
    report, server, journal = await live_run(tmp_path, recording, order_transport=transport)
    assert report.fills >= 4  # the strategy traded both ways
    assert len(server.engine.fills()) == len(journal.of("OrderFilled"))
    assert server.api.limiter.rejected_429 == server.api.limiter.rejected_418 == 0


async def test_orders_bigger_than_the_top_level_fill_in_parts(tmp_path, recording, credentials):
    # 8 BTC per order walks several levels of the replayed book: several fills per order.
    big = {
        "strategy": {**STRATEGY, "order_notional": 500_000.0},
        "risk": {
            "capital": 1_000_000.0,
            "max_notional_per_symbol": 1_000_000.0,
            "max_notional_total": 1_000_000.0,
            "max_leverage": 10.0,
        },
        "portfolio": {"enabled": False},
    }
    account = AccountSettings(balance=1_000_000)
    report, _server, journal = await live_run(tmp_path, recording, overrides=big, account=account)
    parts = [n for n, _qty in journal.fills().values()]
    assert max(parts) > 1, "no order filled in parts"
    for f in journal.of("OrderFilled"):
        assert 0 < f["cum_qty"] <= f["order_qty"] + 1e-12
    assert "PARTIALLY_FILLED" not in {p["target"] for p in journal.of("PositionChanged")}
    # check_books (in live_run) compared every part with the exchange's fills and the
    # final position with the exchange's.
    assert report.fills == len(journal.of("OrderFilled"))


async def wait_for_book(server: StreamServer, ws_port: int) -> None:
    """Start the playback (a market-data client does) and read until the book is there."""
    url = f"ws://127.0.0.1:{ws_port}/ws/btcusdt@bookTicker"
    async with trio_websocket.open_websocket_url(url) as ws:
        while not server.book_ready("BTCUSDT"):
            await ws.get_message()


async def post_order(server: StreamServer, rest_port: int, **params: str) -> None:
    """Place an order at the exchange as someone else would (signed REST)."""
    query = urllib.parse.urlencode(
        {"symbol": "BTCUSDT", **params, "timestamp": str(server.exchange_ms())}
    )
    body = query + "&signature=" + sign(SECRET, query)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest_port}") as http:
        r = await http.post(
            "/fapi/v1/order",
            content=body,
            headers={"X-MBX-APIKEY": KEY, "content-type": "application/x-www-form-urlencoded"},
        )
    assert r.status_code == 200, r.text


async def place_foreign_order(server: StreamServer, ws_port: int, rest_port: int) -> None:
    """A resting limit order placed by someone else before the engine starts."""
    await wait_for_book(server, ws_port)
    best_bid = next(iter(server.levels("BTCUSDT", "bids")))[0]
    price = (best_bid * Decimal("0.98")).quantize(Decimal("0.1"))
    await post_order(
        server, rest_port, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.010",
        price=str(price), newClientOrderId="manual-1",
    )  # fmt: skip


@pytest.mark.parametrize("policy", ["cancel", "adopt"])
async def test_first_start_reconciles_what_the_exchange_already_holds(
    tmp_path, recording, credentials, policy
):
    # No journal yet: the foreign open order is still found, and cancelled or adopted.
    _report, server, journal = await live_run(
        tmp_path,
        recording,
        prepare=place_foreign_order,
        foreign=frozenset({"manual-1"}),
        reconcile=policy,
    )
    (record,) = [r for r in journal.of("OrderReconciled") if r["client_order_id"] == "manual-1"]
    assert record["action"] == ("canceled" if policy == "cancel" else "adopted")
    order = server.order_by_client_id("manual-1")
    assert order is not None
    # Cancelled at start; or adopted, followed and left standing (it is not the engine's).
    assert order.status == ("CANCELED" if policy == "cancel" else "NEW")


async def test_a_restart_closes_what_it_adopts_and_the_next_start_reconciles(
    tmp_path, recording, credentials
):
    """A run died with its entry in flight (journaled as sent, filled at the exchange).
    The restart recovers the fill and adopts the position into the one ledger, so risk
    lets the strategy's exit through (every exit was denied not_reducing while risk kept
    a flat copy of its own); the start after that reconciles against the whole live
    history (the newest journal alone has the exit but not the recovered entry)."""
    server = StreamServer(
        recording,
        ServerSettings(speed=SPEED),
        QUIET,
        trading=TradingSettings(account=AccountSettings()),
        api_keys={KEY: SECRET},
    )
    watch = FeedWatch(recording)
    with pytest.MonkeyPatch.context() as patch, trio.fail_after(2 * GUARD_S):
        patch_live_feed(patch, watch.make_feed)
        async with trio.open_nursery() as nursery:
            ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
            config = config_from_dict(
                live_doc(tmp_path, ws_port, rest_port), source="<test>", base_dir=str(tmp_path)
            )
            now = time.time_ns()
            entry = SubmitOrder(
                client_order_id="tr-BTCUSDT-1", symbol="BTCUSDT", side=Side.BUY, qty=0.01,
                ref_price=60_000.0, purpose=Purpose.ENTRY, reduce_only=False, ts_event=now,
                ts_init=now, seq=1, correlation_id="BTCUSDT-1",
            )  # fmt: skip
            killed = JournalFile(new_journal_path(config, "live"))
            killed.append(0, [entry])
            killed.close()
            entry_vid = venue_client_order_id("BTCUSDT", entry.client_order_id, now, 1)
            await wait_for_book(server, ws_port)
            await post_order(
                server, rest_port, side="BUY", type="MARKET", quantity="0.010",
                newClientOrderId=entry_vid,
            )  # fmt: skip
            stop = trio.Event()
            restart_journal = new_journal_path(config, "live")
            foreign = frozenset({entry_vid})  # placed by the test, for the killed run
            nursery.start_soon(stop_when_settled, stop, server, watch, restart_journal, foreign)
            restart = await run_live(config, log=QUIET, stop=stop, journal_path=restart_journal)
            held = float(server.engine.position("BTCUSDT").amount)
            stopped = trio.Event()
            stopped.set()  # reconcile, then stop at once
            after = await run_live(config, log=QUIET, stop=stopped)
            nursery.cancel_scope.cancel()

    journal = Journal.read(restart.journal_path)
    (recovered,) = journal.of("FillRecovered")
    assert (recovered["venue_client_order_id"], recovered["qty"]) == (entry_vid, 0.01)
    adopted = [p for p in journal.of("PositionChanged") if p["trigger"] == "adopted"]
    assert [(p["target"], p["position_qty"]) for p in adopted] == [("IN_POSITION", 0.01)]
    assert "not_reducing" not in {d["reason"] for d in journal.of("OrderDenied")}
    first_exit = next(o for o in journal.of("SubmitOrder") if o["purpose"] == "EXIT")
    assert (first_exit["side"], first_exit["qty"]) == (-1, 0.01)
    assert journal.fills()[first_exit["client_order_id"]][1] == pytest.approx(0.01)
    closed = [
        p
        for p in journal.of("PositionChanged")
        if (p["source"], p["target"]) == ("EXITING", "IDLE")
    ]
    assert closed and closed[0]["position_qty"] == 0.0
    check_books([journal], server, held, foreign=frozenset({entry_vid}))
    # The next start: no refusal, nothing to recover, the exchange's position agreed.
    nxt = Journal.read(after.journal_path)
    assert nxt.of("FillRecovered") == []
    (agreed,) = nxt.of("PositionReconciled")
    assert agreed["qty"] == pytest.approx(held, abs=1e-12)
    assert after.per_symbol[0].position_qty == pytest.approx(held, abs=1e-12)


async def test_a_refused_start_leaves_nothing_that_skips_the_check(
    tmp_path, recording, credentials
):
    """The live history says long 0.01; the exchange is flat and knows no such trade: a
    start refuses to trade. So must the next one: the refused start left the newest
    journal (empty), but reconciliation reads the whole live history, oldest first."""
    server = StreamServer(recording, ServerSettings(speed=SPEED), QUIET, api_keys={KEY: SECRET})
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
            config = config_from_dict(
                live_doc(tmp_path, ws_port, rest_port), source="<test>", base_dir=str(tmp_path)
            )
            now = time.time_ns()
            entry = SubmitOrder(
                client_order_id="tr-BTCUSDT-1", symbol="BTCUSDT", side=Side.BUY, qty=0.01,
                ref_price=60_000.0, purpose=Purpose.ENTRY, reduce_only=False, ts_event=now,
                ts_init=now, seq=1, correlation_id="BTCUSDT-1",
            )  # fmt: skip
            common = {
                "client_order_id": entry.client_order_id, "symbol": "BTCUSDT",
                "purpose": Purpose.ENTRY, "ts_init": now, "correlation_id": "BTCUSDT-1",
            }  # fmt: skip
            # A journal of an earlier version (named without a start number) sorts first.
            history = JournalFile(tmp_path / "runs" / "live-20240101T000000Z.sqlite")
            history.append(
                0,
                [
                    entry,
                    OrderAccepted(**common, venue_order_id=424242, ts_event=now, seq=2),
                    OrderFilled(
                        **common,
                        side=Side.BUY,
                        last_qty=0.01,
                        last_price=60_000.0,
                        cum_qty=0.01,
                        order_qty=0.01,
                        fee=0.0,
                        ts_event=now,
                        seq=3,
                    ),
                ],
            )
            history.close()
            for _start in range(2):
                stop = trio.Event()
                stop.set()  # should it pass, stop at once
                with pytest.raises(ReconciliationError, match=r"BTCUSDT: journal 0\.01") as info:
                    await run_live(config, log=QUIET, stop=stop)
                # The refused start closed the journal it opened (it stayed open, held by
                # the traceback's frames, until the exception was gone).
                assert open_files_under(tmp_path / "runs") == []
                del info
            nursery.cancel_scope.cancel()
    assert server.engine.orders() == []
    assert len(list((tmp_path / "runs").glob("live-*.sqlite"))) == 3


def open_files_under(directory: Path) -> list[str]:
    """The files under ``directory`` that this process holds open (Linux /proc)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("no /proc/self/fd to list open files")
    root = str(directory.resolve())
    out = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # the fd listing itself, closed by now
            target = os.readlink(fd)
            if target == root or target.startswith(root + os.sep):
                out.append(target)
    return sorted(out)


async def test_a_start_past_its_deadline_closes_its_journal(tmp_path, credentials):
    """The exchange never answers (nothing listens on its port): start-up gives up at
    ``venue.startup_deadline_s`` with nothing traded, and the journal this start opened
    is closed on the way out, not left open with its WAL."""
    silent = free_port()
    doc = live_doc(tmp_path, silent, silent, startup_deadline_s=0.2)
    config = config_from_dict(doc, source="<test>", base_dir=str(tmp_path))
    stop = trio.Event()
    with trio.fail_after(60), pytest.raises(StartupDeadlineError) as info:
        await run_live(config, log=QUIET, stop=stop)
    (journal,) = journal_files(tmp_path / "runs", "live")
    assert open_files_under(tmp_path / "runs") == []
    assert sorted((tmp_path / "runs").glob("*-wal")) == []
    assert Journal.read(journal).records == []  # nothing journaled, nothing traded
    del info


async def test_a_drift_still_there_after_resume_halts_again(tmp_path, recording, credentials):
    """Someone trades by hand: the exchange's position drifts from the engine's, which
    halts trading until an operator resumes. If the difference is still there after the
    resume, the drift check fires again (it reported each drift once, ever)."""
    server = StreamServer(
        recording,
        ServerSettings(speed=10.0),
        QUIET,
        trading=TradingSettings(account=AccountSettings()),
        api_keys={KEY: SECRET},
    )
    doc_overrides = {"strategy": {**STRATEGY, "order_notional": 1.0}}  # sizes to 0: no trades
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
            doc = live_doc(tmp_path, ws_port, rest_port)
            doc.update(doc_overrides)
            config = config_from_dict(doc, source="<test>", base_dir=str(tmp_path))
            control_tx, control_rx = trio.open_memory_channel[ControlCommand](4)
            watch = LogWatch()
            stop = trio.Event()

            async def operator() -> None:
                await watch.wait("binance venue ready")  # the user stream is connected
                await wait_for_book(server, ws_port)
                await post_order(
                    server, rest_port, side="BUY", type="MARKET", quantity="0.005",
                    newClientOrderId="manual-drift",
                )  # fmt: skip
                await watch.wait("trading state changed")  # halted by the drift
                control_tx.send_nowait(ControlCommand(action="resume", reason="checked"))
                await watch.wait("trading state changed", 3)  # resumed, halted again
                stop.set()

            async def bound() -> None:
                await server.finished.wait()  # the old behaviour never halts again
                stop.set()

            nursery.start_soon(operator)
            nursery.start_soon(bound)
            report = await run_live(config, log=watch.logger(), stop=stop, control=control_rx)
            nursery.cancel_scope.cancel()
    journal = Journal.read(report.journal_path)
    assert [(c["from"], c["to"]) for c in report.trading_changes] == [
        ("ACTIVE", "HALTED"),
        ("HALTED", "ACTIVE"),
        ("ACTIVE", "HALTED"),
    ]
    drifts = journal.of("ReconciliationFailed")
    assert len(drifts) == 2 and all("exchange says 0.005" in d["reason"] for d in drifts)
    assert journal.of("SubmitOrder") == []


async def test_the_hold_timer_runs_on_one_clock(tmp_path, recording, credentials):
    # Only the time limit exits (stops and targets out of reach). The exchange stamps
    # fills with its own time (the capture's, years before the local clock); the
    # entry's time must be when the engine saw the fill, as the ticks' times are, or
    # every position leaves at once on time_limit.
    hold_ms = 300
    overrides = {
        "strategy": {
            **STRATEGY, "stop_loss_bps": 5000.0, "take_profit_bps": 5000.0,
            "max_hold_ms": hold_ms,
        }
    }  # fmt: skip
    _report, _server, journal = await live_run(tmp_path, recording, overrides=overrides)
    entry_fill: dict[str, Any] | None = None
    held: list[int] = []
    for kind, p in journal.records:
        if kind == "OrderFilled" and p["purpose"] == "ENTRY" and p["cum_qty"] >= p["order_qty"]:
            entry_fill = p
        elif kind == "PositionChanged" and p["trigger"] == "time_limit":
            assert entry_fill is not None
            held.append(p["ts_event"] - entry_fill["ts_init"])
    assert held, "no position reached its time limit: the test proved nothing"
    assert min(held) >= hold_ms * 1_000_000


async def test_429_waits_for_retry_after_and_resends(tmp_path, recording, credentials):
    faults = (RequestFault.parse("429:1" + ORDER),)
    _report, server, journal = await live_run(tmp_path, recording, faults=faults)
    assert server.api.faults.fired == [("429", "POST", "/fapi/v1/order")]
    first = first_order(journal)
    # Resent after Retry-After with the same id: placed once, not rejected.
    assert server.order_by_client_id(venue_id_of(journal, first)) is not None
    assert journal.rejection(first) is None
    assert server.api.limiter.rejected_418 == 0  # nothing sent before Retry-After


async def test_418_rejects_and_reports_the_ban(tmp_path, recording, credentials):
    faults = (RequestFault.parse("418:2000" + ORDER),)
    _report, server, journal = await live_run(tmp_path, recording, faults=faults)
    first = first_order(journal)
    assert journal.rejection(first) == "418 ip banned"
    assert server.order_by_client_id(venue_id_of(journal, first)) is None
    assert len(journal.of("RateLimitBanned")) == 1


async def test_503_executed_is_found_by_query(tmp_path, recording, credentials):
    faults = (RequestFault.parse("503-executed" + ORDER),)
    _report, server, journal = await live_run(tmp_path, recording, faults=faults)
    first = first_order(journal)
    order = server.order_by_client_id(venue_id_of(journal, first))
    assert order is not None and order.executed_qty > 0
    assert journal.fills()[first][1] == pytest.approx(float(order.executed_qty))


async def test_503_lost_is_rejected_not_placed(tmp_path, recording, credentials):
    faults = (RequestFault.parse("503-lost" + ORDER),)
    _report, server, journal = await live_run(tmp_path, recording, faults=faults)
    first = first_order(journal)
    assert server.order_by_client_id(venue_id_of(journal, first)) is None
    reason = journal.rejection(first)
    assert reason is not None and reason.startswith("not_placed")


async def test_timestamp_refusal_resyncs_and_resends_once(tmp_path, recording, credentials):
    faults = (RequestFault.parse("-1021" + ORDER),)
    _report, server, journal = await live_run(tmp_path, recording, faults=faults)
    assert server.api.faults.fired == [("-1021", "POST", "/fapi/v1/order")]
    first = first_order(journal)
    assert server.order_by_client_id(venue_id_of(journal, first)) is not None
    assert journal.rejection(first) is None


@pytest.mark.parametrize("code", ["-2019", "-4164"])
async def test_refusal_is_a_rejection(tmp_path, recording, credentials, code):
    faults = (RequestFault.parse(code + ORDER),)
    _report, server, journal = await live_run(tmp_path, recording, faults=faults)
    first = first_order(journal)
    reason = journal.rejection(first)
    assert reason is not None and reason.startswith(code + " ")
    assert server.order_by_client_id(venue_id_of(journal, first)) is None


async def test_slow_answer_past_the_timeout_is_resolved(tmp_path, recording, credentials):
    # Executed at once, answered after 1.5 s; the venue gives up after 0.5 s (UNKNOWN).
    faults = (RequestFault.parse("slow:1500" + ORDER),)
    _report, server, journal = await live_run(
        tmp_path, recording, faults=faults, request_timeout_ms=500
    )
    first = first_order(journal)
    order = server.order_by_client_id(venue_id_of(journal, first))
    assert order is not None and order.executed_qty > 0
    assert journal.fills()[first][1] == pytest.approx(float(order.executed_qty))


async def test_dropped_user_stream_fills_are_recovered(tmp_path, recording, credentials):
    faults = (RequestFault.parse("drop_user_stream" + ORDER),)
    _report, server, journal = await live_run(tmp_path, recording, faults=faults)
    assert server.api.faults.fired == [("drop_user_stream", "POST", "/fapi/v1/order")]
    first = first_order(journal)
    order = server.order_by_client_id(venue_id_of(journal, first))
    assert order is not None and order.executed_qty > 0
    assert journal.fills()[first][1] == pytest.approx(float(order.executed_qty))


# -- kill -9 and restart ----------------------------------------------------------------


def journal_kinds(path: Path) -> collections.Counter[str]:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0) as db:
            return collections.Counter(k for (k,) in db.execute("SELECT kind FROM journal"))
    except sqlite3.Error:
        return collections.Counter()  # not created yet, or being written


def journal_rows(path: Path, kind: str) -> list[dict[str, Any]]:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0) as db:
            rows = db.execute(
                "SELECT payload FROM journal WHERE kind = ? ORDER BY id", (kind,)
            ).fetchall()
    except sqlite3.Error:
        return []  # not created yet, or being written
    return [json.loads(payload) for (payload,) in rows]


def log_events(path: Path, message: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line) if line.startswith("{") and line.endswith("}") else {}
        if record.get("message") == message:
            out.append(record)
    return out


class HoldingProxy:
    """A TCP relay to the exchange's websocket port that can stop delivering.

    While ``hold`` is set nothing more goes from the exchange to the client
    (the user stream falls silent, as on a stalled link), so an order's fate is
    known only at the exchange.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.hold = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            for args in ((client, upstream, False), (upstream, client, True)):
                thread = threading.Thread(target=self._pump, args=args, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, held: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                while held and self.hold.is_set():
                    time.sleep(0.01)
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.hold.clear()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in self._sockets:
            sock.close()


def test_kill_9_mid_order_then_restart_reconciles(tmp_path, recording):
    """SIGKILL the engine while its first orders are in flight (executed at the
    exchange, answers held back), restart it on the same journal directory: the
    restart recovers the fills the dead run never journaled, places nothing twice,
    closes the position it adopted, and ends with the exchange's position; the start
    after it reconciles cleanly against the whole live history."""
    env = dict(os.environ, SIM_API_KEY=KEY, SIM_API_SECRET=SECRET, PYTHONUNBUFFERED="1")
    ws_port, rest_port = free_port(), free_port()
    exchange = subprocess.Popen(
        [
            sys.executable, "-m", "engine", "sim-exchange", "--data", str(SAMPLE),
            "--port", str(ws_port), "--rest-port", str(rest_port), "--speed", "10",
            "--fault", "slow:8000" + ORDER,
            "--api-key-env", "SIM_API_KEY", "--api-secret-env", "SIM_API_SECRET",
            "--log", str(tmp_path / "exchange.jsonl"),
        ],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    proxy = HoldingProxy(ws_port)
    doc = live_doc(tmp_path, ws_port, rest_port, request_timeout_ms=20_000)
    doc["venue"]["ws_url"] = f"ws://127.0.0.1:{proxy.port}"  # the user stream, relayed
    doc["strategy"] = {**STRATEGY, "sample_ms": 100}
    config = tmp_path / "live.toml"
    config.write_text(to_toml(doc))
    engine_cmd = [
        sys.executable, "-m", "engine", "--config", str(config), "--mode", "live",
        "--i-understand-live",
    ]  # fmt: skip
    log_path = tmp_path / "engine.jsonl"
    try:
        assert exchange.stdout is not None
        assert exchange.stdout.readline().startswith("sim-exchange:")
        first = subprocess.Popen(engine_cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            journal_dir = tmp_path / "runs"
            wait_for(
                lambda: log_events(log_path, "binance venue ready"),
                "venue",
                first,
                timeout_s=GUARD_S,
            )
            # From now on the first run hears nothing from its user stream; its first
            # order is executed at once and answered only after 8 s.
            proxy.hold.set()

            def submitted() -> Path | None:
                for path in journal_dir.glob("live-*.sqlite"):
                    if journal_kinds(path)["OrderSubmitted"] >= 1:
                        return path
                return None

            first_journal = wait_for(submitted, "order submitted", first, timeout_s=GUARD_S)

            def placed() -> bool:
                # Journaled as submitted is not yet at the exchange: kill only once it is
                # (executed there, its answer held back), so there is a fill to recover.
                with httpx.Client(base_url=f"http://127.0.0.1:{rest_port}") as http:
                    return bool(exchange_books(http)["trades"])

            wait_for(placed, "order executed at the exchange", first, timeout_s=GUARD_S)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        assert first.returncode == -signal.SIGKILL
        proxy.hold.clear()

        report_path = tmp_path / "report.json"
        second = subprocess.Popen(
            [*engine_cmd, "--report", str(report_path)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            # The first run reconciled too (against an empty journal): wait for the second.
            wait_for(
                lambda: len(log_events(log_path, "reconciled")) >= 2,
                "reconciliation",
                second,
                timeout_s=GUARD_S,
            )
            second_journal = journal_files(journal_dir, "live")[-1]

            def adopted_then_closed() -> bool:
                # Risk reads the ledger the adoption went to: the strategy's exit passes.
                moves = journal_rows(second_journal, "PositionChanged")
                adopted = [i for i, m in enumerate(moves) if m["trigger"] == "adopted"]
                return bool(adopted) and any(
                    (m["source"], m["target"]) == ("EXITING", "IDLE") for m in moves[adopted[0] :]
                )

            wait_for(adopted_then_closed, "the adopted position closed", second, timeout_s=GUARD_S)
        finally:
            second.send_signal(signal.SIGINT)
            second.wait(timeout=GUARD_S)
        assert second.returncode == 0
        with httpx.Client(base_url=f"http://127.0.0.1:{rest_port}") as http:
            books_after_restart = exchange_books(http)

        # The next start reconciles against the whole history (the kill's journal, then
        # the restart's, with the recovered fill, the adopted position and its exit).
        next_report = tmp_path / "next-report.json"
        third = subprocess.Popen(
            [*engine_cmd, "--report", str(next_report)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(
                lambda: len(log_events(log_path, "reconciled")) >= 3,
                "the next start's reconciliation",
                third,
                timeout_s=GUARD_S,
            )
        finally:
            third.send_signal(signal.SIGINT)
            third.wait(timeout=GUARD_S)
        assert third.returncode == 0
        with httpx.Client(base_url=f"http://127.0.0.1:{rest_port}") as http:
            books = exchange_books(http)
    finally:
        exchange.terminate()
        exchange.wait(timeout=10)
        assert exchange.stdout is not None
        exchange.stdout.close()
        proxy.close()

    # Both starts reconcile (the first against an empty journal); the restart finds the
    # order that was in flight at the kill.
    first_start, reconciled, next_start = log_events(log_path, "reconciled")
    assert first_start["trireme"]["resolved"] == 0
    assert reconciled["trireme"]["resolved"] >= 1
    assert next_start["trireme"]["recovered_fills"] == 0  # the history had them all
    assert log_events(log_path, "cannot start") == []
    journals = sorted(journal_dir.glob("live-*.sqlite"))
    assert journals == journal_files(journal_dir, "live")
    assert len(journals) == 3 and journals[0] == first_journal
    old, new, last = (Journal.read(j) for j in journals)
    # The restart journaled what it found: the order in flight at the kill, resolved.
    assert {r["action"] for r in new.of("OrderReconciled")} >= {"resolved"}
    assert "not_reducing" not in {d["reason"] for d in new.of("OrderDenied")}
    venue_ids = {**old.venue_ids(), **new.venue_ids(), **last.venue_ids()}
    # Nothing placed twice, nothing foreign.
    placed = collections.Counter(o["clientOrderId"] for o in books["orders"])
    assert set(placed) <= set(venue_ids)
    assert max(placed.values()) == 1
    # Every exchange fill: in a journal, or recovered (and logged) by reconciliation.
    recovered = {
        (r["trireme"]["client_order_id"], r["trireme"]["trade_id"])
        for r in log_events(log_path, "fill recovered by reconciliation")
    }
    assert recovered, "the kill left no fill to recover: the test proved nothing"
    # ... and each recovered fill is in the new journal (FillRecovered from start-up
    # reconciliation, or OrderFilled when the restarted venue's resolver found it).
    journaled = {r["client_order_id"] for r in new.of("FillRecovered")} | set(new.fills())
    assert {cid for cid, _trade in recovered} <= journaled
    journal_fills = {**old.fills(), **new.fills(), **last.fills()}
    by_order: dict[str, tuple[int, float]] = {}
    for trade in books["trades"]:
        cid = venue_ids[order_cids(books)[trade["orderId"]]]
        n, qty = by_order.get(cid, (0, 0.0))
        by_order[cid] = (n + 1, round(qty + float(trade["qty"]), 9))
    for cid, (n, qty) in by_order.items():
        n_rec = sum(1 for c, _t in recovered if c == cid)
        jn, jqty = journal_fills.get(cid, (0, 0.0))
        assert n == jn + n_rec, cid
        if not n_rec:
            assert qty == pytest.approx(jqty), cid
    # The restarted engine (adopted position + its own fills) ends with the exchange's,
    # and so does the next.
    (summary,) = json.loads(report_path.read_text())["per_symbol"]
    assert summary["position_qty"] == pytest.approx(
        float(books_after_restart["position"]), abs=1e-9
    )
    (summary,) = json.loads(next_report.read_text())["per_symbol"]
    assert summary["position_qty"] == pytest.approx(float(books["position"]), abs=1e-9)


def exchange_books(http: httpx.Client) -> dict[str, Any]:
    """Orders, trades and the position, through the exchange's signed REST API."""
    from engine.venues.sim._exchange_api import sign

    def get(path: str, **params: str) -> Any:
        import urllib.parse

        query = urllib.parse.urlencode({**params, "timestamp": str(server_ms(http))})
        query += "&signature=" + sign(SECRET, query)
        r = http.get(f"{path}?{query}", headers={"X-MBX-APIKEY": KEY})
        r.raise_for_status()
        return r.json()

    (risk,) = get("/fapi/v2/positionRisk", symbol="BTCUSDT")
    return {
        "orders": get("/fapi/v1/allOrders", symbol="BTCUSDT", limit="1000"),
        "trades": get("/fapi/v1/userTrades", symbol="BTCUSDT", limit="1000"),
        "position": risk["positionAmt"],
    }


def server_ms(http: httpx.Client) -> int:
    return int(http.get("/fapi/v1/time").json()["serverTime"])


def order_cids(books: dict[str, Any]) -> dict[int, str]:
    return {o["orderId"]: o["clientOrderId"] for o in books["orders"]}


def to_toml(doc: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items()) + "\n"
        for name, table in doc.items()
    )

"""The live feed: Binance USD-M websocket streams into the engine's step pipeline.

One websocket connection per symbol by default (wsproto on a Trio stream, or
trio-websocket: :mod:`engine.feeds._transport`) (``/stream?streams=`` with
that symbol's streams), or one combined connection for all (at most 1024 streams
each). Per connection: reconnect with capped exponential backoff and jitter;
reconnect when no message arrived for ``stale_ms``; a planned reconnect before
the exchange's 24-hour cut, the new connection up before the old one closes and
taking over where the two streams meet (:class:`_Handover`; one at a time).
Per symbol: duplicates across connections are dropped by update id (bookTicker
``u``, depth ``u``) and trade id (``t`` / ``a``, a high-water mark and a small
window below it: :class:`TradeIds`, constant memory); trades missed while
disconnected are fetched over REST (``historicalTrades`` / ``aggTrades`` from the
first missing id); the local order book is synced from a REST snapshot and
resynced after any gap or reconnect. Every message is stamped with its receive
time (``time.time_ns``) and its exchange-to-local latency (``E`` to receive) goes
to the stats. Malformed or unknown messages are counted and logged.

REST goes through a :class:`BinanceRestClient` on the process's one
:class:`RateLimiter` (the live venue's, in live mode): snapshots and backfill
are ``MARKET_DATA``, the lowest priority, with Binance's weights, and a 429 or
418 they get holds the orders too (and the other way round). After a 429 the
next request waits for ``Retry-After`` (the limiter holds it); during a ban the
snapshot worker sleeps until the ban ends; a backfill that cannot finish within
``_BACKFILL_PATIENCE_S`` gives up (the held newer trades go on, the missing ones
are counted) rather than hold the symbol's trades for minutes.

Whatever has arrived goes out as one step as soon as the pipeline takes it (the
same step messages as replay, so the same actors run behind it); with nothing
arriving, an empty step every ``step_ms`` keeps time-driven risk checks going.
With ``inline`` (``feeds.inline``) the read loop that drained a socket read runs
the step itself, through the cores, before it reads again.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import httpx
import msgspec
import numpy as np
import orjson
import trio
from structlog.typing import FilteringBoundLogger

from .._config import FeedsSection
from ..book import ApplyResult, BookError, BookSync, OrderBook, decode_snapshot
from ..messages import FeedReconnected, MarketBatch, MarketStep, OpsEvent, Ticks
from ..venues.binance import (
    BinanceError,
    BinanceRestClient,
    IpBannedError,
    RateLimitedError,
    RateLimiter,
    ServerClock,
)
from ._bookcols import book_state
from ._capture import _BARE, _ENVELOPE, AggTrade, BookTicker, DepthUpdate, MarketMessage, Trade
from ._columns import N_INT, Columns, append_message
from ._transport import MessageStream, TransportError, open_transport

_MS = 1_000_000
Connector = Callable[[str], AbstractAsyncContextManager[MessageStream]]
_MAX_STREAMS = 1024
_NEW, _DUPLICATE, _HELD, _LATE, _MALFORMED = object(), object(), object(), object(), object()
_STREAM_TEXT, _STREAM_BYTES = '{"stream"', b'{"stream"'  # a combined-stream envelope
_SNAPSHOT_RETRY_S = 1.0  # after a failure other than a rate limit (those wait as told)
_BACKFILL_PATIENCE_S = 10.0  # newer trades are held meanwhile: do not hold them longer
# A successor holds what it receives until the old stream reaches it (a busy
# process reads the old one seconds behind); past this it gives up, losing nothing.
_HANDOVER_PATIENCE_S = 60.0
# Latency samples a read loop lets wait before it records them, after a step: one
# numpy pass for many reads (the summary takes the rest).
_LATENCY_FLUSH = 256


class _Handover:
    """One planned reconnect: where the successor's stream takes over from the old one.

    The synchronous core of the hand-over (no I/O): each connection's task
    feeds it what it receives and passes on what it returns. Both connections
    carry the same messages in the same order, the successor's starting some
    way into the old one's. Until the two meet, the old connection passes its
    messages on and remembers them (``passed``), and the successor holds its
    own (``held``). They meet at the first message both have: the old one
    receives a message the successor holds, or the successor receives one the
    old one passed on. Whichever side sees it releases at once the held
    messages the old one has not passed on (nothing waits for a next message),
    and from then on the successor's stream is the feed's: it drops what the
    old one passed on already, and the old connection stops.

    A message is recognised by its text: Binance's carry their event time and
    update or trade id, so two different messages do not have the same text.

    Attributes:
        met: the streams have met (or the hand-over was forced): the old
            connection stops, the successor passes its messages on.
        abandoned: the successor ended before they met: the old connection
            carries on alone (and plans another successor).
        held_since: when the successor began to hold (trio time), if it has.
        wake: the old connection's read, cancelled when the successor sees
            the meeting or gives up, so that it returns at once.
    """

    __slots__ = ("_held_set", "abandoned", "held", "held_since", "met", "passed", "wake")

    def __init__(self) -> None:
        self.passed: set[str | bytes] = set()
        self.held: list[str | bytes] = []
        self._held_set: set[str | bytes] = set()
        self.met = False
        self.abandoned = False
        self.held_since: float | None = None
        self.wake: trio.CancelScope | None = None

    def from_old(self, text: str | bytes) -> tuple[list[str | bytes], bool]:
        """The old connection received ``text``: what to pass on, and whether to stop."""
        if self.met:
            return [], True  # the successor has it
        if text in self._held_set:
            return self._meet(), True
        self.passed.add(text)
        return [text], False

    def from_successor(self, text: str | bytes, now: float) -> list[str | bytes]:
        """The successor received ``text`` at ``now``: what to pass on."""
        if self.met:
            if self.passed:
                if text in self.passed:
                    return []  # the old connection passed it on before it stopped
                self.passed = set()  # past the old stream's end: nothing more to drop
            return [text]
        if text in self.passed:
            return self._meet()  # ``text`` itself went out already
        if self.held_since is None:
            self.held_since = now
        self.held.append(text)
        self._held_set.add(text)
        return []

    def force(self) -> list[str | bytes]:
        """Hand over now (the old stream ended, went quiet or never met this one)."""
        return [] if self.met else self._meet()

    def abandon(self) -> None:
        """The successor ended before the streams met; the old connection goes on."""
        if not self.met:
            self.abandoned = True
            self.held, self._held_set, self.passed = [], set(), set()
            self._wake()

    def _meet(self) -> list[str | bytes]:
        self.met = True
        passed = self.passed
        release = [t for t in self.held if t not in passed]
        self.held, self._held_set = [], set()
        self._wake()
        return release

    def _wake(self) -> None:
        if self.wake is not None:
            self.wake.cancel()


def market_data_client(
    http: httpx.AsyncClient,
    base_url: str,
    *,
    limiter: RateLimiter | None = None,
    clock: ServerClock | None = None,
    timeout_s: float = 10.0,
) -> BinanceRestClient:
    """The feed's REST client (public endpoints, no credentials).

    Args:
        http: the pooled client to send on.
        base_url: the REST root (``feeds.rest_url``).
        limiter: the process's one rate limiter (the live venue's) and
        clock: the server clock it runs on. Without them (paper mode, the
            recorder: no order venue) the feed gets a limiter of its own, the
            same class on Binance's default limits. Call from a Trio run.
        timeout_s: the deadline of one request (a full depth snapshot is large).
    """
    if (limiter is None) != (clock is None):
        raise ValueError("give limiter and clock together (the limiter runs on it)")
    if clock is None or limiter is None:
        clock = ServerClock()
        limiter = RateLimiter(clock=clock.now)
    return BinanceRestClient(
        http, credentials=None, limiter=limiter, clock=clock, base_url=base_url, timeout_s=timeout_s
    )


class LatencyStats:
    """Exchange-to-local latency samples (ms) in a fixed numpy ring: constant memory.

    ``count`` and ``max_ms`` are exact over the whole run; ``p50_ms`` and
    ``p99_ms`` are exact percentiles of the last ``window`` samples. The ring is
    allocated and written once at construction, so the resident memory of a
    feed does not grow as samples arrive (``window`` x 8 bytes: 512 KiB by
    default).

    The feed's samples wait (:meth:`defer`) and its read loop records them after a
    step, a few hundred at a time, off the way from a frame to its order: a numpy
    pass over a read's few samples cost 20-30 us there (cold), more than the rest
    of the read's decode. At most ``_HOLD`` samples wait; :meth:`summary` takes
    them first.

    Args:
        window: how many of the newest samples the percentiles are taken over.
    """

    __slots__ = ("_held", "_held_n", "_next", "_ring", "count", "max_ms")
    _HOLD = 4096

    def __init__(self, window: int = 65_536) -> None:
        if window <= 0:
            raise ValueError(f"latency window must be positive, got {window}")
        # np.full writes every page now: np.empty/zeros would be mapped lazily and
        # show up as RSS growth while the ring fills.
        self._ring = np.full(window, np.nan)
        self._next = 0
        self.count = 0
        self.max_ms = -math.inf
        self._held: list[tuple[int, list[int]]] = []
        self._held_n = 0

    def defer(self, ts_ns: int, event_times_ms: list[int]) -> None:
        """:meth:`record_many` later (at :meth:`flush`), in the same order: the same
        ring, count and max once flushed."""
        if not event_times_ms:
            return
        self._held.append((ts_ns, event_times_ms))
        self._held_n += len(event_times_ms)
        if self._held_n >= self._HOLD:
            self.flush()

    @property
    def held(self) -> int:
        """Samples :meth:`defer` holds, not yet recorded."""
        return self._held_n

    def flush(self) -> None:
        """Record the samples :meth:`defer` holds, in one numpy pass."""
        held = self._held
        if not held:
            return
        self._held, self._held_n = [], 0
        if len(held) == 1:
            self.record_many(*held[0])
            return
        ts = np.array([t for t, times in held for _ in times], dtype=np.int64)
        events = np.array([e for _t, times in held for e in times], dtype=np.int64)
        self._write((ts - events * _MS) / 1e6)

    def record(self, ms: float) -> None:
        """Add one sample (the oldest leaves the window once it is full)."""
        ring = self._ring
        i = self._next
        ring[i] = ms
        i += 1
        self._next = 0 if i == ring.shape[0] else i
        self.count += 1
        if ms > self.max_ms:
            self.max_ms = ms

    def record_many(self, ts_ns: int, event_times_ms: list[int]) -> None:
        """Add the samples of messages received at ``ts_ns`` with these event times
        (epoch ms), in order: the same ring, count and max as :meth:`record` of each
        ``(ts_ns - event_time * 1e6) / 1e6``, in one numpy pass."""
        self._write((ts_ns - np.array(event_times_ms, dtype=np.int64) * _MS) / 1e6)

    def _write(self, ms: np.ndarray) -> None:
        ring = self._ring
        size = ring.shape[0]
        n = ms.shape[0]
        if n > size:  # only the newest fit: write them where they would have ended up
            skip = n - size
            self._next = (self._next + skip) % size
            self.count += skip
            self.max_ms = max(self.max_ms, float(ms[:skip].max()))
            ms = ms[skip:]
            n = size
        i = self._next
        first = min(n, size - i)
        ring[i : i + first] = ms[:first]
        ring[: n - first] = ms[first:]
        self._next = (i + n) % size
        self.count += n
        top = float(ms.max())
        if top > self.max_ms:
            self.max_ms = top

    def summary(self) -> dict[str, float | int | None]:
        """Count and max (whole run), p50 and p99 (the window), in ms."""
        self.flush()
        if not self.count:
            return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
        a = self._ring if self.count >= self._ring.shape[0] else self._ring[: self.count]
        p50, p99 = np.percentile(a, [50, 99])
        return {
            "count": self.count,
            "p50_ms": float(p50),
            "p99_ms": float(p99),
            "max_ms": float(self.max_ms),
        }


class TradeIds:
    """The trade ids of one symbol that have passed, in constant memory.

    Binance numbers trades per symbol (and per stream kind) in increasing
    order, so a high-water mark is enough to drop every repeat; a bitmap of the
    ``window`` ids just below it tells a repeat (seen) from a late trade (never
    seen). The feed passes trades in id order, so it drops both, counted apart.

    What it cannot tell: whether an id more than ``window`` below the mark was
    seen (``verdict`` says ``"too_old"``; the feed drops it as a duplicate), and
    it relies on ids increasing: a venue that restarted its numbering lower
    would have every trade dropped until the ids pass the old mark.

    Args:
        window: how many ids below the mark are remembered (bits).
    """

    __slots__ = ("_mask", "high", "seen", "window")

    def __init__(self, window: int = 4096) -> None:
        self.window = window
        self._mask = (1 << window) - 1
        self.high = -1
        """The highest id passed (-1: none yet)."""
        self.seen = 0
        """Bit ``i`` set: id ``high - i`` has passed."""

    def verdict(self, trade_id: int) -> str:
        """``"new"`` (above the mark), ``"duplicate"``, ``"late"`` or ``"too_old"``."""
        if trade_id > self.high:
            return "new"
        below = self.high - trade_id
        if below >= self.window:
            return "too_old"
        return "duplicate" if (self.seen >> below) & 1 else "late"

    def mark(self, trade_id: int) -> None:
        """Record that ``trade_id`` has passed."""
        if trade_id > self.high:
            shift = trade_id - self.high
            if self.high < 0 or shift >= self.window:
                self.seen = 1
            else:
                self.seen = ((self.seen << shift) | 1) & self._mask
            self.high = trade_id
        elif self.high - trade_id < self.window:
            self.seen |= 1 << (self.high - trade_id)


@attrs.define
class SymbolState:
    """What the feed remembers per symbol across connections (constant size)."""

    symbol: str
    book: BookSync
    trade_ids: TradeIds = attrs.Factory(TradeIds)
    last_quote_u: int = -1
    last_depth_u: int = -1
    resyncing: bool = False
    resyncs: int = 0
    book_gaps: int = 0
    book_errors: int = 0  # depth diffs whose levels the book refused (resynced)
    held: list[tuple[Any, bytes]] | None = None
    duplicates: int = 0
    late_trades: int = 0
    backfilled: int = 0
    trades: int = 0
    # An audit of what went out: ids passed on not one above the previous one.
    last_passed_id: int = -1
    passed_id_gaps: int = 0
    passed_id_repeats: int = 0


@attrs.define
class FeedStats:
    """Counters for the report."""

    messages: int = 0
    malformed: int = 0
    unknown: int = 0
    connects: int = 0
    reconnects: int = 0
    planned_reconnects: int = 0
    stale_reconnects: int = 0
    steps: int = 0


class LiveFeed:
    """Connects to the exchange's streams and sends steps into the pipeline.

    Args:
        settings: the ``[feeds]`` config section.
        symbols: the symbols, in the order their actors were created.
        step_ns: the longest wall time between steps when nothing arrives.
        symbol_channels: one send channel per symbol actor.
        execution_channel: the execution actor's market inbox.
        rest: the REST client for snapshots and trade backfill, on the process's
            one rate limiter (see :func:`market_data_client`).
        log: a bound structlog logger.
        stop: when set, the feed sends a final step and returns.
        seed: seeds the reconnect jitter.
        record: if given, called with ``(ts_recv_ns, raw_bytes)`` for every event the
            feed passes on (after de-duplication; backfilled trades as stream
            messages): the recorder.
        connect: the websocket connector seam: ``connect(url)`` is an async
            context manager yielding a :class:`MessageStream` (tests pass an
            in-memory one); ``open_transport(settings.transport, url)`` by default.
        book_levels: levels a side of the local book each batch carries in its
            book columns (:attr:`~engine.messages.Ticks.book_row`...), one state per
            depth diff applied to a synced book, as replay rebuilds them; 0 (the
            default): none. A state costs about 60 us (``OrderBook.levels`` of both
            sides, on a loaded machine), so the supervisor asks for them only for a
            strategy whose ``uses_book`` is set.
        inline: if given, each step goes to ``inline(batches, market_step)`` (an
            :class:`~engine.actors.InlineStep`) instead of the channels, and a read
            loop runs it itself as soon as it has drained a socket read: no task
            switch between a frame's bytes and the order it triggers. One step runs
            at a time; what arrives meanwhile goes out as the next step.
    """

    def __init__(
        self,
        *,
        settings: FeedsSection,
        symbols: list[str],
        step_ns: int,
        symbol_channels: dict[str, trio.MemorySendChannel[MarketBatch]],
        execution_channel: trio.MemorySendChannel[MarketStep],
        rest: BinanceRestClient,
        log: FilteringBoundLogger,
        stop: trio.Event,
        seed: int = 0,
        record: Callable[[int, bytes], None] | None = None,
        connect: Connector | None = None,
        book_levels: int = 0,
        inline: Callable[[dict[str, MarketBatch], MarketStep], Awaitable[None]] | None = None,
    ) -> None:
        self._cfg = settings
        if connect is None:
            connect = functools.partial(open_transport, settings.transport)
        self._connect: Connector = connect
        self._symbols = list(symbols)
        self._step_ns = step_ns
        self._symbol_channels = symbol_channels
        self._execution_channel = execution_channel
        self._rest = rest
        self._log = log
        self._stop = stop
        self._rng = random.Random(seed)
        self._record = record
        self._columns = {s: Columns() for s in symbols}
        self._column_list = list(self._columns.values())
        self._book_levels = book_levels
        # Per symbol: this step's (row, book state or None: not synced) per depth row,
        # and the state the last step ended on (rows before this step's first depth
        # row point at it, as a replay row points at the latest state before it).
        self._book_marks: dict[str, list[tuple[int, np.ndarray | None]]] = {s: [] for s in symbols}
        self._book_carry: dict[str, np.ndarray | None] = dict.fromkeys(symbols)
        self._data = trio.Event()
        self._inline = inline
        # One step at a time (inline: from any task): set while a step runs, and
        # ``_step_done`` set when it ends if a task waits.
        self._stepping = False
        self._step_done: trio.Event | None = None
        self._last_step_at = -math.inf  # trio time the last step went out
        self._final_sent = False
        self._ops: list[OpsEvent] = []
        # Books with depth diffs whose levels wait until the read's step is done.
        self._deferred_books: list[SymbolState] = []
        self._seq = 0
        self._ops_seq = 0
        self.state = {s: SymbolState(symbol=s, book=self._new_book(s)) for s in symbols}
        self.stats = FeedStats()
        self.latency = LatencyStats()
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    def _new_book(self, symbol: str) -> BookSync:
        # Levels beyond the snapshot's depth are dropped (bounded memory; see engine.book).
        return BookSync(OrderBook(symbol=symbol, max_levels=self._cfg.snapshot_limit))

    # -- connections ----------------------------------------------------------------

    def _groups(self) -> list[list[str]]:
        if self._cfg.connection == "combined":
            per = max(1, _MAX_STREAMS // max(1, len(self._cfg.streams)))
            return [self._symbols[i : i + per] for i in range(0, len(self._symbols), per)]
        return [[s] for s in self._symbols]

    def _url(self, group: list[str]) -> str:
        streams = [f"{s.lower()}@{kind}" for s in group for kind in self._cfg.streams]
        return f"{self._cfg.ws_url.rstrip('/')}/stream?streams={'/'.join(streams)}"

    async def _connection_loop(
        self, group: list[str], nursery: trio.Nursery, predecessor: _Handover | None = None
    ) -> None:
        """Keep one group connected.

        Ends when a planned successor has taken over, or, for a successor, when
        it ended before taking over (the old connection carries on and plans
        another).
        """
        attempt = 0
        reconnect = False
        while True:
            reason = await self._one_connection(group, nursery, predecessor, reconnect)
            if reason == "handed_over" or (predecessor is not None and predecessor.abandoned):
                return
            predecessor = None
            delay_ms = min(self._cfg.backoff_max_ms, self._cfg.backoff_initial_ms * 2**attempt)
            delay_ms *= 1.0 + self._cfg.jitter * self._rng.uniform(-1.0, 1.0)
            attempt = 0 if reason == "stale" else attempt + 1
            reconnect = True
            self._log.warning(
                "feed reconnecting", symbols=group, reason=reason, delay_ms=round(delay_ms)
            )
            await trio.sleep(delay_ms / 1000)

    async def _one_connection(
        self,
        group: list[str],
        nursery: trio.Nursery,
        predecessor: _Handover | None,
        reconnect: bool,
    ) -> str:
        """Run one connection; returns why it ended.

        ``handed_over``: its planned successor took over (this connection read
        on until their streams met, so nothing was missed); ``stale``: no message
        for ``stale_ms``; else the error. A successor that ends before the
        streams meet abandons the hand-over (``predecessor.abandoned``).
        """
        url = self._url(group)
        try:
            async with self._connect(url) as ws:
                try:
                    self.stats.connects += 1
                    if reconnect:
                        self._on_reconnect(group)
                    self._log.info("feed connected", symbols=group, url=url)
                    return await self._pump(ws, group, nursery, predecessor)
                finally:
                    if predecessor is not None:
                        predecessor.abandon()  # no-op once met: never leave the old one waiting
        except TransportError as exc:
            if predecessor is not None:
                predecessor.abandon()  # the connection itself failed
            return str(exc)

    async def _pump(
        self,
        ws: MessageStream,
        group: list[str],
        nursery: trio.Nursery,
        predecessor: _Handover | None,
    ) -> str:
        """Read one connection until it ends; see :class:`_Handover` for the hand-over.

        At most one successor is in flight: a connection plans its successor
        only while it is the feed's (its own hand-over done) and has none.

        Raises:
            TransportError: the connection ended, with no successor to take over.
        """
        stale_s = self._cfg.stale_ms / 1000
        planned_at = trio.current_time() + self._cfg.planned_reconnect_s
        successor: _Handover | None = None
        successor_failures = 0
        last_message = trio.current_time()
        take: Callable[[], str | bytes | None] | None = getattr(ws, "get_message_nowait", None)
        # What one socket read completed, in one call (the wsproto transport).
        many: Callable[[], Awaitable[list[str | bytes]]] | None = getattr(ws, "get_messages", None)
        while True:
            if successor is not None and successor.abandoned:
                successor_failures += 1
                retry_ms = min(
                    self._cfg.backoff_max_ms,
                    self._cfg.backoff_initial_ms * 2 ** (successor_failures - 1),
                )
                self._log.warning(
                    "planned reconnect: successor failed; retrying",
                    symbols=group,
                    delay_ms=retry_ms,
                )
                successor = None
                planned_at = trio.current_time() + retry_ms / 1000
            if successor is not None and successor.met:
                return "handed_over"
            if predecessor is not None and predecessor.met and not predecessor.passed:
                predecessor = None  # the hand-over to this connection is complete
            holding = predecessor is not None and not predecessor.met
            hold_until = math.inf
            if holding and predecessor is not None and predecessor.held_since is not None:
                hold_until = predecessor.held_since + _HANDOVER_PATIENCE_S
            deadline = min(last_message + stale_s, hold_until)
            if successor is None and not holding:
                deadline = min(deadline, planned_at)
            read = False
            with trio.CancelScope(deadline=deadline) as scope:
                if successor is not None:
                    successor.wake = scope
                try:
                    if many is not None and predecessor is None and successor is None:
                        texts = await many()
                    else:
                        texts = [await ws.get_message()]
                except TransportError as exc:
                    if successor is None:
                        raise
                    self._log.warning(
                        "feed connection lost during a planned reconnect; the successor takes over",
                        symbols=group,
                        error=str(exc),
                    )
                    for held in successor.force():
                        self._on_message(held)
                    return "handed_over"
                last_message = trio.current_time()
                if predecessor is not None:
                    for t in predecessor.from_successor(texts[0], last_message):
                        self._on_message(t)
                elif successor is not None:
                    release, stop = successor.from_old(texts[0])
                    for t in release:
                        self._on_message(t)
                    if stop:
                        return "handed_over"
                else:
                    if many is None and take is not None:
                        # The rest of the same read, without a cancel scope and a
                        # checkpoint per message.
                        while (more := take()) is not None:
                            texts.append(more)
                    # Stamped when their bytes were read (the transport's time, if it
                    # has one), not when the frames before them in the read are done.
                    self._on_messages(
                        texts,
                        getattr(ws, "received_ns", 0) or time.time_ns(),
                        wake=self._inline is None,
                        defer_books=self._inline is not None,
                    )
                read = True
            if read:
                if self._inline is not None:
                    try:
                        await self._step_inline()
                    finally:
                        if self._deferred_books:
                            self._apply_deferred_books()
                if self.latency.held >= _LATENCY_FLUSH:
                    self.latency.flush()  # after the step: off the way to its orders
                continue
            now = trio.current_time()
            if successor is not None and (successor.met or successor.abandoned):
                continue  # woken by the successor: see the top of the loop
            if predecessor is not None and now >= hold_until:
                # The old stream has not reached ours (it lags far behind, or the
                # two differ). It passes everything on meanwhile, so giving up here
                # loses nothing; it plans another successor.
                self._log.warning(
                    "planned reconnect: streams did not meet; successor abandoned",
                    symbols=group,
                    messages=len(predecessor.held),
                    patience_s=_HANDOVER_PATIENCE_S,
                )
                predecessor.abandon()
                return "abandoned"
            if successor is None and not holding and now >= planned_at:
                # Before the exchange's 24 h cut: bring up the successor and keep
                # reading here until the two streams meet, so nothing is missed and
                # nothing arrives out of order.
                self.stats.planned_reconnects += 1
                self._log.info("planned reconnect", symbols=group)
                successor = _Handover()
                nursery.start_soon(self._connection_loop, group, nursery, successor)
                continue
            if now < last_message + stale_s:
                continue
            if successor is not None:
                # Quiet here, and the successor is up (or coming up): it takes over
                # rather than a third connection.
                self._log.warning(
                    "feed stale during a planned reconnect; the successor takes over",
                    symbols=group,
                    stale_ms=self._cfg.stale_ms,
                )
                for held in successor.force():
                    self._on_message(held)
                return "handed_over"
            self.stats.stale_reconnects += 1
            self._log.warning(
                "feed stale; reconnecting", symbols=group, stale_ms=self._cfg.stale_ms
            )
            return "stale"

    def _on_reconnect(self, group: list[str]) -> None:
        self.stats.reconnects += 1
        now = time.time_ns()
        for symbol in group:
            self._ops_seq += 1
            self._ops.append(
                FeedReconnected(
                    symbol=symbol, reason="reconnect", ts_event=now, ts_init=now, seq=self._ops_seq
                )
            )
            self._request_resync(symbol)

    # -- messages -------------------------------------------------------------------

    def _on_message(self, text: str | bytes, ts: int = 0) -> None:
        """Decode, de-duplicate and pass on one message received at ``ts`` (0: now)."""
        self._on_messages((text,), ts or time.time_ns())

    def _on_messages(
        self,
        texts: Sequence[str | bytes],
        ts: int,
        *,
        wake: bool = True,
        defer_books: bool = False,
    ) -> None:
        """Decode, de-duplicate and pass on messages received at ``ts``, in order.

        One pass over what a socket read brought: per message only the decode, the
        de-duplication and the column append; the latency samples (held until the
        read loop has stepped: :meth:`LatencyStats.defer`), the data event and the
        first/last times are taken once for the batch. A quote or trade that is
        plainly the next one (update id above the last, trade id one above the mark,
        no backfill running) skips :meth:`_classify`; any other goes through it.
        ``wake=False``: the caller steps what passed itself (:meth:`_step_inline`),
        so the step loop is not woken for it. Text is encoded to bytes only where
        bytes are kept (the recorder, trades held during a backfill).
        ``defer_books``: the caller steps what passed, then calls
        :meth:`_apply_deferred_books`; depth diffs' levels wait until then when the
        step carries no book columns (``book_levels`` 0): see ``BookSync.on_diff``.
        """
        stats = self.stats
        defer = defer_books and not self._book_levels
        stats.messages += len(texts)
        states = self.state
        book_levels = self._book_levels
        record = self._record
        columns = self._columns
        event_times: list[int] = []
        passed = 0
        for text in texts:
            try:
                if text.startswith(_STREAM_TEXT if type(text) is str else _STREAM_BYTES):
                    envelope = _ENVELOPE.decode(text)
                    msg = envelope.data
                    stream = envelope.stream
                else:
                    msg = _BARE.decode(text)
                    stream = ""
            except msgspec.ValidationError:
                stats.unknown += 1
                self._log.debug("unknown message", head=_head(text))
                continue
            except msgspec.DecodeError:
                stats.malformed += 1
                self._log.warning("malformed message", head=_head(text))
                continue
            state = states.get(msg.symbol)
            if state is None:
                stats.unknown += 1
                continue
            if msg.event_time:
                event_times.append(msg.event_time)
            kind = type(msg)
            if "@depth" in stream and _is_partial_depth(stream):
                # depth5/10/20 are top-of-book snapshots sent as "depthUpdate" too;
                # they must not reach the diff book.
                self._pass(state, ts, msg, text)
                passed += 1
                continue
            if kind is BookTicker and msg.update_id > state.last_quote_u:
                # The common case, inline: a quote newer than the last (no trade audit).
                state.last_quote_u = msg.update_id
                if record is not None:
                    record(ts, text.encode() if type(text) is str else text)
                self._seq += 1
                append_message(columns[msg.symbol], ts, self._seq, msg)
                passed += 1
                continue
            if (
                (kind is Trade or kind is AggTrade)
                and state.held is None
                and msg.trade_id == state.trade_ids.high + 1
                and msg.trade_id > 0
            ):
                state.trade_ids.mark(msg.trade_id)
            else:
                raw = text.encode() if type(text) is str else text
                verdict = self._classify(state, msg, raw, defer)
                if verdict is _DUPLICATE:
                    state.duplicates += 1
                if verdict is not _NEW:
                    continue
            self._pass(state, ts, msg, text)
            passed += 1
            if book_levels and kind is DepthUpdate:
                book = state.book
                synced = book.book.synced and not book.needs_snapshot
                self._book_marks[state.symbol].append(
                    (
                        len(self._columns[state.symbol].ints) // N_INT - 1,
                        book_state(book.book, book_levels) if synced else None,
                    )
                )
        if event_times:
            self.latency.defer(ts, event_times)
        if passed:
            self._passed(ts, wake=wake)

    def _classify(
        self, state: SymbolState, msg: MarketMessage, raw: bytes, defer: bool = False
    ) -> object:
        """``_NEW`` to pass on, ``_DUPLICATE`` to drop, ``_HELD`` while trades are backfilled.

        ``defer``: a depth diff's levels wait for :meth:`_apply_deferred_books` (its
        update-id checks, and so any resync, happen now)."""
        if isinstance(msg, BookTicker):
            if 0 <= msg.update_id <= state.last_quote_u:
                return _DUPLICATE
            state.last_quote_u = msg.update_id
        elif isinstance(msg, DepthUpdate):
            if msg.last_id <= state.last_depth_u:
                return _DUPLICATE
            state.last_depth_u = msg.last_id
            book = state.book
            try:
                result = book.on_diff(msg, defer=defer)
            except BookError as exc:
                self._bad_levels(state, exc)
                return _MALFORMED
            if defer and result is ApplyResult.APPLIED:
                self._deferred_books.append(state)
            if result is ApplyResult.GAP:
                state.book_gaps += 1
                self._log.warning("book gap; resyncing", symbol=state.symbol, u=msg.last_id)
            if result is ApplyResult.GAP or state.book.needs_snapshot:
                self._request_resync(state.symbol)
        elif isinstance(msg, Trade | AggTrade) and msg.trade_id >= 0:
            ids = state.trade_ids
            if msg.trade_id <= ids.high:
                if ids.verdict(msg.trade_id) == "late":
                    # Never seen, but newer ones went out already: dropped to keep order.
                    state.late_trades += 1
                    return _LATE
                return _DUPLICATE
            if state.held is not None:
                state.held.append((msg, raw))  # newer than the trades being fetched
                return _HELD
            if ids.high >= 0 and msg.trade_id > ids.high + 1:
                # Trades were missed (a reconnect): fetch them, hold newer ones meanwhile.
                state.held = [(msg, raw)]
                self._backfill_requests.send_nowait(
                    (state.symbol, ids.high + 1, msg.trade_id, type(msg))
                )
                return _HELD
            ids.mark(msg.trade_id)
        return _NEW

    def _apply_deferred_books(self) -> None:
        """Apply the levels of the depth diffs a read deferred (after its step)."""
        states, self._deferred_books = self._deferred_books, []
        for state in states:
            try:
                state.book.apply_deferred()
            except BookError as exc:
                self._bad_levels(state, exc)

    def _bad_levels(self, state: SymbolState, exc: BookError) -> None:
        """A depth diff whose levels the book refused (a malformed price or level
        list): counted, logged, and the book resynced from a snapshot (it is left
        unsynced); the feed reads on."""
        self.stats.malformed += 1
        state.book_errors += 1
        self._log.warning("malformed depth levels; resyncing", symbol=state.symbol, error=str(exc))
        self._request_resync(state.symbol)

    def _append(self, state: SymbolState, ts: int, msg: MarketMessage, raw: bytes) -> None:
        self._pass(state, ts, msg, raw)
        self._passed(ts)

    def _pass(self, state: SymbolState, ts: int, msg: MarketMessage, raw: str | bytes) -> None:
        """Add one message to its symbol's step (call :meth:`_passed` after a batch)."""
        if self._record is not None:
            # After de-duplication, with the time the engine saw it: replaying the
            # recording gives the events this run traded on.
            self._record(ts, raw.encode() if type(raw) is str else raw)
        kind = type(msg)
        if kind is Trade or kind is AggTrade:
            state.trades += 1
            if msg.trade_id >= 0:
                if state.last_passed_id >= 0:
                    if msg.trade_id <= state.last_passed_id:
                        state.passed_id_repeats += 1
                    elif msg.trade_id != state.last_passed_id + 1:
                        state.passed_id_gaps += 1
                state.last_passed_id = max(state.last_passed_id, msg.trade_id)
        self._seq += 1
        append_message(self._columns[state.symbol], ts, self._seq, msg)

    def _passed(self, ts: int, *, wake: bool = True) -> None:
        """Messages received at ``ts`` went into the steps: wake the step loop (unless
        the caller steps them itself)."""
        if wake:
            self._data.set()
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts

    # -- REST: snapshots and backfill ---------------------------------------------------

    def _request_resync(self, symbol: str) -> None:
        state = self.state[symbol]
        if not state.resyncing:
            state.resyncing = True
            self._resync_requests.send_nowait(symbol)

    async def _resync_worker(self) -> None:
        limiter = self._rest.limiter
        async for symbol in self._resync_receive:
            state = self.state[symbol]
            try:
                body = await self._rest.depth(symbol, self._cfg.snapshot_limit)
                book = state.book
                if not book.needs_snapshot:
                    # A gap or reconnect: start over from a fresh buffer.
                    state.book = self._new_book(symbol)
                    book = state.book
                book.on_snapshot(decode_snapshot(body))
                state.resyncs += 1
                self._log.info(
                    "book synced", symbol=symbol, last_update_id=book.book.last_update_id
                )
            except RateLimitedError as exc:
                # The limiter holds the next request (ours and the orders') until Retry-After.
                self._log.warning(
                    "book snapshot rate limited (429); waiting",
                    symbol=symbol,
                    wait_s=round(limiter.blocked_for(), 3),
                    error=exc.msg,
                )
                self._retry_resync(symbol)
                continue
            except IpBannedError as exc:
                wait_s = limiter.banned_for()
                self._log.error(
                    "book snapshot refused: IP banned (418); waiting for the ban to end",
                    symbol=symbol,
                    wait_s=round(wait_s, 3),
                    error=exc.msg,
                )
                await trio.sleep(wait_s)
                self._retry_resync(symbol)
                continue
            except (BinanceError, BookError) as exc:
                self._log.warning("book snapshot failed; retrying", symbol=symbol, error=str(exc))
                await trio.sleep(_SNAPSHOT_RETRY_S)
                self._retry_resync(symbol)
                continue
            state.resyncing = False

    def _retry_resync(self, symbol: str) -> None:
        # To the back of the queue: the other symbols' snapshots are not held up.
        self.state[symbol].resyncing = False
        self._request_resync(symbol)

    async def _backfill_worker(self) -> None:
        async for symbol, from_id, upto_id, kind in self._backfill_receive:
            state = self.state[symbol]
            aggregated = kind is AggTrade
            rows = await self._fetch_trades(symbol, from_id, upto_id, aggregated)
            ts = time.time_ns()
            got = 0
            ids = state.trade_ids
            for row in rows:
                trade = _trade_from_rest(symbol, row, aggregated)
                if ids.high < trade.trade_id < upto_id:
                    ids.mark(trade.trade_id)
                    state.backfilled += 1
                    got += 1
                    self._append(state, ts, trade, _stream_line(trade))
            held, state.held = state.held or [], None
            for trade, raw in sorted(held, key=lambda pair: pair[0].trade_id):
                if trade.trade_id > ids.high:
                    ids.mark(trade.trade_id)
                    self._append(state, ts, trade, raw)
            missing = upto_id - from_id - got
            self._log.info(
                "trades backfilled", symbol=symbol, from_id=from_id, got=got, missing=missing
            )

    async def _fetch_trades(
        self, symbol: str, from_id: int, upto_id: int, aggregated: bool
    ) -> list[dict[str, Any]]:
        """The trades ``[from_id, upto_id)`` over REST, page by page; what came before a failure.

        A 429 is waited out (the limiter holds the retry) within
        ``_BACKFILL_PATIENCE_S``; a ban, any other failure or running out of
        patience ends the backfill with what it has.
        """
        rows: list[dict[str, Any]] = []
        next_id = from_id
        fetch = self._rest.agg_trades if aggregated else self._rest.historical_trades
        with trio.move_on_after(_BACKFILL_PATIENCE_S) as patience:
            while next_id < upto_id:
                try:
                    page = await fetch(symbol, from_id=next_id)
                except RateLimitedError as exc:
                    self._log.warning(
                        "trade backfill rate limited (429); waiting",
                        symbol=symbol,
                        wait_s=round(self._rest.limiter.blocked_for(), 3),
                        error=exc.msg,
                    )
                    continue
                except BinanceError as exc:
                    self._log.warning("trade backfill failed", symbol=symbol, error=str(exc))
                    break
                if not page:
                    break
                rows.extend(page)
                try:
                    next_id = int(page[-1]["a" if aggregated else "id"]) + 1
                except (KeyError, TypeError, ValueError) as exc:
                    self._log.warning("trade backfill unreadable", symbol=symbol, error=repr(exc))
                    break
        if patience.cancelled_caught:
            self._log.warning(
                "trade backfill gave up: rate limited past its patience",
                symbol=symbol,
                patience_s=_BACKFILL_PATIENCE_S,
            )
        return rows

    # -- steps ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, then send steps (see :meth:`_step_loop`) until ``stop`` is set.

        On ``stop`` the feed sends what it has as a last step, then the final
        step, closes its channels and the connections. On cancellation it stops
        at once.
        """
        self._resync_requests, self._resync_receive = trio.open_memory_channel[str](math.inf)
        self._backfill_requests, self._backfill_receive = trio.open_memory_channel[Any](math.inf)
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._execution_channel)
            for channel in self._symbol_channels.values():
                stack.enter_context(channel)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._resync_worker)
                nursery.start_soon(self._backfill_worker)
                for symbol in self._symbols:
                    self._request_resync(symbol)
                for group in self._groups():
                    nursery.start_soon(self._connection_loop, group, nursery)
                task_status.started()
                await self._step_loop()
                await self._send_step(final=True)
                nursery.cancel_scope.cancel()

    async def _step_loop(self) -> None:
        """Send whatever has arrived as a step, at once; never wait to fill a batch.

        While the pipeline is busy with a step, new messages gather in the buffers
        and go out together as the next one: the batching comes from backpressure,
        not from a timer. With nothing arriving, an empty step goes out every
        ``step_ms`` so time-driven risk checks (stale data) keep running.

        Inline, the read loops step what they read themselves (:meth:`_step_inline`);
        this loop sends the heartbeat and what arrived while a step was running
        (or from REST backfill, or a hand-over's release).
        """
        heartbeat_s = self._step_ns / 1e9
        min_step_s = self._cfg.min_step_ms / 1000
        while not self._stop.is_set():
            if self._inline is None:
                with trio.move_on_after(heartbeat_s):
                    await self._data.wait()
            else:
                # The read loops step what they read; this sends the heartbeat, and
                # what arrived while a step ran or came from REST backfill.
                with trio.move_on_at(self._last_step_at + heartbeat_s):
                    await self._data.wait()
                if not self._pending() and trio.current_time() < self._last_step_at + heartbeat_s:
                    self._data = trio.Event()
                    continue
                if min_step_s > 0:
                    await trio.sleep_until(self._last_step_at + min_step_s)
            self._data = trio.Event()
            sent_at = trio.current_time()
            await self._send_step(final=False)
            if min_step_s > 0:
                # Bound the per-step overhead (a dozen channel hops) when messages
                # arrive faster than the pipeline turns steps around.
                await trio.sleep_until(sent_at + min_step_s)

    def _pending(self) -> bool:
        if self._ops:
            return True
        for cols in self._column_list:  # noqa: SIM110 (no generator on a read loop's way)
            if cols.ints:
                return True
        return False

    async def _step_inline(self) -> None:
        """A read loop's step: at once, unless a step is running or it is too soon
        (``min_step_ms``): then the step loop is woken to send it in time. Nothing
        after the final step."""
        if self._final_sent or not self._pending():
            return
        min_step_ms = self._cfg.min_step_ms
        if self._stepping or (
            min_step_ms and trio.current_time() < self._last_step_at + min_step_ms / 1000
        ):
            self._data.set()
            return
        await self._send_step(final=False)

    async def _send_step(self, *, final: bool) -> None:
        if self._inline is None:
            await self._send_to_channels(final=final)
            return
        # One step at a time: a plain flag, and an event only when a task must wait
        # (a trio.Lock's acquire and release cost ~1 us on a read loop's way).
        while self._stepping:
            if self._step_done is None:
                self._step_done = trio.Event()
            await self._step_done.wait()
        self._stepping = True
        try:
            if self._final_sent:
                return
            self._final_sent = final
            self._last_step_at = trio.current_time()
            step = self.stats.steps
            now = time.time_ns()
            present: dict[str, Ticks] = {}
            if not final:
                for s in self._symbols:
                    ticks = self._take(s)
                    if ticks is not None:
                        present[s] = ticks
            ops: tuple[OpsEvent, ...] = ()
            if self._ops:
                ops, self._ops = tuple(self._ops), []
            self.stats.steps += 1
            await self._inline(
                {
                    s: MarketBatch(
                        step=step, ts_start=now, symbol=s, ticks=present.get(s), final=final
                    )
                    for s in self._symbols
                },
                MarketStep(step=step, ts_start=now, ticks=present, ops=ops, final=final),
            )
        finally:
            self._stepping = False
            done = self._step_done
            if done is not None:  # wake the tasks waiting to step (one gets it)
                self._step_done = None
                done.set()

    async def _send_to_channels(self, *, final: bool) -> None:
        step = self.stats.steps
        now = time.time_ns()
        batches = {s: (None if final else self._take(s)) for s in self._columns}
        present = {s: t for s, t in batches.items() if t is not None}
        ops, self._ops = tuple(self._ops), []
        # The symbol actors first (they decide; execution waits for risk anyway), and
        # without a checkpoint between the sends while there is room: each ``send``
        # yields, and every yield here would hold the next actor one scheduler round.
        sends: list[tuple[trio.MemorySendChannel[Any], Any]] = [
            (
                self._symbol_channels[symbol],
                MarketBatch(
                    step=step, ts_start=now, symbol=symbol, ticks=batches[symbol], final=final
                ),
            )
            for symbol in self._symbols
        ]
        sends.append(
            (
                self._execution_channel,
                MarketStep(step=step, ts_start=now, ticks=present, ops=ops, final=final),
            )
        )
        for channel, message in sends:
            try:
                channel.send_nowait(message)
            except trio.WouldBlock:
                await channel.send(message)
        self.stats.steps += 1

    def _take(self, symbol: str) -> Ticks | None:
        """The symbol's step as a batch, with its book columns when it has a book."""
        ticks = self._columns[symbol].take()
        if ticks is None or not self._book_levels:
            return ticks
        marks = self._book_marks[symbol]
        carry = self._book_carry[symbol]
        if marks:
            self._book_carry[symbol] = marks[-1][1]
        out = _attach_book(ticks, carry, marks, self._book_levels)
        marks.clear()
        return out

    def summary(self) -> dict[str, Any]:
        """Counters, latency and per-symbol book and trade figures for the report."""
        per_symbol = {}
        for symbol, st in self.state.items():
            per_symbol[symbol] = {
                "trades": st.trades,
                "trade_id_gaps": st.passed_id_gaps,
                "trade_id_duplicates": st.passed_id_repeats,
                "duplicates_dropped": st.duplicates,
                "late_trades_dropped": st.late_trades,
                "backfilled": st.backfilled,
                "book_resyncs": st.resyncs,
                "book_gaps": st.book_gaps,
                "book_errors": st.book_errors,
                "book_synced": st.book.book.synced,
            }
        return {
            **attrs.asdict(self.stats),
            "latency": self.latency.summary(),
            "symbols": per_symbol,
        }


def _attach_book(
    ticks: Ticks, carry: np.ndarray | None, marks: list[tuple[int, np.ndarray | None]], levels: int
) -> Ticks:
    """``ticks`` with book columns: state 0 is ``carry`` (the book before the step; None:
    not synced), then one state per synced depth row of ``marks`` (``(row, state)``).

    Each row points at the latest state at or before it, -1 where the book is not
    synced: the columns replay builds (:class:`~engine.feeds._bookcols.BookRebuild`),
    within one batch.
    """
    if carry is None and not marks:
        return ticks
    n = len(ticks)
    states = [] if carry is None else [carry]
    at = np.full(n, -2, dtype=np.int64)  # -2: no depth row here
    for row, state in marks:
        if state is None:
            at[row] = -1
        else:
            at[row] = len(states)
            states.append(state)
    # Forward fill: each row takes the mark of the latest depth row at or before it.
    idx = np.where(at != -2, np.arange(n), -1)
    np.maximum.accumulate(idx, out=idx)
    book_row = np.where(idx >= 0, at[np.maximum(idx, 0)], 0 if carry is not None else -1)
    stacked = np.stack(states) if states else np.empty((0, 4, levels), dtype=np.float64)
    cols = [np.ascontiguousarray(stacked[:, k, :]) for k in range(4)]
    for arr in (book_row, *cols):
        arr.flags.writeable = False
    return attrs.evolve(
        ticks,
        book_row=book_row,
        book_bid_px=cols[0],
        book_bid_qty=cols[1],
        book_ask_px=cols[2],
        book_ask_qty=cols[3],
    )


def _head(text: str | bytes) -> str:
    """The start of a message, for a log line."""
    return text[:120] if isinstance(text, str) else text[:120].decode(errors="replace")


def _is_partial_depth(stream: str) -> bool:
    """``btcusdt@depth5``, ``@depth10@100ms``, ``@depth20@500ms``: partial book streams."""
    _sym, _, kind = stream.partition("@depth")
    return bool(kind) and kind[0].isdigit()


def _stream_line(trade: Trade | AggTrade) -> bytes:
    """A backfilled trade as the combined-stream message it would have been."""
    sym = trade.symbol.lower()
    if isinstance(trade, AggTrade):
        data = {"e": "aggTrade", "E": trade.event_time, "a": trade.trade_id, "s": trade.symbol}
        stream = f"{sym}@aggTrade"
    else:
        data = {"e": "trade", "E": trade.event_time, "t": trade.trade_id, "s": trade.symbol}
        stream = f"{sym}@trade"
    data |= {
        "p": repr(trade.price),
        "q": repr(trade.qty),
        "T": trade.tx_time,
        "m": trade.buyer_maker,
    }
    return orjson.dumps({"stream": stream, "data": data})


def _trade_from_rest(symbol: str, row: dict[str, Any], aggregated: bool) -> Trade | AggTrade:
    if aggregated:
        return AggTrade(
            symbol=symbol,
            price=float(row["p"]),
            qty=float(row["q"]),
            buyer_maker=bool(row["m"]),
            event_time=int(row["T"]),
            tx_time=int(row["T"]),
            trade_id=int(row["a"]),
        )
    return Trade(
        symbol=symbol,
        price=float(row["price"]),
        qty=float(row["qty"]),
        buyer_maker=bool(row["isBuyerMaker"]),
        event_time=int(row["time"]),
        tx_time=int(row["time"]),
        trade_id=int(row["id"]),
    )

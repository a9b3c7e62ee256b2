"""A Binance USD-M compatible loopback market-data server, fed by a capture.

Websocket (trio-websocket): ``/ws/<stream>[/<stream>...]`` sends each event's
recorded bytes; ``/stream?streams=<a>/<b>`` sends the recorded combined-stream
envelopes; both take ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS``
requests as Binance documents them (a listen key may be subscribed too), under
Binance's routed prefixes ``/public``, ``/market`` and ``/private`` as well
(``/private/ws?listenKey=<key>``; see :mod:`._ws_routes`). The server pings
every ``ping_interval_s``
(Binance: 3 minutes), drops a connection that does not answer within
``pong_timeout_s`` and closes every connection after ``max_connection_s`` (Binance:
24 hours; scale it down to exercise planned reconnects).

REST (h11 on a second port, bound to the same host): ``/fapi/v1/ping``,
``/fapi/v1/historicalTrades``, ``/fapi/v1/trades`` and ``/fapi/v1/aggTrades``
(the trades played so far, ``fromId``/``limit``), ``/fapi/v1/time`` (the
exchange's clock), ``/fapi/v1/exchangeInfo`` (recorded when the data has one,
else derived from it; ``orderTypes`` always the types this exchange accepts),
``/fapi/v1/depth`` (the book rebuilt from the capture's snapshot and diffs at the
playback position), tickers, klines, premium index, funding and open interest
(:mod:`._public`). Replies carry their HTTP reason phrase; every request is
logged (method, path, status, Binance code, duration) as one JSON line.

Trading (same REST port): the signed order, account and listen-key endpoints of
:mod:`._exchange_api`, matched by :mod:`._trading` against the replayed book and
trades; user-data events go to ``/ws/<listenKey>`` and ``/stream?streams=<listenKey>``
on the websocket port. HTTP/1.1 keep-alive, form bodies on POST/PUT/DELETE.

Time: by default the capture is re-timed to the wall clock (:mod:`._retime`):
when playback starts, every recorded time is shifted by one constant so that the
first event's ``E`` is now, and the exchange clock (``/fapi/v1/time``, the
``timestamp`` check of signed requests, user-data events) is the wall clock, so
unmodified clients that sign with their own clock are accepted. At ``speed`` 1
event times then keep agreeing with the clock; at other speeds they drift from
it by design. ``original_times=True`` serves the recorded bytes unchanged and
runs the exchange clock from the capture's first ``E``.

Playback follows the recorded timestamps divided by ``speed`` (0: as fast as the
clients take it), starting with the first client, REST or websocket (or at once
with ``start="now"``); with ``autoplay=False`` it moves only when a test calls
:meth:`StreamServer.advance`.
Faults, each once at a playback offset in seconds: ``drop`` (abort every
connection's TCP stream), ``stall:<s>`` (send nothing, pings included, for a
while), ``gap`` (skip one depth update per symbol: a broken ``pu`` chain),
``garbage`` (a non-JSON text frame), ``drop_user_stream`` (close every user-data
connection). Request faults (:class:`RequestFault`) are armed with
:meth:`StreamServer.arm_fault` or ``TradingSettings.faults``.
"""

from __future__ import annotations

import contextlib
import functools
import http
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

import attrs
import h11
import msgspec
import orjson
import trio
import trio_websocket
from structlog.typing import FilteringBoundLogger

from ...book import BookSync, OrderBook, Side, decode_snapshot
from ...feeds._capture import DepthUpdate
from ._algo import AlgoBook
from ._exchange_api import ACCEPTED_ORDER_TYPES, ExchangeApi, HttpReply
from ._exchange_faults import REQUEST_FAULT_KINDS, FaultBox, RequestFault
from ._exchange_limits import LimitSettings, ServerRateLimiter
from ._market_stats import MarketStats, PlayedTrade
from ._public import PublicEndpoints
from ._recorded import RecordedMessage, Recording
from ._retime import is_kline_stream, retime
from ._trading import AccountSettings, MatchingEngine, rules_from_exchange_info
from ._trading_format import listen_key_expired
from ._userdata import ListenKeys
from ._ws_routes import is_listen_key, parse_ws_target, recorded_name

_MS = 1_000_000


@attrs.frozen(kw_only=True)
class Fault:
    """One scheduled fault: ``kind`` at ``at_s`` seconds of playback (``arg``: stall length)."""

    kind: str = attrs.field(
        validator=attrs.validators.in_(("drop", "stall", "gap", "garbage", "drop_user_stream"))
    )
    at_s: float = attrs.field(validator=attrs.validators.ge(0))
    arg: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Fault:
        """``drop@5``, ``stall@10:3``, ``gap@7``, ``garbage@4``, ``drop_user_stream@9``.

        Raises:
            ValueError: the text is not of that form.
        """
        kind, _, rest = text.partition("@")
        at, _, arg = rest.partition(":")
        try:
            return cls(kind=kind, at_s=float(at), arg=float(arg) if arg else 0.0)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"bad fault {text!r}: expected drop@S, stall@S:SECONDS, gap@S, garbage@S, "
                "drop_user_stream@S, or a request fault KIND[:ARG][*COUNT][@METHOD/PATH]"
            ) from exc


@attrs.frozen(kw_only=True)
class ServerSettings:
    """How the loopback server plays the capture."""

    speed: float = 1.0
    ping_interval_s: float = 180.0
    pong_timeout_s: float = 600.0
    max_connection_s: float = 86_400.0
    faults: tuple[Fault, ...] = ()
    client_queue: int = 65_536  # messages queued per client before it is dropped as slow
    autoplay: bool = True  # False: playback moves only on StreamServer.advance()
    original_times: bool = False  # True: recorded bytes and clock as captured (no re-timing)
    start: str = attrs.field(
        default="client", validator=attrs.validators.in_(("client", "now"))
    )  # "client": playback starts with the first REST or websocket client


@attrs.frozen(kw_only=True)
class TradingSettings:
    """The trading side: account, limits, request faults, listen-key lifetime.

    API keys are not here (they are secrets): pass them to :class:`StreamServer`.
    """

    account: AccountSettings = attrs.Factory(AccountSettings)
    limits: LimitSettings = attrs.Factory(LimitSettings)
    faults: tuple[RequestFault, ...] = ()
    listen_key_ttl_s: float = attrs.field(default=3600.0, validator=attrs.validators.gt(0))


class _Connection:
    def __init__(self, ws: trio_websocket.WebSocketConnection, combined: bool, queue: int) -> None:
        self.ws = ws
        self.combined = combined
        self.streams: set[str] = set()  # recorded stream names (and listen keys) it gets
        self.names: dict[str, str] = {}  # recorded name -> the name the client asked for
        self.send, self.receive = trio.open_memory_channel[str](queue)
        self.sent = 0
        self.user = False  # subscribed to a listen key
        self.scope: trio.CancelScope | None = None
        self.abort = False  # end with a TCP abort, not a close handshake

    def cut(self, *, abort: bool) -> None:
        """End the connection from synchronous code (its handler does the closing)."""
        self.abort = abort
        if self.scope is not None:
            self.scope.cancel()


class StreamServer:
    """Serves one recording to websocket and REST clients, and trades against it.

    Args:
        recording: the capture, loaded with :func:`load_recording`.
        settings: pace, pings, connection lifetime and market-data faults.
        log: a bound structlog logger (API secrets are never logged).
        trading: account, fees, limits, request faults of the trading side.
        api_keys: API key -> secret accepted on signed endpoints.
        exchange_info: an ``exchangeInfo`` body to serve (default: the one in
            the recording, else one derived from the data).
        wall_ms: the wall clock in ms (the re-timed exchange clock starts from it).

    Attributes:
        sent: messages sent, all connections together.
        send_times: ``(n, trio time when handed to the socket)`` for the n-th
            message (1-based) of the first connection, for latency measurements.
        engine: the matching engine and account, for inspection
            (``orders()``, ``open_orders()``, ``fills()``, ``positions()``,
            ``wallet``, ``available_balance()``).
        api: the REST protocol layer (``api.limiter``, ``api.faults.fired``).
        user_events: every user-data event produced, in order, whether or not
            a stream was connected to receive it.
    """

    def __init__(
        self,
        recording: Recording,
        settings: ServerSettings,
        log: FilteringBoundLogger,
        *,
        trading: TradingSettings | None = None,
        api_keys: Mapping[str, str] | None = None,
        exchange_info: bytes | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.recording = recording
        self.settings = settings
        self.trading = trading if trading is not None else TradingSettings()
        self._log = log
        self._conns: set[_Connection] = set()
        self._started = trio.Event()
        self._finished = trio.Event()
        self._t0 = 0.0
        self._index = 0
        self._stalled_until = 0.0
        self._skip_depth: set[str] = set()
        self._books: dict[str, BookSync] = {
            s: BookSync(OrderBook(symbol=s)) for s in recording.symbols
        }
        self._synced = {s: trio.Event() for s in recording.symbols}  # set once, when synced
        self._snapshots = list(recording.snapshots)
        self._trades: dict[str, list[tuple[int, int, dict[str, Any], bool]]] = {}
        for index, msg in enumerate(recording.messages):
            if msg.stream.endswith(("@trade", "@aggTrade")):
                row, trade_id, aggregated = _rest_trade(msg.data)
                self._trades.setdefault(msg.symbol, []).append((index, trade_id, row, aggregated))
        # Resting orders fill on @trade prints, or on @aggTrade where there are no @trade.
        self._fill_stream = {
            s: "@trade" if any(not agg for *_x, agg in rows) else "@aggTrade"
            for s, rows in self._trades.items()
        }
        self._info = _accepted_types(
            orjson.loads(
                exchange_info
                or recording.exchange_info
                or _derived_exchange_info(recording, self.trading.limits)
            )
        )
        self.exchange_info = orjson.dumps(self._info)
        self._wall_ms = wall_ms
        self._offset_ms = 0  # added to every recorded time (re-timing)
        self._recorded_streams = frozenset(m.stream for m in recording.messages)
        self._recorded_marks: dict[str, dict[str, Any]] = {}
        self._marks: dict[str, Decimal] = {}
        self._last_trade: dict[str, Decimal] = {}
        self.sent = 0
        self.connections = 0
        self.send_times: list[tuple[int, float]] = []
        self._timed_conn: _Connection | None = None
        self.user_events: list[dict[str, Any]] = []
        self._conn_added = trio.Event()
        self._clock_t: float | None = None  # the exchange clock's anchor (trio time)
        self._clock_ms = 0
        self.engine = MatchingEngine(
            rules_from_exchange_info(self.exchange_info), self, self.trading.account
        )
        self._price_places = {s: _places(r.tick) for s, r in self.engine.rules.items()}
        self._qty_places = {s: _places(r.step) for s, r in self.engine.rules.items()}
        self.stats = MarketStats(self._price_places, self._qty_places)
        self._public_api = PublicEndpoints(
            self, self.stats, list(self.engine.rules), self._price_places, self._qty_places
        )
        self.algos = AlgoBook(self.engine, *_algo_limits(self._info))
        faults = FaultBox()
        for fault in self.trading.faults:
            faults.arm(fault)
        self.api = ExchangeApi(
            engine=self.engine,
            api_keys=api_keys or {},
            limiter=ServerRateLimiter(self.trading.limits),
            faults=faults,
            listen_keys=ListenKeys(self.trading.listen_key_ttl_s),
            sink=self,
            public=self._route,
            clock_ms=self.exchange_ms,
            now=trio.current_time,
            algos=self.algos,
            prices=self.prices,
        )

    # -- lifecycle -------------------------------------------------------------------

    async def serve(
        self,
        host: str,
        ws_port: int,
        rest_port: int,
        *,
        task_status: trio.TaskStatus[tuple[int, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status`` gets the bound (ws_port, rest_port)."""
        async with trio.open_nursery() as nursery:
            ws_server = await nursery.start(
                trio_websocket.serve_websocket, self._on_websocket, host, ws_port, None
            )
            # Bound to ``host`` only: trio's default would listen on every interface.
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, host=host), self._on_http, rest_port
            )
            if self.settings.autoplay:
                nursery.start_soon(self._playback)
                nursery.start_soon(self._fault_clock)
            nursery.start_soon(self._listen_key_clock)
            rest = listeners[0].socket.getsockname()[1]
            self._log.info(
                "sim exchange listening", host=host, ws_port=ws_server.port, rest_port=rest
            )
            if self.settings.start == "now":
                self._start()
            task_status.started((ws_server.port, rest))

    @property
    def finished(self) -> trio.Event:
        """Set when the whole capture has been played."""
        return self._finished

    def exchange_ms(self) -> int:
        """The exchange's clock, ms: what ``/fapi/v1/time`` says and signed requests
        are checked against.

        It starts from the wall clock (re-timed, the default) or from the capture's
        first ``E`` (``original_times``) at the first call, and runs in real time
        (trio's clock) from there, whatever the playback ``speed``: a client that
        synced with ``/fapi/v1/time`` stays inside ``recvWindow`` although event
        times move ``speed`` times faster. With ``autoplay=False`` it also never
        falls behind the ``E`` of the playback position (:meth:`advance` moves it
        forward, never backwards) when it runs on the capture's clock; re-timed it
        stays the wall clock, so clients signing with their own clock are accepted
        however fast a test plays.
        """
        messages = self.recording.messages
        if not messages:
            return 0
        now = trio.current_time()
        if self._clock_t is None:
            first = messages[0].event_time if self.settings.original_times else self._wall_ms()
            self._clock_t, self._clock_ms = now, first
        running = self._clock_ms + int((now - self._clock_t) * 1000)
        if self.settings.autoplay or not self.settings.original_times:
            return running
        return max(self.playback_ms(), running)

    @property
    def offset_ms(self) -> int:
        """What re-timing adds to every recorded time (0 with ``original_times``)."""
        return self._offset_ms

    def playback_ms(self) -> int:
        """``E`` of the message at the playback position (re-timed, ms)."""
        messages = self.recording.messages
        if not messages:
            return 0
        return messages[min(self._index, len(messages) - 1)].event_time + self._offset_ms

    def _start(self) -> None:
        """Start playback (once): fix the re-timing offset and the start time."""
        if self._started.is_set() or not self.recording.messages:
            return
        if not self.settings.original_times:
            self._offset_ms = self.exchange_ms() - self.recording.messages[0].event_time
        self._t0 = trio.current_time()
        self._started.set()
        self._log.info(
            "sim exchange: playback started", **{"trireme.sim_exchange.offset_ms": self._offset_ms}
        )

    # -- test controls ---------------------------------------------------------------

    def advance(self, messages: int | None = None, *, until_ms: int | None = None) -> int:
        """Play the next messages now (``autoplay=False``); returns how many were played.

        Args:
            messages: play this many.
            until_ms: play every message whose ``E`` is at most this.

        Raises:
            RuntimeError: the server plays by itself (``autoplay=True``).
        """
        if self.settings.autoplay:
            raise RuntimeError("advance() needs ServerSettings(autoplay=False)")
        self._start()
        recorded = self.recording.messages
        end = len(recorded)
        if messages is not None:
            end = min(end, self._index + messages)
        if until_ms is not None:
            stop = self._index
            while stop < end and recorded[stop].event_time <= until_ms:
                stop += 1
            end = stop
        before = self.exchange_ms()
        played = 0
        while self._index < end:
            msg = recorded[self._index]
            self._apply_snapshots(msg.ts)
            self._deliver(msg)
            self._index += 1
            played += 1
        if self._index >= len(recorded):
            self._finished.set()
        self._clock_t, self._clock_ms = trio.current_time(), before
        self._clock_ms = self.exchange_ms()  # at least the new position's E
        return played

    def book_ready(self, symbol: str) -> bool:
        """Whether the replayed book of ``symbol`` is synced (orders can match)."""
        sync = self._books.get(symbol)
        return sync is not None and sync.book.synced

    def arm_fault(self, fault: RequestFault | str) -> None:
        """Arm a request fault (or its text form) on the next matching requests."""
        self.api.faults.arm(RequestFault.parse(fault) if isinstance(fault, str) else fault)

    def order_by_client_id(self, client_order_id: str) -> Any:
        """The newest order with this client order id (any symbol), or ``None``."""
        for order in reversed(self.engine.orders()):
            if order.client_order_id == client_order_id:
                return order
        return None

    @property
    def user_connections(self) -> int:
        """User-data websocket connections now open."""
        return sum(1 for c in self._conns if c.user)

    async def wait_user_connections(self, n: int) -> None:
        """Wait until at least ``n`` user-data connections are registered (tests)."""
        while self.user_connections < n:
            await self._conn_added.wait()

    async def wait_book_ready(self, symbol: str) -> None:
        """Wait until the replayed book of ``symbol`` has first been synced (tests)."""
        await self._synced[symbol].wait()

    async def wait_subscribed(self, stream: str) -> None:
        """Wait until a connection gets ``stream`` (as a client names it; tests)."""
        canonical = recorded_name(stream, self._recorded_streams)
        while not any(canonical in c.streams for c in self._conns):
            await self._conn_added.wait()

    def expire_listen_key(self) -> str | None:
        """Expire the active listen key now: its streams get ``listenKeyExpired``."""
        key = self.api.listen_keys.expire_now()
        if key is not None:
            self._key_expired(key)
        return key

    # -- market view for the matching engine -------------------------------------------

    def levels(self, symbol: str, side: str) -> Iterator[tuple[Decimal, Decimal]]:
        """The replayed book, best first (``side``: ``"bids"`` or ``"asks"``)."""
        sync = self._books.get(symbol)
        if sync is None or not sync.book.synced:
            return
        pp, qp = self._price_places.get(symbol, 8), self._qty_places.get(symbol, 8)
        prices, qtys = sync.book.levels(Side.BID if side == "bids" else Side.ASK, 1000)
        for price, qty in zip(prices, qtys, strict=True):
            yield Decimal(f"{price:.{pp}f}"), Decimal(f"{qty:.{qp}f}")

    def recorded_mark(self, symbol: str) -> Mapping[str, Any] | None:
        """The last played ``markPriceUpdate`` event of ``symbol`` (re-timed)."""
        return self._recorded_marks.get(symbol)

    def open_interest(self, symbol: str) -> Decimal:
        """The simulated account's open position: all this exchange holds."""
        return abs(self.engine.position(symbol).amount)

    def prices(self, symbol: str) -> tuple[Decimal, Decimal]:
        """(last trade price, mark price) of ``symbol`` (0 while unknown)."""
        return self._last_trade.get(symbol, Decimal(0)), self.mark_price(symbol)

    def mark_price(self, symbol: str) -> Decimal:
        """markPrice stream if recorded, else the book's mid, else the last trade."""
        mark = self._marks.get(symbol)
        if mark is not None:
            return mark
        sync = self._books.get(symbol)
        if sync is not None and sync.book.synced:
            bid, ask = sync.book.best_bid(), sync.book.best_ask()
            if bid is not None and ask is not None:
                pp = self._price_places.get(symbol, 8)
                return (Decimal(f"{bid[0]:.{pp}f}") + Decimal(f"{ask[0]:.{pp}f}")) / 2
        return self._last_trade.get(symbol, Decimal(0))

    # -- user-data sink (called by the API) --------------------------------------------

    def publish(self, events: Iterable[dict[str, Any]]) -> None:
        """Send user-data events to the active listen key's streams."""
        key = self.api.listen_keys.active
        for event in events:
            self.user_events.append(event)
            if key is None:
                continue
            data = orjson.dumps(event)
            envelope = orjson.dumps({"stream": key, "data": event})
            self._fan_out(key, data, envelope)

    def drop_user_streams(self) -> None:
        """Close every user-data connection (events meanwhile reach no stream)."""
        for conn in [c for c in self._conns if c.user]:
            self._log.warning("fault: user-data stream dropped")
            self._conns.discard(conn)
            conn.cut(abort=True)

    def listen_key_closed(self, key: str) -> None:
        """The key was closed by ``DELETE /fapi/v1/listenKey``: close its streams."""
        for conn in [c for c in self._conns if key in c.streams]:
            self._conns.discard(conn)
            conn.cut(abort=False)

    def _key_expired(self, key: str) -> None:
        event = listen_key_expired(key, self.exchange_ms())
        self.user_events.append(event)
        self._fan_out(key, orjson.dumps(event), orjson.dumps({"stream": key, "data": event}))
        for conn in self._conns:
            conn.streams.discard(key)

    async def _listen_key_clock(self) -> None:
        while True:
            await trio.sleep(1.0)
            key = self.api.listen_keys.expire_due(trio.current_time())
            if key is not None:
                self._log.info("listen key expired")
                self._key_expired(key)

    # -- playback --------------------------------------------------------------------

    async def _playback(self) -> None:
        messages = self.recording.messages
        await self._started.wait()
        first = messages[0].ts if messages else 0
        speed = self.settings.speed
        for i, msg in enumerate(messages):
            self._index = i
            self._apply_snapshots(msg.ts)
            if speed > 0:
                due = self._t0 + (msg.ts - first) / 1e9 / speed
                await trio.sleep_until(max(due, self._stalled_until))
            elif trio.current_time() < self._stalled_until:
                await trio.sleep_until(self._stalled_until)
            else:
                await trio.lowlevel.checkpoint()
            if speed > 0:
                self._deliver(msg)
            else:
                await self._deliver_waiting(msg)
        self._index = len(messages)
        self._finished.set()
        self._log.info("sim exchange: capture played", messages=len(messages), sent=self.sent)

    def _wire(self, msg: RecordedMessage) -> tuple[bytes, bytes]:
        """The bytes sent for ``msg``: (raw event, combined envelope), re-timed."""
        offset = self._offset_ms
        if not offset:
            return msg.data, msg.envelope
        kline = is_kline_stream(msg.stream)
        return retime(msg.data, offset, kline=kline), retime(msg.envelope, offset, kline=kline)

    def _deliver(self, msg: RecordedMessage) -> None:
        if self._apply_depth(msg):
            self._fan_out(msg.stream, *self._wire(msg))
        self._trade_input(msg)

    async def _deliver_waiting(self, msg: RecordedMessage) -> None:
        if self._apply_depth(msg):
            await self._fan_out_waiting(msg.stream, *self._wire(msg))
        self._trade_input(msg)

    def _trade_input(self, msg: RecordedMessage) -> None:
        """Feed trades, book tickers and mark prices to the account and statistics."""
        stream = msg.stream
        symbol = msg.symbol
        if stream.endswith("@bookTicker"):
            self.stats.on_book_ticker(symbol, orjson.loads(msg.data), self._offset_ms)
            return
        if stream.endswith("@markPrice") or "@markPrice@" in stream:
            ev = orjson.loads(msg.data)
            for field in ("E", "T"):
                if field in ev:
                    ev[field] += self._offset_ms
            self._recorded_marks[symbol] = ev
            self._marks[symbol] = Decimal(ev["p"])
            if symbol in self.engine.rules:
                self._check_algos(symbol, ev["E"])
            return
        fill_stream = self._fill_stream.get(symbol)
        if fill_stream is None or not stream.endswith(fill_stream):
            return
        ev = orjson.loads(msg.data)
        price, qty = Decimal(ev["p"]), Decimal(ev["q"])
        now = ev["E"] + self._offset_ms
        self._last_trade[symbol] = price
        trade_id = ev["t"] if "t" in ev else ev["a"]
        time_ms = ev.get("T", ev["E"]) + self._offset_ms
        self.stats.on_trade(
            symbol,
            PlayedTrade(time=time_ms, price=price, qty=qty, trade_id=trade_id, buyer_maker=ev["m"]),
        )
        if symbol in self.engine.rules:
            self.publish(self.engine.on_trade(symbol, price, qty, now))
            self._check_algos(symbol, now)

    def _check_algos(self, symbol: str, now_ms: int) -> None:
        if self.algos.open_orders(symbol):
            last, mark = self.prices(symbol)
            self.publish(self.algos.on_price(symbol, last, mark, now_ms))

    async def _fan_out_waiting(self, stream: str, data: bytes, envelope: bytes) -> None:
        # As fast as the clients take it: the slowest subscriber sets the pace.
        for conn in list(self._conns):
            if stream in conn.streams:
                try:
                    await conn.send.send(_frame(conn, stream, data, envelope))
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    self._conns.discard(conn)

    def _fan_out(self, stream: str, data: bytes, envelope: bytes) -> None:
        for conn in list(self._conns):
            if stream not in conn.streams:
                continue
            text = _frame(conn, stream, data, envelope)
            try:
                conn.send.send_nowait(text)
            except trio.WouldBlock:
                # Binance drops clients that cannot keep up; so do we.
                self._log.warning("slow client dropped", queued=self.settings.client_queue)
                self._conns.discard(conn)
                conn.send.close()
            except trio.ClosedResourceError:
                self._conns.discard(conn)

    def _apply_snapshots(self, until_ts: int) -> None:
        while self._snapshots and self._snapshots[0].ts <= until_ts:
            snap = self._snapshots.pop(0)
            book = self._books.get(snap.symbol)
            if book is not None:
                book.on_snapshot(decode_snapshot(snap.body))
                self.engine.on_book_reset(snap.symbol)
                if book.book.synced:
                    self._synced[snap.symbol].set()

    def _apply_depth(self, msg: Any) -> bool:
        """Apply a depth diff to the book; False when a ``gap`` fault swallows it."""
        if msg.first_id < 0:
            return True
        book = self._books.get(msg.symbol)
        if book is not None:
            diff = _DEPTH.decode(msg.data)
            book.on_diff(diff)
            if book.book.synced:
                self._synced[msg.symbol].set()
            if self.engine.has_taken:
                for side, raw in (("bids", diff.bids), ("asks", diff.asks)):
                    # msgspec.Raw is a buffer, not bytes: orjson takes it as a memoryview.
                    prices = (Decimal(p) for p, _q in orjson.loads(memoryview(raw)))
                    self.engine.on_levels_changed(msg.symbol, side, prices)
        if msg.symbol in self._skip_depth:
            self._skip_depth.discard(msg.symbol)
            self._log.warning("fault: depth update skipped", symbol=msg.symbol, u=msg.last_id)
            return False
        return True

    async def _fault_clock(self) -> None:
        await self._started.wait()
        for fault in sorted(self.settings.faults, key=lambda f: f.at_s):
            await trio.sleep_until(self._t0 + fault.at_s)
            self._log.warning("fault injected", kind=fault.kind, at_s=fault.at_s)
            if fault.kind == "stall":
                self._stalled_until = trio.current_time() + fault.arg
            elif fault.kind == "gap":
                self._skip_depth.update(self.recording.symbols)
            elif fault.kind == "garbage":
                for conn in list(self._conns):
                    with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                        conn.send.send_nowait("garbage{{not json")
            elif fault.kind == "drop_user_stream":
                self.drop_user_streams()
            else:
                for conn in list(self._conns):
                    # Abort the TCP stream, no close handshake: what a dead link looks like.
                    await conn.ws._close_stream()
                    self._conns.discard(conn)

    # -- websocket -------------------------------------------------------------------

    async def _on_websocket(self, request: trio_websocket.WebSocketRequest) -> None:
        route = parse_ws_target(request.path)
        if route is None:
            self._log.info(
                "websocket refused", **{"url.path": request.path, "event.reason": "unknown path"}
            )
            await request.reject(404, body=b'{"code":-1,"msg":"unknown path"}')
            return
        if len(route.streams) + len(route.listen_keys) > 1024:
            await request.reject(400, body=b'{"code":-1,"msg":"too many streams"}')
            return
        if any(k != self.api.listen_keys.active for k in route.listen_keys):
            await request.reject(400, body=b'{"code":-1125,"msg":"This listenKey does not exist."}')
            return
        ws = await request.accept()
        self._log.info("websocket connected", **{"url.path": request.path.split("?")[0]})
        conn = _Connection(ws, route.combined, self.settings.client_queue)
        self._subscribe(conn, route.streams)
        conn.streams.update(route.listen_keys)
        conn.user = bool(route.listen_keys)
        self._conns.add(conn)
        self._conn_added.set()
        self._conn_added = trio.Event()
        self.connections += 1
        if self.settings.autoplay:
            self._start()  # playback and the fault clock start with the first client
        try:
            async with trio.open_nursery() as nursery:
                conn.scope = nursery.cancel_scope
                nursery.start_soon(self._sender, conn, nursery.cancel_scope)
                nursery.start_soon(self._reader, conn, nursery.cancel_scope)
                nursery.start_soon(self._pinger, conn, nursery.cancel_scope)
                with trio.move_on_after(self.settings.max_connection_s):
                    await trio.sleep_forever()
                self._log.info("connection lifetime reached; closing")
                nursery.cancel_scope.cancel()
        finally:
            self._conns.discard(conn)
            with contextlib.suppress(Exception):
                if conn.abort:
                    # A dead link: no close handshake (trio-websocket clients also
                    # leak their socket on a server-initiated close handshake).
                    await ws._close_stream()
                else:
                    await ws.aclose()

    async def _sender(self, conn: _Connection, scope: trio.CancelScope) -> None:
        timed = self._timed_conn is None and not conn.user  # only the first connection is timed
        if timed:
            self._timed_conn = conn
        async for text in conn.receive:
            if trio.current_time() < self._stalled_until:
                await trio.sleep_until(self._stalled_until)
            try:
                await conn.ws.send_message(text)
            except trio_websocket.ConnectionClosed:
                break
            conn.sent += 1
            self.sent += 1
            if timed:
                self.send_times.append((conn.sent, trio.current_time()))
        scope.cancel()

    async def _reader(self, conn: _Connection, scope: trio.CancelScope) -> None:
        while True:
            try:
                text = await conn.ws.get_message()
            except trio_websocket.ConnectionClosed:
                break
            reply = self._on_request(conn, text)
            if reply is not None:
                with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                    conn.send.send_nowait(reply)
        scope.cancel()

    def _on_request(self, conn: _Connection, text: str | bytes) -> str | None:
        try:
            req = orjson.loads(text)
            method, ident = req["method"], req.get("id")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return orjson.dumps({"code": 3, "msg": "Invalid JSON"}).decode()
        params = req.get("params") or []
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return orjson.dumps({"code": 2, "msg": "Invalid request: params", "id": ident}).decode()
        keys = [p for p in params if is_listen_key(p)]
        if method == "SUBSCRIBE":
            if any(k != self.api.listen_keys.active for k in keys):
                return orjson.dumps(
                    {"code": -1125, "msg": "This listenKey does not exist.", "id": ident}
                ).decode()
            self._subscribe(conn, [p for p in params if p not in keys])
            conn.streams.update(keys)
            conn.user = conn.user or bool(keys)
            self._conn_added.set()  # wakes wait_user_connections / wait_subscribed
            self._conn_added = trio.Event()
            result: Any = None
        elif method == "UNSUBSCRIBE":
            for name in params:
                canonical = recorded_name(name, self._recorded_streams)
                conn.streams.discard(canonical)
                conn.names.pop(canonical, None)
            result = None
        elif method == "LIST_SUBSCRIPTIONS":
            result = sorted(conn.names.get(s, s) for s in conn.streams)
        else:
            return orjson.dumps(
                {"code": 2, "msg": f"Invalid request: {method}", "id": ident}
            ).decode()
        return orjson.dumps({"result": result, "id": ident}).decode()

    async def _pinger(self, conn: _Connection, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self.settings.ping_interval_s)
            if trio.current_time() < self._stalled_until:
                continue  # a stalled server sends nothing, pings included
            with trio.move_on_after(self.settings.pong_timeout_s) as timeout:
                try:
                    await conn.ws.ping()
                except trio_websocket.ConnectionClosed:
                    break
            if timeout.cancelled_caught:
                self._log.warning("no pong; dropping connection")
                break
        scope.cancel()

    def _subscribe(self, conn: _Connection, names: Iterable[str]) -> None:
        """Add market streams, each served from the recorded stream of its kind."""
        for name in names:
            canonical = recorded_name(name, self._recorded_streams)
            conn.streams.add(canonical)
            conn.names.setdefault(canonical, name)

    # -- REST ------------------------------------------------------------------------

    async def _on_http(self, stream: trio.SocketStream) -> None:
        """One HTTP/1.1 connection: any number of requests (keep-alive), bodies read whole."""
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        peer = _peer(stream)
        with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                    continue
                if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Request):
                    request, body = event, bytearray()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage) and request is not None:
                    if self.settings.autoplay:
                        self._start()  # a REST-only client sees the market move too
                    started = trio.current_time()
                    headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                    method, target = request.method.decode(), request.target.decode()
                    reply = self.api.handle(method, target, bytes(body), headers)
                    await self._send_reply(stream, conn, reply)
                    self._access_log(method, target, reply, started, peer, headers)
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                    request = None

    async def _send_reply(
        self, stream: trio.SocketStream, conn: h11.Connection, reply: HttpReply
    ) -> None:
        if reply.delay_s > 0:
            await trio.sleep(reply.delay_s)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(reply.body)).encode()),
            *((k.encode(), v.encode()) for k, v in reply.headers),
        ]
        reason = _REASONS.get(reply.status, b"")
        response = h11.Response(status_code=reply.status, headers=headers, reason=reason)
        await stream.send_all(conn.send(response))
        await stream.send_all(conn.send(h11.Data(data=reply.body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))

    def _access_log(
        self,
        method: str,
        target: str,
        reply: HttpReply,
        started: float,
        peer: tuple[str, int] | None,
        headers: Mapping[str, str],
    ) -> None:
        """One line per request, ECS field names; the query (signatures) is not logged."""
        fields: dict[str, Any] = {
            "event.dataset": "trireme.sim_exchange.access",
            "http.request.method": method,
            "url.path": target.split("?", 1)[0],
            "http.response.status_code": reply.status,
            "http.response.body.bytes": len(reply.body),
            "event.duration": int((trio.current_time() - started) * 1e9),
        }
        if peer is not None:
            fields["client.address"], fields["client.port"] = peer
        if "user-agent" in headers:
            fields["user_agent.original"] = headers["user-agent"]
        if reply.code:
            fields["error.code"] = str(reply.code)
        self._log.info("http request", **fields)

    def _route(self, path: str, query: Mapping[str, str]) -> tuple[int, bytes]:
        """The public market-data endpoints (weights and limits are the API's)."""
        if path == "/fapi/v1/ping":
            return 200, b"{}"
        if path == "/fapi/v1/time":
            return 200, orjson.dumps({"serverTime": self.exchange_ms()})
        if path == "/fapi/v1/exchangeInfo":
            return 200, orjson.dumps({**self._info, "serverTime": self.exchange_ms()})
        if path in ("/fapi/v1/historicalTrades", "/fapi/v1/trades", "/fapi/v1/aggTrades"):
            return self._trade_history(path.endswith("aggTrades"), query)
        if path == "/fapi/v1/depth":
            return self._depth(query.get("symbol", "").upper(), int(query.get("limit", "500")))
        answer = self._public_api.handle(path, query)
        if answer is not None:
            return answer
        return 404, orjson.dumps({"code": -1, "msg": f"unknown endpoint {path}"})

    def _trade_history(self, aggregated: bool, query: Mapping[str, str]) -> tuple[int, bytes]:
        symbol = query.get("symbol", "").upper()
        if symbol not in self._books:
            return 400, orjson.dumps({"code": -1121, "msg": "Invalid symbol."})
        limit = min(1000, int(query.get("limit", "500")))
        from_id = int(query["fromId"]) if "fromId" in query else None
        played = [
            (trade_id, row)
            for index, trade_id, row, agg in self._trades.get(symbol, [])
            if index < self._index and agg == aggregated
        ]
        if from_id is None:
            rows = [row for _id, row in played[-limit:]]
        else:
            rows = [row for trade_id, row in played if trade_id >= from_id][:limit]
        if self._offset_ms:
            time_key = "T" if aggregated else "time"
            rows = [{**row, time_key: row[time_key] + self._offset_ms} for row in rows]
        return 200, orjson.dumps(rows)

    def _depth(self, symbol: str, limit: int) -> tuple[int, bytes]:
        sync = self._books.get(symbol)
        if sync is None:
            return 400, orjson.dumps({"code": -1121, "msg": "Invalid symbol."})
        book = sync.book
        if not book.synced:
            return 503, orjson.dumps({"code": -1, "msg": "book not available yet in this capture"})
        out: dict[str, Any] = {
            "lastUpdateId": book.last_update_id,
            "E": self.exchange_ms(),
            "T": book.tx_time + self._offset_ms if book.tx_time else 0,
        }
        for side, key in ((Side.BID, "bids"), (Side.ASK, "asks")):
            prices, qtys = book.levels(side, limit)
            out[key] = [[_fmt(p, book), _fmt_qty(q)] for p, q in zip(prices, qtys, strict=True)]
        return 200, orjson.dumps(out)


_DEPTH = msgspec.json.Decoder(DepthUpdate, strict=False)
_REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}


def _peer(stream: trio.SocketStream) -> tuple[str, int] | None:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return None
    return str(address[0]), int(address[1])


def _frame(conn: _Connection, stream: str, data: bytes, envelope: bytes) -> str:
    """What ``conn`` is sent: the event, or the envelope named as the client asked."""
    if not conn.combined:
        return data.decode()
    name = conn.names.get(stream, stream)
    if name == stream:
        return envelope.decode()
    return '{"stream":"' + name + '","data":' + data.decode() + "}"


def _accepted_types(info: dict[str, Any]) -> dict[str, Any]:
    """exchangeInfo with each symbol's ``orderTypes`` set to what this exchange takes."""
    for entry in info.get("symbols", []):
        entry["orderTypes"] = list(ACCEPTED_ORDER_TYPES)
    return info


def _algo_limits(info: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, Decimal]]:
    """Per symbol: ``MAX_NUM_ALGO_ORDERS`` and ``triggerProtect`` from exchangeInfo."""
    max_open: dict[str, int] = {}
    protect: dict[str, Decimal] = {}
    for entry in info.get("symbols", []):
        for f in entry.get("filters", []):
            if f.get("filterType") == "MAX_NUM_ALGO_ORDERS":
                max_open[entry["symbol"]] = int(f.get("limit", 10))
        protect[entry["symbol"]] = Decimal(str(entry.get("triggerProtect", "0")))
    return max_open, protect


def _fmt(price: float, book: Any) -> str:
    grid = book.grid
    decimals = max(0, -Decimal(grid.tick_text()).as_tuple().exponent) if grid else 8
    return f"{price:.{decimals}f}"


def _fmt_qty(qty: float) -> str:
    return format(Decimal(repr(float(qty))), "f")


def _rest_trade(data: bytes) -> tuple[dict[str, Any], int, bool]:
    """A stream trade as the REST endpoint returns it (historicalTrades or aggTrades)."""
    ev = orjson.loads(data)
    if ev["e"] == "aggTrade":
        row = {k: ev[k] for k in ("a", "p", "q", "f", "l", "T", "m") if k in ev}
        return row, int(ev["a"]), True
    quote = Decimal(ev["p"]) * Decimal(ev["q"])
    row = {
        "id": ev["t"],
        "price": ev["p"],
        "qty": ev["q"],
        "quoteQty": format(quote, "f"),
        "time": ev["T"],
        "isBuyerMaker": ev["m"],
    }
    return row, int(ev["t"]), False


def _derived_exchange_info(rec: Recording, limits: LimitSettings) -> bytes:
    """An exchangeInfo for the capture's symbols, shaped like Binance's.

    Tick size from the prices' decimals and step size from the quantities'
    (book ticker and trades); the other filters take BTCUSDT's real values.
    """
    price_decimals: dict[str, int] = {}
    qty_decimals: dict[str, int] = {}
    for msg in rec.messages:
        if msg.stream.endswith(("@bookTicker", "@trade", "@aggTrade")):
            head = orjson.loads(msg.data)
            price, qty = (head["b"], head["B"]) if "b" in head else (head["p"], head["q"])
            if msg.symbol not in price_decimals:
                price_decimals[msg.symbol] = len(price.partition(".")[2])
            qty_decimals[msg.symbol] = max(
                qty_decimals.get(msg.symbol, 0), len(qty.rstrip("0").partition(".")[2])
            )
    symbols = []
    for symbol in rec.symbols:
        d = price_decimals.get(symbol, 2)
        q = qty_decimals.get(symbol, 3)
        tick = f"{10.0**-d:.{d}f}" if d else "1"
        step = f"{10.0**-q:.{q}f}" if q else "1"
        base = symbol.removesuffix("USDT")
        symbols.append(
            {
                "symbol": symbol,
                "pair": symbol,
                "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000,
                "status": "TRADING",
                "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000",
                "baseAsset": base,
                "quoteAsset": "USDT",
                "marginAsset": "USDT",
                "pricePrecision": d,
                "quantityPrecision": q,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "settlePlan": 0,
                "triggerProtect": "0.0500",
                "liquidationFee": "0.012500",
                "marketTakeBound": "0.05",
                "filters": [
                    {
                        "minPrice": tick,
                        "maxPrice": "4529764",
                        "filterType": "PRICE_FILTER",
                        "tickSize": tick,
                    },
                    {"stepSize": step, "filterType": "LOT_SIZE", "maxQty": "1000", "minQty": step},
                    {
                        "stepSize": step,
                        "filterType": "MARKET_LOT_SIZE",
                        "maxQty": "120",
                        "minQty": step,
                    },
                    {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
                    {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
                    {"notional": "100", "filterType": "MIN_NOTIONAL"},
                    {
                        "multiplierDown": "0.9500",
                        "multiplierUp": "1.0500",
                        "multiplierDecimal": "4",
                        "filterType": "PERCENT_PRICE",
                    },
                ],
                "orderTypes": list(ACCEPTED_ORDER_TYPES),
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            }
        )
    return orjson.dumps(
        {
            "timezone": "UTC",
            "serverTime": rec.messages[0].event_time if rec.messages else 0,
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": limits.weight_per_minute,
                },
                {
                    "rateLimitType": "ORDERS",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": limits.orders_per_minute,
                },
                {
                    "rateLimitType": "ORDERS",
                    "interval": "SECOND",
                    "intervalNum": 10,
                    "limit": limits.orders_per_10s,
                },
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": symbols,
        }
    )


def _places(step: Decimal) -> int:
    return max(0, -int(step.normalize().as_tuple().exponent))


def parse_faults(texts: Iterable[str]) -> tuple[Fault, ...]:
    """Parse market-data ``--fault`` arguments."""
    return tuple(Fault.parse(t) for t in texts)


def split_faults(texts: Iterable[str]) -> tuple[tuple[Fault, ...], tuple[RequestFault, ...]]:
    """Parse ``--fault`` arguments of both kinds: (playback faults, request faults).

    ``KIND@SECONDS[:ARG]`` with a number after ``@`` is a playback fault; a
    request-fault kind (``503-executed``, ``429:2*3@GET/fapi/v1/depth``...) is
    a request fault armed from the start.

    Raises:
        ValueError: a text is neither.
    """
    timed: list[Fault] = []
    requests: list[RequestFault] = []
    for text in texts:
        kind, _, rest = text.partition("@")
        base = kind.partition(":")[0].partition("*")[0]
        if base in REQUEST_FAULT_KINDS and not (rest[:1].isdigit() or rest[:1] == "."):
            requests.append(RequestFault.parse(text))
        else:
            timed.append(Fault.parse(text))
    return tuple(timed), tuple(requests)

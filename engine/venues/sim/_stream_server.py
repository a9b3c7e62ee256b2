"""A Binance USD-M compatible loopback market-data server, fed by a capture.

Websocket (trio-websocket): ``/ws/<stream>[/<stream>...]`` sends each event's
recorded bytes; ``/stream?streams=<a>/<b>`` sends the recorded combined-stream
envelopes; both take ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS``
requests as Binance documents them. The server pings every ``ping_interval_s``
(Binance: 3 minutes), drops a connection that does not answer within
``pong_timeout_s`` and closes every connection after ``max_connection_s`` (Binance:
24 hours; scale it down to exercise planned reconnects).

REST (h11 on a second port): ``/fapi/v1/ping``, ``/fapi/v1/historicalTrades`` and
``/fapi/v1/aggTrades`` (the trades played so far, ``fromId``/``limit``),
``/fapi/v1/time`` (the exchange's clock, ``E``, at the playback position),
``/fapi/v1/exchangeInfo`` (recorded when the data has one, else derived from it),
``/fapi/v1/depth`` (the book rebuilt from the capture's snapshot and diffs at the
playback position).

Playback follows the recorded timestamps divided by ``speed`` (0: as fast as the
clients take it), starting when the first client connects. Faults, each once at a
playback offset in seconds: ``drop`` (abort every connection's TCP stream),
``stall:<s>`` (send nothing, pings included, for a while), ``gap`` (skip one depth
update per symbol: a broken ``pu`` chain), ``garbage`` (a non-JSON text frame).
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterable
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
from ._recorded import Recording

_MS = 1_000_000


@attrs.frozen(kw_only=True)
class Fault:
    """One scheduled fault: ``kind`` at ``at_s`` seconds of playback (``arg``: stall length)."""

    kind: str = attrs.field(validator=attrs.validators.in_(("drop", "stall", "gap", "garbage")))
    at_s: float = attrs.field(validator=attrs.validators.ge(0))
    arg: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Fault:
        """``drop@5``, ``stall@10:3``, ``gap@7``, ``garbage@4``.

        Raises:
            ValueError: the text is not of that form.
        """
        kind, _, rest = text.partition("@")
        at, _, arg = rest.partition(":")
        try:
            return cls(kind=kind, at_s=float(at), arg=float(arg) if arg else 0.0)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"bad fault {text!r}: expected drop@S, stall@S:SECONDS, gap@S or garbage@S"
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


class _Connection:
    def __init__(self, ws: trio_websocket.WebSocketConnection, combined: bool, queue: int) -> None:
        self.ws = ws
        self.combined = combined
        self.streams: set[str] = set()
        self.send, self.receive = trio.open_memory_channel[str](queue)
        self.sent = 0


class StreamServer:
    """Serves one recording to any number of websocket and REST clients.

    Args:
        recording: the capture, loaded with :func:`load_recording`.
        settings: pace, pings, connection lifetime and faults.
        log: a bound structlog logger.

    Attributes:
        sent: messages sent, all connections together.
        send_times: ``(n, trio time when handed to the socket)`` for the n-th
            message (1-based) of the first connection, for latency measurements.
    """

    def __init__(
        self, recording: Recording, settings: ServerSettings, log: FilteringBoundLogger
    ) -> None:
        self.recording = recording
        self.settings = settings
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
        self._snapshots = list(recording.snapshots)
        self._weight: list[tuple[float, int]] = []
        self._trades: dict[str, list[tuple[int, int, dict[str, Any], bool]]] = {}
        for index, msg in enumerate(recording.messages):
            if msg.stream.endswith(("@trade", "@aggTrade")):
                row, trade_id, aggregated = _rest_trade(msg.data)
                self._trades.setdefault(msg.symbol, []).append((index, trade_id, row, aggregated))
        self.sent = 0
        self.connections = 0
        self.send_times: list[tuple[int, float]] = []
        self._timed_conn: _Connection | None = None

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
            listeners = await nursery.start(trio.serve_tcp, self._on_http, rest_port)
            nursery.start_soon(self._playback)
            nursery.start_soon(self._fault_clock)
            rest = listeners[0].socket.getsockname()[1]
            self._log.info("sim exchange listening", ws_port=ws_server.port, rest_port=rest)
            task_status.started((ws_server.port, rest))

    @property
    def finished(self) -> trio.Event:
        """Set when the whole capture has been played."""
        return self._finished

    def exchange_ms(self) -> int:
        """The exchange's clock (the events' ``E``) at the playback position, ms."""
        messages = self.recording.messages
        if not messages:
            return 0
        return messages[min(self._index, len(messages) - 1)].event_time

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
            self._apply_depth(msg)
            if msg.first_id >= 0 and msg.symbol in self._skip_depth:
                self._skip_depth.discard(msg.symbol)
                self._log.warning("fault: depth update skipped", symbol=msg.symbol, u=msg.last_id)
                continue
            if speed > 0:
                self._fan_out(msg.stream, msg.data, msg.envelope)
            else:
                await self._fan_out_waiting(msg.stream, msg.data, msg.envelope)
        self._index = len(messages)
        self._finished.set()
        self._log.info("sim exchange: capture played", messages=len(messages), sent=self.sent)

    async def _fan_out_waiting(self, stream: str, data: bytes, envelope: bytes) -> None:
        # As fast as the clients take it: the slowest subscriber sets the pace.
        for conn in list(self._conns):
            if stream in conn.streams:
                try:
                    await conn.send.send((envelope if conn.combined else data).decode())
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    self._conns.discard(conn)

    def _fan_out(self, stream: str, data: bytes, envelope: bytes) -> None:
        for conn in list(self._conns):
            if stream not in conn.streams:
                continue
            text = (envelope if conn.combined else data).decode()
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

    def _apply_depth(self, msg: Any) -> None:
        if msg.first_id < 0:
            return
        book = self._books.get(msg.symbol)
        if book is None:
            return
        diff = _DEPTH.decode(msg.data)
        book.on_diff(diff)

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
            else:
                for conn in list(self._conns):
                    # Abort the TCP stream, no close handshake: what a dead link looks like.
                    await conn.ws._close_stream()
                    self._conns.discard(conn)

    # -- websocket -------------------------------------------------------------------

    async def _on_websocket(self, request: trio_websocket.WebSocketRequest) -> None:
        url = urllib.parse.urlsplit(request.path)
        if url.path.startswith("/ws"):
            combined = False
            streams = [s for s in url.path[len("/ws") :].split("/") if s]
        elif url.path == "/stream":
            combined = True
            query = urllib.parse.parse_qs(url.query)
            streams = [s for s in query.get("streams", [""])[0].split("/") if s]
        else:
            await request.reject(404, body=b'{"code":-1,"msg":"unknown path"}')
            return
        if len(streams) > 1024:
            await request.reject(400, body=b'{"code":-1,"msg":"too many streams"}')
            return
        ws = await request.accept()
        conn = _Connection(ws, combined, self.settings.client_queue)
        conn.streams.update(streams)
        self._conns.add(conn)
        self.connections += 1
        if not self._started.is_set():
            # Playback and the fault clock both start from here.
            self._t0 = trio.current_time()
            self._started.set()
        try:
            async with trio.open_nursery() as nursery:
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
                await ws.aclose()

    async def _sender(self, conn: _Connection, scope: trio.CancelScope) -> None:
        timed = self._timed_conn is None  # only the first connection is timed
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
        if method == "SUBSCRIBE":
            conn.streams.update(params)
            result: Any = None
        elif method == "UNSUBSCRIBE":
            conn.streams.difference_update(params)
            result = None
        elif method == "LIST_SUBSCRIPTIONS":
            result = sorted(conn.streams)
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

    # -- REST ------------------------------------------------------------------------

    async def _on_http(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    status, body = self._route(event.target.decode())
                    headers = [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-mbx-used-weight-1m", str(self._used_weight()).encode()),
                    ]
                    await stream.send_all(
                        conn.send(h11.Response(status_code=status, headers=headers))
                    )
                    await stream.send_all(conn.send(h11.Data(data=body)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                elif isinstance(event, h11.EndOfMessage):
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()

    def _used_weight(self) -> int:
        now = trio.current_time()
        self._weight = [(t, w) for t, w in self._weight if t > now - 60]
        return sum(w for _t, w in self._weight)

    def _route(self, target: str) -> tuple[int, bytes]:
        url = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(url.query))
        now = trio.current_time()
        if url.path == "/fapi/v1/ping":
            self._weight.append((now, 1))
            return 200, b"{}"
        if url.path == "/fapi/v1/time":
            self._weight.append((now, 1))
            return 200, orjson.dumps({"serverTime": self.exchange_ms()})
        if url.path == "/fapi/v1/exchangeInfo":
            self._weight.append((now, 1))
            return 200, self.recording.exchange_info or _derived_exchange_info(self.recording)
        if url.path in ("/fapi/v1/historicalTrades", "/fapi/v1/aggTrades"):
            self._weight.append((now, 20))
            return self._trade_history(url.path.endswith("aggTrades"), query)
        if url.path == "/fapi/v1/depth":
            limit = int(query.get("limit", "500"))
            self._weight.append(
                (now, 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20)
            )
            return self._depth(query.get("symbol", "").upper(), limit)
        return 404, orjson.dumps({"code": -1, "msg": f"unknown endpoint {url.path}"})

    def _trade_history(self, aggregated: bool, query: dict[str, str]) -> tuple[int, bytes]:
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
            "T": book.tx_time,
        }
        for side, key in ((Side.BID, "bids"), (Side.ASK, "asks")):
            prices, qtys = book.levels(side, limit)
            out[key] = [[_fmt(p, book), _fmt_qty(q)] for p, q in zip(prices, qtys, strict=True)]
        return 200, orjson.dumps(out)


_DEPTH = msgspec.json.Decoder(DepthUpdate, strict=False)


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


def _derived_exchange_info(rec: Recording) -> bytes:
    """A minimal exchangeInfo for the capture's symbols (tick size from price decimals)."""
    decimals: dict[str, int] = {}
    for msg in rec.messages:
        if msg.stream.endswith("@bookTicker") and msg.symbol not in decimals:
            head = orjson.loads(msg.data)
            decimals[msg.symbol] = len(head["b"].partition(".")[2])
    symbols = []
    for symbol in rec.symbols:
        d = decimals.get(symbol, 2)
        symbols.append(
            {
                "symbol": symbol,
                "status": "TRADING",
                "contractType": "PERPETUAL",
                "baseAsset": symbol.removesuffix("USDT"),
                "quoteAsset": "USDT",
                "pricePrecision": d,
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": f"{10.0**-d:.{d}f}"},
                    {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001"},
                    {"filterType": "MIN_NOTIONAL", "notional": "5"},
                ],
            }
        )
    return orjson.dumps({"timezone": "UTC", "serverTime": 0, "rateLimits": [], "symbols": symbols})


def parse_faults(texts: Iterable[str]) -> tuple[Fault, ...]:
    """Parse ``--fault`` arguments."""
    return tuple(Fault.parse(t) for t in texts)

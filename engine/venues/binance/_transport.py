"""The order transport seam: how a signed request reaches Binance.

:class:`BinanceRestClient` builds and signs the query string itself and hands
``(method, target, headers)`` to an :class:`OrderTransport`, so every transport
sends exactly the same bytes of query. Two implementations:

* :class:`HttpxTransport`: the shared ``httpx.AsyncClient`` (keep-alive pool,
  HTTP/1.1, TLS); general purpose, about 0.8 ms of client CPU per request here.
* :class:`LeanTransport`: h11 on persistent ``trio.SocketStream`` connections, a
  small pool with one request in flight per connection. The request head is
  written from bytes prepared once per (method, path); per order only the signed
  query (the :class:`PreparedOrder` parameters plus ``timestamp`` and
  ``signature``) is joined in. h11 parses the answers. A connection the server
  closed while idle is noticed before it is reused and replaced. On plain TCP a
  request can also be written synchronously, in the caller's task
  (:meth:`LeanTransport.write_now`, then :meth:`LeanTransport.finish` for the
  answer): the live venue writes an order that way inside ``submit``.

Both raise only two errors, chosen here once:

* :class:`ServiceUnavailableError`: the connection could not be opened; nothing
  was sent, so resending is safe;
* :class:`UnknownOrderStateError`: the request was (or may have been) written
  and the connection then failed; the request may have been executed.

Neither applies a deadline: the client wraps each call in ``trio.fail_after``.
On cancellation (that deadline included) a lean connection with a request in
flight is closed, never reused, so a late answer cannot be read as the next
request's.
"""

from __future__ import annotations

import os
import select
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Protocol

import attrs
import h11
import httpx
import trio

from ._errors import ServiceUnavailableError, UnknownOrderStateError

_RECEIVE = 65536


@attrs.frozen(kw_only=True)
class RawResponse:
    """An HTTP answer as the client needs it.

    Attributes:
        status: the HTTP status code.
        headers: the response headers (lookups by the names Binance sends, or lowercase).
        body: the raw body.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes


class OrderTransport(Protocol):
    """Sends one signed request and returns its answer.

    ``target`` is the path and query (``/fapi/v1/order?symbol=...&signature=...``),
    sent byte for byte. ``on_written``, when set, is called as soon as a request
    is handed to the socket (benchmarks measure decision-to-wire with it); the
    ``written`` argument of :meth:`request` is the same hook for one request (the
    venue times each order with it).
    """

    on_written: Callable[[], None] | None

    async def request(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str] | None,
        *,
        written: Callable[[], None] | None = None,
    ) -> RawResponse: ...

    async def aclose(self) -> None: ...


class HttpxTransport:
    """An :class:`OrderTransport` on a shared ``httpx.AsyncClient``.

    Args:
        http: the client (its pool, limits and TLS settings); not closed here.
        base_url: the REST root, for example ``https://fapi.binance.com``.
    """

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self.on_written: Callable[[], None] | None = None

    async def request(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str] | None,
        *,
        written: Callable[[], None] | None = None,
    ) -> RawResponse:
        """Send through httpx; see :class:`OrderTransport`.

        Raises:
            ServiceUnavailableError: could not connect (nothing sent).
            UnknownOrderStateError: the exchange failed after the connection was made.
        """
        what = f"{method} {target.partition('?')[0]}"
        extensions = None
        hooks = [h for h in (self.on_written, written) if h is not None]
        if hooks:

            async def trace(name: str, info: object) -> None:
                # httpcore's trace hook: the request body (empty here) is on the wire.
                if name == "http11.send_request_body.complete":
                    for hook in hooks:
                        hook()

            extensions = {"trace": trace}
        try:
            response = await self._http.request(
                method, self._base + target, headers=headers, extensions=extensions
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServiceUnavailableError(f"{what}: cannot connect: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise UnknownOrderStateError(f"{what}: transport failed: {exc!r}") from exc
        return RawResponse(
            status=response.status_code, headers=response.headers, body=response.content
        )

    async def aclose(self) -> None:
        """Nothing to do: the shared client belongs to its owner."""


class InFlight:
    """A request :meth:`LeanTransport.write_now` wrote (or began to write).

    Attributes:
        conn: the connection it went out on (checked out of the pool).
        method: the request's method (h11 is told of the request by
            :meth:`LeanTransport.finish`, off the path to the wire).
        target: the request's path and query.
        written: the request's own write hook.
        rest: bytes the socket did not take at once (:meth:`LeanTransport.finish`
            writes them).
    """

    __slots__ = ("conn", "method", "rest", "target", "written")

    def __init__(
        self, conn: _Connection, method: str, target: str, written: Callable[[], None] | None
    ) -> None:
        self.conn = conn
        self.method = method
        self.target = target
        self.written = written
        self.rest = b""

    @property
    def what(self) -> str:
        """``"METHOD /path"`` for error messages (made by :meth:`LeanTransport.finish`)."""
        return f"{self.method} {self.target.partition('?')[0]}"


class _Connection:
    __slots__ = ("fileno", "h11", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        raw = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        assert isinstance(raw, trio.SocketStream)
        self.fileno = raw.socket.fileno()
        self.h11 = h11.Connection(h11.CLIENT)

    def is_stale(self) -> bool:
        """True when the idle socket is readable: the peer closed it (or sent garbage)."""
        try:
            readable, _, _ = select.select([self.fileno], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class LeanTransport:
    """An :class:`OrderTransport` speaking HTTP/1.1 with h11 on raw Trio sockets.

    Args:
        base_url: ``http://host:port`` (the loopback exchange) or ``https://...``.
        pool_size: connections kept open; one request in flight on each, so at
            most ``pool_size`` requests run at once (the others wait their turn).
        connect_timeout_s: the deadline for opening one connection.

    Keep-alive: a connection is returned to the pool after a complete answer
    unless either side asked to close it. A pooled connection found closed by the
    server is replaced before the request is written, so an idle cut never turns
    an order UNKNOWN.
    """

    def __init__(
        self, base_url: str, *, pool_size: int = 4, connect_timeout_s: float = 5.0
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme in {base_url!r}")
        self._secure = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._secure else 80)
        self._prefix = parts.path.rstrip("/").encode()
        host_header = self._host if parts.port is None else f"{self._host}:{self._port}"
        # Everything after the request line that never changes.
        self._tail = (
            f"host: {host_header}\r\ncontent-length: 0\r\nuser-agent: trireme-lean\r\n".encode()
        )
        self._idle: list[_Connection] = []
        self._limit = trio.CapacityLimiter(pool_size)
        self._connect_timeout_s = connect_timeout_s
        self._stubs: dict[str, h11.Request] = {}
        self._header_cache: dict[tuple[tuple[str, str], ...], bytes] = {}
        self._closed = False
        self.on_written: Callable[[], None] | None = None
        self.connections_opened = 0
        """Connections opened so far (reconnects included), for metrics and tests."""

    def _stub(self, method: str) -> h11.Request:
        # h11 must know a request of this method went out to parse its answer
        # (a HEAD answer has no body); the bytes it would write are not used.
        stub = self._stubs.get(method)
        if stub is None:
            stub = h11.Request(
                method=method, target="/", headers=[("host", self._host), ("content-length", "0")]
            )
            self._stubs[method] = stub
        return stub

    def _headers(self, headers: Mapping[str, str] | None) -> bytes:
        if not headers:
            return b""
        key = tuple(headers.items())
        raw = self._header_cache.get(key)
        if raw is None:
            raw = b"".join(f"{k}: {v}\r\n".encode() for k, v in key)
            self._header_cache = {key: raw}  # one key set in use; never grows
        return raw

    async def _connect(self, what: str) -> _Connection:
        try:
            with trio.fail_after(self._connect_timeout_s):
                if self._secure:
                    stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                        self._host, self._port, https_compatible=True
                    )
                else:
                    stream = await trio.open_tcp_stream(self._host, self._port)
        except (OSError, trio.TooSlowError) as exc:
            raise ServiceUnavailableError(f"{what}: cannot connect: {exc!r}") from exc
        self.connections_opened += 1
        return _Connection(stream)

    async def _checkout(self, what: str) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_stale():
                return conn
            await trio.aclose_forcefully(conn.stream)
        return await self._connect(what)

    async def request(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str] | None,
        *,
        written: Callable[[], None] | None = None,
    ) -> RawResponse:
        """Send one request on a pooled connection; see :class:`OrderTransport`.

        Raises:
            ServiceUnavailableError: no connection could be opened (nothing sent).
            UnknownOrderStateError: the connection failed after (part of) the
                request was written, or the answer was not valid HTTP.
        """
        what = f"{method} {target.partition('?')[0]}"
        if self._closed:
            raise ServiceUnavailableError(f"{what}: transport closed")
        async with self._limit:
            conn = await self._checkout(what)
            done = False
            try:
                data = self._request_bytes(method, target, headers)
                try:
                    await conn.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise UnknownOrderStateError(
                        f"{what}: connection lost while sending: {exc!r}"
                    ) from exc
                self._written(written)
                self._sent(conn, method)
                response = await self._read_answer(conn, what)
                done = True
            finally:
                await self._check_in(conn, done)
            return response

    async def warm_up(self, connections: int = 1) -> None:
        """Open up to ``connections`` idle connections now (a failure is left for later).

        So that the first order need not connect first (and can be written
        inline: :meth:`write_now` needs an idle connection).
        """
        while len(self._idle) < connections and not self._closed:
            try:
                self._idle.append(await self._connect("warm-up"))
            except ServiceUnavailableError:
                return

    def can_write_now(self) -> bool:
        """Whether :meth:`write_now` may find an idle plain-TCP connection and a free slot."""
        return (
            not self._closed
            and not self._secure
            and bool(self._idle)
            and self._limit.available_tokens > 0
        )

    def write_now(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str] | None,
        *,
        written: Callable[[], None] | None = None,
    ) -> InFlight | None:
        """Write a request at once, in the caller's task and without a checkpoint.

        Only on a plain-TCP connection that is idle in the pool and free of a
        request slot; the socket takes the request whole (a few hundred bytes
        into an empty send buffer) or the rest is written by :meth:`finish`.
        ``None`` when that cannot be done with nothing sent (TLS, no idle
        connection, all slots taken, the socket refused it): the caller uses
        :meth:`request`. Hooks run as soon as the last byte is written.

        Returns:
            The request in flight: pass it to :meth:`finish` for the answer.
        """
        if self._closed or self._secure or not self._idle:
            return None
        conn = self._idle[-1]
        if conn.is_stale():
            return None  # :meth:`request` replaces it
        flight = InFlight(conn, method, target, written)
        try:
            self._limit.acquire_on_behalf_of_nowait(flight)
        except trio.WouldBlock:
            return None
        self._idle.pop()
        data = self._request_bytes(method, target, headers)
        try:
            sent = os.write(conn.fileno, data)
        except OSError:
            # Nothing of it was written: this connection is done; the caller sends anew.
            conn.stream.socket.close()  # type: ignore[attr-defined]
            self._limit.release_on_behalf_of(flight)
            return None
        if sent < len(data):
            flight.rest = data[sent:]
        else:
            self._written(written)
        # h11 learns of the request in :meth:`finish` (the answer's task), not here:
        # this runs in the caller's step, which the next frame waits on.
        return flight

    async def finish(self, flight: InFlight) -> RawResponse:
        """The answer to a request :meth:`write_now` wrote; raises as :meth:`request`.

        On cancellation the connection is closed, never reused.
        """
        conn, what = flight.conn, flight.what
        done = False
        try:
            self._sent(conn, flight.method)
            if flight.rest:
                try:
                    await conn.stream.send_all(flight.rest)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise UnknownOrderStateError(
                        f"{what}: connection lost while sending: {exc!r}"
                    ) from exc
                self._written(flight.written)
            response = await self._read_answer(conn, what)
            done = True
        finally:
            self._limit.release_on_behalf_of(flight)
            await self._check_in(conn, done)
        return response

    def _written(self, written: Callable[[], None] | None) -> None:
        if self.on_written is not None:
            self.on_written()
        if written is not None:
            written()

    async def _check_in(self, conn: _Connection, done: bool) -> None:
        if done and conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            self._idle.append(conn)
        else:
            # Cancelled, failed, or the server asked to close: never reuse.
            await trio.aclose_forcefully(conn.stream)

    def _sent(self, conn: _Connection, method: str) -> None:
        # h11 must know a request went out before it parses the answer; done after
        # the write, off the path to the wire (it costs more than the write).
        conn.h11.send(self._stub(method))
        conn.h11.send(h11.EndOfMessage())

    def _request_bytes(self, method: str, target: str, headers: Mapping[str, str] | None) -> bytes:
        return b"".join(
            (
                method.encode(),
                b" ",
                self._prefix,
                target.encode(),
                b" HTTP/1.1\r\n",
                self._tail,
                self._headers(headers),
                b"\r\n",
            )
        )

    async def _read_answer(self, conn: _Connection, what: str) -> RawResponse:
        status = 0
        response_headers: dict[str, str] = {}
        body: list[bytes] = []
        try:
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    chunk = await conn.stream.receive_some(_RECEIVE)
                    conn.h11.receive_data(chunk)
                    continue
                kind = type(event)
                if kind is h11.Response:
                    status = event.status_code  # type: ignore[union-attr]
                    response_headers = {
                        k.decode(): v.decode("latin-1")
                        for k, v in event.headers  # type: ignore[union-attr]
                    }
                elif kind is h11.Data:
                    body.append(bytes(event.data))  # type: ignore[union-attr]
                elif kind is h11.EndOfMessage:
                    break
                elif kind is h11.ConnectionClosed:
                    raise UnknownOrderStateError(f"{what}: connection closed before the answer")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise UnknownOrderStateError(f"{what}: connection lost: {exc!r}") from exc
        except h11.RemoteProtocolError as exc:
            raise UnknownOrderStateError(f"{what}: bad HTTP answer: {exc!r}") from exc
        return RawResponse(status=status, headers=response_headers, body=b"".join(body))

    async def aclose(self) -> None:
        """Close every pooled connection; later requests fail with ServiceUnavailableError."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)

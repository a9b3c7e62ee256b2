"""A small HTTP/1.1 server on Trio and h11, for ``/metrics`` and the status API.

The protocol is h11's (bytes in, events out, no I/O); this module only moves
bytes between a Trio stream and the :class:`h11.Connection` and dispatches each
request to a handler by ``(path, method)``. Connections are kept alive (Prometheus
reuses its connection between scrapes); a connection idle for ``_IDLE_S``, a
request larger than ``_MAX_BODY`` or one h11 refuses ends it (400/413 where a
reply can still be sent). Handlers run in the Trio thread, so they read the
engine's state without locks.
"""

from __future__ import annotations

import contextlib
import functools
import http
from collections.abc import Awaitable, Callable, Mapping

import attrs
import h11
import orjson
import trio
from structlog.typing import FilteringBoundLogger

_IDLE_S = 60.0
_MAX_BODY = 64 * 1024
_MAX_HEADERS = 16 * 1024
_READ = 16 * 1024
_SERVER = "trireme"


@attrs.frozen(kw_only=True)
class Request:
    """One request: method, path (without the query), lower-cased headers, body."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@attrs.frozen(kw_only=True)
class Response:
    """One answer; ``headers`` are added to the content type and length."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Response]]
Routes = Mapping[str, Mapping[str, Handler]]
"""``{path: {method: handler}}``."""


def error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """A JSON error answer: ``{"ok": false, "error": message}``."""
    body = b'{"ok":false,"error":' + _json_string(message) + b"}"
    return Response(status=status, body=body, headers=headers)


def _json_string(text: str) -> bytes:
    return orjson.dumps(text)


async def listen(host: str, port: int) -> list[trio.SocketListener]:
    """Bind ``host:port`` (port 0: any free port) and return the listeners.

    Raises:
        OSError: the address cannot be bound (in use, not local, no permission).
    """
    return await trio.open_tcp_listeners(port, host=host)


def bound_port(listeners: list[trio.SocketListener]) -> int:
    """The port the first listener is bound to."""
    return int(listeners[0].socket.getsockname()[1])


async def serve_http(
    listeners: list[trio.SocketListener], routes: Routes, log: FilteringBoundLogger
) -> None:
    """Serve ``routes`` on ``listeners`` until cancelled; on cancellation the listeners
    and every open connection are closed."""
    await trio.serve_listeners(
        functools.partial(_serve_connection, routes=routes, log=log), listeners
    )


async def _serve_connection(
    stream: trio.abc.Stream, *, routes: Routes, log: FilteringBoundLogger
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADERS)
    async with stream:
        while True:
            try:
                request = None  # stays None when the connection goes idle
                with trio.move_on_after(_IDLE_S):
                    request = await _read_request(stream, conn)
                if request is None:
                    return
                response = await _dispatch(request, routes, log)
            except h11.RemoteProtocolError as exc:
                if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                    return
                response = error(exc.error_status_hint, f"bad request: {exc}")
                await _send(stream, conn, response, close=True)
                return
            except _TooLargeError:
                await _send(stream, conn, error(413, f"body over {_MAX_BODY} bytes"), close=True)
                return
            await _send(stream, conn, response, close=False)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return  # the client has not finished its request body: do not guess


class _TooLargeError(Exception):
    pass


async def _read_request(stream: trio.abc.Stream, conn: h11.Connection) -> Request | None:
    """The next complete request, or None when the peer closed (or went idle)."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(_READ)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data and head is None and conn.their_state is h11.IDLE:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_BODY:
                raise _TooLargeError
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            target = head.target.decode("ascii", "replace")
            return Request(
                method=head.method.decode("ascii", "replace").upper(),
                path=target.split("?", 1)[0],
                headers={k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers},
                body=bytes(body),
            )
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _dispatch(request: Request, routes: Routes, log: FilteringBoundLogger) -> Response:
    methods = routes.get(request.path)
    if methods is None:
        return error(404, f"no such path {request.path!r}; see {', '.join(sorted(routes))}")
    handler = methods.get(request.method)
    if handler is None:
        allow = ", ".join(sorted(methods))
        return error(405, f"{request.method} not allowed; use {allow}", (("allow", allow),))
    try:
        return await handler(request)
    except Exception as exc:  # one bad request must not end the server
        log.error("http handler failed", path=request.path, error=repr(exc), exc_info=True)
        return error(500, f"internal error: {type(exc).__name__}")


async def _send(
    stream: trio.abc.Stream, conn: h11.Connection, response: Response, *, close: bool
) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("server", _SERVER),
        *response.headers,
    ]
    if close:
        headers.append(("connection", "close"))
    reason = http.HTTPStatus(response.status).phrase
    data = b"".join(
        conn.send(event) or b""
        for event in (
            h11.Response(status_code=response.status, headers=headers, reason=reason),
            h11.Data(data=response.body),
            h11.EndOfMessage(),
        )
    )
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)  # a client that hung up misses only its own answer

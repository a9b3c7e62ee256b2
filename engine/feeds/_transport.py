"""Websocket transports for the live feed, behind one seam.

``open_transport(kind, url)`` yields an object with ``await get_message()`` (a
text or bytes message) and ``closed``; either implementation raises only
:class:`TransportClosedError` (the peer or the network ended the connection) and
:class:`TransportConnectError` (the connection or handshake failed).

- ``trio-websocket``: the library, with its own reader task and message queue.
- ``wsproto``: wsproto's handshake and send side on a Trio stream, with a frame
  parser of its own for what the server sends (no extra task or queue; see
  :class:`_Wsproto`). It answers pings, reassembles fragmented messages and
  completes the close handshake. It also offers ``get_messages()`` (every
  message one socket read completed, in one call: the live feed decodes them in
  one pass), ``pending`` and ``get_message_nowait()``, so a reader takes what one
  socket read brought without a checkpoint per message.

The wsproto transport stamps each read with the kernel's receive time of its bytes
(``received_ns``; see :class:`_RxStampedStream`), on ``time.time_ns``'s clock, where
the kernel gives one; else with the time the read returned, and counts that.
"""

from __future__ import annotations

import collections
import contextlib
import platform
import socket
import ssl
import struct
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Protocol

import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request
from wsproto.utilities import LocalProtocolError

from .._errors import EngineError

_RECEIVE = 65536
# Linux's SO_TIMESTAMPNS (its control message, SCM_TIMESTAMPNS, has the same number),
# which Python's socket module does not name: 35 on the 64-bit machines below (the
# generic socket numbers; a 64-bit timespec). Elsewhere 0: the post-read stamp.
_SO_TIMESTAMPNS = (
    35
    if sys.platform == "linux"
    and platform.machine() in ("x86_64", "aarch64", "arm64", "riscv64", "ppc64le")
    else 0
)
_TIMESPEC = struct.Struct("@qq")  # struct timespec on a 64-bit Linux: tv_sec, tv_nsec
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)


class TransportError(EngineError):
    """A websocket transport failed."""


class TransportConnectError(TransportError):
    """The TCP connection or the websocket handshake failed."""


class TransportClosedError(TransportError):
    """The connection ended (close frame, reset, or end of stream)."""


class MessageStream(Protocol):
    """What the live feed reads from.

    A stream may also offer ``received_ns``: the ``time.time_ns`` at which the
    bytes of the message last returned were read off the socket (the wsproto
    one does); the feed stamps messages with it, else with the time it takes
    each message. And ``await get_messages()``: every message one read completed
    (at least one), which the feed takes in one pass.
    """

    async def get_message(self) -> str | bytes: ...


@contextlib.asynccontextmanager
async def open_transport(
    kind: str, url: str, *, rx_stamp: bool = True
) -> AsyncIterator[MessageStream]:
    """Connect to ``url`` with the named transport (``trio-websocket`` or ``wsproto``).

    ``rx_stamp`` (wsproto): stamp reads with the kernel's receive time (see
    :class:`_RxStampedStream`); False: with the time each read returned.

    Raises:
        TransportConnectError: the connection or handshake failed.
        ValueError: an unknown transport name.
    """
    if kind == "wsproto":
        async with _open_wsproto(url, rx_stamp=rx_stamp) as conn:
            yield conn
    elif kind == "trio-websocket":
        async with _open_trio_websocket(url) as conn:
            yield conn
    else:
        raise ValueError(f"unknown websocket transport {kind!r}")


class _TrioWebsocket:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    async def get_message(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise TransportClosedError(f"closed: {exc.reason}") from exc


@contextlib.asynccontextmanager
async def _open_trio_websocket(url: str) -> AsyncIterator[MessageStream]:
    try:
        cm = trio_websocket.open_websocket_url(url, message_queue_size=4096)
        ws = await cm.__aenter__()
    except (trio_websocket.HandshakeError, OSError) as exc:
        raise TransportConnectError(f"{url}: {exc!r}") from exc
    try:
        yield _TrioWebsocket(ws)
    finally:
        try:
            await cm.__aexit__(None, None, None)
        finally:
            if ws.closed is not None:
                # trio-websocket 0.12: after the peer aborted the TCP stream,
                # aclose() returns early and never closes our socket.
                await trio.aclose_forcefully(ws._stream)


def rx_stamp(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The kernel's receive time (ns, ``time.time_ns``'s clock) in a ``recvmsg``'s
    control messages, ``SO_TIMESTAMPNS``'s; 0 where there is none."""
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
            sec, nsec = _TIMESPEC.unpack_from(payload)
            return int(sec * 1_000_000_000 + nsec)
    return 0


class _RxStampedStream(trio.abc.HalfCloseableStream):
    """A TCP stream whose reads carry the kernel's receive time of their bytes.

    ``SO_TIMESTAMPNS`` is set on the socket and each read is a ``recvmsg`` with room
    for its control message: ``rx_ns`` is then the time (CLOCK_REALTIME, the clock of
    ``time.time_ns``) at which the kernel received the bytes the read returned, before
    the wake-up, the event loop's round and the read itself. On a TCP stream the
    kernel gives one stamp per read, the latest segment's: when one read holds bytes
    of several segments, those of the earlier ones had arrived before it (their time
    from the stamp is understated by at most the read's spread). ``rx_ns`` is 0 after
    a read that brought no stamp (the option refused or off).
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket
        self.rx_ns = 0

    @classmethod
    def wrap(cls, stream: trio.SocketStream) -> _RxStampedStream | None:
        """``stream`` with its option set, or None where the kernel refuses it."""
        if not _SO_TIMESTAMPNS:
            return None
        try:
            stream.socket.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            return None
        return cls(stream)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            data, ancillary, _flags, _addr = await self.socket.recvmsg(
                max_bytes or _RECEIVE, _ANCILLARY
            )
        except OSError as exc:
            if self.socket.fileno() < 0:
                raise trio.ClosedResourceError("this socket was already closed") from None
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        self.rx_ns = rx_stamp(ancillary)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _Wsproto:
    """A websocket client: wsproto for the handshake and every frame it sends, its own
    parser for the frames it receives.

    The server's frames are read straight off the buffer: a server's frames are never
    masked and no extension is negotiated, so a frame is a 2-10 byte header and its
    payload, and parsing one in a few slices costs a fraction of wsproto's general
    parser (measured: the feed's ingestion roughly doubled). Payloads are sliced
    out of the read's own ``bytes`` (one copy each; a text payload decoded from its
    slice), and only an incomplete frame at the end of a read is kept, not parsed
    again until the bytes its header asks for have come. It reassembles
    fragmented messages, answers pings (through wsproto's send side), completes the
    close handshake, and fails the connection (``TransportClosedError``) on what RFC
    6455 says a client must: a masked frame, reserved bits or opcodes, an oversized
    or fragmented control frame, a continuation out of place, text that is not UTF-8.

    Each read is stamped: ``read_ns``, the ``time.time_ns`` after it returned, and
    ``received_ns``, the kernel's receive time of its bytes where ``rx`` (the
    :class:`_RxStampedStream` under the stream, TLS or not) gave one, else
    ``read_ns``; ``rx_stamp_fallbacks`` counts the reads stamped so (``reads`` all).
    """

    def __init__(
        self, stream: trio.abc.Stream, ws: WSConnection, rx: _RxStampedStream | None = None
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._rx = rx
        self._buffer = bytearray()  # the start of a frame not yet complete
        self._need = 0  # ... and how many bytes it needs before it is parsed again
        self._pending: collections.deque[str | bytes] = collections.deque()
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._replies: list[bytes] = []
        self.closed = False
        self.received_ns = 0
        self.read_ns = 0
        self.reads = 0
        self.rx_stamp_fallbacks = 0

    @property
    def pending(self) -> int:
        """Messages already read off the socket and not yet returned."""
        return len(self._pending)

    def get_message_nowait(self) -> str | bytes | None:
        """The next message already read off the socket, or None (never reads)."""
        return self._pending.popleft() if self._pending else None

    async def get_message(self) -> str | bytes:
        while not self._pending:
            await self._read()
        return self._pending.popleft()

    async def get_messages(self) -> list[str | bytes]:
        """Every message read off the socket and not yet returned (at least one),
        in order: what one socket read completed, unless some were waiting."""
        pending = self._pending
        while not pending:
            await self._read()
        out = list(pending)
        pending.clear()
        return out

    async def _read(self) -> None:
        if self.closed:
            raise TransportClosedError("closed")
        try:
            data = await self._stream.receive_some(_RECEIVE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.closed = True
            raise TransportClosedError(f"connection lost: {exc!r}") from exc
        if not data:
            self.closed = True
            raise TransportClosedError("connection lost: end of stream")
        self.read_ns = now = time.time_ns()
        self.reads += 1
        rx = self._rx
        if rx is not None and rx.rx_ns:
            self.received_ns = rx.rx_ns
        else:
            self.received_ns = now
            self.rx_stamp_fallbacks += 1
        await self._receive(data)

    async def _receive(self, data: bytes | bytearray) -> None:
        """Parse what arrived; send the answers (pong, close) it calls for."""
        self._parse(data)
        if not self._replies:
            return
        replies, self._replies = self._replies, []
        for reply in replies:
            with contextlib.suppress(TransportClosedError):
                await self._send_bytes(reply)

    def _parse(self, data: bytes | bytearray) -> None:
        # Frames are sliced out of the read itself (``bytes``): each payload is
        # copied once. Only an incomplete frame at the end is kept, and it is not
        # parsed again until the bytes it needs have come.
        if self._buffer:
            buf = self._buffer
            buf += data
            if len(buf) < self._need:
                return
            data = bytes(buf)
            self._buffer = bytearray()
        pos = 0
        end = len(data)
        need = 0
        pending = self._pending
        while not self.closed:
            if end - pos < 2:
                need = 2
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            size = b1 & 0x7F
            head = 2
            if size == 126:
                if end - pos < 4:
                    need = 4
                    break
                size = (data[pos + 2] << 8) | data[pos + 3]
                head = 4
            elif size == 127:
                if end - pos < 10:
                    need = 10
                    break
                size = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            start = pos + head
            stop = start + size
            if stop > end:
                need = head + size
                break
            pos = stop
            if b1 & 0x80 or b0 & 0x70:
                self._fail(1002, "masked frame or reserved bits from the server")
                break
            if b0 == 0x81 and not self._fragment_opcode:  # a whole text message
                try:
                    pending.append(data[start:stop].decode())
                except UnicodeDecodeError:
                    self._fail(1007, "text message is not UTF-8")
                    break
                continue
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            payload = bytes(data[start:stop])
            if opcode == 2 and fin and not self._fragment_opcode:
                pending.append(payload)
            elif opcode >= 8:
                self._control(opcode, fin, payload)
            else:
                self._fragment(opcode, fin, payload)
        if pos < end and not self.closed:
            self._buffer = bytearray(data[pos:])
            self._need = need

    def _fragment(self, opcode: int, fin: int, payload: bytes) -> None:
        if opcode in (1, 2) and not self._fragment_opcode:
            self._fragment_opcode = opcode
        elif opcode != 0 or not self._fragment_opcode:
            self._fail(1002, f"unexpected frame opcode {opcode}")
            return
        self._fragments.append(payload)
        if not fin:
            return
        message = b"".join(self._fragments)
        kind, self._fragment_opcode, self._fragments = self._fragment_opcode, 0, []
        if kind == 2:
            self._pending.append(message)
            return
        try:
            self._pending.append(message.decode())
        except UnicodeDecodeError:
            self._fail(1007, "text message is not UTF-8")

    def _control(self, opcode: int, fin: int, payload: bytes) -> None:
        if not fin or len(payload) > 125 or opcode not in (8, 9, 10):
            self._fail(1002, f"bad control frame (opcode {opcode})")
        elif opcode == 9:
            self._replies.append(self._ws.send(Ping(payload).response()))
        elif opcode == 8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._close(code if code != 1005 else 1000, "")
        # opcode 10: an unsolicited pong, ignored

    def _fail(self, code: int, reason: str) -> None:
        self._close(code, reason)

    def _close(self, code: int, reason: str) -> None:
        """Answer or start the close handshake; nothing more is parsed."""
        with contextlib.suppress(LocalProtocolError):
            self._replies.append(self._ws.send(CloseConnection(code=code, reason=reason)))
        self.closed = True

    async def _send_bytes(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.closed = True
            raise TransportClosedError(f"connection lost: {exc!r}") from exc

    async def _send(self, event: object) -> None:
        await self._send_bytes(self._ws.send(event))

    async def aclose(self) -> None:
        """Send a close frame (best effort, 1 s), then close the stream in any case."""
        try:
            if not self.closed:
                with trio.move_on_after(1):
                    await self._send(CloseConnection(code=1000))
        except (TransportClosedError, LocalProtocolError):
            pass
        finally:
            # Also when cancelled: the socket must not outlive the connection.
            self.closed = True
            await trio.aclose_forcefully(self._stream)


@contextlib.asynccontextmanager
async def _open_wsproto(url: str, *, rx_stamp: bool = True) -> AsyncIterator[MessageStream]:
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if secure else 80)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        tcp = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise TransportConnectError(f"{url}: {exc!r}") from exc
    rx = _RxStampedStream.wrap(tcp) if rx_stamp else None
    raw: trio.abc.Stream = rx if rx is not None else tcp
    stream: trio.abc.Stream = raw
    if secure:
        # As trio.open_ssl_over_tcp_stream, over the stamped stream.
        stream = trio.SSLStream(
            raw, ssl.create_default_context(), server_hostname=host, https_compatible=False
        )
    ws = WSConnection(ConnectionType.CLIENT)
    conn = _Wsproto(stream, ws, rx)
    try:
        with trio.fail_after(10):
            await stream.send_all(ws.send(Request(host=host, target=target or "/")))
            # wsproto gets the response's head only; frames that came in the same read
            # go to the connection's own parser.
            head = bytearray()
            while (cut := head.find(b"\r\n\r\n")) < 0:
                data = await stream.receive_some(_RECEIVE)
                if not data:
                    raise TransportConnectError(f"{url}: closed during handshake")
                head += data
            ws.receive_data(bytes(head[: cut + 4]))
            events = list(ws.events())
            if not any(isinstance(e, AcceptConnection) for e in events):
                raise TransportConnectError(f"{url}: handshake rejected")
            if len(head) > cut + 4:
                await conn._receive(bytes(head[cut + 4 :]))
    except (trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
        await trio.aclose_forcefully(stream)
        raise TransportConnectError(f"{url}: handshake failed: {exc!r}") from exc
    except TransportConnectError:
        await trio.aclose_forcefully(stream)
        raise
    try:
        yield conn
    finally:
        await conn.aclose()

"""The wsproto transport stamps each read with the kernel's receive time of its bytes.

A real websocket server (wsproto's server side) on a loopback socket sends a frame and
says when its write returned; only then does the client take a stamp and read. The
kernel received the bytes during that write, so the read's stamp (``received_ns``) is
earlier than the client's stamp before reading, which is earlier than ``read_ns`` (the
time the read returned). Without the kernel's stamp (``rx_stamp=False``, or the socket
option switched off on the live socket), the read is stamped when it returned, and
counted as a fallback.
"""

from __future__ import annotations

import functools
import socket
import ssl
import subprocess
import time

import pytest
import trio
import wsproto
from wsproto.events import AcceptConnection, Request, TextMessage

from engine.feeds import _transport
from engine.feeds._transport import open_transport


def _kernel_stamps() -> bool:
    """Whether this kernel takes SO_TIMESTAMPNS on a TCP socket (Linux does)."""
    if not _transport._SO_TIMESTAMPNS:
        return False
    with socket.socket() as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, _transport._SO_TIMESTAMPNS, 1)
        except OSError:
            return False
    return True


pytestmark = pytest.mark.skipif(not _kernel_stamps(), reason="no SO_TIMESTAMPNS here")


async def _handshake(stream: trio.abc.Stream) -> wsproto.WSConnection:
    ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        ws.receive_data(await stream.receive_some(65536))
        if any(isinstance(e, Request) for e in ws.events()):
            break
    await stream.send_all(ws.send(AcceptConnection()))
    return ws


async def _read_after_write(
    *, rx_stamp: bool, switch_off: bool = False, tls: ssl.SSLContext | None = None
) -> tuple[object, list[tuple[int, int, int]]]:
    """Three rounds of: the server writes a frame; once its write returned, the client
    stamps ``before`` and reads. Returns the connection and (before, received_ns,
    read_ns) per round. ``tls``: the server's context (wss)."""
    rounds: list[tuple[int, int, int]] = []
    async with trio.open_nursery() as nursery:
        sent = trio.Semaphore(0)
        go = trio.Semaphore(0)

        async def serve(tcp: trio.SocketStream) -> None:
            stream: trio.abc.Stream = tcp
            if tls is not None:
                stream = trio.SSLStream(tcp, tls, server_side=True)
            ws = await _handshake(stream)
            for i in range(3):
                await go.acquire()
                await stream.send_all(ws.send(TextMessage(data=f'{{"i":{i}}}')))
                sent.release()
            await trio.sleep_forever()

        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        url = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/"
        async with open_transport("wsproto", url, rx_stamp=rx_stamp) as ws:
            if switch_off:  # as on a kernel that gives no stamp
                rx = ws._rx  # type: ignore[attr-defined]
                rx.socket.setsockopt(socket.SOL_SOCKET, _transport._SO_TIMESTAMPNS, 0)
            for i in range(3):
                go.release()
                await sent.acquire()
                before = time.time_ns()
                assert await ws.get_messages() == [f'{{"i":{i}}}']  # type: ignore[attr-defined]
                rounds.append((before, ws.received_ns, ws.read_ns))  # type: ignore[attr-defined]
            nursery.cancel_scope.cancel()
    return ws, rounds


async def test_read_is_stamped_with_the_kernels_receive_time() -> None:
    ws, rounds = await _read_after_write(rx_stamp=True)
    assert ws._rx is not None  # type: ignore[attr-defined]
    for before, received, read in rounds:
        # The bytes were in the kernel before the client's stamp; read after it.
        assert 0 < received <= before <= read
    assert ws.reads == 3  # type: ignore[attr-defined]
    assert ws.rx_stamp_fallbacks == 0  # type: ignore[attr-defined]


async def test_without_the_option_the_read_is_stamped_after_it() -> None:
    ws, rounds = await _read_after_write(rx_stamp=False)
    assert ws._rx is None  # type: ignore[attr-defined]
    for before, received, read in rounds:
        assert before <= received == read
    assert ws.rx_stamp_fallbacks == ws.reads == 3  # type: ignore[attr-defined]


async def test_no_stamp_from_the_kernel_falls_back_and_counts() -> None:
    ws, rounds = await _read_after_write(rx_stamp=True, switch_off=True)
    for before, received, read in rounds:
        assert before <= received == read
    assert ws.rx_stamp_fallbacks == ws.reads == 3  # type: ignore[attr-defined]


@pytest.fixture
def tls_server(tmp_path, monkeypatch) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1 (openssl), trusted by the transport's
    client context for the test; the server's context."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    default = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda: default(cafile=str(cert)))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server


async def test_over_tls_the_read_is_stamped_with_the_kernels_receive_time(tls_server) -> None:
    ws, rounds = await _read_after_write(rx_stamp=True, tls=tls_server)
    assert ws._rx is not None  # type: ignore[attr-defined]
    for before, received, read in rounds:
        assert 0 < received <= before <= read
    assert ws.rx_stamp_fallbacks == 0  # type: ignore[attr-defined]

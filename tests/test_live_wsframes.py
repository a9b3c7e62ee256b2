"""The wsproto transport's own frame parser against a real wsproto server.

A server built on wsproto (the library's server side, not ours) sends what a
client must handle: frames in the handshake's read, a message split across
reads, fragmented text and binary, a ping, a close; the client must return the
messages in order, answer the ping with a pong carrying its payload, and answer
the close.
"""

from __future__ import annotations

import trio
import trio.lowlevel
import wsproto
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from engine.feeds._transport import TransportClosedError, open_transport


async def _serve(stream: trio.SocketStream, seen: list[object], *, split: bool) -> None:
    ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        ws.receive_data(await stream.receive_some(65536))
        if any(isinstance(e, Request) for e in ws.events()):
            break
    out = ws.send(AcceptConnection())
    out += ws.send(TextMessage(data='{"a":1}'))  # in the same write as the handshake
    await stream.send_all(out)
    big = "é" * 40_000  # a 16-bit then 64-bit length, UTF-8 split anywhere
    frames = ws.send(TextMessage(data=big)) + ws.send(BytesMessage(data=b"\x00\x01" * 40_000))
    if split:
        for i in range(0, len(frames), 777):
            await stream.send_all(frames[i : i + 777])
            await trio.lowlevel.checkpoint()
    else:
        await stream.send_all(frames)
    frag = ws.send(TextMessage(data="frag", message_finished=False))
    frag += ws.send(Ping(payload=b"hello"))  # control frames may come between fragments
    frag += ws.send(TextMessage(data="mented", message_finished=True))
    frag += ws.send(BytesMessage(data=b"x", message_finished=False))
    frag += ws.send(BytesMessage(data=b"y", message_finished=True))
    await stream.send_all(frag)
    await stream.send_all(ws.send(CloseConnection(code=1000, reason="bye")))
    while True:
        data = await stream.receive_some(65536)
        if not data:
            return
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, Pong | CloseConnection | Message):
                seen.append(event)
            if isinstance(event, CloseConnection):
                return


async def _run(split: bool) -> tuple[list[str | bytes], list[object]]:
    seen: list[object] = []
    got: list[str | bytes] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]

            async def server() -> None:
                stream = await listeners[0].accept()
                await listeners[0].aclose()
                async with stream:
                    await _serve(stream, seen, split=split)

            nursery.start_soon(server)
            async with open_transport("wsproto", f"ws://127.0.0.1:{port}/x") as ws:
                try:
                    while True:
                        got.append(await ws.get_message())
                except TransportClosedError:
                    pass
    return got, seen


async def test_messages_pings_and_close_in_order_whole_reads():
    got, seen = await _run(split=False)
    assert got == ['{"a":1}', "é" * 40_000, b"\x00\x01" * 40_000, "fragmented", b"xy"]
    assert [type(e) for e in seen] == [Pong, CloseConnection]
    assert seen[0].payload == b"hello"
    assert seen[1].code == 1000


async def test_messages_split_across_reads():
    got, _seen = await _run(split=True)
    assert got[:3] == ['{"a":1}', "é" * 40_000, b"\x00\x01" * 40_000]
    assert got[3:] == ["fragmented", b"xy"]


async def test_masked_frame_from_server_fails_the_connection():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]

            async def server() -> None:
                stream = await listeners[0].accept()
                await listeners[0].aclose()
                ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
                while True:
                    ws.receive_data(await stream.receive_some(65536))
                    if any(isinstance(e, Request) for e in ws.events()):
                        break
                # A masked text frame (what only a client may send), then a good one.
                masked = bytes([0x81, 0x80 | 2]) + b"\x01\x02\x03\x04" + bytes([0x68 ^ 1, 0x69 ^ 2])
                await stream.send_all(ws.send(AcceptConnection()) + masked)
                with trio.move_on_after(5):
                    while await stream.receive_some(65536):
                        pass
                await stream.aclose()

            nursery.start_soon(server)
            async with open_transport("wsproto", f"ws://127.0.0.1:{port}/") as ws:
                try:
                    message = await ws.get_message()
                except TransportClosedError:
                    message = None
            assert message is None

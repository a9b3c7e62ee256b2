"""A websocket server that sends a capture's frames, pre-encoded, as fast as the socket takes.

``python -m tools.bench._frame_server CAPTURE STREAMS PORT`` (run by ``tools.bench
feed``): loads the capture's messages of the given streams (``bookTicker,aggTrade``),
encodes each combined-stream envelope as a websocket text frame once, prints
``listening`` and, for the first client that upgrades (any path), writes every frame
in 256 KiB writes, then a close frame. Nothing is encoded while sending, so the
server is not what limits a client (the loopback exchange, which re-times and
encodes as it plays, tops out near 10k messages/s).
"""

from __future__ import annotations

import sys

import trio
import wsproto
from wsproto.events import AcceptConnection, Request
from wsproto.frame_protocol import Opcode

from engine.venues.sim import load_recording


def frames(capture: str, streams: set[str]) -> tuple[bytes, int]:
    """Every wanted message of ``capture`` as one buffer of server frames, and the count."""
    recording = load_recording([capture])
    out = bytearray()
    n = 0
    for msg in recording.messages:
        if msg.stream.split("@", 1)[1] not in streams:
            continue
        payload = msg.envelope
        header = bytearray([0x80 | Opcode.TEXT])
        size = len(payload)
        if size < 126:
            header.append(size)
        elif size < 1 << 16:
            header.append(126)
            header += size.to_bytes(2, "big")
        else:
            header.append(127)
            header += size.to_bytes(8, "big")
        out += header + payload
        n += 1
    return bytes(out), n


async def serve(buffer: bytes, port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    print("listening", flush=True)
    stream = await listeners[0].accept()
    ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        data = await stream.receive_some(65536)
        if not data:
            return
        ws.receive_data(data)
        if any(isinstance(e, Request) for e in ws.events()):
            await stream.send_all(ws.send(AcceptConnection()))
            break
    chunk = 256 * 1024
    for i in range(0, len(buffer), chunk):
        await stream.send_all(buffer[i : i + chunk])
    await stream.send_all(bytes([0x80 | Opcode.CLOSE, 2]) + (1000).to_bytes(2, "big"))
    await trio.sleep_forever()  # the client closes


def main() -> None:
    capture, streams, port = sys.argv[1], set(sys.argv[2].split(",")), int(sys.argv[3])
    buffer, n = frames(capture, streams)
    print(n, flush=True)
    trio.run(serve, buffer, port)


if __name__ == "__main__":
    main()

"""A minimal Binance-shaped order endpoint for ``python -m tools.bench orders``.

``python -m tools.bench._order_server --port N`` serves HTTP/1.1 keep-alive (h11 on
Trio): ``GET /fapi/v1/time`` and ``POST /fapi/v1/order`` (an ACK with a fresh
``orderId``), with the ``X-MBX-*`` headers Binance sends. It prints ``ready`` once
listening. It runs in its own process so the benchmark's CPU figure is the client's.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import time

import h11
import orjson
import trio

_IDS = itertools.count(1)


def _answer(target: bytes) -> bytes:
    if target.startswith(b"/fapi/v1/time"):
        return orjson.dumps({"serverTime": int(time.time() * 1000)})
    return orjson.dumps(
        {"orderId": next(_IDS), "status": "NEW", "executedQty": "0", "avgPrice": "0.00",
         "updateTime": int(time.time() * 1000)}
    )  # fmt: skip


async def _on_connection(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    target = b""
    with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                target = event.target
            elif isinstance(event, h11.EndOfMessage):
                body = _answer(target)
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-mbx-used-weight-1m", b"1"),
                    (b"x-mbx-order-count-10s", b"1"),
                    (b"x-mbx-order-count-1m", b"1"),
                ]
                await stream.send_all(
                    conn.send(h11.Response(status_code=200, headers=headers))
                    + conn.send(h11.Data(data=body))
                    + conn.send(h11.EndOfMessage())
                )
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return


async def _main(port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await trio.serve_listeners(_on_connection, listeners)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench._order_server")
    parser.add_argument("--port", type=int, required=True)
    trio.run(_main, parser.parse_args().port)


if __name__ == "__main__":
    main()

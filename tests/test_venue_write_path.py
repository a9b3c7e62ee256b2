"""The live venue's per-step and per-order work, kept out of the next frame's way.

* ``on_market`` marks each symbol at its step's last QUOTE row (found without a
  boolean mask per column) and leaves symbols without one alone;
* a signature is HMAC-SHA256 from the keyed pads, for any key length;
* a request the socket takes only part of in ``write_now`` is finished by
  ``finish``: its hooks run once, when the last byte is written, and h11 (told of
  the request in ``finish``, off the caller's step) reads the answer.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import trio
from test_tick_to_order import _serve, _Server

from engine.messages import EventKind, Ticks
from engine.testing import quiet_logger
from engine.venues.binance import BinanceVenue, Credentials
from engine.venues.binance import _transport as transport_module
from engine.venues.binance._transport import LeanTransport

_Q, _T, _D = int(EventKind.QUOTE), int(EventKind.TRADE), int(EventKind.DEPTH)


def _batch(kinds: list[int], bids: list[float]) -> Ticks:
    n = len(kinds)
    ask = np.array(bids) + 0.5
    return Ticks(
        ts=np.arange(10, 10 + n, dtype=np.int64),
        ts_exchange=np.arange(n, dtype=np.int64),
        seq=np.arange(n, dtype=np.int64),
        kind=np.array(kinds, dtype=np.int8),
        bid=np.array(bids),
        bid_qty=np.ones(n),
        ask=ask,
        ask_qty=np.ones(n),
        price=np.full(n, 1.0),
        qty=np.full(n, 1.0),
        buyer_maker=np.zeros(n, dtype=np.int8),
    )


async def test_on_market_marks_each_symbol_at_its_last_quote_row() -> None:
    venue = BinanceVenue(
        base_url="http://127.0.0.1:1",
        ws_url="ws://127.0.0.1:1",
        credentials=Credentials("k", "s"),
        symbols=["AAA", "BBB", "CCC"],
        log=quiet_logger(),
    )
    ticks = {
        # the last QUOTE is not the last row
        "AAA": _batch([_Q, _T, _Q, _D, _T], [100.0, 0.0, 101.0, 0.0, 0.0]),
        "BBB": _batch([_T, _D], [0.0, 0.0]),  # no quote: not marked
        "CCC": _batch([_Q], [7.0]),
    }
    assert venue.on_market(ticks) == []
    assert venue.step_quotes == {"AAA": (12, 101.0, 101.5), "CCC": (10, 7.0, 7.5)}
    assert type(venue.step_quotes["AAA"][0]) is int
    assert type(venue.step_quotes["AAA"][1]) is float
    assert venue.ledger.account("AAA").last_mid == 101.25
    assert venue.on_market({}) == [] and venue.step_quotes == {}


async def test_a_request_the_socket_took_in_part_is_finished_and_answered(monkeypatch) -> None:
    server = _Server()
    real_write = transport_module.os.write
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _serve(nursery, server)
            transport = LeanTransport(f"http://127.0.0.1:{port}")
            await transport.warm_up()
            marks: list[str] = []
            # The kernel may take part of a write: here it takes 10 bytes.
            monkeypatch.setattr(
                transport_module.os, "write", lambda fd, data: real_write(fd, data[:10])
            )
            flight = transport.write_now(
                "POST", "/fapi/v1/order?a=1", None, written=lambda: marks.append("order")
            )
            monkeypatch.setattr(transport_module.os, "write", real_write)
            assert flight is not None and flight.rest
            assert marks == []  # not written whole yet
            response = await transport.finish(flight)
            assert marks == ["order"]
            assert response.status == 200 and response.body == b'{"n": 1}'
            assert [r.target for r in server.requests] == [b"/fapi/v1/order?a=1"]
            # Pooled again: the next request goes inline, whole, on the same connection.
            flight = transport.write_now("POST", "/fapi/v1/order?a=2", None)
            assert flight is not None and not flight.rest
            assert (await transport.finish(flight)).status == 200
            assert transport.connections_opened == 1
            await transport.aclose()
            nursery.cancel_scope.cancel()


def test_signature_is_hmac_sha256_for_keys_around_the_block_size() -> None:
    # The keyed pads are kept (RFC 2104); a key longer than the block is hashed first.
    for length in (1, 63, 64, 65, 200):
        secret = ("s3Cr" * 60)[:length]
        creds = Credentials("k", secret)
        for payload in ("", "symbol=BTCUSDT&side=BUY&quantity=0.002", "x" * 300):
            expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            assert creds.sign(payload) == expected
            assert creds.sign(payload) == expected  # the keyed states are copied, not used up
        query = creds.sign_query("a=1", timestamp_ms=5, recv_window_ms=None)
        signed = "a=1&timestamp=5"
        expected = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        assert query == f"{signed}&signature={expected}"

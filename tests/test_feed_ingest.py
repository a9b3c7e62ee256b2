"""The live feed's batch ingestion: frame parsing, decode, de-duplication, latency.

A socket read goes through in one pass (:meth:`_Wsproto.get_messages`,
``LiveFeed._on_messages``); what passes on, what is counted and what is recorded
must not depend on how the messages were cut into reads, and must be what the
per-message rules say (duplicates, trade gaps held for backfill, partial depth,
malformed and unknown messages).
"""

from __future__ import annotations

import math
import random
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection

from engine._config import FeedsSection
from engine.feeds._capture import Trade
from engine.feeds._live import LatencyStats, LiveFeed, market_data_client
from engine.feeds._transport import _Wsproto
from engine.messages import EventKind
from engine.testing import quiet_logger

SYMBOL = "BTCUSDT"
NOW_NS = 1_723_136_400_100 * 1_000_000


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A server frame (unmasked) with the shortest length encoding."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(n)
    elif n < 1 << 16:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return bytes(head) + payload


FRAMES = b"".join(
    [
        _frame(1, b'{"a":1}'),
        _frame(1, ("é" * 100).encode()),  # 16-bit length, not ASCII
        _frame(2, b"\x00\x01" * 40_000),  # 64-bit length
        _frame(10, b"pong"),  # an unsolicited pong: ignored
        _frame(1, b"frag", fin=False),
        _frame(0, b"mented"),
        _frame(1, b"x" * 125),
        _frame(1, b"y" * 126),
    ]
)
MESSAGES = ['{"a":1}', "é" * 100, b"\x00\x01" * 40_000, "fragmented", "x" * 125, "y" * 126]


def _drain(conn: _Wsproto) -> list[str | bytes]:
    out = []
    while (m := conn.get_message_nowait()) is not None:
        out.append(m)
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 5, 126, 127, 4096, 65536, len(FRAMES)])
def test_frames_cut_anywhere_parse_the_same(size: int) -> None:
    conn = _Wsproto(trio.testing.MemorySendStream(), WSConnection(ConnectionType.CLIENT))
    got: list[str | bytes] = []
    for i in range(0, len(FRAMES), size):
        conn._parse(FRAMES[i : i + size])
        got.extend(_drain(conn))
    assert got == MESSAGES
    assert not conn.closed and not conn._buffer


def test_random_cuts_parse_the_same() -> None:
    rng = random.Random(7)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(FRAMES)), 30))
        conn = _Wsproto(trio.testing.MemorySendStream(), WSConnection(ConnectionType.CLIENT))
        got: list[str | bytes] = []
        for a, b in zip([0, *cuts], [*cuts, len(FRAMES)], strict=True):
            conn._parse(FRAMES[a:b])
            got.extend(_drain(conn))
        assert got == MESSAGES


def test_bad_utf8_text_fails_the_connection() -> None:
    conn = _Wsproto(trio.testing.MemorySendStream(), WSConnection(ConnectionType.CLIENT))
    conn._parse(_frame(1, b"ok") + _frame(1, b"\xff\xfe") + _frame(1, b"never"))
    assert _drain(conn) == ["ok"]
    assert conn.closed


async def test_get_messages_returns_what_one_read_completed() -> None:
    send, receive = trio.testing.memory_stream_pair()
    conn = _Wsproto(receive, WSConnection(ConnectionType.CLIENT))
    texts = [f'{{"n":{i}}}' * (i % 40 + 1) for i in range(200)]
    frames = b"".join(_frame(1, t.encode()) for t in texts)
    assert len(frames) < 65536  # one read takes it all
    with trio.fail_after(10):
        await send.send_all(frames[:-5])
        first = await conn.get_messages()
        await send.send_all(frames[-5:])
        second = await conn.get_messages()
    assert first == texts[:-1]  # the last frame was cut
    assert second == texts[-1:]
    assert conn.received_ns > 0


# -- the feed -------------------------------------------------------------------------


def _quote(u: int, symbol: str = SYMBOL, with_e: bool = True) -> str:
    data: dict[str, Any] = {"e": "bookTicker", "s": symbol, "b": "100.5", "B": "1.5"}
    data |= {"a": "100.6", "A": "2.5", "T": 1_723_136_400_000 + u}
    if with_e:
        data["E"] = 1_723_136_400_000 + u
    if u >= 0:
        data["u"] = u
    return orjson.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": data}).decode()


def _trade(t: int) -> bytes:
    data = {"e": "trade", "E": 1_723_136_400_050, "T": 1_723_136_400_049, "s": SYMBOL,
            "t": t, "p": "100.55", "q": "0.01", "m": t % 2 == 0}  # fmt: skip
    return orjson.dumps({"stream": "btcusdt@trade", "data": data})


PARTIAL = orjson.dumps(
    {
        "stream": "btcusdt@depth5",
        "data": {
            "e": "depthUpdate",
            "E": 1_723_136_400_070,
            "T": 1,
            "s": SYMBOL,
            "U": 1,
            "u": 2,
            "pu": 0,
            "b": [["100.5", "1"]],
            "a": [["100.6", "1"]],
        },
    }
)

#: What arrives, and whether each passes on (P) or not.
STREAM: list[tuple[str | bytes, bool]] = [
    (_quote(10), True),
    (_quote(10), False),  # duplicate
    (_quote(9), False),  # older: duplicate
    (_trade(100), True),  # the first trade
    (_trade(101), True),
    (_trade(101), False),  # duplicate
    (_quote(11).encode(), True),  # bytes or text alike
    (_trade(105), False),  # 102-104 missing: held while they are fetched
    (_trade(106), False),  # held behind them
    (_trade(102), False),  # the next id, but held too while the backfill runs
    (_quote(12, symbol="ETHUSDT"), False),  # not a symbol of this feed
    (b"{not json", False),  # malformed
    (b'{"e":"nope","s":"BTCUSDT"}', False),  # unknown event
    (_quote(-1, with_e=False), True),  # no update id, no event time
    (PARTIAL, True),  # a partial book: passed on, never into the diff book
    (_quote(13), True),
]


def _feed(recorded: list[tuple[int, bytes]]) -> tuple[LiveFeed, Any]:
    settings = FeedsSection(
        ws_url="ws://fake.invalid", rest_url="https://fake.invalid",
        streams=("bookTicker", "trade", "depth5"),
    )  # fmt: skip
    market_tx, _market_rx = trio.open_memory_channel[Any](math.inf)
    step_tx, _step_rx = trio.open_memory_channel[Any](math.inf)
    feed = LiveFeed(
        settings=settings,
        symbols=[SYMBOL],
        step_ns=10**8,
        symbol_channels={SYMBOL: market_tx},
        execution_channel=step_tx,
        rest=market_data_client(httpx.AsyncClient(), settings.rest_url),
        log=quiet_logger(),
        stop=trio.Event(),
        record=lambda ts, raw: recorded.append((ts, raw)),
    )
    # What ``run`` opens: the backfill and resync requests.
    feed._backfill_requests, backfills = trio.open_memory_channel[Any](math.inf)
    feed._resync_requests, _resyncs = trio.open_memory_channel[Any](math.inf)
    return feed, backfills


def _outcome(cuts: list[int]) -> dict[str, Any]:
    recorded: list[tuple[int, bytes]] = []
    feed, backfills = _feed(recorded)
    texts = [text for text, _passes in STREAM]
    for a, b in zip([0, *cuts], [*cuts, len(texts)], strict=True):
        if b - a == 1:
            feed._on_message(texts[a], NOW_NS)
        elif b > a:
            feed._on_messages(texts[a:b], NOW_NS)
    ticks = feed._columns[SYMBOL].take()
    assert ticks is not None
    state = feed.state[SYMBOL]
    return {
        "kind": ticks.kind.tolist(),
        "seq": ticks.seq.tolist(),
        "bid": ticks.bid.tobytes(),
        "price": ticks.price.tobytes(),  # NaN-safe comparison
        "ts_exchange": ticks.ts_exchange.tolist(),
        "stats": (feed.stats.messages, feed.stats.malformed, feed.stats.unknown),
        "state": (state.duplicates, state.trades, state.last_quote_u, state.trade_ids.high),
        "held": [m.trade_id for m, _raw in state.held or []],
        "backfills": [backfills.receive_nowait()],
        "latency": feed.latency.summary(),
        "recorded": recorded,
        "data": feed._data.is_set(),
        "ts": (feed.first_ts, feed.last_ts),
    }


async def test_feed_passes_what_the_rules_say() -> None:
    got = _outcome([])
    passing = [text for text, passes in STREAM if passes]
    quote, trade = int(EventKind.QUOTE), int(EventKind.TRADE)
    assert got["kind"] == [quote, trade, trade, quote, quote, int(EventKind.DEPTH), quote]
    assert got["seq"] == list(range(1, len(passing) + 1))
    assert got["stats"] == (len(STREAM), 1, 2)
    assert got["state"] == (3, 2, 13, 101)  # 3 duplicates; trades 100, 101 passed
    assert got["held"] == [105, 106, 102]
    assert got["backfills"] == [(SYMBOL, 102, 105, Trade)]
    # Every message of a feed's symbol with an event time gives a latency sample.
    assert got["latency"]["count"] == 12
    assert got["recorded"] == [(NOW_NS, t.encode() if isinstance(t, str) else t) for t in passing]
    assert all(isinstance(raw, bytes) for _ts, raw in got["recorded"])
    assert got["data"] and got["ts"] == (NOW_NS, NOW_NS)


async def test_feed_outcome_does_not_depend_on_how_reads_cut_the_stream() -> None:
    whole = _outcome([])
    one_by_one = _outcome(list(range(1, len(STREAM))))
    assert one_by_one == whole
    rng = random.Random(3)
    for _ in range(10):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 6)))
        assert _outcome(cuts) == whole


@pytest.mark.parametrize("batches", [[1] * 30, [3, 1, 9, 2, 15], [30], [2, 28], [13, 17]])
def test_latency_record_many_is_record_of_each(batches: list[int]) -> None:
    rng = random.Random(sum(batches) + len(batches))
    one, many = LatencyStats(window=7), LatencyStats(window=7)
    for n in batches:
        ts = NOW_NS + rng.randrange(10**9)
        events = [NOW_NS // 1_000_000 - rng.randrange(-50, 5000) for _ in range(n)]
        for e in events:
            one.record((ts - e * 1_000_000) / 1e6)
        many.record_many(ts, events)
        assert many.count == one.count and many.max_ms == one.max_ms
        assert many._next == one._next
        np.testing.assert_array_equal(many._ring, one._ring)
    assert many.summary() == one.summary()

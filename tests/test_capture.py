"""Reading captures: every line format, gzip or not, and the real recordings."""

from __future__ import annotations

import gzip

import pytest

from engine.feeds import CaptureStats, expand_paths, parse_line, read_capture, scan_symbols
from engine.feeds._capture import AggTrade, BookTicker, DepthUpdate, Kline, Trade

BOOK = (
    b'{"e":"bookTicker","u":1,"s":"BTCUSDT","b":"61800.20","B":"2.507",'
    b'"a":"61800.30","A":"2.510","T":1723161256313,"E":1723161256313}'
)
TRADE = (
    b'{"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":5,'
    b'"p":"61800.30","q":"0.006","X":"MARKET","m":false}'
)


def wrap(stream: bytes, data: bytes) -> bytes:
    return b'{"stream":"' + stream + b'","data":' + data + b"}"


@pytest.mark.parametrize(
    ("line", "ts"),
    [
        (b"1723161255088169167 " + wrap(b"btcusdt@bookTicker", BOOK), 1723161255088169167),
        (b"1626992741.06217: " + wrap(b"btcusdt@bookTicker", BOOK), 1626992741062170112),
        (wrap(b"btcusdt@bookTicker", BOOK), None),
        (BOOK, None),
    ],
    ids=["ns-prefix-wrapped", "seconds-prefix-wrapped", "bare-wrapped", "bare-event"],
)
def test_line_formats(line, ts):
    stats = CaptureStats()
    got_ts, msg = parse_line(line, stats)
    assert got_ts == ts
    assert isinstance(msg, BookTicker)
    assert (msg.symbol, msg.bid, msg.bid_qty, msg.ask, msg.ask_qty) == (
        "BTCUSDT",
        61800.2,
        2.507,
        61800.3,
        2.51,
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"wss://fstream.binance.com/stream?streams=a/b <-> 1626992740.1", "non_json"),
        (b"https://fapi.binance.com/fapi/v1/depth?symbol=X -> 1626992741.3: {}", "rest_reply"),
        (b'1723161255319702566 {"lastUpdateId":5,"E":1,"T":1,"bids":[],"asks":[]}', "snapshot"),
        (b'{"e":"ACCOUNT_UPDATE","E":1}', "unknown_message"),
        (b"123 {not json", "malformed_json"),
        (b"garbage {}", "bad_prefix"),
        (b"", "blank"),
    ],
)
def test_non_events_are_counted_not_fatal(line, reason):
    stats = CaptureStats()
    assert parse_line(line, stats) is None
    assert stats.skipped == {reason: 1}


def test_gzip_and_plain_give_the_same_events(tmp_path):
    lines = [
        b"100 " + wrap(b"btcusdt@bookTicker", BOOK),
        b"90 " + wrap(b"btcusdt@trade", TRADE),  # clock stepped back: clamped
        b"not json",
        b"300 " + BOOK,
    ]
    body = b"\n".join(lines) + b"\n"
    plain = tmp_path / "cap.jsonl"
    plain.write_bytes(body)
    gz = tmp_path / "cap.jsonl.gz"
    gz.write_bytes(gzip.compress(body))
    # Two concatenated gzip members are one valid gzip file.
    multi = tmp_path / "multi.gz"
    multi.write_bytes(
        gzip.compress(b"\n".join(lines[:2]) + b"\n") + gzip.compress(lines[2] + b"\n" + lines[3])
    )
    results = []
    for path in (plain, gz, multi):
        stats = CaptureStats()
        events = list(read_capture(path, stats))
        results.append([(ts, type(m).__name__) for ts, m in events])
        assert stats.skipped == {"non_json": 1}
    assert results[0] == [(100, "BookTicker"), (100, "Trade"), (300, "BookTicker")]
    assert results[0] == results[1] == results[2]


def test_expand_paths_skips_docs_and_rejects_missing(tmp_path):
    (tmp_path / "a.gz").write_bytes(b"")
    (tmp_path / "SOURCES.md").write_text("# docs")
    (tmp_path / "LICENSE").write_text("MIT")
    assert [p.name for p in expand_paths([tmp_path])] == ["a.gz"]
    from engine import DataError

    with pytest.raises(DataError, match="no such market data file or directory"):
        expand_paths([tmp_path / "missing.gz"])


def test_full_btcusdt_capture(btc_capture):
    stats = CaptureStats()
    kinds: dict[type, int] = {}
    last = 0
    for ts, msg in read_capture(btc_capture, stats):
        kinds[type(msg)] = kinds.get(type(msg), 0) + 1
        assert ts >= last
        last = ts
    # Counts documented in ../shared/data/external/SOURCES.md
    assert kinds == {BookTicker: 66089, Trade: 21313, DepthUpdate: 6551}
    assert stats.skipped == {"snapshot": 1}
    assert scan_symbols([btc_capture]) == ["BTCUSDT"]


def test_cryptofeed_capture_four_symbols(cryptofeed_dir):
    paths = expand_paths([cryptofeed_dir])
    assert scan_symbols(paths) == ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    stats = CaptureStats()
    kinds: dict[type, int] = {}
    for path in paths:
        for _ts, msg in read_capture(path, stats):
            kinds[type(msg)] = kinds.get(type(msg), 0) + 1
    assert kinds == {AggTrade: 91, BookTicker: 613, DepthUpdate: 764, Kline: 67}
    assert stats.skipped["rest_reply"] == 5  # 4 depth snapshots + exchangeInfo

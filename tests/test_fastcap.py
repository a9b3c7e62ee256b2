"""The compiled capture reader (engine.feeds._fastcap) against the general one.

Every capture here is read twice into a tape: by the compiled line parser with the
checks over arrays, and by the general reader (``merge_captures``, one message
object per line). The counters and every column must be identical, whatever odd
lines the capture holds.
"""

from __future__ import annotations

import gzip
import os
import random
from itertools import islice

import numpy as np
import pytest

from engine import DataError
from engine.feeds import CaptureStats, scan_symbols
from engine.feeds import _fastcap as fastcap
from engine.feeds import _tape as tape_module
from engine.feeds._capture import _PAIR_RE, _SYMBOL_RE, _inflate_all, open_capture
from engine.feeds._fastcap import _GENERAL, parse_file
from engine.feeds._tape import COLUMN_NAMES, parse_tape

HOUR_NS = 3600 * 10**9
GOOD = 1723161255088169167


def book(u: int, bid: str, bid_qty: str, ask: str, ask_qty: str, e: int = 1723161256313) -> bytes:
    return (
        b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":%d,"s":"BTCUSDT",'
        b'"b":"%s","B":"%s","a":"%s","A":"%s","T":%d,"E":%d}}'
        % (u, bid.encode(), bid_qty.encode(), ask.encode(), ask_qty.encode(), e, e)
    )


def trade(
    t: int, price: str, qty: str, e: int = 1723161256322, symbol: bytes = b"BTCUSDT"
) -> bytes:
    return (
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":%d,"T":%d,"s":"%s",'
        b'"t":%d,"p":"%s","q":"%s","X":"MARKET","m":false}}'
        % (e, e, symbol, t, price.encode(), qty.encode())
    )


def depth(u: int, e: int = 1723161256352, levels: bytes = b'[["61800.20","2.5"]]') -> bytes:
    return (
        b'{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":%d,"T":%d,'
        b'"s":"BTCUSDT","U":%d,"u":%d,"pu":%d,"b":%s,"a":[]}}' % (e, e, u - 5, u, u - 6, levels)
    )


def write(path, lines: list[bytes], *, end: bytes = b"\n"):
    path.write_bytes(gzip.compress(b"\n".join(lines) + end))
    return path


def sample_lines(sample, n: int) -> list[bytes]:
    return list(islice(open_capture(sample), n))


def read_both(path, symbols, monkeypatch) -> tuple[object, CaptureStats]:
    """The tape and counters of both readers (asserted equal); the compiled one's."""
    fast_stats = CaptureStats()
    fast = parse_tape([path], symbols, stats=fast_stats)
    with monkeypatch.context() as m:
        m.setattr(tape_module, "fast_path_for", lambda _path, _book: False)
        slow_stats = CaptureStats()
        slow = parse_tape([path], symbols, stats=slow_stats)
    assert fast_stats == slow_stats
    assert fast_stats.snapshots == slow_stats.snapshots
    for symbol in symbols:
        for name in COLUMN_NAMES:
            a, b = getattr(fast.ticks[symbol], name), getattr(slow.ticks[symbol], name)
            assert a.dtype == b.dtype, name
            assert np.array_equal(a, b, equal_nan=True), (symbol, name)
    return fast, fast_stats


def test_the_sample_is_read_by_the_compiled_parser_and_matches(sample, monkeypatch):
    parsed = parse_file(sample)
    general = np.flatnonzero(parsed.kind[: parsed.n] == _GENERAL)
    # Only the REST snapshot line is left to the general path.
    assert [parsed.data[parsed.lo[i] : parsed.lo[i] + 40] for i in general] == [
        parsed.data[parsed.lo[general[0]] : parsed.lo[general[0]] + 40]
    ]
    assert b"lastUpdateId" in parsed.data[parsed.lo[general[0]] : parsed.hi[general[0]]]
    tape, stats = read_both(sample, ["BTCUSDT"], monkeypatch)
    assert len(tape) == stats.events == 40_390


ODD_LINES = [
    b"",  # blank
    b"not json at all",
    b"%d {" % GOOD,  # malformed
    b'%d {"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":7}}' % GOOD,  # bad_field
    b'%d {"stream":"x","data":{"e":"somethingElse","s":"BTCUSDT"}}' % GOOD,  # unknown
    b"%d %s" % (GOOD, book(90, "61800.4", "2.5", "61800.3", "2.5")),  # crossed
    b"%d %s" % (GOOD, book(10**15, "61800.3", "2.5", "61800.3", "2.5")),  # locked
    b"%d %s" % (GOOD, book(91, "0", "2.5", "61800.3", "2.5")),  # bad price
    b"%d %s" % (GOOD, book(92, "61800.2", "0.000", "61800.3", "2.5")),  # bad qty
    b"%d %s" % (GOOD, trade(93, "NaN", "0.006")),
    b"%d %s" % (GOOD, trade(94, "61800.3", "-0.006")),
    b"%d %s" % (GOOD, trade(95, "6.18003e4", "0.006")),  # an exponent: general path
    b"%d %s" % (GOOD, trade(96, "61800.300000000001", "0.006")),  # 18 digits: general
    b"%d %s" % (GOOD, trade(97, "061800.3", "0.006")),  # a leading zero
    b"%d %s" % (GOOD, trade(98, "61800.3", "0.006", symbol=b"ETHUSDT")),  # other symbol
    b"%d  %s" % (GOOD, trade(99, "61800.3", "0.006")),  # two spaces
    b"%d\t%s" % (GOOD, trade(100, "61800.3", "0.006")),  # a tab
    b"%d %s\r" % (GOOD, trade(101, "61800.3", "0.006")),  # CRLF
    b"%d %s" % (GOOD, trade(102, "61800.3", "0.006").replace(b'"m":false', b'"m":true')),
    b"%d %s" % (GOOD, trade(103, "61800.3", "0.006").replace(b'"X":"MARKET"', b'"X":"M\\u0041"')),
    b"%d %s" % (GOOD, trade(104, "61800.3", "0.006").replace(b'"t":104', b'"t":"104"')),
    b"%d %s" % (GOOD, trade(105, "61800.3", "0.006").replace(b',"m":false', b"")),  # no m
    b"%d %s" % (GOOD, trade(106, "61800.3", "0.006").replace(b'"E"', b'"x":1.5,"E"')),
    b"%d %s" % (GOOD, trade(107, "61800.3", "0.006").replace(b'"X"', b'"e":"trade","X"')),
    b"%d %s" % (GOOD, trade(50, "61800.3", "0.006")),  # a duplicate id (below the last)
    b"%d %s" % (GOOD, depth(5123107840000)),
    b"%d %s" % (GOOD, depth(5123107840000)),  # duplicate depth
    b"%d %s" % (GOOD, depth(5123107840010, levels=b'[["61800.20","2.5"],["1","2"]]')),
    b"%d %s" % (GOOD, depth(5123107840020, levels=b'[["61800.20","2.5"]')),  # malformed
    b"%d %s" % (GOOD, depth(5123107840030, levels=b'[["61800.20","2.5",1]]')),
    b"%d %s" % (GOOD, depth(5123107840040, levels=b'[["61800.20","2e5"]]')),
    b"%d %s" % (GOOD, depth(5123107840050, levels=b"[]")),
    # A cut line run into the next one (a recorder restarted mid-line).
    b'%d {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":17231612' % GOOD
    + b"%d %s" % (GOOD, trade(108, "61800.3", "0.006")),
    b"%d %s" % (GOOD - HOUR_NS // 1000, trade(109, "61800.3", "0.006")),  # clamped
    b"%d %s" % (99999999999999999999, trade(110, "61800.3", "0.006")),  # beyond int64
    b"%d %s" % (9223372036854775807, trade(111, "61800.3", "0.006")),  # int64 max
    b"%d %s" % (GOOD, trade(112, "61800.3", "0.006", e=99999999999999999)),  # E too far
    b'%d {"stream":"btcusdt@markPrice","data":{"e":"markPriceUpdate","E":1723161256400,'
    b'"s":"BTCUSDT","p":"61801.1","i":"61790.5","r":"0.0001","T":1723190400000}}' % GOOD,
    b'%d {"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1723161256401,"s":"BTCUSDT",'
    b'"a":77,"p":"61800.3","q":"0.010","m":true}}' % GOOD,
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256402,"T":1723161256402,'
    b'"s":"BTCUSDT","t":113,"p":"61800.3","q":"0.006","X":"MARKET","m":false}}',  # no stamp
]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_odd_lines_are_counted_as_by_the_general_reader(tmp_path, sample, monkeypatch, seed):
    lines = sample_lines(sample, 600)
    rng = random.Random(seed)
    for odd in ODD_LINES:
        lines.insert(rng.randrange(20, len(lines)), odd)
    for _ in range(5):  # a line twice in a row (the same id)
        at = rng.randrange(20, len(lines))
        lines.insert(at, lines[at])
    path = write(tmp_path / "odd.gz", lines)
    _tape, stats = read_both(path, ["BTCUSDT"], monkeypatch)
    assert stats.events > 500
    assert {"bad_price", "bad_qty", "crossed_book", "other_symbol", "duplicate"} <= set(
        stats.skipped
    )


def test_time_checks_match_the_general_reader(tmp_path, sample, monkeypatch):
    lines = sample_lines(sample, 3000)
    for i in (1500, 2100):  # one far-future stamp (skipped), one far event time
        stamp, _, body = lines[i].partition(b" ")
        lines[i] = b"%d %s" % (int(stamp) + 80 * 365 * 24 * HOUR_NS, body)
    # Stamps two hours late from 2500 on (their event times say otherwise), and a line
    # stamped back.
    for i in range(2500, 3000):
        stamp, _, body = lines[i].partition(b" ")
        lines[i] = b"%d %s" % (int(stamp) + 2 * HOUR_NS, body)
    stamp, _, body = lines[1000].partition(b" ")
    lines[1000] = b"%d %s" % (int(stamp) - 10**9, body)
    _tape, stats = read_both(write(tmp_path / "t.gz", lines), ["BTCUSDT"], monkeypatch)
    assert stats.skipped["time_jump"] > 2
    assert stats.clamped >= 1


def test_a_skewed_stamp_refuses_the_file_as_before(tmp_path, sample, monkeypatch):
    lines = sample_lines(sample, 400)
    stamp, _, body = lines[300].partition(b" ")
    lines[300] = b"%d %s" % (int(stamp) + 3600 * 10**9 // 2, body)  # 30 min: past the skew
    path = write(tmp_path / "skew.gz", lines)
    with pytest.raises(DataError, match=r"skew\.gz:301: receive time"):
        parse_tape([path], ["BTCUSDT"], stats=CaptureStats())


def test_a_truncated_or_unterminated_capture_matches(tmp_path, sample, monkeypatch):
    whole = sample.read_bytes()
    cut = tmp_path / "cut.gz"
    cut.write_bytes(whole[: len(whole) // 3])
    _tape, stats = read_both(cut, ["BTCUSDT"], monkeypatch)
    assert stats.truncated == [str(cut)]
    assert stats.skipped["truncated"] == 1
    lines = sample_lines(sample, 500)
    _tape, stats = read_both(write(tmp_path / "noeol.gz", lines, end=b""), ["BTCUSDT"], monkeypatch)
    assert stats.events == 499  # the last line read without its newline (the snapshot skipped)


def test_a_corrupt_stream_is_refused_after_the_lines_before_it(tmp_path, sample):
    whole = bytearray(sample.read_bytes())
    whole[len(whole) // 2 : len(whole) // 2 + 64] = bytes(64)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(bytes(whole))
    with pytest.raises(DataError, match=r"bad\.gz: cannot read market data"):
        parse_tape([bad], ["BTCUSDT"], stats=CaptureStats())


def test_prices_parse_to_the_json_decoders_doubles(tmp_path, monkeypatch):
    rng = random.Random(7)
    lines = []
    for u in range(1, 3001):
        digits = rng.randrange(1, 16)
        frac = rng.randrange(0, digits)
        mant = str(rng.randrange(1, 10**digits)).rjust(frac + 1, "0")
        price = mant if not frac else f"{mant[:-frac]}.{mant[-frac:]}"
        qty = f"{rng.randrange(1, 10**6)}.{rng.randrange(0, 1000):03d}"
        lines.append(b"%d %s" % (GOOD + u, trade(u, price, qty, e=1723161256322 + u // 1000)))
    _tape, stats = read_both(write(tmp_path / "p.gz", lines), ["BTCUSDT"], monkeypatch)
    assert stats.events == 3000


def test_the_scan_finds_what_a_search_of_the_whole_file_finds(tmp_path, sample):
    lines = sample_lines(sample, 300)
    lines.insert(100, b"%d %s" % (GOOD, trade(5, "1.0", "1.0", symbol=b"ETHUSDT")))
    lines.insert(150, b'%d {"stream":"x","data":{"e":"other","s":"SOLUSDT"}}' % GOOD)
    path = write(tmp_path / "s.gz", lines)
    data, _read, _error = _inflate_all(path)
    found, pair = parse_file(path).symbols_found(_SYMBOL_RE, _PAIR_RE)
    assert found == set(_SYMBOL_RE.findall(data)) == {b"BTCUSDT", b"ETHUSDT", b"SOLUSDT"}
    assert pair == b""
    assert scan_symbols([path]) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    coin = list(lines)
    coin.insert(
        200, b"%d %s" % (GOOD, trade(6, "1.0", "1.0").replace(b'"X"', b'"ps":"BTCUSD","X"'))
    )
    with pytest.raises(DataError, match="coin-margined capture"):
        scan_symbols([write(tmp_path / "coin.gz", coin)])


def test_a_file_rewritten_after_the_scan_is_parsed_again(tmp_path, sample):
    lines = sample_lines(sample, 300)
    path = write(tmp_path / "r.gz", lines)
    symbols = scan_symbols([path])  # parses the file and keeps it for the read
    before = path.stat()
    # The same size and times, other content: one price changed by a digit.
    i = next(i for i, line in enumerate(lines) if b'"p":"61800.30"' in line)
    lines[i] = lines[i].replace(b'"p":"61800.30"', b'"p":"61800.40"')
    data = gzip.compress(b"\n".join(lines) + b"\n", mtime=0)
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    tape = parse_tape([path], symbols, stats=CaptureStats())
    assert 61800.4 in tape.ticks["BTCUSDT"].price


def test_a_large_file_is_scanned_and_read_streaming_as_before(sample, monkeypatch):
    whole = parse_tape([sample], ["BTCUSDT"], stats=(fast_stats := CaptureStats()))
    monkeypatch.setattr(fastcap, "_MAX_GZIP_BYTES", 1024)  # the sample is "large" now
    assert not fastcap.small_enough(sample)
    monkeypatch.setattr(fastcap, "_Parsed", None)  # nothing may read it whole
    assert scan_symbols([sample]) == ["BTCUSDT"]
    streamed = parse_tape([sample], ["BTCUSDT"], stats=(slow_stats := CaptureStats()))
    assert fast_stats == slow_stats
    for name in COLUMN_NAMES:
        a, b = getattr(whole.ticks["BTCUSDT"], name), getattr(streamed.ticks["BTCUSDT"], name)
        assert np.array_equal(a, b, equal_nan=True), name

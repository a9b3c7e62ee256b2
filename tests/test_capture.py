"""Reading captures: every line format, gzip or not, receive-time units, markets, mark
prices, and the real recordings."""

from __future__ import annotations

import gzip
from itertools import islice

import numpy as np
import pytest
import trio

from engine import ConfigError, DataError
from engine._config import config_from_dict
from engine._streaming import run_paper
from engine.feeds import (
    CaptureLimits,
    CaptureStats,
    expand_paths,
    merge_captures,
    parse_line,
    read_capture,
    scan_symbols,
)
from engine.feeds._capture import (
    AggTrade,
    BookTicker,
    DepthUpdate,
    Kline,
    MarkPrice,
    Trade,
    open_capture,
)
from engine.feeds._columns import Columns, append_message
from engine.messages import EventKind
from engine.testing import quiet_logger, replay, replay_config

BOOK = (
    b'{"e":"bookTicker","u":1,"s":"BTCUSDT","b":"61800.20","B":"2.507",'
    b'"a":"61800.30","A":"2.510","T":1723161256313,"E":1723161256313}'
)
TRADE = (
    b'{"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":5,'
    b'"p":"61800.30","q":"0.006","X":"MARKET","m":false}'
)
# Real lines of ../shared/data/external/hftbacktest_history/usdm_btcusdt_20230405.dat.gz
# (microsecond stamps): the last mark price update naming the 00:00 funding time, after
# it, and the first naming the next one.
MARK_AT = (
    b'1680652800091265 {"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate",'
    b'"E":1680652800010,"s":"BTCUSDT","p":"28155.10000000","P":"28141.47600845",'
    b'"i":"28165.04857143","r":"0.00002760","T":1680652800000}}'
)
MARK_NEXT = (
    b'1680652801050102 {"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate",'
    b'"E":1680652801000,"s":"BTCUSDT","p":"28155.20000000","P":"28141.47001461",'
    b'"i":"28165.15571429","r":"0.00002760","T":1680681600000}}'
)


def wrap(stream: bytes, data: bytes) -> bytes:
    return b'{"stream":"' + stream + b'","data":' + data + b"}"


def sample_lines(sample, n: int) -> list[tuple[int, bytes]]:
    """The first ``n`` lines of the bundled sample as ``(receive ns, json)``."""
    out = []
    for line in islice(open_capture(sample), n):
        stamp, _, body = line.partition(b" ")
        out.append((int(stamp), body))
    return out


def write(path, lines: list[bytes]):
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    return path


@pytest.mark.parametrize(
    ("line", "ts"),
    [
        (b"1723161255088169167 " + wrap(b"btcusdt@bookTicker", BOOK), 1723161255088169167),
        (b"1723161255088169 " + wrap(b"btcusdt@bookTicker", BOOK), 1723161255088169000),
        (b"1723161255088 " + wrap(b"btcusdt@bookTicker", BOOK), 1723161255088000000),
        (b"1626992741.06217: " + wrap(b"btcusdt@bookTicker", BOOK), 1626992741062170112),
        (wrap(b"btcusdt@bookTicker", BOOK), None),
        (BOOK, None),
    ],
    ids=["ns-prefix", "us-prefix", "ms-prefix", "seconds-prefix", "bare-wrapped", "bare-event"],
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
        (b'{"result":null,"id":1}', "unknown_message"),
        (b"123 {not json", "malformed_json"),
        (b"garbage {}", "bad_prefix"),
        (b"", "blank"),
        (b'{"e":"trade","s":"BTCUSDT","p":"1e400","q":"1","m":true}', "bad_field"),
    ],
)
def test_non_events_are_counted_not_fatal(line, reason):
    stats = CaptureStats()
    assert parse_line(line, stats) is None
    assert stats.skipped == {reason: 1}


def test_gzip_and_plain_give_the_same_events(tmp_path):
    lines = [
        b"1723161255088169167 " + wrap(b"btcusdt@bookTicker", BOOK),
        b"1723161255088169000 " + wrap(b"btcusdt@trade", TRADE),  # clock stepped back
        b"not json",
        b"1723161255090000000 " + BOOK.replace(b'"u":1,', b'"u":2,'),
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
        assert stats.clamped == 1  # the trade stamped before the quote
    assert results[0] == [
        (1723161255088169167, "BookTicker"),
        (1723161255088169167, "Trade"),
        (1723161255090000000, "BookTicker"),
    ]
    assert results[0] == results[1] == results[2]


def test_expand_paths_skips_docs_and_rejects_missing(tmp_path):
    (tmp_path / "a.gz").write_bytes(b"")
    (tmp_path / "SOURCES.md").write_text("# docs")
    (tmp_path / "SOURCES.tsv").write_text("file\trepo\n")
    (tmp_path / "LICENSE").write_text("MIT")
    assert [p.name for p in expand_paths([tmp_path])] == ["a.gz"]

    with pytest.raises(DataError, match="no such market data file or directory"):
        expand_paths([tmp_path / "missing.gz"])


# -- receive-time units ------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "restamp"),
    [
        ("ns", lambda ns: str(ns).encode() + b" "),
        ("us", lambda ns: str(ns // 1_000).encode() + b" "),
        ("ms", lambda ns: str(ns // 1_000_000).encode() + b" "),
        ("s", lambda ns: f"{ns / 1e9:.6f}: ".encode()),
    ],
)
def test_receive_unit_is_found_per_file(tmp_path, sample, unit, restamp):
    lines = sample_lines(sample, 3000)
    path = write(tmp_path / f"cap_{unit}.gz", [restamp(ns) + body for ns, body in lines])
    stats = CaptureStats()
    events = list(read_capture(path, stats))
    assert stats.units == {str(path): unit}
    # The replay times are the sample's own, to the precision the unit keeps.
    reference = [ts for ts, _m in read_capture(sample, CaptureStats())][: len(events)]
    precision = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000}[unit]
    got = np.array([ts for ts, _m in events])
    assert np.abs(got - np.array(reference)).max() < precision + 1
    span = (got[-1] - got[0]) / 1e9
    assert span == pytest.approx((reference[-1] - reference[0]) / 1e9, abs=0.01)


def test_a_file_whose_stamps_miss_their_event_times_is_refused(tmp_path, sample):
    # Receive stamps two hours late (a clock in the wrong zone): no unit fits.
    lines = sample_lines(sample, 200)
    late = 2 * 3600 * 10**9
    path = write(tmp_path / "late.gz", [str(ns + late).encode() + b" " + b for ns, b in lines])
    with pytest.raises(DataError, match=r"late\.gz:1: receive time .* data.max_receive_skew_ms"):
        list(read_capture(path, CaptureStats()))
    # The bound is configurable: three hours accepts them.
    events = list(
        read_capture(path, CaptureStats(), limits=CaptureLimits(max_receive_skew_ms=3 * 3600_000))
    )
    assert len(events) == 199  # (the REST snapshot line is not an event)


def test_a_clock_that_moves_mid_file_is_refused_at_the_line(tmp_path, sample):
    lines = sample_lines(sample, 400)
    step = 20 * 60 * 10**9  # the collector's clock jumps 20 min at line 301
    stamped = [
        str(ns + (step if n > 300 else 0)).encode() + b" " + body
        for n, (ns, body) in enumerate(lines, 1)
    ]
    path = write(tmp_path / "stepped.gz", stamped)
    with pytest.raises(DataError, match=r"stepped\.gz:301: receive time is \+119\d\.\d+ s from"):
        list(read_capture(path, CaptureStats()))


def test_the_summary_says_which_unit_each_file_used(tmp_path, sample, capsys):
    from engine._cli import main

    lines = sample_lines(sample, 3000)
    us = write(tmp_path / "micro.gz", [str(ns // 1000).encode() + b" " + b for ns, b in lines])
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[journal]\ndir = "{tmp_path / "runs"}"\n[logging]\npath = "{tmp_path / "l.jsonl"}"\n'
    )
    assert main(["--config", str(cfg), "--data", str(us), "--data", str(sample)]) == 0
    out = capsys.readouterr().out
    (units,) = [line for line in out.splitlines() if line.startswith("  time units")]
    assert "us: micro.gz" in units and "ns: btcusdt_20240808_180s.gz" in units
    # The copy holds the sample's first 3000 lines (one a REST snapshot): they count once.
    assert "duplicates 2999" in out


def test_stamps_off_exit_2_with_one_line_naming_file_and_line(tmp_path, sample, capsys):
    from engine._cli import main

    lines = sample_lines(sample, 200)
    bad = write(tmp_path / "bad.gz", [str(ns // 1000).encode() + b"000000 " + b for ns, b in lines])
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[journal]\ndir = "{tmp_path / "runs"}"\n[logging]\npath = "{tmp_path / "l.jsonl"}"\n'
    )
    assert main(["--config", str(cfg), "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{bad}:1: receive time" in err[0]


# -- markets -------------------------------------------------------------------------

# Spot streams as Binance sends them: bookTicker has no "e" (nor "E"/"T"), depth diffs
# have no "pu", trades carry "M".
SPOT = [
    b'1680652700423575 {"stream":"btcusdt@bookTicker","data":{"u":36027713301,"s":"BTCUSDT",'
    b'"b":"28140.01000000","B":"1.20000000","a":"28140.02000000","A":"0.50000000"}}',
    b'1680652700441533 {"stream":"btcusdt@trade","data":{"e":"trade","E":1680652700455,'
    b'"s":"BTCUSDT","t":3076000001,"p":"28140.02000000","q":"0.01000000","b":1,"a":2,'
    b'"T":1680652700452,"m":false,"M":true}}',
    b'1680652700501685 {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate",'
    b'"E":1680652700500,"s":"BTCUSDT","U":36027713302,"u":36027713310,'
    b'"b":[["28140.01000000","1.10000000"]],"a":[]}}',
    b'1680652700523575 {"stream":"btcusdt@bookTicker","data":{"u":36027713311,"s":"BTCUSDT",'
    b'"b":"28140.01000000","B":"1.10000000","a":"28140.02000000","A":"0.40000000"}}',
]


def test_spot_streams_are_recognised_and_kept_apart(tmp_path, sample):
    spot = write(tmp_path / "spot_btcusdt.gz", SPOT)
    stats = CaptureStats()
    events = list(read_capture(spot, stats))
    assert [type(m).__name__ for _ts, m in events] == [
        "BookTicker",
        "Trade",
        "DepthUpdate",
        "BookTicker",
    ]
    assert {m.symbol for _ts, m in events} == {"BTCUSDT.SPOT"}
    assert stats.skipped == {} and stats.units == {str(spot): "us"}
    assert events[0][0] == 1680652700423575000
    # Beside the USD-M capture of the same name: two symbols, never mixed.
    assert scan_symbols([sample, spot]) == ["BTCUSDT", "BTCUSDT.SPOT"]
    merged = list(merge_captures([sample, spot], CaptureStats(), frozenset({"BTCUSDT"})))
    assert len(merged) == len(list(read_capture(sample, CaptureStats())))


def test_a_spot_symbol_is_refused_for_paper_trading_with_one_line(tmp_path):
    config = config_from_dict(
        {"engine": {"mode": "paper"}, "data": {"symbols": ["BTCUSDT.SPOT"]}},
        source="<test>",
        base_dir=str(tmp_path),
    )
    with pytest.raises(ConfigError, match=r"data.symbols: BTCUSDT.SPOT is a spot market"):
        trio.run(paper, config)


async def paper(config):
    # Refused before anything connects: a generous bound, never reached.
    with trio.fail_after(60):
        await run_paper(config, log=quiet_logger(), stop=trio.Event())


def test_a_spot_stream_inside_a_usdm_capture_is_refused(tmp_path, sample):
    lines = [str(ns).encode() + b" " + b for ns, b in sample_lines(sample, 100)]
    spot_book = b"1723161255130000000 " + SPOT[0].partition(b" ")[2]
    path = write(tmp_path / "mixed.gz", [*lines, spot_book])
    with pytest.raises(DataError, match=r"mixed\.gz:101: spot stream in a USD-M capture"):
        list(read_capture(path, CaptureStats()))


# -- mark price ----------------------------------------------------------------------


def test_mark_price_updates_are_decoded_into_the_batch_columns():
    stats = CaptureStats()
    ts, msg = parse_line(MARK_AT, stats)
    assert isinstance(msg, MarkPrice)
    assert (msg.mark, msg.index, msg.funding_rate, msg.next_funding_time) == (
        28155.1,
        28165.04857143,
        0.0000276,
        1680652800000,
    )
    cols = Columns()
    append_message(cols, ts, 0, parse_line(BOOK.replace(b"BTCUSDT", b"BTCUSDT"), stats)[1])
    append_message(cols, ts, 1, msg)
    ticks = cols.take()
    assert ticks is not None
    assert list(ticks.kind) == [EventKind.QUOTE, EventKind.MARK]
    assert ticks.price[1] == 28155.1
    assert ticks.index_price[1] == 28165.04857143 and np.isnan(ticks.index_price[0])
    assert ticks.funding_rate[1] == 0.0000276 and np.isnan(ticks.funding_rate[0])
    assert list(ticks.next_funding_ts) == [0, 1680652800000 * 10**6]


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
    assert set(stats.units.values()) == {"s"}


def test_replay_of_a_microsecond_capture_runs_at_market_speed(tmp_path, sample):
    lines = sample_lines(sample, 6000)
    path = write(tmp_path / "micro.gz", [str(ns // 1000).encode() + b" " + b for ns, b in lines])
    report = trio.run(replay, replay_config(tmp_path, [path]))
    expected = (lines[-1][0] // 1000 - lines[0][0] // 1000) / 1e6
    assert (report.last_ts - report.first_ts) / 1e9 == pytest.approx(expected, abs=1e-3)
    assert expected > 10  # (read as nanoseconds: 0.01 s)

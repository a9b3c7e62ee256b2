"""Capture input that must not pass silently: bad values, int64 overflow, truncated gzip,
far-away timestamps, duplicates, and contracts the engine does not support."""

from __future__ import annotations

import gzip
from itertools import islice

import msgspec
import pytest
import trio

from engine import DataError
from engine.book import BookDecodeError, decode_levels
from engine.feeds import CaptureStats, merge_captures, read_capture, scan_symbols
from engine.feeds._capture import open_capture
from engine.testing import replay, replay_config

HOUR_NS = 3600 * 10**9


def sample_lines(sample, n: int) -> list[tuple[int, bytes]]:
    out = []
    for line in islice(open_capture(sample), n):
        stamp, _, body = line.partition(b" ")
        out.append((int(stamp), body))
    return out


def stamped(lines: list[tuple[int, bytes]]) -> list[bytes]:
    return [str(ns).encode() + b" " + body for ns, body in lines]


def write(path, lines: list[bytes]):
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    return path


def book(u: int, bid: str, bid_qty: str, ask: str, ask_qty: str, e: int = 1723161256313) -> bytes:
    return (
        b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":%d,"s":"BTCUSDT",'
        b'"b":"%s","B":"%s","a":"%s","A":"%s","T":%d,"E":%d}}'
        % (u, bid.encode(), bid_qty.encode(), ask.encode(), ask_qty.encode(), e, e)
    )


def trade(t: int, price: str, qty: str, e: int = 1723161256322) -> bytes:
    return (
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":%d,"T":%d,"s":"BTCUSDT",'
        b'"t":%d,"p":"%s","q":"%s","X":"MARKET","m":false}}'
        % (e, e, t, price.encode(), qty.encode())
    )


GOOD = 1723161255088169167  # a receive stamp ~1.2 s before the events' E (as in the sample)


# -- 7: values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (trade(2, "Infinity", "0.006"), "bad_price"),
        (trade(2, "NaN", "0.006"), "bad_price"),
        (trade(2, "0", "0.006"), "bad_price"),
        (trade(2, "-61800.3", "0.006"), "bad_price"),
        (trade(2, "61800.3", "inf"), "bad_qty"),
        (trade(2, "61800.3", "0"), "bad_qty"),
        (trade(2, "61800.3", "-0.006"), "bad_qty"),
        (book(2, "61800.2", "nan", "61800.3", "2.5"), "bad_qty"),
        (book(2, "61800.2", "2.5", "61800.3", "0"), "bad_qty"),
        (book(2, "0", "2.5", "61800.3", "2.5"), "bad_price"),
        (book(2, "61800.4", "2.5", "61800.3", "2.5"), "crossed_book"),
        (book(2, "61800.3", "2.5", "61800.3", "2.5"), "crossed_book"),
    ],
)
def test_bad_values_are_skipped_and_counted_by_reason(tmp_path, line, reason):
    lines = [
        b"%d " % GOOD + book(1, "61800.2", "2.5", "61800.3", "2.5"),
        b"%d " % (GOOD + 1000) + line,
        b"%d " % (GOOD + 2000) + trade(3, "61800.3", "0.006"),
    ]
    stats = CaptureStats()
    events = list(read_capture(write(tmp_path / "c.gz", lines), stats))
    assert len(events) == 2
    assert stats.skipped == {reason: 1}


def test_an_infinite_trade_never_reaches_the_strategy(tmp_path, sample):
    lines = stamped(sample_lines(sample, 4000))
    lines.insert(2000, b"%d " % (GOOD + 10**9) + trade(1, "Infinity", "1"))
    report = trio.run(replay, replay_config(tmp_path, [write(tmp_path / "c.gz", lines)]))
    assert report.skipped["bad_price"] == 1
    assert report.events == 3999  # every real event (one of the 4000 lines is a REST snapshot)


def test_depth_levels_with_no_quantity_are_refused():
    assert decode_levels(msgspec.Raw(b'[["61800.20","0"]]')) == [("61800.20", 0.0)]
    for qty in (b'"NaN"', b'"-1"', b'"Infinity"'):
        with pytest.raises(BookDecodeError, match="quantity"):
            decode_levels(msgspec.Raw(b'[["61800.20",' + qty + b"]]"))


# -- 8: integers beyond int64 ---------------------------------------------------------


def test_integers_beyond_int64_are_skipped_and_the_replay_finishes(tmp_path, sample):
    lines = stamped(sample_lines(sample, 3000))
    huge = b"99999999999999999999"
    lines.insert(1000, b"%d " % GOOD + book(7, "61800.2", "2.5", "61800.3", "2.5", e=int(huge)))
    lines.insert(2000, huge + b" " + trade(7, "61800.3", "0.006"))
    stats = CaptureStats()
    assert len(list(read_capture(write(tmp_path / "c.gz", lines), stats))) == 2999
    assert stats.skipped["time_out_of_range"] == 2
    # Through the whole pipeline (numpy int64 columns): no crash, same counts.
    report = trio.run(replay, replay_config(tmp_path, [tmp_path / "c.gz"]))
    assert report.events == 2999 and report.skipped["time_out_of_range"] == 2


# -- 9: truncated gzip ---------------------------------------------------------------


def test_a_truncated_gzip_replays_to_the_cut_loudly(tmp_path, sample, capsys):
    from engine._cli import main

    whole = sample.read_bytes()
    cut = tmp_path / "cut.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    stats = CaptureStats()
    events = list(read_capture(cut, stats))
    assert 10_000 < len(events) < 40_390
    assert stats.truncated == [str(cut)]
    assert stats.skipped["truncated"] == 1  # the cut line, never passed on as malformed
    assert "malformed_json" not in stats.skipped
    # Without somewhere to report it, a truncated stream is an error.
    with pytest.raises(DataError, match=r"cut\.gz: truncated gzip"):
        list(open_capture(cut))
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[journal]\ndir = "{tmp_path / "runs"}"\n[logging]\npath = "{tmp_path / "l.jsonl"}"\n'
    )
    assert main(["--config", str(cfg), "--data", str(cut)]) == 0
    out = capsys.readouterr().out
    assert f"WARNING       {cut}: truncated gzip, replayed up to the cut" in out
    assert "truncated 1" in out
    assert "truncated gzip" in (tmp_path / "l.jsonl").read_text()


# -- 10: far-away timestamps ---------------------------------------------------------


def test_one_far_future_stamp_does_not_drag_the_events_after_it(tmp_path, sample):
    lines = sample_lines(sample, 3000)
    bad = list(lines)
    bad[1500] = (lines[1500][0] + 80 * 365 * 24 * HOUR_NS, lines[1500][1])  # year 2104
    stats = CaptureStats()
    got = list(read_capture(write(tmp_path / "c.gz", stamped(bad)), stats))
    reference = list(read_capture(write(tmp_path / "ok.gz", stamped(lines)), CaptureStats()))
    assert stats.skipped["time_jump"] == 1
    assert stats.clamped == 0
    assert [ts for ts, _m in got] == [ts for ts, m in reference if m != reference_msg(lines, 1500)]


def reference_msg(lines, index):
    from engine.feeds import parse_line

    return parse_line(str(lines[index][0]).encode() + b" " + lines[index][1], CaptureStats())[1]


def test_one_far_event_time_in_an_unstamped_file_is_skipped(tmp_path, sample):
    bodies = [body for _ns, body in sample_lines(sample, 2000)]
    far = bodies[1000].replace(b'"E":1723161', b'"E":2723161', 1)  # year 2056
    assert far != bodies[1000]
    stats = CaptureStats()
    got = list(read_capture(write(tmp_path / "c.gz", [*bodies[:1000], far, *bodies[1001:]]), stats))
    assert stats.skipped["time_jump"] == 1
    assert max(ts for ts, _m in got) < 1723162000 * 10**9


def test_a_real_gap_in_the_capture_is_kept(tmp_path, sample):
    # The collector was down for two hours: the stamps and the event times both jump.
    lines = sample_lines(sample, 1000)
    gap = 2 * HOUR_NS
    later = [(ns + gap, shift_event_times(body, gap // 10**6)) for ns, body in lines[500:]]
    stats = CaptureStats()
    got = list(read_capture(write(tmp_path / "c.gz", stamped(lines[:500] + later)), stats))
    assert "time_jump" not in stats.skipped
    assert len(got) == 999  # (a REST snapshot line)
    assert got[-1][0] == lines[-1][0] + gap


def shift_event_times(body: bytes, ms: int) -> bytes:
    import re

    return re.sub(rb'"([ET])":(\d+)', lambda m: b'"%s":%d' % (m[1], int(m[2]) + ms), body)


def test_clamped_events_are_counted(tmp_path):
    lines = [
        b"%d " % GOOD + book(1, "61800.2", "2.5", "61800.3", "2.5"),
        b"%d " % (GOOD - 5_000_000) + trade(1, "61800.3", "0.006"),  # 5 ms back
        b"%d " % (GOOD + 1_000) + trade(2, "61800.3", "0.006"),
    ]
    stats = CaptureStats()
    got = [ts for ts, _m in read_capture(write(tmp_path / "c.gz", lines), stats)]
    assert got == [GOOD, GOOD, GOOD + 1_000]
    assert stats.clamped == 1


# -- 11: duplicates ------------------------------------------------------------------


def test_duplicated_lines_are_dropped_and_counted(tmp_path, sample):
    lines = stamped(sample_lines(sample, 2000))
    doubled = [*lines[:1000], lines[999], lines[998], *lines[1000:]]
    stats = CaptureStats()
    events = list(read_capture(write(tmp_path / "c.gz", doubled), stats))
    assert len(events) == 1999
    assert stats.skipped["duplicate"] == 2


def test_the_same_file_twice_replays_once(tmp_path, sample):
    once = trio.run(replay, replay_config(tmp_path / "a", [sample]))
    copy = tmp_path / "copy.gz"
    copy.write_bytes(sample.read_bytes())
    twice = trio.run(replay, replay_config(tmp_path / "b", [sample, copy]))
    assert twice.events == once.events == 40_390
    assert twice.skipped["duplicate"] == 40_390
    assert twice.journal_sha256 == once.journal_sha256
    stats = CaptureStats()
    assert len(list(merge_captures([sample, sample], stats))) == 40_390


# -- 12: contracts that are not USD-M perpetuals -------------------------------------

COIN_BOOK = (
    b'1723161255088169167 {"stream":"btcusd_perp@bookTicker","data":{"e":"bookTicker",'
    b'"u":1,"s":"BTCUSD_PERP","ps":"BTCUSD","b":"61800.2","B":"25","a":"61800.3","A":"31",'
    b'"T":1723161256313,"E":1723161256313}}'
)
DELIVERY_TRADE = (
    b'1723161255088169167 {"stream":"ethusdt_240927@aggTrade","data":{"e":"aggTrade",'
    b'"E":1723161256322,"a":5,"s":"ETHUSDT_240927","p":"2600.1","q":"1.5","f":1,"l":1,'
    b'"T":1723161256322,"m":false}}'
)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (COIN_BOOK, "BTCUSD_PERP is a coin-margined contract"),
        (DELIVERY_TRADE, "ETHUSDT_240927 is a USD-M delivery contract .expires 2024-09-27."),
        # Renamed to look like USD-M: the pair field still says what it is.
        (
            COIN_BOOK.replace(b"BTCUSD_PERP", b"BTCUSDT").replace(b"btcusd_perp", b"btcusdt"),
            'coin-margined capture .pair field "ps":"BTCUSD"',
        ),
    ],
    ids=["coin-margined", "delivery", "renamed-coin-margined"],
)
def test_unsupported_contracts_are_refused_saying_what(tmp_path, line, message, capsys):
    from engine._cli import main

    path = write(tmp_path / "c.gz", [line])
    with pytest.raises(DataError, match=message):
        scan_symbols([path])
    with pytest.raises(DataError, match=message):
        list(read_capture(path, CaptureStats()))
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[journal]\ndir = "{tmp_path / "runs"}"\n[logging]\npath = "{tmp_path / "l.jsonl"}"\n'
    )
    assert main(["--config", str(cfg), "--data", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "not supported" in err[0]


def test_a_renamed_coin_margined_line_deep_in_a_file_is_refused_by_the_scan(tmp_path, sample):
    lines = stamped(sample_lines(sample, 3000))
    renamed = COIN_BOOK.replace(b"BTCUSD_PERP", b"BTCUSDT").replace(b"btcusd_perp", b"btcusdt")
    path = write(tmp_path / "c.gz", [*lines, renamed])
    with pytest.raises(DataError, match="coin-margined capture"):
        scan_symbols([path])

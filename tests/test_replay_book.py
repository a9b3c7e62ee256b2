"""The local book in replay: rebuilt at import by engine.book, stored, read per row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.book import BookSync, OrderBook
from engine.feeds._bookcols import BOOK_LEVELS, book_state, build_book_columns
from engine.feeds._capture import CaptureLimits, CaptureStats, DepthUpdate, merge_captures
from engine.feeds._store import TickStore
from engine.feeds._tape import parse_tape
from engine.messages import EventKind

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "external"
BTC_0808 = EXTERNAL / "hftbacktest" / "btcusdt_20240808.gz"
HISTORY = EXTERNAL / "hftbacktest_history"

needs_data = pytest.mark.skipif(not BTC_0808.exists(), reason="shared captures not present")


@needs_data
def test_replay_book_is_engine_book_fed_the_same_messages():
    stats = CaptureStats()
    tape = parse_tape([BTC_0808], ["BTCUSDT"], stats=stats, book=True)
    ticks = tape.ticks["BTCUSDT"]
    counts = tape.book_counts["BTCUSDT"]
    assert counts["diffs"] == 6551 and counts["snapshots"] == 1 and counts["gaps"] == 0
    # The capture's snapshot (line 55) comes after a few diffs: those rows have no book.
    assert counts["unsynced_rows"] == counts["diffs"] - counts["states"] > 0
    # Independently: the reader's events, a book kept by hand with BookSync.
    (snap_entry,) = stats.snapshots
    _sym, snap_ts, snapshot = snap_entry
    sync = BookSync(OrderBook("BTCUSDT", max_levels=1000))
    loaded = False
    want: list[np.ndarray] = []
    for ts, msg in merge_captures([BTC_0808], CaptureStats(), frozenset({"BTCUSDT"})):
        if type(msg) is not DepthUpdate:
            continue
        if not loaded and snap_ts <= ts:
            sync.on_snapshot(snapshot)
            loaded = True
        sync.on_diff(msg)
        if sync.book.synced and not sync.needs_snapshot:
            want.append(book_state(sync.book))
    assert len(want) == counts["states"] == ticks.book_bid_px.shape[0]
    stacked = np.stack(want)
    for k, name in enumerate(("book_bid_px", "book_bid_qty", "book_ask_px", "book_ask_qty")):
        np.testing.assert_array_equal(getattr(ticks, name), stacked[:, k, :])
    assert ticks.book_bid_px.shape[1] == BOOK_LEVELS
    # book_row: -1 until the first synced depth row, then the latest state, never back.
    depth_rows = np.flatnonzero(ticks.kind == EventKind.DEPTH)
    first = depth_rows[counts["unsynced_rows"]]
    assert (ticks.book_row[:first] == -1).all()
    assert ticks.book_row[first] == 0 and ticks.book_row[-1] == counts["states"] - 1
    assert (np.diff(ticks.book_row[first:]) >= 0).all()
    synced = depth_rows[counts["unsynced_rows"] :]
    np.testing.assert_array_equal(ticks.book_row[synced], np.arange(counts["states"]))
    # Books are ordered and uncrossed.
    assert (ticks.book_bid_px[:, 0] < ticks.book_ask_px[:, 0]).all()
    assert (np.diff(ticks.book_bid_px, axis=1) < 0).all()
    assert (np.diff(ticks.book_ask_px, axis=1) > 0).all()


@needs_data
def test_top_of_book_from_depth_agrees_with_bookticker_mostly():
    # The two streams are separate: a quote may lead or lag the depth diff that
    # carries the same change by a few ms. Count disagreements at each quote row
    # whose book state is from within 50 ms; they must be a small minority.
    ticks = parse_tape([BTC_0808], ["BTCUSDT"], stats=CaptureStats(), book=True).ticks["BTCUSDT"]
    quotes = np.flatnonzero((ticks.kind == EventKind.QUOTE) & (ticks.book_row >= 0))
    state = ticks.book_row[quotes]
    depth_rows = np.flatnonzero(ticks.kind == EventKind.DEPTH)
    state_row = depth_rows[-len(ticks.book_bid_px) :][state]
    fresh = ticks.ts_exchange[quotes] - ticks.ts_exchange[state_row] <= 50_000_000
    q, s = quotes[fresh], state[fresh]
    same = (ticks.bid[q] == ticks.book_bid_px[s, 0]) & (ticks.ask[q] == ticks.book_ask_px[s, 0])
    assert len(q) > 10_000
    share = 1 - same.mean()
    print(f"top-of-book disagreements: {int((~same).sum())} of {len(q)} ({share:.1%})")
    assert share < 0.5


@needs_data
def test_two_symbol_files_each_get_their_own_snapshot(tmp_path):
    paths = sorted(HISTORY.glob("usdm_*usdt_20240718.gz"))
    assert len(paths) == 2
    stats = CaptureStats()
    tape = parse_tape(paths, ["BTCUSDT", "ETHUSDT"], stats=stats, book=True)
    assert sorted(s for s, _ts, _snap in stats.snapshots) == ["BTCUSDT", "ETHUSDT"]
    for symbol in ("BTCUSDT", "ETHUSDT"):
        counts = tape.book_counts[symbol]
        assert counts["snapshots"] == 1 and counts["gaps"] == 0 and counts["states"] > 1000
    btc = tape.ticks["BTCUSDT"].book_bid_px[:, 0]
    eth = tape.ticks["ETHUSDT"].book_bid_px[:, 0]
    assert btc.min() > 50_000 and eth.max() < 10_000  # not each other's book


@needs_data
def test_store_maps_the_book_columns_and_slices_keep_state_indices(tmp_path):
    store = TickStore(tmp_path / "ticks")
    parsed = parse_tape([BTC_0808], ["BTCUSDT"], stats=CaptureStats(), book=True)
    want = parsed.ticks["BTCUSDT"]
    for outcome in ("imported", "hit"):
        tape = store.load(
            [BTC_0808], ["BTCUSDT"], limits=CaptureLimits(), stats=CaptureStats(), book=True
        )
        assert store.last_outcome == outcome
        got = tape.ticks["BTCUSDT"]
        for name in ("book_row", "book_bid_px", "book_bid_qty", "book_ask_px", "book_ask_qty"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
            assert not getattr(got, name).flags.writeable
        assert tape.book_counts["BTCUSDT"] == parsed.book_counts["BTCUSDT"]
    part = got.rows(50_000, 50_010)
    assert len(part.book_row) == 10 and part.book_bid_px.shape == got.book_bid_px.shape
    assert part.book_bid_px[part.book_row[0], 0] == got.book_bid_px[got.book_row[50_000], 0]


def test_gap_drops_the_book_until_the_next_snapshot():
    import msgspec

    from engine.book import DepthSnapshot

    def diff(first, last, prev, bid):
        return DepthUpdate(
            symbol="X",
            first_id=first,
            last_id=last,
            prev_last_id=prev,
            bids=msgspec.Raw(f'[["{bid}","1.0"]]'.encode()),
            asks=msgspec.Raw(b'[["20.0","2.0"]]'),
        )

    def snap(last_id):
        return DepthSnapshot(
            last_update_id=last_id,
            bids=msgspec.Raw(b'[["9.0","1.0"]]'),
            asks=msgspec.Raw(b'[["21.0","1.0"]]'),
        )

    depth = [
        (0, 100, diff(1, 5, 0, "10.0")),  # before the snapshot: buffered
        (1, 200, diff(6, 8, 5, "11.0")),  # snapshot at 150 (id 4): both apply
        (3, 300, diff(12, 14, 10, "12.0")),  # gap (pu 10 != 8)
        (4, 400, diff(15, 16, 14, "13.0")),  # still waiting
        (6, 600, diff(17, 18, 16, "14.0")),  # snapshot at 500 (id 16) -> applies
    ]
    cols = build_book_columns(8, depth, [(150, snap(4)), (500, snap(16))], levels=4)
    assert cols.counts["gaps"] == 1 and cols.counts["snapshots"] == 2
    assert cols.counts["unsynced_rows"] == 3 and cols.counts["states"] == 2
    assert cols.book_row.tolist() == [-1, 0, 0, -1, -1, -1, 1, 1]
    # State 0: snapshot 9/21, then diffs 10 and 11 on the bid, 20 on the ask.
    np.testing.assert_array_equal(cols.bid_px[0], [11.0, 10.0, 9.0, np.nan])
    np.testing.assert_array_equal(cols.bid_qty[0], [1.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(cols.ask_px[0], [20.0, 21.0, np.nan, np.nan])
    np.testing.assert_array_equal(cols.ask_qty[0], [2.0, 1.0, 0.0, 0.0])
    # State 1: the second snapshot (id 16, bid 9), the buffered diff 15..16 that
    # spans it (bid 13) and the diff after it (bid 14); 11 and 10 are gone.
    np.testing.assert_array_equal(cols.bid_px[1], [14.0, 13.0, 9.0, np.nan])

"""Live market data against the loopback exchange: third-party client, faults, recorder.

The loopback server plays the bundled BTCUSDT sample (bookTicker, trade and
depth@0ms, with a REST snapshot) at many times the recorded pace; the engine runs
in paper mode in the same Trio run, so each test is a real websocket and HTTP
conversation over 127.0.0.1.
"""

from __future__ import annotations

import gzip
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from _loopback import QUIET, FeedWatch, loopback_doc, run_on_loopback

from engine import config_from_dict
from engine.feeds import CaptureLimits, CaptureStats, read_capture
from engine.feeds._record import record
from engine.feeds._recorder import CaptureWriter
from engine.venues.sim._recorded import load_recording
from engine.venues.sim._stream_server import Fault, ServerSettings, StreamServer

SAMPLE = Path(__file__).resolve().parents[1] / "data/sample/btcusdt_20240808_180s.gz"
SPEED = 20.0


@pytest.fixture(scope="module")
def recording():
    return load_recording([SAMPLE])


def paper_config(tmp_path: Path, ws_port: int, rest_port: int, **feeds):
    return config_from_dict(
        paper_doc(tmp_path, ws_port, rest_port, **feeds), source="<test>", base_dir=str(tmp_path)
    )


def paper_doc(tmp_path: Path, ws_port: int, rest_port: int, **feeds) -> dict[str, Any]:
    defaults = {
        "backoff_initial_ms": 50,
        "backoff_max_ms": 500,
        # Far above any pause of a busy machine: no reconnect the test did not
        # ask for (the stall test sets its own, below its stall).
        "stale_ms": 60_000,
    }
    doc = loopback_doc(tmp_path, ws_port, rest_port, **{**defaults, **feeds})
    # Wall-clock buckets: at 20x pace 20 ms is 0.4 s of recorded market.
    doc["strategy"] = {"sample_ms": 20, "fast": 3, "slow": 8, "rsi_period": 5}
    doc["hardware"] = {"enabled": False}
    return doc


async def paper_run(tmp_path, recording, faults=(), **feeds):
    server = StreamServer(recording, ServerSettings(speed=SPEED, faults=tuple(faults)), QUIET)
    watch = FeedWatch(recording)
    report = await run_on_loopback(
        server,
        tmp_path,
        lambda ws_port, rest_port: paper_doc(tmp_path, ws_port, rest_port, **feeds),
        make_feed=watch.make_feed,
        until=watch.caught_up,
    )
    return report, server


def trade_ids(recording) -> list[int]:
    return [orjson.loads(m.data)["t"] for m in recording.messages if m.stream.endswith("@trade")]


def check_trades_complete(report, recording):
    sym = report.feed["symbols"]["BTCUSDT"]
    assert sym["trade_id_duplicates"] == 0
    assert sym["trade_id_gaps"] == 0
    ids = trade_ids(recording)
    # From the first trade the feed saw to the end, every id exactly once.
    assert sym["trades"] == len([i for i in ids if i >= ids[-1] - sym["trades"] + 1])


TRANSPORTS = pytest.mark.parametrize("transport", ["wsproto", "trio-websocket"])


@TRANSPORTS
async def test_clean_run_sees_every_message(tmp_path, recording, transport):
    report, server = await paper_run(tmp_path, recording, transport=transport)
    feed = report.feed
    assert feed["connects"] == 1 and feed["reconnects"] == 0
    # Every message written to the socket (the server counts after the write), and
    # every one received.
    assert server.sent == feed["messages"] == len(recording.messages)
    assert feed["symbols"]["BTCUSDT"]["book_synced"]
    check_trades_complete(report, recording)
    assert report.orders > 0 and report.fills > 0


@TRANSPORTS
async def test_dropped_connection_reconnects_backfills_and_resyncs(tmp_path, recording, transport):
    faults = [Fault(kind="drop", at_s=2.0)]
    report, _server = await paper_run(tmp_path, recording, faults, transport=transport)
    feed = report.feed
    sym = feed["symbols"]["BTCUSDT"]
    assert feed["reconnects"] >= 1
    assert sym["backfilled"] > 0  # trades played while disconnected came over REST
    check_trades_complete(report, recording)
    assert sym["book_resyncs"] >= 2 and sym["book_synced"]


async def test_stalled_stream_is_detected_as_stale(tmp_path, recording):
    stall = Fault(kind="stall", at_s=2.0, arg=3.0)
    report, _server = await paper_run(tmp_path, recording, [stall], stale_ms=1500)
    feed = report.feed
    assert feed["stale_reconnects"] >= 1
    check_trades_complete(report, recording)
    assert feed["symbols"]["BTCUSDT"]["book_synced"]


async def test_depth_gap_triggers_a_book_resync(tmp_path, recording):
    report, _server = await paper_run(tmp_path, recording, [Fault(kind="gap", at_s=2.0)])
    sym = report.feed["symbols"]["BTCUSDT"]
    assert sym["book_gaps"] >= 1
    assert sym["book_resyncs"] >= 2 and sym["book_synced"]


async def test_garbage_is_counted_not_fatal(tmp_path, recording):
    report, _server = await paper_run(tmp_path, recording, [Fault(kind="garbage", at_s=2.0)])
    assert report.feed["malformed"] == 1
    check_trades_complete(report, recording)


@TRANSPORTS
async def test_planned_reconnect_overlaps_with_no_gap(tmp_path, recording, transport):
    # Every 2 s a successor comes up next to the old connection and takes over where
    # the two streams meet (tests/test_feed_handover.py steers each order of that
    # race); stale_ms stays far above any pause, so no other reconnect happens.
    report, _server = await paper_run(
        tmp_path, recording, planned_reconnect_s=2.0, transport=transport
    )
    feed = report.feed
    assert feed["planned_reconnects"] >= 1
    assert feed["reconnects"] == 0  # a hand-over, not a failure
    assert feed["messages"] == len(recording.messages)  # none lost, none passed twice
    sym = feed["symbols"]["BTCUSDT"]
    assert sym["backfilled"] == 0
    check_trades_complete(report, recording)


def _third_party_receive(url: str, n: int) -> list[str]:
    import websockets.sync.client

    with websockets.sync.client.connect(url) as ws:
        return [ws.recv() for _ in range(n)]


async def test_third_party_client_gets_byte_identical_messages(recording):
    pytest.importorskip("websockets")
    # Byte for byte needs the capture's own times (the default re-times them).
    server = StreamServer(recording, ServerSettings(speed=SPEED, original_times=True), QUIET)
    n = 200
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ws_port, _rest = await nursery.start(server.serve, "127.0.0.1", 0, 0)
            raw_url = f"ws://127.0.0.1:{ws_port}/ws/btcusdt@bookTicker"
            combined = f"ws://127.0.0.1:{ws_port}/stream?streams=btcusdt@trade/btcusdt@depth@0ms"
            raw_msgs, combined_msgs = await trio.to_thread.run_sync(
                lambda: _two_clients(raw_url, combined, n)
            )
            nursery.cancel_scope.cancel()
    book = [m.data.decode() for m in recording.messages if m.stream == "btcusdt@bookTicker"]
    other = [
        m.envelope.decode()
        for m in recording.messages
        if m.stream in ("btcusdt@trade", "btcusdt@depth@0ms")
    ]
    # A client joining after playback began starts mid-stream: what it gets must be
    # a contiguous run of the capture, byte for byte.
    for got, expected in ((raw_msgs, book), (combined_msgs, other)):
        start = expected.index(got[0])
        assert got == expected[start : start + n]


def _two_clients(raw_url: str, combined_url: str, n: int) -> tuple[list[str], list[str]]:
    # Both subscribe before playback starts (it starts at the first connection,
    # so the first client also waits for the second: the server plays on).
    out: dict[str, list[str]] = {}
    threads = [
        threading.Thread(target=lambda: out.__setitem__("raw", _third_party_receive(raw_url, n))),
        threading.Thread(
            target=lambda: out.__setitem__("combined", _third_party_receive(combined_url, n))
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=50)
    return out["raw"], out["combined"]


async def test_recorder_writes_what_replay_reads(tmp_path, recording):
    server = StreamServer(recording, ServerSettings(speed=SPEED, original_times=True), QUIET)
    writer = CaptureWriter(tmp_path / "rec", rotate_bytes=2 << 20)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
            config = paper_config(tmp_path, ws_port, rest_port)
            lines = await record(config, writer, QUIET, duration=2.0)
            nursery.cancel_scope.cancel()
    writer.close()
    assert lines > 100 and len(writer.files) >= 1
    for path in writer.files:
        gzip.decompress(path.read_bytes())  # every file is a complete gzip stream
    stats = CaptureStats()
    # The exchange served 2024's event times today: stamps and E are years apart.
    years = CaptureLimits(max_receive_skew_ms=10 * 365 * 86_400_000)
    replayed = [m for path in writer.files for _ts, m in read_capture(path, stats, limits=years)]
    assert len(replayed) == lines and stats.skipped == {}
    sent = {m.envelope for m in recording.messages}
    recorded = [
        line.split(b" ", 1)[1]
        for path in writer.files
        for line in gzip.decompress(path.read_bytes()).splitlines()
    ]
    assert all(r in sent for r in recorded)  # byte for byte what the exchange sent


def test_partial_depth_streams_never_reach_the_diff_book():
    from engine.feeds._live import _is_partial_depth

    assert _is_partial_depth("btcusdt@depth5")
    assert _is_partial_depth("btcusdt@depth20@100ms")
    assert not _is_partial_depth("btcusdt@depth@100ms")
    assert not _is_partial_depth("btcusdt@depth")
    assert not _is_partial_depth("btcusdt@bookTicker")

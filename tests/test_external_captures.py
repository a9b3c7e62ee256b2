"""Every capture in ../shared/data/external replays at the speed of its own event times.

For each file the oracle is an independent reading (orjson per line for websocket
captures, the csv module for LEAN bars), never the reader under test: which market
events the file holds, of which kinds, and the span of their event times. The replay
through the whole pipeline must span the same market time (within a second: receive
stamps jitter against ``E``) and pass on every one of those events; the reader must
decode every kind the file holds (none skipped as unknown).
"""

from __future__ import annotations

import calendar
import csv
import io
import time
import zipfile
from collections import Counter
from pathlib import Path

import orjson
import pytest
import trio

from engine import DataError
from engine.feeds import CaptureStats, expand_paths, merge_captures
from engine.testing import replay, replay_config

EXTERNAL = Path(__file__).resolve().parents[1].parent / "shared/data/external"

DIRS = ("hftbacktest", "hftbacktest_history", "cryptofeed", "lean")
FILES = expand_paths([EXTERNAL / d for d in DIRS]) if EXTERNAL.exists() else []
# Files of those folders that hold no market events: a REST exchangeInfo reply and the
# cryptofeed config (BINANCE_FUTURES.0), REST depth snapshots (BINANCE_FUTURES.http.0.0).
NOT_MARKET = {"BINANCE_FUTURES.0", "BINANCE_FUTURES.http.0.0"}
MARKET_KINDS = {"bookTicker", "trade", "aggTrade", "depthUpdate", "kline", "markPriceUpdate"}
STRUCT_KIND = {
    "BookTicker": "bookTicker",
    "Trade": "trade",
    "AggTrade": "aggTrade",
    "DepthUpdate": "depthUpdate",
    "Kline": "kline",
    "MarkPrice": "markPriceUpdate",
}

pytestmark = pytest.mark.skipif(not FILES, reason="../shared/data/external is not here")


def _lines(path: Path) -> list[bytes]:
    import gzip

    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.split(b"\n")


def oracle(path: Path) -> tuple[Counter[str], int, int]:
    """``(events by kind, first E ms, last E ms)`` as read independently of the engine."""
    kinds: Counter[str] = Counter()
    times: list[int] = []
    if path.suffix == ".zip":  # LEAN bars: ms since midnight of the day in the name
        with zipfile.ZipFile(path) as archive:
            (name,) = archive.namelist()
            text = archive.read(name).decode()
        midnight = calendar.timegm(time.strptime(name[:8], "%Y%m%d")) * 1000
        kind = "bookTicker" if "_quote" in name else "kline"
        for row in csv.reader(io.StringIO(text)):
            kinds[kind] += 1
            times.append(midnight + int(row[0]) + 59_999)
        return kinds, min(times), max(times)
    for line in _lines(path):
        start = line.find(b"{")
        if start < 0:
            continue
        try:
            obj = orjson.loads(line[start:])
        except orjson.JSONDecodeError:
            continue
        data = obj.get("data", obj) if isinstance(obj, dict) else {}
        kind = data.get("e") if isinstance(data, dict) else None
        if kind is None and "stream" in obj:
            kind = obj["stream"].split("@")[1]
        if kind not in MARKET_KINDS:
            continue
        kinds[kind] += 1
        times.append(data["E"])
    return kinds, (min(times) if times else 0), (max(times) if times else 0)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_capture_replays_over_its_event_time_span(tmp_path, path):
    kinds, first_e, last_e = oracle(path)
    if path.name in NOT_MARKET:
        assert not kinds
        with pytest.raises(DataError, match="no market events found"):
            trio.run(replay, replay_config(tmp_path, [path]))
        return
    assert kinds, "a capture folder file with no market events: add it to NOT_MARKET"

    stats = CaptureStats()
    decoded = Counter(STRUCT_KIND[type(m).__name__] for _ts, m in merge_captures([path], stats))
    assert decoded == kinds  # every kind decoded, every event of it
    assert not {"unknown_message", "bad_field"} & set(stats.skipped)

    report = trio.run(replay, replay_config(tmp_path, [path]))
    assert report.events == kinds.total()
    replayed_s = (report.last_ts - report.first_ts) / 1e9
    assert replayed_s == pytest.approx((last_e - first_e) / 1e3, abs=1.0)
    assert report.feed["units"] == {str(path): stats.units[str(path)]}


def test_the_2023_pair_replays_as_its_8_and_a_half_minutes(tmp_path):
    # The case: microsecond stamps once read as nanoseconds (0.51 s of market).
    folder = EXTERNAL / "hftbacktest_history"
    pair = [folder / "usdm_btcusdt_20230404.dat.gz", folder / "usdm_btcusdt_20230405.dat.gz"]
    report = trio.run(replay, replay_config(tmp_path, pair))
    assert (report.last_ts - report.first_ts) / 1e9 == pytest.approx(514.2, abs=1.0)
    assert set(report.feed["units"].values()) == {"us"}
    assert report.events == 73_764

"""Order book cost: applying diffs and reading the top, next to a plain-dict reference.

``python -m tools.bench book [--data PATH] [--repeat N] [--depth N]`` (or
``python -m tools.bench.book ...``) replays every
diff of a capture that the sync protocol applies (after its REST snapshot) and
prints JSON with, per implementation, the microseconds per diff (decode + apply;
median, p90, p99 of the per-diff times, median over repeats) and the cost of
reads at states sampled along the replay:

- ``book``: :meth:`engine.book.OrderBook.apply_diff` on the raw levels;
- ``book_sync``: the same through :meth:`engine.book.BookSync.on_diff` (protocol);
- ``decode_only``: msgspec decoding of the levels, the floor of both;
- ``dict_reference``: what a plain implementation does in the same process:
  ``msgspec.json.decode`` to lists of strings, a ``dict[price_str, qty_str]`` per
  side, ``max(bids, key=float)`` for the best bid and ``heapq.nlargest`` for the
  top N.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from engine.book import (
    ApplyResult,
    BookSync,
    DepthSnapshot,
    OrderBook,
    Side,
    decode_levels,
    decode_snapshot,
)
from engine.feeds._capture import CaptureStats, DepthUpdate, open_capture, parse_line

ROOT = Path(__file__).resolve().parents[2]
FULL = ROOT.parent / "shared/data/external/hftbacktest/btcusdt_20240808.gz"
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
_READ_EVERY = 64  # sample the read costs at every 64th state
_READS = 200  # reads per sample for the book (one read is ~0.1-1 us)


def _load(path: Path) -> tuple[DepthSnapshot, list[DepthUpdate]]:
    """The first REST snapshot and every diff of the capture, in file order."""
    stats = CaptureStats()
    snapshot: DepthSnapshot | None = None
    diffs: list[DepthUpdate] = []
    for line in open_capture(path):
        if b'"lastUpdateId"' in line:
            if snapshot is None:
                snapshot = decode_snapshot(line[line.find(b"{") :])
            continue
        if b"depthUpdate" not in line:
            continue
        parsed = parse_line(line, stats)
        if parsed is not None and isinstance(parsed[1], DepthUpdate):
            diffs.append(parsed[1])
    if snapshot is None:
        raise SystemExit(f"{path}: no REST depth snapshot in the capture")
    return snapshot, diffs


def _applied(snapshot: DepthSnapshot, diffs: list[DepthUpdate]) -> list[DepthUpdate]:
    """The diffs the sync protocol applies after the snapshot, in order."""
    sync = BookSync(OrderBook(_symbol_of(diffs)))
    sync.on_snapshot(snapshot)
    out = [d for d in diffs if sync.on_diff(d) is ApplyResult.APPLIED]
    if sync.stats.gaps:
        raise SystemExit("the capture's pu chain has a gap; benchmark a gap-free capture")
    return out


def _symbol_of(diffs: list[DepthUpdate]) -> str:
    return diffs[0].symbol if diffs else ""


def _percentiles(ns: list[int]) -> dict[str, float]:
    ordered = sorted(ns)
    n = len(ordered)
    return {
        "median": ordered[n // 2] / 1e3,
        "p90": ordered[int(n * 0.9)] / 1e3,
        "p99": ordered[int(n * 0.99)] / 1e3,
    }


def _per_read_ns(fn: Callable[[], object], reads: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(reads):
        fn()
    return (time.perf_counter_ns() - t0) / reads


class DictBook:
    """The plain reference: a ``dict[price_str, qty_str]`` per side."""

    def __init__(self, snapshot: DepthSnapshot) -> None:
        self.bids: dict[str, str] = dict(msgspec.json.decode(snapshot.bids))
        self.asks: dict[str, str] = dict(msgspec.json.decode(snapshot.asks))
        self.last = snapshot.last_update_id

    def apply(self, diff: DepthUpdate) -> None:
        for side, raw in ((self.bids, diff.bids), (self.asks, diff.asks)):
            for price, qty in msgspec.json.decode(raw):
                if float(qty) == 0.0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.last = diff.last_id

    def best(self) -> tuple[str, str]:
        return max(self.bids, key=float), min(self.asks, key=float)

    def top(self, n: int) -> list[str]:
        return heapq.nlargest(n, self.bids, key=float)


def _run_book(snapshot: DepthSnapshot, diffs: list[DepthUpdate]) -> tuple[list[int], OrderBook]:
    book = OrderBook(_symbol_of(diffs))
    book.apply_snapshot(snapshot.last_update_id, snapshot.bids, snapshot.asks)
    out: list[int] = []
    clock = time.perf_counter_ns
    apply = book.apply_diff
    for d in diffs:
        t0 = clock()
        apply(d.first_id, d.last_id, d.prev_last_id, d.bids, d.asks, tx_time=d.tx_time)
        out.append(clock() - t0)
    return out, book


def _book_reads(snapshot: DepthSnapshot, diffs: list[DepthUpdate], depth: int) -> dict[str, float]:
    """Per-read ns at every 64th state of the replay (a pass of its own, so that
    the reads do not disturb the apply timings)."""
    book = OrderBook(_symbol_of(diffs))
    book.apply_snapshot(snapshot.last_update_id, snapshot.bids, snapshot.asks)
    best: list[float] = []
    levels: list[float] = []
    imbalance: list[float] = []

    def best_bid_ask() -> object:
        return book.best_bid(), book.best_ask()

    for i, d in enumerate(diffs):
        book.apply_diff(d.first_id, d.last_id, d.prev_last_id, d.bids, d.asks)
        if i % _READ_EVERY == 0:
            best.append(_per_read_ns(best_bid_ask, _READS))
            levels.append(_per_read_ns(lambda: book.levels(Side.BID, depth), _READS))
            imbalance.append(_per_read_ns(lambda: book.imbalance(depth), _READS))
    return {
        "best": statistics.median(best),
        "levels": statistics.median(levels),
        "imbalance": statistics.median(imbalance),
    }


def _run_sync(snapshot: DepthSnapshot, diffs: list[DepthUpdate]) -> list[int]:
    sync = BookSync(OrderBook(_symbol_of(diffs)))
    sync.on_snapshot(snapshot)
    clock = time.perf_counter_ns
    on_diff = sync.on_diff
    out = []
    for d in diffs:
        t0 = clock()
        on_diff(d)
        out.append(clock() - t0)
    return out


def _run_decode(diffs: list[DepthUpdate]) -> list[int]:
    clock = time.perf_counter_ns
    out = []
    for d in diffs:
        t0 = clock()
        decode_levels(d.bids)
        decode_levels(d.asks)
        out.append(clock() - t0)
    return out


def _run_dict(snapshot: DepthSnapshot, diffs: list[DepthUpdate]) -> list[int]:
    ref = DictBook(snapshot)
    out: list[int] = []
    clock = time.perf_counter_ns
    for d in diffs:
        t0 = clock()
        ref.apply(d)
        out.append(clock() - t0)
    return out


def _dict_reads(snapshot: DepthSnapshot, diffs: list[DepthUpdate], depth: int) -> dict[str, float]:
    ref = DictBook(snapshot)
    best: list[float] = []
    top: list[float] = []
    for i, d in enumerate(diffs):
        ref.apply(d)
        if i % _READ_EVERY == 0:
            best.append(_per_read_ns(ref.best, 3))
            top.append(_per_read_ns(lambda: ref.top(depth), 3))
    return {"best": statistics.median(best), "top": statistics.median(top)}


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark and return its JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench book")
    parser.add_argument("--data", type=Path, default=FULL if FULL.exists() else SAMPLE)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--depth", type=int, default=10, help="N for levels() and imbalance()")
    args = parser.parse_args(argv)

    snapshot, all_diffs = _load(args.data)
    diffs = _applied(snapshot, all_diffs)
    per_diff_levels = [len(decode_levels(d.bids)) + len(decode_levels(d.asks)) for d in diffs]

    medians: dict[str, list[dict[str, float]]] = {
        "book": [],
        "book_sync": [],
        "decode_only": [],
        "dict_reference": [],
    }
    reads: dict[str, list[float]] = {
        "book_best_bid_ask": [],
        "book_levels": [],
        "book_imbalance": [],
        "dict_best_bid_ask": [],
        "dict_top_levels": [],
    }
    book: OrderBook | None = None
    gc.collect()
    for _ in range(args.repeat):
        ns, book = _run_book(snapshot, diffs)
        medians["book"].append(_percentiles(ns))
        medians["book_sync"].append(_percentiles(_run_sync(snapshot, diffs)))
        medians["decode_only"].append(_percentiles(_run_decode(diffs)))
        medians["dict_reference"].append(_percentiles(_run_dict(snapshot, diffs)))
        got = _book_reads(snapshot, diffs, args.depth)
        reads["book_best_bid_ask"].append(got["best"])
        reads["book_levels"].append(got["levels"])
        reads["book_imbalance"].append(got["imbalance"])
        got = _dict_reads(snapshot, diffs, args.depth)
        reads["dict_best_bid_ask"].append(got["best"])
        reads["dict_top_levels"].append(got["top"])
    assert book is not None
    book_levels = [book.level_count(Side.BID), book.level_count(Side.ASK)]

    apply_us = {
        name: {k: statistics.median(r[k] for r in runs) for k in ("median", "p90", "p99")}
        for name, runs in medians.items()
    }
    read_ns = {name: statistics.median(values) for name, values in reads.items()}
    return {
        "benchmark": "book",
        "data": str(args.data),
        "diffs_applied": len(diffs),
        "levels_per_diff": {
            "median": statistics.median(per_diff_levels),
            "max": max(per_diff_levels),
        },
        "book_levels_at_end": {"bid": book_levels[0], "ask": book_levels[1]},
        "repeat": args.repeat,
        "depth": args.depth,
        "apply_us_per_diff": apply_us,
        "read_ns": {
            "best_bid_ask": {
                "book": read_ns["book_best_bid_ask"],
                "dict_reference": read_ns["dict_best_bid_ask"],
            },
            f"top_{args.depth}_levels": {
                "book": read_ns["book_levels"],
                "dict_reference": read_ns["dict_top_levels"],
            },
            f"imbalance_{args.depth}": {"book": read_ns["book_imbalance"]},
        },
        "book_vs_dict_apply": apply_us["book"]["median"] / apply_us["dict_reference"]["median"],
        "dict_vs_book_best_read": read_ns["dict_best_bid_ask"] / read_ns["book_best_bid_ask"],
    }


if __name__ == "__main__":
    import sys

    print(json.dumps(run(sys.argv[1:]), indent=2))

"""The tape: a replay's market data as whole-run columns, equal to the stream it replaces."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import attrs
import numpy as np
import pytest
import trio

from engine.feeds import CaptureLimits, CaptureStats, ReplayFeed, expand_paths, scan_symbols
from engine.feeds import _tape as tape_module
from engine.feeds._capture import merge_captures
from engine.feeds._columns import Columns, append_message
from engine.feeds._tape import COLUMN_NAMES, Tape, load_tape, parse_tape
from engine.messages import MarketBatch, MarketStep, Ticks

HISTORY = Path(__file__).resolve().parents[1].parent / "shared/data/external/hftbacktest_history"


def history(*names: str) -> list[Path]:
    paths = [HISTORY / name for name in names]
    if not all(p.exists() for p in paths):
        pytest.skip("../shared/data/external/hftbacktest_history is not beside the repository")
    return paths


def stream_reference(
    paths: list[Path], symbols: list[str], limits: CaptureLimits | None = None
) -> tuple[dict[str, Ticks | None], CaptureStats]:
    """What the feed built before the tape: one append per event of the merged stream."""
    stats = CaptureStats()
    columns = {s: Columns() for s in symbols}
    events = merge_captures(paths, stats, frozenset(symbols), limits=limits or CaptureLimits())
    for seq, (ts, msg) in enumerate(events):
        append_message(columns[msg.symbol], ts, seq, msg)
    return {s: c.take() for s, c in columns.items()}, stats


def stats_facts(stats: CaptureStats) -> dict[str, object]:
    facts = attrs.asdict(stats)
    facts["skipped"] = list(stats.skipped.items())  # order too: reports print it as it is
    return facts


def assert_same_ticks(got: Ticks, want: Ticks | None) -> None:
    if want is None:
        assert len(got) == 0
        return
    for name in COLUMN_NAMES:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)  # NaN equals NaN here


def assert_tape_is_the_stream(tape: Tape, paths: list[Path], symbols: list[str]) -> CaptureStats:
    want, want_stats = stream_reference(paths, symbols)
    assert tape.symbols == tuple(symbols)
    for symbol in symbols:
        ticks = tape.ticks[symbol]
        assert_same_ticks(ticks, want[symbol])
        for name in COLUMN_NAMES:
            column = getattr(ticks, name)
            assert not column.flags.writeable, name
            assert column.flags.c_contiguous, name
    assert len(tape) == want_stats.events
    merged = tape.merged_ts()
    assert np.array_equal(
        np.sort(np.concatenate([t.seq for t in tape.ticks.values()])), np.arange(len(tape))
    )
    assert bool(np.all(np.diff(merged) >= 0))
    if len(tape):
        assert tape.first_ts == int(merged[0])
        assert tape.last_ts == int(merged[-1])
    return want_stats


def test_tape_of_the_sample_is_the_stream(sample):
    stats = CaptureStats()
    tape = load_tape([sample], ["BTCUSDT"], stats=stats)
    want_stats = assert_tape_is_the_stream(tape, [sample], ["BTCUSDT"])
    assert stats_facts(stats) == stats_facts(want_stats)
    assert len(tape) == 40390


@pytest.mark.parametrize(
    "names",
    [
        ("usdm_btcusdt_20230404.dat.gz",),  # 2023: receive stamps in microseconds
        ("usdm_btcusdt_20240718.gz", "usdm_ethusdt_20240718.gz"),  # two files merged
    ],
)
def test_tape_of_hftbacktest_captures_is_the_stream(names):
    paths = history(*names)
    symbols = scan_symbols(paths)
    stats = CaptureStats()
    tape = load_tape(paths, symbols, stats=stats)
    want_stats = assert_tape_is_the_stream(tape, paths, symbols)
    assert stats_facts(stats) == stats_facts(want_stats)
    assert len(tape) > 10_000


def test_chunked_columns_join_at_any_boundary(sample, monkeypatch):
    # Flush every 8 events: every chunk boundary, marks and empty chunks included.
    monkeypatch.setattr(tape_module, "_FLUSH_MASK", 7)
    stats = CaptureStats()
    tape = parse_tape([sample], ["BTCUSDT"], stats=stats)
    assert_tape_is_the_stream(tape, [sample], ["BTCUSDT"])


def test_a_symbol_without_events_has_empty_columns(sample):
    tape = load_tape([sample], ["BTCUSDT", "ETHUSDT"], stats=CaptureStats())
    assert len(tape.ticks["ETHUSDT"]) == 0
    assert tape.ticks["ETHUSDT"].ts.dtype == np.int64
    assert len(tape) == len(tape.ticks["BTCUSDT"])


def test_symbols_out_of_the_set_are_counted_as_the_reader_counts_them(cryptofeed_dir):
    paths = expand_paths([cryptofeed_dir])
    symbols = scan_symbols(paths)[:1]
    stats = CaptureStats()
    tape = load_tape(paths, symbols, stats=stats)
    want_stats = assert_tape_is_the_stream(tape, paths, symbols)
    assert stats_facts(stats) == stats_facts(want_stats)
    assert stats.skipped["other_symbol"] > 0


# The feed cut into steps the old way (the reference the slicing must reproduce).
def stream_steps(
    paths: list[Path], symbols: list[str], step_ns: int, max_events: int
) -> list[tuple[int, dict[str, Ticks | None]]]:
    steps: list[tuple[int, dict[str, Ticks | None]]] = []
    columns = {s: Columns() for s in symbols}
    window_end, step_start, in_step = -1, 0, 0
    events = merge_captures(paths, CaptureStats(), frozenset(symbols), limits=CaptureLimits())
    for seq, (ts, msg) in enumerate(events):
        if ts >= window_end or in_step >= max_events:
            if in_step:
                steps.append((step_start, {s: c.take() for s, c in columns.items()}))
                in_step = 0
            if ts >= window_end:
                window_end = (ts // step_ns + 1) * step_ns
            step_start = ts
        append_message(columns[msg.symbol], ts, seq, msg)
        in_step += 1
    if in_step:
        steps.append((step_start, {s: c.take() for s, c in columns.items()}))
    return steps


async def feed_steps(feed_kwargs: dict, symbols: list[str]) -> tuple[list, list, ReplayFeed]:
    exec_tx, exec_rx = trio.open_memory_channel[MarketStep](math.inf)
    sym = {s: trio.open_memory_channel[MarketBatch](math.inf) for s in symbols}
    feed = ReplayFeed(
        symbols=symbols,
        symbol_channels={s: tx for s, (tx, _rx) in sym.items()},
        execution_channel=exec_tx,
        **feed_kwargs,
    )
    await feed.run()
    steps = [m async for m in exec_rx]
    batches = {s: [m async for m in rx] for s, (_tx, rx) in sym.items()}
    return steps, batches, feed


@pytest.fixture(scope="module")
def head_of_sample(sample, tmp_path_factory) -> Path:
    """The sample's first 4000 lines (for steps of one event: ~100 steps per second)."""
    lines = gzip.decompress(sample.read_bytes()).splitlines(keepends=True)
    path = tmp_path_factory.mktemp("head") / "btcusdt_head.gz"
    path.write_bytes(gzip.compress(b"".join(lines[:4000])))
    return path


@pytest.mark.parametrize(
    ("data", "step_ms", "max_events"),
    [
        ("sample", 250, 8192),
        ("sample", 10_000_000, 1000),  # one window: only the count cuts
        ("head_of_sample", 50, 7),
        ("head_of_sample", 1, 1),
    ],
)
async def test_feed_cuts_the_steps_the_stream_cut(request, data, step_ms, max_events):
    path = request.getfixturevalue(data)
    symbols = ["BTCUSDT", "ETHUSDT"]  # ETHUSDT: empty batches every step
    want = stream_steps([path], symbols, step_ms * 1_000_000, max_events)
    _columns, want_stats = stream_reference([path], symbols)
    stats = CaptureStats()
    steps, batches, feed = await feed_steps(
        {
            "paths": [path],
            "step_ns": step_ms * 1_000_000,
            "max_step_events": max_events,
            "stats": stats,
        },
        symbols,
    )
    assert feed.steps == len(want)
    assert len(steps) == len(want) + 1 and steps[-1].final
    for k, (ts_start, per_symbol) in enumerate(want):
        assert (steps[k].step, steps[k].ts_start) == (k, ts_start)
        assert set(steps[k].ticks) == {s for s, t in per_symbol.items() if t is not None}
        for symbol in symbols:
            batch = batches[symbol][k]
            assert (batch.step, batch.ts_start, batch.final) == (k, ts_start, False)
            if per_symbol[symbol] is None:
                assert batch.ticks is None
            else:
                assert_same_ticks(batch.ticks, per_symbol[symbol])
                assert_same_ticks(steps[k].ticks[symbol], per_symbol[symbol])
    for symbol in symbols:
        assert batches[symbol][-1].final
    assert feed.first_ts == want[0][0]
    assert feed.last_ts == int(steps[-2].ticks["BTCUSDT"].ts[-1])
    assert stats_facts(stats) == stats_facts(want_stats)


async def test_feed_replays_a_tape_given_to_it(sample):
    stats = CaptureStats()
    tape = load_tape([sample], ["BTCUSDT"], stats=stats)
    kwargs = {"step_ns": 250_000_000, "max_step_events": 8192}
    got, _b, feed = await feed_steps(
        {"paths": [], "stats": CaptureStats(), "tape": tape, **kwargs}, ["BTCUSDT"]
    )
    want, _b, _f = await feed_steps(
        {"paths": [sample], "stats": CaptureStats(), **kwargs}, ["BTCUSDT"]
    )
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert (a.step, a.ts_start, a.final) == (b.step, b.ts_start, b.final)
        for symbol, ticks in b.ticks.items():
            assert_same_ticks(a.ticks[symbol], ticks)
    assert feed.stats.events == 0  # a given tape: the counters are the loader's business

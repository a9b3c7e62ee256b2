"""The tape: a replay's market data as whole-run columns, equal to the stream it replaces."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pytest

from engine.feeds import CaptureLimits, CaptureStats, expand_paths, scan_symbols
from engine.feeds import _tape as tape_module
from engine.feeds._capture import merge_captures
from engine.feeds._columns import Columns, append_message
from engine.feeds._tape import COLUMN_NAMES, Tape, load_tape, parse_tape
from engine.messages import Ticks

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
    facts = attrs.asdict(stats, filter=lambda a, _v: a.eq)  # (not the raw snapshots)
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

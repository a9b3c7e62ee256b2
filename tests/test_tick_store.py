"""The tick store: parsed columns kept as memory-mapped .npy files beside a source digest."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_tape import assert_same_ticks, history, stats_facts

from engine import ConfigError
from engine._config import load_config
from engine.feeds import (
    CaptureLimits,
    CaptureStats,
    TickStore,
    default_store_dir,
    expand_paths,
    load_tape,
    read_capture,
    scan_symbols,
    store_dir,
)
from engine.feeds._tape import COLUMN_NAMES, parse_tape

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    """A log that keeps its warnings (what the store says about a rebuilt entry)."""

    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict]] = []

    def warning(self, event: str, **kw: object) -> None:
        self.warnings.append((event, kw))


def parsed(paths, symbols, limits=None):
    stats = CaptureStats()
    return parse_tape(paths, symbols, limits=limits or CaptureLimits(), stats=stats), stats


def assert_same_tape(got, want) -> None:
    assert got.symbols == want.symbols
    assert (got.first_ts, got.last_ts, len(got)) == (want.first_ts, want.last_ts, len(want))
    for symbol in want.symbols:
        assert_same_ticks(got.ticks[symbol], want.ticks[symbol])


def stored_load(store, paths, symbols, limits=None):
    stats = CaptureStats()
    tape = load_tape(paths, symbols, limits=limits or CaptureLimits(), stats=stats, store=store)
    return tape, stats


@pytest.fixture
def capture(tmp_path, sample) -> Path:
    """A copy of the sample that a test may change."""
    path = tmp_path / "data" / "btcusdt.gz"
    path.parent.mkdir()
    shutil.copyfile(sample, path)
    return path


def test_round_trip_maps_the_columns_and_restores_the_counters(tmp_path, capture):
    store = TickStore(tmp_path / "ticks")
    want, want_stats = parsed([capture], ["BTCUSDT"])
    first, first_stats = stored_load(store, [capture], ["BTCUSDT"])
    assert store.last_outcome == "imported"
    second, second_stats = stored_load(store, [capture], ["BTCUSDT"])
    assert store.last_outcome == "hit"
    for tape, stats in ((first, first_stats), (second, second_stats)):
        assert_same_tape(tape, want)
        assert stats_facts(stats) == stats_facts(want_stats)
    for name in COLUMN_NAMES:
        column = getattr(second.ticks["BTCUSDT"], name)
        assert not column.flags.writeable
        assert isinstance(column.base, np.memmap) or isinstance(column.base.base, np.memmap)
    (entry,) = store.entries()
    assert entry.events == 40390 and entry.symbols == ("BTCUSDT",)
    assert entry.sources == (str(capture),)
    assert entry.bytes > 40390 * (8 * 12 + 2)
    assert sorted(p.name for p in entry.path.iterdir()) == [
        "0.float64.npy",
        "0.int64.npy",
        "0.int8.npy",
        "meta.json",
    ]


def test_the_book_is_an_entry_of_its_own(tmp_path, capture):
    """A load that wants the order book (a strategy that reads it) gets an entry with
    the book columns beside the plain one; each is a hit the next time."""
    store = TickStore(tmp_path / "ticks")
    plain = load_tape([capture], ["BTCUSDT"], stats=CaptureStats(), store=store)
    with_book = load_tape([capture], ["BTCUSDT"], stats=CaptureStats(), store=store, book=True)
    assert store.last_outcome == "imported"
    assert (plain.ticks["BTCUSDT"].book_row == -1).all()  # no book state anywhere
    assert plain.ticks["BTCUSDT"].book_bid_px.shape[0] == 0
    assert with_book.ticks["BTCUSDT"].book_bid_px.shape[0] > 1000
    assert (with_book.ticks["BTCUSDT"].book_row >= 0).any()
    load_tape([capture], ["BTCUSDT"], stats=CaptureStats(), store=store, book=True)
    assert store.last_outcome == "hit"
    files = {e.path.name: sorted(p.name for p in e.path.iterdir()) for e in store.entries()}
    assert len(files) == 2
    assert sorted("0.book.npy" in names for names in files.values()) == [False, True]


def test_counters_are_added_to_what_the_stats_held(tmp_path, capture):
    store = TickStore(tmp_path / "ticks")
    stored_load(store, [capture], ["BTCUSDT"])
    stats = CaptureStats(lines=5, events=2)
    stats.skipped["blank"] = 1
    load_tape([capture], ["BTCUSDT"], stats=stats, store=store)
    _want, want_stats = parsed([capture], ["BTCUSDT"])
    assert (stats.lines, stats.events) == (want_stats.lines + 5, want_stats.events + 2)
    assert stats.skipped["blank"] == want_stats.skipped["blank"] + 1


def test_a_changed_source_is_reimported(tmp_path, capture):
    store = TickStore(tmp_path / "ticks")
    stored_load(store, [capture], ["BTCUSDT"])
    # Same size, other bytes: only the content digest can tell.
    lines = gzip.decompress(capture.read_bytes()).splitlines(keepends=True)
    capture.write_bytes(gzip.compress(b"".join(lines[: len(lines) // 2])))
    tape, stats = stored_load(store, [capture], ["BTCUSDT"])
    assert store.last_outcome == "rebuilt"
    assert "source changed" in store.last_problem
    want, want_stats = parsed([capture], ["BTCUSDT"])
    assert_same_tape(tape, want)
    assert stats_facts(stats) == stats_facts(want_stats)
    assert len(store.entries()) == 1  # replaced, not added beside
    stored_load(store, [capture], ["BTCUSDT"])
    assert store.last_outcome == "hit"


def _break_truncate(entry: Path) -> str:
    column = entry / "0.float64.npy"
    column.write_bytes(column.read_bytes()[:-100])
    return "0.float64.npy"


def _break_remove(entry: Path) -> str:
    (entry / "0.int64.npy").unlink()
    return "0.int64.npy missing"


def _break_grow(entry: Path) -> str:
    with (entry / "0.int8.npy").open("ab") as f:
        f.write(b"\0" * 8)
    return "0.int8.npy"


def _break_header(entry: Path) -> str:
    (entry / "0.float64.npy").write_bytes(b"not an npy file at all")
    return "0.float64.npy unreadable"


def _break_dtype(entry: Path) -> str:
    shape = np.load(entry / "0.float64.npy").shape
    np.save(entry / "0.float64.npy", np.zeros(shape, dtype=np.float32))
    return "float32"


def _break_length(entry: Path) -> str:
    rows, n = np.load(entry / "0.int8.npy").shape
    np.save(entry / "0.int8.npy", np.zeros((rows, n - 1), dtype=np.int8))
    return "0.int8.npy"


def _break_rows(entry: Path) -> str:
    rows, n = np.load(entry / "0.int64.npy").shape
    np.save(entry / "0.int64.npy", np.zeros((rows - 1, n), dtype=np.int64))
    return "0.int64.npy"


def _break_json(entry: Path) -> str:
    (entry / "meta.json").write_text('{"format": 1, ')
    return "meta.json unreadable"


def _break_meta_missing(entry: Path) -> str:
    (entry / "meta.json").unlink()
    return "meta.json missing"


def _break_version(entry: Path) -> str:
    meta = json.loads((entry / "meta.json").read_text())
    meta["format"] = 0
    (entry / "meta.json").write_text(json.dumps(meta))
    return "format 0"


def _break_counters(entry: Path) -> str:
    meta = json.loads((entry / "meta.json").read_text())
    meta["stats"]["events"] += 1
    (entry / "meta.json").write_text(json.dumps(meta))
    return "lengths do not match"


@pytest.mark.parametrize(
    "damage",
    [
        _break_truncate,
        _break_remove,
        _break_grow,
        _break_header,
        _break_dtype,
        _break_length,
        _break_rows,
        _break_json,
        _break_meta_missing,
        _break_version,
        _break_counters,
    ],
)
def test_a_broken_entry_is_rebuilt_and_said_once(tmp_path, capture, damage):
    log = Recorder()
    store = TickStore(tmp_path / "ticks", log=log)
    stored_load(store, [capture], ["BTCUSDT"])
    (entry,) = store.entries()
    why = damage(entry.path)
    tape, stats = stored_load(store, [capture], ["BTCUSDT"])
    assert store.last_outcome == "rebuilt"
    assert why in store.last_problem
    assert len(log.warnings) == 1
    event, fields = log.warnings[0]
    assert event == "tick store entry rebuilt" and why in str(fields["reason"])
    want, want_stats = parsed([capture], ["BTCUSDT"])
    assert_same_tape(tape, want)
    assert stats_facts(stats) == stats_facts(want_stats)
    stored_load(store, [capture], ["BTCUSDT"])
    assert store.last_outcome == "hit"
    assert len(log.warnings) == 1
    assert [p.name for p in store.root.iterdir()] == [entry.path.name]  # nothing left over


def test_entries_differ_by_limits_and_symbols(tmp_path, capture):
    store = TickStore(tmp_path / "ticks")
    stored_load(store, [capture], ["BTCUSDT"])
    stored_load(store, [capture], ["BTCUSDT"], CaptureLimits(max_time_jump_ms=1000))
    assert store.last_outcome == "imported"
    stored_load(store, [capture], ["BTCUSDT", "ETHUSDT"])
    assert store.last_outcome == "imported"
    assert len(store.entries()) == 3


def test_a_subset_from_a_store_built_with_more_symbols_is_a_parse_of_the_subset(
    tmp_path, cryptofeed_dir
):
    paths = expand_paths([cryptofeed_dir])
    everything = scan_symbols(paths)
    assert len(everything) > 1
    subset = everything[1:2]
    store = TickStore(tmp_path / "ticks")
    stored_load(store, paths, everything)
    tape, stats = stored_load(store, paths, subset)
    want, want_stats = parsed(paths, subset)
    assert_same_tape(tape, want)  # seq numbered in the subset's own stream
    assert stats_facts(stats) == stats_facts(want_stats)
    assert stats.skipped["other_symbol"] > 0
    again, again_stats = stored_load(store, paths, subset)
    assert store.last_outcome == "hit"
    assert_same_tape(again, want)
    assert stats_facts(again_stats) == stats_facts(want_stats)


def test_two_hftbacktest_files_round_trip(tmp_path):
    paths = history("usdm_btcusdt_20240718.gz", "usdm_ethusdt_20240718.gz")
    store = TickStore(tmp_path / "ticks")
    want, want_stats = parsed(paths, ["BTCUSDT", "ETHUSDT"])
    stored_load(store, paths, ["ETHUSDT", "BTCUSDT"])
    tape, stats = stored_load(store, paths, ["BTCUSDT", "ETHUSDT"])
    assert store.last_outcome == "hit"  # the key is the symbol set, not its order
    assert_same_tape(tape, want)
    assert stats_facts(stats) == stats_facts(want_stats)


def test_store_location_setting(tmp_path):
    assert store_dir("off", base_dir=tmp_path) is None
    assert store_dir("auto", base_dir=tmp_path, env={"XDG_CACHE_HOME": "/x/c"}) == Path(
        "/x/c/trireme/ticks"
    )
    assert default_store_dir({}) == Path.home() / ".cache/trireme/ticks"
    assert store_dir("ticks", base_dir=tmp_path) == tmp_path / "ticks"
    assert store_dir("/abs/t", base_dir=tmp_path) == Path("/abs/t")


def test_empty_tick_store_setting_is_refused(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[data]\ntick_store = ""\n')
    with pytest.raises(ConfigError, match=r"data\.tick_store"):
        load_config(config)


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache"), **env}
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "engine", "data", "import", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_import_stores_then_finds_it(tmp_path, capture):
    first = _cli([str(capture)], tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("imported: 40,390 events, symbols BTCUSDT")
    assert "180 s of market" in first.stdout
    second = _cli([str(capture)], tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("already stored: 40,390 events")
    store = TickStore(default_store_dir({"XDG_CACHE_HOME": str(tmp_path / "cache")}))
    tape, stats = stored_load(store, [capture], ["BTCUSDT"])
    assert store.last_outcome == "hit"  # what the CLI stored is what a replay looks up
    assert stats.events == len(tape) == 40390


@pytest.mark.parametrize(
    ("value", "problem"), [('"off"', "the tick store is off"), ('"blocker"', "cannot create")]
)
def test_cli_import_names_an_unusable_store_setting(tmp_path, capture, value, problem):
    (tmp_path / "blocker").write_text("a file where the store should go")
    config = tmp_path / "c.toml"
    config.write_text(f"[data]\ntick_store = {value}\n")
    result = _cli(["--config", str(config), str(capture)], tmp_path)
    assert result.returncode == 2
    assert "data.tick_store" in result.stderr and problem in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_import_of_missing_data_exits_2(tmp_path):
    result = _cli([str(tmp_path / "nope.gz")], tmp_path)
    assert result.returncode == 2
    assert "nope.gz" in result.stderr


def test_concurrent_imports_leave_one_whole_entry(tmp_path, capture):
    environ = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    environ["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "engine", "data", "import", str(capture)]
    procs = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    root = default_store_dir({"XDG_CACHE_HOME": str(tmp_path / "cache")})
    (entry,) = root.iterdir()  # no temporary directory left behind
    store = TickStore(root)
    tape, _stats = stored_load(store, [capture], ["BTCUSDT"])
    assert store.last_outcome == "hit"
    assert_same_tape(tape, parsed([capture], ["BTCUSDT"])[0])
    assert entry.name == store.entry_for([capture], ["BTCUSDT"], limits=CaptureLimits()).name


def test_parsing_holds_about_the_columns_not_python_rows(btc_capture):
    # tracemalloc counts allocations, not time: the same on any machine. The reader
    # alone peaks at its decompressed chunk and its lines; the tape may add its
    # columns, one column's chunks while joining them, and one chunk of row lists,
    # not a list of Python objects per event (which would be ~3x the columns here).
    import tracemalloc

    symbols = scan_symbols([btc_capture])
    tracemalloc.start()
    try:
        for _ in read_capture(btc_capture, CaptureStats()):
            pass
        reader_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        tape = load_tape([btc_capture], symbols, stats=CaptureStats())
        parse_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    columns = sum(getattr(t, name).nbytes for t in tape.ticks.values() for name in COLUMN_NAMES)
    assert len(tape) > 90_000
    assert parse_peak - reader_peak < 1.5 * columns


def test_a_missing_source_is_a_data_error_with_the_store_too(tmp_path):
    from engine import DataError

    with pytest.raises(DataError, match="no such market data file"):
        stored_load(TickStore(tmp_path / "ticks"), [tmp_path / "gone.gz"], ["BTCUSDT"])


def test_cli_import_without_paths_imports_data_paths(tmp_path, capture):
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\npaths = ["{capture.parent.name}"]\ntick_store = "store"\n')
    result = _cli(["--config", str(config)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported: 40,390 events")
    assert f"into {tmp_path / 'store'}" in result.stdout
    assert not (tmp_path / "cache").exists()  # the configured directory, not the default


def test_a_store_that_cannot_be_written_costs_a_parse_not_the_run(tmp_path, capture):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store should be")
    log = Recorder()
    store = TickStore(blocker, log=log)
    tape, stats = stored_load(store, [capture], ["BTCUSDT"])
    assert store.last_outcome == "not_stored"
    want, want_stats = parsed([capture], ["BTCUSDT"])
    assert_same_tape(tape, want)
    assert stats_facts(stats) == stats_facts(want_stats)
    assert [event for event, _kw in log.warnings] == ["tick store entry not written"]

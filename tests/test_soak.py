"""The soak benchmark's arithmetic (the soak itself runs minutes: ``tools/bench soak``)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import trio
import trio_websocket

from tools.bench.soak import (
    SAMPLE,
    _engine_doc,
    _exchange,
    _figures,
    _free_ports,
    _growth,
    _heap_figures,
    _heap_now,
    _memory_kb,
    _owner_chains,
    _parse,
    _reconnect_steps,
    _type_counts,
    _type_growth,
    run,
)


def samples(market_s: np.ndarray, anon_kb: np.ndarray, file_kb: np.ndarray) -> list[tuple]:
    """``(wall s, market s, RSS, anon, file KB)`` rows at speed 5."""
    rss = anon_kb + file_kb
    return list(zip(market_s / 5, market_s, rss, anon_kb, file_kb, strict=True))


def test_slope_is_per_market_time_after_warmup():
    market = np.arange(0.0, 601.0, 2.0)
    # Warm-up: +50 MB in the first 2 minutes (left out); then +1 KB per market minute.
    anon = 100_000.0 + np.where(market < 120, market / 120 * 50_000, 50_000 + (market - 120) / 60)
    file = np.full_like(market, 150_000.0)
    out = _figures(samples(market, anon, file), warmup_s=120.0)
    assert out["slope_kb_per_market_min"] == pytest.approx(1.0, abs=1e-6)
    assert out["mb_per_market_hour"] == pytest.approx(60 / 1024, abs=1e-3)
    assert out["kb_per_wall_s"] == pytest.approx(5 / 60, abs=0.01)  # rounded to 0.01
    assert out["late_half_mb_per_market_hour"] == pytest.approx(60 / 1024, abs=1e-3)
    assert out["by_kind"]["file"]["mb_per_market_hour"] == 0.0
    assert out["by_kind"]["anon"]["mb_per_market_hour"] == pytest.approx(60 / 1024, abs=1e-3)
    assert out["rss_mb"]["warmup"] == pytest.approx(300_000 / 1024, abs=0.1)
    assert out["growth_after_warmup_mb"] == pytest.approx(8 / 1024, abs=0.01)


def test_late_half_sees_a_structure_that_fills_then_stays_flat():
    # Pages that come in until a bounded structure is full (here at 6 minutes),
    # then nothing: the whole-window slope is positive, the later half's is zero.
    market = np.arange(0.0, 601.0, 2.0)
    anon = 100_000.0 + np.minimum(market, 360.0) * 10
    file = 150_000.0 + np.minimum(market, 300.0)
    out = _figures(samples(market, anon, file), warmup_s=120.0)
    assert out["mb_per_market_hour"] > 10
    assert out["late_half_mb_per_market_hour"] == pytest.approx(0.0, abs=1e-6)
    assert out["by_kind"]["file"]["mb_per_market_hour"] > 0


def test_memory_of_this_process():
    rss, anon, file = _memory_kb(os.getpid())
    assert anon > 0 and file > 0
    assert anon + file <= rss  # VmRSS = RssAnon + RssFile + RssShmem


def test_heap_slopes_are_per_market_hour_after_warmup():
    market = np.arange(0.0, 601.0, 2.0)
    # malloc: +20 MB during warm-up, then flat; free: +1 KB per market second after
    # it; Python blocks: +100 per market minute throughout.
    used = 50_000.0 + np.minimum(market, 120.0) / 120 * 20_480
    free = 1_000.0 + np.maximum(market - 120.0, 0.0)
    blocks = 300_000.0 + market / 60 * 100
    sqlite = np.full_like(market, 512.0)
    rows = list(zip(market, used, free, blocks, sqlite, strict=True))
    out = _heap_figures(rows, warmup_s=120.0)
    assert out["malloc_in_use_mb"]["per_market_hour"] == pytest.approx(0.0, abs=1e-6)
    assert out["malloc_in_use_mb"]["warmup"] == pytest.approx(70_480 / 1024, abs=0.01)
    assert out["malloc_free_mb"]["per_market_hour"] == pytest.approx(3600 / 1024, abs=1e-3)
    assert out["python_blocks"]["per_market_hour"] == pytest.approx(6000, abs=1e-3)
    assert out["python_blocks"]["end"] == pytest.approx(301_000)
    assert out["sqlite_mb"] == {"warmup": 0.5, "end": 0.5, "per_market_hour": 0.0}


def test_type_growth_ranks_the_types_that_grew():
    before = {"dict": 100, "list": 50, "Order": 3, "gone": 7}
    after = {"dict": 160, "list": 50, "Order": 40, "tuple": 5}
    assert _type_growth(before, after) == {"dict": 60, "Order": 37, "tuple": 5}


def test_heap_figures_of_this_process():
    held = np.full(4 << 20, 1.0)  # 32 MiB through malloc (mapped on its own)
    used, free, blocks, sqlite = _heap_now()
    assert used >= held.nbytes / 1024
    assert free >= 0 and blocks > 1000
    del held
    assert _heap_now()[0] < used
    # SQLite's memory: a connection's page cache filled by a table, given back on close.
    import sqlite3

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x BLOB)")
    db.executemany("INSERT INTO t VALUES (?)", [(b"x" * 100,)] * 10_000)
    filled = _heap_now()[3]
    db.close()
    assert filled > sqlite + 512  # KB: the table's pages (about 1.2 MB) were in the cache
    assert _heap_now()[3] < filled


def test_trim_interval_is_the_shipped_market_interval_at_the_soak_pace(tmp_path):
    # config.toml trims every 60 s: at 5x that is every 12 s of wall time.
    doc = _engine_doc(_parse(["--speed", "5"]), (1, 2), tmp_path)
    assert doc["hardware"]["malloc_trim_s"] == 12.0
    assert (
        _engine_doc(_parse(["--speed", "200"]), (1, 2), tmp_path)["hardware"]["malloc_trim_s"]
        == 1.0
    )  # the key's minimum
    for given, want in (("0", 0.0), ("30", 30.0)):
        doc = _engine_doc(_parse(["--trim-s", given]), (1, 2), tmp_path)
        assert doc["hardware"]["malloc_trim_s"] == want


def test_bad_trim_interval_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        run(["--trim-s", "0.5"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --trim-s must be 0 (off) or 1..86400 seconds, got 0.5"]


class _Owner:
    def method(self) -> None:
        pass


def _callback(_ref: object) -> None:
    pass


def test_type_counts_say_what_weak_references_and_methods_point_at():
    import weakref

    owner = _Owner()
    before = _type_counts()
    kept = [weakref.ref(owner, _callback) for _ in range(3)] + [owner.method, [].append]
    after = _type_counts()
    grown = _type_growth(before["detail"], after["detail"])
    assert grown["weakref to _Owner cb _callback"] == 3
    assert grown["method _Owner.method"] == 1
    assert grown["builtin_function_or_method list.append"] == 1
    assert _type_growth(before["types"], after["types"])["ReferenceType"] == 3
    del kept


class _Holder:
    def __init__(self) -> None:
        self.refs: list[object] = []


def test_owner_chains_name_what_holds_dead_weak_references():
    import weakref

    holder = _Holder()
    for _ in range(4):
        owner = _Owner()
        holder.refs.append(weakref.ref(owner))
        del owner  # dead now; the list keeps the reference object
    chains = _owner_chains(top=10_000)
    ours = {k: v for k, v in chains.items() if "_Holder" in k}
    assert sum(ours.values()) == 4, chains
    assert all(k.startswith("dead weakref <- list <- ") for k in ours)


def test_floor_slope_sees_through_the_trim_saw_tooth():
    # Every 12 s of wall time (60 s of market at 5x) a trim drops RSS by what it
    # gained since the last one (+700 KB): the floor is flat, the plain slope is not.
    market = np.arange(120.0, 721.0, 2.5)
    saw = (market % 60.0) / 60.0 * 700.0
    anon = 110_000.0 + saw
    file = np.full_like(market, 100_000.0)
    out = _figures(samples(market, anon, file), warmup_s=120.0, floor_window_s=12.0)
    assert out["floor_mb_per_market_hour"] == pytest.approx(0.0, abs=1e-6)
    # A real growth of 1 MB per market hour under the same saw-tooth.
    anon = anon + (market - 120.0) / 3600.0 * 1024.0
    out = _figures(samples(market, anon, file), warmup_s=120.0, floor_window_s=12.0)
    assert out["floor_mb_per_market_hour"] == pytest.approx(1.0, abs=0.02)
    assert "floor_mb_per_market_hour" not in _figures(samples(market, anon, file), 120.0)


def test_tracemalloc_growth_between_two_traced_snapshots_ignores_turnover(tmp_path):
    # A ring buffer that turns its items over and a list that keeps growing, both
    # traced before the first snapshot: only the list grows between the two.
    import collections
    import tracemalloc

    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start(1)
    try:
        ring: collections.deque[str] = collections.deque(maxlen=2000)
        grows: list[str] = []

        def step(n: int) -> None:
            ring.append(f"ring item {n:>64}")
            grows.append(f"kept item {n:>64}")

        for n in range(2000):
            step(n)
        tracemalloc.take_snapshot().dump(str(tmp_path / "mid.snap"))
        for n in range(2000, 6000):
            step(n)
        tracemalloc.take_snapshot().dump(str(tmp_path / "end.snap"))
    finally:
        if not was_tracing:
            tracemalloc.stop()
    top = _growth(tmp_path / "mid.snap", tmp_path / "end.snap")
    assert top[0]["site"].endswith(f":{step.__code__.co_firstlineno + 2}")  # grows.append
    assert top[0]["blocks_grown"] >= 4000
    ring_line = f":{step.__code__.co_firstlineno + 1}"
    assert all(abs(t["blocks_grown"]) < 10 for t in top if t["site"].endswith(ring_line))


_TRACKED = """
import sys
import memray

kept = []

def keep():
    kept.append(bytearray(3 << 20))

def drop():
    freed = bytearray(5 << 20)
    del freed

with memray.Tracker(sys.argv[1], native_traces=True):
    keep()
    drop()
"""


def test_memray_leaks_list_what_was_kept_not_what_was_freed(tmp_path):
    # ``--memray``: the stacks of what the tracker saw allocated and not freed.
    pytest.importorskip("memray")
    import subprocess
    import sys

    from tools.bench.soak import _memray_leaks

    path = tmp_path / "memray.bin"
    subprocess.run([sys.executable, "-c", _TRACKED, str(path)], check=True, timeout=120)
    top = _memray_leaks(path)
    assert top[0]["kb"] >= 3 * 1024
    assert top[0]["allocations"] == 1
    assert any(frame.startswith("keep ") for frame in top[0]["stack"])
    # The 5 MiB buffer was freed: no stack through drop() kept anything that large.
    assert all(t["kb"] < 1024 for t in top if any(f.startswith("drop ") for f in t["stack"]))


def test_memray_flag_is_parsed():
    assert _parse(["--memray"]).memray is True
    assert _parse([]).memray is False
    assert _parse(["--no-numpy-cache-fill"]).numpy_cache_fill is False
    assert _parse([]).numpy_cache_fill is None  # config.toml's


def test_malloc_at_exec_reaches_the_engine_config(tmp_path):
    # The A/B of the mallopt settings from exec (the default) and at the run's start.
    assert _parse([]).malloc_at_exec is None  # config.toml's: on
    assert _engine_doc(_parse([]), (1, 2), tmp_path)["hardware"]["malloc_at_exec"] is True
    for flag, value in (("--no-malloc-at-exec", False), ("--malloc-at-exec", True)):
        doc = _engine_doc(_parse([flag]), (1, 2), tmp_path)
        assert doc["hardware"]["malloc_at_exec"] is value


def test_engine_env_must_be_name_equals_value(capsys):
    with pytest.raises(SystemExit) as exit_:
        run(["--engine-env", "GLIBC_TUNABLES"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --engine-env takes NAME=VALUE"]


def test_allocator_and_engine_env_reach_the_engine_only():
    from engine._memory import find_allocator
    from tools.bench.soak import _engine_env

    tunables = "GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=65536"
    assert _engine_env(_parse(["--engine-env", tunables])) == {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=65536"
    }
    assert _parse([]).allocator == "glibc"
    library = find_allocator("jemalloc")
    if library is None:
        pytest.skip("libjemalloc2 is not installed")
    env = _engine_env(_parse(["--allocator", "jemalloc", "--engine-env", "MALLOC_CONF=narenas:1"]))
    assert env == {"LD_PRELOAD": library, "MALLOC_CONF": "narenas:1"}


_PRELOADED_HEAP = """
import json, os, sys
import numpy as np
from tools.bench.soak import _heap_now, _mapped

before = _heap_now()
held = np.ones(4 << 20)  # 32 MiB through the allocator
after = _heap_now()
print(json.dumps({"mapped": _mapped(os.getpid(), sys.argv[1]), "before": before, "after": after}))
"""


@pytest.mark.parametrize("allocator", ["jemalloc", "mimalloc"])
def test_heap_figures_follow_a_preloaded_allocator(allocator):
    # Under jemalloc, glibc's mallinfo2 counts glibc's own heap, which nothing uses:
    # the figures come from jemalloc's stats. mimalloc has none: not measured (NaN),
    # and the slopes leave NaN out.
    import json
    import subprocess
    import sys
    from pathlib import Path

    from engine._memory import find_allocator

    library = find_allocator(allocator)
    if library is None:
        pytest.skip(f"{allocator} is not installed")
    done = subprocess.run(
        [sys.executable, "-c", _PRELOADED_HEAP, allocator],
        cwd=Path(__file__).parents[1],
        env=dict(os.environ, LD_PRELOAD=library),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    got = json.loads(done.stdout)
    assert got["mapped"] is True
    used_before, free_before, _blocks, _sqlite = got["before"]
    used_after = got["after"][0]
    if allocator == "jemalloc":
        # KB: the 32 MiB array, less what the interpreter freed in between (a few KB)
        assert used_after - used_before >= 31 * 1024
        assert free_before >= 0
    else:
        assert np.isnan(used_before) and np.isnan(free_before) and np.isnan(used_after)
        market = np.arange(0.0, 601.0, 60.0)
        nan = np.full_like(market, np.nan)
        rows = list(zip(market, nan, nan, market, np.zeros_like(market), strict=True))
        out = _heap_figures(rows, warmup_s=120.0)
        assert out["malloc_in_use_mb"] == {"warmup": None, "end": None, "per_market_hour": None}
        assert out["python_blocks"]["per_market_hour"] == pytest.approx(3600.0)


def test_reconnect_steps_compare_the_floor_and_in_use_either_side_of_each_reconnect():
    # RSS saw-tooth (a trim every 60 market s) on a flat floor of 200 MB, with +0.25 MB
    # held from the reconnect at 300 s on and nothing from the one at 450 s; malloc's
    # in-use memory +0.1 MB at 300 s.
    market = np.arange(0.0, 601.0, 2.0)
    floor = 200 * 1024 + np.where(market >= 305, 256.0, 0.0)
    anon = floor + (market % 60) * 20  # up to +1.2 MB between two trims
    file = np.zeros_like(market)
    heap = [(m, 40_000.0 + (102.4 if m >= 305 else 0.0), 0.0, 0.0, 0.0) for m in market]
    steps = _reconnect_steps(samples(market, anon, file), heap, [(300.0, "drop"), (450.0, "drop")])
    assert steps[0] == {
        "market_min": 5.0,
        "kind": "drop",
        "rss_floor_mb": 0.25,
        "anon_floor_mb": 0.25,
        "malloc_in_use_mb": 0.1,
    }
    assert steps[1]["rss_floor_mb"] == 0.0
    assert steps[1]["malloc_in_use_mb"] == 0.0
    # Without --heap: no in-use figure; a reconnect with no samples after it: None.
    late = _reconnect_steps(samples(market, anon, file), [], [(598.0, "restart")])
    assert late == [
        {
            "market_min": 9.97,
            "kind": "restart",
            "rss_floor_mb": None,
            "anon_floor_mb": None,
            "malloc_in_use_mb": None,
        }
    ]


def test_reconnects_must_fall_within_the_run(capsys):
    with pytest.raises(SystemExit) as exit_:
        run(["--minutes", "7.99", "--reconnect-at", "8"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --reconnect-at must be within 0..7.99 market minutes"]
    args = _parse(["--warmup-reconnect", "--reconnect-at", "5"])
    assert args.warmup_reconnect is True
    assert args.reconnect_at == [5.0]


# trio-websocket's client leaves its socket to the collector when the server aborts
# the TCP stream (what the drop does); the engine's feed has its own transports.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_the_soaks_exchange_drops_its_connections_at_each_reconnect(tmp_path):
    # The real loopback exchange, with the soak's drops at 0.2 and 0.4 s of playback:
    # a client is cut off twice (and reconnects), as the engine is in the soak.
    ports = _free_ports()
    log = tmp_path / "exchange.jsonl"
    url = f"ws://127.0.0.1:{ports[0]}/stream?streams=btcusdt@depth@0ms"
    with _exchange((SAMPLE,), 1.0, ports, log, dict(os.environ), drops=(0.2, 0.4)):
        for _connection in range(2):
            with trio.fail_after(120):  # a bound, not a timing: the drop comes at 0.2 s
                async with trio_websocket.open_websocket_url(url) as ws:
                    with pytest.raises(trio_websocket.ConnectionClosed):
                        while True:
                            await ws.get_message()
    faults = [line for line in log.read_text().splitlines() if "fault injected" in line]
    assert len(faults) == 2
    assert all('"drop"' in line for line in faults)

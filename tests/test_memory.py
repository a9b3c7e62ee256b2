"""Memory maintenance: the malloc_trim task, its config key, and what it gives back.

The soak itself (RSS per market hour over minutes of data) is a benchmark:
``python -m tools.bench soak``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import attrs
import pytest
import trio
from _loopback import KEY, SECRET, free_port, loopback_doc, patch_live_feed, wait_for
from test_live import QUIET, SPEED, FeedWatch, paper_config, recording  # noqa: F401 (a fixture)

from engine import _streaming, _supervisor
from engine._cli import main
from engine._memory import (
    M_ARENA_MAX,
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MallocTrimmer,
    find_malloc_trim,
    find_mallopt,
    malloc_applied,
    malloc_exec_env,
    malloc_tunables,
    merge_tunables,
    tunables_in_effect,
    tune_malloc,
)
from engine.venues.sim._stream_server import ServerSettings, StreamServer
from hardware import HardwareConfig
from tools.bench.soak import _memory_kb, _toml

TRIM = find_malloc_trim()
needs_glibc = pytest.mark.skipif(TRIM is None, reason="no malloc_trim in this C library")


@needs_glibc
def test_trim_gives_freed_heap_pages_back():
    # 64 MiB in 4 KiB blocks, touched, then all freed but the highest: that block
    # keeps the heap from shrinking, so the free pages below it stay
    # resident until malloc_trim hands them back (the engine's fragmentation, made
    # on purpose).
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 4096, 16384
    blocks = [libc.malloc(size) for _ in range(count)]
    assert all(blocks)
    for b in blocks:
        ctypes.memset(b, 1, size)
    top = max(blocks)  # the highest: everything freed lies below a block in use
    for b in blocks:
        if b != top:
            libc.free(b)
    before = _memory_kb(os.getpid())[1]
    trimmer = MallocTrimmer(interval_s=60.0, trim=TRIM)
    assert trimmer.trim_once() is True
    after = _memory_kb(os.getpid())[1]
    libc.free(top)
    assert before - after > 32 * 1024  # KB: most of the 64 MiB went back
    assert trimmer.trims == 1 and trimmer.released == 1
    assert 0 < trimmer.max_ms == trimmer.total_ms


@needs_glibc
async def test_trims_every_interval_in_a_worker_thread(autojump_clock):
    calls: list[tuple[int, int]] = []  # (pad, thread)
    setups: list[int] = []
    third = trio.Event()

    def trim(pad: int) -> int:
        calls.append((pad, threading.get_ident()))
        if len(calls) == 3:
            trio.from_thread.run_sync(third.set)
        return TRIM(pad)

    trimmer = MallocTrimmer(
        interval_s=60.0, trim=trim, thread_setup=lambda: setups.append(threading.get_ident())
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(trimmer.run)
        # No other deadline: the virtual clock jumps only to the trimmer's wake-ups.
        await third.wait()
        assert trio.current_time() == 180.0  # every 60 s, from the start
        nursery.cancel_scope.cancel()
    assert trimmer.trims == len(calls) == 3  # the third call finished despite the cancel
    assert {pad for pad, _t in calls} == {0}
    assert threading.get_ident() not in {t for _p, t in calls}  # never the Trio thread
    assert setups == [t for _p, t in calls]  # set up first, in the same thread, every time
    summary = trimmer.summary()
    assert summary["interval_s"] == 60.0 and summary["available"] is True
    assert summary["trims"] == 3


@pytest.mark.parametrize(("interval", "trim"), [(0.0, len), (60.0, None)])
async def test_off_or_unavailable_does_nothing(autojump_clock, interval, trim):
    trimmer = MallocTrimmer(interval_s=interval, trim=trim)
    with trio.move_on_after(3600):
        await trimmer.run()  # returns at once: nothing to do
    assert trio.current_time() == 0
    assert trimmer.trims == 0 and not trimmer.active
    assert trimmer.summary()["available"] is (trim is not None)


def test_unavailable_trim_is_refused_when_called():
    with pytest.raises(RuntimeError, match="malloc_trim is not available"):
        MallocTrimmer(interval_s=60.0, trim=None).trim_once()


def test_config_key_defaults_and_converts():
    assert HardwareConfig().malloc_trim_s == 60.0
    assert HardwareConfig(malloc_trim_s=30).malloc_trim_s == 30.0  # an integer is seconds
    assert HardwareConfig(malloc_trim_s=0).malloc_trim_s == 0.0


def write_config(tmp_path, extra: str):
    cfg = tmp_path / "config.toml"
    sample = Path(_supervisor.__file__).parents[1] / "data/sample/btcusdt_20240808_180s.gz"
    cfg.write_text(
        f'[data]\npaths = ["{sample}"]\n[journal]\ndir = "{tmp_path / "runs"}"\n'
        f'[logging]\npath = "{tmp_path / "engine.jsonl"}"\n{extra}\n'
    )
    return cfg


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-1", "hardware.malloc_trim_s: must be 0 (off) or 1..86400 seconds, got -1.0"),
        ("0.5", "hardware.malloc_trim_s: must be 0 (off) or 1..86400 seconds, got 0.5"),
        ("inf", "hardware.malloc_trim_s: expected a finite number, got inf"),
        ("true", "hardware.malloc_trim_s: expected a number, got True"),
        ('"60"', "hardware.malloc_trim_s: expected a number, got '60'"),
    ],
)
def test_bad_value_exits_2_with_one_line(tmp_path, capsys, value, expected):
    cfg = write_config(tmp_path, f"[hardware]\nmalloc_trim_s = {value}")
    assert main(["--config", str(cfg)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0]
    assert out == ""


@needs_glibc
async def test_paper_run_trims_and_reports_it(tmp_path, recording):  # noqa: F811
    # The supervisor starts the task in paper (and live) runs; the run stops once the
    # feed has passed the whole capture on and the task has trimmed twice.
    trimmed = trio.Event()

    class Watched(MallocTrimmer):
        def trim_once(self) -> bool:
            released = super().trim_once()
            if self.trims >= 2:
                trio.from_thread.run_sync(trimmed.set)
            return released

    settings = ServerSettings(speed=SPEED)
    server = StreamServer(recording, settings, QUIET)
    watch = FeedWatch(recording)
    with pytest.MonkeyPatch.context() as patch, trio.fail_after(120):
        patch_live_feed(patch, watch.make_feed)
        patch.setattr(_supervisor, "MallocTrimmer", Watched)
        async with trio.open_nursery() as nursery:
            ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
            config = paper_config(tmp_path, ws_port, rest_port)
            hardware = attrs.evolve(
                config.hardware, malloc_trim_s=1, malloc_mmap_threshold_kb=128, malloc_arena_max=2
            )
            config = attrs.evolve(config, hardware=hardware)
            stop = trio.Event()

            async def stop_when_done() -> None:
                await watch.caught_up.wait()
                await trimmed.wait()
                stop.set()

            nursery.start_soon(stop_when_done)
            report = await _streaming.run_paper(config, log=QUIET, stop=stop)
            nursery.cancel_scope.cancel()
    trim = report.hardware["malloc_trim"]
    assert trim["available"] is True and trim["trims"] >= 2
    assert trim["numpy_cache_kb"] == 7 * sum(range(1024)) // 1024  # filled at the start
    # The mallopt settings, taken by glibc at the start of the run.
    assert trim["mallopt"] == {
        "available": MALLOPT is not None,
        "mmap_threshold_kb": 128 if MALLOPT else None,
        "trim_threshold_kb": 256 if MALLOPT else None,
        "arena_max": 2 if MALLOPT else None,
        "refused": [],
        "applied": "mallopt" if MALLOPT else "none",  # in-process: no exec to read them at
        "tunables": None,
    }
    json.dumps(trim)  # the report is JSON


async def test_live_venue_forgets_finished_orders(autojump_clock):
    # Per-order maps of the live venue: a run of hours sends thousands of orders,
    # and a finished one must leave nothing behind once the resolver has passed.
    from test_binance_venue import FakeBinance, quotes, running, settle, submit_order

    fake = FakeBinance()
    async with running(fake) as venue:
        for n in range(1, 51):
            assert venue.submit(submit_order(0.01, n=n)) == []
            await settle()
        events = venue.on_market(quotes(60010.0, 60012.0))
        assert sum(type(e).__name__ == "OrderFilled" for e in events) == 50
        await settle(1.0)  # the resolver runs every 0.25 s
        assert venue.pending_orders == 0
        assert venue._orders == {} and venue._by_engine_id == {}


def test_journal_page_cache_is_small(tmp_path):
    # SQLite's default page cache is 2 MiB per connection, filled as a live run's
    # journal grows; appends touch the last pages only.
    from engine.journal import Journal

    with Journal(tmp_path / "j.sqlite") as journal:
        assert journal._open().execute("PRAGMA cache_size").fetchone() == (-256,)


MALLOPT = find_mallopt()
needs_mallopt = pytest.mark.skipif(MALLOPT is None, reason="not glibc: no mallopt")


def _in_fresh_interpreter(script: str, *args: str, timeout: float = 120) -> dict:
    """The JSON ``script`` prints, run by a new interpreter in the repository (what it
    measures lasts for a whole process: mallopt settings, numpy's cache, numba)."""
    import subprocess
    import sys

    root = Path(_supervisor.__file__).parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(done.stdout)


_MAPPED_APART = """
import ctypes, json, sys
from engine._memory import find_mallopt, tune_malloc
from tools.bench.soak import _MallInfo2

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = _MallInfo2

def mapped_apart(size):
    # Whether a block of this size gets a mapping of its own (mallinfo2's hblks).
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    mapped = libc.mallinfo2().hblks - before
    libc.free(block)
    return mapped == 1

tuning = None
if sys.argv[1] == "tuned":
    tuning = tune_malloc(mmap_threshold_kb=128, arena_max=2, mallopt=find_mallopt())
first = mapped_apart(8 << 20)  # 8 MiB: above either threshold, mapped
# Larger than all the heap's free memory together, so that no free chunk can hold it
# (start-up may leave one of several hundred KiB, depending on the hash seed).
size = max(768 << 10, libc.mallinfo2().fordblks + (256 << 10))
print(json.dumps({"tuning": tuning, "first": first, "size": size, "then": mapped_apart(size)}))
"""


@needs_mallopt
@pytest.mark.parametrize("how", ["default", "tuned"])
def test_fixed_mmap_threshold_keeps_large_blocks_mapped_apart(how):
    # glibc's dynamic threshold rises to the size of a freed mapped block: after one
    # 8 MiB buffer, a smaller one (at least 768 KiB, more than all the heap's free
    # memory) grows the heap (where it fragments it). With the threshold fixed at
    # 128 KiB it is mapped apart, and unmapped on free. (A block that fits a free
    # chunk of the heap reuses it either way: hence larger than all of them.)
    # A fresh interpreter: mallopt's settings last for the whole process.
    got = _in_fresh_interpreter(_MAPPED_APART, how)
    assert got["first"] is True
    assert got["size"] < 8 << 20  # under the risen threshold: a test of it
    if how == "default":
        assert got["then"] is False
    else:
        assert got["tuning"] == {
            "available": True,
            "mmap_threshold_kb": 128,
            "trim_threshold_kb": 256,
            "arena_max": 2,
            "refused": [],
        }
        assert got["then"] is True


def test_tune_malloc_calls_mallopt_for_each_setting_and_reports_refusals():
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 0 if param == M_ARENA_MAX else 1  # glibc says 0 when it refuses

    got = tune_malloc(mmap_threshold_kb=64, arena_max=4, mallopt=mallopt)
    assert calls == [(M_MMAP_THRESHOLD, 65536), (M_TRIM_THRESHOLD, 131072), (M_ARENA_MAX, 4)]
    assert got == {
        "available": True,
        "mmap_threshold_kb": 64,
        "trim_threshold_kb": 128,
        "arena_max": None,
        "refused": ["arena_max"],
    }
    calls.clear()
    got = tune_malloc(mmap_threshold_kb=0, arena_max=0, mallopt=mallopt)  # 0: leave alone
    assert calls == [] and got["mmap_threshold_kb"] is None and got["refused"] == []
    got = tune_malloc(mmap_threshold_kb=128, arena_max=2, mallopt=None)  # not glibc
    assert got == {
        "available": False,
        "mmap_threshold_kb": None,
        "trim_threshold_kb": None,
        "arena_max": None,
        "refused": [],
    }


def test_mallopt_keys_default_to_what_the_soak_measured():
    # 64 KiB and one arena: glibc's free memory grew 5-10x slower (engine._memory).
    assert HardwareConfig().malloc_mmap_threshold_kb == 64
    assert HardwareConfig().malloc_arena_max == 1
    off = HardwareConfig(malloc_mmap_threshold_kb=0, malloc_arena_max=0)  # glibc's own
    assert (off.malloc_mmap_threshold_kb, off.malloc_arena_max) == (0, 0)
    on = HardwareConfig(malloc_mmap_threshold_kb=128, malloc_arena_max=2)
    assert (on.malloc_mmap_threshold_kb, on.malloc_arena_max) == (128, 2)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "malloc_mmap_threshold_kb = 8",
            "hardware.malloc_mmap_threshold_kb: must be 0 (glibc's default) or 16..32768 KiB",
        ),
        (
            "malloc_mmap_threshold_kb = 65536",
            "hardware.malloc_mmap_threshold_kb: must be 0 (glibc's default) or 16..32768 KiB",
        ),
        ("malloc_mmap_threshold_kb = 128.5", "hardware.malloc_mmap_threshold_kb"),
        ("malloc_arena_max = -1", "hardware.malloc_arena_max"),
        ("malloc_arena_max = true", "hardware.malloc_arena_max"),
    ],
)
def test_bad_mallopt_value_exits_2_with_one_line(tmp_path, capsys, line, expected):
    cfg = write_config(tmp_path, f"[hardware]\n{line}")
    assert main(["--config", str(cfg)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0]
    assert out == ""


_NUMPY_CACHE = """
import ctypes, json, sys
import numpy as np
from engine._memory import fill_numpy_cache
from tools.bench.soak import _MallInfo2

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = _MallInfo2

def in_use():
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd

filled = fill_numpy_cache() if sys.argv[1] == "filled" else 0
before = in_use()
# What a run does over hours: arrays of every small size, several alive at once
# (8: one more than numpy keeps of a size), then freed.
for size in range(1, 1024):
    arrays = [np.empty(size, dtype=np.uint8) for _ in range(8)]
    del arrays
print(json.dumps({"filled": filled, "grown": in_use() - before}))
"""


@needs_mallopt  # glibc: mallinfo2
@pytest.mark.parametrize("how", ["filled", "not filled"])
def test_filled_numpy_cache_keeps_in_use_memory_flat(how):
    # numpy keeps up to 7 freed buffers of each size under 1 KiB and never frees
    # them: a run that meets new batch sizes for hours grows by up to 3.6 MB of
    # malloc's in-use memory. Filled at the start, nothing more is kept later.
    # A fresh interpreter: numpy's cache lasts for the whole process.
    got = _in_fresh_interpreter(_NUMPY_CACHE, how)
    if how == "filled":
        assert got["filled"] == 7 * sum(range(1024))  # 3.6 MB
        assert got["grown"] < 64 * 1024
    else:  # what the engine did before: the run fills it
        assert got["grown"] > 3_000_000


def test_loop_lag_window_is_allocated_up_front():
    # The lag window (4,096 samples, 10 a second) took 7 minutes of wall time to
    # fill as a deque of floats, 32 B a sample: growth in the soak until full.
    import tracemalloc

    from hardware import LoopLagStats

    stats = LoopLagStats(window=4096)
    tracemalloc.start()
    try:
        for i in range(2 * 4096):
            stats.record(0.001 + i * 1e-7)
        grown, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grown < 4096  # bytes: none per sample
    assert stats.count == 8192
    assert stats.percentile(100) == pytest.approx(0.001 + 8191e-7)  # the newest kept
    assert stats.percentile(1) >= 0.001 + 4096e-7  # the oldest overwritten


_PROTECT = """
import json
from engine._config import ExitsSection
from engine.strategy import _exits
from engine.venues.binance._protect import ProtectiveStops

before = [len(_exits.enter.signatures), len(_exits.scan_exits.signatures)]
ProtectiveStops(ExitsSection(), move_bps=1.0, now_ns=lambda: 0, fallback_bps=100.0)
print(json.dumps({"before": before, "after": [len(_exits.enter.signatures),
                                              len(_exits.scan_exits.signatures)]}))
"""


def test_live_protective_stops_load_the_exit_kernels_at_start():
    # The live venue's protective stops run the exit kernels, which the symbol core
    # does not use while [exits] is off: the first entry of a live run loaded them
    # (numba's cache, LLVM), 0.3-0.5 MB that appeared mid-run in the live soak, and
    # a pause on the order path. A fresh interpreter: numba's dispatchers are global.
    got = _in_fresh_interpreter(_PROTECT, timeout=300)
    assert got["before"] == [0, 0]
    assert got["after"][0] >= 1 and got["after"][1] >= 1


def test_find_allocator_knows_jemalloc_and_mimalloc_only():
    from engine._memory import find_allocator

    with pytest.raises(ValueError, match="unknown allocator 'tcmalloc'"):
        find_allocator("tcmalloc")
    for name in ("jemalloc", "mimalloc"):
        found = find_allocator(name)
        assert found is None or f"lib{name}" in found


_PROTECT_LIVE_STEP = """
import json
from engine._config import ExitsSection
from engine.feeds._capture import BookTicker
from engine.feeds._columns import Columns, append_message
from engine.strategy import _exits
from engine.strategy._exits import ExitPolicy
from engine.venues.binance._protect import ProtectiveStops

ProtectiveStops(ExitsSection(), move_bps=1.0, now_ns=lambda: 0, fallback_bps=100.0)
loaded = len(_exits.scan_exits.signatures)
cols = Columns()  # a live step's columns, as the live feed builds them (read-only)
for i in range(3):
    quote = BookTicker(symbol="X", bid=10.0, bid_qty=1.0, ask=10.5, ask_qty=1.0, event_time=i)
    append_message(cols, 100 + i, i, quote)
ticks = cols.take()
policy = ExitPolicy(ExitsSection(stop_bps=50.0))
policy.on_entry(1, 10.2, 0, float("nan"))
policy.scan(ticks, 0, len(ticks.ts))
print(json.dumps({"loaded": loaded, "after_live_step": len(_exits.scan_exits.signatures),
                  "readonly_ts": not ticks.ts.flags.writeable}))
"""


def test_live_steps_find_the_exit_kernel_loaded():
    # The live feed's columns are read-only, a numba signature of their own: the
    # exit kernel warmed up with writeable arrays only was loaded again (numba's
    # cache, LLVM) at the live run's first protective-stop scan: the +0.2 MB step
    # near 150 market seconds of the live soak (memray: numba's caching.rebuild
    # under _protect.on_step -> ExitPolicy.scan).
    got = _in_fresh_interpreter(_PROTECT_LIVE_STEP, timeout=300)
    assert got["readonly_ts"] is True
    assert got["after_live_step"] == got["loaded"]


# -- the malloc settings from exec (hardware.malloc_at_exec) ------------------------------

WANTED = {
    "glibc.malloc.mmap_threshold": "65536",
    "glibc.malloc.trim_threshold": "131072",
    "glibc.malloc.arena_max": "1",
}
SHIPPED = (
    "glibc.malloc.mmap_threshold=65536:glibc.malloc.trim_threshold=131072:glibc.malloc.arena_max=1"
)


def test_tunables_are_the_mallopt_keys_in_bytes():
    assert malloc_tunables(mmap_threshold_kb=64, arena_max=1) == WANTED
    assert malloc_tunables(mmap_threshold_kb=0, arena_max=2) == {"glibc.malloc.arena_max": "2"}
    assert malloc_tunables(mmap_threshold_kb=0, arena_max=0) == {}


def test_the_users_tunables_are_kept_and_the_configs_win():
    user = "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=4:junk"
    merged = merge_tunables(user, WANTED)
    assert merged == (
        "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1:"
        "glibc.malloc.mmap_threshold=65536:glibc.malloc.trim_threshold=131072"
    )
    assert merge_tunables(None, WANTED) == SHIPPED


@pytest.mark.parametrize(
    ("env", "glibc", "execs"),
    [
        ({}, True, True),
        ({"GLIBC_TUNABLES": "glibc.malloc.perturb=0"}, True, True),  # merged
        ({"GLIBC_TUNABLES": SHIPPED.replace("65536", "131072")}, True, True),  # another value
        ({"GLIBC_TUNABLES": SHIPPED}, True, False),  # already there: no loop
        ({"GLIBC_TUNABLES": "glibc.malloc.perturb=0:" + SHIPPED}, True, False),
        ({"TRIREME_MALLOC_EXEC": "1"}, True, False),  # the re-executed process, whatever glibc did
        ({}, False, False),  # not glibc: mallopt's fallback does nothing either
    ],
)
def test_exec_env_only_when_the_settings_are_not_there_yet(env, glibc, execs):
    got = malloc_exec_env(env, mmap_threshold_kb=64, arena_max=1, glibc=glibc)
    if not execs:
        assert got is None
        return
    assert got is not None and got["TRIREME_MALLOC_EXEC"] == "1"
    assert tunables_in_effect(got, WANTED)
    # The exec'd process's own check finds them there: it runs, never execs again.
    assert malloc_exec_env(got, mmap_threshold_kb=64, arena_max=1, glibc=glibc) is None
    assert (
        malloc_exec_env(
            {**got, "TRIREME_MALLOC_EXEC": ""}, mmap_threshold_kb=64, arena_max=1, glibc=glibc
        )
        is None
    )
    assert malloc_exec_env(env, mmap_threshold_kb=0, arena_max=0, glibc=glibc) is None


def test_applied_from_exec_calls_no_mallopt_else_falls_back():
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    got = malloc_applied(
        {"GLIBC_TUNABLES": SHIPPED}, mmap_threshold_kb=64, arena_max=1, mallopt=mallopt
    )
    assert calls == []  # glibc read them at exec: nothing to set again
    assert got["applied"] == "exec" and got["tunables"] == SHIPPED
    assert (got["mmap_threshold_kb"], got["trim_threshold_kb"], got["arena_max"]) == (64, 128, 1)
    got = malloc_applied({}, mmap_threshold_kb=64, arena_max=1, mallopt=mallopt)
    assert got["applied"] == "mallopt" and got["tunables"] is None
    assert len(calls) == 3
    got = malloc_applied({}, mmap_threshold_kb=64, arena_max=1, mallopt=None)
    assert got["applied"] == "none" and got["available"] is False
    got = malloc_applied({}, mmap_threshold_kb=0, arena_max=0, mallopt=mallopt)
    assert got["applied"] == "none" and len(calls) == 3


def test_malloc_at_exec_defaults_on():
    assert HardwareConfig().malloc_at_exec is True
    assert HardwareConfig(malloc_at_exec=False).malloc_at_exec is False


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("malloc_at_exec = 1", "hardware.malloc_at_exec: expected true or false, got 1"),
        ('malloc_at_exec = "yes"', "hardware.malloc_at_exec: expected true or false, got 'yes'"),
    ],
)
def test_bad_malloc_at_exec_exits_2_with_one_line(tmp_path, capsys, line, expected):
    cfg = write_config(tmp_path, f"[hardware]\n{line}")
    assert main(["--config", str(cfg), "--mode", "paper"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0]
    assert out == ""


# Counts the interpreter's starts (one line each: the re-exec runs this again), then runs
# ``python -m engine`` with the rest of the command line, as users do.
_COUNTED_ENGINE = """
import runpy, sys
with open(sys.argv[1], "a") as f:
    f.write("start\\n")
sys.argv = ["python -m engine", *sys.argv[2:]]
runpy.run_module("engine", run_name="__main__", alter_sys=True)
"""
ROOT = Path(_supervisor.__file__).parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"


def _environ(pid: int) -> list[str]:
    """The environment the process was executed with, as ``/proc`` shows it: glibc
    (2.36) parses ``GLIBC_TUNABLES`` in place, cutting it at each ``:`` with a NUL, so
    its entries after the first show as items of their own."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return [item.decode() for item in raw.split(b"\0") if item]


def _log_records(path: Path, message: str) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    records = [json.loads(x) for x in lines if x.startswith("{") and x.endswith("}")]
    return [r for r in records if r.get("message") == message]


@needs_glibc
@pytest.mark.parametrize(
    ("how", "user_tunables", "starts", "applied"),
    [
        ("default", None, 2, "exec"),  # re-executed once, same PID
        ("default", "glibc.malloc.perturb=0", 2, "exec"),  # merged with the user's
        ("default", SHIPPED, 1, "exec"),  # the service's environment has them: no exec
        ("opt-out", None, 1, "mallopt"),
    ],
)
def test_paper_process_runs_with_the_tunables_under_its_own_pid(
    tmp_path, how, user_tunables, starts, applied
):
    env = {
        k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "TRIREME_MALLOC_EXEC")
    }
    env.update(SIM_API_KEY=KEY, SIM_API_SECRET=SECRET, PYTHONUNBUFFERED="1")
    if user_tunables is not None:
        env["GLIBC_TUNABLES"] = user_tunables
    ws_port, rest_port = free_port(), free_port()
    doc = loopback_doc(tmp_path, ws_port, rest_port)
    doc["hardware"] = {"enabled": False, "malloc_at_exec": how != "opt-out"}
    config = tmp_path / "paper.toml"
    config.write_text(_toml(doc))
    counter = tmp_path / "starts"
    report = tmp_path / "report.json"
    log_path = tmp_path / "engine.jsonl"
    exchange = subprocess.Popen(
        [
            sys.executable, "-m", "engine", "sim-exchange", "--data", str(SAMPLE),
            "--port", str(ws_port), "--rest-port", str(rest_port), "--speed", "10",
            "--log", str(tmp_path / "exchange.jsonl"),
        ],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert exchange.stdout is not None
        assert exchange.stdout.readline().startswith("sim-exchange:")
        engine = subprocess.Popen(
            [
                sys.executable, "-c", _COUNTED_ENGINE, str(counter),
                "--config", str(config), "--mode", "paper", "--report", str(report),
            ],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(lambda: _log_records(log_path, "feed connected"), "feed connected", engine)
            environ = _environ(engine.pid)  # the process the test started: the same PID
            settings = _log_records(log_path, "malloc settings")
        finally:
            engine.send_signal(signal.SIGINT)
            engine.wait(timeout=120)
    finally:
        exchange.terminate()
        exchange.wait(timeout=10)
        exchange.stdout.close()
    assert engine.returncode == 0
    assert counter.read_text().count("start") == starts  # re-executed once at most
    assert [r["process"]["pid"] for r in settings] == [engine.pid]
    assert settings[0]["trireme"]["kind"] == applied
    mallopt = json.loads(report.read_text())["hardware"]["malloc_trim"]["mallopt"]
    assert mallopt["applied"] == applied
    assert (mallopt["mmap_threshold_kb"], mallopt["arena_max"]) == (64, 1)
    names = {item.partition("=")[0] for item in environ}
    if how == "opt-out":
        assert not names & {"GLIBC_TUNABLES", "TRIREME_MALLOC_EXEC"}
        assert not any("glibc.malloc" in item for item in environ)
        return
    assert "GLIBC_TUNABLES" in names
    assert all(f"{name}={value}" in " ".join(environ) for name, value in WANTED.items())
    assert tunables_in_effect({"GLIBC_TUNABLES": mallopt["tunables"]}, WANTED)  # os.environ's
    if user_tunables is not None:
        assert mallopt["tunables"].startswith(user_tunables)  # the user's kept
    assert ("TRIREME_MALLOC_EXEC" in names) is (starts == 2)


def test_replay_is_not_re_executed(tmp_path):
    cfg = write_config(tmp_path, "")
    counter = tmp_path / "starts"
    env = {
        k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "TRIREME_MALLOC_EXEC")
    }
    done = subprocess.run(
        [
            sys.executable, "-c", _COUNTED_ENGINE, str(counter),
            "--config", str(cfg), "--mode", "replay",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert counter.read_text().count("start") == 1


def test_portfolio_solve_times_are_kept_in_a_fixed_window():
    # One float per portfolio solve was appended to a list for the whole run (the
    # soak's memray: 2.8 KB after 3.5 market minutes, 5.2 KB after 9). The median
    # covers the latest SOLVE_WINDOW solves in a ring allocated once; the max, all.
    import tracemalloc

    from engine.portfolio._actor import SOLVE_WINDOW, PortfolioStats

    stats = PortfolioStats()
    assert stats.summary()["solve_ms_median"] is None and stats.summary()["solve_ms_max"] is None
    stats.record_solve(50.0)  # the slowest, early: the max keeps it
    tracemalloc.start()
    try:
        for i in range(4 * SOLVE_WINDOW):
            stats.record_solve(1.0 + (i % 3))
        grown, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grown < 1024  # bytes: none per solve
    summary = stats.summary()
    assert summary["solves"] == 4 * SOLVE_WINDOW + 1
    assert summary["solve_ms_max"] == 50.0
    assert summary["solve_ms_median"] == 2.0
    assert len(stats.solve_ms) == SOLVE_WINDOW

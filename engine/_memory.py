"""Memory maintenance in long runs: hand the C heap's free pages back to the kernel.

glibc's ``malloc`` keeps memory that the process has freed: a free chunk below
one still in use cannot go back by shrinking the heap, so the heap's free lists
grow with fragmentation while what the engine holds stays flat. Measured with
``python -m tools.bench soak --heap`` (paper, 11 market minutes at 5x, without
trims): malloc's in-use memory -0.3 MB per market hour, its free memory +7.6,
RSS +8.0 (late half of the run: +4.6). ``malloc_trim(0)`` returns the free
pages inside the heap too (``madvise(MADV_DONTNEED)``), not only its top: with a
trim every 60 s of market time RSS fell by 0.4-1.0 MB at each (a saw-tooth),
+4.9 MB per market hour over the run, +1.3 in its late half; each call took
0.3 ms at most.

:class:`MallocTrimmer` calls it every ``hardware.malloc_trim_s`` seconds (0: never)
in a worker thread, off the event loop: the trim takes each arena's lock in turn,
so a ``malloc`` in the Trio thread waits at most for one arena's pass, and the GIL
is released meanwhile. The supervisor starts it for paper and live runs only; it
sends nothing to any actor and reads no clock but Trio's, so it cannot change
what a run decides. Where the C library has no ``malloc_trim`` (macOS, musl) it
does nothing and says so once in the run report (``hardware.malloc_trim``).

Trims return free pages; they cannot undo fragmentation, where a few live chunks
keep the pages around them. :func:`tune_malloc` cuts it at its source, once at the
start of a paper or live run (``mallopt``):

- ``hardware.malloc_mmap_threshold_kb``: a fixed ``M_MMAP_THRESHOLD``. glibc's
  threshold is dynamic: it starts at 128 KiB and rises to the size of every
  mmapped block freed (up to 32 MiB), so after start-up (numba, onnxruntime,
  numpy batches) the large temporary buffers of a run (JSON decode buffers, the
  feed's column batches) are carved from the heap, and a small chunk allocated
  between two of them pins the pages when they are freed. With a fixed threshold
  a block at least that large that no free chunk of the heap can hold gets a
  mapping of its own, unmapped on ``free``, instead of growing the heap. The
  dynamic threshold also raised ``M_TRIM_THRESHOLD`` (free space at the heap's top
  that ``free`` leaves mapped) to twice its own value; setting the mmap threshold
  freezes it where start-up left it, so it is set too, to twice the new threshold.
- ``hardware.malloc_arena_max``: ``M_ARENA_MAX``. Every thread that allocates
  (Trio's worker threads, onnxruntime's, SQLite's writer) may get an arena of
  its own, up to 8 per core, each with its own free lists and fragmentation.

Defaults: 64 KiB and one arena. Measured once numpy's cache was filled (below),
when what still grew was malloc's free memory: ``python -m tools.bench soak
--minutes 10.95 --speed 5 --warmup-minutes 2 --heap`` (paper; live: ``--mode live
--minutes 7.99``), variants interleaved, 3 runs each, load 5-10 on 2 cores, MB per
market hour after warm-up as RSS slope / RSS floor / malloc free memory:

- glibc's own (0, 0): paper 2.0 / 1.7 / 5.3 (medians; free +3.7 to +6.5), live
  2.6 / 1.5 / 5.4 (slopes -7.4 to +5.1; floor 0.7 to 4.0; free +3.4 to +6.1).
- ``mallopt`` 64 KiB, 1 arena, in the process at the run's start (these keys):
  paper 1.3 / 1.4 / 0.7 (floor 0.95 to 2.2; free +0.2 to +1.4), live 0.4 /
  0.7 / -0.1 (slopes 0.3 to 1.4; floor 0.69 to 0.77; free -0.2 to +1.6): under
  1 MB per market hour live, not yet in paper.
- the same from exec (``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=65536:
  glibc.malloc.trim_threshold=131072:glibc.malloc.arena_max=1``, so start-up's
  allocations are laid out that way too): paper 0.5 / 0.6 / 0.1, live 1.3 /
  0.1 / 0.3: the lowest; an environment variable of the service, not a key.
- jemalloc 5.3 (``LD_PRELOAD``, Debian ``libjemalloc2``, its defaults): paper
  -18, -17 (it purges start-up's pages over minutes: not flat) and +4.2; live
  +38, +7, -26: no. mimalloc 2.0.9: paper +2.5, live +5.8 (one run each): no.

The earlier finding, before the numpy cache fill: no gain. Paper, 10.95 market
minutes at 5x with trims every 60 s of market time: +4.9 MB per market hour
without them (ML filter on), +4.8 with 128 KiB and 2 arenas (set from process
start; ML filter off); live, 8 minutes, with them: +8.1. Of the growth that
remains, about 60% is malloc's in-use memory (+2.1 to 2.3 MB per market hour)
that neither Python's blocks, tracemalloc's sites nor SQLite
(``sqlite3_memory_used``, flat at 0.12 MB) account for; the rest is free heap
memory in pages that still hold a live chunk.

That in-use growth was numpy's cache of small freed buffers (found with
``python -m tools.bench soak --memray``: of what the run allocated after warm-up
and still held at the end, the numpy buffers were all under 1 KiB, the sizes
numpy keeps): bounded (3.6 MB) but filling for hours. :func:`fill_numpy_cache`
fills it at the start (``hardware.numpy_cache_fill``). Paper, same runs as above,
A/B interleaved on a loaded machine (5 pairs): malloc's in-use memory +1.1 to
+2.1 MB per market hour without the fill, +0.15 to +0.55 with it; RSS floor +2.2
to +5.3 without, +1.1 to +2.9 with. Live (8 minutes, 2 pairs): in-use +4.1 to
+4.5 without, +1.9 to +2.5 with; floor +6.4 to +7.4 without, +3.4 to +5.5 with
(the live venue's protective stops also loaded the exit kernels at the first
entry, 0.3-0.5 MB of numba and LLVM mid-run: they load at start-up now). What
still grows is glibc's free memory (+0.5 to 0.8 MB in 6-9 market minutes, while
in-use memory moves by 0.05-0.2 MB): chunks freed in pages that keep a live
one, which ``malloc_trim`` cannot hand back; and in paper, the chained segments'
reconnect (a new book snapshot and trade backfill, about 0.2 MB once).

The live run's one-time +0.2 MB near 150 market seconds was the exit kernel
loaded again at the first entry (``--mode live --memray``: 215 KB under numba's
``caching.rebuild`` and LLVM's bitcode reader, called from the protective stops'
``ExitPolicy.scan``): the live feed's ``ts``, ``bid`` and ``ask`` columns are
read-only, a numba signature of their own, and ``ExitPolicy.warm_up`` loaded the
writeable one only. It loads both now. (The live figures above: round 1's glibc,
tunables, jemalloc and mimalloc runs still had that step; the others had not.)
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Mapping

import trio

Trim = Callable[[int], int]
Mallopt = Callable[[int, int], int]

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
NUMPY_CACHE_BUCKETS = 1024  # numpy's alloc.c: NBUCKETS, one per size in bytes below it
NUMPY_CACHE_DEPTH = 7  # NCACHE: freed buffers kept per size


ALLOCATORS = {"jemalloc": "jemalloc", "mimalloc": "mimalloc"}  # name: library (lib*.so)


def find_allocator(name: str) -> str | None:
    """The shared library of a C allocator to preload (``LD_PRELOAD``), as the dynamic
    linker finds it (its soname, e.g. ``libjemalloc.so.2``), or None when it is not
    installed (Debian: ``libjemalloc2``, ``libmimalloc2.0``).

    Raises:
        ValueError: ``name`` is not in :data:`ALLOCATORS`.
    """
    if name not in ALLOCATORS:
        raise ValueError(f"unknown allocator {name!r}; one of {sorted(ALLOCATORS)}")
    import ctypes.util

    return ctypes.util.find_library(ALLOCATORS[name])


def find_malloc_trim() -> Trim | None:
    """glibc's ``int malloc_trim(size_t pad)``, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into the process
    except OSError:  # no dlopen(NULL) (Windows)
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def find_mallopt() -> Mallopt | None:
    """glibc's ``int mallopt(int param, int value)``, or None where the C library has
    none or is not glibc (musl's ``mallopt`` does nothing; macOS has none)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if getattr(libc, "gnu_get_libc_version", None) is None:
        return None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def tune_malloc(
    *, mmap_threshold_kb: int, arena_max: int, mallopt: Mallopt | None
) -> dict[str, object]:
    """Set glibc's ``M_MMAP_THRESHOLD`` and ``M_ARENA_MAX`` (0: leave that one as it is).

    Call it once, before the run's threads start allocating. A mmap threshold sets
    ``M_TRIM_THRESHOLD`` to twice it too (what glibc's dynamic threshold does).
    Returns what was set, for the run report: ``mmap_threshold_kb``,
    ``trim_threshold_kb`` and ``arena_max`` (None: left alone or refused), and
    ``refused`` (the settings ``mallopt`` said no to).

    Args:
        mmap_threshold_kb: blocks of at least this many KiB get a mapping of their
            own when no free chunk holds them.
        arena_max: at most this many malloc arenas.
        mallopt: :func:`find_mallopt`'s; None: not glibc (nothing is set).
    """
    out: dict[str, object] = {
        "available": mallopt is not None,
        "mmap_threshold_kb": None,
        "trim_threshold_kb": None,
        "arena_max": None,
        "refused": [],
    }
    if mallopt is None:
        return out
    refused: list[str] = []

    def set_(key: str, param: int, value: int, unit: int = 1) -> bool:
        if mallopt(param, value * unit) == 1:  # 1: done; 0: refused
            out[key] = value
            return True
        refused.append(key)
        return False

    if mmap_threshold_kb and set_("mmap_threshold_kb", M_MMAP_THRESHOLD, mmap_threshold_kb, 1024):
        set_("trim_threshold_kb", M_TRIM_THRESHOLD, 2 * mmap_threshold_kb, 1024)
    if arena_max:
        set_("arena_max", M_ARENA_MAX, arena_max)
    out["refused"] = refused
    return out


class MallocTrimmer:
    """Calls ``trim(0)`` (glibc's ``malloc_trim``) every ``interval_s`` seconds until cancelled.

    Start it with ``await nursery.start(trimmer.run)`` and cancel it when the run
    is over. Nothing is logged per call; :meth:`summary` gives the counts.

    Args:
        interval_s: seconds between calls (Trio's clock); 0 turns it off.
        trim: the function to call with the padding 0, usually
            :func:`find_malloc_trim`'s; None: not available here (nothing runs).
        thread_setup: called first in the worker thread of every call (pins it to
            the worker CPUs of the hardware plan, as the portfolio solver does).
        tuning: :func:`tune_malloc`'s result, shown in :meth:`summary` (``mallopt``).
        numpy_cache_kb: :func:`fill_numpy_cache`'s result in KiB, shown in
            :meth:`summary` (``numpy_cache_kb``); None: not filled (shown as 0).

    Attributes:
        trims: calls made.
        released: calls that gave memory back to the kernel (``malloc_trim`` said 1).
        max_ms: the longest call, in milliseconds (wall time in the worker thread).
        total_ms: all calls together, in milliseconds.
    """

    def __init__(
        self,
        *,
        interval_s: float,
        trim: Trim | None,
        thread_setup: Callable[[], object] | None = None,
        tuning: Mapping[str, object] | None = None,
        numpy_cache_kb: int | None = None,
    ) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.interval_s = interval_s
        self._trim = trim
        self._thread_setup = thread_setup
        self._tuning = dict(tuning) if tuning is not None else None
        self._numpy_cache_kb = numpy_cache_kb
        self.trims = 0
        self.released = 0
        self.max_ms = 0.0
        self.total_ms = 0.0

    @property
    def active(self) -> bool:
        """Whether :meth:`run` trims at all (an interval, and a ``malloc_trim`` to call)."""
        return self.interval_s > 0 and self._trim is not None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Report started, then trim every ``interval_s`` seconds until cancelled.

        Returns at once when not :attr:`active`. On cancellation a call in progress
        finishes in its thread (it is short and cannot be interrupted) and is
        counted; ``trio.Cancelled`` propagates.
        """
        task_status.started()
        if not self.active:
            return
        limiter = trio.CapacityLimiter(1)  # one call at a time, never a queue of them
        while True:
            await trio.sleep(self.interval_s)
            await trio.to_thread.run_sync(self.trim_once, limiter=limiter)

    def trim_once(self) -> bool:
        """One call (runs in a worker thread); whether memory went back to the kernel.

        Raises:
            RuntimeError: there is no ``malloc_trim`` to call.
        """
        if self._trim is None:
            raise RuntimeError("malloc_trim is not available in this C library")
        if self._thread_setup is not None:
            self._thread_setup()
        started = time.perf_counter()
        released = bool(self._trim(0))
        ms = (time.perf_counter() - started) * 1000
        self.trims += 1
        self.released += released
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)
        return released

    def summary(self) -> dict[str, object]:
        """For the run report: the setting, whether it ran, the counts, the KiB put
        in numpy's buffer cache at the start, and the ``mallopt`` settings of the
        run (when given)."""
        out: dict[str, object] = {
            "interval_s": self.interval_s,
            "available": self._trim is not None,
            "trims": self.trims,
            "released": self.released,
            "max_ms": round(self.max_ms, 3),
            "total_ms": round(self.total_ms, 3),
            "numpy_cache_kb": self._numpy_cache_kb or 0,
        }
        if self._tuning is not None:
            out["mallopt"] = self._tuning
        return out


def fill_numpy_cache() -> int:
    """Fill numpy's cache of small data buffers now; returns the bytes of a full cache.

    numpy keeps freed array buffers under 1 KiB for reuse, up to 7 of each size in
    bytes (``npy_alloc_cache``; 3.6 MB when full), and never gives them back. In a
    run it fills as sizes are first freed: the feed's column batches, masks and
    indices have as many items as events in a step, and a size first seen in a
    late burst adds its buffers then. The soak measured it as in-use growth that
    looked like a leak (1.6-1.8 MB per market hour of malloc's in-use memory),
    with the cached buffers scattered among long-lived chunks, where they pin the
    heap's pages against ``malloc_trim``. Filled at the start, in one stretch of the
    heap, the cache stays full: a run takes its buffers from it and gives them
    back, and a buffer freed while its size's slot is full goes back to malloc.

    Call it before the run allocates (the supervisor: paper and live, with
    ``hardware.numpy_cache_fill``); once is enough, a second call adds nothing.
    """
    import numpy as np

    held = 0
    for size in range(1, NUMPY_CACHE_BUCKETS):
        arrays = [np.empty(size, dtype=np.uint8) for _ in range(NUMPY_CACHE_DEPTH)]
        held += NUMPY_CACHE_DEPTH * size
        del arrays  # freed together: all seven go into the size's slot
    return held

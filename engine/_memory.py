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
  0.1 / 0.3: the lowest. The default now (``hardware.malloc_at_exec``, below).
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
one, which ``malloc_trim`` cannot hand back.

The live run's one-time +0.2 MB near 150 market seconds was the exit kernel
loaded again at the first entry (``--mode live --memray``: 215 KB under numba's
``caching.rebuild`` and LLVM's bitcode reader, called from the protective stops'
``ExitPolicy.scan``): the live feed's ``ts``, ``bid`` and ``ask`` columns are
read-only, a numba signature of their own, and ``ExitPolicy.warm_up`` loaded the
writeable one only. It loads both now. (The live figures above: round 1's glibc,
tunables, jemalloc and mimalloc runs still had that step; the others had not.)

Settings from exec (``hardware.malloc_at_exec``, default on): a paper or live
``python -m engine`` reads its config, then executes its own command line again
(:func:`reexec`: ``os.execve`` of ``sys.executable`` with ``sys.orig_argv``, so the
PID, the standard streams and the working directory stay; Python's files close)
with the keys above in ``GLIBC_TUNABLES`` (:func:`malloc_exec_env`: merged with the
user's, whose other tunables stay; the config's values win) and
:data:`EXEC_MARKER` set. glibc reads them before the interpreter allocates. The
re-executed process finds them there (or the marker) and goes on: never a second
exec; nor where the service's environment already holds them, nor in replays (their
start-up time counts), nor without glibc. The run then applies the settings the
best way left (:func:`malloc_applied`): ``exec`` (already read: ``mallopt`` is not
called, which would override what the environment chose), else ``mallopt`` at the
run's start, else ``none``; the report (``hardware.malloc_trim.mallopt.applied``)
and the log (``malloc settings``) say which. glibc 2.36 parses ``GLIBC_TUNABLES``
in place: ``/proc/<pid>/environ`` shows the value cut at each ``:`` (the
process's own ``os.environ`` has it whole). Costs a second interpreter start
(the imports up to the config: 0.9 to 3.9 s, median 2.8, five starts at load 5 on
2 cores) in paper and live runs only.

Measured with it, ``python -m tools.bench soak --minutes 10.95 --speed 5
--warmup-minutes 2 --heap`` (paper; live: ``--mode live --minutes 7.99``) against
``--no-malloc-at-exec`` (mallopt at the run's start), interleaved (paper exec,
paper mallopt, live exec, live mallopt, three rounds), load 3.4-6.3 on 2 cores,
MB per market hour after warm-up, each run as RSS slope / RSS floor / malloc free /
malloc in use:

- exec (the default): paper 0.91 / 0.82 / 0.38 / 0.40, 1.51 / 1.39 / 1.09 / 0.39,
  0.95 / 0.84 / 0.32 / 0.43; live 0.54 / 0.45 / -0.46 / 0.54, 0.62 / 0.34 / 0.77 /
  0.47, 0.27 / -0.57 / -0.37 / 0.38 (medians 0.54 / 0.34).
- mallopt: paper 1.29 / 1.66 / 0.32 / 0.38, 1.63 / 1.30 / 0.59 / 0.38, 1.40 / 1.61 /
  1.06 / 0.45; live 1.59 / 1.04 / 1.15 / 0.43, 0.45 / 1.18 / 0.39 / 0.29, 2.36 /
  1.78 / 0.89 / 0.70 (medians 1.59 / 1.18).
- two more paper rounds (after the portfolio fix below, load 1.4-2.2): exec
  1.39 / 1.00 / 0.83 / 0.48, 1.60 / 1.37 / 1.31 / 0.46; mallopt 1.31 / 1.34 / 0.64 /
  0.27, 1.32 / 1.22 / 0.71 / 0.42. Paper's medians of five: exec 1.39 / 1.00,
  mallopt 1.32 / 1.34: not under 1 MB per market hour.
- paper on the first segment only (``--minutes 7.99``: no exchange restart and
  reconnect), three rounds, load 0.5-1: exec 0.85 / 1.02, 0.28 / -0.17, 1.27 / 0.24
  (medians 0.85 / 0.24); mallopt 0.23 / 0.97, 0.06 / 0.21, 1.39 / 2.15 (medians
  0.23 / 0.97).

Live is under 1 MB per market hour from exec, not with mallopt. Paper's 11-minute
chain read 1.39 / 1.00 here (load 1.4-6.3) and 0.79 / 0.60 in three later runs at load
~1 (exec: 0.68 / 0.30, 1.03 / 0.60, 0.79 / 0.62). Reconnects keep nothing (``python -m
tools.bench soak --reconnect-at MIN``, the exchange drops every connection: four drops
in one run moved the RSS floor by -0.02 to +0.10 MB each, malloc's in-use memory by at
most 0.03 MB; the exchange restart of the chain under 0.03 MB in seven runs). Run to
run the figures move by about 1 MB per hour (100 KB of RSS over the run) either way. What
grows in every variant is malloc's in-use memory, 0.2-0.7 MB per market hour
(30-100 KB in a run), and free memory that moves by a few hundred KB either way. Where from
(``--memray --heap``, paper, 5.5 and 10.95 market minutes, stacks held at the end
that were allocated after warm-up): the order book's level dicts, rebuilt by
Python at their working size (72 KB a side, the same in both runs), its price memo
(two generations of 2,048, 13-51 KB a side), the journal's SQLite page cache
(47 KB), the book's sorted key lists (11 KB a side): bounded structures reaching
their size, not growth; Trio's deadline heap, whose stale entries (607 at the
shorter run's end, 780 at the longer's) Trio prunes once they pass twice the live
ones plus 1,000: a saw-tooth of a few hundred KB over some 15-20 market minutes
at this rate, longer than a run; and one growing list, the portfolio actor's solve times (one
float per solve, 2.8 KB then 5.2 KB), now a ring of the latest 1,024
(``engine.portfolio._actor.SOLVE_WINDOW``). A 9-minute slope extrapolated to an
hour counts the bounded fills as growth: the figures above are an upper bound.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import NoReturn

import trio

Trim = Callable[[int], int]
Mallopt = Callable[[int, int], int]

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
NUMPY_CACHE_BUCKETS = 1024  # numpy's alloc.c: NBUCKETS, one per size in bytes below it
NUMPY_CACHE_DEPTH = 7  # NCACHE: freed buffers kept per size


TUNABLES = "GLIBC_TUNABLES"  # read by glibc once, at exec
# Set in the environment of the re-executed engine: it never re-executes twice.
EXEC_MARKER = "TRIREME_MALLOC_EXEC"


def malloc_tunables(*, mmap_threshold_kb: int, arena_max: int) -> dict[str, str]:
    """The ``GLIBC_TUNABLES`` entries of the ``hardware.malloc_*`` keys (0: left out):
    what :func:`tune_malloc` sets with ``mallopt``, in bytes, for glibc to read at exec."""
    out: dict[str, str] = {}
    if mmap_threshold_kb:
        out["glibc.malloc.mmap_threshold"] = str(mmap_threshold_kb * 1024)
        out["glibc.malloc.trim_threshold"] = str(2 * mmap_threshold_kb * 1024)
    if arena_max:
        out["glibc.malloc.arena_max"] = str(arena_max)
    return out


def parse_tunables(value: str | None) -> dict[str, str]:
    """``name=value:name=value`` (glibc's syntax) as a dict, in order; entries without
    ``=`` are dropped (glibc ignores them too)."""
    out: dict[str, str] = {}
    for item in (value or "").split(":"):
        name, eq, val = item.partition("=")
        if eq and name:
            out[name] = val
    return out


def merge_tunables(current: str | None, wanted: Mapping[str, str]) -> str:
    """``current`` (the user's ``GLIBC_TUNABLES``) with ``wanted``'s entries set: the
    user's other tunables are kept, in their order; the config's values win."""
    merged = parse_tunables(current)
    merged.update(wanted)
    return ":".join(f"{name}={val}" for name, val in merged.items())


def tunables_in_effect(env: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether ``env``'s ``GLIBC_TUNABLES`` (this process's, read by glibc at its exec)
    holds every ``wanted`` entry with its value."""
    have = parse_tunables(env.get(TUNABLES))
    return all(have.get(name) == val for name, val in wanted.items())


def is_glibc() -> bool:
    """Whether the process's C library is glibc (it has ``gnu_get_libc_version``)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    return getattr(libc, "gnu_get_libc_version", None) is not None


def malloc_exec_env(
    env: Mapping[str, str], *, mmap_threshold_kb: int, arena_max: int, glibc: bool
) -> dict[str, str] | None:
    """The environment to re-execute the engine with so that glibc reads the
    ``hardware.malloc_*`` settings at exec (``GLIBC_TUNABLES``, merged with the
    user's, and :data:`EXEC_MARKER`), or None when there is nothing to do: not glibc,
    nothing to set, the settings already there, or this process is the re-executed one.
    """
    wanted = malloc_tunables(mmap_threshold_kb=mmap_threshold_kb, arena_max=arena_max)
    if not glibc or not wanted or EXEC_MARKER in env or tunables_in_effect(env, wanted):
        return None
    return {**env, TUNABLES: merge_tunables(env.get(TUNABLES), wanted), EXEC_MARKER: "1"}


def reexec(env: Mapping[str, str]) -> NoReturn:
    """Execute this process's command line again (``sys.orig_argv``, the same
    interpreter) with ``env``: the same PID, standard streams and working directory;
    files Python opened close (they are not inheritable). Python's own buffers are
    flushed first.

    Raises:
        OSError: the exec failed (the process goes on as it was).
    """
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], dict(env))


def malloc_applied(
    env: Mapping[str, str], *, mmap_threshold_kb: int, arena_max: int, mallopt: Mallopt | None
) -> dict[str, object]:
    """Apply the ``hardware.malloc_*`` settings in a paper or live run, the best way
    left: already read by glibc at exec (``GLIBC_TUNABLES`` in ``env`` holds them:
    nothing to do), else :func:`tune_malloc` (``mallopt``, glibc), else nothing.

    Returns :func:`tune_malloc`'s report with ``applied``: ``"exec"``, ``"mallopt"``
    or ``"none"`` (not glibc, or every key 0), and ``tunables`` (the process's
    ``GLIBC_TUNABLES``, or None).
    """
    wanted = malloc_tunables(mmap_threshold_kb=mmap_threshold_kb, arena_max=arena_max)
    tunables = env.get(TUNABLES)
    if mallopt is not None and wanted and tunables_in_effect(env, wanted):
        out: dict[str, object] = {
            "available": True,
            "mmap_threshold_kb": mmap_threshold_kb or None,
            "trim_threshold_kb": 2 * mmap_threshold_kb or None,
            "arena_max": arena_max or None,
            "refused": [],
        }
        how = "exec"
    else:
        out = tune_malloc(mmap_threshold_kb=mmap_threshold_kb, arena_max=arena_max, mallopt=mallopt)
        set_any = any(out[k] is not None for k in ("mmap_threshold_kb", "arena_max"))
        how = "mallopt" if set_any else "none"
    return {**out, "applied": how, "tunables": tunables}


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

"""Soak: the engine's resident memory over many minutes of market data.

``python -m tools.bench soak [--minutes N] [--speed X] [--warmup-minutes W]
[--mode paper|live] [--sample-s S] [--trim-s S] [--mmap-threshold-kb K] [--arena-max N]
[--[no-]malloc-at-exec] [--[no-]numpy-cache-fill] [--allocator glibc|jemalloc|mimalloc]
[--engine-env NAME=VALUE] [--tracemalloc] [--malloc-trim]
[--heap] [--memray] [--reconnect-at MIN ...] [--warmup-reconnect] [--keep DIR]``
prints JSON.

The engine runs as users run it, ``python -m engine --config ... --mode paper``
(or ``live``), in its own process, against the loopback exchange
(``python -m engine sim-exchange``, another process) playing real captures at
``--speed`` times their recorded pace. The exchange plays a capture once, so
longer runs chain captures whose ids keep increasing (the feed drops older ids
as duplicates): a segment is one exchange process; when it has played its
capture the next starts on the same ports and the engine reconnects, as after an
exchange restart. Default chain: the BTCUSDT captures of 2024-07-18 and -19 in
``../shared/data/external/hftbacktest_history`` (one segment, 8.0 min), then
the bundled 2024-08-08 sample (3.0 min): 11 minutes of market time. The 2023
captures there are left out: their receive-time prefix is in microseconds, which
the exchange reads as nanoseconds (it would play 8.5 minutes in half a second).

The engine's RSS (``/proc/<pid>/status`` ``VmRSS``; Linux) is sampled every
``--sample-s`` seconds of wall time. Market time of a sample: the segments
played before it, plus the wall time since its segment's exchange came up times
``--speed`` (playback starts when the engine connects, within its reconnect
backoff of 0.05-0.5 s). Reported:

- ``rss_mb``: at the first sample, at the end of warm-up (``--warmup-minutes``
  of market time: the kernels, models, book and bounded windows fill up), at the
  end, and the maximum;
- ``slope_kb_per_market_min``: least-squares slope of RSS against market time
  after warm-up, and ``mb_per_market_hour`` extrapolated from it (target: < 1);
  ``kb_per_wall_s`` for comparison with wall-clock figures;
- ``engine``: the run's own report figures (messages, reconnects, steps,
  orders, fills, and its ``malloc_trim`` calls) and its exit status: a run that
  fell behind or lost its feed would not be a soak.
- ``mmap_threshold_kb``, ``arena_max``: the engine's ``mallopt`` settings
  (``hardware.malloc_mmap_threshold_kb`` and ``malloc_arena_max``; 0: glibc's
  own), from config.toml unless ``--mmap-threshold-kb`` / ``--arena-max`` say;
  the engine's report (``engine.malloc_trim.mallopt``) says what glibc took.
- ``malloc_at_exec``: ``hardware.malloc_at_exec`` (``--[no-]malloc-at-exec``;
  default config.toml's): the engine executes itself again with those settings
  in ``GLIBC_TUNABLES`` (same PID, so the samples follow it); ``malloc_applied``:
  how the engine applied them (``exec``, ``mallopt`` or ``none``, its report's).
- ``numpy_cache_fill``: ``hardware.numpy_cache_fill`` (numpy's small-buffer
  cache filled at the start; ``--no-numpy-cache-fill`` to measure without).
- ``allocator``: the engine's C allocator, ``glibc`` or a library preloaded into
  the engine process alone (``LD_PRELOAD``; Debian ``libjemalloc2``,
  ``libmimalloc2.0``; exit 2 when not installed), and ``allocator_mapped``: whether
  the engine had it mapped at the end (None for glibc). ``engine_env``: variables
  set in the engine's environment only (``--engine-env``, repeatable: e.g.
  ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=65536:glibc.malloc.arena_max=1``,
  which glibc reads at exec, before the interpreter allocates; ``MALLOC_CONF`` for
  jemalloc). Under jemalloc ``--heap``'s malloc figures are jemalloc's own
  (``stats.allocated``; resident less allocated as "free"); mimalloc has none
  (null).
- ``trim_s``: the engine's ``hardware.malloc_trim_s`` in this run (wall
  seconds). The shipped value is in market time as a live run sees it, so the
  soak divides it by ``--speed`` (60 s at 5x: every 12 s of wall time, every
  60 s of market time); ``--trim-s`` sets it (0: off, to measure without).
- ``floor_mb_per_market_hour``: the same slope through the lowest RSS of each
  trim interval (``trim_s`` of wall time; 12 s without trims): RSS rises
  between two trims and falls at each, and the floor is what the engine still
  holds, so its slope is the growth without the saw-tooth's noise;
- ``by_kind``: the same slope for the two parts of RSS (``RssAnon``: memory the
  process allocated; ``RssFile``: pages of mapped files, mostly shared libraries,
  which come in as code paths first run and which the kernel may drop again), and
  ``late_half_mb_per_market_hour``, the slope over the later half of the samples
  after warm-up: closer to the steady state when something still fills up slowly
  (a bounded structure is flat once full; a leak keeps its slope);
- with ``--keep DIR``: every sample in ``DIR/samples.csv`` (wall s, market s, and
  RSS, RssAnon and RssFile in KB);
- with ``--tracemalloc``: the engine runs with :mod:`tracemalloc` on from the
  end of warm-up (slower from there; RSS then includes tracemalloc's own
  records, so take the MB/hour figure from a run without it) and the top
  allocation sites (file:line) that grew between a snapshot a third of the way
  from warm-up to the end (``mid.snap``) and the end. Not from the end of
  warm-up: only what was allocated after tracing started is seen, so a ring
  buffer or a book that turns its items over would count in full as growth;
  between two traced snapshots its old items and its new ones cancel out.
- with ``--malloc-trim`` (a diagnostic; glibc): at the end of warm-up and at the
  end the engine calls ``malloc_trim(0)``, which hands the heap's free pages
  back to the kernel; ``malloc_trim`` reports RSS before and after each call.
  RSS after the trims is what the process still holds; the difference is
  memory already freed that the allocator had kept.

- with ``--heap``: at every sample the engine reports glibc's ``mallinfo2``
  (memory malloc has handed out and not got back; memory it holds free) and
  ``sys.getallocatedblocks()`` (Python's live blocks) and ``sqlite3_memory_used()``
  (SQLite's own memory: the journal's page cache); ``heap`` gives each one's
  value at warm-up and end and its slope per market hour, and the object types
  whose live count grew (``gc_objects_growth``; counted without a collection,
  so cyclic garbage not yet collected counts too), and the same growth for weak
  references by referent and callback, and bound methods by owner and name
  (``gc_detail_growth``: what keeps creating them); at the end, what holds the
  dead weak references and Trio's cancel scopes, nurseries and tasks (``gc_owners``:
  chains of referrer types, counted); with ``--keep``, every sample in
  ``DIR/heap.csv``. The probes run just before the first sample after warm-up
  and just after the last one, so their own allocations stay out of the
  slopes. RSS growing while malloc's in-use memory and
  Python's blocks stay flat is the allocator keeping freed memory
  (``malloc_free_mb`` grows), not a live structure.
- with ``--memray`` (``pip install -e .[profile]``): the engine runs memray's
  tracker with native stacks from the end of warm-up to the end (``memray.bin``
  with ``--keep``; ``python -m memray flamegraph --leaks`` or ``stats`` read it),
  and ``memray_top_leaks`` lists the call stacks (C and Python frames) of what was
  allocated in that time and not freed, the largest first. What a bounded
  structure allocated to replace items freed before tracking counts too; a
  cache that fills slowly (numpy's small buffers, found this way) or a leak
  shows as the same stacks growing between two runs of different lengths. The
  tracker slows the engine: RSS slopes of such a run are not figures. Start-up
  is not tracked (numba's compiling under it would take minutes). Run with
  ``PYTHONMALLOC=malloc`` in the environment to see Python's small objects
  one by one rather than as pymalloc's arenas.

- with ``--reconnect-at MIN`` (repeatable, market minutes): the exchange drops
  every websocket connection then (its ``drop`` fault: the TCP stream aborted), and
  the engine reconnects to the same exchange and resyncs (a new book snapshot, the
  missed trades backfilled over REST), the feed's path after the chain's exchange
  restart without a new capture; ``--warmup-reconnect``: one such drop at half the
  warm-up, so that what a first reconnect fills counts as warm-up.
  ``reconnect_steps``: for each drop and each exchange restart (``kind``), the
  lowest RSS and RssAnon in the 60 market seconds after it (from 10 s on: the
  resync) less the lowest in the 60 s before (one trim interval each: the floor),
  and the same for the median of malloc's in-use memory (``--heap``), in MB. A
  retention per reconnect shows as the same step at every one; a one-time fill at
  the first only.

``--mode live`` runs the engine's Binance venue against the exchange's trading
side. A restarted exchange is a fresh account the engine would reconcile against
(and halt on), so live mode plays one segment only (up to 8 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HISTORY = ROOT.parent / "shared/data/external/hftbacktest_history"
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
# (files, market seconds) in id order: each segment's ids above the one before.
CHAIN: tuple[tuple[tuple[Path, ...], float], ...] = (
    ((HISTORY / "usdm_btcusdt_20240718.gz", HISTORY / "usdm_btcusdt_20240719.gz"), 479.8),
    ((SAMPLE,), 180.0),
)
KEY = "soakkey" + "A" * 57
SECRET = "soaksecret" + "b" * 54
_PLAYED = b"sim exchange: capture played"  # in the exchange's log
_CONNECTED = b'"feed connected"'  # in the engine's log


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.bench soak", description=__doc__)
    p.add_argument("--minutes", type=float, default=10.0, help="market time to play")
    p.add_argument(
        "--speed", type=float, default=5.0, help="x recorded pace (the engine must keep up)"
    )
    p.add_argument("--warmup-minutes", type=float, default=2.0, help="market time left out")
    p.add_argument("--mode", choices=["paper", "live"], default="paper")
    p.add_argument("--sample-s", type=float, default=0.5, help="RSS sampling period, wall")
    p.add_argument(
        "--trim-s",
        type=float,
        help="hardware.malloc_trim_s, wall seconds (0: off; default: config.toml's / --speed)",
    )
    p.add_argument(
        "--mmap-threshold-kb",
        type=int,
        help="hardware.malloc_mmap_threshold_kb (0: glibc's dynamic one; default: config.toml's)",
    )
    p.add_argument(
        "--arena-max",
        type=int,
        help="hardware.malloc_arena_max (0: glibc's default; default: config.toml's)",
    )
    p.add_argument(
        "--malloc-at-exec",
        action=argparse.BooleanOptionalAction,
        help="hardware.malloc_at_exec: the mallopt settings from exec, by the engine "
        "executing itself again (default: config.toml's; --no-: mallopt at the run's start)",
    )
    p.add_argument(
        "--numpy-cache-fill",
        action=argparse.BooleanOptionalAction,
        help="hardware.numpy_cache_fill (default: config.toml's)",
    )
    p.add_argument(
        "--allocator",
        choices=["glibc", "jemalloc", "mimalloc"],
        default="glibc",
        help="the engine's C allocator: glibc's, or a library preloaded (LD_PRELOAD)",
    )
    p.add_argument(
        "--engine-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the engine's environment only (GLIBC_TUNABLES, MALLOC_CONF, MIMALLOC_...)",
    )
    p.add_argument("--tracemalloc", action="store_true", help="find the growing sites")
    p.add_argument("--frames", type=int, default=1, help="tracemalloc frames per site")
    p.add_argument(
        "--malloc-trim", action="store_true", help="malloc_trim(0) at warm-up end and end"
    )
    p.add_argument(
        "--heap", action="store_true", help="sample malloc's and Python's live memory too"
    )
    p.add_argument(
        "--memray",
        action="store_true",
        help="native allocation profile from warm-up to end (needs memray: the profile extra)",
    )
    p.add_argument(
        "--reconnect-at",
        type=float,
        action="append",
        default=[],
        metavar="MIN",
        help="drop the feed's connections at this market minute (repeatable): "
        "the engine reconnects and resyncs",
    )
    p.add_argument(
        "--warmup-reconnect",
        action="store_true",
        help="one such reconnect at half the warm-up (its fill counts as warm-up)",
    )
    p.add_argument("--keep", type=Path, help="keep config, logs and journal in this folder")
    return p.parse_args(argv)


def run(argv: list[str]) -> Mapping[str, Any]:
    """Run the soak; returns the JSON-able figures (see the module docstring).

    Raises:
        SystemExit: 2 on bad arguments or too little data for ``--minutes`` (one
            line on stderr); 1 when the engine or the exchange fails.
    """
    args = _parse(argv)
    if args.trim_s is not None and args.trim_s != 0 and not 1 <= args.trim_s <= 86_400:
        _usage_error(f"--trim-s must be 0 (off) or 1..86400 seconds, got {args.trim_s:g}")
    if any("=" not in e or not e.partition("=")[0] for e in args.engine_env):
        _usage_error("--engine-env takes NAME=VALUE")
    segments = _plan(args.minutes, args.mode)
    if args.warmup_minutes >= args.minutes:
        _usage_error("--warmup-minutes must be shorter than --minutes")
    if args.warmup_reconnect:
        args.reconnect_at.append(args.warmup_minutes / 2)
    args.reconnect_at.sort()
    if any(not 0 < m < args.minutes for m in args.reconnect_at):
        _usage_error(f"--reconnect-at must be within 0..{args.minutes:g} market minutes")
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            work = args.keep
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        return _soak(args, segments, work)


def _usage_error(message: str) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(2)


def _plan(minutes: float, mode: str) -> list[tuple[tuple[Path, ...], float]]:
    """The segments to play, the last one cut to make ``minutes`` in all."""
    want = minutes * 60.0
    chain = CHAIN[:1] if mode == "live" else CHAIN
    out: list[tuple[tuple[Path, ...], float]] = []
    for files, seconds in chain:
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            _usage_error(f"soak data missing: {', '.join(missing)}")
        take = min(seconds, want - sum(s for _f, s in out))
        if take <= 0:
            break
        out.append((files, take))
    have = sum(s for _f, s in out)
    if have < want - 1e-6:
        _usage_error(
            f"--minutes {minutes:g}: the chained captures hold {have / 60:.1f} minutes"
            + (" (live mode plays one segment)" if mode == "live" else "")
        )
    return out


def _soak(
    args: argparse.Namespace, segments: list[tuple[tuple[Path, ...], float]], work: Path
) -> dict[str, Any]:
    env = dict(os.environ, SOAK_KEY=KEY, SOAK_SECRET=SECRET, PYTHONUNBUFFERED="1")
    report_path = work / "report.json"
    ports = _free_ports()
    config = work / "soak.toml"
    doc = _engine_doc(args, ports, work)
    trim_s = doc["hardware"]["malloc_trim_s"]
    config.write_text(_toml(doc))
    engine_log = _LogWatch(work / "engine.jsonl")
    samples: list[tuple[float, ...]] = []  # (wall s, market s, RSS, anon, file KB)
    # (market s, malloc in use KB, free KB, Python blocks, SQLite KB)
    heap: list[tuple[float, ...]] = []
    types: list[dict[str, dict[str, int]]] = []
    snapshots: list[Path] = []
    trims: list[dict[str, float]] = []
    offset = 0.0
    t0 = 0.0
    warm_probed = False
    # tracemalloc: a second snapshot a third of the way from warm-up to the end.
    mid_s = args.warmup_minutes * 60 + (args.minutes - args.warmup_minutes) * 20
    owners: dict[str, int] = {}
    # Market seconds of each reconnect: the exchange's drops and its restarts.
    steps: list[tuple[float, str]] = [(m * 60.0, "drop") for m in args.reconnect_at]
    steps += [(sum(s for _f, s in segments[:i]), "restart") for i in range(1, len(segments))]
    connects = 0  # the engine's connections so far: one per segment and per drop
    engine = _start_engine(args, config, report_path, work, env)
    try:
        for index, (files, seconds) in enumerate(segments):
            exchange_log = _LogWatch(work / f"exchange-{index}.jsonl")
            # The drops within this segment, in seconds of its playback (wall).
            drops = tuple(
                (m * 60.0 - offset) / args.speed
                for m in args.reconnect_at
                if offset <= m * 60.0 < offset + seconds
            )
            with _exchange(files, args.speed, ports, exchange_log.path, env, drops):
                # Playback starts when the engine connects (it boots, or reconnects).
                def connected(n: int = connects + 1) -> bool:
                    return engine_log.count(_CONNECTED) >= n

                connects += 1 + len(drops)

                if not _wait(engine, connected, 300):
                    raise SystemExit("error: the engine did not connect within 300 s")
                started = time.monotonic()
                t0 = t0 or started

                def market_now(
                    at: float = started, base: float = offset, s: float = seconds
                ) -> float:
                    return base + min(s, (time.monotonic() - at) * args.speed)

                while True:
                    market = market_now()
                    if market >= args.warmup_minutes * 60 and not warm_probed:
                        # The probes allocate in the engine (a list of every object,
                        # a snapshot): before the first sample after warm-up, so that
                        # the slope starts after them.
                        warm_probed = True
                        if args.heap:
                            types.append(_types(engine, work / "warm.types"))
                        if args.tracemalloc:
                            snapshots.append(_snapshot(engine, work / "warm.snap"))
                        if args.malloc_trim:
                            trims.append(_trim(engine, work / "warm.trim"))
                        if args.memray:
                            _request(engine, "memray", work / "memray.bin")
                        market = market_now()
                    if args.tracemalloc and len(snapshots) == 1 and market >= mid_s:
                        snapshots.append(_snapshot(engine, work / "mid.snap"))
                        market = market_now()
                    samples.append((time.monotonic() - t0, market, *_memory_kb(engine.pid)))
                    if args.heap:
                        heap.append((market, *_heap(engine, work / "heap.json")))
                    if market >= offset + seconds or exchange_log.count(_PLAYED):
                        break
                    time.sleep(args.sample_s)
                    _check(engine)
            offset += seconds
        # The last sample first, then the probes (they allocate).
        samples.append((time.monotonic() - t0, offset, *_memory_kb(engine.pid)))
        allocator_mapped = _mapped(engine.pid, args.allocator)
        if args.memray and warm_probed:
            _request(engine, "memray", work / "memray.bin")  # stops it
        if args.heap:
            heap.append((offset, *_heap(engine, work / "heap.json")))
        if args.tracemalloc:
            snapshots.append(_snapshot(engine, work / "end.snap"))
        if args.heap:
            types.append(_types(engine, work / "end.types"))
            owners = _owners(engine, work / "end.owners")
        if args.malloc_trim:
            trims.append(_trim(engine, work / "end.trim"))
        engine.send_signal(signal.SIGINT)
        rc = engine.wait(timeout=120)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    with (work / "samples.csv").open("w") as f:  # kept with --keep, for plots
        f.write("wall_s,market_s,rss_kb,anon_kb,file_kb\n")
        f.writelines(f"{w:.3f},{m:.3f},{r:.0f},{a:.0f},{fi:.0f}\n" for w, m, r, a, fi in samples)
    if heap:
        with (work / "heap.csv").open("w") as f:
            f.write("market_s,malloc_in_use_kb,malloc_free_kb,python_blocks,sqlite_kb\n")
            f.writelines(f"{m:.3f},{u:.0f},{fr:.0f},{b:.0f},{sq:.0f}\n" for m, u, fr, b, sq in heap)
    out = _figures(samples, args.warmup_minutes * 60.0, floor_window_s=trim_s or 12.0)
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    feed = report.get("feed", {})
    played = sum(_played(files, seconds) for files, seconds in segments)
    out = {
        "mode": args.mode,
        "speed": args.speed,
        "trim_s": trim_s,
        "mmap_threshold_kb": doc["hardware"].get("malloc_mmap_threshold_kb"),
        "arena_max": doc["hardware"].get("malloc_arena_max"),
        "numpy_cache_fill": doc["hardware"].get("numpy_cache_fill", True),
        "malloc_at_exec": doc["hardware"].get("malloc_at_exec", True),
        # How the engine applied them: exec (GLIBC_TUNABLES), mallopt or none.
        "malloc_applied": (
            ((report.get("hardware") or {}).get("malloc_trim") or {}).get("mallopt") or {}
        ).get("applied"),
        "allocator": args.allocator,
        "allocator_mapped": allocator_mapped,
        "engine_env": dict(e.partition("=")[::2] for e in args.engine_env),
        "market_minutes": round(offset / 60.0, 2),
        "wall_seconds": round(samples[-1][0], 1),
        "segments": [
            {"files": [f.name for f in files], "market_s": round(s, 1)} for files, s in segments
        ],
        **out,
        "engine": {
            "rc": rc,
            # Below 1: the engine fell behind the pace (and market time above is
            # overstated): lower --speed.
            "kept_up": round(feed.get("messages", 0) / played, 3) if played else None,
            "messages_played": played,
            "messages": feed.get("messages"),
            "connects": feed.get("connects"),
            "reconnects": feed.get("reconnects"),
            "steps": report.get("steps"),
            "orders": report.get("orders"),
            "fills": report.get("fills"),
            "risk_steps": (report.get("risk") or {}).get("steps"),
            "malloc_trim": (report.get("hardware") or {}).get("malloc_trim"),
        },
    }
    if heap:
        out["heap"] = _heap_figures(heap, args.warmup_minutes * 60.0)
    if steps:
        out["reconnect_steps"] = _reconnect_steps(samples, heap, sorted(steps))
    if len(types) == 2:
        out["heap"]["gc_objects_growth"] = _type_growth(types[0]["types"], types[1]["types"])
        out["heap"]["gc_detail_growth"] = _type_growth(types[0]["detail"], types[1]["detail"])
    if owners:
        out["heap"]["gc_owners"] = owners
    if len(snapshots) >= 2:  # mid to end (warm-up to end if the run ended before mid)
        out["tracemalloc_top_growth"] = _growth(snapshots[-2], snapshots[-1])
    if args.memray and (work / "memray.bin").exists():
        out["memray_top_leaks"] = _memray_leaks(work / "memray.bin")
    if len(trims) == 2:
        out["malloc_trim"] = {
            "warmup": trims[0],
            "end": trims[1],
            "growth_after_trims_mb": round(trims[1]["after_mb"] - trims[0]["after_mb"], 2),
        }
    return out


def _reconnect_steps(
    samples: list[tuple[float, ...]],
    heap: list[tuple[float, ...]],
    steps: list[tuple[float, str]],
    window_s: float = 60.0,
    settle_s: float = 10.0,
) -> list[dict[str, Any]]:
    """What each reconnect (``(market s, "drop" | "restart")``) added: the lowest RSS
    and RssAnon (MB) of the ``window_s`` of market time after it (from ``settle_s``
    on: the resync's snapshot and backfill) less that of the ``window_s`` before it,
    and the same for the median of malloc's in-use memory (``--heap``). A window of
    one trim interval (60 market s shipped) holds one trim, so its lowest RSS is the
    floor. None where a window holds no sample."""
    market = np.array([x[1] for x in samples], dtype=np.float64)
    rss = np.array([x[2] for x in samples], dtype=np.float64)
    anon = np.array([x[3] for x in samples], dtype=np.float64)
    heap_at = np.array([x[0] for x in heap], dtype=np.float64)
    in_use = np.array([x[1] for x in heap], dtype=np.float64)

    def step(x: np.ndarray, y: np.ndarray, at: float, pick: Callable[..., Any]) -> float | None:
        before = y[(x >= at - window_s) & (x < at)]
        after = y[(x >= at + settle_s) & (x < at + settle_s + window_s)]
        if not len(before) or not len(after):
            return None
        return round(float(pick(after) - pick(before)) / 1024, 3)

    return [
        {
            "market_min": round(at / 60.0, 2),
            "kind": kind,
            "rss_floor_mb": step(market, rss, at, np.min),
            "anon_floor_mb": step(market, anon, at, np.min),
            "malloc_in_use_mb": step(heap_at, in_use, at, np.median) if heap else None,
        }
        for at, kind in steps
    ]


def _played(files: tuple[Path, ...], seconds: float) -> int:
    """Messages of the capture within its first ``seconds`` (what the exchange played)."""
    from engine.venues.sim._recorded import load_recording

    messages = load_recording([str(f) for f in files]).messages
    first = messages[0].ts
    return sum(1 for m in messages if m.ts - first <= seconds * 1e9)


def _figures(
    samples: list[tuple[float, ...]], warmup_s: float, floor_window_s: float = 0.0
) -> dict[str, Any]:
    """The figures of ``(wall s, market s, RSS KB, RssAnon KB, RssFile KB)`` samples;
    with ``floor_window_s``, also the slope of RSS's floor (see :func:`_floor_slope`)."""
    wall, market, rss, anon, file = np.array(samples, dtype=np.float64).T
    after = market >= warmup_s
    warm = int(np.argmax(after))
    late = after & (market >= (market[warm] + market[-1]) / 2)

    slope = _slope

    def per_hour(kb_per_min: float | None) -> float | None:
        return None if kb_per_min is None else round(kb_per_min * 60 / 1024, 3)

    minutes = market / 60.0
    slope_min = slope(minutes, rss, after)
    slope_wall = slope(wall, rss, after)
    return {
        "samples": len(samples),
        "rss_mb": {
            "first": round(rss[0] / 1024, 1),
            "warmup": round(rss[warm] / 1024, 1),
            "end": round(rss[-1] / 1024, 1),
            "max": round(rss.max() / 1024, 1),
        },
        "growth_after_warmup_mb": round((rss[-1] - rss[warm]) / 1024, 2),
        "slope_kb_per_market_min": None if slope_min is None else round(slope_min, 2),
        "mb_per_market_hour": None if slope_min is None else round(slope_min * 60 / 1024, 3),
        "kb_per_wall_s": None if slope_wall is None else round(slope_wall, 2),
        "late_half_mb_per_market_hour": per_hour(slope(minutes, rss, late)),
        **(
            {
                "floor_mb_per_market_hour": per_hour(
                    _floor_slope(wall, minutes, rss, after, floor_window_s)
                )
            }
            if floor_window_s > 0
            else {}
        ),
        "by_kind": {
            name: {
                "warmup_mb": round(kind[warm] / 1024, 1),
                "end_mb": round(kind[-1] / 1024, 1),
                "mb_per_market_hour": per_hour(slope(minutes, kind, after)),
            }
            for name, kind in (("anon", anon), ("file", file))
        },
    }


def _floor_slope(
    wall: np.ndarray, x: np.ndarray, y: np.ndarray, where: np.ndarray, window_s: float
) -> float | None:
    """Slope of the lowest ``y`` of each ``window_s`` of wall time (whole windows
    only) against its ``x``: memory that is periodically handed back (a trim every
    ``window_s``) rises and falls within a window; what stays after each fall is
    what the process holds, and its trend is the growth."""
    if where.sum() < 3:
        return None
    w, xs, ys = wall[where], x[where], y[where]
    index = np.floor((w - w[0]) / window_s).astype(np.int64)
    whole = index < index[-1]  # the last window is cut short
    xs_min, ys_min = [], []
    for i in np.unique(index[whole]):
        at = np.flatnonzero(index == i)
        low = at[np.argmin(ys[at])]
        xs_min.append(xs[low])
        ys_min.append(ys[low])
    mins = np.ones(len(xs_min), dtype=bool)
    return _slope(np.array(xs_min), np.array(ys_min), mins)


def _slope(x: np.ndarray, y: np.ndarray, where: np.ndarray) -> float | None:
    """Least-squares slope of ``y`` against ``x`` over ``where`` (None: too few points)."""
    where = where & np.isfinite(y)  # NaN: not measured (mimalloc's heap)
    if where.sum() < 3 or np.ptp(x[where]) <= 0:
        return None
    return float(np.polyfit(x[where], y[where], 1)[0])


@contextlib.contextmanager
def _exchange(
    files: tuple[Path, ...],
    speed: float,
    ports: tuple[int, int],
    log: Path,
    env: dict[str, str],
    drops: tuple[float, ...] = (),
) -> Iterator[None]:
    """A sim-exchange process playing ``files`` on ``ports`` (ws, rest) while inside,
    dropping every websocket connection at each of ``drops`` (seconds of playback)."""
    cmd = [sys.executable, "-m", "engine", "sim-exchange", "--speed", str(speed)]
    for f in files:
        cmd += ["--data", str(f)]
    for at_s in drops:
        cmd += ["--fault", f"drop@{at_s:.3f}"]
    cmd += ["--port", str(ports[0]), "--rest-port", str(ports[1]), "--log", str(log)]
    cmd += ["--api-key-env", "SOAK_KEY", "--api-secret-env", "SOAK_SECRET"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, env=env, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "sim-exchange: ws://H:P  http://H:P  (...)"
        if not line.startswith("sim-exchange:"):
            raise SystemExit(f"error: sim-exchange did not start: {line!r}")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def _free_ports() -> tuple[int, int]:
    """Two free TCP ports, for every segment's exchange (the engine's config names them)."""
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return int(a.getsockname()[1]), int(b.getsockname()[1])


class _LogWatch:
    """Counts a marker in a growing log file, reading only what was appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._tail = b""
        self._counts: dict[bytes, int] = {}

    def count(self, marker: bytes) -> int:
        """How many complete lines so far hold ``marker`` (one marker per watch)."""
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
            self._offset += len(chunk)
            lines = (self._tail + chunk).split(b"\n")
            self._tail = lines.pop()
            self._counts[marker] = self._counts.get(marker, 0) + sum(marker in x for x in lines)
        return self._counts.get(marker, 0)


def _wait(engine: subprocess.Popen[bytes], done: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``done`` (a process runs; this measures nothing) until it is true (True) or
    ``timeout_s`` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        _check(engine)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _check(engine: subprocess.Popen[bytes]) -> None:
    if engine.poll() is not None:
        raise SystemExit(f"error: the engine exited (rc {engine.returncode}); see engine.out")


def _engine_doc(args: argparse.Namespace, ports: tuple[int, int], work: Path) -> dict[str, Any]:
    """The shipped config, on the loopback exchange, with its files under ``work``."""
    with (ROOT / "config.toml").open("rb") as f:
        doc = tomllib.load(f)
    ws_url, rest_url = f"ws://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    doc["engine"]["mode"] = args.mode
    doc["data"] = {"paths": [], "symbols": ["BTCUSDT"]}
    doc["feeds"].update(
        ws_url=ws_url,
        rest_url=rest_url,
        streams=["bookTicker", "trade", "depth@0ms"],  # what the captures hold
        backoff_initial_ms=50,  # back within a second when the next segment is up
        backoff_max_ms=500,
    )
    # Wall-clock buckets: the shipped 200 ms of market time at this pace.
    doc["strategy"]["sample_ms"] = max(1, round(200 / args.speed))
    doc["model"]["paths"] = [str(ROOT / p) for p in doc["model"]["paths"]]
    doc["journal"]["dir"] = str(work / "runs")
    doc["logging"]["path"] = str(work / "engine.jsonl")
    doc["hardware"]["enabled"] = False  # no pinning on a shared machine
    doc["hardware"]["malloc_trim_s"] = _trim_s(args, doc["hardware"].get("malloc_trim_s", 60.0))
    if args.mmap_threshold_kb is not None:  # checked by the engine's config loader
        doc["hardware"]["malloc_mmap_threshold_kb"] = args.mmap_threshold_kb
    if args.arena_max is not None:
        doc["hardware"]["malloc_arena_max"] = args.arena_max
    if args.numpy_cache_fill is not None:
        doc["hardware"]["numpy_cache_fill"] = args.numpy_cache_fill
    if args.malloc_at_exec is not None:
        doc["hardware"]["malloc_at_exec"] = args.malloc_at_exec
    if args.mode == "live":
        doc["engine"]["live"] = True
        doc["venue"].update(
            kind="binance",
            rest_url=rest_url,
            ws_url=ws_url,
            api_key_env="SOAK_KEY",
            api_secret_env="SOAK_SECRET",
        )
    return doc


def _trim_s(args: argparse.Namespace, shipped: float) -> float:
    """The engine's ``malloc_trim_s`` (wall seconds): ``--trim-s``, else the shipped
    interval of market time at this pace (at least 1 s, the key's minimum)."""
    if args.trim_s is not None:
        return float(args.trim_s)
    return 0.0 if shipped == 0 else max(1.0, round(shipped / args.speed, 1))


def _start_engine(
    args: argparse.Namespace, config: Path, report: Path, work: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    engine_args = ["--config", str(config), "--mode", args.mode, "--report", str(report)]
    if args.mode == "live":
        engine_args.append("--i-understand-live")
    if args.tracemalloc or args.malloc_trim or args.heap or args.memray:
        code = f"from tools.bench.soak import probed_engine; probed_engine({args.frames})"
        cmd = [sys.executable, "-c", code, *engine_args]
    else:
        cmd = [sys.executable, "-m", "engine", *engine_args]
    env = dict(env, **_engine_env(args))
    out = (work / "engine.out").open("wb")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT
    )
    out.close()
    return proc


def _engine_env(args: argparse.Namespace) -> dict[str, str]:
    """The engine's own environment variables: ``--engine-env``'s, and ``LD_PRELOAD``
    naming the ``--allocator``'s library (exit 2 when it is not installed)."""
    out = dict(e.partition("=")[::2] for e in args.engine_env)
    if args.allocator != "glibc":
        from engine._memory import find_allocator

        library = find_allocator(args.allocator)
        if library is None:
            _usage_error(f"--allocator {args.allocator}: its library is not installed")
        out["LD_PRELOAD"] = library
    return out


def _mapped(pid: int, allocator: str) -> bool | None:
    """Whether the engine process has the ``allocator``'s library mapped (it was
    preloaded); None for glibc's own."""
    if allocator == "glibc":
        return None
    with open(f"/proc/{pid}/maps") as f:
        return any(f"lib{allocator}" in line for line in f)


def _memory_kb(pid: int) -> tuple[float, float, float]:
    """``VmRSS``, ``RssAnon`` and ``RssFile`` of a process, in KB (Linux)."""
    fields = {b"VmRSS:": 0.0, b"RssAnon:": 0.0, b"RssFile:": 0.0}
    found = 0
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            key = line.split(b"\t", 1)[0].split(b" ", 1)[0]
            if key in fields:
                fields[key] = float(line.split()[1])
                found += 1
    if found != len(fields):
        raise RuntimeError(f"no VmRSS/RssAnon/RssFile for process {pid}")
    return fields[b"VmRSS:"], fields[b"RssAnon:"], fields[b"RssFile:"]


# -- tracemalloc and malloc_trim inside the engine process -----------------------------


def probed_engine(frames: int) -> None:
    """``python -m engine`` taking requests on stdin, one a line: ``snap PATH``
    dumps a tracemalloc snapshot to PATH, ``trim PATH`` calls glibc's
    ``malloc_trim(0)`` and writes its result to PATH; then ``<PATH>.done``
    appears. Runs in the engine process.

    Tracing starts at the first snapshot (the end of warm-up), not at start-up:
    numba's JIT compiling under tracemalloc took over 5 minutes of CPU (the
    engine never connected), and what grows after warm-up is what was
    allocated after it and is still alive at the end.
    """
    import runpy

    def serve(stream: IO[str]) -> None:
        for line in stream:
            kind, _sp, path = line.strip().partition(" ")
            if kind == "trim":
                # glibc takes each arena's lock: safe beside the running threads.
                released = ctypes.CDLL("libc.so.6").malloc_trim(0)
                Path(path).write_text(str(released))
            elif kind == "heap":
                Path(path).write_text(json.dumps(_heap_now()))
            elif kind == "types":
                Path(path).write_text(json.dumps(_type_counts()))
            elif kind == "owners":
                Path(path).write_text(json.dumps(_owner_chains()))
            elif kind == "memray":
                # In the main thread (a signal handler runs there), so that memray
                # follows the event loop's Python stack; .done comes from there.
                memray_path.append(path)
                os.kill(os.getpid(), signal.SIGUSR1)
                continue
            else:
                if not tracemalloc.is_tracing():
                    tracemalloc.start(frames)
                tracemalloc.take_snapshot().dump(path)
            Path(path + ".done").touch()

    memray_path: list[str] = []
    trackers: list[Any] = []

    def toggle_memray(_signum: int, _frame: object) -> None:
        """Start memray's tracker (first request) or stop it, writing its file."""
        import memray

        path = memray_path.pop()
        if trackers:
            trackers.pop().__exit__(None, None, None)
        else:
            Path(path).unlink(missing_ok=True)
            tracker = memray.Tracker(path, native_traces=True)
            tracker.__enter__()
            trackers.append(tracker)
        Path(path + ".done").touch()

    signal.signal(signal.SIGUSR1, toggle_memray)
    threading.Thread(target=serve, args=(sys.stdin,), daemon=True).start()
    sys.argv = ["python -m engine", *sys.argv[1:]]
    runpy.run_module("engine", run_name="__main__", alter_sys=True)


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33+), every field in bytes or counts."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes of the heap arenas (sbrk and per-thread)
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in chunks malloc mapped on their own (large blocks)
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use in the arenas
            "fordblks",  # bytes free in the arenas (kept by the allocator)
            "keepcost",
        )
    ]


def _heap_now() -> list[float]:
    """In the engine: malloc's live and free KB, Python's live blocks, and SQLite's KB.

    ``mallinfo2`` sums every arena (the main heap and the threads'): ``uordblks +
    hblkhd`` is what malloc has handed out and not got back (numpy arrays, numba
    and onnxruntime buffers, SQLite's cache, Python objects over 512 B),
    ``fordblks`` what it holds free (fragmentation, or memory it will reuse).
    ``sys.getallocatedblocks()`` counts Python's live memory blocks (its small
    object arenas are mapped outside malloc): flat while no Python object piles up.
    ``sqlite3_memory_used()``: what SQLite holds (the journal's page cache, its
    statements; part of malloc's in-use memory, and invisible to tracemalloc); 0
    where the sqlite3 module has no shared libsqlite3 to ask.

    With jemalloc preloaded (``--allocator jemalloc``; glibc's ``mallinfo2`` would
    count glibc's own, unused heap): its ``stats.allocated`` (in use) and
    ``stats.resident`` less that (held but not in use: free pages not yet purged,
    fragmentation, its metadata). mimalloc has no such figures in its API: NaN.
    """
    heap = _jemalloc_heap()
    if heap is None and _loaded("mi_version") is not None:
        heap = (float("nan"), float("nan"))
    if heap is None:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        heap = ((info.uordblks + info.hblkhd) / 1024, info.fordblks / 1024)
    try:
        used = ctypes.CDLL("libsqlite3.so.0").sqlite3_memory_used  # the loaded one
        used.restype = ctypes.c_int64
        sqlite_kb = used() / 1024
    except (OSError, AttributeError):  # SQLite linked into the sqlite3 module
        sqlite_kb = 0.0
    return [
        *heap,
        float(sys.getallocatedblocks()),
        sqlite_kb,
    ]


def _loaded(symbol: str) -> Any:
    """A C function already loaded into this process, or None."""
    return getattr(ctypes.CDLL(None), symbol, None)


def _jemalloc_heap() -> tuple[float, float] | None:
    """jemalloc's (in use KB, resident but not in use KB), or None without jemalloc."""
    mallctl = _loaded("mallctl")
    if mallctl is None:
        return None
    mallctl.argtypes = [
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.c_void_p,
        ctypes.c_size_t,
    ]
    epoch = ctypes.c_uint64(1)  # stats are a snapshot taken at each epoch write
    mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch))
    values = []
    for name in (b"stats.allocated", b"stats.resident"):
        value, size = ctypes.c_size_t(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
        if mallctl(name, ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
            return None  # built without stats
        values.append(value.value / 1024)
    return values[0], values[1] - values[0]


def _type_counts() -> dict[str, dict[str, int]]:
    """In the engine: live objects tracked by the garbage collector, by type name
    (``types``), and weak references and bound methods by what they point at
    (``detail``)."""
    import gc
    import types as pytypes
    import weakref

    counts: dict[str, int] = {}
    detail: dict[str, int] = {}
    for obj in gc.get_objects():
        tp = type(obj)
        name = tp.__qualname__
        counts[name] = counts.get(name, 0) + 1
        if tp is weakref.ReferenceType:
            target = obj()
            callback = getattr(obj, "__callback__", None)
            key = (
                f"weakref to {'(dead)' if target is None else type(target).__qualname__}"
                f" cb {getattr(callback, '__qualname__', None)}"
            )
        elif tp is pytypes.BuiltinMethodType or tp is pytypes.MethodType:
            owner = getattr(obj, "__self__", None)
            key = f"{name} {type(owner).__qualname__}.{getattr(obj, '__name__', '?')}"
        else:
            continue
        detail[key] = detail.get(key, 0) + 1
    return {"types": counts, "detail": detail}


def _heap(engine: subprocess.Popen[bytes], path: Path) -> list[float]:
    """The engine's ``_heap_now`` figures (one request, answered in its probe thread)."""
    Path(str(path) + ".done").unlink(missing_ok=True)
    _request(engine, "heap", path)
    return [float(x) for x in json.loads(path.read_text())]


_HELD = ("CancelScope", "CancelStatus", "Nursery", "Task")


def _owner_chains(depth: int = 4, top: int = 15) -> dict[str, int]:
    """In the engine: what holds the dead weak references and Trio's scopes and tasks
    alive. For each such object, the chain of the objects that refer to it (the
    first found at each level, up to ``depth``), counted by chain of type names."""
    import gc
    import weakref

    objects = gc.get_objects()  # made before what follows: none of it is in here
    targets = [
        o
        for o in objects
        if (type(o) is weakref.ReferenceType and o() is None) or type(o).__name__ in _HELD
    ]
    chains = {
        id(t): ["dead weakref" if type(t) is weakref.ReferenceType else type(t).__qualname__]
        for t in targets
    }
    head = {id(t): id(t) for t in targets}  # target -> the object its chain reached
    for _level in range(depth):
        wanted = set(head.values())
        if not wanted:
            break
        holder: dict[int, object] = {}
        for o in objects:
            for r in gc.get_referents(o):
                if id(r) in wanted and id(r) not in holder:
                    holder[id(r)] = o
        for target, at in list(head.items()):
            o = holder.get(at)
            if o is None:
                del head[target]  # held by no tracked object (a frame, C code) or by none
                continue
            chains[target].append(_what(o))
            head[target] = id(o)
    counts: dict[str, int] = {}
    for chain in chains.values():
        key = " <- ".join(chain)
        counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts, key=lambda k: (-counts[k], k))[:top]
    return {k: counts[k] for k in ranked}


def _what(obj: object) -> str:
    """A short name for an object in an owner chain."""
    import types as pytypes

    if isinstance(obj, pytypes.FrameType):
        return f"frame {obj.f_code.co_qualname}"
    if isinstance(obj, pytypes.FunctionType | pytypes.MethodType):
        return f"{type(obj).__name__} {obj.__qualname__}"
    if isinstance(obj, pytypes.CoroutineType):
        return f"coroutine {obj.__qualname__}"
    return type(obj).__qualname__


def _owners(engine: subprocess.Popen[bytes], path: Path) -> dict[str, int]:
    _request(engine, "owners", path)
    return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}


def _types(engine: subprocess.Popen[bytes], path: Path) -> dict[str, dict[str, int]]:
    _request(engine, "types", path)
    got = json.loads(path.read_text())
    return {part: {str(k): int(v) for k, v in got[part].items()} for part in ("types", "detail")}


def _type_growth(before: dict[str, int], after: dict[str, int], top: int = 12) -> dict[str, int]:
    """The types whose live object count grew most between two counts."""
    grown = {k: after.get(k, 0) - before.get(k, 0) for k in after.keys() | before.keys()}
    ranked = sorted((k for k, v in grown.items() if v > 0), key=lambda k: (-grown[k], k))
    return {k: grown[k] for k in ranked[:top]}


def _heap_figures(heap: list[tuple[float, ...]], warmup_s: float) -> dict[str, Any]:
    """Slopes per market hour of ``(market s, malloc in use KB, malloc free KB, Python
    blocks, SQLite KB)`` samples after warm-up, and their values at the end of warm-up
    and at the end."""
    market, used, free, blocks, sqlite = np.array(heap, dtype=np.float64).T
    after = market >= warmup_s
    warm = int(np.argmax(after))
    hours = market / 3600.0
    out: dict[str, Any] = {}
    for name, y, scale in (
        ("malloc_in_use_mb", used, 1 / 1024),
        ("malloc_free_mb", free, 1 / 1024),
        ("python_blocks", blocks, 1.0),
        ("sqlite_mb", sqlite, 1 / 1024),
    ):
        per_hour = _slope(hours, y, after)
        out[name] = {
            "warmup": _finite(y[warm] * scale),
            "end": _finite(y[-1] * scale),
            "per_market_hour": None if per_hour is None else round(per_hour * scale, 3),
        }
    return out


def _finite(value: float) -> float | None:
    """Rounded for the JSON, or None for NaN (not measured)."""
    return round(float(value), 2) if np.isfinite(value) else None


def _request(engine: subprocess.Popen[bytes], kind: str, path: Path) -> None:
    assert engine.stdin is not None
    done = Path(str(path) + ".done")  # the engine writes it when the request is served
    done.unlink(missing_ok=True)  # from an earlier request on the same path
    engine.stdin.write(f"{kind} {path}\n".encode())
    engine.stdin.flush()
    if not _wait(engine, done.exists, 600):
        raise SystemExit(f"error: no answer to {kind} {path} within 600 s")


def _snapshot(engine: subprocess.Popen[bytes], path: Path) -> Path:
    _request(engine, "snap", path)
    return path


def _trim(engine: subprocess.Popen[bytes], path: Path) -> dict[str, float]:
    """RSS (MB) just before and after the engine's ``malloc_trim(0)``."""
    before = _memory_kb(engine.pid)[0]
    _request(engine, "trim", path)
    after = _memory_kb(engine.pid)[0]
    return {
        "before_mb": round(before / 1024, 1),
        "after_mb": round(after / 1024, 1),
        "released_mb": round((before - after) / 1024, 1),
    }


def _memray_leaks(path: Path, top: int = 15, frames: int = 10) -> list[dict[str, Any]]:
    """The allocations memray saw from warm-up to the end that were not freed, by
    call stack (native and Python frames together), the largest first."""
    from memray import FileReader

    reader = FileReader(str(path))
    try:
        records = sorted(
            reader.get_leaked_allocation_records(merge_threads=True), key=lambda r: -r.size
        )
        out = []
        for record in records[:top]:
            try:
                stack = record.hybrid_stack_trace(max_stacks=frames)
            except NotImplementedError:  # no native frames recorded
                stack = record.stack_trace(max_stacks=frames)
            out.append(
                {
                    "kb": round(record.size / 1024, 1),
                    "allocations": record.n_allocations,
                    "allocator": str(record.allocator).rpartition(".")[2],
                    "stack": [f"{fn} {_short(str(file))}:{line}" for fn, file, line in stack],
                }
            )
        return out
    finally:
        reader.close()


def _growth(before: Path, after: Path, top: int = 15) -> list[dict[str, Any]]:
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
    ]
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(ignore)
    stats = new.compare_to(old, "traceback" if new.traceback_limit > 1 else "lineno")
    stats = sorted((st for st in stats if st.size_diff > 0), key=lambda st: -st.size_diff)
    out = []
    for stat in stats[:top]:
        # A traceback runs from the oldest frame to the allocating one.
        frames = [f"{_short(fr.filename)}:{fr.lineno}" for fr in stat.traceback]
        out.append(
            {
                "site": frames[-1],
                "callers": frames[-2::-1],
                "kb_grown": round(stat.size_diff / 1024, 1),
                "blocks_grown": stat.count_diff,
                "kb_now": round(stat.size / 1024, 1),
            }
        )
    return out


def _short(filename: str) -> str:
    for base in (str(ROOT) + os.sep, sys.prefix + os.sep):
        if filename.startswith(base):
            return filename[len(base) :]
    return filename


# -- TOML (the config is written for a separate process) ------------------------------


def _toml(doc: Mapping[str, Any], prefix: str = "") -> str:
    """Dump a config document: scalars, lists and nested tables (what config.toml uses)."""
    scalars = {k: v for k, v in doc.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in doc.items() if isinstance(v, Mapping)}
    out = f"[{prefix}]\n" if prefix and scalars else ""
    out += "".join(f"{k} = {_toml_value(v)}\n" for k, v in scalars.items())
    for name, table in tables.items():
        out += "\n" + _toml(table, f"{prefix}.{name}" if prefix else name)
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)  # a TOML basic string is a JSON string

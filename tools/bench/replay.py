"""Replay throughput: events/s through the whole actor pipeline, next to references.

``python -m tools.bench replay [--data PATH] [--repeat N]`` prints JSON with the
median (and min/max) over repeats, in one process, of:

- ``pipeline``: the full replay from the gzip capture, end to end (symbol scan,
  parse, set-up, the driver through the cores and the simulated venue, SQLite
  journal) as ``python -m engine`` runs it with ``data.tick_store = "off"``;
- ``pipeline_from_store``: the same with the capture already in the tick store
  (issue 12's figure; the engine's logger is a quiet one that drops every line);
- ``pipeline_from_store_logged``: the same, logging as ``python -m engine`` does (JSON
  lines at ``info`` to a file: one per position transition, order and fill);
- ``driver``: that run's events over the driver's own run time (set-up and loading
  excluded: what the cores cost);
- ``parse_only``: reading and decoding the same capture with no actors, one
  message object per event (``read_capture``, the general reader);
- ``json_baseline``: the same lines decoded with the standard ``json`` module into
  dicts (the plain-Python reference the msgspec decoder is measured against);
- ``tape_parse``: the capture parsed into a whole-run tape (the columns the replay
  reads), no store: one capture without the book is read by the compiled reader
  (``engine.feeds._fastcap``);
- ``tape_parse_general``: the same through the general reader (one message object
  per line, ``merge_captures``), what ``tape_parse`` measured before the compiled
  reader, in the same run;
- ``scan_and_tape``: the symbol scan and the tape parse together, as a replay with an
  empty ``data.symbols`` and no tick store loads its data (the scan parses the file
  and keeps it for the read that follows; the other tape figures drop what the scan
  kept, so they time the parse itself);
- ``tape_parse_book``: the same with the order book rebuilt from the depth diffs
  (what a replay of a strategy that reads the book parses; ``book_cost`` is the
  ratio of the two);
- ``store_import``: the same, written to an empty tick store (parse + write);
- ``store_load``: the tape loaded from the tick store (source digest, ``meta.json``,
  columns mapped), the work a later replay does instead of parsing;
- ``store_load_read``: the same, plus one pass over every column (each mapped page
  read once: what a replay that touches all the data costs on top of the load);
- ``scan_symbols``: finding the symbols of the capture (a byte scan of the
  decompressed file, which a replay with an empty ``data.symbols`` does before
  loading; per event of the capture, to compare with the loads).

``memory`` (one traced run each, ``tracemalloc``): the tape's column bytes, the peak
traced while parsing into a tape, and the peak of the reader alone (iterating the
events, keeping none): the tape's own overhead is the difference less the columns.

``--tape-only`` skips the pipeline/parse figures (the tape figures take seconds);
``--pipeline-only`` times only the pipeline figures.

What the pipeline figures leave out of a ``python -m engine`` run: the interpreter, the
imports and the config file; a first run's kernel load (one warm-up run comes first, in
the same process); the report's printing. The strategy is the code defaults'
(``replay_config``: EMA 12/26 on 1 s samples), not the shipped ``config.toml``'s (3/8
on 200 ms samples: about three times as many signals, fills and log lines).

Events are the capture's market events passed on (quotes, trades and depth diffs:
every row of the tape), the same count for every figure.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import attrs
import trio

from engine._logging import make_logger
from engine._replay import run_replay
from engine.feeds import CaptureStats, TickStore, load_tape, read_capture, scan_symbols
from engine.feeds import _tape as tape_module
from engine.feeds._capture import open_capture
from engine.feeds._fastcap import forget
from engine.testing import replay, replay_config

ROOT = Path(__file__).resolve().parents[2]
FULL = ROOT.parent / "shared/data/external/hftbacktest/btcusdt_20240808.gz"
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def _pipeline(
    data: Path, tmp: Path, i: int, store: str, *, logged: bool = False
) -> tuple[float, float, int]:
    """One whole replay as ``python -m engine`` runs it (``store``: ``data.tick_store``):
    its wall time end to end (set-up, loading, driver, journal) and the driver's own.
    ``logged``: with the engine's JSON logger at ``info`` on a file, not a quiet one."""
    config = replay_config(tmp / str(i), [data])
    config = attrs.evolve(config, data=attrs.evolve(config.data, tick_store=store))
    if not logged:
        t0 = time.perf_counter()
        report = trio.run(replay, config)
        return time.perf_counter() - t0, report.wall_seconds, report.events
    log, file = make_logger(tmp / str(i) / "engine.jsonl", "info")
    try:
        t0 = time.perf_counter()
        report = trio.run(functools.partial(run_replay, config, log=log))
        wall = time.perf_counter() - t0
    finally:
        assert file is not None
        file.close()
    return wall, report.wall_seconds, report.events


def _parse_only(data: Path) -> tuple[float, int]:
    stats = CaptureStats()
    t0 = time.perf_counter()
    n = sum(1 for _ in read_capture(data, stats))
    return time.perf_counter() - t0, n


def _symbols(data: Path) -> list[str]:
    """The capture's symbols, without the parse the scan keeps for the next read (so
    that the figure after it times the parse)."""
    symbols = scan_symbols([data])
    forget()
    return symbols


def _tape_parse(data: Path, *, book: bool = False) -> tuple[float, int]:
    symbols = _symbols(data)
    t0 = time.perf_counter()
    tape = load_tape([data], symbols, stats=CaptureStats(), book=book)
    return time.perf_counter() - t0, len(tape)


def _tape_parse_general(data: Path) -> tuple[float, int]:
    symbols = _symbols(data)
    use = tape_module.fast_path_for
    tape_module.fast_path_for = lambda _path, _book: False
    try:
        t0 = time.perf_counter()
        tape = load_tape([data], symbols, stats=CaptureStats())
        return time.perf_counter() - t0, len(tape)
    finally:
        tape_module.fast_path_for = use


def _scan_and_tape(data: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    tape = load_tape([data], scan_symbols([data]), stats=CaptureStats())
    return time.perf_counter() - t0, len(tape)


def _store_import(data: Path, root: Path) -> tuple[float, int]:
    symbols = _symbols(data)
    t0 = time.perf_counter()
    tape = load_tape([data], symbols, stats=CaptureStats(), store=TickStore(root))
    return time.perf_counter() - t0, len(tape)


def _scan_symbols(data: Path) -> float:
    t0 = time.perf_counter()
    scan_symbols([data])
    return time.perf_counter() - t0


def _store_load(data: Path, root: Path, *, read: bool) -> tuple[float, int]:
    symbols = _symbols(data)
    store = TickStore(root)
    t0 = time.perf_counter()
    tape = load_tape([data], symbols, stats=CaptureStats(), store=store)
    if read:
        for ticks in tape.ticks.values():
            for column in attrs.astuple(ticks, recurse=False):
                column.sum()
    wall = time.perf_counter() - t0
    assert store.last_outcome == "hit", store.last_problem
    return wall, len(tape)


def _memory(data: Path) -> dict[str, int]:
    symbols = _symbols(data)
    tracemalloc.start()
    try:
        for _ in read_capture(data, CaptureStats()):
            pass
        reader_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        tape = load_tape([data], symbols, stats=CaptureStats())
        parse_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    columns = sum(
        column.nbytes
        for ticks in tape.ticks.values()
        for column in attrs.astuple(ticks, recurse=False)
    )
    return {
        "tape_column_bytes": columns,
        "tape_parse_peak_traced_bytes": parse_peak,
        "reader_only_peak_traced_bytes": reader_peak,
    }


def _json_baseline(data: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for line in open_capture(data):
        start = line.find(b"{")
        if start < 0:
            continue
        obj = json.loads(line[start:])
        data_obj = obj.get("data", obj)
        kind = data_obj.get("e")
        if kind == "bookTicker":
            float(data_obj["b"]), float(data_obj["a"])
        elif kind in ("trade", "aggTrade"):
            float(data_obj["p"]), float(data_obj["q"])
        if kind:
            n += 1
    return time.perf_counter() - t0, n


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark and return its JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench replay")
    parser.add_argument("--data", type=Path, default=FULL if FULL.exists() else SAMPLE)
    parser.add_argument("--repeat", type=int, default=5)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--tape-only", action="store_true", help="only the tape figures")
    only.add_argument("--pipeline-only", action="store_true", help="only the pipeline figures")
    args = parser.parse_args(argv)
    args.data = args.data.resolve()  # the replays run with their config under a temp dir
    pipelines = [
        "pipeline",
        "pipeline_from_store",
        "pipeline_from_store_logged",
        "driver",
        "parse_only",
        "json_baseline",
    ]
    tapes = [
        "tape_parse",
        "tape_parse_general",
        "scan_and_tape",
        "tape_parse_book",
        "store_import",
        "store_load",
        "store_load_read",
        "scan_symbols",
    ]
    names = ([] if args.tape_only else pipelines) + ([] if args.pipeline_only else tapes)
    results: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        events = 0
        kept = str(Path(tmp) / "kept")
        if not args.tape_only:
            _pipeline(args.data, Path(tmp), -1, kept)  # warm-up: kernels, imports, the store
        for i in range(args.repeat):
            if not args.tape_only:
                wall, _run, events = _pipeline(args.data, Path(tmp), i, "off")
                results["pipeline"].append(events / wall)
                wall, run_s, events = _pipeline(args.data, Path(tmp), i, kept)
                results["pipeline_from_store"].append(events / wall)
                results["driver"].append(events / run_s)
                wall, _run, events = _pipeline(args.data, Path(tmp), i, kept, logged=True)
                results["pipeline_from_store_logged"].append(events / wall)
                wall, n = _parse_only(args.data)
                results["parse_only"].append(n / wall)
                wall, n = _json_baseline(args.data)
                results["json_baseline"].append(n / wall)
            if args.pipeline_only:
                continue
            wall, events = _tape_parse(args.data)
            results["tape_parse"].append(events / wall)
            wall, events = _tape_parse_general(args.data)
            results["tape_parse_general"].append(events / wall)
            wall, events = _scan_and_tape(args.data)
            results["scan_and_tape"].append(events / wall)
            wall, events = _tape_parse(args.data, book=True)
            results["tape_parse_book"].append(events / wall)
            store = Path(tmp) / f"ticks{i}"
            wall, n = _store_import(args.data, store)
            results["store_import"].append(n / wall)
            wall, n = _store_load(args.data, store, read=False)
            results["store_load"].append(n / wall)
            wall, n = _store_load(args.data, store, read=True)
            results["store_load_read"].append(n / wall)
            results["scan_symbols"].append(n / _scan_symbols(args.data))
    out: dict[str, Any] = {
        "benchmark": "replay",
        "data": str(args.data),
        "events": events,
        "repeat": args.repeat,
        "unit": "events/s",
    }
    for name, values in results.items():
        out[name] = _stats(values)
    if not args.tape_only:
        out["pipeline_vs_parse_only"] = out["pipeline"]["median"] / out["parse_only"]["median"]
        out["parse_only_vs_json_baseline"] = (
            out["parse_only"]["median"] / out["json_baseline"]["median"]
        )
    if not args.tape_only:
        out["from_store_logged_vs_quiet"] = (
            out["pipeline_from_store_logged"]["median"] / out["pipeline_from_store"]["median"]
        )
    if args.pipeline_only:
        return out
    out["memory"] = _memory(args.data)
    out["store_load_vs_tape_parse"] = out["store_load"]["median"] / out["tape_parse"]["median"]
    out["book_cost"] = out["tape_parse"]["median"] / out["tape_parse_book"]["median"]
    out["tape_parse_vs_general"] = out["tape_parse"]["median"] / out["tape_parse_general"]["median"]
    return out


if __name__ == "__main__":
    import sys

    print(json.dumps(run(sys.argv[1:]), indent=2))

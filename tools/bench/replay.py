"""Replay throughput: events/s through the whole actor pipeline, next to references.

``python -m tools.bench replay [--data PATH] [--repeat N]`` prints JSON with the
median (and min/max) over repeats, in one process, of:

- ``pipeline``: the full replay (symbol scan, parse, steps, symbol actors, risk,
  execution, simulated venue, SQLite journal) as ``python -m engine`` runs it;
- ``parse_only``: reading and decoding the same capture with no actors (the
  feed's ceiling);
- ``json_baseline``: the same lines decoded with the standard ``json`` module into
  dicts (the plain-Python reference the msgspec decoder is measured against).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from engine.feeds import CaptureStats, read_capture
from engine.feeds._capture import open_capture
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


def _pipeline(data: Path, tmp: Path, i: int) -> tuple[float, int]:
    config = replay_config(tmp / str(i), [data])
    t0 = time.perf_counter()
    report = trio.run(replay, config)
    return time.perf_counter() - t0, report.events


def _parse_only(data: Path) -> tuple[float, int]:
    stats = CaptureStats()
    t0 = time.perf_counter()
    n = sum(1 for _ in read_capture(data, stats))
    return time.perf_counter() - t0, n


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
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        _pipeline(args.data, Path(tmp), -1)  # warm-up: numba cache load, imports
        results: dict[str, list[float]] = {"pipeline": [], "parse_only": [], "json_baseline": []}
        events = 0
        for i in range(args.repeat):
            wall, events = _pipeline(args.data, Path(tmp), i)
            results["pipeline"].append(events / wall)
            wall, n = _parse_only(args.data)
            results["parse_only"].append(n / wall)
            wall, n = _json_baseline(args.data)
            results["json_baseline"].append(n / wall)
    out: dict[str, Any] = {
        "benchmark": "replay",
        "data": str(args.data),
        "events": events,
        "repeat": args.repeat,
        "unit": "events/s",
    }
    for name, values in results.items():
        out[name] = _stats(values)
    out["pipeline_vs_parse_only"] = out["pipeline"]["median"] / out["parse_only"]["median"]
    out["parse_only_vs_json_baseline"] = (
        out["parse_only"]["median"] / out["json_baseline"]["median"]
    )
    return out


if __name__ == "__main__":
    import sys

    print(json.dumps(run(sys.argv[1:]), indent=2))

"""Cost of per-tick sequence windows: ``python -m tools.bench tick_windows``.

The bundled sample's replay columns (book included) fed to one symbol's features the way
the symbol actor feeds its :class:`~engine.actors._filter.EntryFilter`: ranges of
``--chunk`` rows, each cut at a signal every ``--signal-every`` rows (the scan stops at a
signal's row; the filter is fed up to it, then to the end of the range). Interleaved, per
pass (median over ``--passes``, ns per event):

* ``rows``: a :class:`~engine.models.FeatureBuilder` (row models): one compiled call per
  range, a row at each signal;
* ``tick_windows``: a :class:`~engine.models.TickWindows` of ``--window`` ticks (sequence
  models): the same ranges, a row pushed after each of the last N ticks of each range, the
  window copied out at each signal;
* ``every_tick`` (the naive reference, fewer passes): a row computed and pushed after every
  tick.

Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

_SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "btcusdt_20240808_180s.gz"


def _ranges(n: int, chunk: int, every: int) -> list[tuple[int, int, bool]]:
    """(start, stop, signal at stop - 1) ranges as the symbol actor feeds them."""
    out = []
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        pos = lo
        for s in range(((lo // every) + 1) * every, hi, every):
            out.append((pos, s + 1, True))
            pos = s + 1
        out.append((pos, hi, False))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m tools.bench tick_windows")
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--chunk", type=int, default=4096, help="rows per range (a batch)")
    p.add_argument("--signal-every", type=int, default=2000, help="rows between signals")
    p.add_argument("--passes", type=int, default=7)
    a = p.parse_args(argv)

    from engine.feeds import CaptureLimits, CaptureStats, load_tape
    from engine.messages import EventKind
    from engine.models import FeatureBuilder, TickWindows, default_feature_spec

    spec = default_feature_spec()
    FeatureBuilder.warm_up()
    tape = load_tape(
        [_SAMPLE], ("BTCUSDT",), limits=CaptureLimits(), stats=CaptureStats(), store=None, book=True
    )
    ticks = tape.ticks["BTCUSDT"]
    n = len(ticks)
    ranges = _ranges(n, a.chunk, a.signal_every)
    feature = int(((ticks.kind == EventKind.QUOTE) | (ticks.kind == EventKind.TRADE)).sum())

    def rows() -> None:
        b = FeatureBuilder(spec)
        out = np.empty(len(spec.names), dtype=np.float32)
        for lo, hi, sig in ranges:
            b.on_ticks(ticks, lo, hi)
            if sig:
                b.row(1.0, out)

    def tick_windows() -> None:
        tw = TickWindows(FeatureBuilder(spec), a.window)
        out = np.empty((a.window, len(spec.names)), dtype=np.float32)
        for lo, hi, sig in ranges:
            tw.on_ticks(ticks, lo, hi)
            if sig:
                tw.window_into(out, 1.0)

    def every_tick() -> None:
        tw = TickWindows(FeatureBuilder(spec), a.window)
        for i in range(n):
            tw.on_ticks(ticks, i, i + 1)

    def once(fn: Any) -> float:
        t = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t) / n

    rows(), tick_windows()  # warm (kernels loaded, caches)
    times: dict[str, list[float]] = {"rows": [], "tick_windows": [], "every_tick": []}
    for k in range(a.passes):
        times["rows"].append(once(rows))
        times["tick_windows"].append(once(tick_windows))
        if k < max(1, a.passes // 3):
            times["every_tick"].append(once(every_tick))
    med = {k: round(float(np.median(v)), 1) for k, v in times.items()}
    return {
        "sample": _SAMPLE.name,
        "events": n,
        "feature_ticks": feature,
        "ranges": len(ranges),
        "signals": sum(1 for r in ranges if r[2]),
        "window": a.window,
        "passes": {k: len(v) for k, v in times.items()},
        "ns_per_event_median": med,
        "tick_windows_over_rows": round(med["tick_windows"] / med["rows"], 2),
        "every_tick_over_tick_windows": round(med["every_tick"] / med["tick_windows"], 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))

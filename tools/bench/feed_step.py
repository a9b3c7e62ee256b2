"""The live feed's share of a read, warm: decode to step, and the step's batches.

``python -m tools.bench feed_step [--reads N] [--repeat R] [--against DIR]`` prints
JSON. A :class:`~engine.feeds._live.LiveFeed` (one symbol, ``feeds.inline`` with a
step that does nothing, no book columns) is given the bundled BTCUSDT capture's
messages after its first depth snapshot (loaded into the feed's book), one message a
read, as its read loop gives them (``_on_messages``, then the step, then what the
loop does after the step); no socket. Per read, with ``time.perf_counter_ns``:

- ``read_us``: ``_on_messages`` (decode, de-duplication, the depth diff's update-id
  checks and, unless deferred, its levels; the column append): the tick-to-order
  bench's ``read_to_step`` stage without the socket;
- ``take_us``: the step up to the inline call (``_send_step``: columns, batches):
  its ``take_batches`` stage;
- ``after_us``: what the read loop does after the step (the deferred depth levels).

Medians per message kind (``quote``, ``trade``, ``depth``) over the reads, then the
median over ``--repeat`` passes (each a fresh feed). ``--against DIR`` runs the same
in subprocesses on the tree at ``DIR`` (``git archive HEAD``'s copy) and on this one,
alternately (``--repeat`` pairs), and reports both: the machine is shared, so A/B
must be interleaved.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
SYMBOL = "BTCUSDT"


def _one_pass(reads: int) -> dict[str, dict[str, float]]:
    import trio

    from engine._config import FeedsSection
    from engine.book import decode_snapshot
    from engine.feeds._live import LiveFeed, market_data_client
    from engine.messages import MarketBatch, MarketStep
    from engine.testing import quiet_logger
    from engine.venues.sim._recorded import load_recording

    recording = load_recording([SAMPLE])
    snap = recording.snapshots[0]
    # From the diff that bridges the snapshot on (it arrived before the snapshot did).
    start = next(
        i
        for i, m in enumerate(recording.messages)
        if "@depth" in m.stream and m.last_id >= snap.last_update_id
    )
    messages = recording.messages[start : start + reads]
    defers = "defer_books" in inspect.signature(LiveFeed._on_messages).parameters
    out: dict[str, list[tuple[int, int, int]]] = {"quote": [], "trade": [], "depth": []}
    synced: list[bool] = []

    async def main() -> None:
        import httpx

        async def inline(batches: dict[str, MarketBatch], market: MarketStep) -> None:
            return None

        settings = FeedsSection(streams=("bookTicker", "trade", "depth@0ms"))
        market_tx, _rx = trio.open_memory_channel[MarketBatch](math.inf)
        step_tx, _srx = trio.open_memory_channel[MarketStep](math.inf)
        async with httpx.AsyncClient() as http:
            feed = LiveFeed(
                settings=settings,
                symbols=[SYMBOL],
                step_ns=10**9,
                symbol_channels={SYMBOL: market_tx},
                execution_channel=step_tx,
                rest=market_data_client(http, settings.rest_url),
                log=quiet_logger(),
                stop=trio.Event(),
                inline=inline,
            )
            feed._resync_requests, _resync_rx = trio.open_memory_channel[str](math.inf)
            feed.state[SYMBOL].book.on_snapshot(decode_snapshot(snap.body))
            kw = {"defer_books": True} if defers else {}
            clock = time.perf_counter_ns
            for m in messages:
                kind = (
                    "depth" if "@depth" in m.stream else "trade" if "trade" in m.stream else "quote"
                )
                ts = time.time_ns()
                t0 = clock()
                feed._on_messages([m.envelope], ts, wake=False, **kw)
                t1 = clock()
                await feed._send_step(final=False)
                t2 = clock()
                if defers and feed._deferred_books:
                    feed._apply_deferred_books()
                t3 = clock()
                out[kind].append((t1 - t0, t2 - t1, t3 - t2))
            synced.append(feed.state[SYMBOL].book.book.synced)

    trio.run(main)
    assert synced == [True], "the capture's diffs did not bridge its snapshot"
    return {
        kind: {
            "reads": len(rows),
            "read_us": statistics.median(r[0] for r in rows) / 1e3,
            "take_us": statistics.median(r[1] for r in rows) / 1e3,
            "after_us": statistics.median(r[2] for r in rows) / 1e3,
        }
        for kind, rows in out.items()
        if rows
    }


def _median_of(passes: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        kind: {
            key: round(statistics.median(p[kind][key] for p in passes), 2)
            for key in passes[0][kind]
        }
        | {
            "spread": {
                key: [
                    round(min(p[kind][key] for p in passes), 2),
                    round(max(p[kind][key] for p in passes), 2),
                ]
                for key in ("read_us", "take_us", "after_us")
            }
        }
        for kind in passes[0]
    }


def _subprocess(tree: Path, reads: int) -> dict[str, dict[str, float]]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    # This file by path: ``engine`` comes from ``tree`` (the working directory).
    code = (
        "import importlib.util, json; "
        f"spec = importlib.util.spec_from_file_location('feed_step', {str(Path(__file__))!r}); "
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); "
        f"import engine; assert engine.__file__.startswith({str(tree)!r}), engine.__file__; "
        f"print(json.dumps(mod._one_pass({reads})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench feed_step")
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--against", type=Path, default=None, help="the reference tree (A/B)")
    args = parser.parse_args(argv)
    if args.against is None:
        return {"this": _median_of([_one_pass(args.reads) for _ in range(args.repeat)])}
    base: list[dict[str, dict[str, float]]] = []
    this: list[dict[str, dict[str, float]]] = []
    for _ in range(args.repeat):
        base.append(_subprocess(args.against, args.reads))
        this.append(_subprocess(ROOT, args.reads))
    return {
        "reference": str(args.against),
        "pairs": args.repeat,
        "reference_tree": _median_of(base),
        "this_tree": _median_of(this),
    }

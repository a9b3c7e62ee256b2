"""The inline path (``feeds.inline``) journals what the actor tasks journal.

A fixed feed cuts the bundled BTCUSDT capture into the same steps every run and hands
them to the paper pipeline (:func:`engine._supervisor._run_pipeline`, simulated
venue) either over the channels, where the symbol, risk and execution actor tasks
run them, or to :class:`~engine.actors.InlineStep`, as the live feed's read loop does.
The two journals must hold the same records, in the same order, at the same steps;
the run must trade (entries, exits, fills) for that to mean anything. And an inline
step never waits (no checkpoint, so no task switch) unless a model, a portfolio
answer, the journal's backpressure or the end's drain makes it.
"""

from __future__ import annotations

import contextlib
import gzip
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from engine import config_from_dict
from engine._errors import ActorFailedError
from engine._supervisor import _run_pipeline
from engine.actors import InlineStep
from engine.feeds import CaptureStats, parse_line
from engine.feeds._columns import Columns, append_message
from engine.feeds._live import FeedStats
from engine.messages import MarketBatch, MarketStep, Ticks
from engine.testing import quiet_logger

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
SYMBOL = "BTCUSDT"
# Trades often (the tick-to-order benchmark's strategy), so the run has orders and fills.
STRATEGY = {
    "sample_ms": 200,
    "fast": 3,
    "slow": 8,
    "rsi_period": 5,
    "rsi_long_max": 90.0,
    "rsi_short_min": 10.0,
    "stop_loss_bps": 3.0,
    "take_profit_bps": 5.0,
    "max_hold_ms": 2000,
}
EVENTS_PER_STEP = 37  # uneven, so steps cut the stream at arbitrary places


def _steps() -> list[tuple[int, Ticks]]:
    """The capture's BTCUSDT events as fixed steps: ``(ts_start, ticks)``."""
    stats = CaptureStats()
    steps: list[tuple[int, Ticks]] = []
    cols = Columns()
    n = last = 0
    with gzip.open(SAMPLE, "rb") as fh:
        for line in fh:
            parsed = parse_line(line.rstrip(b"\n"), stats)
            if parsed is None or parsed[0] is None or parsed[1].symbol != SYMBOL:
                continue
            ts, msg = parsed
            n += 1
            last = ts
            append_message(cols, ts, n, msg)
            if n % EVENTS_PER_STEP == 0:
                ticks = cols.take()
                assert ticks is not None
                steps.append((last, ticks))
    ticks = cols.take()
    if ticks is not None:
        steps.append((last, ticks))
    return steps


class _FixedFeed:
    """Sends the same steps every run: over the channels, or to ``inline``."""

    def __init__(
        self,
        steps: list[tuple[int, Ticks]],
        market_tx: dict[str, trio.MemorySendChannel[MarketBatch]],
        step_tx: trio.MemorySendChannel[MarketStep],
        inline: InlineStep | None,
        skip: int | None = None,
        strict: bool = False,
    ) -> None:
        self._skip = skip
        self._strict = strict
        self._steps = steps
        self._market_tx = market_tx
        self._step_tx = step_tx
        self._inline = inline
        self.stats = FeedStats()
        self.first_ts = steps[0][0]
        self.last_ts = steps[-1][0]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with contextlib.ExitStack() as stack:
            for channel in (self._step_tx, *self._market_tx.values()):
                stack.enter_context(channel)
            task_status.started()
            plan: list[tuple[int, Ticks | None]] = [*self._steps, (self.last_ts + 1, None)]
            for index, (ts, ticks) in enumerate(plan):
                step = index + (1 if self._skip is not None and index >= self._skip else 0)
                final = ticks is None
                batches = {
                    SYMBOL: MarketBatch(
                        step=step, ts_start=ts, symbol=SYMBOL, ticks=ticks, final=final
                    )
                }
                market = MarketStep(
                    step=step,
                    ts_start=ts,
                    ticks={} if ticks is None else {SYMBOL: ticks},
                    ops=(),
                    final=final,
                )
                if self._inline is not None and self._strict and not final:
                    # In an already-cancelled scope: any checkpoint raises Cancelled.
                    with trio.CancelScope() as scope:
                        scope.cancel()
                        await self._inline(batches, market)
                    assert not scope.cancelled_caught, f"step {step} checkpointed"
                    await trio.testing.wait_all_tasks_blocked()  # the journal catches up
                elif self._inline is not None:
                    await self._inline(batches, market)
                else:
                    await self._market_tx[SYMBOL].send(batches[SYMBOL])
                    await self._step_tx.send(market)
                self.stats.steps += 1

    def summary(self) -> dict[str, Any]:
        return {}


async def _journal(
    tmp_path: Path,
    steps: list[tuple[int, Ticks]],
    inline: bool,
    skip: int | None = None,
    strict: bool = False,
    strict_config: bool = False,
) -> list[tuple]:
    doc = {
        "engine": {"mode": "paper"},
        "data": {"symbols": [SYMBOL]},
        "journal": {"dir": str(tmp_path / "runs")},
        "feeds": {"inline": inline},
        "strategy": STRATEGY,
        "hardware": {"enabled": False},
        # The one wait a strict run would meet: a portfolio answer due at its step.
        "portfolio": {"enabled": not (strict or strict_config)},
    }
    config = config_from_dict(doc, source="<test>", base_dir=tmp_path)
    path = tmp_path / f"inline_{inline}_{strict}.sqlite"
    seen: list[InlineStep | None] = []

    def make_feed(market_tx: Any, step_tx: Any, runner: InlineStep | None) -> _FixedFeed:
        seen.append(runner)
        return _FixedFeed(steps, market_tx, step_tx, runner, skip, strict)

    await _run_pipeline(
        config,
        mode="paper",
        journal_path=path,
        symbols=[SYMBOL],
        data=[str(SAMPLE)],
        make_feed=make_feed,
        log=quiet_logger(),
        setup_started=time.perf_counter(),
        control=None,
        control_state=None,
    )
    assert (seen[0] is not None) == inline
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(
            "SELECT step, ts_event, ts_init, kind, symbol, payload FROM journal ORDER BY rowid"
        ).fetchall()


async def test_inline_journals_the_same_records_in_the_same_order(tmp_path):
    steps = _steps()
    assert len(steps) > 500
    actors = await _journal(tmp_path, steps, inline=False)
    inline = await _journal(tmp_path, steps, inline=True)
    kinds = [row[3] for row in actors]
    # Something to compare: entries and exits, filled by the simulated venue.
    assert kinds.count("OrderSubmitted") >= 4, kinds
    assert "OrderFilled" in kinds
    assert len(inline) == len(actors)
    for a, b in zip(actors, inline, strict=True):
        assert a == b
    # Some steps after the market's last one: the closing round journals too.
    assert max(r[0] for r in inline) <= len(steps) + 1


async def test_a_step_out_of_order_fails_closed(tmp_path):
    steps = _steps()[:5]
    with pytest.raises(ActorFailedError, match="inline: market step 3 != 2"):
        await _journal(tmp_path, steps, inline=True, skip=2)


async def test_an_inline_step_never_waits(tmp_path):
    """No checkpoint (so no task switch) from a step's ticks to its orders' submit and
    on to the journal's channel: each step runs in an already-cancelled scope."""
    steps = _steps()
    strict = await _journal(tmp_path, steps, inline=True, strict=True)
    assert [r[3] for r in strict].count("OrderSubmitted") >= 4
    # The actor tasks journal the same (portfolio off there too).
    assert strict == await _journal(tmp_path / "free", steps, inline=False, strict_config=True)

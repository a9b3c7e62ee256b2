"""Microbenchmark: the symbol and risk steps of a step that makes an entry, warm.

``python -m tools.bench entry_step [--events-per-step N] [--passes N]``

Cuts the bundled BTCUSDT capture into steps of N events and drives one
:class:`~engine.actors.SymbolActor` and the :class:`~engine.actors.RiskActor` through
them in the caller's thread (their ``step`` coroutines never wait without a model),
with the tick-to-order bench's strategy (the scalper, trading as often as it can), a
JSON logger writing to /dev/null behind the inline path's deferral (lines held during
the step, written after it, untimed). Execution is not run: each entry is answered
at the next step with a denial (as risk's own denials are), which returns the symbol
to IDLE so that it enters again at its next signal. Times each step's
``SymbolActor.step`` and ``RiskActor.step`` with ``perf_counter_ns``; prints JSON
medians (us) of the entry steps and of the other steps. Run it from the tree to
measure (``PYTHONPATH``) and interleave runs of two trees for an A/B.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
STRATEGY = {
    "kind": "scalper",
    "params": {
        "min_confirmations": 1,
        "min_strength": 0.0,
        "ofi_period": 5,
        "ofi_threshold": 0.2,
        "bar_ms": 100,
    },
}
EXITS = {"stop_bps": 1.0, "target_bps": 1.0, "time_limit_ms": 150}


def _drive(coro: Any) -> Any:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the step waited")


def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.entry_step")
    parser.add_argument("--events-per-step", type=int, default=3)
    parser.add_argument("--passes", type=int, default=1)
    args = parser.parse_args(argv)

    from engine import config_from_dict
    from engine._logging import make_logger
    from engine.actors import RiskActor, SymbolActor
    from engine.actors._inline import deferral_of, deferring
    from engine.feeds import CaptureStats, parse_line
    from engine.feeds._columns import Columns, append_message
    from engine.ledger import PositionLedger
    from engine.messages import (
        Mark,
        MarketBatch,
        OrderDenied,
        Purpose,
        ReportBatch,
        SubmitOrder,
    )
    from engine.strategy import resolve_strategy

    symbol = "BTCUSDT"
    doc = {
        "engine": {"mode": "paper"},
        "data": {"symbols": [symbol]},
        "strategy": STRATEGY,
        "exits": EXITS,
        "risk": {"max_orders_per_second": 50},
        "hardware": {"enabled": False},
    }
    config = config_from_dict(doc, source="<bench>", base_dir=ROOT)
    base, sink = make_logger(os.devnull)
    log = deferring(base)
    logs = deferral_of(log)
    assert logs is not None

    stats = CaptureStats()
    steps = []
    cols = Columns()
    n = 0
    with gzip.open(SAMPLE, "rb") as fh:
        for line in fh:
            parsed = parse_line(line.rstrip(b"\n"), stats)
            if parsed is None or parsed[0] is None or parsed[1].symbol != symbol:
                continue
            ts, msg = parsed
            n += 1
            append_message(cols, ts, n, msg)
            if n % args.events_per_step == 0:
                ticks = cols.take()
                assert ticks is not None
                steps.append((ts, ticks))

    entry_sym: list[int] = []
    entry_risk: list[int] = []
    other_sym: list[int] = []
    other_risk: list[int] = []
    spec = resolve_strategy(config)
    for _ in range(args.passes):
        ledger = PositionLedger()
        send, _receive = trio.open_memory_channel[Any](0)
        actor = SymbolActor(
            symbol=symbol,
            config=config.strategy,
            market=_receive,
            reports=_receive,
            intents=send,
            log=log.bind(actor="symbol"),
            ledger=ledger,
            sizing=config.sizing,
            capital=config.risk.capital,
            max_notional=config.risk.max_notional_per_symbol,
            strategy=spec.new(config.strategy, config.sizing),
            exits=config.exits,
        )
        risk = RiskActor(
            config=config.risk,
            symbols=[symbol],
            intents={symbol: _receive},
            reports=_receive,
            orders=send,
            log=log.bind(actor="risk"),
            ledger=ledger,
        )
        report: ReportBatch | None = None
        clock = time.perf_counter_ns
        for k, (ts, ticks) in enumerate(steps):
            batch = MarketBatch(step=k, ts_start=ts, symbol=symbol, ticks=ticks)
            logs.holding = True
            t0 = clock()
            intents = _drive(actor.step(k, ts, batch, report))
            t1 = clock()
            if report is not None:
                risk.on_report(report)  # the inline path: after the step before's write
            t2 = clock()
            orders = _drive(risk.step(k, None, [intents]))
            t3 = clock()
            logs.release()
            entry = any(
                isinstance(c, SubmitOrder) and c.purpose is Purpose.ENTRY for c in orders.commands
            )
            (entry_sym if entry else other_sym).append(t1 - t0)
            (entry_risk if entry else other_risk).append(t3 - t2)
            denials = tuple(
                OrderDenied(
                    client_order_id=c.client_order_id,
                    symbol=c.symbol,
                    purpose=c.purpose,
                    reason="bench",
                    ts_event=ts,
                    ts_init=ts,
                    seq=c.seq,
                    correlation_id=c.correlation_id,
                )
                for c in orders.commands
                if isinstance(c, SubmitOrder)
            )
            bid, ask = ticks.bid[-1], ticks.ask[-1]
            marks = (Mark(symbol=symbol, ts=ts, bid=bid, ask=ask),) if bid == bid else ()
            report = ReportBatch(
                step=k,
                events=(*orders.denials, *denials),
                marks=marks,
                trading_state=orders.trading_state,
            )
    if sink is not None:
        sink.close()

    def us(values: list[int]) -> dict[str, float | int]:
        return {
            "n": len(values),
            "p50": round(statistics.median(values) / 1e3, 2),
            "p90": round(sorted(values)[int(0.9 * len(values))] / 1e3, 2),
        }

    return {
        "tree": str(Path(sys.modules["engine"].__file__ or "").parents[1]),
        "events_per_step": args.events_per_step,
        "entry_symbol_us": us(entry_sym),
        "entry_risk_us": us(entry_risk),
        "other_symbol_us": us(other_sym),
        "other_risk_us": us(other_risk),
    }


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:])))

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
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .cold_path import _drive, _report, _Rig


def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench entry_step")
    parser.add_argument("--events-per-step", type=int, default=3)
    parser.add_argument("--passes", type=int, default=1)
    args = parser.parse_args(argv)

    from engine.messages import MarketBatch, Purpose, SubmitOrder

    rig = _Rig(args.events_per_step)
    entry_sym: list[int] = []
    entry_risk: list[int] = []
    other_sym: list[int] = []
    other_risk: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(args.passes):
        actor, risk, _ledger = rig.actors()
        report = None
        for k, (ts, ticks) in enumerate(rig.steps):
            batch = MarketBatch(step=k, ts_start=ts, symbol=actor.symbol, ticks=ticks)
            rig.logs.holding = True
            t0 = clock()
            intents = _drive(actor.step(k, ts, batch, report))
            t1 = clock()
            if report is not None:
                risk.on_report(report)  # the inline path: after the step before's write
            t2 = clock()
            orders = _drive(risk.step(k, None, [intents]))
            t3 = clock()
            rig.logs.release()
            entry = any(
                isinstance(c, SubmitOrder) and c.purpose is Purpose.ENTRY for c in orders.commands
            )
            (entry_sym if entry else other_sym).append(t1 - t0)
            (entry_risk if entry else other_risk).append(t3 - t2)
            report = _report(k, ts, ticks, orders)
    if rig.sink is not None:
        rig.sink.close()

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

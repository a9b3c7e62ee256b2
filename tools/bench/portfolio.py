"""Portfolio solve times and the risk actor's pre-trade check cost.

``python -m tools.bench portfolio [--repeat N] [--sizes 10,50,200]`` prints JSON:
for each problem and number of symbols, the median milliseconds of a fresh solve
(build the cvxpy problem, canonicalise, solve) and of a re-solve of the
parametrised problem with new data (what the portfolio actor does on its timer),
on synthetic correlated returns (500 periods). ``risk_check_us`` is the median
cost of one ``RiskActor.check`` call on an entry order that passes every check,
with 10 symbols holding positions (the slowest path: correlation against each):
``per_order`` with the step's correlation matrix already computed, and
``first_order_of_step`` including computing it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np
import trio

from engine._config import RiskSection
from engine.actors import RiskActor
from engine.messages import Mark, Purpose, Side, SubmitOrder
from engine.portfolio import Constraints, Objective, Optimizer
from engine.testing import quiet_logger

PERIODS = 500


def _returns(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    factor = rng.normal(0, 0.01, (PERIODS, 1))
    loadings = rng.uniform(0.2, 1.0, (1, n))
    return factor @ loadings + rng.normal(0, 0.01, (PERIODS, n))


def _solve_times(n: int, objective: Objective, repeat: int) -> dict[str, float]:
    constraints = Constraints(max_weight=max(0.05, 2.0 / n), leverage=1.0, long_only=True)
    fresh, again = [], []
    for i in range(repeat):
        data = _returns(n, i)
        t0 = time.perf_counter()
        opt = Optimizer(n, objective, constraints, periods=PERIODS)
        opt.solve(data)
        fresh.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        opt.solve(_returns(n, i + 1000))
        again.append((time.perf_counter() - t0) * 1e3)
    return {"fresh_ms": statistics.median(fresh), "resolve_ms": statistics.median(again)}


def _risk_check_us(repeat: int) -> dict[str, float]:
    symbols = [f"S{i}" for i in range(10)]
    tx, rx = trio.open_memory_channel(0)
    risk = RiskActor(
        config=RiskSection(max_open_positions=20, max_correlation=1.0),
        symbols=symbols,
        intents=dict.fromkeys(symbols, rx),
        reports=rx,
        orders=tx,
        log=quiet_logger(),
    )
    rng = np.random.default_rng(0)
    for s in symbols:
        risk.marks[s] = Mark(symbol=s, ts=0, bid=99.95, ask=100.05)
        risk._returns[s].extend(rng.normal(0, 1e-3, 240))
        if s != "S0":
            risk.ledger.adopt(s, 1.0, 100.0)
    order = SubmitOrder(
        client_order_id="x",
        symbol="S0",
        side=Side.BUY,
        qty=1.0,
        ref_price=100.0,
        purpose=Purpose.ENTRY,
        reduce_only=False,
        ts_event=0,
        ts_init=0,
        seq=1,
        correlation_id="c",
    )
    assert risk.check(order) is None
    warm, cold = [], []
    for _ in range(repeat):
        n = 200
        t0 = time.perf_counter()
        for _ in range(n):
            risk.check(order)
        warm.append((time.perf_counter() - t0) / n * 1e6)
        t0 = time.perf_counter()
        for _ in range(n):
            risk._corr = None  # as for the first order after a step's report
            risk.check(order)
        cold.append((time.perf_counter() - t0) / n * 1e6)
    return {"per_order": statistics.median(warm), "first_order_of_step": statistics.median(cold)}


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark and return its JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench portfolio")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="10,50,200")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    out: dict[str, Any] = {"benchmark": "portfolio", "periods": PERIODS, "repeat": args.repeat}
    for objective in Objective:
        out[objective.value] = {str(n): _solve_times(n, objective, args.repeat) for n in sizes}
    out["risk_check_us"] = _risk_check_us(args.repeat)
    return out


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:]), indent=2))

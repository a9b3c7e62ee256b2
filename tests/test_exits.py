"""Exit policies (``[exits]``, engine.strategy._exits): the kernel on synthetic quotes,
the config checks, and a replay of a real capture with ATR, trailing and ladder exits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import numpy as np
import orjson
import pytest
import trio

from engine import ConfigError, load_config
from engine._config import ExitsSection
from engine.core._symbol import round_down
from engine.feeds import CaptureStats
from engine.feeds._tape import load_tape
from engine.strategy import resolve_strategy
from engine.strategy._exits import (
    ATR_STOP,
    PARTIAL,
    STOP_LOSS,
    TAKE_PROFIT,
    TIME_LIMIT,
    TRAILING_STOP,
    ExitPolicy,
    scan_exits,
)
from engine.testing import replay, replay_config

ROOT = Path(__file__).resolve().parents[1]
HISTORY = ROOT.parent / "shared" / "data" / "external" / "hftbacktest_history"
MS = 1_000_000


def quotes(mids: list[float], spread: float = 0.0, step_ms: int = 1):
    """Quote columns with these mids (a trade row between each pair, to be skipped)."""
    n = 2 * len(mids)
    ts = np.arange(n, dtype=np.int64) * (step_ms * MS // 2)
    kind = np.tile(np.array([1, 2], dtype=np.int8), len(mids))
    mid = np.repeat(np.asarray(mids, dtype=np.float64), 2)
    return ts, kind, mid - spread / 2, mid + spread / 2


def run(cfg: ExitsSection, mids, side=1, atr=float("nan"), spread=0.0, start=2):
    """Enter at the first mid's closing price at ts 0 and scan from the next quote."""
    ts, kind, bid, ask = quotes(mids, spread)
    policy = ExitPolicy(cfg)
    policy.on_entry(side, float(bid[0] if side > 0 else ask[0]), 0, atr)
    index, code = scan_exits(ts, kind, bid, ask, start, ts.size, policy.state, policy._params)
    return index, code, policy


@pytest.mark.parametrize(
    ("cfg", "mids", "side", "atr", "expected"),
    [
        # long, stop 10 bps of 100 = 99.9: the first quote at or below it.
        (ExitsSection(stop_bps=10), [100, 99.95, 99.91, 99.9, 99.0], 1, np.nan, (3, STOP_LOSS)),
        # short: the ask rising to the level.
        (ExitsSection(stop_bps=10), [100, 100.05, 100.1, 100.2], -1, np.nan, (2, STOP_LOSS)),
        (ExitsSection(target_bps=20), [100, 100.1, 100.19, 100.2], 1, np.nan, (3, TAKE_PROFIT)),
        (ExitsSection(target_bps=20), [100, 99.85, 99.8], -1, np.nan, (2, TAKE_PROFIT)),
        # ATR 0.5 x 2 = 1.0 below the entry.
        (ExitsSection(atr_stop=2), [100, 99.5, 99.01, 99.0], 1, 0.5, (3, ATR_STOP)),
        # Trailing 10 bps of the entry (0.1) from the best bid so far: 100.3 -> 100.2.
        (ExitsSection(trail_bps=10), [100, 100.1, 100.3, 100.25, 100.2], 1, np.nan,
         (4, TRAILING_STOP)),
        # Trailing by ATR (0.2 x 1) for a short: best ask 99.5, stop 99.7.
        (ExitsSection(trail_atr=1), [100, 99.8, 99.5, 99.65, 99.7], -1, 0.2,
         (4, TRAILING_STOP)),
        # A time limit of 3 ms: the quote at 3 ms.
        (ExitsSection(time_limit_ms=3), [100, 100, 100, 100, 100], 1, np.nan, (3, TIME_LIMIT)),
    ],
)  # fmt: skip
def test_each_policy_exits_at_the_first_quote_that_crosses(cfg, mids, side, atr, expected):
    index, code, policy = run(cfg, mids, side, atr)
    assert (index // 2, code) == expected
    assert index % 2 == 0  # a quote, never the trade rows in between
    assert policy.state[11] == mids[expected[0]]  # the trigger price: the closing side's


def test_nothing_fires_before_the_tick_after_the_fill_or_while_flat():
    # The fill's own quote (index 0) is below the stop, but checking starts after it.
    index, code, _ = run(ExitsSection(stop_bps=10), [99.0, 100, 100], start=2)
    assert code == 0 and index == 6
    flat = ExitPolicy(ExitsSection(stop_bps=10))
    ts, kind, bid, ask = quotes([1.0, 2.0])
    assert scan_exits(ts, kind, bid, ask, 0, 4, flat.state, flat._params) == (4, 0)


def test_the_stop_is_checked_at_the_closing_side_of_the_spread():
    # Mid stays at 100 but the bid (a long's exit) is 0.2 lower: below a 10 bps stop.
    ts, kind, bid, ask = quotes([100, 100, 100], spread=0.4)
    policy = ExitPolicy(ExitsSection(stop_bps=10))
    policy.on_entry(1, 100.0, 0, np.nan)
    assert scan_exits(ts, kind, bid, ask, 2, 6, policy.state, policy._params) == (2, STOP_LOSS)


def test_the_nearest_stop_is_reported_when_one_quote_crosses_several():
    # Fixed stop 99.9, ATR stop 99.0: a gap to 98 crosses both; the fixed one is nearer.
    cfg = ExitsSection(stop_bps=10, atr_stop=2)
    assert run(cfg, [100, 98], atr=0.5)[1] == STOP_LOSS
    # The trail has moved above the fixed stop: it is the nearer one.
    cfg = ExitsSection(stop_bps=10, trail_bps=5)
    index, code, _ = run(cfg, [100, 100.5, 98])
    assert (index // 2, code) == (2, TRAILING_STOP)


def test_a_stop_wins_over_a_time_limit_and_a_target_over_a_ladder_step_on_one_quote():
    assert run(ExitsSection(stop_bps=10, time_limit_ms=1), [100, 99])[1] == STOP_LOSS
    cfg = ExitsSection(stop_bps=10, target_bps=10, partial_r=(1.0,), partial_fraction=(0.5,))
    assert run(cfg, [100, 100.2])[1] == TAKE_PROFIT


def test_atr_levels_are_off_for_a_trade_entered_before_the_atr_is_warm():
    cfg = ExitsSection(stop_bps=50, atr_stop=1)
    index, code, policy = run(cfg, [100, 99.8, 99.6, 99.5], atr=np.nan)
    assert (index // 2, code) == (3, STOP_LOSS)  # not the ATR stop
    assert policy.atr_missing == 1


def test_ladder_takes_part_at_1r_then_trails_the_rest():
    # R = 10 bps = 0.1; half at +1R (100.1), a quarter at +2R (100.2); the rest trails
    # 0.15 behind the best bid.
    cfg = ExitsSection(
        stop_bps=10, trail_bps=15, partial_r=(1.0, 2.0), partial_fraction=(0.5, 0.25)
    )
    mids = [100, 100.05, 100.1, 100.15, 100.2, 100.5, 100.4, 100.36, 100.35, 99]
    ts, kind, bid, ask = quotes(mids)
    policy = ExitPolicy(cfg)
    policy.on_entry(1, 100.0, 0, np.nan)
    got = []
    start = 2
    while True:
        index, code = scan_exits(ts, kind, bid, ask, start, ts.size, policy.state, policy._params)
        if code == 0:
            break
        got.append((index // 2, code, policy.fraction if code == PARTIAL else None))
        start = index + 1
    # Trailing: best 100.5 - 0.15 = 100.35, crossed at mids[8]; the position is then
    # closed and the crash to 99 is never seen.
    assert got == [(2, PARTIAL, 0.5), (4, PARTIAL, 0.25), (8, TRAILING_STOP, None)]


def test_exits_config_is_checked_with_dotted_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"exits\.stop_pct"):
        replay_config(tmp_path, [], exits={"stop_pct": 1.0})
    with pytest.raises(ConfigError, match=r"exits\.partial_r"):
        replay_config(tmp_path, [], exits={"partial_r": [1.0], "partial_fraction": [0.5]})
    with pytest.raises(ConfigError, match=r"exits\.partial_fraction"):
        replay_config(
            tmp_path, [], exits={"stop_bps": 5, "partial_r": [1.0, 2.0], "partial_fraction": [0.5]}
        )
    with pytest.raises(ConfigError, match=r"exits\.trail_bps"):
        replay_config(tmp_path, [], exits={"trail_bps": -1.0})


def test_atr_keys_are_refused_for_a_strategy_without_an_atr(tmp_path):
    path = ROOT / "examples" / "strategies" / "breakout.py"
    config = replay_config(
        tmp_path, [], strategy={"path": str(path), "name": "Breakout"}, exits={"atr_stop": 2.0}
    )
    with pytest.raises(ConfigError, match=r"exits\.atr_stop.*Breakout has no atr"):
        resolve_strategy(config)
    ok = replay_config(tmp_path, [], exits={"atr_stop": 2.0})  # ema_cross has one
    resolve_strategy(ok)


def _journal(path: str) -> list[tuple[str, dict]]:
    db = sqlite3.connect(path)
    try:
        query = "SELECT kind, payload FROM journal ORDER BY id"
        return [(kind, orjson.loads(payload)) for kind, payload in db.execute(query)]
    finally:
        db.close()


FAST = {"sample_ms": 200, "fast": 3, "slow": 8, "rsi_period": 5, "max_hold_ms": 600_000}
EXITS = {
    "stop_bps": 6.0,
    "atr_stop": 3.0,
    "trail_atr": 4.0,
    "target_bps": 12.0,
    "partial_r": (1.0,),
    "partial_fraction": (0.5,),
    "time_limit_ms": 20_000,
    "opposite_signal": False,
}


@pytest.mark.skipif(not HISTORY.is_dir(), reason="needs ../shared/data/external")
def test_replay_of_a_real_capture_exits_by_every_policy(tmp_path):
    """config.toml as shipped (ML filter off) with ema_cross's own exits out of the way."""
    base = load_config(ROOT / "config.toml")
    digests = set()
    for i, step_ms in enumerate((10_000, 50)):
        config = attrs.evolve(
            base,
            journal=attrs.evolve(base.journal, dir=str(tmp_path / str(i) / "runs")),
            logging=attrs.evolve(base.logging, path=str(tmp_path / str(i) / "engine.jsonl")),
            data=attrs.evolve(
                base.data, paths=(str(HISTORY / "usdm_btcusdt_20240719.gz"),), symbols=()
            ),
            strategy=attrs.evolve(
                base.strategy, **FAST, stop_loss_bps=1000.0, take_profit_bps=1000.0
            ),
            model=attrs.evolve(base.model, enabled=False),
            exits=ExitsSection(**EXITS),
            replay=attrs.evolve(base.replay, step_ms=step_ms),
        )
        report = trio.run(replay, config)
        digests.add(report.journal_sha256)
    assert len(digests) == 1  # the same exits whatever the batching
    journal = _journal(report.journal_path)
    changes = [p for kind, p in journal if kind == "PositionChanged"]
    reasons = {
        p["trigger"] for p in changes if p["target"] == "EXITING" and p["source"] != "EXITING"
    }
    assert {"partial_take_profit", "trailing_stop", "time_limit"} <= reasons, reasons
    assert reasons & {"stop_loss", "atr_stop"}, reasons
    assert "cross" not in reasons  # opposite_signal = false: the strategy's own exits are off
    # A time limit is the first quote 20 s after the entry fill, in whatever batch.
    tape = load_tape([HISTORY / "usdm_btcusdt_20240719.gz"], ["BTCUSDT"], stats=CaptureStats())
    ticks = tape.ticks["BTCUSDT"]
    q_ts = ticks.ts[ticks.kind == 1]
    timed = [p for p in changes if p["trigger"] == "time_limit"]
    for out in timed:
        k = changes.index(out)
        held = next(
            p
            for p in reversed(changes[:k])
            if p["target"] == "IN_POSITION" and p["trigger"] == "filled"
        )
        due = held["ts_init"] + EXITS["time_limit_ms"] * MS
        assert out["ts_event"] == q_ts[np.searchsorted(q_ts, due)]
    # Each partial take-profit halves the position and goes back to IN_POSITION.
    reduced = [p for p in changes if p["trigger"] == "reduced"]
    assert reduced and all(p["target"] == "IN_POSITION" for p in reduced)
    for back in reduced:
        k = changes.index(back)
        signaled = changes[k - 2] if changes[k - 1]["source"] == "EXITING" else changes[k - 1]
        held = next(
            p
            for p in reversed(changes[:k])
            if p["target"] == "IN_POSITION" and p["trigger"] == "filled"
        )
        assert signaled["trigger"] == "partial_take_profit"
        # Half the entry, rounded down to the lot (qty_step 0.001): the rest is kept.
        entry_qty = abs(held["position_qty"])
        expected = entry_qty - round_down(entry_qty * 0.5, base.strategy.qty_step)
        assert abs(back["position_qty"]) == pytest.approx(expected)


def test_core_partial_exit_is_retried_at_its_size_and_returns_to_in_position(sample):
    """A ladder step through the symbol core: a reduce-only order for the step's size;
    denied, it is retried at the same size (not the whole position); filled, the
    machine is back IN_POSITION with the rest, and the policies keep running on it."""
    import fsm
    from engine._config import StrategySection
    from engine.core import ExecutionCore, SymbolCore
    from engine.feeds import CaptureStats
    from engine.feeds._tape import load_tape
    from engine.ledger import PositionLedger
    from engine.messages import OrderDenied, Purpose
    from engine.strategy._exits import POLICY_SIGNAL
    from engine.testing import quiet_logger
    from engine.venues.sim import SimVenue

    ledger = PositionLedger()
    exits = ExitsSection(
        stop_bps=0.5, trail_bps=50, partial_r=(1.0,), partial_fraction=(0.5,), opposite_signal=False
    )
    strategy_cfg = StrategySection(**{**FAST, "order_notional": 5000.0})
    core = SymbolCore(
        symbol="BTCUSDT", config=strategy_cfg, log=quiet_logger(), ledger=ledger, exits=exits
    )
    venue = SimVenue(latency_ns=0, taker_fee_rate=5e-4, ledger=ledger)
    execution = ExecutionCore(venue=venue, log=quiet_logger())
    ticks = load_tape([sample], ["BTCUSDT"], stats=CaptureStats()).ticks["BTCUSDT"]

    def fill(order, i):
        events = execution.submit(order)
        core.on_events(events, order.ts_event)
        done = venue.fill(order.client_order_id, order.ts_event, ticks.bid[i], ticks.ask[i])
        execution.apply(done)
        core.on_events([done], done.ts_event)
        return done

    index, signal = core.scan(ticks, 0, len(ticks))
    assert signal in (1, 2)
    core.on_signal(ticks, index, signal)
    (entry,), _ = core.take()
    entry_fill = fill(entry, index)
    held = abs(core.position_qty)
    assert core.position.state is fsm.PositionState.IN_POSITION
    # Scan on until the ladder step (a 0.5 bps R is reached within seconds).
    start = index + 1
    while True:
        index, signal = core.scan(ticks, start, len(ticks))
        assert signal, "no exit on the sample"
        if signal == POLICY_SIGNAL + PARTIAL:
            break
        raise AssertionError(f"another exit first: {signal}")
    side = 1 if core.position_qty > 0 else -1
    px = ticks.bid[index] if side > 0 else ticks.ask[index]
    assert side * (px - entry_fill.last_price) >= 0.5e-4 * entry_fill.last_price * (1 - 1e-9)
    core.on_signal(ticks, index, signal)
    (order,), records = core.take()
    step = round_down(held * 0.5, strategy_cfg.qty_step)
    assert order.purpose is Purpose.EXIT and order.reduce_only and order.qty == step
    assert any(getattr(r, "trigger", "") == "partial_take_profit" for r in records)
    denied = OrderDenied(
        client_order_id=order.client_order_id,
        symbol="BTCUSDT",
        purpose=Purpose.EXIT,
        reason="test",
        ts_event=order.ts_event,
        ts_init=order.ts_event,
        seq=1,
        correlation_id=order.correlation_id,
    )
    core.on_events([denied], order.ts_event)
    assert core.position.state is fsm.PositionState.EXITING
    core.retry_exit(order.ts_event + 10**9)
    (retry,), _ = core.take()
    assert retry.qty == step
    fill(retry, index)
    assert core.position.state is fsm.PositionState.IN_POSITION
    assert abs(core.position_qty) == pytest.approx(held - step)
    # The rest is still managed: the next signal is a policy's full exit.
    index, signal = core.scan(ticks, index + 1, len(ticks))
    assert signal in (POLICY_SIGNAL + STOP_LOSS, POLICY_SIGNAL + TRAILING_STOP)
    core.on_signal(ticks, index, signal)
    (last,), _ = core.take()
    assert last.qty == pytest.approx(held - step)
    fill(last, index)
    assert core.position.state is fsm.PositionState.IDLE


@pytest.mark.parametrize("exit_refused_first", [False, True])
def test_core_goes_flat_when_the_exchange_closed_the_position(sample, exit_refused_first):
    """Live, the protective stop resting on the exchange may close the position: its
    fills reach the ledger (journaled as FillRecovered) and no order of the core's. The
    core then goes flat (trigger ``protective_stop``) instead of sending an exit of
    nothing, also when its own exit was refused and waiting for a retry."""
    import fsm
    from engine._config import StrategySection
    from engine.core import ExecutionCore, SymbolCore
    from engine.ledger import PositionLedger
    from engine.messages import OrderDenied, PositionChanged, Purpose
    from engine.testing import quiet_logger
    from engine.venues.sim import SimVenue

    ledger = PositionLedger()
    core = SymbolCore(
        symbol="BTCUSDT",
        config=StrategySection(**FAST),
        log=quiet_logger(),
        ledger=ledger,
        exits=ExitsSection(stop_bps=0.5),
    )
    venue = SimVenue(latency_ns=0, taker_fee_rate=5e-4, ledger=ledger)
    execution = ExecutionCore(venue=venue, log=quiet_logger())
    ticks = load_tape([sample], ["BTCUSDT"], stats=CaptureStats()).ticks["BTCUSDT"]
    index, signal = core.scan(ticks, 0, len(ticks))
    core.on_signal(ticks, index, signal)
    (entry,), _ = core.take()
    core.on_events(execution.submit(entry), entry.ts_event)
    done = venue.fill(entry.client_order_id, entry.ts_event, ticks.bid[index], ticks.ask[index])
    execution.apply(done)
    core.on_events([done], done.ts_event)
    assert core.position.state is fsm.PositionState.IN_POSITION
    core.take()
    now = done.ts_event + 10**9
    core.retry_exit(now)  # held and still open: nothing to do
    assert core.take() == ([], []) and core.position.state is fsm.PositionState.IN_POSITION
    if exit_refused_first:
        index, signal = core.scan(ticks, index + 1, len(ticks))
        core.on_signal(ticks, index, signal)
        (order,), _ = core.take()
        core.on_events(
            [
                OrderDenied(
                    client_order_id=order.client_order_id, symbol="BTCUSDT",
                    purpose=Purpose.EXIT, reason="test", ts_event=order.ts_event,
                    ts_init=order.ts_event, seq=1, correlation_id=order.correlation_id,
                )
            ],
            order.ts_event,
        )  # fmt: skip
        assert core.position.state is fsm.PositionState.EXITING
        now = order.ts_event + 1
    # The exchange's stop fills: the ledger is flat, the core saw no order of its own.
    ledger.apply_fill("BTCUSDT", -core.position_qty, float(ticks.bid[index]), 0.0)
    core.retry_exit(now)
    orders, records = core.take()
    assert orders == []  # no exit of nothing
    assert core.position.state is fsm.PositionState.IDLE
    moves = [r for r in records if isinstance(r, PositionChanged)]
    assert moves[-1].target == "IDLE" and moves[-1].trigger == "protective_stop"

"""Event-accurate replay: the journal does not depend on batching, and decisions,
fills and exits happen at the ticks that cause them (engine.core.ReplayDriver)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import numpy as np
import orjson
import pytest
import trio

import fsm
from engine import load_config
from engine.core import ExecutionCore, SymbolCore
from engine.feeds import CaptureStats
from engine.feeds._tape import load_tape
from engine.ledger import PositionLedger
from engine.messages import OrderAccepted, OrderFilled, OrderSubmitted, Purpose, Side
from engine.strategy import Mode, Signal, Strategy
from engine.testing import quiet_logger, replay, replay_config, scheduler_seed
from engine.venues.sim import SimVenue

ROOT = Path(__file__).resolve().parents[1]
HISTORY = ROOT.parent / "shared" / "data" / "external" / "hftbacktest_history"
# step_ms, max_step_events: from one event per chunk to the whole file in one.
BATCHINGS = [(10, 1), (250, 8192), (33, 7), (10**9, 10**6)]
FAST = {"sample_ms": 200, "fast": 3, "slow": 8, "rsi_period": 5, "max_hold_ms": 3000}


def shipped(tmp_path: Path, **sections: dict) -> object:
    """config.toml as shipped (ML filter off unless a test turns it on), journal under tmp_path."""
    config = load_config(ROOT / "config.toml")
    config = attrs.evolve(
        config,
        journal=attrs.evolve(config.journal, dir=str(tmp_path / "runs")),
        logging=attrs.evolve(config.logging, path=str(tmp_path / "engine.jsonl")),
    )
    for name, values in sections.items():
        config = attrs.evolve(config, **{name: attrs.evolve(getattr(config, name), **values)})
    return config


def batched(config, step_ms: int, events: int):
    return attrs.evolve(
        config, replay=attrs.evolve(config.replay, step_ms=step_ms, max_step_events=events)
    )


def rows(path: str) -> list[tuple[str, dict]]:
    db = sqlite3.connect(path)
    try:
        query = "SELECT kind, payload FROM journal ORDER BY id"
        return [(kind, orjson.loads(payload)) for kind, payload in db.execute(query)]
    finally:
        db.close()


def test_sample_digest_is_the_same_for_every_batching_and_scheduler_seed(tmp_path):
    digests = {}
    for i, (step_ms, events) in enumerate(BATCHINGS):
        config = batched(shipped(tmp_path / str(i), model={"enabled": True}), step_ms, events)
        with scheduler_seed(i + 1):
            report = trio.run(replay, config)
        digests[(step_ms, events)] = report.journal_sha256
        assert report.model["requests"] > 0  # the filter scored entries
        assert report.fills > 0
    assert len(set(digests.values())) == 1, digests


@pytest.mark.skipif(not HISTORY.is_dir(), reason="needs ../shared/data/external")
@pytest.mark.parametrize("model", [False, True])
def test_two_symbol_capture_digest_is_the_same_for_every_batching(tmp_path, model):
    data = [HISTORY / "usdm_btcusdt_20240719.gz", HISTORY / "usdm_ethusdt_20240719.gz"]
    # Retrain often, so that labels, retraining and the swap timer are exercised.
    digests = set()
    reports = []
    for i, (step_ms, events) in enumerate(BATCHINGS[:3]):
        config = shipped(
            tmp_path / str(i),
            data={"paths": [str(p) for p in data], "symbols": []},
            strategy=FAST,
            model={"enabled": model, "retrain_every_events": 20_000, "retrain_min_samples": 5},
        )
        report = trio.run(replay, batched(config, step_ms, events))
        digests.add(report.journal_sha256)
        reports.append(report)
    assert len(digests) == 1
    report = reports[0]
    assert report.symbols == ["BTCUSDT", "ETHUSDT"]
    assert report.fills > 4
    if model:
        assert report.model["retrains"] >= 2


def test_fills_exits_and_stops_happen_at_the_ticks_that_cause_them(tmp_path, sample):
    """The strategy sees its fill at the fill's own time and checks its exits from the
    very next tick: every stop-loss / take-profit exit is the first tick after the fill
    whose price crosses the level, whatever the batching (10 s chunks here)."""
    stop_bps, take_bps, latency_ms = 1.0, 1.0, 5.0
    exits_at = {"stop_loss_bps": stop_bps, "take_profit_bps": take_bps, "max_hold_ms": 60_000}
    config = replay_config(
        tmp_path,
        [sample],
        strategy={**FAST, **exits_at},
        venue={"latency_ms": latency_ms},
        replay={"step_ms": 10_000},
    )
    report = trio.run(replay, config)
    journal = rows(report.journal_path)
    tape = load_tape([sample], ["BTCUSDT"], stats=CaptureStats()).ticks["BTCUSDT"]
    quotes = np.flatnonzero(tape.kind == 1)
    q_ts, q_bid, q_ask = tape.ts[quotes], tape.bid[quotes], tape.ask[quotes]
    orders = {p["client_order_id"]: p for kind, p in journal if kind == "SubmitOrder"}
    fills = {p["client_order_id"]: p for kind, p in journal if kind == "OrderFilled"}
    exits = [p for kind, p in journal if kind == "PositionChanged" and p["target"] == "EXITING"]
    entered = [
        p for kind, p in journal if kind == "PositionChanged" and p["target"] == "IN_POSITION"
    ]
    assert len(exits) >= 3
    checked = 0
    for fill in fills.values():
        order = orders[fill["client_order_id"]]
        # The fill rule: the first quote at or after the order's time plus the latency.
        j = int(np.searchsorted(q_ts, order["ts_event"] + int(latency_ms * 1e6)))
        assert fill["ts_event"] == q_ts[j]
        if order["purpose"] != "ENTRY":
            continue
        # The position is held from the fill's own time...
        (holding,) = [p for p in entered if p["correlation_id"] == order["correlation_id"]]
        assert holding["ts_init"] == fill["ts_event"]
        # ...and its stop or take-profit fires at the first later quote that crosses.
        side = 1.0 if order["side"] == 1 else -1.0
        exit_px = q_bid if side > 0 else q_ask
        ret = side * (exit_px[j + 1 :] - fill["last_price"]) / fill["last_price"]
        crossed = np.flatnonzero((ret <= -stop_bps * 1e-4) | (ret >= take_bps * 1e-4))
        (done,) = [p for p in exits if p["correlation_id"] == order["correlation_id"]]
        if done["trigger"] in ("stop_loss", "take_profit"):
            assert crossed.size and done["ts_event"] == q_ts[j + 1 + crossed[0]]
            checked += 1
        else:  # another exit came first: no crossing before it
            assert not crossed.size or q_ts[j + 1 + crossed[0]] >= done["ts_event"]
    assert checked >= 2


# -- the cores, directly ----------------------------------------------------------------


def test_symbol_core_signal_to_order_to_position(sample):
    from engine._config import StrategySection

    ledger = PositionLedger()
    core = SymbolCore(
        symbol="BTCUSDT",
        config=StrategySection(**FAST),
        log=quiet_logger(),
        ledger=ledger,
    )
    ticks = load_tape([sample], ["BTCUSDT"], stats=CaptureStats()).ticks["BTCUSDT"]
    index, signal = core.scan(ticks, 0, len(ticks))
    assert signal in (1, 2)  # an entry first: the core starts flat
    assert core.ticks == index + 1
    core.on_signal(ticks, index, signal)
    (order,), records = core.take()
    assert order.ts_event == ticks.ts[index] and order.purpose is Purpose.ENTRY
    assert core.position.state is fsm.PositionState.SIGNALED and core.waiting
    assert [type(r).__name__ for r in records] == ["PositionChanged", "SubmitOrder"]
    assert records[0].target == "SIGNALED" and records[1] is order
    # The venue answers; the ledger holds the fill before the core reads it.
    venue = SimVenue(latency_ns=0, taker_fee_rate=5e-4, ledger=ledger)
    execution = ExecutionCore(venue=venue, log=quiet_logger())
    events = execution.submit(order)
    assert [type(e) for e in events] == [OrderSubmitted, OrderAccepted]
    core.on_events(events, order.ts_event)
    assert core.position.state is fsm.PositionState.ORDERING
    fill = venue.fill(order.client_order_id, order.ts_event, 100.0, 100.5)
    assert isinstance(fill, OrderFilled)
    execution.apply(fill)
    core.on_events([fill], fill.ts_event)
    assert core.position.state is fsm.PositionState.IN_POSITION and not core.waiting
    assert core.position_qty == (order.qty if order.side is Side.BUY else -order.qty)
    assert venue.fill(order.client_order_id, order.ts_event, 100.0, 100.5) is None
    # Holding: the kernel now looks for exits only.
    index2, signal2 = core.scan(ticks, index + 1, len(ticks))
    assert signal2 >= 3 or index2 == len(ticks)


class Probe(Strategy):
    """A strategy that fires on known messages: long at quote ``at``, out ``hold_ns`` later."""

    kind = "probe"

    def __init__(self, at: int, hold_ns: int) -> None:
        self.at, self.hold_ns = at, hold_ns
        self.quotes = 0
        self.bid = self.ask = float("nan")
        self.entry_ts: int | None = None

    def scan(self, ticks, start, stop, mode):
        for i in range(start, stop):
            if ticks.kind[i] != 1:
                continue
            self.quotes += 1
            self.bid, self.ask = float(ticks.bid[i]), float(ticks.ask[i])
            if mode == Mode.FLAT and self.quotes == self.at:
                return i, Signal.ENTER_LONG
            if mode == Mode.HOLDING and ticks.ts[i] - self.entry_ts >= self.hold_ns:
                return i, Signal.EXIT_TIME
        return stop, Signal.NONE

    @property
    def last_bid(self):
        return self.bid

    @property
    def last_ask(self):
        return self.ask

    def on_entry_filled(self, side, entry_price, ts):
        self.entry_ts = ts

    @classmethod
    def warm_up(cls):
        pass


def _probe_run(tmp_path: Path, sample: Path, events: int, latency_ms: float) -> list:
    from engine._config import RiskSection, StrategySection
    from engine.core import ReplayDriver, RiskCore
    from engine.journal import Journal

    config = replay_config(
        tmp_path, [sample], replay={"max_step_events": events}, model={"enabled": False}
    )
    tape = load_tape([sample], ["BTCUSDT"], stats=CaptureStats())
    ledger = PositionLedger()
    venue = SimVenue(latency_ns=int(latency_ms * 1e6), taker_fee_rate=5e-4, ledger=ledger)
    core = SymbolCore(
        symbol="BTCUSDT",
        config=StrategySection(),
        log=quiet_logger(),
        ledger=ledger,
        strategy=Probe(at=100, hold_ns=2_000_000_000),
    )
    risk = RiskCore(config=RiskSection(), symbols=["BTCUSDT"], log=quiet_logger(), ledger=ledger)
    with Journal(tmp_path / f"probe-{events}.sqlite") as journal:
        driver = ReplayDriver(
            config=config,
            tape=dict(tape.ticks),
            cores=[core],
            risk=risk,
            execution=ExecutionCore(venue=venue, log=quiet_logger()),
            journal=journal,
            log=quiet_logger(),
        )
        trio.run(driver.run)
        path = journal.path
    return rows(str(path))


def test_a_strategy_behind_the_interface_is_driven_event_by_event(tmp_path, sample):
    latency_ms = 5.0
    journal = _probe_run(tmp_path, sample, 1_000_000, latency_ms)
    assert journal == _probe_run(tmp_path, sample, 1, latency_ms)  # batching changes nothing
    tape = load_tape([sample], ["BTCUSDT"], stats=CaptureStats()).ticks["BTCUSDT"]
    q_ts = tape.ts[tape.kind == 1]
    orders = [p for kind, p in journal if kind == "SubmitOrder"]
    fills = [p for kind, p in journal if kind == "OrderFilled"]
    moves = [
        (p["target"], p["trigger"], p["ts_event"]) for k, p in journal if k == "PositionChanged"
    ]
    entry, exit_ = orders
    assert entry["ts_event"] == q_ts[99]  # the 100th quote
    j = int(np.searchsorted(q_ts, entry["ts_event"] + int(latency_ms * 1e6)))
    assert fills[0]["ts_event"] == q_ts[j]
    # Held from the fill; the time exit is the first later quote 2 s after it.
    k = j + 1 + int(np.searchsorted(q_ts[j + 1 :], q_ts[j] + 2_000_000_000))
    assert exit_["ts_event"] == q_ts[k]
    assert ("EXITING", "time_limit", int(q_ts[k])) in moves
    assert moves[-1][0] == "IDLE" and fills[-1]["purpose"] == "EXIT"


def test_flatten_reduces_and_closes_a_held_position(sample):
    """An operator's flatten: risk blocks entries (REDUCING) and the core exits what it
    holds at the next evaluation (reason ``flatten``), until resume."""
    from engine._config import RiskSection, StrategySection
    from engine.core import RiskCore
    from engine.messages import ControlCommand

    ledger = PositionLedger()
    ctl_tx, ctl_rx = trio.open_memory_channel(4)
    risk = RiskCore(
        config=RiskSection(), symbols=["BTCUSDT"], log=quiet_logger(), ledger=ledger, control=ctl_rx
    )
    core = SymbolCore(
        symbol="BTCUSDT", config=StrategySection(**FAST), log=quiet_logger(), ledger=ledger
    )
    ticks = load_tape([sample], ["BTCUSDT"], stats=CaptureStats()).ticks["BTCUSDT"]
    index, signal = core.scan(ticks, 0, len(ticks))
    core.on_signal(ticks, index, signal)
    (entry,), _records = core.take()
    venue = SimVenue(latency_ns=0, taker_fee_rate=5e-4, ledger=ledger)
    events = ExecutionCore(venue=venue, log=quiet_logger()).submit(entry)
    core.on_events(events, entry.ts_event)
    core.on_events([venue.fill(entry.client_order_id, entry.ts_event, 100.0, 100.5)], 0)
    assert core.position.state is fsm.PositionState.IN_POSITION
    now = entry.ts_event + 1
    ctl_tx.send_nowait(ControlCommand(action="flatten", reason="end of day"))
    records: list = []
    risk.update_trading_state(now, records)
    assert risk.trading.state is fsm.TradingState.REDUCING and risk.flattening
    core.set_account(0.0, risk.trading.state.value, risk.flattening)
    core.retry_exit(now)
    (exit_order,), moves = core.take()
    assert exit_order.purpose is Purpose.EXIT and exit_order.reduce_only
    assert exit_order.qty == abs(core.position_qty)
    moved = [(m.target, m.trigger) for m in moves if type(m).__name__ == "PositionChanged"]
    assert moved[-1] == ("EXITING", "flatten")
    assert risk.check(exit_order) is None  # reduce-only exits pass while reducing
    ctl_tx.send_nowait(ControlCommand(action="resume", reason="done"))
    risk.update_trading_state(now + 1, records)
    assert not risk.flattening and risk.trading.state is fsm.TradingState.ACTIVE


def test_the_equity_curve_has_every_sample_and_ends_at_the_net_pnl(tmp_path, sample, monkeypatch):
    from engine.core import ReplayDriver

    seen = {}
    original = ReplayDriver.run

    async def keep(self):
        await original(self)
        seen["curve"] = self.equity_curve

    monkeypatch.setattr(ReplayDriver, "run", keep)
    report = trio.run(replay, replay_config(tmp_path, [sample], strategy=FAST))
    ts, equity = seen["curve"]
    step = 250_000_000  # risk.sample_ms
    assert report.fills > 0
    assert len(ts) == len(equity) > 100
    assert np.all(np.diff(ts[:-1]) == step)  # every sample, calm or not (the last: the end)
    assert np.all(np.diff(ts) >= 0)  # the end's point too is in time order
    assert equity[-1] == pytest.approx(report.net_pnl)  # flat at the end: equity = net PnL

"""Each automatic trigger, driven on the real sample with injected losses or faults."""

from __future__ import annotations

import sqlite3

import orjson
import pytest
import trio

import fsm
from engine._config import RiskSection, TriggersSection
from engine.actors import RiskActor
from engine.messages import ControlCommand, FeedReconnected, ReportBatch
from engine.testing import quiet_logger, replay, replay_config


def run(config, control=None):
    async def main():
        from engine._supervisor import run_replay

        log = quiet_logger()
        if control is None:
            return await replay(config)
        return await run_replay(config, log=log, control=control)

    return trio.run(main)


def rows(report, kind: str) -> list[dict]:
    db = sqlite3.connect(report.journal_path)
    try:
        return [
            orjson.loads(p)
            for (p,) in db.execute(
                "SELECT payload FROM journal WHERE kind = ? ORDER BY id", (kind,)
            )
        ]
    finally:
        db.close()


def changes(report) -> list[tuple[str, str]]:
    return [(c["from"], c["to"]) for c in report.trading_changes]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, sample):
    """The sample with default settings: when the first order happens."""
    report = run(replay_config(tmp_path_factory.mktemp("base"), [sample]))
    orders = rows(report, "SubmitOrder")
    assert orders
    first = orders[0]["ts_event"]
    return {"report": report, "first_order_ms": (first - report.first_ts) // 1_000_000}


def test_daily_loss_halts_and_denies_new_entries(tmp_path, sample, baseline):
    # Injected loss: a fee shock of 50 bps makes the first round trip lose ~10 USDT.
    config = replay_config(
        tmp_path,
        [sample],
        venue={"taker_fee_bps": 50.0},
        risk={"triggers": {"daily_loss_limit": 5.0}},
    )
    report = run(config)
    assert changes(report) == [("ACTIVE", "HALTED")]
    assert "daily_loss" in report.trading_changes[0]["reason"]
    assert report.trading_state == "HALTED"
    assert rows(report, "TradingStateChanged")[0]["target"] == "HALTED"
    denied_after = report.denied.get("trading_halted", 0)
    assert report.orders == baseline["report"].orders - 0 or denied_after >= 0
    # After the halt nothing new is approved: every later intent is denied.
    halt_ts = rows(report, "TradingStateChanged")[0]["ts_event"]
    later = [o for o in rows(report, "SubmitOrder") if o["ts_event"] > halt_ts]
    denials = {d["client_order_id"]: d["reason"] for d in rows(report, "OrderDenied")}
    assert later and all(denials.get(o["client_order_id"]) == "trading_halted" for o in later)


def test_drawdown_reduce_allows_only_exits(tmp_path, sample):
    config = replay_config(
        tmp_path,
        [sample],
        venue={"taker_fee_bps": 50.0},
        risk={"triggers": {"max_drawdown": 3.0, "drawdown_action": "reduce"}},
    )
    report = run(config)
    assert changes(report) == [("ACTIVE", "REDUCING")]
    reduce_ts = rows(report, "TradingStateChanged")[0]["ts_event"]
    denials = {d["client_order_id"]: d["reason"] for d in rows(report, "OrderDenied")}
    for order in rows(report, "SubmitOrder"):
        if order["ts_event"] > reduce_ts:
            if order["purpose"] == "ENTRY":
                assert denials[order["client_order_id"]] == "trading_reducing"
            else:
                assert order["client_order_id"] not in denials


def test_stale_data_reduces_then_recovers(tmp_path, cryptofeed_dir):
    config = replay_config(
        tmp_path,
        [cryptofeed_dir],
        risk={"triggers": {"stale_data_ms": 3000, "stale_data_action": "reduce"}},
    )
    report = run(config)
    seen = changes(report)
    assert ("ACTIVE", "REDUCING") in seen
    assert ("REDUCING", "ACTIVE") in seen  # a quote came back: auto-resume
    assert any("stale:" in c["reason"] for c in report.trading_changes)


@pytest.mark.parametrize(
    ("fault", "trigger"),
    [
        ({"kind": "reconnect", "count": 6, "symbol": "BTCUSDT"}, "reconnect_storm"),
        ({"kind": "ban", "duration_ms": 5000}, "rate_limit_ban"),
    ],
)
def test_fault_triggers_halt_and_auto_resume(tmp_path, sample, fault, trigger):
    config = replay_config(
        tmp_path,
        [sample],
        faults={"events": [{"at_ms": 30_000, **fault}]},
        risk={"triggers": {"cooldown_ms": 10_000}},
    )
    report = run(config)
    assert changes(report) == [("ACTIVE", "HALTED"), ("HALTED", "ACTIVE")]
    assert trigger in report.trading_changes[0]["reason"]
    halted, resumed = (c["ts_event"] for c in rows(report, "TradingStateChanged"))
    # A storm clears once its 60 s window is quiet; a ban when it ends (5 s).
    assert 0 < resumed - halted <= (61 if trigger == "reconnect_storm" else 6) * 10**9


def test_execution_errors_halt(tmp_path, sample):
    config = replay_config(
        tmp_path,
        [sample],
        faults={"events": [{"at_ms": 0, "kind": "reject", "count": 3}]},
        risk={"triggers": {"max_execution_errors": 2, "cooldown_ms": 600_000}},
    )
    report = run(config)
    rejected = rows(report, "OrderRejected")
    assert len(rejected) >= 2
    assert all("-2019" in r["reason"] for r in rejected)
    assert changes(report)[0] == ("ACTIVE", "HALTED")
    assert "execution_errors" in report.trading_changes[0]["reason"]


def test_reconciliation_failure_halts_until_operator_resumes(tmp_path, sample, baseline):
    at = max(0, baseline["first_order_ms"] - 1000)
    config = replay_config(
        tmp_path,
        [sample],
        faults={"events": [{"at_ms": at, "kind": "reconciliation_failed"}]},
    )
    report = run(config)
    assert changes(report) == [("ACTIVE", "HALTED")]
    assert report.trading_state == "HALTED"
    assert report.fills == 0


def test_halt_cancels_open_orders(tmp_path, sample, baseline):
    # A 60 s venue latency keeps the first order open; a halt 1 s later cancels it.
    at = baseline["first_order_ms"] + 1000
    config = replay_config(
        tmp_path,
        [sample],
        venue={"latency_ms": 60_000.0},
        faults={"events": [{"at_ms": at, "kind": "reconciliation_failed"}]},
    )
    report = run(config)
    canceled = rows(report, "OrderCanceled")
    assert len(canceled) == 1
    transitions = [
        (p["source"], p["target"], p["trigger"]) for p in rows(report, "PositionChanged")
    ]
    assert ("ORDERING", "IDLE", "canceled") in transitions
    assert report.fills == 0


def test_operator_halt_through_the_control_channel(tmp_path, sample):
    send, receive = trio.open_memory_channel(4)
    send.send_nowait(ControlCommand(action="halt", reason="drill"))
    report = run(replay_config(tmp_path, [sample]), control=receive)
    assert changes(report) == [("ACTIVE", "HALTED")]
    assert "manual: drill" in report.trading_changes[0]["reason"]
    assert report.fills == 0 and report.denied.get("trading_halted", 0) == report.orders


def test_operator_resume_clears_triggers():
    tx, rx = trio.open_memory_channel(0)
    ctl_tx, ctl_rx = trio.open_memory_channel(4)
    risk = RiskActor(
        config=RiskSection(triggers=TriggersSection(auto_resume=False, stale_data_action="off")),
        symbols=["A"],
        intents={"A": rx},
        reports=rx,
        orders=tx,
        log=quiet_logger(),
        control=ctl_rx,
    )
    sec = 1_000_000_000
    ops = tuple(
        FeedReconnected(symbol="A", reason="x", ts_event=i, ts_init=i, seq=i) for i in range(6)
    )
    risk._on_report(ReportBatch(step=0, ops=ops))
    records: list = []
    risk._update_trading_state(sec, records)
    assert risk.trading.state is fsm.TradingState.HALTED
    risk._update_trading_state(600 * sec, records)
    assert risk.trading.state is fsm.TradingState.HALTED  # auto_resume is off
    ctl_tx.send_nowait(ControlCommand(action="resume", reason="checked"))
    risk._update_trading_state(601 * sec, records)
    assert risk.trading.state is fsm.TradingState.ACTIVE
    assert [r.target for r in records] == ["HALTED", "ACTIVE"]

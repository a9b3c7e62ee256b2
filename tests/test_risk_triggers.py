"""Each automatic trigger, driven on the real sample with injected losses or faults."""

from __future__ import annotations

import gzip
import sqlite3

import orjson
import pytest
import trio

import fsm
from engine._config import RiskSection, TriggersSection
from engine.core import RiskCore
from engine.messages import ControlCommand, FeedReconnected
from engine.testing import quiet_logger, replay, replay_config


def run(config, control=None):
    async def main():
        from engine._replay import run_replay

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


def symbol_changes(report) -> list[tuple[str, str, str]]:
    return [(c["symbol"], c["from"], c["to"]) for c in report.risk["symbol_changes"]]


def test_stale_data_reduces_the_quiet_symbol_then_recovers(tmp_path, cryptofeed_dir):
    config = replay_config(
        tmp_path,
        [cryptofeed_dir],
        risk={"triggers": {"stale_data_ms": 3000, "stale_data_action": "reduce"}},
    )
    report = run(config)
    seen = {(a, b) for _symbol, a, b in symbol_changes(report)}
    assert ("ACTIVE", "REDUCING") in seen
    assert ("REDUCING", "ACTIVE") in seen  # a quote came back: auto-resume
    assert all(
        "no quote for" in c["reason"] or c["to"] == "ACTIVE" for c in report.risk["symbol_changes"]
    )
    assert changes(report) == []  # the account never left ACTIVE for one quiet symbol
    journaled = [r for r in rows(report, "TradingStateChanged") if r["symbol"]]
    assert [(r["symbol"], r["source"], r["target"]) for r in journaled] == symbol_changes(report)


def shifted_capture(sample, path, symbol: str, start_s: int, length_s: int) -> None:
    """A capture of ``symbol`` made of the sample's quotes and trades from ``start_s`` for
    ``length_s`` seconds, moved to the sample's start: a second, uncorrelated symbol
    whose capture ends early."""
    with gzip.open(sample, "rt") as f:
        lines = f.read().splitlines()
    first = int(lines[0].split(" ", 1)[0])
    shift = start_s * 1_000_000_000
    out = []
    for line in lines:
        ts_text, body = line.split(" ", 1)
        ts = int(ts_text)
        if not first + shift <= ts < first + shift + length_s * 1_000_000_000:
            continue
        msg = orjson.loads(body)
        data = msg["data"]
        if data["e"] not in ("bookTicker", "trade"):
            continue
        for key in ("E", "T"):
            if key in data:
                data[key] -= shift // 1_000_000
        data["s"] = symbol
        msg["stream"] = msg["stream"].replace("btcusdt", symbol.lower())
        out.append(f"{ts - shift} {orjson.dumps(msg).decode()}")
    with gzip.open(path, "wt") as f:
        f.write("\n".join(out) + "\n")


def test_a_capture_that_ends_early_blocks_only_that_symbol(tmp_path, sample):
    eth = tmp_path / "ethusdt.gz"
    shifted_capture(sample, eth, "ETHUSDT", start_s=120, length_s=40)
    config = replay_config(
        tmp_path,
        [sample, eth],
        strategy={"sample_ms": 100, "fast": 3, "slow": 8, "rsi_period": 5,
                  "rsi_long_max": 90.0, "rsi_short_min": 10.0, "max_hold_ms": 5000},
        risk={"triggers": {"stale_data_ms": 5000, "stale_data_action": "reduce"}},
        portfolio={"enabled": False},  # two symbols, one silent: no covariance to solve
    )  # fmt: skip
    report = run(config)
    stale = next(
        r for r in rows(report, "TradingStateChanged") if "no quote for ETHUSDT" in r["reason"]
    )
    denials = {d["client_order_id"]: d["reason"] for d in rows(report, "OrderDenied")}
    later = [
        o
        for o in rows(report, "SubmitOrder")
        if o["symbol"] == "BTCUSDT"
        and o["purpose"] == "ENTRY"
        and o["ts_event"] > stale["ts_event"]
    ]
    assert later, "no BTCUSDT entry after ETHUSDT went quiet: the test proved nothing"
    # BTCUSDT trades on: none of its entries is refused for the other symbol's silence.
    assert not {denials.get(o["client_order_id"]) for o in later} & {
        "trading_reducing",
        "symbol_reducing",
    }
    filled = {f["client_order_id"] for f in rows(report, "OrderFilled")}
    assert any(o["client_order_id"] in filled for o in later)
    # ETHUSDT alone is reduced; the account stays ACTIVE.
    assert (stale["symbol"], stale["source"], stale["target"]) == ("ETHUSDT", "ACTIVE", "REDUCING")
    assert symbol_changes(report)[0] == ("ETHUSDT", "ACTIVE", "REDUCING")
    assert changes(report) == [] and report.trading_state == "ACTIVE"


def test_one_symbols_reconnect_storm_reduces_only_that_symbol(tmp_path, sample, baseline):
    at = max(0, baseline["first_order_ms"] - 5000)
    config = replay_config(
        tmp_path,
        [sample],
        faults={"events": [{"at_ms": at, "kind": "reconnect", "count": 6, "symbol": "BTCUSDT"}]},
        risk={"triggers": {"cooldown_ms": 10_000}},
    )
    report = run(config)
    assert changes(report) == []  # the account stays ACTIVE
    assert symbol_changes(report) == [
        ("BTCUSDT", "ACTIVE", "REDUCING"),
        ("BTCUSDT", "REDUCING", "ACTIVE"),
    ]
    assert "reconnect_storm" in report.risk["symbol_changes"][0]["reason"]
    reduced, resumed = (r["ts_event"] for r in rows(report, "TradingStateChanged"))
    denials = {d["client_order_id"]: d["reason"] for d in rows(report, "OrderDenied")}
    for o in rows(report, "SubmitOrder"):
        if reduced < o["ts_event"] < resumed and o["purpose"] == "ENTRY":
            assert denials[o["client_order_id"]] == "symbol_reducing"
    assert report.denied.get("symbol_reducing", 0) >= 1


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
    ctl_tx, ctl_rx = trio.open_memory_channel(4)
    risk = RiskCore(
        config=RiskSection(triggers=TriggersSection(auto_resume=False, stale_data_action="off")),
        symbols=["A"],
        log=quiet_logger(),
        control=ctl_rx,
    )
    sec = 1_000_000_000
    ops = tuple(
        FeedReconnected(symbol=symbol, reason="x", ts_event=i, ts_init=i, seq=i)
        for symbol in ("", "A")  # not tied to a symbol (the account's), and A's own
        for i in range(6)
    )
    risk.on_ops(ops)
    records: list = []
    risk.update_trading_state(sec, records)
    assert risk.trading.state is fsm.TradingState.HALTED
    assert risk.symbol_trading["A"].state is fsm.TradingState.REDUCING
    risk.update_trading_state(600 * sec, records)
    assert risk.trading.state is fsm.TradingState.HALTED  # auto_resume is off
    ctl_tx.send_nowait(ControlCommand(action="resume", reason="checked"))
    risk.update_trading_state(601 * sec, records)
    assert risk.trading.state is fsm.TradingState.ACTIVE
    assert risk.symbol_trading["A"].state is fsm.TradingState.ACTIVE
    assert [(r.symbol, r.target) for r in records] == [
        ("", "HALTED"),
        ("A", "REDUCING"),
        ("", "ACTIVE"),
        ("A", "ACTIVE"),
    ]


def test_while_halted_an_exit_is_denied_once_then_goes_when_the_halt_ends(
    tmp_path, sample, baseline
):
    # A 418 ban halts trading for 5 s while the first position is open; its time limit
    # comes during the ban. The exit is denied once (not at every retry interval: that
    # flooded the journal), and goes at the first risk sample after the ban ends.
    fills = rows(baseline["report"], "OrderFilled")
    entry = next(f for f in fills if f["purpose"] == "ENTRY")
    at = (entry["ts_event"] - baseline["report"].first_ts) // 1_000_000 + 100
    config = replay_config(
        tmp_path,
        [sample],
        strategy={"max_hold_ms": 1000},
        faults={"events": [{"at_ms": at, "kind": "ban", "duration_ms": 5000}]},
    )
    report = run(config)
    assert changes(report) == [("ACTIVE", "HALTED"), ("HALTED", "ACTIVE")]
    halted, resumed = (c["ts_event"] for c in rows(report, "TradingStateChanged"))
    exits = [o for o in rows(report, "SubmitOrder") if o["purpose"] == "EXIT"]
    denied = [d for d in rows(report, "OrderDenied") if d["purpose"] == "EXIT"]
    assert [d["reason"] for d in denied] == ["trading_halted"]
    assert halted <= denied[0]["ts_event"] < resumed
    retry = next(o for o in exits if o["ts_event"] >= resumed)
    assert retry["ts_event"] - resumed <= config.risk.sample_ms * 2 * 1_000_000
    filled = {f["client_order_id"] for f in rows(report, "OrderFilled")}
    assert retry["client_order_id"] in filled


def test_post_only_refusals_are_not_execution_errors():
    """A GTX order that would take is refused (-5022) by design: a market maker meets it
    whenever the price moves through its quote, and must not halt for it."""
    from engine.messages import OrderRejected, Purpose

    risk = RiskCore(
        config=RiskSection(triggers=TriggersSection(max_execution_errors=3)),
        symbols=["A"],
        log=quiet_logger(),
    )

    def refused(i: int, reason: str) -> OrderRejected:
        return OrderRejected(
            client_order_id=f"o{i}",
            symbol="A",
            purpose=Purpose.ENTRY,
            reason=reason,
            ts_event=i,
            ts_init=i,
            seq=i,
            correlation_id=f"o{i}",
        )

    gtx = "-5022 Due to the order could not be executed as maker, the Post Only order ..."
    risk.on_order_events([refused(i, gtx) for i in range(10)])
    records: list = []
    risk.update_trading_state(100, records)
    assert risk.trading.state is fsm.TradingState.ACTIVE and not records
    risk.on_order_events([refused(10 + i, "-2019 Margin is insufficient.") for i in range(3)])
    risk.update_trading_state(200, records)
    assert risk.trading.state is fsm.TradingState.HALTED
    assert "execution_errors" in records[0].reason

"""Order types through the whole replay: a real capture, GTX limit entries that rest
and fill as makers (or are cancelled at the entry timeout), IOC entries that expire."""

from __future__ import annotations

import collections
import json
import sqlite3
from pathlib import Path

import attrs
import pytest
import trio

from engine import load_config
from engine.testing import replay

ROOT = Path(__file__).resolve().parents[1]
HISTORY = ROOT.parent / "shared" / "data" / "external" / "hftbacktest_history"
pytestmark = pytest.mark.skipif(not HISTORY.is_dir(), reason="needs ../shared/data/external")


def _run(tmp_path: Path, step_ms: int = 10_000, **strategy) -> tuple[list[tuple[str, dict]], str]:
    base = load_config(ROOT / "config.toml")
    config = attrs.evolve(
        base,
        journal=attrs.evolve(base.journal, dir=str(tmp_path / "runs")),
        logging=attrs.evolve(base.logging, path=str(tmp_path / "engine.jsonl")),
        data=attrs.evolve(
            base.data, paths=(str(HISTORY / "usdm_btcusdt_20240719.gz"),), symbols=()
        ),
        strategy=attrs.evolve(base.strategy, fast=3, slow=8, **strategy),
        model=attrs.evolve(base.model, enabled=False),
        replay=attrs.evolve(base.replay, step_ms=step_ms),
    )
    report = trio.run(replay, config)
    with sqlite3.connect(report.journal_path) as db:
        rows = db.execute("SELECT kind, payload FROM journal ORDER BY id").fetchall()
    return [(kind, json.loads(payload)) for kind, payload in rows], report.journal_sha256


def test_gtx_entries_rest_fill_as_maker_or_time_out(tmp_path):
    rows, digest = _run(tmp_path / "a", entry_order="limit_gtx", entry_timeout_ms=2000.0)
    orders = {p["client_order_id"]: p for kind, p in rows if kind == "SubmitOrder"}
    entries = {c: p for c, p in orders.items() if p["purpose"] == "ENTRY"}
    assert entries and all(
        p["order_type"] == "LIMIT" and p["time_in_force"] == "GTX" for p in entries.values()
    )
    fills = [p for kind, p in rows if kind == "OrderFilled"]
    entry_fills = [p for p in fills if p["client_order_id"] in entries]
    assert entry_fills and all(p["liquidity"] == "MAKER" for p in entry_fills)
    for p in entry_fills:  # a maker fill is at the order's own price, at the maker fee
        assert p["last_price"] == entries[p["client_order_id"]]["price"]
        assert p["fee"] == pytest.approx(p["last_qty"] * p["last_price"] * 2e-4)
    # exits stay market orders, taking
    assert {p["liquidity"] for p in fills if p["client_order_id"] not in entries} == {"TAKER"}
    canceled = [p for kind, p in rows if kind == "OrderCanceled"]
    assert canceled and {p["reason"] for p in canceled} == {"entry_timeout"}
    commands = [p for kind, p in rows if kind == "CancelOrder"]
    assert [p["client_order_id"] for p in commands] == [p["client_order_id"] for p in canceled]
    for p in canceled:  # cancelled 2 s after it was sent
        sent = orders[p["client_order_id"]]["ts_event"]
        assert p["ts_event"] == sent + 2_000_000_000
    # the same run cut into other steps gives the same journal
    assert (
        _run(tmp_path / "b", step_ms=50, entry_order="limit_gtx", entry_timeout_ms=2000.0)[1]
        == digest
    )


def test_ioc_entries_take_or_expire(tmp_path):
    rows, _digest = _run(tmp_path, entry_order="limit_ioc")
    kinds = collections.Counter(kind for kind, _p in rows)
    expired = [p for kind, p in rows if kind == "OrderExpired"]
    assert expired and {p["reason"] for p in expired} == {"ioc_not_filled"}
    assert kinds["OrderFilled"] > 0
    fills = [p for kind, p in rows if kind == "OrderFilled"]
    assert {p["liquidity"] for p in fills} == {"TAKER"}
    # an expired IOC sends the symbol back to IDLE, not into a position
    changes = [p for kind, p in rows if kind == "PositionChanged"]
    assert any(p["trigger"] == "expired" and p["target"] == "IDLE" for p in changes)

"""Position sizing: closed forms, fallbacks, caps, and its effect in a replay."""

from __future__ import annotations

import sqlite3

import orjson
import pytest
import trio

from engine.risk import SizingInputs, kelly_fraction, size_notional
from engine.testing import replay, replay_config

KW = {
    "order_notional": 1000.0,
    "max_notional": 5000.0,
    "risk_per_trade": 0.005,
    "atr_stop_mult": 2.0,
    "kelly_fraction_scale": 0.5,
    "kelly_cap": 0.25,
    "kelly_min_trades": 4,
    "scale_by_strength": False,
    "min_scale": 0.25,
}


def inputs(**kw) -> SizingInputs:
    base = {"price": 100.0, "equity": 10_000.0, "atr": 0.5, "strength": 1.0, "trade_returns": []}
    return SizingInputs(**{**base, **kw})


def test_volatility_sizing_risks_a_fixed_fraction_over_an_atr_stop():
    notional, basis = size_notional(inputs(), mode="volatility", **KW)
    # stop = 2 * 0.5 / 100 = 1 %; risk 0.5 % of 10k = 50 USDT -> 5000 notional
    assert notional == pytest.approx(5000.0)
    assert basis.startswith("volatility")
    capped, basis = size_notional(inputs(atr=0.1), mode="volatility", **KW)
    assert capped == 5000.0 and "capped" in basis
    warmup, basis = size_notional(inputs(atr=float("nan")), mode="volatility", **KW)
    assert warmup == 1000.0 and "not warm" in basis


def test_kelly_closed_form_cap_and_no_edge():
    trades = [0.02, 0.02, -0.01, 0.02, -0.01]  # W = 0.6, R = 2 -> f* = 0.4
    assert kelly_fraction(trades) == pytest.approx(0.6 - 0.4 / 2.0)
    notional, basis = size_notional(inputs(trade_returns=trades), mode="kelly", **KW)
    assert notional == pytest.approx(10_000 * min(0.25, 0.4 * 0.5))
    losing = [-0.02, 0.01, -0.02, 0.01]  # W = 0.5, R = 0.5 -> f* = -0.5
    assert size_notional(inputs(trade_returns=losing), mode="kelly", **KW)[0] == 0.0
    few, basis = size_notional(inputs(trade_returns=[0.01]), mode="kelly", **KW)
    assert few == 1000.0 and "trades" in basis


def test_strength_scaling_with_a_floor():
    kw = {**KW, "scale_by_strength": True}
    assert size_notional(inputs(strength=0.5), mode="fixed", **kw)[0] == 500.0
    assert size_notional(inputs(strength=0.01), mode="fixed", **kw)[0] == 250.0


def test_volatility_sizing_in_a_replay(tmp_path, sample):
    fixed = trio.run(replay, replay_config(tmp_path / "f", [sample]))
    vol = trio.run(
        replay,
        replay_config(
            tmp_path / "v",
            [sample],
            sizing={"mode": "volatility", "risk_per_trade": 0.001},
            risk={"max_notional_per_symbol": 3000.0},
        ),
    )

    def entries(report):
        db = sqlite3.connect(report.journal_path)
        rows = [
            orjson.loads(p)
            for (p,) in db.execute("SELECT payload FROM journal WHERE kind='SubmitOrder'")
        ]
        db.close()
        return [r for r in rows if r["purpose"] == "ENTRY"]

    fixed_qty = {round(e["qty"] * e["ref_price"], -2) for e in entries(fixed)}
    assert fixed_qty == {1000.0}
    vol_entries = entries(vol)
    assert vol_entries
    notionals = [e["qty"] * e["ref_price"] for e in vol_entries]
    assert all(n <= 3000.0 for n in notionals)
    assert any(abs(n - 1000.0) > 50.0 for n in notionals)

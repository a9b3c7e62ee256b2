"""The market maker in quoting mode: its quote formula on hand-made ticks, then whole
replays of real captures (../shared/data/external) through the engine: resting GTX
quotes that fill as makers, refresh by ReplaceOrder, one order per side, the inventory
cap, the time limit, risk on amendments, and the same journal for any batching."""

from __future__ import annotations

import collections
import itertools
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import trio

from engine import load_config
from engine._config import SizingSection, StrategySection
from engine._errors import ConfigError
from engine.core._symbol import QuoteInventory
from engine.messages import Ticks
from engine.strategy import Mode, Signal, resolve_strategy
from engine.strategy._market_maker import MarketMaker, MarketMakerParams
from engine.testing import replay, replay_config, scheduler_seed

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = ROOT.parent / "shared" / "data" / "external"
BTC_0808 = EXTERNAL / "hftbacktest" / "btcusdt_20240808.gz"
BTC_0718 = EXTERNAL / "hftbacktest_history" / "usdm_btcusdt_20240718.gz"
needs_data = pytest.mark.skipif(not BTC_0808.is_file(), reason="needs ../shared/data/external")

# Quiet for a second after a denial (the default 250 ms retries into the same
# one-second order-rate window).
STRATEGY = {"kind": "market_maker", "exit_retry_ms": 1000}


# -- the quote formula ------------------------------------------------------------------


def _quotes_ticks(mids: list[float], spread: float = 0.1, step_ns: int = 1_000_000_000) -> Ticks:
    n = len(mids)
    mid = np.asarray(mids, dtype=np.float64)
    nan = np.full(n, np.nan)
    return Ticks(
        ts=np.arange(1, n + 1, dtype=np.int64) * step_ns,
        ts_exchange=np.arange(1, n + 1, dtype=np.int64) * step_ns,
        seq=np.arange(n, dtype=np.int64),
        kind=np.ones(n, dtype=np.int8),
        bid=np.round(mid - spread / 2, 1),
        bid_qty=np.full(n, 2.0),
        ask=np.round(mid + spread / 2, 1),
        ask_qty=np.full(n, 1.0),
        price=nan,
        qty=nan,
        buyer_maker=np.zeros(n, dtype=np.bool_),
    )


def _maker(**params: Any) -> MarketMaker:
    p = MarketMakerParams(**{"vol_period": 4, "vol_sample_ms": 1000, **params})
    return MarketMaker(StrategySection(kind="market_maker"), SizingSection(), p)


def test_quotes_follow_the_formula_with_skew_and_cap():
    mids = [50000.05, 50010.05, 49990.05, 50020.05, 50000.05, 50030.05, 50000.05]
    ticks = _quotes_ticks(mids)
    mm = _maker(min_spread_bps=1.0, vol_mult=2.0, skew_bps=1.0, quote_qty=0.01, max_inventory=0.02)
    # Warming up: no sigma yet, so nothing is wanted (and WAITING never signals).
    assert mm.scan(ticks, 0, 3, Mode.WAITING) == (3, 0)
    assert all(math.isnan(x) for x in (mm.quotes()[0], mm.quotes()[2]))
    mm.scan(ticks, 3, len(mids), Mode.WAITING)
    sigma = mm.sigma
    log_mids = np.log(mids[:-1])  # the last bucket has not closed yet
    expected = math.sqrt(float(np.sum(np.diff(log_mids)[-4:] ** 2))) / 2.0
    assert sigma == pytest.approx(expected)
    fair = mids[-1]
    half = 0.5 * max(1e-4, 2.0 * sigma)
    bid, bid_qty, ask, ask_qty = mm.quotes()
    assert (bid_qty, ask_qty) == (0.01, 0.01)
    assert bid == round(math.floor(fair * (1 - half) / 0.1 + 1e-9) * 0.1, 3)
    assert ask == round(math.ceil(fair * (1 + half) / 0.1 - 1e-9) * 0.1, 3)
    # Long inventory: both quotes lower by skew_bps per quote_qty held.
    mm.on_inventory(0.01, 0)
    bid_l, _, ask_l, _ = mm.quotes()
    assert bid_l < bid and ask_l < ask
    assert ask_l == round(math.ceil(fair * (1 + half - 1e-4) / 0.1 - 1e-9) * 0.1, 3)
    # At the cap the side that would pass it is not quoted.
    mm.on_inventory(0.02, 0)
    bid_c, _, ask_c, _ = mm.quotes()
    assert math.isnan(bid_c) and not math.isnan(ask_c)
    mm.on_inventory(-0.02, 0)
    bid_c, _, ask_c, _ = mm.quotes()
    assert not math.isnan(bid_c) and math.isnan(ask_c)


def test_quotes_never_cross_the_touch_and_the_kernel_asks_for_requotes():
    mids = [100.05, 100.15, 100.05, 100.15, 100.05, 100.15, 100.05, 100.15]
    ticks = _quotes_ticks(mids)
    # A huge skew pushes the wanted bid through the ask: it stops a tick below it.
    mm = _maker(min_spread_bps=0.0, vol_mult=0.0, skew_bps=1000.0, quote_qty=1.0, max_inventory=5.0)
    mm.scan(ticks, 0, 6, Mode.WAITING)
    mm.on_inventory(-3.0, 0)
    bid, _, ask, _ = mm.quotes()
    assert bid == round(ticks.ask[5] - 0.1, 1) and ask > bid
    # Nothing working and quotes wanted: the first QUOTING event asks for a requote.
    assert mm.scan(ticks, 6, 8, Mode.QUOTING) == (6, Signal.REQUOTE)
    mm.on_working(bid, ask, 0, 0, 0)
    # Quiet (after a denial): no requote before that time.
    mm.on_working(math.nan, math.nan, 0, 0, int(ticks.ts[7]) + 1)
    assert mm.scan(ticks, 7, 8, Mode.QUOTING) == (8, 0)


def test_inventory_books_average_price_realised_pnl_and_flips():
    inv = QuoteInventory()
    inv.apply(0.002, 100.0, 0.01, "MAKER", 1)
    inv.apply(0.002, 102.0, 0.01, "MAKER", 2)
    assert (inv.qty, inv.avg_price, inv.since) == (0.004, pytest.approx(101.0), 1)
    inv.apply(-0.006, 104.0, 0.03, "TAKER", 3)  # closes 0.004 at +3, opens 0.002 short
    assert inv.qty == -0.002 and inv.avg_price == 104.0 and inv.since == 3
    assert inv.realized == pytest.approx(0.004 * 3.0)
    assert inv.fees == pytest.approx(0.05) and (inv.maker_fills, inv.taker_fills) == (2, 1)
    inv.apply(0.002, 103.0, 0.0, "MAKER", 4)
    assert inv.qty == 0.0 and inv.realized == pytest.approx(0.012 + 0.002)
    assert inv.peak == 0.004


def test_the_kind_and_its_params_are_checked(tmp_path):
    config = replay_config(tmp_path, [ROOT / "data/sample"], strategy={"kind": "market_maker"})
    assert resolve_strategy(config).cls is MarketMaker
    bad = replay_config(
        tmp_path,
        [ROOT / "data/sample"],
        strategy={"kind": "market_maker", "params": {"quote_qty": 1.0, "max_inventory": 0.5}},
    )
    with pytest.raises(ConfigError, match=r"strategy\.params"):
        resolve_strategy(bad)


def test_the_example_config_loads_every_param_at_its_default():
    config = load_config(ROOT / "examples/configs/market_maker.toml")
    spec = resolve_strategy(config)
    assert spec.cls is MarketMaker and spec.params == MarketMakerParams()


# -- whole replays on real captures -------------------------------------------------------


def _run(tmp: Path, data: Path, *, params: dict[str, Any] | None = None, **sections: Any):
    strategy = {**STRATEGY, **sections.pop("strategy", {}), "params": dict(params or {})}
    sections.setdefault("model", {"enabled": False})
    config = replay_config(tmp, [data], strategy=strategy, **sections)
    report = trio.run(replay, config)
    with sqlite3.connect(report.journal_path) as db:
        rows = db.execute("SELECT kind, payload FROM journal ORDER BY id").fetchall()
    return report, [(kind, orjson.loads(payload)) for kind, payload in rows]


def _inventory_path(rows: list[tuple[str, dict]]) -> list[float]:
    inv, path = 0.0, []
    for kind, p in rows:
        if kind == "OrderFilled":
            inv = round(inv + p["side"] * p["last_qty"], 9)
            path.append(inv)
    return path


@needs_data
def test_quotes_rest_fill_as_maker_and_are_amended_in_place(tmp_path):
    report, rows = _run(tmp_path, BTC_0808)
    kinds = collections.Counter(kind for kind, _ in rows)
    orders = {p["client_order_id"]: p for kind, p in rows if kind == "SubmitOrder"}
    quotes = {c: p for c, p in orders.items() if p["order_type"] == "LIMIT"}
    assert quotes and all(p["time_in_force"] == "GTX" for p in quotes.values())
    assert {p["side"] for p in quotes.values()} == {1, -1}
    # Refresh by cancel-replace: every amendment answered, same order id, new price.
    replaces = [p for kind, p in rows if kind == "ReplaceOrder"]
    replaced = [p for kind, p in rows if kind == "OrderReplaced"]
    assert len(replaces) > 10 and len(replaced) == len(replaces)
    for command, answer in zip(replaces, replaced, strict=True):
        assert command["client_order_id"] == answer["client_order_id"] in quotes
        assert answer["price"] == command["price"]
        assert command["qty"] == quotes[command["client_order_id"]]["qty"]
    # Resting quotes fill, as makers, at the order's price as last amended.
    price = {c: p["price"] for c, p in quotes.items()}
    open_by_side: dict[int, set[str]] = {1: set(), -1: set()}
    fills = 0
    for kind, p in rows:
        cid = p.get("client_order_id")
        if cid not in quotes:
            continue
        side = quotes[cid]["side"]
        if kind == "OrderReplaced":
            price[cid] = p["price"]
        elif kind == "OrderSubmitted":
            open_by_side[side].add(cid)
            assert len(open_by_side[side]) == 1  # at most one quote per side
        elif kind == "OrderFilled":
            fills += 1
            assert p["liquidity"] == "MAKER" and p["last_price"] == price[cid]
            assert p["fee"] == pytest.approx(p["last_qty"] * p["last_price"] * 2e-4)
            if p["cum_qty"] >= p["order_qty"]:
                open_by_side[side].discard(cid)
        elif kind in ("OrderCanceled", "OrderRejected", "OrderExpired", "OrderDenied"):
            open_by_side[side].discard(cid)
    assert fills > 20 and kinds["OrderFilled"] == fills
    assert report.fills == fills
    # The report's round trips come from the same fills (flat to flat).
    assert report.trades["trades"] > 5
    inventory = _inventory_path(rows)
    assert max(abs(x) for x in inventory) <= 0.01 + 1e-12


@needs_data
def test_inventory_never_passes_the_cap_even_when_it_binds(tmp_path):
    cap = 0.004
    _report, rows = _run(
        tmp_path, BTC_0808, params={"quote_qty": 0.002, "max_inventory": cap, "skew_bps": 0.0}
    )
    inventory = _inventory_path(rows)
    assert max(abs(x) for x in inventory) == pytest.approx(cap)  # the cap was reached...
    assert all(abs(x) <= cap + 1e-12 for x in inventory)  # ...and never passed
    # No quote was sent on the side that would pass it.
    inv = 0.0
    for kind, p in rows:
        if kind == "OrderFilled":
            inv = round(inv + p["side"] * p["last_qty"], 9)
        elif kind == "SubmitOrder":
            assert abs(inv + p["side"] * p["qty"]) <= cap + 1e-12


@needs_data
def test_an_inventory_held_too_long_is_closed_at_market(tmp_path):
    _report, rows = _run(tmp_path, BTC_0808, params={"max_hold_ms": 2000})
    closes = [p for kind, p in rows if kind == "SubmitOrder" and p["order_type"] == "MARKET"]
    assert closes and all(p["reduce_only"] and p["purpose"] == "EXIT" for p in closes)
    ids = {p["client_order_id"] for p in closes}
    taker = [p for kind, p in rows if kind == "OrderFilled" and p["client_order_id"] in ids]
    assert taker and {p["liquidity"] for p in taker} == {"TAKER"}
    # Each close takes the inventory back to flat.
    inv = 0.0
    for kind, p in rows:
        if kind == "OrderFilled":
            inv = round(inv + p["side"] * p["last_qty"], 9)
            if p["client_order_id"] in ids:
                assert inv == 0.0


@needs_data
def test_risk_checks_amendments_and_cancels_a_denied_one(tmp_path):
    # One order a second: most amendments are denied, each turned into a cancel.
    _report, rows = _run(tmp_path, BTC_0808, risk={"max_orders_per_second": 1})
    cancels = [p for kind, p in rows if kind == "CancelOrder"]
    denied = [p for p in cancels if p["reason"].startswith("replace_denied_")]
    assert denied and {p["reason"] for p in denied} == {"replace_denied_max_orders_per_second"}
    canceled = {p["client_order_id"] for kind, p in rows if kind == "OrderCanceled"}
    assert {p["client_order_id"] for p in denied} <= canceled
    # Within any one second at most one order or amendment went out.
    sent = sorted(p["ts_event"] for kind, p in rows if kind in ("OrderSubmitted", "OrderReplaced"))
    assert len(sent) > 10
    for a, b in itertools.pairwise(sent):
        assert b - a >= 1_000_000_000


@needs_data
@pytest.mark.parametrize("data", [BTC_0718, BTC_0808])
def test_same_journal_for_any_batching(tmp_path, data):
    digests = set()
    for i, replay_section in enumerate(
        ({"max_step_events": 1, "step_ms": 10}, {"max_step_events": 1_000_000, "step_ms": 60_000})
    ):
        with scheduler_seed(i + 1):
            report, rows = _run(tmp_path / str(i), data, replay=replay_section)
        assert any(kind == "ReplaceOrder" for kind, _ in rows)
        digests.add(report.journal_sha256)
    assert len(digests) == 1


# -- paper: the live feed from the loopback exchange, cancels and amends through risk -------


async def test_paper_quotes_rest_amend_and_fill_against_the_loopback_exchange(tmp_path):
    """Paper mode: the loopback exchange streams the sample; the symbol actor quotes,
    risk passes (and journals) the amendments and cancels, execution sends them to the
    simulated venue, and quotes fill as maker; the inventory never passes its cap."""
    from _loopback import QUIET, loopback_doc, run_on_loopback

    from engine.feeds._live import LiveFeed
    from engine.venues.sim._recorded import load_recording
    from engine.venues.sim._stream_server import ServerSettings, StreamServer

    recording = load_recording([ROOT / "data/sample/btcusdt_20240808_180s.gz"])
    last = max(
        orjson.loads(m.data)["u"] for m in recording.messages if m.stream.endswith("@bookTicker")
    )
    caught_up = trio.Event()

    def passed(_ts: int, raw: bytes) -> None:  # the feed's record hook
        data = orjson.loads(raw)["data"]
        if data.get("e") == "bookTicker" and data["u"] >= last:
            caught_up.set()

    def make_feed(**kwargs: Any) -> LiveFeed:
        return LiveFeed(**kwargs, record=passed)

    cap = 0.01
    server = StreamServer(recording, ServerSettings(speed=20.0), QUIET)

    def doc(ws_port: int, rest_port: int) -> dict[str, Any]:
        doc = loopback_doc(tmp_path, ws_port, rest_port, stale_ms=60_000)
        doc["strategy"] = {
            "kind": "market_maker",
            # Times in wall-clock ms: the exchange plays 20x the pace.
            "params": {
                "quote_qty": 0.002,
                "max_inventory": cap,
                "vol_sample_ms": 50,
                "vol_period": 5,
                "refresh_ms": 50,
                "min_quote_life_ms": 25,
            },
        }
        doc["model"] = {"enabled": False}
        doc["hardware"] = {"enabled": False}
        return doc

    report = await run_on_loopback(
        server, tmp_path, doc, make_feed=make_feed, until=caught_up, guard_s=600
    )
    with sqlite3.connect(report.journal_path) as db:
        rows = [(k, orjson.loads(p)) for k, p in db.execute("SELECT kind, payload FROM journal")]
    kinds = collections.Counter(k for k, _ in rows)
    fills = [p for k, p in rows if k == "OrderFilled"]
    submits = [p for k, p in rows if k == "SubmitOrder"]
    assert submits and all(p["time_in_force"] == "GTX" for p in submits if p["purpose"] == "ENTRY")
    assert kinds["ReplaceOrder"] > 0 or kinds["CancelOrder"] > 0  # quotes refreshed
    assert fills and any(p["liquidity"] == "MAKER" for p in fills)
    inventory = 0.0
    for p in fills:
        inventory += p["side"] * p["last_qty"]  # side: +1 buy, -1 sell
        assert abs(inventory) <= cap + 1e-9
    assert {p["side"] for p in fills} == {1, -1}  # both sides filled

"""Mark prices and funding on the simulated venue, on the real 2023 capture pair that
crosses the 2023-04-05 00:00 UTC funding time (``markPrice@1s`` stream)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.actors._execution import record_key
from engine.feeds import CaptureStats, merge_captures
from engine.feeds._capture import MarkPrice
from engine.feeds._columns import Columns, append_message
from engine.messages import FundingApplied, Purpose, Side, SubmitOrder, Ticks
from engine.venues.sim import SimVenue

HISTORY = Path(__file__).resolve().parents[1].parent / "shared/data/external/hftbacktest_history"
PAIR = [HISTORY / "usdm_btcusdt_20230404.dat.gz", HISTORY / "usdm_btcusdt_20230405.dat.gz"]
FUNDING_MS = 1680652800000  # 2023-04-05 00:00:00 UTC
SEC = 10**9

pytestmark = pytest.mark.skipif(not PAIR[0].exists(), reason="../shared data is not here")


@pytest.fixture(scope="module")
def around_midnight() -> list[tuple[int, object]]:
    """The pair's events from 10 s before the funding time to 5 s after it."""
    lo, hi = (FUNDING_MS - 10_000) * 10**6, (FUNDING_MS + 5_000) * 10**6
    return [(ts, m) for ts, m in merge_captures(PAIR, CaptureStats()) if lo <= ts < hi]


def batch(events: list[tuple[int, object]]) -> Ticks:
    cols = Columns()
    for seq, (ts, msg) in enumerate(events):
        append_message(cols, ts, seq, msg)
    ticks = cols.take()
    assert ticks is not None
    return ticks


def buy(qty: float, ts: int) -> SubmitOrder:
    return SubmitOrder(
        client_order_id="o1",
        symbol="BTCUSDT",
        side=Side.BUY,
        qty=qty,
        ref_price=28150.0,
        purpose=Purpose.ENTRY,
        reduce_only=False,
        ts_event=ts,
        ts_init=ts,
        seq=1,
        correlation_id="c1",
    )


def split(events, at_ns: int):
    return [e for e in events if e[0] < at_ns], [e for e in events if e[0] >= at_ns]


def test_funding_is_settled_on_the_open_position_at_the_funding_time(around_midnight):
    venue = SimVenue(latency_ns=0, taker_fee_rate=0.0)
    before, after = split(around_midnight, (FUNDING_MS - 5_000) * 10**6)
    venue.submit(buy(0.5, before[0][0]))
    venue.on_market({"BTCUSDT": batch(before)})
    assert venue.ledger.qty("BTCUSDT") == 0.5
    assert venue.take_ops() == []  # no funding time passed yet
    realized_before = venue.ledger.account("BTCUSDT").realized

    venue.on_market({"BTCUSDT": batch(after)})
    (funding,) = venue.take_ops()
    # The first update at or after 00:00 still names it, with the rate settled then.
    first = next(m for _ts, m in after if isinstance(m, MarkPrice) and m.event_time >= FUNDING_MS)
    assert (first.event_time, first.next_funding_time) == (1680652800010, FUNDING_MS)
    assert isinstance(funding, FundingApplied)
    assert funding.ts_event == FUNDING_MS * 10**6
    assert (funding.rate, funding.mark_price, funding.position_qty) == (0.0000276, 28155.1, 0.5)
    assert funding.amount == pytest.approx(-0.5 * 28155.1 * 0.0000276)  # a long pays
    acct = venue.ledger.account("BTCUSDT")
    assert acct.realized - realized_before == pytest.approx(funding.amount)
    assert venue.funding == {"BTCUSDT": pytest.approx(funding.amount)}
    # Settled once: the updates after it name the next funding time.
    venue.on_market({"BTCUSDT": batch(after)})
    assert venue.take_ops() == []
    # The journal's canonical order knows the record.
    assert record_key(funding)[0] == funding.ts_init


def test_unrealised_pnl_is_marked_to_the_mark_price(around_midnight):
    venue = SimVenue(latency_ns=0, taker_fee_rate=0.0)
    before, _after = split(around_midnight, (FUNDING_MS - 5_000) * 10**6)
    venue.submit(buy(0.5, before[0][0]))
    venue.on_market({"BTCUSDT": batch(before)})
    last_mark = [m for _ts, m in before if isinstance(m, MarkPrice)][-1]
    acct = venue.ledger.account("BTCUSDT")
    assert acct.last_mid == last_mark.mark == venue.mark_prices["BTCUSDT"]
    assert acct.unrealized() == pytest.approx(0.5 * (last_mark.mark - acct.avg_price))
    assert venue.equity == pytest.approx(acct.realized - acct.fees + acct.unrealized())


def test_a_position_opened_after_the_funding_time_pays_nothing(around_midnight):
    venue = SimVenue(latency_ns=0, taker_fee_rate=0.0)
    before, after = split(around_midnight, (FUNDING_MS - 5_000) * 10**6)
    venue.on_market({"BTCUSDT": batch(before)})
    # Filled in the same step as the settlement, but after the update that settles it.
    venue.submit(buy(0.5, FUNDING_MS * 10**6 + 500 * 10**6))
    venue.on_market({"BTCUSDT": batch(after)})
    assert venue.ledger.qty("BTCUSDT") == 0.5
    assert venue.take_ops() == []
    assert venue.funding == {}

"""The order path's shortcuts give what the long way gives: client order ids (a table of
base-36 digit pairs, no object per id) and order templates (a float notional's sure
pass, remembered quantity roundings)."""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.messages import Side
from engine.venues.binance import (
    ClientOrderIds,
    FilterError,
    OrderTemplate,
    OrderType,
    venue_client_order_id,
)
from engine.venues.binance._ids import _base36, run_token

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36_reference(n: int) -> str:
    if n == 0:
        return "0"
    out = []
    while n:
        n, rem = divmod(n, 36)
        out.append(_DIGITS[rem])
    return "".join(reversed(out))


def _token_reference(run_id: str) -> str:
    digest = int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=8).digest(), "big")
    return _base36_reference(digest).rjust(13, "0")


@given(st.integers(min_value=0, max_value=2**80))
def test_base36_is_the_plain_conversion(n: int) -> None:
    assert _base36(n) == _base36_reference(n)


@pytest.mark.parametrize("n", [0, 1, 35, 36, 1295, 1296, 36**13 - 1, 2**64 - 1])
def test_base36_edges(n: int) -> None:
    assert _base36(n) == _base36_reference(n)


@given(
    st.text(min_size=1, max_size=12),
    st.integers(min_value=0, max_value=2**63),
    st.integers(min_value=0, max_value=10**9),
)
def test_venue_id_is_the_run_ids_id(engine_id: str, ts_event: int, seq: int) -> None:
    run_id = f"BTCUSDT|{engine_id}|{ts_event}"
    assert run_token(run_id) == _token_reference(run_id)
    expected = ClientOrderIds(run_id).make(seq)
    assert venue_client_order_id("BTCUSDT", engine_id, ts_event, seq) == expected
    assert expected == f"t{_token_reference(run_id)}-{_base36_reference(seq)}"


def test_venue_id_refuses_a_sequence_out_of_range() -> None:
    with pytest.raises(ValueError, match="outside"):
        venue_client_order_id("BTCUSDT", "tr-BTCUSDT-1", 1, -1)
    with pytest.raises(ValueError, match="outside"):
        venue_client_order_id("BTCUSDT", "tr-BTCUSDT-1", 1, 36**22)


INFO = {
    "symbol": "BTCUSDT",
    "status": "TRADING",
    "filters": [
        {"filterType": "PRICE_FILTER", "tickSize": "0.10", "minPrice": "0.10", "maxPrice": "1e7"},
        {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "1000"},
        {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.01", "minQty": "0.01", "maxQty": "120"},
        {"filterType": "MIN_NOTIONAL", "notional": "100"},
    ],
}


def _market(t: OrderTemplate, qty: float, ref: float, reduce_only: bool = False) -> str:
    try:
        return t.prepare(
            Side.BUY, qty, client_order_id="tabc-1", ref_price=ref, reduce_only=reduce_only
        ).params
    except FilterError as exc:
        return exc.reason


def _market_exact(qty: float, ref: float, reduce_only: bool = False) -> str:
    """What a market order's checks decide, all in Decimal (the long way)."""
    t = OrderTemplate.from_symbol_info(INFO)
    q = t.round_quantity(qty, OrderType.MARKET)
    if q <= 0 or q < t.market_min_qty:
        return "QTY_BELOW_MIN"
    if q > t.market_max_qty:
        return "QTY_ABOVE_MAX"
    if not math.isfinite(ref):  # refused even reduce-only (fail closed)
        return "PRICE_INVALID"
    if not reduce_only and q * Decimal(repr(ref)) < t.min_notional:
        return "NOTIONAL_BELOW_MIN"
    tail = "&reduceOnly=true" if reduce_only else ""
    return f"symbol=BTCUSDT&side=BUY&type=MARKET&quantity={q:f}{tail}&newClientOrderId=tabc-1"


@settings(max_examples=300)
@given(
    st.floats(min_value=0.0, max_value=200.0),
    st.one_of(
        st.floats(min_value=-1e6, max_value=1e6),
        st.sampled_from([math.inf, -math.inf, math.nan, 10_000.0, 9_999.999999, 10_000.000001]),
    ),
    st.booleans(),
)
def test_market_checks_are_the_exact_ones(qty: float, ref: float, reduce_only: bool) -> None:
    t = OrderTemplate.from_symbol_info(INFO)
    first = _market(t, qty, ref, reduce_only)
    assert first == _market_exact(qty, ref, reduce_only)
    assert _market(t, qty, ref, reduce_only) == first  # remembered: the same answer


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (10_000.0, "quantity=0.01"),  # 0.01 x 10000 = 100: at the bound, passes
        (9_999.999999999, "NOTIONAL_BELOW_MIN"),  # a float hair below: the exact check
        (10_000.0000001, "quantity=0.01"),
        (math.inf, "PRICE_INVALID"),
        (math.nan, "PRICE_INVALID"),
    ],
)
def test_min_notional_at_the_bound(ref: float, expected: str) -> None:
    t = OrderTemplate.from_symbol_info(INFO)
    assert expected in _market(t, 0.01, ref)


def test_a_remembered_quantity_keeps_market_and_limit_steps_apart() -> None:
    t = OrderTemplate.from_symbol_info(INFO)
    market = t.prepare(Side.BUY, 0.0179, client_order_id="tabc-1", ref_price=1e5)
    limit = t.prepare(
        Side.BUY, 0.0179, client_order_id="tabc-1", order_type=OrderType.LIMIT, price=1e5
    )
    assert market.quantity == Decimal("0.01")  # MARKET_LOT_SIZE's step
    assert limit.quantity == Decimal("0.017")  # LOT_SIZE's
    again = t.prepare(Side.BUY, 0.0179, client_order_id="tabc-1", ref_price=1e5)
    assert again.quantity == Decimal("0.01")

"""Order templates from a real exchangeInfo: rounding, filters, serialised parameters."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.messages import Side
from engine.venues.binance import (
    DEFAULT_LIMITS,
    FilterError,
    OrderTemplate,
    OrderType,
    TimeInForce,
    rate_limits_from_exchange_info,
    templates_from_exchange_info,
)

ROOT = Path(__file__).resolve().parents[1]
EXCHANGE_INFO = ROOT.parent / "shared/data/external/cryptofeed/BINANCE_FUTURES.0"
if not EXCHANGE_INFO.exists():
    pytest.skip("../shared/data/external is not beside the repository", allow_module_level=True)


def _load() -> dict:
    line = EXCHANGE_INFO.read_text().splitlines()[0]
    return json.loads(line[line.index("{") :])


INFO = _load()
TEMPLATES = templates_from_exchange_info(INFO)
BTC, ETH, DENT, DOGE = (TEMPLATES[s] for s in ("BTCUSDT", "ETHUSDT", "DENTUSDT", "DOGEUSDT"))
CID = "tabc-1"


def test_filters_are_read_as_decimals() -> None:
    assert BTC.tick_size == Decimal("0.01")
    assert BTC.step_size == Decimal("0.001")
    assert (BTC.min_qty, BTC.max_qty) == (Decimal("0.001"), Decimal("1000"))
    assert (BTC.min_price, BTC.max_price) == (Decimal("556.72"), Decimal("1000000"))
    assert BTC.min_notional == Decimal("5")
    assert (BTC.multiplier_up, BTC.multiplier_down) == (Decimal("1.1500"), Decimal("0.8500"))
    assert DENT.tick_size == Decimal("0.000001")
    assert DENT.step_size == Decimal("1")
    assert DOGE.max_qty == Decimal("10000000")
    assert DOGE.market_max_qty == Decimal("5000000")  # MARKET_LOT_SIZE differs from LOT_SIZE


def test_rate_limits_are_read_from_exchange_info() -> None:
    assert set(rate_limits_from_exchange_info(INFO)) == set(DEFAULT_LIMITS)


def test_float_noise_does_not_leak_into_strings() -> None:
    assert str(BTC.round_quantity(0.1 + 0.2)) == "0.300"
    assert str(BTC.round_quantity(0.7 - 0.4)) == "0.300"  # 0.29999999999999993
    assert str(BTC.round_quantity(Decimal("0.2999"))) == "0.299"  # exact input: floor
    assert str(BTC.round_price(61800.2, Side.BUY)) == "61800.20"
    assert str(BTC.round_price(61800.2, Side.SELL)) == "61800.20"
    assert str(BTC.round_price(61800.239, Side.BUY)) == "61800.23"
    assert str(BTC.round_price(61800.231, Side.SELL)) == "61800.24"
    assert str(DENT.round_price(1e-5, Side.BUY)) == "0.000010"  # never "1E-5"
    assert str(DENT.round_quantity(12345.9)) == "12345"
    assert str(ETH.round_quantity(1e-8)) == "0.000"


def test_eight_decimal_steps() -> None:
    tiny = OrderTemplate(
        symbol="X", tick_size=Decimal("1e-8"), step_size=Decimal("1e-8"),
        market_step_size=Decimal("1e-8"),
    )  # fmt: skip
    assert format(tiny.round_quantity(1e-8), "f") == "0.00000001"
    assert format(tiny.round_quantity(0.123456789), "f") == "0.12345678"
    assert format(tiny.round_price(3e-8, Side.SELL), "f") == "0.00000003"
    order = tiny.prepare(Side.BUY, 2e-8, client_order_id=CID)
    assert (
        order.params == "symbol=X&side=BUY&type=MARKET&quantity=0.00000002&newClientOrderId=tabc-1"
    )


def test_limit_order_parameters_are_exact() -> None:
    order = BTC.prepare(
        Side.SELL, 0.0125, client_order_id="tk3-2s", order_type=OrderType.LIMIT,
        price=61800.234, time_in_force=TimeInForce.GTX, reduce_only=True,
    )  # fmt: skip
    assert order.params == (
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTX&quantity=0.012&price=61800.24"
        "&reduceOnly=true&newClientOrderId=tk3-2s"
    )
    assert (order.quantity, order.price) == (Decimal("0.012"), Decimal("61800.24"))
    for tif in TimeInForce:
        p = ETH.prepare(
            Side.BUY, 1, client_order_id=CID, order_type=OrderType.LIMIT, price="2000.005",
            time_in_force=tif,
        ).params  # fmt: skip
        assert p == (
            f"symbol=ETHUSDT&side=BUY&type=LIMIT&timeInForce={tif.value}&quantity=1.000"
            f"&price=2000.00&newClientOrderId={CID}"
        )


def test_market_order_parameters_are_exact() -> None:
    order = DENT.prepare(Side.BUY, 123456.7, client_order_id=CID, ref_price=0.0021)
    assert (
        order.params
        == "symbol=DENTUSDT&side=BUY&type=MARKET&quantity=123456&newClientOrderId=tabc-1"
    )
    assert order.price is None


@pytest.mark.parametrize(
    ("template", "kwargs", "reason"),
    [
        (BTC, {"quantity": 0.0009}, "QTY_BELOW_MIN"),
        (BTC, {"quantity": 1001, "order_type": OrderType.LIMIT, "price": 60000}, "QTY_ABOVE_MAX"),
        (DOGE, {"quantity": 6_000_000}, "QTY_ABOVE_MAX"),  # MARKET_LOT_SIZE
        (
            BTC,
            {"quantity": 0.001, "order_type": OrderType.LIMIT, "price": 4000},
            "NOTIONAL_BELOW_MIN",
        ),
        (BTC, {"quantity": 0.001, "ref_price": 4000}, "NOTIONAL_BELOW_MIN"),
        (BTC, {"quantity": 1, "order_type": OrderType.LIMIT, "price": 500}, "PRICE_BELOW_MIN"),
        (BTC, {"quantity": 1, "order_type": OrderType.LIMIT, "price": 2e6}, "PRICE_ABOVE_MAX"),
        (BTC, {"quantity": 1, "order_type": OrderType.LIMIT}, "PRICE_INVALID"),
        (
            BTC,
            {"quantity": 1, "order_type": OrderType.LIMIT, "price": 70000, "mark_price": 60000},
            "PRICE_ABOVE_PERCENT",
        ),
        (
            BTC,
            {"quantity": 1, "order_type": OrderType.LIMIT, "price": 50000, "mark_price": 60000},
            "PRICE_BELOW_PERCENT",
        ),
        (BTC, {"quantity": float("nan")}, "QTY_INVALID"),
        (BTC, {"quantity": "abc"}, "QTY_INVALID"),
        (BTC, {"quantity": 1, "client_order_id": "has space"}, "CLIENT_ORDER_ID_INVALID"),
    ],
)
def test_local_checks_refuse_with_a_reason(
    template: OrderTemplate, kwargs: dict, reason: str
) -> None:
    kwargs.setdefault("client_order_id", CID)
    with pytest.raises(FilterError) as info:
        template.prepare(Side.BUY, **kwargs)
    assert info.value.reason == reason
    assert info.value.symbol == template.symbol


def test_reduce_only_is_exempt_from_min_notional_and_non_trading_symbols_refuse() -> None:
    order = BTC.prepare(
        Side.SELL, 0.001, client_order_id=CID, order_type=OrderType.LIMIT, price=4000,
        reduce_only=True,
    )  # fmt: skip
    assert order.params.endswith("&reduceOnly=true&newClientOrderId=tabc-1")
    pending = next(t for t in TEMPLATES.values() if t.status != "TRADING")
    with pytest.raises(FilterError, match="SYMBOL_NOT_TRADING"):
        pending.prepare(Side.BUY, 1000, client_order_id=CID)


def test_templates_are_immutable() -> None:
    with pytest.raises(AttributeError):
        BTC.tick_size = Decimal(1)  # type: ignore[misc]


SYMBOLS = st.sampled_from([BTC, ETH, DENT, DOGE])
DECIMALS = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("100000"), places=9)


@settings(max_examples=300, deadline=None)
@given(t=SYMBOLS, qty=DECIMALS, mtype=st.sampled_from(list(OrderType)))
def test_quantity_rounds_down_to_a_step_multiple(
    t: OrderTemplate, qty: Decimal, mtype: OrderType
) -> None:
    step = t.market_step_size if mtype is OrderType.MARKET else t.step_size
    q = t.round_quantity(qty, mtype)
    assert q % step == 0
    assert q <= qty < q + step
    assert q.as_tuple().exponent == step.as_tuple().exponent


@settings(max_examples=300, deadline=None)
@given(t=SYMBOLS, qty=st.floats(min_value=1e-6, max_value=1e5))
def test_float_quantity_is_a_step_multiple_never_above_the_input_beyond_float_noise(
    t: OrderTemplate, qty: float
) -> None:
    q = t.round_quantity(qty)
    assert q % t.step_size == 0
    assert q <= Decimal(repr(qty)) + t.step_size * Decimal("1e-9")
    assert "E" not in str(q)


@settings(max_examples=300, deadline=None)
@given(t=SYMBOLS, price=DECIMALS, side=st.sampled_from(list(Side)))
def test_price_rounds_to_the_passive_tick(t: OrderTemplate, price: Decimal, side: Side) -> None:
    p = t.round_price(price, side)
    assert p % t.tick_size == 0
    assert abs(p - price) < t.tick_size
    assert p <= price if side is Side.BUY else p >= price


@settings(max_examples=300, deadline=None)
@given(
    t=SYMBOLS,
    qty=st.floats(min_value=1e-4, max_value=1e7),
    price=st.floats(min_value=1e-6, max_value=1e6),
    side=st.sampled_from(list(Side)),
    reduce_only=st.booleans(),
)
def test_accepted_orders_are_within_every_filter(
    t: OrderTemplate, qty: float, price: float, side: Side, reduce_only: bool
) -> None:
    try:
        order = t.prepare(
            side, qty, client_order_id=CID, order_type=OrderType.LIMIT, price=price,
            reduce_only=reduce_only,
        )  # fmt: skip
    except FilterError:
        return
    assert order.price is not None
    assert t.min_qty <= order.quantity <= t.max_qty
    assert t.min_price <= order.price <= t.max_price
    assert reduce_only or order.quantity * order.price >= t.min_notional
    assert f"&quantity={order.quantity}&price={order.price}&" in order.params

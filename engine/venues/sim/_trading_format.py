"""Binance USD-M JSON shapes for the loopback exchange's orders, trades and account.

REST bodies (``/fapi/v1/order``, ``userTrades``, ``/fapi/v2|v3/positionRisk``,
``account``, ``balance``) and user-data events (``ORDER_TRADE_UPDATE``,
``ACCOUNT_UPDATE``, ``ACCOUNT_CONFIG_UPDATE``, ``listenKeyExpired``), field for
field as Binance documents them. Numbers are strings, as Binance sends them;
times are exchange milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._trading import SimFill, SimOrder, SimPosition, SymbolRules

_ZERO = Decimal(0)


def fixed(value: Decimal, places: int) -> str:
    """``value`` with exactly ``places`` decimals."""
    q = Decimal(1).scaleb(-places)
    return format(value.quantize(q, rounding=ROUND_HALF_EVEN), "f")


def plain(value: Decimal) -> str:
    """``value`` without exponent or trailing zeros (``"0"`` for zero)."""
    if not value:
        return "0"
    text = format(value.normalize(), "f")
    return text


def order_json(order: SimOrder, rules: SymbolRules, *, query: bool = False) -> dict[str, Any]:
    """The order as ``POST/GET/DELETE /fapi/v1/order`` return it.

    Args:
        order: the order.
        rules: its symbol's filters (for the number formats).
        query: add ``time`` (query endpoints) instead of ``cumQty`` (new/cancel).
    """
    pp, qp = rules.price_precision, rules.quantity_precision
    out: dict[str, Any] = {
        "orderId": order.order_id,
        "symbol": order.symbol,
        "status": order.status,
        "clientOrderId": order.client_order_id,
        "price": fixed(order.price, pp) if order.price else "0",
        "avgPrice": fixed(order.avg_price, max(5, pp)),
        "origQty": fixed(order.quantity, qp),
        "executedQty": fixed(order.executed_qty, qp),
        "cumQuote": fixed(order.cum_quote, max(5, pp)),
        "timeInForce": order.time_in_force,
        "type": order.type,
        "reduceOnly": order.reduce_only,
        "closePosition": False,
        "side": order.side,
        "positionSide": "BOTH",
        "stopPrice": "0",
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": order.type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "NONE",
        "goodTillDate": 0,
        "updateTime": order.update_time,
    }
    if query:
        out["time"] = order.time
    else:
        out["cumQty"] = fixed(order.executed_qty, qp)
    return out


def trade_json(fill: SimFill, rules: SymbolRules) -> dict[str, Any]:
    """A ``GET /fapi/v1/userTrades`` row."""
    return {
        "buyer": fill.side == "BUY",
        "commission": plain(fill.commission),
        "commissionAsset": "USDT",
        "id": fill.trade_id,
        "maker": fill.maker,
        "orderId": fill.order_id,
        "price": fixed(fill.price, rules.price_precision),
        "qty": fixed(fill.qty, rules.quantity_precision),
        "quoteQty": plain(fill.quote_qty),
        "realizedPnl": plain(fill.realized_pnl),
        "side": fill.side,
        "positionSide": "BOTH",
        "symbol": fill.symbol,
        "time": fill.time,
    }


def order_trade_update(
    order: SimOrder,
    rules: SymbolRules,
    exec_type: str,
    now_ms: int,
    fill: SimFill | None,
    bids_notional: Decimal,
    asks_notional: Decimal,
) -> dict[str, Any]:
    """The ``ORDER_TRADE_UPDATE`` user-data event for one status change."""
    pp, qp = rules.price_precision, rules.quantity_precision
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": now_ms,
        "T": now_ms,
        "o": {
            "s": order.symbol,
            "c": order.client_order_id,
            "S": order.side,
            "o": order.type,
            "f": order.time_in_force,
            "q": fixed(order.quantity, qp),
            "p": fixed(order.price, pp) if order.price else "0",
            "ap": plain(order.avg_price),
            "sp": "0",
            "x": exec_type,
            "X": order.status,
            "i": order.order_id,
            "l": fixed(fill.qty, qp) if fill else "0",
            "z": fixed(order.executed_qty, qp),
            "L": fixed(fill.price, pp) if fill else "0",
            "N": "USDT",
            "n": plain(fill.commission) if fill else "0",
            "T": now_ms,
            "t": fill.trade_id if fill else 0,
            "b": plain(bids_notional),
            "a": plain(asks_notional),
            "m": fill.maker if fill else False,
            "R": order.reduce_only,
            "wt": "CONTRACT_PRICE",
            "ot": order.type,
            "ps": "BOTH",
            "cp": False,
            "rp": plain(fill.realized_pnl) if fill else "0",
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": "NONE",
            "pm": "NONE",
            "gtd": 0,
        },
    }


def account_update(
    reason: str,
    wallet: Decimal,
    cross_wallet: Decimal,
    positions: Iterable[tuple[SimPosition, Decimal]],
    now_ms: int,
) -> dict[str, Any]:
    """The ``ACCOUNT_UPDATE`` event: the USDT balance and the changed positions."""
    return {
        "e": "ACCOUNT_UPDATE",
        "E": now_ms,
        "T": now_ms,
        "a": {
            "m": reason,
            "B": [{"a": "USDT", "wb": plain(wallet), "cw": plain(cross_wallet), "bc": "0"}],
            "P": [
                {
                    "s": pos.symbol,
                    "pa": plain(pos.amount),
                    "ep": plain(pos.entry_price),
                    "bep": plain(pos.entry_price),
                    "cr": plain(pos.realized_pnl),
                    "up": plain(upnl),
                    "mt": "cross",
                    "iw": "0",
                    "ps": "BOTH",
                }
                for pos, upnl in positions
            ],
        },
    }


def config_update(symbol: str, leverage: int, now_ms: int) -> dict[str, Any]:
    """``ACCOUNT_CONFIG_UPDATE`` after a leverage change."""
    return {
        "e": "ACCOUNT_CONFIG_UPDATE",
        "E": now_ms,
        "T": now_ms,
        "ac": {"s": symbol, "l": leverage},
    }


def listen_key_expired(listen_key: str, now_ms: int) -> dict[str, Any]:
    """``listenKeyExpired`` (Binance now sends ``E`` as a string here)."""
    return {"e": "listenKeyExpired", "E": str(now_ms), "listenKey": listen_key}


def position_risk(
    pos: SimPosition,
    mark: Decimal,
    upnl: Decimal,
    margin: Decimal,
    open_margin: Decimal,
    notionals: tuple[Decimal, Decimal],
    *,
    version: int,
) -> dict[str, Any]:
    """A ``/fapi/v2/positionRisk`` (``version=2``) or ``/fapi/v3/positionRisk`` row."""
    common: dict[str, Any] = {
        "symbol": pos.symbol,
        "positionSide": "BOTH",
        "positionAmt": plain(pos.amount),
        "entryPrice": plain(pos.entry_price),
        "breakEvenPrice": plain(pos.entry_price),
        "markPrice": plain(mark),
        "unRealizedProfit": plain(upnl),
        "liquidationPrice": "0",
        "isolatedMargin": "0",
        "notional": plain(pos.amount * mark),
        "isolatedWallet": "0",
        "updateTime": pos.update_time,
    }
    if version == 2:
        common.update(
            {
                "marginType": "cross",
                "isAutoAddMargin": "false",
                "leverage": str(pos.leverage),
                "maxNotionalValue": "1000000000",
            }
        )
    else:
        common.update(
            {
                "marginAsset": "USDT",
                "initialMargin": plain(margin + open_margin),
                "maintMargin": "0",
                "positionInitialMargin": plain(margin),
                "openOrderInitialMargin": plain(open_margin),
                "adl": 0,
                "bidNotional": plain(notionals[0]),
                "askNotional": plain(notionals[1]),
            }
        )
    return common


def balance_row(wallet: Decimal, upnl: Decimal, available: Decimal, now_ms: int) -> dict[str, Any]:
    """The USDT row of ``/fapi/v2/balance`` and ``/fapi/v3/balance``."""
    return {
        "accountAlias": "SimTrireme",
        "asset": "USDT",
        "balance": plain(wallet),
        "crossWalletBalance": plain(wallet),
        "crossUnPnl": plain(upnl),
        "availableBalance": plain(available),
        "maxWithdrawAmount": plain(max(_ZERO, min(wallet, available))),
        "marginAvailable": True,
        "updateTime": now_ms,
    }

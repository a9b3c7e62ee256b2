"""Position sizing: fixed notional, volatility-scaled, or a capped Kelly fraction.

All sizes are notional in quote currency, and always capped by ``max_notional``
(the per-symbol risk limit); risk's pre-trade checks still apply on top.

- ``fixed``: ``order_notional``.
- ``volatility``: risk ``risk_per_trade`` of equity over a stop ``atr_stop_mult``
  ATRs away: ``notional = equity * risk_per_trade / (atr_stop_mult * atr / price)``.
- ``kelly``: from the last ``kelly_window`` closed trades' returns, win rate
  ``W`` and payoff ``R = mean win / mean loss``: ``f* = W - (1 - W) / R``, scaled by
  ``kelly_fraction`` and capped at ``kelly_cap``: ``notional = equity * f``.
  With fewer than ``kelly_min_trades`` trades it falls back to ``fixed``; a
  non-positive ``f*`` means no trade.

With ``scale_by_strength``, the size is multiplied by the signal strength
(0..1; the strategy's EMA gap over the ATR), floored at ``min_scale``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs


@attrs.frozen(kw_only=True)
class SizingInputs:
    """What a sizing decision sees."""

    price: float
    equity: float
    atr: float
    strength: float
    trade_returns: Sequence[float]


def kelly_fraction(trade_returns: Sequence[float]) -> float | None:
    """Full Kelly ``W - (1 - W) / R`` of past trade returns (None without wins and losses)."""
    wins = [r for r in trade_returns if r > 0]
    losses = [-r for r in trade_returns if r < 0]
    if not wins or not losses:
        return None
    w = len(wins) / (len(wins) + len(losses))
    payoff = (sum(wins) / len(wins)) / (sum(losses) / len(losses))
    return w - (1.0 - w) / payoff


def size_notional(
    inputs: SizingInputs,
    *,
    mode: str,
    order_notional: float,
    max_notional: float,
    risk_per_trade: float,
    atr_stop_mult: float,
    kelly_fraction_scale: float,
    kelly_cap: float,
    kelly_min_trades: int,
    scale_by_strength: bool,
    min_scale: float,
) -> tuple[float, str]:
    """The entry's notional and a short explanation (for the log and journal).

    Returns:
        ``(notional, basis)``; notional 0 means do not trade.
    """
    notional = order_notional
    basis = "fixed"
    if mode == "volatility":
        if inputs.atr > 0 and math.isfinite(inputs.atr):
            stop_frac = atr_stop_mult * inputs.atr / inputs.price
            notional = inputs.equity * risk_per_trade / stop_frac
            basis = f"volatility: stop {stop_frac * 1e4:.1f} bps"
        else:
            basis = "fixed: ATR not warm yet"
    elif mode == "kelly":
        if len(inputs.trade_returns) >= kelly_min_trades:
            full = kelly_fraction(inputs.trade_returns)
            if full is None:
                basis = "fixed: no wins or no losses yet"
            elif full <= 0:
                return 0.0, f"kelly: f* {full:.3f} <= 0, no edge"
            else:
                f = min(kelly_cap, full * kelly_fraction_scale)
                notional = inputs.equity * f
                basis = f"kelly: f* {full:.3f}, used {f:.3f}"
        else:
            basis = f"fixed: {len(inputs.trade_returns)} < {kelly_min_trades} trades"
    if scale_by_strength:
        scale = max(min_scale, min(1.0, inputs.strength))
        notional *= scale
        basis += f", strength x{scale:.2f}"
    if notional > max_notional:
        notional = max_notional
        basis += ", capped"
    return notional, basis

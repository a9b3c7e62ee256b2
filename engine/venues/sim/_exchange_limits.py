"""Request-weight and order-count limits of the loopback exchange, Binance style.

Every request spends its endpoint's weight in a sliding one-minute window; new
orders also count in the 10-second and one-minute order windows. Over a limit
the request is refused with HTTP 429 (``-1003`` for weight, ``-1015`` for orders)
and ``Retry-After`` (seconds until the window has room). A client that keeps
sending before that moment collects strikes; ``ban_after`` strikes get the IP
banned: HTTP 418 with ``Retry-After`` until the ban ends, bans doubling from
``ban_s`` (Binance: "IP bans are tracked and scale in duration for repeat
offenders, from 2 minutes to 3 days").

Times are ``trio.current_time()`` seconds, passed in; nothing here sleeps.
"""

from __future__ import annotations

import math
from collections import deque

import attrs

from ._exchange_errors import ExchangeApiError

_IP = "127.0.0.1"


@attrs.frozen(kw_only=True)
class LimitSettings:
    """Limits (Binance USD-M defaults) and the ban policy."""

    weight_per_minute: int = attrs.field(default=2400, validator=attrs.validators.ge(1))
    orders_per_10s: int = attrs.field(default=300, validator=attrs.validators.ge(1))
    orders_per_minute: int = attrs.field(default=1200, validator=attrs.validators.ge(1))
    ban_after: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    ban_s: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))


class ServerRateLimiter:
    """The exchange's side of the limits (one IP, one account).

    Args:
        settings: the limits.
    """

    def __init__(self, settings: LimitSettings) -> None:
        self.settings = settings
        self._weights: deque[tuple[float, int]] = deque()
        self._orders: deque[float] = deque()
        self._limited_until = 0.0
        self._strikes = 0
        self._banned_until = 0.0
        self._bans = 0
        self.rejected_429 = 0
        self.rejected_418 = 0

    def used_weight(self, now: float) -> int:
        """Weight spent in the last minute."""
        self._expire(now)
        return sum(w for _t, w in self._weights)

    def order_counts(self, now: float) -> tuple[int, int]:
        """Orders placed in the last 10 seconds and the last minute."""
        self._expire(now)
        return sum(1 for t in self._orders if t > now - 10), len(self._orders)

    def banned_for(self, now: float) -> float:
        """Seconds left of the current ban (0 when not banned)."""
        return max(0.0, self._banned_until - now)

    def admit(self, weight: int, orders: int, now: float, now_ms: int) -> None:
        """Spend ``weight`` and ``orders`` or refuse the request.

        Args:
            weight: the endpoint's IP weight.
            orders: 1 for a new order, else 0.
            now: trio time, seconds.
            now_ms: the exchange clock, for the "banned until" message.

        Raises:
            ExchangeApiError: 418 while banned (or on the strike that bans);
                429 over a limit.
        """
        self._expire(now)
        if now < self._banned_until:
            raise self._banned(now, now_ms)
        if now < self._limited_until:
            self._strikes += 1
            if self._strikes >= self.settings.ban_after:
                self.ban(self.settings.ban_s * 2**self._bans, now)
                self._bans += 1
                raise self._banned(now, now_ms)
            raise self._limited(-1003, self._weight_msg(), now)
        used = sum(w for _t, w in self._weights)
        if used + weight > self.settings.weight_per_minute:
            self._limited_until = self._free_at(weight, now)
            raise self._limited(-1003, self._weight_msg(), now)
        if orders:
            in_10s, in_1m = self.order_counts(now)
            if in_10s + orders > self.settings.orders_per_10s:
                oldest = next(t for t in self._orders if t > now - 10)
                self._limited_until = oldest + 10
                msg = f"Too many new orders; current limit is {self.settings.orders_per_10s} "
                raise self._limited(-1015, msg + "orders per TEN_SECONDS.", now)
            if in_1m + orders > self.settings.orders_per_minute:
                self._limited_until = self._orders[0] + 60
                msg = f"Too many new orders; current limit is {self.settings.orders_per_minute} "
                raise self._limited(-1015, msg + "orders per MINUTE.", now)
        self._strikes = 0
        if weight:
            self._weights.append((now, weight))
        for _ in range(orders):
            self._orders.append(now)

    def rate_limit(self, retry_after_s: float, now: float) -> ExchangeApiError:
        """A 429 as if the weight limit had been hit (fault injection)."""
        self._limited_until = max(self._limited_until, now + retry_after_s)
        return self._limited(-1003, self._weight_msg(), now)

    def ban(self, seconds: float, now: float) -> None:
        """Ban the IP for ``seconds`` from ``now``."""
        self._banned_until = max(self._banned_until, now + seconds)
        self._limited_until = 0.0
        self._strikes = 0

    def banned_error(self, now: float, now_ms: int) -> ExchangeApiError:
        """The 418 reply while banned."""
        return self._banned(now, now_ms)

    # -- internals --------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        while self._weights and self._weights[0][0] <= now - 60:
            self._weights.popleft()
        while self._orders and self._orders[0] <= now - 60:
            self._orders.popleft()

    def _free_at(self, weight: int, now: float) -> float:
        # The moment enough old weight leaves the window for this request to fit.
        excess = sum(w for _t, w in self._weights) + weight - self.settings.weight_per_minute
        for t, w in self._weights:
            excess -= w
            if excess <= 0:
                return t + 60
        return now + 60

    def _weight_msg(self) -> str:
        return (
            f"Too many requests; current limit of IP({_IP}) is "
            f"{self.settings.weight_per_minute} requests per minute. Please use the websocket "
            "for live updates to avoid polling the API."
        )

    def _limited(self, code: int, msg: str, now: float) -> ExchangeApiError:
        self.rejected_429 += 1
        retry = max(1, math.ceil(self._limited_until - now))
        return ExchangeApiError(429, code, msg, retry_after_s=retry)

    def _banned(self, now: float, now_ms: int) -> ExchangeApiError:
        self.rejected_418 += 1
        left = self._banned_until - now
        until_ms = now_ms + math.ceil(left * 1000)
        msg = (
            f"Way too many requests; IP({_IP}) banned until {until_ms}. "
            "Please use the websocket for live updates to avoid bans."
        )
        return ExchangeApiError(418, -1003, msg, retry_after_s=max(1, math.ceil(left)))

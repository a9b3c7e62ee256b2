"""A weight- and priority-aware rate limiter for the Binance USD-M REST API.

Binance counts request weight per IP and new orders per account in fixed
windows (``X-MBX-USED-WEIGHT-1M``, ``X-MBX-ORDER-COUNT-10S``, ``-1M``) and
answers 429 when one is exceeded, then 418 (an IP ban of 2 minutes to 3 days)
to clients that keep going. Each limit here is a :class:`_Meter` with two parts:

* a fixed-window counter, aligned to the server's clock and raised to the
  ``X-MBX-*`` header values seen in responses: the hard guard, it never lets a
  window exceed the limit (minus a reserve, below);
* a token bucket (refill ``limit / interval``, small burst) that spreads load
  over the window instead of spending it all in the first second.

One limiter serves every REST request of the process: orders and their
queries (the venue) and market data (the live feed's depth snapshots and trade
backfill), because Binance counts them all against the same IP.

Priorities (:class:`Priority`): waiting requests are served strictly in
priority order (FIFO within one). ``CLOSE`` (reduce-only orders) and
``CANCEL`` requests may also use the last ``reserve`` fraction of every
window and skip the smoothing bucket, so a flood of queries can never hold a
position open for the rest of a minute. ``MARKET_DATA`` comes last and yields
budget as well: it may not use the last ``market_data_reserve`` fraction of a
weight window either, so snapshots and backfill never spend what trading needs.

After a 429 nothing is sent until ``Retry-After`` (or an exponential backoff)
has passed; during a 418 ban :meth:`RateLimiter.acquire` raises
:class:`IpBannedError` at once, since nothing can succeed and the engine must
know. Whoever got the 429 or 418 (an order or a snapshot), every other request
sees it. Windows run on an injected clock (seconds on the server's timeline; by
default Trio's clock); a 429's block and a ban are lengths of time, kept on
Trio's monotonic clock, so a server-time re-sync that moves the first clock
cannot stretch or cut them. Waiting is Trio sleeps, so tests under
``autojump_clock`` finish at once.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import trio

from ._errors import IpBannedError

_EPS = 1e-6
_INTERVAL_LETTER = {
    "SECOND": ("S", 1),
    "MINUTE": ("M", 60),
    "HOUR": ("H", 3600),
    "DAY": ("D", 86400),
}


class Priority(enum.IntEnum):
    """Who goes first when requests wait; lower values first."""

    CLOSE = 0  # reduce-only / closing orders
    CANCEL = 1
    NEW_ORDER = 2
    QUERY = 3
    MARKET_DATA = 4  # depth snapshots, trade backfill: never ahead of trading


# Plain ints for the per-request comparisons (an enum member lookup costs a call).
_CANCEL = int(Priority.CANCEL)
_MARKET_DATA = int(Priority.MARKET_DATA)


@attrs.frozen(kw_only=True)
class RateLimit:
    """One Binance rate limit.

    Attributes:
        kind: ``"REQUEST_WEIGHT"`` (counted in request weight) or ``"ORDERS"``
            (counted in new orders).
        interval_s: the window length in seconds.
        limit: the most units per window.
        header: the response header that reports the window's use.
    """

    kind: str = attrs.field(validator=attrs.validators.in_({"REQUEST_WEIGHT", "ORDERS"}))
    interval_s: float = attrs.field(validator=attrs.validators.gt(0))
    limit: int = attrs.field(validator=attrs.validators.gt(0))
    header: str


def _header_name(kind: str, num: int, letter: str) -> str:
    stem = "X-MBX-USED-WEIGHT" if kind == "REQUEST_WEIGHT" else "X-MBX-ORDER-COUNT"
    return f"{stem}-{num}{letter}"


def rate_limits_from_exchange_info(info: Mapping[str, Any]) -> tuple[RateLimit, ...]:
    """Read the ``rateLimits`` of a parsed ``exchangeInfo`` (RAW_REQUESTS is skipped)."""
    out = []
    for item in info.get("rateLimits", ()):
        kind = item["rateLimitType"]
        if kind not in ("REQUEST_WEIGHT", "ORDERS"):
            continue
        letter, seconds = _INTERVAL_LETTER[item["interval"]]
        num = int(item["intervalNum"])
        out.append(
            RateLimit(
                kind=kind,
                interval_s=float(num * seconds),
                limit=int(item["limit"]),
                header=_header_name(kind, num, letter),
            )
        )
    return tuple(out)


DEFAULT_LIMITS: tuple[RateLimit, ...] = (
    RateLimit(kind="REQUEST_WEIGHT", interval_s=60.0, limit=2400, header="X-MBX-USED-WEIGHT-1M"),
    RateLimit(kind="ORDERS", interval_s=10.0, limit=300, header="X-MBX-ORDER-COUNT-10S"),
    RateLimit(kind="ORDERS", interval_s=60.0, limit=1200, header="X-MBX-ORDER-COUNT-1M"),
)
"""USD-M futures limits as published in ``exchangeInfo`` (prefer the live values)."""


class _Meter:
    """One limit: a fixed-window counter (the guard) plus a token bucket (the pacing)."""

    __slots__ = (
        "capacity",
        "header_keys",
        "interval",
        "limit",
        "market_data_limit",
        "rate",
        "rate_limit",
        "stamp",
        "tokens",
        "used",
        "window",
        "working_limit",
    )

    def __init__(
        self,
        rate_limit: RateLimit,
        *,
        reserve: float,
        market_data_reserve: float,
        burst: float,
        now: float,
    ) -> None:
        self.rate_limit = rate_limit
        self.limit = rate_limit.limit
        self.working_limit = max(1, math.floor(rate_limit.limit * (1.0 - reserve)))
        self.market_data_limit = max(
            1, math.floor(rate_limit.limit * (1.0 - reserve - market_data_reserve))
        )
        self.interval = rate_limit.interval_s
        self.rate = rate_limit.limit / rate_limit.interval_s
        self.capacity = max(1.0, rate_limit.limit * burst)
        self.tokens = self.capacity
        self.stamp = now
        self.window = math.floor(now / self.interval)
        self.used = 0
        h = rate_limit.header
        self.header_keys = (h, h.lower())

    def roll(self, now: float) -> None:
        window = math.floor(now / self.interval)
        if window != self.window:
            self.window = window
            self.used = 0
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        # Also when the clock stepped back (a server-time re-sync): refill from here on.
        self.stamp = now

    def wait_time(self, now: float, amount: int, priority: int) -> float:
        if amount <= 0:
            return 0.0
        self.roll(now)
        privileged = priority <= _CANCEL
        if privileged:
            cap = self.limit
        elif priority >= _MARKET_DATA:
            cap = self.market_data_limit
        else:
            cap = self.working_limit
        # A request bigger than the whole allowance may go alone in a fresh window.
        if self.used + amount > cap and self.used > 0:
            return (self.window + 1) * self.interval - now + _EPS
        if privileged:
            return 0.0
        need = min(float(amount), self.capacity)
        if self.tokens + _EPS < need:
            return (need - self.tokens) / self.rate + _EPS
        return 0.0

    def take(self, amount: int) -> None:
        self.used += amount
        self.tokens -= amount  # may go negative: privileged requests borrow

    def sync(self, headers: Mapping[str, str]) -> None:
        for key in self.header_keys:
            raw = headers.get(key)
            if raw is not None:
                try:
                    reported = int(raw)
                except ValueError:
                    return
                # The server's count includes other clients of this IP/account;
                # ours includes requests still in flight: keep the larger.
                self.used = max(self.used, reported)
                return


@attrs.define(order=True)
class _Ticket:
    priority: int
    seq: int
    weight: int = attrs.field(order=False)
    orders: int = attrs.field(order=False)


class RateLimiter:
    """Paces requests under Binance's limits; one per IP (weight) and account (orders).

    Make one per process and hand it to every REST client of that IP (the
    venue's and the live feed's), so that they share one budget and one 429/418
    state.

    Args:
        limits: the limits to honour (:func:`rate_limits_from_exchange_info`);
            :meth:`set_limits` replaces them later without losing the state.
        clock: seconds on the server's timeline (``ServerClock.now``), so windows
            line up with Binance's; Trio's clock by default.
        monotonic: the clock of :attr:`blocked_until` and :attr:`banned_until`
            (Trio's by default; it never steps).
        reserve: fraction of each window kept for ``CLOSE`` and ``CANCEL``.
        market_data_reserve: a further fraction of each weight window that
            ``MARKET_DATA`` requests may not use (kept for trading).
        burst: token-bucket size as a fraction of the limit.
        backoff_s: first wait after a 429 without ``Retry-After``; doubles per
            consecutive 429, up to ``max_backoff_s``.
        max_backoff_s: the cap on that backoff.
        default_ban_s: ban length assumed for a 418 that says nothing.
    """

    def __init__(
        self,
        limits: Iterable[RateLimit] = DEFAULT_LIMITS,
        *,
        clock: Callable[[], float] = trio.current_time,
        monotonic: Callable[[], float] = trio.current_time,
        reserve: float = 0.1,
        market_data_reserve: float = 0.25,
        burst: float = 0.05,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        default_ban_s: float = 120.0,
    ) -> None:
        if not 0.0 <= reserve + market_data_reserve < 1.0:
            raise ValueError("reserve + market_data_reserve must be in [0, 1)")
        self._clock = clock
        self._monotonic = monotonic
        self._reserve = reserve
        self._market_data_reserve = market_data_reserve
        self._burst = burst
        self._meters: list[_Meter] = []
        self._weight: list[_Meter] = []
        self._orders: list[_Meter] = []
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._default_ban_s = default_ban_s
        self._queue: list[_Ticket] = []
        self._seq = itertools.count()
        self._changed = trio.Event()
        self._consecutive_429 = 0
        self.blocked_until = -math.inf
        """Monotonic time before which nothing is sent (after a 429, or a ban)."""
        self.banned_until = -math.inf
        """Monotonic time at which the current 418 ban ends."""
        self.set_limits(limits)

    def set_limits(self, limits: Iterable[RateLimit]) -> None:
        """Honour ``limits`` from now on (the live values from ``exchangeInfo``).

        What the current windows used (by header name), the 429 block and a ban
        carry over: replacing the limits must not forget what the exchange has
        already counted.
        """
        now = self._clock()
        used = self.used() if self._meters else {}
        meters = []
        for rate_limit in limits:
            meter = _Meter(
                rate_limit,
                reserve=self._reserve,
                market_data_reserve=self._market_data_reserve,
                burst=self._burst,
                now=now,
            )
            meter.used = used.get(rate_limit.header, 0)
            meters.append(meter)
        self._meters = meters
        self._weight = [m for m in meters if m.rate_limit.kind == "REQUEST_WEIGHT"]
        self._orders = [m for m in meters if m.rate_limit.kind == "ORDERS"]
        self._notify()

    def blocked_for(self) -> float:
        """Seconds until requests may go again after a 429 or during a ban (0: now)."""
        return max(0.0, self.blocked_until - self._monotonic())

    def banned_for(self) -> float:
        """Seconds left of the current 418 ban (0: not banned)."""
        return max(0.0, self.banned_until - self._monotonic())

    def used(self) -> dict[str, int]:
        """Units used in each current window, keyed by header name (for metrics)."""
        now = self._clock()
        for meter in self._meters:
            meter.roll(now)
        return {m.rate_limit.header: m.used for m in self._meters}

    @property
    def waiting(self) -> int:
        """Requests waiting in :meth:`acquire` now."""
        return len(self._queue)

    async def acquire(
        self, weight: int = 1, *, orders: int = 0, priority: Priority = Priority.QUERY
    ) -> None:
        """Wait until a request may be sent, then count it.

        Args:
            weight: the request's IP weight.
            orders: how many new orders it places (1 for ``POST /fapi/v1/order``).
            priority: its :class:`Priority`.

        Raises:
            IpBannedError: the IP is banned (418) now or becomes banned while
                waiting; nothing is counted.

        On cancellation nothing is counted and the queue moves on.
        """
        await trio.lowlevel.checkpoint()
        self._check_ban()
        ticket = _Ticket(int(priority), next(self._seq), weight, orders)
        heapq.heappush(self._queue, ticket)
        granted = False
        try:
            while True:
                self._check_ban()
                delay = math.inf
                if self._queue[0] is ticket:
                    delay = self._delay(ticket)
                    if delay <= 0.0:
                        heapq.heappop(self._queue)
                        for meter in self._weight:
                            meter.take(weight)
                        for meter in self._orders:
                            meter.take(orders)
                        granted = True
                        return
                changed = self._changed
                with trio.move_on_after(delay):
                    await changed.wait()
        finally:
            if not granted:
                self._queue.remove(ticket)
                heapq.heapify(self._queue)
            self._notify()

    def try_acquire(
        self, weight: int = 1, *, orders: int = 0, priority: Priority = Priority.QUERY
    ) -> bool:
        """Count a request now if :meth:`acquire` would let it through without waiting.

        Synchronous (no checkpoint): the venue writes an order inline with it.
        False, with nothing counted, while anyone is queued, a 429 or 418 holds
        requests, or a window has no room; the caller then takes :meth:`acquire`.
        """
        # :meth:`_delay`'s checks without its ticket: this runs between a tick and
        # its order's write.
        if self._queue or self.blocked_until > self._monotonic():
            return False
        now = self._clock()
        rank = int(priority)
        delay = 0.0
        for meter in self._weight:
            delay = max(delay, meter.wait_time(now, weight, rank))
        for meter in self._orders:
            delay = max(delay, meter.wait_time(now, orders, rank))
        if delay > 0.0:
            return False
        for meter in self._weight:
            meter.take(weight)
        for meter in self._orders:
            meter.take(orders)
        return True

    def _check_ban(self) -> None:
        left = self.banned_for()
        if left > 0.0:
            raise IpBannedError(
                f"IP banned for another {left:.0f} s; nothing sent", retry_after=left
            )

    def _delay(self, ticket: _Ticket) -> float:
        blocked = self.blocked_for()
        if blocked > 0.0:
            return blocked
        now = self._clock()
        delay = 0.0
        for meter in self._weight:
            delay = max(delay, meter.wait_time(now, ticket.weight, ticket.priority))
        for meter in self._orders:
            delay = max(delay, meter.wait_time(now, ticket.orders, ticket.priority))
        return delay

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def on_response(self, status: int, headers: Mapping[str, str]) -> None:
        """Bring the counters in step with a response's ``X-MBX-*`` headers.

        Args:
            status: the HTTP status (a success resets the 429 backoff).
            headers: the response headers (``httpx.Headers`` or a plain mapping).
        """
        now = self._clock()
        for meter in self._meters:
            meter.roll(now)
            meter.sync(headers)
        if status < 400:
            self._consecutive_429 = 0
        self._notify()

    def on_rate_limited(self, retry_after: float | None) -> float:
        """Stop sending after a 429.

        Args:
            retry_after: the ``Retry-After`` seconds, or ``None`` for the
                exponential backoff.

        Returns:
            The seconds nothing will be sent.
        """
        if retry_after is None:
            retry_after = min(self._max_backoff_s, self._backoff_s * 2**self._consecutive_429)
        self._consecutive_429 += 1
        self.blocked_until = max(self.blocked_until, self._monotonic() + retry_after)
        self._notify()
        return retry_after

    def on_banned(self, seconds: float | None) -> float:
        """Stop sending during a 418 ban; waiting requests raise :class:`IpBannedError`.

        Args:
            seconds: the ban's remaining length, or ``None`` for ``default_ban_s``.

        Returns:
            The ban length used.
        """
        if seconds is None or seconds <= 0:
            seconds = self._default_ban_s
        until = self._monotonic() + seconds
        self.banned_until = max(self.banned_until, until)
        self.blocked_until = max(self.blocked_until, until)
        self._notify()
        return seconds

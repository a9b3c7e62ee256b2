"""The rate limiter against a fake server that enforces Binance's fixed windows."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from engine.venues.binance import IpBannedError, Priority, RateLimit, RateLimiter

WEIGHT_10S = RateLimit(
    kind="REQUEST_WEIGHT", interval_s=10.0, limit=100, header="X-MBX-USED-WEIGHT-10S"
)
ORDERS_10S = RateLimit(kind="ORDERS", interval_s=10.0, limit=20, header="X-MBX-ORDER-COUNT-10S")


class FakeServer:
    """Counts weight per fixed window of Trio time and answers 429 past the limit."""

    def __init__(self, limit: int, interval: float) -> None:
        self.limit, self.interval = limit, interval
        self.used: dict[int, int] = {}
        self.statuses: list[int] = []

    def handle(self, weight: int) -> int:
        window = math.floor(trio.current_time() / self.interval)
        self.used[window] = self.used.get(window, 0) + weight
        status = 429 if self.used[window] > self.limit else 200
        self.statuses.append(status)
        return status


async def test_sustained_double_load_is_smoothed_to_the_limit_without_429(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter([WEIGHT_10S])
    server = FakeServer(limit=100, interval=10.0)
    sent_at: list[float] = []

    async def producer() -> None:
        # Each producer offers 5 requests/s; four of them offer 200 per 10 s: twice the limit.
        while True:
            await limiter.acquire(1, priority=Priority.NEW_ORDER)
            sent_at.append(trio.current_time())
            server.handle(1)
            await trio.sleep(0.2)

    with trio.move_on_after(60.0):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(producer)
    assert 429 not in server.statuses
    per_window = [server.used.get(w, 0) for w in range(6)]
    assert all(85 <= n <= 100 for n in per_window), per_window
    # Smoothed: no second of any window gets more than a burst above the average rate.
    per_second = [sum(1 for t in sent_at if s <= t < s + 1) for s in range(60)]
    assert max(per_second) <= 10 + 5, per_second


async def test_order_counts_are_limited_separately_from_weight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter([WEIGHT_10S, ORDERS_10S], reserve=0.0)
    start = trio.current_time()
    for _ in range(20):
        await limiter.acquire(0, orders=1, priority=Priority.NEW_ORDER)
    assert trio.current_time() - start < 10.0
    await limiter.acquire(0, orders=1, priority=Priority.NEW_ORDER)
    assert trio.current_time() >= 10.0  # the 21st order waits for the next window
    assert limiter.used()["X-MBX-ORDER-COUNT-10S"] == 1
    assert limiter.used()["X-MBX-USED-WEIGHT-10S"] == 0


async def test_waiters_are_served_in_priority_order(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter([WEIGHT_10S], reserve=0.0, burst=1.0)
    await limiter.acquire(100, priority=Priority.QUERY)  # the window is spent
    served: list[Priority] = []

    async def request(priority: Priority) -> None:
        await limiter.acquire(1, priority=priority)
        served.append(priority)

    async with trio.open_nursery() as nursery:
        for priority in (Priority.QUERY, Priority.NEW_ORDER, Priority.CANCEL, Priority.CLOSE):
            nursery.start_soon(request, priority)
            await trio.testing.wait_all_tasks_blocked()
        assert limiter.waiting == 4
    assert served == [Priority.CLOSE, Priority.CANCEL, Priority.NEW_ORDER, Priority.QUERY]
    assert trio.current_time() >= 10.0


async def test_the_reserve_lets_closes_and_cancels_through_when_queries_are_blocked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter([WEIGHT_10S], reserve=0.1, burst=1.0)
    await limiter.acquire(90, priority=Priority.QUERY)  # everything but the reserve
    with trio.move_on_after(1.0) as scope:
        await limiter.acquire(1, priority=Priority.QUERY)
    assert scope.cancelled_caught  # queries must wait for the next window
    assert limiter.waiting == 0  # the cancelled waiter left the queue
    start = trio.current_time()
    await limiter.acquire(5, priority=Priority.CLOSE)
    await limiter.acquire(5, priority=Priority.CANCEL)
    assert trio.current_time() == start
    with trio.move_on_after(1.0) as scope:
        await limiter.acquire(1, priority=Priority.CLOSE)
    assert scope.cancelled_caught  # never past the real limit


async def test_headers_bring_the_counters_in_step(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter([WEIGHT_10S], reserve=0.0, burst=1.0)
    limiter.on_response(200, {"x-mbx-used-weight-10s": "99"})  # another client used it
    assert limiter.used()["X-MBX-USED-WEIGHT-10S"] == 99
    await limiter.acquire(1)
    assert trio.current_time() == 0.0
    await limiter.acquire(1)
    assert trio.current_time() == pytest.approx(10.0, abs=1e-3)
    limiter.on_response(200, {"X-MBX-USED-WEIGHT-10S": "0"})  # lower than ours: ours stays
    assert limiter.used()["X-MBX-USED-WEIGHT-10S"] == 1


async def test_429_blocks_for_retry_after_then_backs_off_exponentially(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter([WEIGHT_10S], backoff_s=1.0)
    assert limiter.on_rate_limited(7.0) == 7.0
    await limiter.acquire(1, priority=Priority.CLOSE)  # even a close waits after a 429
    assert trio.current_time() == pytest.approx(7.0, abs=1e-3)
    assert limiter.on_rate_limited(None) == 2.0  # second 429 in a row, no Retry-After
    assert limiter.on_rate_limited(None) == 4.0
    limiter.on_response(200, {})
    assert limiter.on_rate_limited(None) == 1.0  # a success resets the backoff


async def test_418_ban_refuses_at_once_until_it_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter([WEIGHT_10S])
    waiter_error: list[BaseException] = []

    async def waiter() -> None:
        try:
            await limiter.acquire(200)  # larger than a window: waits for a fresh one
        except IpBannedError as exc:
            waiter_error.append(exc)

    await limiter.acquire(50)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        limiter.on_banned(120.0)
    assert isinstance(waiter_error[0], IpBannedError)  # a queued request learns of the ban
    with pytest.raises(IpBannedError) as info:
        await limiter.acquire(1, priority=Priority.CLOSE)
    assert info.value.retry_after == pytest.approx(120.0)
    await trio.sleep(120.0)
    await limiter.acquire(1)
    assert limiter.waiting == 0


async def test_market_data_comes_last_and_leaves_budget_for_trading(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Limit 100: 10 kept for closes and cancels, 25 more kept from market data.
    limiter = RateLimiter([WEIGHT_10S], reserve=0.1, market_data_reserve=0.25, burst=1.0)
    await limiter.acquire(60, priority=Priority.MARKET_DATA)
    with trio.move_on_after(1.0) as scope:
        await limiter.acquire(10, priority=Priority.MARKET_DATA)  # 70 > 65
    assert scope.cancelled_caught  # market data waits for the next window...
    start = trio.current_time()
    await limiter.acquire(25, priority=Priority.QUERY)  # ...where an order query still fits
    await limiter.acquire(5, priority=Priority.NEW_ORDER)
    assert trio.current_time() == start
    assert limiter.used()["X-MBX-USED-WEIGHT-10S"] == 90

    limiter.on_rate_limited(5.0)  # everyone waits; who goes first when it ends?
    served: list[Priority] = []

    async def request(priority: Priority) -> None:
        await limiter.acquire(1, priority=priority)
        served.append(priority)

    async with trio.open_nursery() as nursery:
        for priority in (Priority.MARKET_DATA, Priority.QUERY, Priority.NEW_ORDER):
            nursery.start_soon(request, priority)
            await trio.testing.wait_all_tasks_blocked()
    assert served == [Priority.NEW_ORDER, Priority.QUERY, Priority.MARKET_DATA]


async def test_new_limits_keep_what_was_counted_and_any_block_or_ban(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter([WEIGHT_10S])
    await limiter.acquire(40, priority=Priority.MARKET_DATA)
    limiter.on_rate_limited(30.0)
    limiter.on_banned(60.0)
    wider = RateLimit(
        kind="REQUEST_WEIGHT", interval_s=10.0, limit=1000, header="X-MBX-USED-WEIGHT-10S"
    )
    limiter.set_limits([wider, ORDERS_10S])
    assert limiter.used() == {"X-MBX-USED-WEIGHT-10S": 40, "X-MBX-ORDER-COUNT-10S": 0}
    assert limiter.banned_for() == pytest.approx(60.0)
    assert limiter.blocked_for() == pytest.approx(60.0)  # a ban blocks as well
    with pytest.raises(IpBannedError):
        await limiter.acquire(1, priority=Priority.CLOSE)
    await trio.sleep(60.0)
    await limiter.acquire(500, priority=Priority.QUERY)  # the new limit applies
    assert trio.current_time() == pytest.approx(60.0)

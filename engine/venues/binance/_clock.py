"""The offset between Binance server time and the local clock.

Signed requests carry ``timestamp`` (server epoch ms, as best we know it);
Binance refuses one outside ``recvWindow`` with -1021. The offset is measured
from ``GET /fapi/v1/time`` as ``server - midpoint(send, receive)`` and kept on
Trio's monotonic clock, so a wall-clock step on this machine does not move it
and tests under ``autojump_clock`` are exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import trio

from ._errors import BinanceError

FetchServerTime = Callable[[], Awaitable[int]]


class ServerClock:
    """Server-time estimate: ``server_epoch_s = monotonic() + offset``.

    Until the first :meth:`sync` the estimate is the local wall clock.

    Args:
        monotonic: the local monotonic clock in seconds (Trio's by default).
        wall: the local wall clock in epoch seconds, for the first estimate.
    """

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = trio.current_time,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._offset: float | None = None
        self._lock = trio.Lock()
        self.generation = 0
        """Counts syncs; a request remembers it to avoid re-syncing twice for one skew."""
        self.last_sync: float = -math.inf
        """Monotonic time of the last successful sync."""
        self.rtt_s: float = math.nan
        """Round trip of the sample that set the offset."""

    @property
    def offset_s(self) -> float:
        """``server epoch seconds - monotonic seconds``."""
        if self._offset is None:
            self._offset = self._wall() - self._monotonic()
        return self._offset

    def now(self) -> float:
        """Server time estimate in epoch seconds."""
        return self._monotonic() + self.offset_s

    def now_ms(self) -> int:
        """Server time estimate in epoch milliseconds, as sent in ``timestamp``."""
        return int((self._monotonic() + self.offset_s) * 1000)

    def is_stale(self, max_age_s: float) -> bool:
        """True when no sync succeeded in the last ``max_age_s`` seconds."""
        return self._monotonic() - self.last_sync > max_age_s

    async def sync(self, fetch: FetchServerTime, *, samples: int = 3) -> float:
        """Measure the offset; the sample with the shortest round trip wins.

        Args:
            fetch: returns the server time in epoch ms (``GET /fapi/v1/time``).
            samples: how many round trips to make.

        Returns:
            The new offset in seconds.

        Raises:
            Whatever ``fetch`` raises; the old offset is kept. On cancellation
            the old offset is kept as well.
        """
        async with self._lock:
            return await self._sync_locked(fetch, samples)

    async def _sync_locked(self, fetch: FetchServerTime, samples: int) -> float:
        best_rtt = math.inf
        best_offset = self.offset_s
        for _ in range(max(1, samples)):
            sent = self._monotonic()
            server_ms = await fetch()
            received = self._monotonic()
            rtt = received - sent
            if rtt < best_rtt:
                best_rtt = rtt
                best_offset = server_ms / 1000 - (sent + received) / 2
        self._offset = best_offset
        self.rtt_s = best_rtt
        self.last_sync = self._monotonic()
        self.generation += 1
        return best_offset

    async def resync_after_skew(self, fetch: FetchServerTime, seen_generation: int) -> None:
        """Re-sync after a -1021, once for all the requests that saw the same skew.

        Args:
            fetch: as for :meth:`sync`.
            seen_generation: :attr:`generation` when the failed request was signed;
                if a sync has happened since, nothing is fetched.
        """
        async with self._lock:
            if self.generation != seen_generation:
                return
            await self._sync_locked(fetch, samples=1)

    async def run(
        self,
        fetch: FetchServerTime,
        *,
        interval_s: float = 300.0,
        retry_s: float = 5.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Sync now, then every ``interval_s`` (every ``retry_s`` after a failure).

        Reports started after the first successful sync. Runs until cancelled;
        errors from ``fetch`` before the first sync propagate.
        """
        await self.sync(fetch)
        task_status.started()
        while True:
            await trio.sleep(interval_s)
            while True:
                try:
                    await self.sync(fetch)
                    break
                except BinanceError:
                    await trio.sleep(retry_s)

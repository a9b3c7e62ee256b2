"""The recorder's run loop: the live feed with a capture writer and no trading."""

from __future__ import annotations

import httpx
import trio
from structlog.typing import FilteringBoundLogger

from .._config import Config
from .._signals import wait_for_stop
from ..messages import MarketBatch, MarketStep
from ._live import LiveFeed, market_data_client
from ._recorder import CaptureWriter


async def record(
    config: Config, writer: CaptureWriter, log: FilteringBoundLogger, duration: float = 0.0
) -> int:
    """Record ``data.symbols`` from ``[feeds]`` until Ctrl-C or ``duration`` seconds.

    Returns:
        The number of messages written.
    """
    f = config.feeds
    symbols = list(config.data.symbols)
    stop = trio.Event()
    async with httpx.AsyncClient(base_url=f.rest_url, timeout=10.0) as http:
        market = {s: trio.open_memory_channel[MarketBatch](16) for s in symbols}
        step_tx, step_rx = trio.open_memory_channel[MarketStep](16)
        feed = LiveFeed(
            settings=f,
            symbols=symbols,
            step_ns=config.replay.step_ms * 1_000_000,
            symbol_channels={s: tx for s, (tx, _rx) in market.items()},
            execution_channel=step_tx,
            # No order venue here: a rate limiter of its own for snapshots and backfill.
            rest=market_data_client(http, f.rest_url),
            log=log.bind(actor="recorder"),
            stop=stop,
            seed=config.engine.seed,
            record=writer.write,
        )

        async def drain(channel: trio.MemoryReceiveChannel[object]) -> None:
            async for _ in channel:
                pass

        async def stopper() -> None:
            await wait_for_stop(duration)
            stop.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, step_rx)
            for _tx, rx in market.values():
                nursery.start_soon(drain, rx)
            nursery.start_soon(stopper)
            await feed.run()
            nursery.cancel_scope.cancel()
    log.info("recording finished", lines=writer.lines, files=[str(p) for p in writer.files])
    return writer.lines

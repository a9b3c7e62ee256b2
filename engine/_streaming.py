"""Paper and live modes: the market streams in through the live feed, the actor
shells run the cores (wired by :mod:`engine._supervisor`); paper fills on the simulated
venue, live on Binance (or the loopback exchange) after reconciling with the whole live
history of ``journal.dir``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from structlog.typing import FilteringBoundLogger

from ._config import Config
from ._control import ControlState
from ._errors import ConfigError
from ._report import RunReport
from ._supervisor import _run_pipeline, needs_book
from .actors import InlineStep
from .actors._inline import deferring
from .feeds import untradeable
from .feeds._bookcols import BOOK_LEVELS
from .journal import journal_files
from .messages import ControlCommand, MarketBatch, MarketStep
from .strategy import resolve_strategy

if TYPE_CHECKING:
    # Imported where used: a replay never loads the live feed, the Binance venue or
    # httpx (tests/test_startup.py checks it).
    import httpx

    from .feeds._live import LiveFeed
    from .venues.binance import BinanceVenue, RateLimiter, ServerClock


async def run_paper(
    config: Config,
    *,
    log: FilteringBoundLogger,
    stop: trio.Event,
    http: httpx.AsyncClient | None = None,
    journal_path: Path | None = None,
    control: trio.MemoryReceiveChannel[ControlCommand] | None = None,
    control_state: ControlState | None = None,
) -> RunReport:
    """Trade live (or loopback) market data against the simulated venue.

    Args:
        config: the engine configuration (``data.symbols`` and ``[feeds]``).
        log: the JSON logger.
        stop: set it to end the run: the feed sends a final step and the
            pipeline drains.
        http: the REST client (default: a pooled client on ``feeds.rest_url``).
        journal_path: where to write the journal.
        control: operator commands for the risk actor.
        control_state: filled in with the risk actor, for ``status`` requests.

    Raises:
        ConfigError: no symbols configured.
        ActorFailedError: an actor failed; trading stopped.
    """
    return await _run_streaming(
        config,
        mode="paper",
        venue=None,
        log=log,
        stop=stop,
        http=http,
        journal_path=journal_path,
        control=control,
        control_state=control_state,
    )


async def run_live(
    config: Config,
    *,
    log: FilteringBoundLogger,
    stop: trio.Event,
    http: httpx.AsyncClient | None = None,
    journal_path: Path | None = None,
    control: trio.MemoryReceiveChannel[ControlCommand] | None = None,
    control_state: ControlState | None = None,
) -> RunReport:
    """Trade live: market data from ``[feeds]``, real orders on the Binance venue.

    Before any actor starts, the venue syncs the server clock, builds order templates
    from ``exchangeInfo``, opens the user-data stream and reconciles the exchange with
    the whole live history in ``journal.dir`` (every live journal, in start order;
    positions found there go to the position ledger and are taken over by the symbol
    actors; unknown open orders are cancelled or adopted per ``venue.reconcile``). If it
    cannot reconcile, nothing trades, and nothing is journaled that would let the next
    start skip the same check.

    Args: as :func:`run_paper`.

    Raises:
        ConfigError: no symbols, a missing credential variable, or a simulated-venue
            drill in ``[faults]``.
        ReconciliationError: the journal and the exchange disagree unexplainably.
        ActorFailedError: an actor failed; trading stopped (open orders are
            cancelled on the way out).
    """
    from .venues.binance import (
        BinanceVenue,
        MissingCredentialsError,
        RateLimiter,
        ServerClock,
        credentials_from_env,
    )

    v = config.venue
    for i, fault in enumerate(config.faults.events):
        if fault.kind in ("ban", "reject"):
            raise ConfigError(
                config.source,
                f"faults.events[{i}].kind",
                f"{fault.kind!r} is a simulated-venue drill; not in live mode",
            )
    try:
        credentials = credentials_from_env(v.api_key_env, v.api_secret_env)
    except MissingCredentialsError as exc:
        key = "venue.api_key_env" if exc.variable == v.api_key_env else "venue.api_secret_env"
        raise ConfigError(
            config.source, key, f"environment variable {exc.variable} is not set or empty"
        ) from None
    # The whole live history, oldest start first: a start that refused to trade, or
    # was killed before journaling anything, left an empty journal that must not hide
    # what the starts before it did.
    history = journal_files(config.resolve(config.journal.dir), "live")
    # One rate limiter for every REST request of the process (Binance counts them per
    # IP): the venue's orders and queries, the feed's snapshots and backfill.
    server_clock = ServerClock()
    limiter = RateLimiter(clock=server_clock.now)
    if config.feeds.inline:  # the venue's lines too wait for an inline step's writes
        log = deferring(log)
    venue = BinanceVenue(
        base_url=v.rest_url,
        ws_url=v.ws_url,
        credentials=credentials,
        symbols=list(config.data.symbols),
        log=log.bind(actor="venue"),
        order_transport=v.order_transport,
        ws_transport=config.feeds.transport,
        timeout_s=v.request_timeout_ms / 1000,
        recv_window_ms=v.recv_window_ms,
        unknown_grace_s=v.unknown_grace_ms / 1000,
        # No journal yet is an empty history: what the exchange holds is still reconciled.
        journal=history,
        reconcile_policy=v.reconcile,
        limiter=limiter,
        server_clock=server_clock,
        startup_deadline_s=v.startup_deadline_s,
        protective=config.exits if v.protective_stop or v.protective_target else None,
        protective_move_bps=v.protective_move_bps,
        protective_fallback_bps=v.protective_fallback_bps,
        protective_stop=v.protective_stop,
        protective_target=v.protective_target,
    )
    log.info(
        "live venue",
        rest_url=v.rest_url,
        ws_url=v.ws_url,
        order_transport=v.order_transport,
        reconcile_journals=len(history),
        reconcile_journal=str(history[-1]) if history else None,
    )
    return await _run_streaming(
        config,
        mode="live",
        venue=venue,
        log=log,
        stop=stop,
        http=http,
        journal_path=journal_path,
        control=control,
        control_state=control_state,
        limiter=limiter,
        server_clock=server_clock,
    )


async def _run_streaming(
    config: Config,
    *,
    mode: str,
    venue: BinanceVenue | None,
    log: FilteringBoundLogger,
    stop: trio.Event,
    http: httpx.AsyncClient | None,
    journal_path: Path | None,
    control: trio.MemoryReceiveChannel[ControlCommand] | None,
    control_state: ControlState | None,
    limiter: RateLimiter | None = None,
    server_clock: ServerClock | None = None,
) -> RunReport:
    setup_started = time.perf_counter()
    if config.feeds.inline:
        log = deferring(log)
    if not config.data.symbols:
        raise ConfigError(config.source, "data.symbols", f"{mode} mode needs the symbols to trade")
    for symbol in config.data.symbols:
        problem = untradeable(symbol)
        if problem is not None:
            raise ConfigError(config.where("data.symbols"), "data.symbols", problem)
    symbols = list(config.data.symbols)
    import httpx

    from .feeds._live import LiveFeed, market_data_client

    f = config.feeds
    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=f.rest_url, timeout=httpx.Timeout(10.0))
            )
        # The venue's limiter in live mode; paper mode has no order venue: a limiter of its own.
        rest = market_data_client(http, f.rest_url, limiter=limiter, clock=server_clock)
        if control_state is not None:
            control_state.limiter = rest.limiter  # the rate-limit metrics read it
        live: list[LiveFeed] = []

        def make_feed(
            market_tx: dict[str, trio.MemorySendChannel[MarketBatch]],
            step_tx: trio.MemorySendChannel[MarketStep],
            inline: InlineStep | None,
        ) -> LiveFeed:
            assert http is not None
            feed = LiveFeed(
                settings=f,
                symbols=symbols,
                step_ns=config.replay.step_ms * 1_000_000,
                symbol_channels=market_tx,
                execution_channel=step_tx,
                rest=rest,
                log=log.bind(actor="feed"),
                stop=stop,
                seed=config.engine.seed,
                book_levels=BOOK_LEVELS if needs_book(config, resolve_strategy(config).cls) else 0,
                inline=inline,
            )
            live.append(feed)
            return feed

        return await _run_pipeline(
            config,
            mode=mode,
            symbols=symbols,
            data=[f.ws_url],
            make_feed=make_feed,
            log=log,
            setup_started=setup_started,
            journal_path=journal_path,
            control=control,
            control_state=control_state,
            live_feeds=live,
            venue=venue,
        )

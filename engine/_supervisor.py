"""The supervisor: wires the actor shells for paper and live (replay: :mod:`engine._replay`).

::

    LiveFeed --MarketBatch--> SymbolActor (one per symbol) --IntentBatch--> RiskActor
    LiveFeed --MarketStep---> ExecutionActor <--OrderBatch-- RiskActor
    ExecutionActor --ReportBatch--> SymbolActor[s], RiskActor
    ExecutionActor --JournalBatch--> JournalActor (SQLite, WAL)
    SymbolActor[s] --ScoreBatch--> ModelActor --ScoreReply--> SymbolActor[s]   ([model] enabled)

Every edge is its own bounded ``trio.open_memory_channel``; actors start in
dependency order with ``nursery.start`` so each is ready before its producers.
If any actor fails, the nursery cancels the rest: trading stops (fail closed),
the journal keeps every complete step, and the error propagates.

With ``feeds.inline`` (the default) the feed's read loop runs each step through the
symbol, risk and execution actors' steps itself (:class:`~engine.actors.InlineStep`):
the same steps on the same inputs, without the channel hops and task switches
between a tick and its order's write; those three actor tasks do not run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio
from structlog.typing import FilteringBoundLogger

import hardware

from ._config import Config
from ._control import ControlState
from ._errors import ActorFailedError, ConfigError, DataError, single_cause
from ._memory import (
    MallocTrimmer,
    fill_numpy_cache,
    find_malloc_trim,
    find_mallopt,
    malloc_applied,
)
from ._progress import slow_step
from .actors import ExecutionActor, HardwareActor, InlineStep, RiskActor, SymbolActor
from .actors._inline import deferral_of, deferring
from .core import ExecutionCore, RiskCore, SymbolCore
from .feeds import (
    CaptureStats,
    TickStore,
    expand_paths,
    open_tick_store,
    scan_symbols,
    untradeable,
)
from .feeds._bookcols import BOOK_LEVELS
from .journal import Journal, JournalActor, journal_files, new_journal_file
from .ledger import PositionLedger
from .messages import (
    ControlCommand,
    ExposureLimits,
    FillRecovered,
    IntentBatch,
    JournalBatch,
    JournalRecord,
    MarketBatch,
    MarketStep,
    OrderBatch,
    OrderReconciled,
    PortfolioRequest,
    PositionReconciled,
    ReportBatch,
    ScoreBatch,
    ScoreReply,
)
from .portfolio import PortfolioActor
from .results import run_results
from .strategy import Strategy, resolve_strategy, strategy_label
from .venues import ConnectedVenue, Venue
from .venues.sim import SimVenue

if TYPE_CHECKING:
    # Paper and live only (imported where used): a replay never loads the live feed,
    # the Binance venue or httpx (tests/test_startup.py checks it).
    import httpx
    import numpy as np

    from .actors._filter import EntryFilter
    from .actors._model import ModelActor
    from .feeds._live import LiveFeed
    from .venues.binance import BinanceVenue, RateLimiter, ServerClock


@attrs.frozen(kw_only=True)
class SymbolSummary:
    """One symbol's results."""

    symbol: str
    ticks: int
    signals: int
    transitions: dict[str, int]
    position_qty: float
    fills: int
    round_trips: int
    realized_pnl: float
    fees: float
    # ``[strategy.confirm]``'s entry decisions (confirmed, passed_warmup,
    # blocked_disagree, blocked_warmup); empty when confirmation is off.
    confirm: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class RunReport:
    """What a replay did; the CLI prints it and ``--report`` writes it as JSON."""

    mode: str
    data: list[str]
    symbols: list[str]
    events: int
    lines: int
    skipped: dict[str, int]
    feed: dict[str, object]
    steps: int
    first_ts: int | None
    last_ts: int | None
    orders: int
    denied: dict[str, int]
    fills: int
    expired: int
    round_trips: int
    realized_pnl: float
    fees: float
    net_pnl: float
    max_drawdown: float
    transitions: dict[str, int]
    trading_state: str
    trading_changes: list[dict[str, str]]
    risk: dict[str, object]
    portfolio: dict[str, object]
    model: dict[str, object]
    hardware: dict[str, object]
    per_symbol: list[SymbolSummary]
    journal_path: str
    journal_records: int
    journal_sha256: str
    config_sha256: str
    setup_seconds: float
    wall_seconds: float
    events_per_second: float
    # engine.results.trade_stats of the journal's round trips, and the equity curve
    # (downsampled; see RunResults.curve_json).
    trades: dict[str, object] = attrs.Factory(dict)
    equity_curve: dict[str, object] = attrs.Factory(dict)
    # The strategy run: its ``strategy.kind``, or ``<file>:<class>`` of a user's.
    strategy: str = ""


async def _run_actors(
    journal_actor: JournalActor,
    execution: ExecutionActor,
    portfolio_actor: PortfolioActor | None,
    model_actor: ModelActor | None,
    risk: RiskActor,
    actors: list[SymbolActor],
    feed: LiveFeed,
    inline: InlineStep | None,
) -> None:
    """Start the actors in dependency order and wait until the run has drained. With
    ``inline``, the feed runs the symbol, risk and execution steps itself."""
    async with trio.open_nursery() as nursery:
        await nursery.start(journal_actor.run)
        if inline is None:
            await nursery.start(execution.run)
        if portfolio_actor is not None:
            await nursery.start(portfolio_actor.run)
        if model_actor is not None:
            await nursery.start(model_actor.run)
        if inline is None:
            await nursery.start(risk.run)
            for actor in actors:
                await nursery.start(actor.run)
        else:
            await nursery.start(inline.run)
        await nursery.start(feed.run)


def needs_book(config: Config, strategy: type[Strategy]) -> bool:
    """Whether the data must carry the order book columns (a state per depth diff): the
    strategy reads the book, or the ML filter's models do (a multi-modal sequence model)."""
    if strategy.uses_book:
        return True
    if not config.model.enabled:
        return False
    from .actors._model import model_reads_book

    return model_reads_book(config.model, config.resolve)


def _model_wiring(
    config: Config, symbols: list[str], mode: str, log: FilteringBoundLogger
) -> tuple[
    ModelActor | None,
    dict[str, EntryFilter],
    dict[str, tuple[trio.MemorySendChannel[ScoreBatch], trio.MemoryReceiveChannel[ScoreReply]]],
]:
    """The model actor, each symbol's filter and their channels (nothing when disabled).

    Raises:
        ModelError: a configured model is missing or does not match the feature spec.
    """
    cfg = config.model
    if not cfg.enabled:
        return None, {}, {}
    # Imported here: onnxruntime and scikit-learn load only when the filter is on.
    from .actors._filter import EntryFilter
    from .actors._model import ModelActor, load_ensemble, load_regime_model
    from .models import FeatureBuilder, default_feature_spec, retrain

    spec = default_feature_spec()
    # Replay compiles a missing feature kernel in a child process and waits for it at the
    # first signal; paper and live wait here, so that no signal is taken late.
    FeatureBuilder.warm_up(background=mode == "replay")
    ensemble = load_ensemble(cfg, spec, config.resolve)
    regime_model = load_regime_model(cfg, config.resolve)  # None: threshold regimes
    requests: dict[str, trio.MemoryReceiveChannel[ScoreBatch]] = {}
    replies: dict[str, trio.MemorySendChannel[ScoreReply]] = {}
    channels = {}
    filters = {}
    for s in symbols:
        request_tx, requests[s] = trio.open_memory_channel[ScoreBatch](1)
        replies[s], reply_rx = trio.open_memory_channel[ScoreReply](1)
        channels[s] = (request_tx, reply_rx)
        filters[s] = EntryFilter(
            symbol=s,
            spec=spec,
            model=cfg,
            strategy=config.strategy,
            venue=config.venue,
            regime_model=regime_model,
            window=ensemble.window,  # sequence models: the last N ticks' rows per symbol
            book_levels=ensemble.book_levels,  # a multi-modal model: book levels at a signal
        )
    actor = ModelActor(
        config=cfg,
        ensemble=ensemble,
        symbols=symbols,
        requests=requests,
        replies=replies,
        log=log,
        deterministic=mode == "replay",
        retrain_fn=retrain,
        swap_dir=config.resolve(cfg.swap_dir) if cfg.swap_dir else None,
    )
    log.info(
        "model filter loaded",
        model=actor.model_id,
        members=[m.name for m in ensemble.models],
        member_weights=[round(float(w), 6) for w in ensemble.weights],
        features=len(spec.names),
    )
    return actor, filters, channels


def _model_summary(actor: ModelActor | None, filters: dict[str, EntryFilter]) -> dict[str, object]:
    if actor is None:
        return {"enabled": False}
    return {
        "enabled": True,
        **actor.summary(),
        "not_ready": sum(f.not_ready for f in filters.values()),
        "taken": sum(f.taken for f in filters.values()),
        "blocked": sum(f.blocked for f in filters.values()),
        # A multi-modal model: signals scored without a book at their tick (NaN levels).
        **(
            {"book_missing": sum(f.book_missing for f in filters.values())}
            if any(f.book_levels for f in filters.values())
            else {}
        ),
        **_regime_summary(filters),
        "thresholds": {s: round(f.threshold.current, 4) for s, f in filters.items()},
    }


def _regime_summary(filters: dict[str, EntryFilter]) -> dict[str, object]:
    """``[model] regime = "hmm"``: proposals that used the HMM and those that fell back."""
    if not any(f.hmm is not None for f in filters.values()):
        return {}
    return {
        "regime_hmm": sum(f.regime_hmm for f in filters.values()),
        "regime_fallback": sum(f.regime_fallback for f in filters.values()),
        "regime_bars": sum(f.hmm.bars for f in filters.values() if f.hmm is not None),
    }


def _hardware_summary(
    actor: HardwareActor, trimmer: MallocTrimmer | None = None
) -> dict[str, object]:
    applied = actor.applied
    out: dict[str, object] = {
        "affinity": list(applied.affinity) if applied is not None else [],
        "worker_cpus": list(applied.plan.worker_cpus) if applied is not None else [],
        "refused": [f"{r.setting}: {r.reason}" for r in applied.refused] if applied else [],
        "loop_lag_ms": actor.lag.summary(),
    }
    if trimmer is not None:  # paper and live runs
        out["malloc_trim"] = trimmer.summary()
    return out


def _risk_summary(risk: RiskCore, ledger: PositionLedger) -> dict[str, object]:
    metrics = risk.metrics
    metrics.exposure = {
        symbol: abs(acct.qty) * (acct.last_mid if acct.last_mid == acct.last_mid else 0.0)
        for symbol, acct in ledger.accounts.items()
    }
    return {
        **metrics.summary(),
        "symbol_states": {s: m.state.value for s, m in risk.symbol_trading.items()},
        "symbol_changes": [
            {"symbol": symbol, "from": a, "to": b, "reason": why}
            for symbol, a, b, why in risk.symbol_changes
        ],
    }


def config_digest(config: Config) -> str:
    """sha256 of the effective configuration (what the run depends on)."""
    body = repr(attrs.evolve(config, source="", base_dir="")).encode()
    return hashlib.sha256(body).hexdigest()


def resolve_symbols(config: Config, paths: list[Path], store: TickStore | None = None) -> list[str]:
    """The symbols to run: ``data.symbols`` if set, else every symbol in the data (the
    tick store remembers what a scan of the same files found).

    Raises:
        DataError: no symbol found, or a configured symbol is not in the data.
    """
    found = store.symbols(paths, scan_symbols) if store is not None else scan_symbols(paths)
    if not config.data.symbols:
        if not found:
            names = ", ".join(str(p) for p in paths)
            raise DataError(f"{names}: no market events found")
        return found
    missing = [s for s in config.data.symbols if s not in found]
    if missing:
        raise DataError(
            f"data.symbols: {', '.join(missing)} not found in the data (found: {', '.join(found)})"
        )
    return list(config.data.symbols)


async def run_replay(
    config: Config,
    *,
    data: list[str] | None = None,
    log: FilteringBoundLogger,
    journal_path: Path | None = None,
    control: trio.MemoryReceiveChannel[ControlCommand] | None = None,
    control_state: ControlState | None = None,
) -> RunReport:
    """Replay recorded market data through the cores, event by event (:mod:`engine._replay`).

    Args:
        config: the engine configuration.
        data: capture files or directories (default: ``data.paths`` from config).
        log: the JSON logger.
        journal_path: where to write the journal (default: a new file under
            ``journal.dir``).
        control: operator commands for the risk actor (halt, reduce, resume).
        control_state: filled in with the risk actor, for ``status`` requests.

    Returns:
        The run's report, with the journal digest.

    Raises:
        DataError: the data cannot be found or read.
        ActorFailedError: an actor failed; trading stopped.
    """
    from ._replay import run_replay_driven  # builds on this module's report pieces

    setup_started = time.perf_counter()  # wall clock for the metrics only
    raw = data if data else [str(config.resolve(p)) for p in config.data.paths]
    paths = expand_paths(raw)
    store = open_tick_store(
        config.data.tick_store,
        base_dir=Path(config.base_dir),
        where=config.where("data.tick_store"),
        log=log.bind(actor="tick_store"),
    )
    symbols = resolve_symbols(config, paths, store)
    return await run_replay_driven(
        config,
        paths=paths,
        symbols=symbols,
        store=store,
        log=log,
        setup_started=setup_started,
        journal_path=journal_path or new_journal_path(config, "replay"),
        control=control,
        control_state=control_state,
    )


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


def _adopt_reconciliation(
    venue: BinanceVenue,
    actors: list[SymbolActor],
    journal: Journal,
    log: FilteringBoundLogger,
) -> None:
    """Start from what live reconciliation found.

    The venue has already put the exchange's positions in the ledger (which risk and
    the report read); here each symbol actor holding one takes it over (its machine
    starts IN_POSITION), and the journal gets, before any step of this run, the
    recovered fills, what became of each order, and every traded symbol's agreed
    position (:class:`PositionReconciled`: the next start's reconciliation starts
    the history of positions from it).
    """
    plan = venue.reconciliation
    if plan is None:
        return
    now = time.time_ns()
    seq = venue.seq
    records: list[JournalRecord] = [
        FillRecovered(
            symbol=f.symbol,
            client_order_id=f.client_order_id,
            venue_client_order_id=f.venue_client_order_id,
            side=f.side,
            qty=float(f.qty),
            price=float(f.price),
            fee=float(f.commission),
            trade_id=-1 if f.trade_id is None else f.trade_id,
            ts_event=f.time_ms * 1_000_000,
            ts_init=now,
            seq=next(seq),
        )
        for f in plan.fills
    ]
    for action, refs in (("canceled", plan.cancel), ("adopted", plan.adopt)):
        records.extend(
            OrderReconciled(
                symbol=r.symbol,
                client_order_id=r.client_order_id,
                venue_client_order_id=r.client_order_id,
                action=action,
                status="OPEN",
                executed_qty=float(r.executed_qty),
                reason="not in the journal" if r.engine_order_id is None else "open at start",
                ts_event=now,
                ts_init=now,
                seq=next(seq),
            )
            for r in refs
        )
    records.extend(
        OrderReconciled(
            symbol=r.symbol,
            client_order_id=r.client_order_id,
            venue_client_order_id=r.venue_client_order_id,
            action="resolved",
            status=r.status.value,
            executed_qty=float(r.executed_qty),
            reason=r.reason,
            ts_event=now,
            ts_init=now,
            seq=next(seq),
        )
        for r in plan.resolutions
    )
    # Last: the positions as they stand after every fill above.
    records.extend(
        PositionReconciled(
            symbol=symbol,
            qty=venue.ledger.qty(symbol),
            avg_price=venue.ledger.avg_price(symbol),
            ts_event=plan.exchange_time_ms * 1_000_000,
            ts_init=now,
            seq=next(seq),
        )
        for symbol in venue.symbols
    )
    # Written now, before the actors start: nothing of this run can come before it.
    journal.append(0, records)
    for note in plan.notes:
        log.warning("reconciliation note", note=note)
    log.info(
        "reconciled with the exchange",
        recovered_fills=len(plan.fills),
        resolved=len(plan.resolutions),
        canceled=len(plan.cancel),
        adopted=len(plan.adopt),
        positions={s: float(q) for s, (q, _e) in plan.positions.items()},
    )
    for actor in actors:
        if venue.ledger.qty(actor.symbol) != 0.0:
            actor.adopt_position(now)
            log.warning(
                "position adopted from the exchange",
                symbol=actor.symbol,
                qty=venue.ledger.qty(actor.symbol),
                entry_price=venue.ledger.avg_price(actor.symbol),
            )


def new_journal_path(config: Config, mode: str) -> Path:
    """A fresh journal file for this run under ``journal.dir`` (created empty, never an
    existing one; see :func:`engine.journal.new_journal_file`).

    Raises:
        JournalError: the directory or the file cannot be created.
    """
    return new_journal_file(config.resolve(config.journal.dir), mode)


def last_journal(config: Config, mode: str) -> Path | None:
    """The journal of the latest start of ``mode`` in ``journal.dir`` (None: there is none)."""
    found = journal_files(config.resolve(config.journal.dir), mode)
    return found[-1] if found else None


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


async def _run_pipeline(
    config: Config, *, mode: str, journal_path: Path | None, **kwargs: Any
) -> RunReport:
    """Open the run's journal, run :func:`_run_journaled` on it, and close the journal
    on every exit path: a start that fails before the journal actor runs (reconciliation
    refused, start-up deadline, a bad model) leaves no connection open."""
    with Journal(journal_path or new_journal_path(config, mode)) as journal:
        return await _run_journaled(config, mode=mode, journal=journal, **kwargs)


async def _run_journaled(
    config: Config,
    *,
    mode: str,
    symbols: list[str],
    data: list[str],
    make_feed: Callable[..., LiveFeed],
    log: FilteringBoundLogger,
    setup_started: float,
    journal: Journal,
    control: trio.MemoryReceiveChannel[ControlCommand] | None,
    control_state: ControlState | None,
    capture_stats: CaptureStats | None = None,
    live_feeds: list[LiveFeed] | None = None,
    venue: Venue | None = None,
) -> RunReport:
    ch = config.channels
    if config.feeds.inline:
        # Lines logged during an inline step are written after its orders (InlineStep).
        log = deferring(log)
    cfg_sha = config_digest(config)
    journal.set_meta({"mode": mode, "config_sha256": cfg_sha, "data": "\n".join(data)})
    log.info(f"{mode} starting", symbols=symbols, data=data, journal=str(journal.path))

    market_tx: dict[str, trio.MemorySendChannel[MarketBatch]] = {}
    market_rx: dict[str, trio.MemoryReceiveChannel[MarketBatch]] = {}
    intent_tx: dict[str, trio.MemorySendChannel[IntentBatch]] = {}
    intent_rx: dict[str, trio.MemoryReceiveChannel[IntentBatch]] = {}
    report_tx: dict[str, trio.MemorySendChannel[ReportBatch]] = {}
    report_rx: dict[str, trio.MemoryReceiveChannel[ReportBatch]] = {}
    for s in symbols:
        market_tx[s], market_rx[s] = trio.open_memory_channel[MarketBatch](ch.market)
        intent_tx[s], intent_rx[s] = trio.open_memory_channel[IntentBatch](ch.intents)
        report_tx[s], report_rx[s] = trio.open_memory_channel[ReportBatch](ch.reports)
    step_tx, step_rx = trio.open_memory_channel[MarketStep](ch.market)
    order_tx, order_rx = trio.open_memory_channel[OrderBatch](ch.orders)
    risk_report_tx, risk_report_rx = trio.open_memory_channel[ReportBatch](ch.reports)
    journal_tx, journal_rx = trio.open_memory_channel[JournalBatch](ch.journal)

    if venue is None:
        venue = SimVenue(
            latency_ns=int(config.venue.latency_ms * 1e6),
            taker_fee_rate=config.venue.taker_fee_bps * 1e-4,
            maker_fee_rate=config.venue.maker_fee_bps * 1e-4,
            ledger=PositionLedger(),
        )
    # The one ledger of positions: the venue feeds it with fills (and, live, with what
    # reconciliation adopts); risk, the symbol actors and the report read it.
    ledger = venue.ledger
    journal_actor = JournalActor(journal=journal, inbox=journal_rx)
    execution = ExecutionActor(
        venue=venue,
        symbols=symbols,
        market=step_rx,
        orders=order_rx,
        symbol_reports=report_tx,
        risk_reports=risk_report_tx,
        journal=journal_tx,
        log=log.bind(actor="execution"),
        faults=config.faults.events,
    )
    portfolio_actor = None
    request_tx = answer_rx = None
    if config.portfolio.enabled and len(symbols) > 1:
        # Import cvxpy now, in set-up, not in the first solve.
        importlib.import_module("engine.portfolio._optimize")
    if config.portfolio.enabled:
        # One request is outstanding at most, so a capacity of 1 never blocks.
        request_tx, request_rx = trio.open_memory_channel[PortfolioRequest](1)
        answer_tx, answer_rx = trio.open_memory_channel[ExposureLimits](1)
        portfolio_actor = PortfolioActor(
            config=config.portfolio,
            requests=request_rx,
            answers=answer_tx,
            log=log.bind(actor="portfolio"),
        )
    risk = RiskActor(
        config=config.risk,
        symbols=symbols,
        intents=intent_rx,
        reports=risk_report_rx,
        orders=order_tx,
        log=log.bind(actor="risk"),
        ledger=ledger,
        step_ns=config.replay.step_ms * 1_000_000,
        control=control,
        portfolio=config.portfolio,
        portfolio_requests=request_tx,
        portfolio_answers=answer_rx,
    )
    with slow_step(
        "loading the ML filter (feature kernels compile on a first run)",
        style=config.logging.progress_style,
    ):
        model_actor, filters, score_channels = _model_wiring(config, symbols, mode, log)
    spec = resolve_strategy(config)
    actors = [
        SymbolActor(
            symbol=s,
            config=config.strategy,
            market=market_rx[s],
            reports=report_rx[s],
            intents=intent_tx[s],
            log=log.bind(actor="symbol"),
            ledger=ledger,
            sizing=config.sizing,
            capital=config.risk.capital,
            max_notional=config.risk.max_notional_per_symbol,
            entry_filter=filters.get(s),
            scores=score_channels.get(s),
            strategy=spec.new(config.strategy, config.sizing),
            exits=config.exits,
        )
        for s in symbols
    ]
    # Inline (``feeds.inline``): the feed's read loop runs each step through the cores.
    inline = (
        InlineStep(
            actors=actors,
            risk=risk,
            execution=execution,
            journal=journal_tx,
            logs=deferral_of(log),
        )
        if config.feeds.inline
        else None
    )
    feed = make_feed(market_tx, step_tx, inline)

    warmed_up = trio.Event()
    trimmer: MallocTrimmer | None = None
    tuning = None
    numpy_cache_kb = None
    if mode in ("paper", "live"):
        # Before the feed and the worker threads allocate: large buffers mapped apart
        # (read by glibc at exec when the CLI re-executed the engine; else mallopt now).
        tuning = malloc_applied(
            os.environ,
            mmap_threshold_kb=config.hardware.malloc_mmap_threshold_kb,
            arena_max=config.hardware.malloc_arena_max,
            mallopt=find_mallopt(),
        )
        # kind: exec (GLIBC_TUNABLES, read at exec), mallopt (now) or none (not glibc).
        log.info("malloc settings", kind=tuning["applied"], setting=tuning["tunables"] or "")
        if config.hardware.numpy_cache_fill:  # full now, not creeping up for hours
            numpy_cache_kb = fill_numpy_cache() // 1024
    hardware_actor = HardwareActor(
        config=config.hardware, log=log.bind(actor="hardware"), warmed_up=warmed_up
    )
    if control_state is not None:
        # What ``status``, the HTTP API and /metrics read (in the Trio thread, when asked).
        control_state.attach(
            mode=mode,
            risk=risk,
            actors=actors,
            venue=venue,
            execution=execution,
            feed=feed,
            model=model_actor,
            filters=filters,
            hardware=hardware_actor,
            channels={
                "market": market_tx,
                "intents": intent_tx,
                "reports": report_tx,
                "step": step_tx,
                "orders": order_tx,
                "risk_reports": risk_report_tx,
                "journal": journal_tx,
            },
        )
    try:
        async with trio.open_nursery() as outer:
            # First, so that the threads started later inherit the plan's CPUs.
            await outer.start(hardware_actor.run)
            if portfolio_actor is not None and hardware_actor.plan is not None:
                plan = hardware_actor.plan
                portfolio_actor.set_thread_setup(lambda: hardware.setup_worker_thread(plan))
            if isinstance(venue, ConnectedVenue):
                # Connected, templates built, reconciled: only then may anything trade.
                await outer.start(venue.run)
                _adopt_reconciliation(venue, actors, journal, log)
            with slow_step(
                "loading the strategy kernel (it compiles on a first run)",
                style=config.logging.progress_style,
            ):
                spec.cls.warm_up()
            warmed_up.set()
            await hardware_actor.settled.wait()  # the GC freeze is set-up, not trading
            if mode in ("paper", "live"):
                # Runs of hours: the heap's freed pages go back to the kernel now and then.
                pinning = hardware_actor.plan
                trimmer = MallocTrimmer(
                    interval_s=config.hardware.malloc_trim_s,
                    trim=find_malloc_trim(),
                    thread_setup=None
                    if pinning is None
                    else functools.partial(hardware.setup_worker_thread, pinning),
                    tuning=tuning,
                    numpy_cache_kb=numpy_cache_kb,
                )
                await outer.start(trimmer.run)
            started = time.perf_counter()
            setup = started - setup_started
            await _run_actors(
                journal_actor, execution, portfolio_actor, model_actor, risk, actors, feed, inline
            )
            outer.cancel_scope.cancel()
    except Exception as exc:
        from .venues.binance import ReconciliationError, StartupDeadlineError

        cause = single_cause(exc)
        if isinstance(cause, DataError | ReconciliationError | StartupDeadlineError):
            # Could not start (bad data; exchange and journal disagree): nothing traded.
            log.error("cannot start", error=str(cause))
            raise cause from exc
        log.error("actor failed; trading halted", error=repr(cause), exc_info=True)
        raise ActorFailedError(f"{mode} stopped: {cause!r}") from exc
    wall = time.perf_counter() - started
    if capture_stats is not None:
        lines, skipped = capture_stats.lines, dict(sorted(capture_stats.skipped.items()))
        feed_summary: dict[str, object] = capture_stats.summary()
    else:
        live_summary = live_feeds[0].summary() if live_feeds else {}
        lines = int(live_summary.get("messages", 0))
        skipped = {
            "malformed": int(live_summary.get("malformed", 0)),
            "unknown": int(live_summary.get("unknown", 0)),
        }
        feed_summary = live_summary
    return build_report(
        config,
        mode=mode,
        symbols=symbols,
        data=data,
        cores=actors,
        ledger=ledger,
        execution=execution,
        risk=risk,
        venue=venue,
        portfolio=portfolio_actor,
        model=model_actor,
        filters=filters,
        hardware_actor=hardware_actor,
        trimmer=trimmer,
        journal=journal,
        feed_summary=feed_summary,
        lines=lines,
        skipped=skipped,
        steps=feed.stats.steps,
        first_ts=feed.first_ts,
        last_ts=feed.last_ts,
        setup=setup,
        wall=wall,
        log=log,
    )


def build_report(
    config: Config,
    *,
    mode: str,
    symbols: list[str],
    data: list[str],
    cores: Sequence[SymbolCore],
    ledger: PositionLedger,
    execution: ExecutionCore,
    risk: RiskCore,
    venue: Venue,
    portfolio: PortfolioActor | None,
    model: ModelActor | None,
    filters: dict[str, EntryFilter],
    hardware_actor: HardwareActor,
    journal: Journal,
    feed_summary: dict[str, object],
    trimmer: MallocTrimmer | None = None,
    lines: int,
    skipped: dict[str, int],
    steps: int,
    first_ts: int | None,
    last_ts: int | None,
    setup: float,
    wall: float,
    log: FilteringBoundLogger,
    equity_curve: tuple[np.ndarray, np.ndarray] | None = None,
) -> RunReport:
    """The run's report, from the cores, the ledger and the journal (every mode).

    ``equity_curve`` is the replay driver's (times, PnL); without it the results use
    the realized curve rebuilt from the journal's fills.
    """
    per_symbol = []
    transitions: dict[str, int] = {}
    for core in cores:
        acct = ledger.account(core.symbol)
        for state, count in core.transitions.items():
            transitions[state] = transitions.get(state, 0) + count
        per_symbol.append(
            SymbolSummary(
                symbol=core.symbol,
                ticks=core.ticks,
                signals=core.signals,
                transitions=dict(sorted(core.transitions.items())),
                position_qty=acct.qty,
                fills=acct.fills,
                round_trips=acct.round_trips,
                realized_pnl=acct.realized,
                fees=acct.fees,
                confirm=core.confirm_counts,
            )
        )
    realized = sum(a.realized for a in ledger.accounts.values())
    fees = sum(a.fees for a in ledger.accounts.values())
    events = sum(core.ticks for core in cores)
    results = run_results(journal.path, start_equity=config.risk.capital, equity_curve=equity_curve)
    report = RunReport(
        mode=mode,
        data=data,
        symbols=symbols,
        events=events,
        lines=lines,
        skipped=skipped,
        feed=feed_summary,
        steps=steps,
        first_ts=first_ts,
        last_ts=last_ts,
        orders=execution.orders_sent + sum(risk.denied.values()),
        denied=dict(sorted(risk.denied.items())),
        fills=execution.fills,
        expired=execution.expired,
        round_trips=sum(a.round_trips for a in ledger.accounts.values()),
        realized_pnl=realized,
        fees=fees,
        net_pnl=realized - fees,
        max_drawdown=venue.max_drawdown,
        transitions=dict(sorted(transitions.items())),
        trading_state=risk.trading.state.value,
        trading_changes=[{"from": a, "to": b, "reason": why} for a, b, why in risk.state_changes],
        risk=_risk_summary(risk, ledger),
        portfolio=portfolio.stats.summary() if portfolio is not None else {},
        model=_model_summary(model, filters),
        hardware=_hardware_summary(hardware_actor, trimmer),
        per_symbol=per_symbol,
        journal_path=str(journal.path),
        journal_records=journal.records,
        journal_sha256=journal.digest(),
        config_sha256=config_digest(config),
        setup_seconds=setup,
        wall_seconds=wall,
        events_per_second=events / wall if wall > 0 else 0.0,
        trades=results.stats,
        equity_curve=results.curve_json(),
        strategy=strategy_label(config),
    )
    log.info(
        f"{mode} finished",
        events=report.events,
        orders=report.orders,
        fills=report.fills,
        journal_sha256=report.journal_sha256,
        events_per_second=round(report.events_per_second),
    )
    return report


def portfolio_solver(config: Config, log: FilteringBoundLogger) -> PortfolioActor:
    """A portfolio actor whose :meth:`~PortfolioActor.solve` replay calls directly (its
    channels stay unused: replay solves in line, at fixed sample counts)."""
    _requests_tx, requests_rx = trio.open_memory_channel[PortfolioRequest](1)
    answers_tx, _answers_rx = trio.open_memory_channel[ExposureLimits](1)
    return PortfolioActor(
        config=config.portfolio,
        requests=requests_rx,
        answers=answers_tx,
        log=log.bind(actor="portfolio"),
    )

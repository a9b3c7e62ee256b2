"""The supervisor: wires the actor shells of paper and live runs (the modes:
:mod:`engine._streaming`; replay: :mod:`engine._replay`; the report: :mod:`engine._report`).

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

import functools
import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from structlog.typing import FilteringBoundLogger

import hardware

from ._config import Config
from ._control import ControlState
from ._errors import ActorFailedError, DataError, single_cause
from ._memory import (
    MallocTrimmer,
    fill_numpy_cache,
    find_malloc_trim,
    find_mallopt,
    malloc_applied,
)
from ._progress import slow_step
from ._report import RunReport, build_report, config_digest
from .actors import ExecutionActor, HardwareActor, InlineStep, RiskActor, SymbolActor
from .actors._inline import deferral_of, deferring
from .feeds import CaptureStats
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
from .strategy import Strategy, resolve_strategy
from .venues import ConnectedVenue, Venue
from .venues.sim import SimVenue

if TYPE_CHECKING:
    # Paper and live only (imported where used): a replay never loads the live feed,
    # the Binance venue or httpx (tests/test_startup.py checks it).
    from .actors._filter import EntryFilter
    from .actors._model import ModelActor
    from .feeds._live import LiveFeed
    from .venues.binance import BinanceVenue


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
        config_sha256=cfg_sha,
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

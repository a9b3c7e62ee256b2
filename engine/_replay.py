"""Replay mode: the recorded market through the synchronous cores, event by event.

The captures become a :class:`~engine.feeds.Tape` (parsed, or mapped from the tick
store), the cores are built once (no channels: replay runs in one task), and
:class:`~engine.core.ReplayDriver` processes the run in market-time order. The
report is the same :class:`~engine._report.RunReport` paper and live give.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import trio
from structlog.typing import FilteringBoundLogger

from ._config import Config, parse_utc
from ._errors import ActorFailedError, DataError, single_cause
from ._progress import Meter, file_bytes, slow_step, watch
from ._report import RunReport, build_report, config_digest, data_notes
from ._supervisor import _model_wiring, needs_book, new_journal_path, portfolio_solver
from .actors import HardwareActor
from .core import ExecutionCore, ReplayDriver, RiskCore, SymbolCore
from .feeds import (
    CaptureLimits,
    CaptureStats,
    TickStore,
    expand_paths,
    load_tape,
    open_tick_store,
    scan_symbols,
)
from .feeds._tape import restrict_tape
from .journal import Journal
from .ledger import PositionLedger
from .strategy import resolve_strategy
from .venues.sim import SimVenue

if TYPE_CHECKING:
    from ._control import ControlState
    from .messages import ControlCommand


def _window(config: Config) -> tuple[int | None, int | None]:
    """``data.start`` and ``data.end`` as nanoseconds (None: no bound)."""
    start, end = config.data.start, config.data.end
    return (parse_utc(start) if start else None, parse_utc(end) if end else None)


async def _show_progress(driver: ReplayDriver, meter: Meter) -> None:
    """Keep ``meter`` current while the driver runs (it yields every few ms)."""
    while True:
        meter.update(driver.processed)
        await trio.sleep(0.25)


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


def replay_sources(
    config: Config, data: list[str] | None, *, log: FilteringBoundLogger | None = None
) -> tuple[list[Path], TickStore | None, list[str]]:
    """The files of a replay (``data``, or ``data.paths`` from config; directories
    expanded), the tick store it reads them through, and the symbols to run.

    Raises:
        DataError: the data cannot be found or read, or holds no symbol asked for.
    """
    raw = data if data else [str(config.resolve(p)) for p in config.data.paths]
    paths = expand_paths(raw)
    store = open_tick_store(
        config.data.tick_store,
        base_dir=Path(config.base_dir),
        where=config.where("data.tick_store"),
        log=None if log is None else log.bind(actor="tick_store"),
    )
    return paths, store, resolve_symbols(config, paths, store)


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
    setup_started = time.perf_counter()  # wall clock for the metrics only
    paths, store, symbols = replay_sources(config, data, log=log)
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


async def run_replay_driven(
    config: Config,
    *,
    paths: list[Path],
    symbols: list[str],
    store: TickStore | None,
    log: FilteringBoundLogger,
    setup_started: float,
    journal_path: Path,
    control: trio.MemoryReceiveChannel[ControlCommand] | None,
    control_state: ControlState | None,
) -> RunReport:
    """Replay ``paths`` for ``symbols`` (see :func:`run_replay`)."""

    stats = CaptureStats()
    limits = CaptureLimits(
        max_receive_skew_ms=config.data.max_receive_skew_ms,
        max_time_jump_ms=config.data.max_time_jump_ms,
    )
    data = [str(p) for p in paths]
    spec = resolve_strategy(config)  # a bad strategy file or parameter: before anything
    with Journal(journal_path) as journal:
        cfg_sha = config_digest(config)
        journal.set_meta({"mode": "replay", "config_sha256": cfg_sha, "data": "\n".join(data)})
        log.info("replay starting", symbols=symbols, data=data, journal=str(journal.path))
        try:
            reading = Meter(
                f"reading {len(paths)} file(s)",
                file_bytes(paths),
                "bytes",
                style=config.logging.progress_style,
                every_s=config.logging.progress_every_s,
            )
            with watch(reading, lambda: stats.read.n):  # silent on a tick-store hit
                tape = load_tape(
                    paths,
                    symbols,
                    limits=limits,
                    stats=stats,
                    store=store,
                    book=needs_book(config, spec.cls),
                )
            tape = restrict_tape(tape, *_window(config))  # data.start / data.end
        except DataError as exc:
            log.error("cannot start", error=str(exc))
            raise
        for path in stats.truncated:
            log.warning("truncated gzip: replayed up to the cut", file=path)
        # What the strategy cannot trade on (candle-only data): said in the summary.
        notes = data_notes(
            config.strategy.name or config.strategy.kind,
            {s: dict(enumerate(np.bincount(t.kind).tolist())) for s, t in tape.ticks.items()},
        )
        for note in notes:
            log.warning("strategy cannot trade on this data", error=note)
        ledger = PositionLedger()
        venue = SimVenue(
            latency_ns=int(config.venue.latency_ms * 1e6),
            taker_fee_rate=config.venue.taker_fee_bps * 1e-4,
            maker_fee_rate=config.venue.maker_fee_bps * 1e-4,
            ledger=ledger,
        )
        execution = ExecutionCore(
            venue=venue, log=log.bind(actor="execution"), faults=config.faults.events
        )
        risk = RiskCore(
            config=config.risk,
            symbols=symbols,
            log=log.bind(actor="risk"),
            ledger=ledger,
            step_ns=config.risk.sample_ms * 1_000_000,
            control=control,
        )
        portfolio = None
        if config.portfolio.enabled:
            if len(symbols) > 1:
                importlib.import_module("engine.portfolio._optimize")  # cvxpy: set-up time
            portfolio = portfolio_solver(config, log)
        with slow_step(
            "loading the ML filter (feature kernels compile on a first run)",
            style=config.logging.progress_style,
        ):
            model, filters, _channels = _model_wiring(config, symbols, "replay", log)
        cores = [
            SymbolCore(
                symbol=s,
                config=config.strategy,
                log=log.bind(actor="symbol"),
                ledger=ledger,
                sizing=config.sizing,
                capital=config.risk.capital,
                max_notional=config.risk.max_notional_per_symbol,
                entry_filter=filters.get(s),
                strategy=spec.new(config.strategy, config.sizing),
                exits=config.exits,
            )
            for s in symbols
        ]
        driver = ReplayDriver(
            config=config,
            tape=dict(tape.ticks),
            cores=cores,
            risk=risk,
            execution=execution,
            journal=journal,
            log=log.bind(actor="driver"),
            filters=filters,
            model=model,
            portfolio=portfolio,
        )
        warmed_up = trio.Event()
        hardware_actor = HardwareActor(
            config=config.hardware,
            log=log.bind(actor="hardware"),
            warmed_up=warmed_up,
            # The run ends on its own and the actor unfreezes then: the GC freeze skips
            # the whole-heap collection (it found tens of objects) and count.
            bounded=True,
        )
        if control_state is not None:
            # What ``status``, the HTTP API and /metrics read (in the Trio thread, when asked).
            control_state.attach(
                mode="replay",
                risk=risk,
                actors=cores,
                venue=venue,
                execution=execution,
                feed=driver,
                model=model,
                filters=filters,
                hardware=hardware_actor,
            )
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(hardware_actor.run)
                with slow_step(
                    "loading the strategy kernel (it compiles on a first run)",
                    style=config.logging.progress_style,
                ):
                    spec.cls.warm_up()
                warmed_up.set()
                await hardware_actor.settled.wait()
                started = time.perf_counter()
                setup = started - setup_started
                with Meter(
                    "replay",
                    driver.events,
                    style=config.logging.progress_style,
                    every_s=config.logging.progress_every_s,
                ) as meter:
                    nursery.start_soon(_show_progress, driver, meter)
                    await driver.run()
                    meter.update(driver.events)
                nursery.cancel_scope.cancel()
        except Exception as exc:
            cause = single_cause(exc)
            if isinstance(cause, DataError):
                log.error("cannot start", error=str(cause))
                raise cause from exc
            log.error("actor failed; trading halted", error=repr(cause), exc_info=True)
            raise ActorFailedError(f"replay stopped: {cause!r}") from exc
        wall = time.perf_counter() - started
        return build_report(
            config,
            mode="replay",
            symbols=symbols,
            data=data,
            config_sha256=cfg_sha,
            cores=cores,
            ledger=ledger,
            execution=execution,
            risk=risk,
            venue=venue,
            portfolio=portfolio,
            model=model,
            filters=filters,
            hardware_actor=hardware_actor,
            journal=journal,
            feed_summary={**stats.summary(), "notes": notes},
            lines=stats.lines,
            skipped=dict(sorted(stats.skipped.items())),
            steps=driver.steps,
            first_ts=driver.first_ts,
            last_ts=driver.last_ts,
            setup=setup,
            wall=wall,
            log=log,
            equity_curve=getattr(driver, "equity_curve", None),  # engine.results
        )

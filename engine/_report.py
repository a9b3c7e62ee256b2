"""The run report (:class:`RunReport`, built from the cores, the ledger and the journal by
:func:`build_report` in every mode) and its summary: a short human text for stdout and
the same as JSON."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np
import orjson

from ._config import SHIPPED_STRATEGIES, Config
from ._errors import ConfigError, DataError
from .results import (
    Trade,
    read_trades,
    run_results,
    tape_prices,
    tearsheet_html,
    trades_format,
    write_tearsheet,
    write_trades,
)
from .strategy import strategy_class, strategy_label

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from ._memory import MallocTrimmer
    from .actors import HardwareActor
    from .actors._filter import EntryFilter
    from .actors._model import ModelActor
    from .core import ExecutionCore, RiskCore, SymbolCore
    from .journal import Journal
    from .ledger import PositionLedger
    from .portfolio import PortfolioActor
    from .venues import Venue

TEARSHEET_SUFFIXES = (".html", ".htm")


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


def build_report(
    config: Config,
    *,
    mode: str,
    symbols: list[str],
    data: list[str],
    config_sha256: str,
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

    ``config_sha256`` is the digest the run journaled (:func:`config_digest`).
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
        config_sha256=config_sha256,
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


def report_json(report: RunReport) -> bytes:
    """The report as indented JSON (keys in a stable order)."""
    return orjson.dumps(attrs.asdict(report), option=orjson.OPT_INDENT_2) + b"\n"


def write_report(report: RunReport, path: Path) -> None:
    """Write the JSON report atomically (a temporary file renamed into place).

    Raises:
        OSError: the report cannot be written; no temporary file is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(report_json(report))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _fmt(value: object) -> str:
    return "n/a" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def _risk_line(risk: dict[str, object]) -> str:
    # The per-step Sharpe annualised from a short run means nothing: the trade
    # statistics give a daily one when the run is long enough.
    keys = ("var_hist_99", "cvar_hist_99")
    return ", ".join(f"{k} {_fmt(risk.get(k))}" for k in keys)


def _model_line(model: dict[str, object]) -> str:
    if not model.get("enabled"):
        return "off"
    taken, blocked = model.get("taken", 0), model.get("blocked", 0)
    line = (
        f"{model.get('model')}: {model.get('requests')} scored, {taken} taken, {blocked} blocked,"
        f" inference p50 {_fmt(model.get('inference_us_p50'))}"
        f" us, retrains {model.get('retrains')} (swapped {model.get('swaps')})"
    )
    if blocked and not taken:  # the filter must never silently stop a strategy trading
        line += f"; WARNING: the filter blocked every one of {blocked} signals (no trades)"
    return line


_UNIT_NAMES = {"E": "exchange event time (no receive stamps)"}


def _data_lines(feed: dict[str, object]) -> list[str]:
    """What the capture readers found per file (replay only): time units, clamped
    events, duplicates, and a warning per truncated file."""
    units = feed.get("units")
    if not isinstance(units, dict):
        return []  # a live run: its feed summary says other things
    by_unit: dict[str, list[str]] = {}
    for path, unit in units.items():
        by_unit.setdefault(str(unit), []).append(Path(str(path)).name)
    described = "; ".join(
        f"{_UNIT_NAMES.get(unit, unit)}: {', '.join(names)}" for unit, names in by_unit.items()
    )
    lines = [
        f"  time units    {described or 'n/a'}",
        f"  data checks   clamped {feed.get('clamped', 0)}, duplicates {feed.get('duplicates', 0)}",
    ]
    truncated = feed.get("truncated")
    if isinstance(truncated, list):
        lines.extend(
            f"  WARNING       {path}: truncated gzip, replayed up to the cut" for path in truncated
        )
    notes = feed.get("notes")
    if isinstance(notes, list):
        lines.extend(f"  WARNING       {note}" for note in notes)
    return lines


_KIND_NAMES = {1: "quote", 2: "trade", 3: "depth", 4: "candle", 5: "mark"}
_QUOTE_KIND = 1
_DEPTH_KIND = 3


def _uses_book(strategy: str) -> bool:
    """Whether the shipped strategy of that kind (or class name) reads the order book."""
    for kind, target in SHIPPED_STRATEGIES.items():
        if strategy in (kind, target.rpartition(":")[2]):
            return bool(getattr(strategy_class(kind), "uses_book", False))
    return False


def data_notes(strategy: str, kinds: Mapping[str, Mapping[int, int]]) -> list[str]:
    """Why the strategy cannot trade on the data given, or nothing (replay).

    Every shipped strategy's kernel reads quotes (bookTicker's bid and ask) and the
    simulated venue fills market orders at quotes, so a symbol whose data has no
    quote cannot trade however long it replays; the summary says so instead of
    leaving a silent run of zero orders. A strategy that reads the local order book
    (``uses_book``: ``book_imbalance``) is refused outright on data without depth
    updates: nothing it could do there is worth a run.

    Args:
        strategy: ``strategy.kind``, or the class name of a strategy loaded from a file.
        kinds: per symbol, its event counts by :class:`~engine.messages.EventKind` value.

    Raises:
        DataError: the strategy reads the book and a symbol's data has no depth update
            (one line, naming the symbols and what the data has; the CLI exits 2).
    """
    if _uses_book(strategy):
        bookless = [s for s, counts in kinds.items() if counts.get(_DEPTH_KIND, 0) == 0]
        if bookless:
            present = sorted(
                {
                    _KIND_NAMES.get(k, str(k)) + "s"
                    for s in bookless
                    for k, n in kinds[s].items()
                    if n
                }
            )
            raise DataError(
                f"strategy {strategy} reads the order book; the data has no depth updates for "
                f"{', '.join(bookless)} (only {' and '.join(present) or 'no events'}): "
                "give captures with depthUpdate streams and a REST snapshot"
            )
    by_content: dict[str, list[str]] = {}
    for symbol, counts in kinds.items():
        if counts.get(_QUOTE_KIND, 0) > 0:
            continue
        present = [_KIND_NAMES.get(k, str(k)) + "s" for k, n in sorted(counts.items()) if n > 0]
        by_content.setdefault(" and ".join(present) or "no events", []).append(symbol)
    return [
        f"strategy {strategy} reads quotes; the data has {content} only "
        f"({', '.join(symbols)}): no signal can fire and no order can fill there"
        for content, symbols in by_content.items()
    ]


def _money(value: object) -> str:
    return "n/a" if not isinstance(value, int | float) else f"{value:,.4f}"


def _pct(value: object) -> str:
    return "n/a" if not isinstance(value, int | float) else f"{100 * value:.1f}%"


def _secs(value: object) -> str:
    return "n/a" if not isinstance(value, int | float) else f"{value:,.1f} s"


def _side_line(group: object) -> str:
    if not isinstance(group, dict) or not group.get("trades"):
        return "0"
    return f"{group['trades']} (win {_pct(group['win_rate'])}, net {_money(group['net_pnl'])})"


def _ratio(stats: dict[str, object], key: str) -> str:
    note = stats.get("ratio_note")
    return str(note) if note else _fmt(stats.get(key))


def _trade_lines(stats: dict[str, object]) -> list[str]:
    """Trade statistics and the per-symbol table (see :func:`engine.results.trade_stats`)."""
    if not stats:
        return []
    reasons = stats.get("exit_reasons")
    reason_text = (
        ", ".join(f"{k} {v}" for k, v in reasons.items()) if isinstance(reasons, dict) else ""
    )
    lines = [
        f"  trades        {stats['trades']} closed, {stats['open_at_end']} open at end;"
        f" win rate {_pct(stats['win_rate'])}",
        f"  avg win/loss  {_money(stats['avg_win'])} / {_money(stats['avg_loss'])};"
        f" profit factor {_fmt(stats['profit_factor'])}; expectancy {_money(stats['expectancy'])}",
        f"  hold          avg {_secs(stats['avg_hold_s'])}, max {_secs(stats['max_hold_s'])}",
        f"  exit reasons  {reason_text or 'none'}",
        *_execution_lines(stats.get("execution")),
        f"  long / short  {_side_line(stats['long'])} / {_side_line(stats['short'])}",
        f"  fees/funding  {_money(stats['fees'])} / {_money(stats['funding'])}",
        f"  equity        {_money(stats['start_equity'])} -> {_money(stats['end_equity'])}",
        f"  sharpe        {_ratio(stats, 'sharpe')}",
        f"  sortino       {_ratio(stats, 'sortino')}",
    ]
    rows = stats.get("per_symbol")
    if isinstance(rows, list) and rows:
        lines.append(
            f"  {'symbol':<14}{'trades':>7}{'win rate':>10}{'net PnL':>14}{'fees':>12}"
            f"{'funding':>12}{'avg hold':>12}"
        )
        lines.extend(
            f"  {r['symbol']:<14}{r['trades']:>7}{_pct(r['win_rate']):>10}"
            f"{_money(r['net_pnl']):>14}{_money(r['fees']):>12}{_money(r['funding']):>12}"
            f"{_secs(r['avg_hold_s']):>12}"
            for r in rows
        )
    return lines


def _counts(counts: object) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) if isinstance(counts, dict) else ""


def _execution_lines(execution: object) -> list[str]:
    """Orders by type and fills and fees by liquidity (see
    :meth:`engine.results.OrderActivity.summary`)."""
    if not isinstance(execution, dict):
        return []
    by_type = _counts(execution.get("by_type")) or "none"
    tif = _counts(execution.get("limit_by_tif"))
    purpose = _counts(execution.get("by_purpose"))
    outcomes = _counts(execution.get("outcomes"))
    fills = execution.get("fills")
    liquidity = (
        " / ".join(
            f"{name.lower()} {row['fills']} fills, fees {_money(row['fees'])}"
            + (f" ({row['fee_bps']:.2f} bps)" if isinstance(row["fee_bps"], float) else "")
            for name, row in fills.items()
        )
        if isinstance(fills, dict) and fills
        else "no fills"
    )
    return [
        f"  order types   {by_type}" + (f" (LIMIT: {tif})" if tif else "")
        + (f"; {purpose}" if purpose else "") + (f"; {outcomes}" if outcomes else ""),
        f"  maker/taker   {liquidity}; maker share {_pct(execution.get('maker_share'))}",
    ]  # fmt: skip


def _confirm_lines(report: RunReport) -> list[str]:
    """``[strategy.confirm]``'s entry decisions summed over the symbols (none when off)."""
    total: dict[str, int] = {}
    for sym in report.per_symbol:
        for k, n in sym.confirm.items():
            total[k] = total.get(k, 0) + n
    if not total:
        return []
    return ["  confirm       " + ", ".join(f"{k} {n}" for k, n in sorted(total.items()))]


def summary_text(report: RunReport) -> str:
    """A short human summary of a run."""
    skipped = ", ".join(f"{k} {v}" for k, v in report.skipped.items()) or "none"
    denied = ", ".join(f"{k} {v}" for k, v in report.denied.items()) or "none"
    states = " ".join(f"{k}:{v}" for k, v in report.transitions.items()) or "none"
    lines = [
        f"trireme {report.mode}: "
        + (f"{len(report.data)} file(s)" if report.mode == "replay" else ", ".join(report.data))
        + f", symbols {', '.join(report.symbols)}"
        + (f", strategy {report.strategy}" if report.strategy else ""),
        f"  events        {report.events:,} ({report.lines:,} lines; skipped: {skipped})",
        *_data_lines(report.feed),
        f"  steps         {report.steps:,}",
        f"  orders        {report.orders} (denied: {denied}; expired {report.expired})",
        f"  fills         {report.fills}",
        f"  round trips   {report.round_trips}",
        f"  realized PnL  {report.realized_pnl:,.4f}",
        f"  fees          {report.fees:,.4f}",
        f"  net PnL       {report.net_pnl:,.4f}",
        f"  max drawdown  {report.max_drawdown:,.4f}",
        *_trade_lines(report.trades),
        f"  transitions   {states}",
        f"  trading       {report.trading_state} ({len(report.trading_changes)} change(s))",
        f"  risk          {_risk_line(report.risk)}",
        f"  model filter  {_model_line(report.model)}",
        *_confirm_lines(report),
        f"  journal       {report.journal_path} ({report.journal_records} records)",
        f"  journal_sha256 {report.journal_sha256}",
        f"  set-up        {report.setup_seconds:.3f} s (symbol scan, kernel load, model load)",
        f"  run time      {report.wall_seconds:.3f} s",
        f"  events/s      {report.events_per_second:,.0f}",
    ]
    return "\n".join(lines)


def check_results_paths(trades: Path | None, tearsheet: Path | None) -> None:
    """Refuse ``--trades`` and ``--tearsheet`` paths before the run, not after it.

    Raises:
        ConfigError: naming the flag: an unknown extension or a directory.
    """
    for flag, path in (("--trades", trades), ("--tearsheet", tearsheet)):
        if path is None:
            continue
        if path.is_dir():
            raise ConfigError(flag, "", f"{path} is a directory; expected a file path")
        if flag == "--trades":
            trades_format(path)
        elif path.suffix.lower() not in TEARSHEET_SUFFIXES:
            raise ConfigError(flag, "", f"{path}: expected an .html file")


def _fill_prices(trades: list[Trade]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    points: dict[str, list[tuple[int, float]]] = {}
    for t in trades:
        points.setdefault(t.symbol, []).append((t.entry_ts, t.entry_price))
        if t.exit_ts is not None and t.exit_price is not None:
            points[t.symbol].append((t.exit_ts, t.exit_price))
    out = {}
    for symbol, pts in points.items():
        pts.sort()
        out[symbol] = (np.array([p[0] for p in pts], np.int64), np.array([p[1] for p in pts]))
    return out


def _prices(
    config: Config, report: RunReport, trades: list[Trade]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """The price to draw trades on: the replayed tape (mapped from the tick store
    when it holds it), else (paper, live, or the data moved since) the fills' prices."""
    if report.mode == "replay":
        from .feeds import CaptureLimits, CaptureStats, load_tape, open_tick_store

        limits = CaptureLimits(
            max_receive_skew_ms=config.data.max_receive_skew_ms,
            max_time_jump_ms=config.data.max_time_jump_ms,
        )
        try:
            store = open_tick_store(
                config.data.tick_store,
                base_dir=Path(config.base_dir),
                where=config.where("data.tick_store"),
            )
            tape = load_tape(
                [Path(p) for p in report.data],
                report.symbols,
                limits=limits,
                stats=CaptureStats(),
                store=store,
            )
        except (DataError, ConfigError) as exc:
            return _fill_prices(trades), f"price: the fills' prices (tape unreadable: {exc})"
        return tape_prices(
            tape.ticks
        ), "price: quote mid from the replayed tape (trade price where no quote)"
    return _fill_prices(trades), "price: the fills' prices (no tape in this mode)"


def write_results(
    report: RunReport,
    config: Config,
    *,
    trades_path: Path | None = None,
    tearsheet_path: Path | None = None,
) -> None:
    """Write the trade list and/or the tear sheet of a finished run (from its journal).

    Raises:
        JournalError: the run's journal cannot be read.
        OSError: a file cannot be written.
    """
    if trades_path is None and tearsheet_path is None:
        return
    trades = read_trades(Path(report.journal_path))
    if trades_path is not None:
        write_trades(trades, trades_path)
    if tearsheet_path is None:
        return
    curve = report.equity_curve
    ts = np.asarray(curve.get("ts", []), dtype=np.int64)
    equity = np.asarray(curve.get("equity", []), dtype=np.float64)
    prices, price_source = _prices(config, report, trades)
    first = _utc_text(report.first_ts)
    last = _utc_text(report.last_ts)
    run = {
        "mode": report.mode,
        "data": ", ".join(report.data),
        "symbols": ", ".join(report.symbols),
        "strategy": report.strategy,
        "period (UTC)": f"{first} to {last}",
        "events": f"{report.events:,}",
        "orders / fills": f"{report.orders} / {report.fills}",
        "journal": report.journal_path,
        "journal_sha256": report.journal_sha256,
        "config_sha256": report.config_sha256,
    }
    config_text = orjson.dumps(
        attrs.asdict(config), default=str, option=orjson.OPT_INDENT_2
    ).decode()
    text = tearsheet_html(
        title=f"Trireme {report.mode}: {', '.join(report.symbols)}",
        run=run,
        stats=report.trades,
        trades=trades,
        curve=(ts, equity),
        curve_source=f"{curve.get('source', '')} ({curve.get('points', 0)} samples,"
        f" {ts.shape[0]} drawn)",
        prices=prices,
        price_source=price_source,
        config_text=config_text,
    )
    write_tearsheet(text, tearsheet_path)


def _utc_text(ts: int | None) -> str:
    if ts is None:
        return "n/a"
    return dt.datetime.fromtimestamp(ts / 1e9, tz=dt.UTC).isoformat(timespec="milliseconds")

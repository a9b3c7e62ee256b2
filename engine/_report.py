"""The run summary: a short human text for stdout and the same as JSON."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import attrs
import numpy as np
import orjson

from ._config import SHIPPED_STRATEGIES, Config
from ._errors import ConfigError, DataError
from ._supervisor import RunReport
from .results import (
    Trade,
    read_trades,
    tape_prices,
    tearsheet_html,
    trades_format,
    write_tearsheet,
    write_trades,
)
from .strategy import strategy_class

TEARSHEET_SUFFIXES = (".html", ".htm")


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

"""The run summary: a short human text for stdout and the same as JSON."""

from __future__ import annotations

from pathlib import Path

import attrs
import orjson

from ._supervisor import RunReport


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
    keys = ("var_hist_99", "cvar_hist_99", "sharpe_annualized", "profit_factor")
    return ", ".join(f"{k} {_fmt(risk.get(k))}" for k in keys)


def _model_line(model: dict[str, object]) -> str:
    if not model.get("enabled"):
        return "off"
    return (
        f"{model.get('model')}: {model.get('requests')} scored, cache hit rate "
        f"{_fmt(model.get('cache_hit_rate'))}, inference p50 {_fmt(model.get('inference_us_p50'))}"
        f" us, retrains {model.get('retrains')} (swapped {model.get('swaps')})"
    )


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
    return lines


def summary_text(report: RunReport) -> str:
    """A short human summary of a run."""
    skipped = ", ".join(f"{k} {v}" for k, v in report.skipped.items()) or "none"
    denied = ", ".join(f"{k} {v}" for k, v in report.denied.items()) or "none"
    states = " ".join(f"{k}:{v}" for k, v in report.transitions.items()) or "none"
    lines = [
        f"trireme {report.mode}: "
        + (f"{len(report.data)} file(s)" if report.mode == "replay" else ", ".join(report.data))
        + f", symbols {', '.join(report.symbols)}",
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
        f"  transitions   {states}",
        f"  trading       {report.trading_state} ({len(report.trading_changes)} change(s))",
        f"  risk          {_risk_line(report.risk)}",
        f"  model filter  {_model_line(report.model)}",
        f"  journal       {report.journal_path} ({report.journal_records} records)",
        f"  journal_sha256 {report.journal_sha256}",
        f"  set-up        {report.setup_seconds:.3f} s (symbol scan, kernel load, model load)",
        f"  run time      {report.wall_seconds:.3f} s",
        f"  events/s      {report.events_per_second:,.0f}",
    ]
    return "\n".join(lines)

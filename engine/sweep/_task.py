"""One sweep task: a deterministic replay of one config, run inside a Dask worker.

The task is a plain function of picklable arguments (the config, the data paths), so
any Dask worker that can import :mod:`engine` and read the data runs it. It writes
its journal to a temporary directory (deleted afterwards: the digest identifies the
run; replay the point's config to get the journal back) and returns one table row.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import attrs
import structlog
import trio
from structlog.typing import FilteringBoundLogger

from .._config import Config
from .._replay import run_replay
from .._report import RunReport

#: Without :mod:`engine.results`' statistics, the annualised Sharpe of a run shorter than
#: this is left out of the table: minutes of per-step returns scaled to a year is noise
#: (-2000 on the sample). 30 days, as engine.results asks for 30 daily returns.
SHARPE_MIN_SPAN_NS = 30 * 86_400 * 1_000_000_000

#: The metrics of a row, in table order (the parameters and the window come first).
METRICS = (
    "net_pnl",
    "trades",
    "win_rate",
    "profit_factor",
    "max_drawdown",
    "max_drawdown_pct",
    "sharpe",
    "realized_pnl",
    "fees",
    "fills",
    "orders",
    "events",
    "journal_sha256",
)

_FLAT = 1e-12


def _quiet_logger() -> FilteringBoundLogger:
    # Tasks run by the hundred: the row carries the results, the log would be noise.
    return structlog.wrap_logger(
        structlog.ReturnLogger(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
    )


def trade_pnls(journal: Path) -> list[float]:
    """Each round trip's PnL after fees, from the journal's fills, in fill order.

    A round trip runs from flat to flat per symbol; a fill that flips the position
    closes one trip at its price and opens the next with the rest (fees split by
    quantity).
    """
    pnls: list[float] = []
    book: dict[str, list[float]] = {}  # symbol -> [qty, cash, fees]
    with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT payload FROM journal WHERE kind = 'OrderFilled' ORDER BY id")
        for (payload,) in rows:
            fill = json.loads(payload)
            qty = float(fill["side"]) * float(fill["last_qty"])
            price = float(fill["last_price"])
            fee = float(fill["fee"])
            pos = book.setdefault(fill["symbol"], [0.0, 0.0, 0.0])
            if pos[0] * qty < 0 and abs(qty) > abs(pos[0]) + _FLAT:
                closing = -pos[0]
                share = closing / qty
                pnls.append(pos[1] - closing * price - (pos[2] + fee * share))
                rest = qty - closing
                pos[:] = [rest, -rest * price, fee * (1 - share)]
                continue
            pos[0] += qty
            pos[1] -= qty * price
            pos[2] += fee
            if abs(pos[0]) <= _FLAT:
                pnls.append(pos[1] - pos[2])
                pos[:] = [0.0, 0.0, 0.0]
    return pnls


def row_from_report(report: RunReport, pnls: list[float]) -> dict[str, Any]:
    """The table's metrics of one replay (deterministic: no wall-clock figures).

    Trade statistics come from the report's ``trades`` (:mod:`engine.results`: Sharpe
    on daily returns, only with enough days) when it has them, else from ``pnls``
    and the risk metrics (Sharpe only over :data:`SHARPE_MIN_SPAN_NS` of market).
    """
    stats = getattr(report, "trades", None) or {}
    risk = report.risk
    if "win_rate" in stats:
        trades, win_rate = stats["trades"], stats["win_rate"]
        factor, sharpe = stats.get("profit_factor"), stats.get("sharpe")
    else:
        span = (
            report.last_ts - report.first_ts
            if report.first_ts is not None and report.last_ts is not None
            else 0
        )
        trades = len(pnls)
        win_rate = sum(1 for p in pnls if p > 0) / len(pnls) if pnls else None
        factor = risk.get("profit_factor")
        sharpe = risk.get("sharpe_annualized") if span >= SHARPE_MIN_SPAN_NS else None
    return {
        "net_pnl": report.net_pnl,
        "trades": trades,
        "win_rate": win_rate,
        "profit_factor": _finite(factor),
        "max_drawdown": report.max_drawdown,
        "max_drawdown_pct": risk.get("max_drawdown_pct"),
        "sharpe": _finite(sharpe),
        "realized_pnl": report.realized_pnl,
        "fees": report.fees,
        "fills": report.fills,
        "orders": report.orders,
        "events": report.events,
        "journal_sha256": report.journal_sha256,
    }


def _finite(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def replay_point(config: Config, data: list[str] | None = None) -> dict[str, Any]:
    """Replay ``config`` and return its table row; runs in a Dask worker (any thread).

    Hardware pinning is turned off: several replays share the machine, and pinning
    each to the same cores would queue them. The journal's digest does not depend
    on it.

    Args:
        config: the point's config (``data.start``/``data.end`` set for a window).
        data: capture files or directories (default: the config's ``data.paths``).

    Returns:
        The metrics of :data:`METRICS` plus ``wall_seconds`` (for progress only).

    Raises:
        DataError: the data cannot be read.
        ActorFailedError: the replay failed.
    """
    config = attrs.evolve(config, hardware=attrs.evolve(config.hardware, enabled=False))
    with tempfile.TemporaryDirectory(prefix="trireme-sweep-") as tmp:
        journal = Path(tmp) / "journal.sqlite"
        report = trio.run(
            functools.partial(
                run_replay, config, data=data, log=_quiet_logger(), journal_path=journal
            )
        )
        pnls = trade_pnls(journal)
    row = row_from_report(report, pnls)
    row["wall_seconds"] = report.setup_seconds + report.wall_seconds
    return row

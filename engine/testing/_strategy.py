"""A test kit for strategy authors: replay a strategy and look at what it did.

::

    from engine.testing import run_strategy
    from my_strategies import MyScalper

    run = run_strategy(MyScalper, ["data/sample/btcusdt_20240808_180s.gz"],
                       params={"lookback": 50}, venue={"latency_ms": 5.0})
    assert run.orders and all(o["purpose"] in ("ENTRY", "EXIT") for o in run.orders)
    assert run.exits() == {"take_profit": 3, "stop_loss": 2}

No Trio, no config file: the strategy class is selected by its own file and name (as
``[strategy] path`` and ``name`` would), its parameters are checked as the config
checks them, the ML filter is off, and the replay is the engine's own, event-accurate
and deterministic. Everything the journal recorded comes back as plain dicts.
"""

from __future__ import annotations

import collections
import inspect
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

from .._config import SHIPPED_STRATEGIES
from .._report import RunReport
from ..strategy import Strategy
from ._helpers import replay, replay_config


@attrs.frozen
class StrategyRun:
    """What a replay of one strategy did.

    Attributes:
        report: the run's report (orders, fills, PnL, digest, ...).
        records: every journal record, in order, as ``(kind, fields)``.
    """

    report: RunReport
    records: list[tuple[str, dict[str, Any]]]

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The records of one kind (``SubmitOrder``, ``OrderFilled``, ``PositionChanged``...)."""
        return [fields for k, fields in self.records if k == kind]

    @property
    def orders(self) -> list[dict[str, Any]]:
        """The orders the strategy's signals made, in order."""
        return self.of("SubmitOrder")

    @property
    def fills(self) -> list[dict[str, Any]]:
        """The fills, in order."""
        return self.of("OrderFilled")

    def exits(self) -> dict[str, int]:
        """How many positions each exit reason closed (``stop_loss``, ``time_limit``, ...)."""
        moves = self.of("PositionChanged")
        return dict(
            collections.Counter(
                m["trigger"]
                for m in moves
                if m["source"] == "IN_POSITION" and m["target"] == "EXITING"
            )
        )


def run_strategy(
    strategy: type[Strategy],
    data: list[str | Path],
    /,
    *,
    params: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> StrategyRun:
    """Replay ``strategy`` over ``data`` and return what it did.

    Args:
        strategy: the strategy class; it must live at the top level of a Python file
            (the engine loads it from there, as ``[strategy] path`` and ``name`` do).
        data: capture or CSV files, or directories.
        params: its ``[strategy.params]``.
        **sections: other config tables, e.g. ``venue={"latency_ms": 5.0}``,
            ``strategy={"order_notional": 500.0}``.

    Raises:
        ConfigError: the class cannot be loaded from its file, or a parameter is wrong.
    """
    chosen: dict[str, Any] = {"params": dict(params or {})}
    kind = getattr(strategy, "kind", "")
    if SHIPPED_STRATEGIES.get(kind) == f"{strategy.__module__}:{strategy.__qualname__}":
        # A shipped strategy by its kind: loaded from its file under a second module
        # name, its numba cache would name that module, which other processes lack.
        chosen["kind"] = kind
    else:
        path = Path(inspect.getfile(strategy)).resolve()
        chosen.update(path=str(path), name=strategy.__name__)
    sections = {**sections, "strategy": {**sections.get("strategy", {}), **chosen}}
    sections.setdefault("model", {"enabled": False})
    with tempfile.TemporaryDirectory(prefix="trireme-strategy-") as tmp:
        config = replay_config(Path(tmp), [Path(p).resolve() for p in data], **sections)
        report = trio.run(replay, config)
        db = sqlite3.connect(report.journal_path)
        try:
            rows = db.execute("SELECT kind, payload FROM journal ORDER BY id").fetchall()
        finally:
            db.close()
    return StrategyRun(report=report, records=[(k, orjson.loads(p)) for k, p in rows])

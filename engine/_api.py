"""The Python API for research: :func:`backtest` runs a replay and returns DataFrames.

It works the same in a plain script and in Jupyter. A notebook's kernel already
runs an asyncio event loop in its thread, where ``trio.run`` refuses to start (and
``await run_replay(...)`` fails, since the engine is Trio-only): there the replay
runs in a fresh thread with its own ``trio.run`` and :func:`backtest` waits for it.
Without a running loop it runs in the calling thread.

The DataFrames are read from the run's journal (SQLite), so they are what the run
recorded, not what it printed::

    import engine
    result = engine.backtest("config.toml", data=["data/freqtrade"], **{"risk.capital": 5000})
    result.trades.groupby("symbol").net_pnl.sum()
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from ._config import Config, Override, env_overrides, load_config
from ._errors import ConfigError
from ._logging import make_logger
from ._replay import run_replay
from ._report import RunReport
from .results import read_trades

if TYPE_CHECKING:
    import pandas as pd

_ORIGIN = "backtest()"
_ORDER_EVENTS = (
    "OrderSubmitted",
    "OrderAccepted",
    "OrderFilled",
    "OrderDenied",
    "OrderRejected",
    "OrderExpired",
    "OrderCanceled",
)


@attrs.frozen(kw_only=True, eq=False)
class Result:
    """What :func:`backtest` returns.

    Attributes:
        report: the run's :class:`~engine.RunReport`.
        summary: the report as a dict (what ``--report`` writes as JSON).
        orders: one row per order sent: ``client_order_id``, ``symbol``, ``side``
            (1 buy, -1 sell), ``qty``, ``purpose``, ``ref_price``, ``ts`` (UTC),
            ``status`` (the order's last event: ``OrderFilled``, ``OrderDenied``...).
        fills: one row per fill (the journal's ``OrderFilled`` records), ``ts`` UTC.
        trades: one row per round trip (:class:`engine.results.Trade`: side, entry and
            exit, hold, exit reason, fees, funding, PnL), entry and exit times UTC.
        equity: the equity curve, ``ts`` (UTC) and ``equity`` (USDT, the start
            capital included), as the report carries it.
        text: the summary as the command line prints it.
    """

    report: RunReport
    summary: dict[str, Any]
    orders: pd.DataFrame
    fills: pd.DataFrame
    trades: pd.DataFrame
    equity: pd.DataFrame
    text: str

    @property
    def journal_path(self) -> Path:
        """The run's journal."""
        return Path(self.report.journal_path)

    def __repr__(self) -> str:
        return (
            f"<Result {len(self.report.symbols)} symbol(s), {self.report.fills} fills, "
            f"{len(self.trades)} trades, net PnL {self.report.net_pnl:,.4f}, "
            f"journal {self.report.journal_path}>"
        )


def _overrides(overrides: Mapping[str, Any]) -> list[Override]:
    out = []
    for key, value in overrides.items():
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise ConfigError(_ORIGIN, str(key), "expected a dotted key such as risk.capital")
        out.append(Override(key=key, value=value, origin=_ORIGIN))
    return out


def make_config(
    config_or_path: Config | str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """The configuration :func:`backtest` runs: a file (the bundled one without a path),
    then ``TRIREME__*`` environment variables, then the dotted-key overrides, as the
    command line layers them.

    Without a path the journal and the log go under the current directory
    (``runs/``, ``logs/``), as the command line does.

    Raises:
        ConfigError: a bad file or override, naming the key; overrides given with a
            :class:`~engine.Config` object (apply them with ``attrs.evolve`` instead,
            or pass the file's path).
    """
    extra = _overrides(overrides or {})
    if isinstance(config_or_path, Config):
        if extra:
            raise ConfigError(
                _ORIGIN, extra[0].key, "overrides need a config path, not a Config object"
            )
        return config_or_path
    defaults: list[Override] = []
    if config_or_path is None:
        from ._cli import bundled_config  # the CLI's notion of the default config

        config_or_path = bundled_config()
        origin = "default (no config path)"
        defaults = [
            Override(key="journal.dir", value=str(Path.cwd() / "runs"), origin=origin),
            Override(
                key="logging.path", value=str(Path.cwd() / "logs/trireme.jsonl"), origin=origin
            ),
        ]
    environment = env_overrides(os.environ)
    return load_config(config_or_path, overrides=[*defaults, *environment, *extra])


def _loop_running() -> bool:
    """Whether this thread runs an event loop (asyncio, as Jupyter's kernel, or Trio)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return True
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def _run_in_thread(fn: Any) -> RunReport:
    """``trio.run(fn)`` in a new thread; this thread waits (its own loop is blocked
    meanwhile, as for any long synchronous call in a notebook cell)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["report"] = trio.run(fn)
        except BaseException as exc:  # handed to the caller's thread, re-raised there
            box["error"] = exc

    thread = threading.Thread(target=target, name="trireme-backtest")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["report"]


def backtest(
    config_or_path: Config | str | Path | None = None,
    data: str | Path | Sequence[str | Path] | None = None,
    overrides: Mapping[str, Any] | None = None,
    **more: Any,
) -> Result:
    """Replay market data through the engine and return the results as DataFrames.

    Args:
        config_or_path: a TOML config file, a :class:`~engine.Config`, or None for
            the bundled config (its sample capture; journal under ``./runs``).
        data: files or directories to replay (captures, Binance public-data CSV,
            LEAN zips, a Freqtrade data directory); None: the config's ``data.paths``.
        overrides: dotted config keys and values, ``{"strategy.fast": 5}``.
        **more: more overrides as keyword arguments (``**{"risk.capital": 5000}``);
            these win over ``overrides``.

    Returns:
        The :class:`Result`.

    Raises:
        ConfigError: a bad config or override.
        DataError: the data cannot be found or read.
        ActorFailedError: the replay failed (see the log).
    """
    config = make_config(config_or_path, {**(overrides or {}), **more})
    if data is None:
        paths = None
    elif isinstance(data, str | Path):
        paths = [str(data)]
    else:
        paths = [str(p) for p in data]
    log, log_file = make_logger(
        config.logging.path, config.logging.level, base_dir=Path(config.base_dir)
    )

    async def main() -> RunReport:
        return await run_replay(config, data=paths, log=log)

    try:
        report = _run_in_thread(main) if _loop_running() else trio.run(main)
    finally:
        if log_file is not None:
            log_file.close()
    return result_of(report)


def result_of(report: RunReport) -> Result:
    """The :class:`Result` of a finished run (its journal read into DataFrames)."""
    import pandas as pd  # research only: the engine itself does not need pandas

    from ._report import summary_text

    journal = Path(report.journal_path)
    records = _journal_rows(journal)
    fills = pd.DataFrame([p for kind, p in records if kind == "OrderFilled"])
    last_event = {p["client_order_id"]: kind for kind, p in records if kind in _ORDER_EVENTS}
    orders = pd.DataFrame(
        [
            {**p, "status": last_event.get(p["client_order_id"], "SubmitOrder")}
            for kind, p in records
            if kind == "SubmitOrder"
        ]
    )
    trades = pd.DataFrame([attrs.asdict(t) for t in read_trades(journal)])
    curve = report.equity_curve
    equity = pd.DataFrame({"ts": curve.get("ts", []), "equity": curve.get("equity", [])})
    for frame, columns in (
        (orders, ("ts_event", "ts_init")),
        (fills, ("ts_event", "ts_init")),
        (trades, ("entry_ts", "exit_ts")),
        (equity, ("ts",)),
    ):
        for column in columns:
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], unit="ns", utc=True)
    for frame in (orders, fills):
        if "ts_event" in frame:
            frame.rename(columns={"ts_event": "ts"}, inplace=True)
    return Result(
        report=report,
        summary=attrs.asdict(report),
        orders=orders,
        fills=fills,
        trades=trades,
        equity=equity,
        text=summary_text(report),
    )


def _journal_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The journal's order records, in id order, as ``(kind, payload)``."""
    import sqlite3

    from ._errors import JournalError

    kinds = ("SubmitOrder", *_ORDER_EVENTS)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute(
                f"SELECT kind, payload FROM journal WHERE kind IN ({','.join('?' * len(kinds))})"
                " ORDER BY id",
                kinds,
            ).fetchall()
    except sqlite3.Error as exc:
        raise JournalError(f"{path}: cannot read the journal ({exc})") from exc
    return [(kind, orjson.loads(payload)) for kind, payload in rows]

"""A user's strategy file, outside the repository, through the real CLI in every mode
(issue 13: "a strategy written only from README, in a file outside the repository,
replays, paper-trades and (against the loopback exchange) live-trades with each order
type").

``examples/strategies/order_types.py`` is copied into ``tmp_path`` and selected as
README's "Your own strategy" says (``strategy.path``, ``strategy.name``,
``[strategy.params]``). ``OrderTour`` enters six times, once with each entry order a
user strategy can ask for (MARKET; LIMIT GTC resting behind the touch, cancelled at
``strategy.entry_timeout_ms``; LIMIT IOC and FOK through the touch; LIMIT GTX at its own
touch, filled as maker or cancelled at the timeout; LIMIT GTX through the opposite
touch, which the exchange refuses), and exits each position by time with the engine's
reduce-only MARKET order; ``[exits] stop_bps`` with
``venue.protective_stop`` rests a STOP_MARKET, and ``target_bps`` with
``venue.protective_target`` a TAKE_PROFIT_MARKET, on the exchange while each position is
held. ``Quoter`` (a ``QuotingStrategy`` in the same file) rests post-only quotes,
amends them in place (cancel-replace) and cancels one.

Each run is ``python -m engine --config ...`` in a subprocess: replay on the bundled
sample; paper and live against ``python -m engine sim-exchange`` (a second subprocess,
playing the sample at 4x). A run is stopped (SIGINT) once its journal, and in live
the exchange's books too, show the strategy's work finished: a condition polled, not a
pause. What was placed is checked in the journal and, live, in the exchange's own
records through its signed REST API (``allOrders``, ``allAlgoOrders``, as ccxt reads
them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _loopback import KEY, SECRET, free_port, wait_for

from engine.venues.binance import venue_client_order_id
from engine.venues.sim._exchange_api import sign

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/strategies/order_types.py"
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
# The exchange plays the sample at 4x: fast, and the market moves little while a loaded
# machine's engine lags behind it (a post-only price 30 bps through the touch still
# crosses when it arrives).
SPEED = 4
GUARD_S = 600  # a hang guard, not a wait: every wait below is for a condition
# The tour's entries in order (examples/strategies/order_types.py, OrderTour.entry_order).
TOUR = ("MARKET", "LIMIT GTC", "LIMIT IOC", "LIMIT FOK", "LIMIT GTX", "LIMIT GTX")
RESTING, CROSSING = 4, 5  # the GTX behind its own touch; the one through the other
GTX_REFUSED = "-5022"
FINAL = ("OrderRejected", "OrderCanceled", "OrderExpired", "OrderDenied")

TOUR_CONFIG = """
[strategy]
path = "order_types.py"   # relative to this file
name = "OrderTour"
entry_timeout_ms = {timeout_ms}   # a resting limit entry is cancelled this much later

[strategy.params]
every = 300
hold = 300
max_entries = 6

[exits]
stop_bps = 50.0
target_bps = 50.0

[risk]
max_orders_per_second = 100   # at 4x pace the tour's orders come 4x as fast
"""

QUOTER_CONFIG = """
[strategy]
path = "order_types.py"
name = "Quoter"
exit_retry_ms = 1000

[strategy.params]
qty = 0.002
max_inventory = 0.02
offset_ticks = 5
refresh_ticks = 2
min_life_ms = 400.0
pull_after = 6

[risk]
max_orders_per_second = 20
"""
# At 4x pace a post-only quote is often crossed before it arrives: a -5022 refusal is
# not an execution error (risk core), so the default trigger must not halt the quoter.


# -- files, processes, journals ---------------------------------------------------------


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A directory outside the repository holding the user's strategy file."""
    home = tmp_path / "my_strategies"
    home.mkdir()
    shutil.copy(EXAMPLE, home / "order_types.py")
    assert ROOT not in home.resolve().parents
    return home


def env() -> dict[str, str]:
    return dict(os.environ, SIM_API_KEY=KEY, SIM_API_SECRET=SECRET, PYTHONUNBUFFERED="1")


def rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The journal's records in order (none while it is not there yet)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            got = db.execute("SELECT kind, payload FROM journal ORDER BY id").fetchall()
    except sqlite3.Error:
        return []
    return [(kind, json.loads(payload)) for kind, payload in got]


def of(records: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [p for k, p in records if k == kind]


def order_name(order: dict[str, Any]) -> str:
    """``MARKET`` or ``LIMIT <tif>`` of a journaled SubmitOrder (a default is left out)."""
    if order["order_type"] == "MARKET":
        return "MARKET"
    return f"{order['order_type']} {order.get('time_in_force', 'GTC')}"


def unfinished(records: list[tuple[str, dict[str, Any]]]) -> set[str]:
    """Orders journaled as submitted with no final event yet."""
    final = {p["client_order_id"] for kind in FINAL for p in of(records, kind)}
    final |= {
        f["client_order_id"] for f in of(records, "OrderFilled") if f["cum_qty"] >= f["order_qty"]
    }
    return {o["client_order_id"] for o in of(records, "SubmitOrder")} - final


def write_config(user_dir: Path, head: str, body: str) -> Path:
    path = user_dir / "trireme.toml"
    path.write_text(head + body)
    return path


COMMON = """
[journal]
dir = "runs"

[logging]
path = "engine.jsonl"

[hardware]
enabled = false
"""


def feeds(ws: int, rest: int) -> str:
    return f"""
[data]
symbols = ["BTCUSDT"]

[feeds]
ws_url = "ws://127.0.0.1:{ws}"
rest_url = "http://127.0.0.1:{rest}"
streams = ["bookTicker", "trade", "depth@0ms"]
"""


@contextlib.contextmanager
def sim_exchange(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """``python -m engine sim-exchange`` on the sample at ``SPEED``; its (ws, REST) ports."""
    ws, rest = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "engine", "sim-exchange", "--data", str(SAMPLE),
        "--port", str(ws), "--rest-port", str(rest), "--speed", str(SPEED),
        "--log", str(tmp_path / "exchange.jsonl"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("sim-exchange:")
        yield ws, rest
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()


def run_until(
    config: Path, mode: str, done: Callable[[Path], bool] | None, *extra: str, poll_s: float = 0.05
) -> tuple[Path, str, dict[str, Any]]:
    """Run the engine CLI on ``config`` to its end (``done`` None: a replay), or until
    ``done(journal)`` and then SIGINT it; its journal, printed summary and ``--report``."""
    user_dir = config.parent
    out = user_dir / f"{mode}.out"
    report = user_dir / f"{mode}-report.json"
    cmd = [sys.executable, "-m", "engine", "--config", str(config), "--report", str(report)]

    def journal() -> Path | None:
        return next(iter(sorted((user_dir / "runs").glob(f"{mode}-*.sqlite"))), None)

    with out.open("w") as stdout:
        proc = subprocess.Popen([*cmd, *extra], cwd=user_dir, env=env(), stdout=stdout)
        try:
            if done is not None:
                path = wait_for(journal, "a journal", proc)
                wait_for(lambda: done(path), "the strategy's orders to finish", proc, poll_s=poll_s)
        finally:
            if done is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            proc.wait(timeout=GUARD_S)
    assert proc.returncode == 0, out.read_text()
    path = journal()
    assert path is not None
    return path, out.read_text(), json.loads(report.read_text())


def tour_done(journal: Path) -> bool:
    """Six entries sent, every order final, flat again."""
    records = rows(journal)
    entries = [o for o in of(records, "SubmitOrder") if o["purpose"] == "ENTRY"]
    moves = of(records, "PositionChanged")
    return (
        len(entries) == len(TOUR)
        and not unfinished(records)
        and bool(moves)
        and moves[-1]["target"] == "IDLE"
    )


def check_tour(records: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """The tour's six entries in order, each ended as it should; every exit a filled
    reduce-only MARKET order, one per position. Returns client order id -> order name."""
    submits = of(records, "SubmitOrder")
    entries = [o for o in submits if o["purpose"] == "ENTRY"]
    assert [order_name(o) for o in entries] == list(TOUR)
    filled = {
        f["client_order_id"] for f in of(records, "OrderFilled") if f["cum_qty"] >= f["order_qty"]
    }
    traded = {f["client_order_id"] for f in of(records, "OrderFilled")}
    rejected = {r["client_order_id"]: r["reason"] for r in of(records, "OrderRejected")}
    canceled = {c["client_order_id"] for c in of(records, "OrderCanceled")}
    expired = {c["client_order_id"] for c in of(records, "OrderExpired")}
    timed_out = {
        c["client_order_id"] for c in of(records, "CancelOrder") if c["reason"] == "entry_timeout"
    }
    for k, order in enumerate(entries):
        cid = order["client_order_id"]
        if k == CROSSING:  # post-only through the opposite touch: would take, refused
            assert rejected[cid].startswith(GTX_REFUSED), rejected.get(cid)
            assert cid not in traded
        elif TOUR[k] == "LIMIT GTC":  # rests far behind the touch until the timeout
            assert cid in timed_out and cid in canceled, f"GTC entry {cid} was not timed out"
        elif k == RESTING:  # a maker order: filled, or timed out, or crossed on its way
            assert (
                cid in filled
                or (cid in timed_out and cid in canceled)
                or rejected.get(cid, "").startswith(GTX_REFUSED)
            ), cid
        elif TOUR[k] == "LIMIT IOC":  # what the touch held filled, the rest expired
            assert cid in filled or (cid in traded and cid in expired), cid
        elif TOUR[k] == "LIMIT FOK":  # all or nothing
            assert cid in filled or (cid in expired and cid not in traded), cid
        else:
            assert cid in filled, f"{TOUR[k]} entry {cid} did not fill"
    exits = [o for o in submits if o["purpose"] == "EXIT"]
    assert exits and all(o["reduce_only"] and o["order_type"] == "MARKET" for o in exits)
    closed = [o["client_order_id"] for o in exits if o["client_order_id"] in filled]
    positions = [o for o in entries if o["client_order_id"] in traded]
    assert len(closed) == len(positions)  # each position closed once
    assert [m["target"] for m in of(records, "PositionChanged")][-1] == "IDLE"
    return {o["client_order_id"]: order_name(o) for o in submits}


def check_header(summary: str, report: dict[str, Any], user_dir: Path, name: str) -> None:
    """The summary's first line and the report name the strategy by file and class."""
    label = f"{(user_dir / 'order_types.py').resolve()}:{name}"
    assert summary.splitlines()[0].endswith(f"symbols BTCUSDT, strategy {label}"), summary
    assert report["strategy"] == label


# -- the exchange's own records ---------------------------------------------------------


class ExchangeBooks:
    """The loopback exchange's records through its signed REST API."""

    def __init__(self, rest: int) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{rest}", timeout=30)

    def get(self, path: str, **params: str) -> Any:
        # The exchange's clock is the wall clock (sim-exchange's default).
        query = urllib.parse.urlencode({**params, "timestamp": str(time.time_ns() // 1_000_000)})
        query += "&signature=" + sign(SECRET, query)
        r = self.http.get(f"{path}?{query}", headers={"X-MBX-APIKEY": KEY})
        r.raise_for_status()
        return r.json()

    def close(self) -> None:
        self.http.close()

    def orders(self) -> list[dict[str, Any]]:
        return self.get("/fapi/v1/allOrders", symbol="BTCUSDT", limit="1000")

    def algos(self) -> list[dict[str, Any]]:
        return self.get("/fapi/v1/allAlgoOrders", symbol="BTCUSDT")

    def settled(self) -> bool:
        """Nothing open at the exchange: no order, no conditional order."""
        return not self.get("/fapi/v1/openOrders", symbol="BTCUSDT") and not self.get(
            "/fapi/v1/openAlgoOrders", symbol="BTCUSDT"
        )


def by_engine_id(
    records: list[tuple[str, dict[str, Any]]], books: ExchangeBooks
) -> dict[str, dict[str, Any]]:
    """Engine client order id -> the exchange's order; each exchange order is one of
    the journal's (nothing placed that the engine did not send, nothing twice)."""
    venue_ids = {
        venue_client_order_id(o["symbol"], o["client_order_id"], o["ts_event"], o["seq"]): o[
            "client_order_id"
        ]
        for o in of(records, "SubmitOrder")
    }
    out: dict[str, dict[str, Any]] = {}
    for order in books.orders():
        cid = venue_ids[order["clientOrderId"]]
        assert cid not in out, f"{cid} placed twice"
        out[cid] = order
    return out


def journal_qty(records: list[tuple[str, dict[str, Any]]], cid: str) -> float:
    return round(
        sum(f["last_qty"] for f in of(records, "OrderFilled") if f["client_order_id"] == cid), 9
    )


# -- the tests ----------------------------------------------------------------------------


def test_replay(user_dir):
    tour = TOUR_CONFIG.format(timeout_ms=3000)  # market time
    config = write_config(user_dir, f'[data]\npaths = ["{SAMPLE}"]\n' + COMMON, tour)
    journal, summary, report = run_until(config, "replay", None)
    check_tour(rows(journal))
    check_header(summary, report, user_dir, "OrderTour")
    assert report["mode"] == "replay"


def test_paper(user_dir, tmp_path):
    with sim_exchange(tmp_path) as (ws, rest):
        tour = TOUR_CONFIG.format(timeout_ms=3000 // SPEED)  # local time: 3 s of market
        config = write_config(user_dir, feeds(ws, rest) + COMMON, tour)
        journal, summary, report = run_until(config, "paper", tour_done, "--mode", "paper")
    check_tour(rows(journal))
    check_header(summary, report, user_dir, "OrderTour")


def test_live_every_order_type_at_the_exchange(user_dir, tmp_path):
    with sim_exchange(tmp_path) as (ws, rest), contextlib.closing(ExchangeBooks(rest)) as books:
        venue = f"""
[engine]
live = true

[venue]
kind = "binance"
rest_url = "http://127.0.0.1:{rest}"
ws_url = "ws://127.0.0.1:{ws}"
api_key_env = "SIM_API_KEY"
api_secret_env = "SIM_API_SECRET"
protective_stop = true
"""
        tour = TOUR_CONFIG.format(timeout_ms=3000 // SPEED)
        config = write_config(user_dir, feeds(ws, rest) + COMMON + venue, tour)
        journal, summary, report = run_until(
            config,
            "live",
            lambda j: tour_done(j) and books.settled(),
            "--mode", "live", "--i-understand-live", poll_s=0.2,
        )  # fmt: skip
        records = rows(journal)
        names = check_tour(records)
        at_exchange = by_engine_id(records, books)
        algos = books.algos()
    check_header(summary, report, user_dir, "OrderTour")
    rejected = {r["client_order_id"] for r in of(records, "OrderRejected")}
    for cid, name in names.items():
        order = at_exchange.get(cid)
        if cid in rejected:  # refused (-5022): never on the exchange's books
            assert order is None and name == "LIMIT GTX"
            continue
        if order is None:  # denied by risk before it was sent
            assert cid in {d["client_order_id"] for d in of(records, "OrderDenied")}
            continue
        kind = order["type"] if order["type"] == "MARKET" else f"LIMIT {order['timeInForce']}"
        assert kind == name
        # Each order ended at the exchange as in the journal, with the same fills.
        qty = journal_qty(records, cid)
        assert float(order["executedQty"]) == pytest.approx(qty)
        if order["status"] in ("CANCELED", "EXPIRED"):
            ended = "OrderCanceled" if order["status"] == "CANCELED" else "OrderExpired"
            assert cid in {c["client_order_id"] for c in of(records, ended)}
        else:
            assert order["status"] == "FILLED" and qty == float(order["origQty"])
        purpose = next(
            o["purpose"] for o in of(records, "SubmitOrder") if o["client_order_id"] == cid
        )
        assert order["reduceOnly"] is (purpose == "EXIT")
    placed = {names[cid] for cid in at_exchange}
    assert placed >= set(TOUR) - {"LIMIT GTX"}
    gtc = next(cid for cid in at_exchange if names[cid] == "LIMIT GTC")
    assert at_exchange[gtc]["status"] == "CANCELED"  # cancelled by the entry timeout
    # A STOP_MARKET and a TAKE_PROFIT_MARKET rested on the exchange while each position
    # was held and were cancelled when the position closed.
    traded = {f["client_order_id"] for f in of(records, "OrderFilled") if f["purpose"] == "ENTRY"}
    for order_type in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
        protective = [a for a in algos if a["orderType"] == order_type]
        assert len(protective) >= len(traded) >= 3, algos  # one at least per position
        assert {a["algoStatus"] for a in protective} <= {"CANCELED", "FINISHED", "TRIGGERED"}
        assert all(a["closePosition"] for a in protective)
    assert report["per_symbol"][0]["position_qty"] == 0.0


def test_live_quotes_rest_are_amended_and_cancelled(user_dir, tmp_path):
    def done(journal: Path) -> bool:
        records = rows(journal)
        cancelled = {
            c["client_order_id"] for c in of(records, "CancelOrder") if c["reason"] == "unquoted"
        }
        return bool(of(records, "OrderReplaced")) and bool(
            cancelled & {c["client_order_id"] for c in of(records, "OrderCanceled")}
        )

    with sim_exchange(tmp_path) as (ws, rest), contextlib.closing(ExchangeBooks(rest)) as books:
        venue = f"""
[engine]
live = true

[venue]
kind = "binance"
rest_url = "http://127.0.0.1:{rest}"
ws_url = "ws://127.0.0.1:{ws}"
api_key_env = "SIM_API_KEY"
api_secret_env = "SIM_API_SECRET"
protective_stop = false   # quotes only: no stop under the inventory here
"""
        config = write_config(user_dir, feeds(ws, rest) + COMMON + venue, QUOTER_CONFIG)
        journal, summary, report = run_until(
            config, "live", done, "--mode", "live", "--i-understand-live"
        )
        wait_for(books.settled, "the quotes cancelled at the stop", poll_s=0.5)
        records = rows(journal)
        at_exchange = by_engine_id(records, books)
    check_header(summary, report, user_dir, "Quoter")
    submits = of(records, "SubmitOrder")
    quotes = [o for o in submits if o["purpose"] == "ENTRY"]
    assert quotes and {order_name(o) for o in quotes} == {"LIMIT GTX"}
    for o in quotes:
        order = at_exchange.get(o["client_order_id"])
        if order is None:  # denied by risk, or refused as post-only
            continue
        assert (order["type"], order["timeInForce"]) == ("LIMIT", "GTX")
        assert order["status"] in ("FILLED", "CANCELED")
        assert float(order["executedQty"]) == pytest.approx(
            journal_qty(records, o["client_order_id"])
        )
    # Cancel-replace: an amended order rests at the exchange at its new price, not the
    # one it was placed at.
    replaced = of(records, "OrderReplaced")
    assert replaced
    # The price of each order's last confirmed amendment (a later amend may be refused:
    # the order filled or was cancelled meanwhile), which the exchange must hold.
    amended = {r["client_order_id"]: r["price"] for r in replaced}
    placed_at = {o["client_order_id"]: o["price"] for o in quotes}
    for cid, price in amended.items():
        assert float(at_exchange[cid]["price"]) == pytest.approx(price, abs=0.05), cid
    moved = [cid for cid, price in amended.items() if abs(price - placed_at[cid]) >= 0.1 - 1e-9]
    assert moved, "no amendment moved a quote"
    # The strategy's cancel (its ask pulled): cancelled at the exchange.
    pulled = [c["client_order_id"] for c in of(records, "CancelOrder") if c["reason"] == "unquoted"]
    assert any(at_exchange[cid]["status"] == "CANCELED" for cid in pulled if cid in at_exchange)
    fills = of(records, "OrderFilled")
    assert all(f["liquidity"] == "MAKER" for f in fills)


# -- the strategy in the summary header ---------------------------------------------------


def test_the_header_names_a_shipped_strategy_by_kind(tmp_path):
    import engine

    result = engine.backtest(
        ROOT / "config.toml",
        **{"journal.dir": str(tmp_path / "runs"), "logging.path": str(tmp_path / "e.jsonl")},
    )
    assert result.report.strategy == "ema_cross"
    first = result.text.splitlines()[0]
    assert first == "trireme replay: 1 file(s), symbols BTCUSDT, strategy ema_cross"


def test_a_user_strategy_is_named_by_its_resolved_file_and_class(user_dir):
    from engine import config_from_dict
    from engine.strategy import strategy_label

    doc = {"strategy": {"path": "order_types.py", "name": "Quoter"}}
    config = config_from_dict(doc, source="<test>", base_dir=str(user_dir))
    assert strategy_label(config) == f"{user_dir.resolve() / 'order_types.py'}:Quoter"


# -- the entry timeout in paper and live --------------------------------------------------


@pytest.mark.parametrize("entry_order", ["limit_gtc", "market"])
def test_the_symbol_core_cancels_a_limit_entry_open_past_its_timeout(sample, entry_order):
    """Paper and live (the actors call ``expire_entry`` each step; replay's driver keeps
    its own timer): a limit entry still open ``entry_timeout_ms`` after it was sent is
    cancelled once, and the cancel ends the entry (IDLE). A market entry is never."""
    import fsm
    from engine._config import StrategySection
    from engine.core import ExecutionCore, SymbolCore
    from engine.feeds import CaptureStats
    from engine.feeds._tape import load_tape
    from engine.ledger import PositionLedger
    from engine.messages import CancelOrder
    from engine.testing import quiet_logger
    from engine.venues.sim import SimVenue

    ledger = PositionLedger()
    config = StrategySection(
        sample_ms=200, fast=3, slow=8, rsi_period=5, entry_order=entry_order,
        limit_offset_bps=50.0, entry_timeout_ms=1000.0,
    )  # fmt: skip
    core = SymbolCore(symbol="BTCUSDT", config=config, log=quiet_logger(), ledger=ledger)
    venue = SimVenue(latency_ns=0, taker_fee_rate=5e-4, ledger=ledger)
    execution = ExecutionCore(venue=venue, log=quiet_logger())
    ticks = load_tape([sample], ["BTCUSDT"], stats=CaptureStats()).ticks["BTCUSDT"]
    index, signal = core.scan(ticks, 0, len(ticks))
    core.on_signal(ticks, index, signal)
    (entry,), _ = core.take()
    core.on_events(execution.submit(entry), entry.ts_event)
    assert core.position.state is fsm.PositionState.ORDERING
    core.take()
    core.expire_entry(entry.ts_event + 999_999_999)  # not yet
    assert core.take() == ([], [])
    core.expire_entry(entry.ts_event + 1_000_000_000)
    commands, _ = core.take()
    if entry_order == "market":
        assert commands == []
        return
    (cancel,) = commands
    assert isinstance(cancel, CancelOrder) and cancel.reason == "entry_timeout"
    assert cancel.client_order_id == entry.client_order_id
    core.expire_entry(entry.ts_event + 2_000_000_000)  # sent once
    assert core.take() == ([], [])
    core.on_events(execution.cancel(cancel), cancel.ts_event)
    assert core.position.state is fsm.PositionState.IDLE

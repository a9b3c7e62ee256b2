"""The order book: exact prices, the sync protocol, and the real captures.

The real-capture tests replay each symbol's diffs and REST snapshot in the order
they were received through :class:`BookSync`, next to a naive model that follows
Binance's "How to manage a local order book correctly" word for word with a
``dict[price_str, qty_str]`` per side, and compare the whole book after every
applied diff. They then check every ``bookTicker`` against the book.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
import json
import math
from collections import Counter
from decimal import Decimal
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.book
from engine import EngineError
from engine.book import (
    TRANSITIONS,
    ApplyResult,
    BookDecodeError,
    BookError,
    BookPriceError,
    BookSync,
    BookTransitionError,
    DepthSnapshot,
    OrderBook,
    PriceGrid,
    Side,
    SyncState,
    decode_levels,
    decode_snapshot,
)
from engine.feeds._capture import CaptureStats, DepthUpdate, open_capture, parse_line

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BTC = DATA / "external/hftbacktest/btcusdt_20240808.gz"
CRYPTOFEED = DATA / "external/cryptofeed"


# -- helpers ---------------------------------------------------------------------


def diff(first: int, last: int, prev: int, bids=(), asks=(), symbol: str = "TEST") -> DepthUpdate:
    """A ``depthUpdate`` as the feed decodes it: levels kept as raw JSON."""
    return DepthUpdate(
        symbol=symbol,
        first_id=first,
        last_id=last,
        prev_last_id=prev,
        bids=msgspec.Raw(msgspec.json.encode([list(x) for x in bids])),
        asks=msgspec.Raw(msgspec.json.encode([list(x) for x in asks])),
    )


def snapshot(last_update_id: int, bids=(), asks=()) -> DepthSnapshot:
    body = {"lastUpdateId": last_update_id, "E": 1, "T": 2, "bids": bids, "asks": asks}
    return decode_snapshot(msgspec.json.encode(body))


def side_dict(book: OrderBook, side: Side) -> dict[str, float]:
    """A side as ``{price_text: qty}`` (through the grid, for readable asserts)."""
    assert book.grid is not None
    return {book.grid.text(t): q for t, q in book.depth(side).items()}


class NaiveBook:
    """The documented procedure, nothing more: ``dict[price_str, qty_str]`` per side.

    Independent of the book under test: levels are decoded by msgspec's generic
    decoder, prices become ticks through :class:`decimal.Decimal`, and a zero is
    ``Decimal(qty) == 0``. ``*_ticks`` mirror the string dicts as ``{ticks: qty}``
    (updated per level) so that a whole side compares in C.
    """

    def __init__(self, decimals: int) -> None:
        self.unit = Decimal(1).scaleb(-decimals)
        self.sides: tuple[dict[str, str], dict[str, str]] = ({}, {})
        self.ticks: tuple[dict[int, float], dict[int, float]] = ({}, {})
        self.pending: list[DepthUpdate] = []
        self.last: int | None = None
        self.started = False

    def to_ticks(self, price: str) -> int:
        n = Decimal(price) / self.unit
        assert n == n.to_integral_value(), f"{price} has more places than {self.unit}"
        return int(n)

    def _set(self, side: int, price: str, qty: str) -> None:
        if Decimal(qty) == 0:
            self.sides[side].pop(price, None)
            self.ticks[side].pop(self.to_ticks(price), None)
        else:
            self.sides[side][price] = qty
            self.ticks[side][self.to_ticks(price)] = float(qty)

    def on_snapshot(self, raw: bytes) -> list[DepthUpdate]:
        """Load a snapshot and process what was buffered; returns the diffs applied."""
        body = msgspec.json.decode(raw)
        for side, key in ((0, "bids"), (1, "asks")):
            self.sides[side].clear()
            self.ticks[side].clear()
            for price, qty in body[key]:
                self._set(side, price, qty)
        self.last = body["lastUpdateId"]
        self.started = False
        pending, self.pending = self.pending, []
        return [d for d in pending if self.offer(d)]

    def offer(self, d: DepthUpdate) -> bool:
        """Steps 3-6 of the procedure; returns whether ``d`` was applied."""
        if self.last is None:
            self.pending.append(d)
            return False
        if not self.started:
            if d.last_id < self.last:
                return False
            assert d.first_id <= self.last <= d.last_id, "snapshot does not meet the stream"
            self.started = True
        else:
            assert d.prev_last_id == self.last, f"gap at u={d.last_id}"
        for side, raw in ((0, d.bids), (1, d.asks)):
            for price, qty in msgspec.json.decode(raw):
                self._set(side, price, qty)
        self.last = d.last_id
        return True


def compare(book: OrderBook, naive: NaiveBook, full_order: bool) -> str | None:
    """Where the book differs from the naive model, or None.

    Every call compares the whole content of both sides (``{ticks: qty}``), the
    order of the best 50 levels a side and the best bid/ask; ``full_order`` also
    compares the order of every level.
    """
    for side in Side:
        if book.depth(side) != naive.ticks[side]:
            extra = set(book.depth(side).items()) ^ set(naive.ticks[side].items())
            return f"{side.name} levels differ: {sorted(extra)[:6]}"
        if len(naive.sides[side]) != len(naive.ticks[side]):
            return f"{side.name}: one price written two ways"
    top = heapq.nlargest(50, naive.ticks[0]), heapq.nsmallest(50, naive.ticks[1])
    for side in Side:
        got = book.tick_levels(side, 50)[0].tolist()
        if got != top[side]:
            return f"{side.name} top 50 order differs"
        if full_order:
            order = sorted(naive.ticks[side], reverse=side is Side.BID)
            if book.tick_levels(side)[0].tolist() != order:
                return f"{side.name} full order differs"
    best = book.best_bid(), book.best_ask()
    for side, level in zip(Side, best, strict=True):
        if (level is None) != (not top[side]):
            return f"{side.name}: best level presence differs"
        if level is not None:
            t = top[side][0]
            assert book.grid is not None
            if level != (book.grid.price(t), naive.ticks[side][t]):
                return f"{side.name}: best level {level} differs"
    return None


# -- real captures -----------------------------------------------------------------


class Ticker(msgspec.Struct):
    """A ``bookTicker`` with its prices as the exchange wrote them."""

    u: int
    s: str
    b: str
    B: str
    a: str
    A: str
    T: int = 0


class _TickerEnvelope(msgspec.Struct):
    data: Ticker


_TICKER = msgspec.json.Decoder(_TickerEnvelope)


@dataclasses.dataclass
class Replay:
    """What one symbol's replay saw."""

    symbol: str
    results: Counter[ApplyResult] = dataclasses.field(default_factory=Counter)
    compared: int = 0
    snapshots: int = 0
    gaps: int = 0
    mismatches: list[str] = dataclasses.field(default_factory=list)
    # bookTicker against the book, by update id
    tickers: int = 0
    tickers_before_sync: int = 0
    tickers_after_last_diff: int = 0
    tickers_exact: int = 0
    tickers_exact_ok: int = 0
    tickers_bracketed: int = 0
    tickers_bracketed_ok: int = 0
    ticker_failures: list[str] = dataclasses.field(default_factory=list)
    # bookTicker against the book, by time
    by_time: int = 0
    by_time_prices_ok: int = 0
    by_time_all_ok: int = 0


def _changed_ticks(book: OrderBook, d: DepthUpdate) -> tuple[set[int], set[int]]:
    """The prices (ticks) a diff changes, per side."""
    assert book.grid is not None
    to_ticks = book.grid.ticks
    return (
        {to_ticks(price) for price, _qty in msgspec.json.decode(d.bids)},
        {to_ticks(price) for price, _qty in msgspec.json.decode(d.asks)},
    )


def _better_levels(book: OrderBook, side: Side, p: int) -> list[int]:
    """The book's levels better than ``p`` on a side (usually none or a few)."""
    best = book.best_ticks()[side]
    if best is None or (best <= p if side is Side.BID else best >= p):
        return []
    for n in (16, None):
        ticks = book.tick_levels(side, n)[0].tolist()
        better = [t for t in ticks if (t > p if side is Side.BID else t < p)]
        if len(better) < len(ticks) or n is None:
            return better
    raise AssertionError("unreachable")


def _consistent(book: OrderBook, t: Ticker, changed: tuple[set[int], set[int]]) -> str | None:
    """Whether a bookTicker can be the book's top at its update id ``t.u``.

    The book holds the state at ``L = book.last_update_id <= t.u``. When the next
    diff covers ``U..u`` with ``U <= t.u < u``, some of its changes happened
    before the ticker and some after, and only its final quantities are known:
    ``changed`` holds its prices. The ticker must then satisfy, per side: every
    book level better than the ticker's price is among the changed prices; and if
    the ticker's price is not, the book has that level with exactly the ticker's
    quantity. When no update lies between ``L`` and ``t.u`` (``t.u == L``, or
    ``t.u < U``), ``changed`` is empty and this is exact equality of the best
    price and quantity on both sides.
    """
    assert book.grid is not None
    for side, price, qty in ((Side.BID, t.b, t.B), (Side.ASK, t.a, t.A)):
        p = book.grid.ticks(price)
        for level in _better_levels(book, side, p):
            if level not in changed[side]:
                return f"u={t.u}: book {side.name} {level} better than ticker {price}, unchanged"
        if p not in changed[side] and book.depth(side).get(p) != float(qty):
            got = book.depth(side).get(p)
            return f"u={t.u}: {side.name} {price} qty {qty} but book has {got}"
    return None


def replay(
    symbol: str,
    events: list[tuple[str, object]],
    decimals: int,
    *,
    infer: bool = False,
    full_every: int = 50,
) -> Replay:
    """Replay one symbol's ``("snapshot" | "diff" | "ticker", obj)`` events in order.

    Args:
        decimals: the symbol's price decimal places, for the naive model (and
            for the book unless ``infer``, where it takes them from the snapshot).
    """
    rep = Replay(symbol)
    sync = BookSync(OrderBook(symbol, price_decimals=None if infer else decimals))
    book = sync.book
    naive = NaiveBook(decimals)
    tickers = [obj for kind, obj in events if kind == "ticker"]
    assert all(a.u < b.u for a, b in itertools.pairwise(tickers))
    rep.tickers = len(tickers)
    next_ticker = 0
    timeline: list[tuple[int, int | None, int | None, float, float]] = []

    def record(where: str) -> None:
        rep.compared += 1
        problem = compare(book, naive, full_order=rep.compared % full_every == 0)
        if problem is not None and len(rep.mismatches) < 5:
            rep.mismatches.append(f"{where}: {problem}")
        best_bid, best_ask = book.best_ticks()
        timeline.append(
            (
                book.tx_time,
                best_bid,
                best_ask,
                book.depth(Side.BID).get(best_bid, math.nan),
                book.depth(Side.ASK).get(best_ask, math.nan),
            )
        )

    def check_tickers(upto: int, nxt: DepthUpdate | None) -> None:
        """Check the tickers with ``u < upto`` against the book as it is now."""
        nonlocal next_ticker
        changed: tuple[set[int], set[int]] | None = None
        while next_ticker < len(tickers) and tickers[next_ticker].u < upto:
            t = tickers[next_ticker]
            next_ticker += 1
            if t.u < book.last_update_id or sync.state is not SyncState.SYNCED:
                rep.tickers_before_sync += 1
                continue
            exact = t.u == book.last_update_id or nxt is None or t.u < nxt.first_id
            if exact:
                problem = _consistent(book, t, (set(), set()))
                rep.tickers_exact += 1
                rep.tickers_exact_ok += problem is None
            else:
                assert nxt is not None
                if changed is None:
                    changed = _changed_ticks(book, nxt)
                problem = _consistent(book, t, changed)
                rep.tickers_bracketed += 1
                rep.tickers_bracketed_ok += problem is None
            if problem is not None and len(rep.ticker_failures) < 5:
                rep.ticker_failures.append(problem)

    for kind, obj in events:
        if kind == "snapshot":
            raw = obj
            done = sync.on_snapshot(decode_snapshot(raw))
            applied = naive.on_snapshot(raw)
            rep.snapshots += 1
            got = [d for d, result in done if result is ApplyResult.APPLIED]
            for _d, result in done:
                rep.results[result] += 1
            if got != applied:
                rep.mismatches.append("buffered diffs: book and naive applied different ones")
            # The buffered diffs were applied inside on_snapshot: compare once after.
            record("after the snapshot and its buffered diffs")
        elif kind == "diff":
            if sync.state is SyncState.SYNCED:
                check_tickers(obj.last_id, obj)
            result = sync.on_diff(obj)
            rep.results[result] += 1
            if (result is ApplyResult.APPLIED) != naive.offer(obj):
                rep.mismatches.append(f"u={obj.last_id}: book {result.name}, naive disagrees")
            if result is ApplyResult.APPLIED:
                record(f"u={obj.last_id}")
    problem = compare(book, naive, full_order=True)
    if problem is not None:
        rep.mismatches.append(f"at the end: {problem}")
    # Tickers at the last diff's id are exact; later ones fall in a window never seen.
    check_tickers(book.last_update_id + 1, None)
    rep.tickers_after_last_diff = len(tickers) - next_ticker
    rep.gaps = sync.stats.gaps
    assert sync.state is SyncState.SYNCED

    # By time: the book after the last applied diff with T <= the ticker's T.
    times = [row[0] for row in timeline]
    assert book.grid is not None
    for t in tickers:
        i = bisect.bisect_right(times, t.T) - 1
        if i < 0:
            continue
        _T, bid, ask, bid_qty, ask_qty = timeline[i]
        rep.by_time += 1
        prices = bid == book.grid.ticks(t.b) and ask == book.grid.ticks(t.a)
        rep.by_time_prices_ok += prices
        rep.by_time_all_ok += prices and bid_qty == float(t.B) and ask_qty == float(t.A)
    return rep


def _skip_without(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} is not there (../shared/data beside the repository)")


@pytest.fixture(scope="module")
def btc_replay() -> Replay:
    _skip_without(BTC)
    stats = CaptureStats()
    events: list[tuple[str, object]] = []
    for line in open_capture(BTC):
        if b"@bookTicker" in line:
            events.append(("ticker", _TICKER.decode(line[line.find(b"{") :]).data))
        elif b'"lastUpdateId"' in line:
            events.append(("snapshot", line[line.find(b"{") :]))
        elif b"@depth" in line:
            parsed = parse_line(line, stats)
            assert parsed is not None and isinstance(parsed[1], DepthUpdate)
            events.append(("diff", parsed[1]))
    # "61800.20": 2 decimal places; the book infers them from the snapshot.
    return replay("BTCUSDT", events, 2, infer=True)


def _cryptofeed_events() -> dict[str, list[tuple[str, object]]]:
    """Each symbol's events merged by receive time (REST replies included)."""
    timed: list[tuple[float, int, str, str, object]] = []
    http = CRYPTOFEED / "BINANCE_FUTURES.http.0.0"
    for line in open_capture(http):
        if b"/depth?symbol=" not in line:
            continue
        symbol = line.split(b"symbol=")[1].split(b"&")[0].decode()
        received = float(line.split(b" -> ")[1].split(b":")[0])
        timed.append((received, -1, symbol, "snapshot", line[line.find(b"{") :]))
    stats = CaptureStats()
    for n, line in enumerate(open_capture(CRYPTOFEED / "BINANCE_FUTURES.ws.1.0")):
        parsed = parse_line(line, stats)
        if parsed is None:
            continue
        ts, msg = parsed
        assert ts is not None
        if isinstance(msg, DepthUpdate):
            timed.append((ts / 1e9, n, msg.symbol, "diff", msg))
        elif b"@bookTicker" in line:
            t = _TICKER.decode(line[line.find(b"{") :]).data
            timed.append((ts / 1e9, n, t.s, "ticker", t))
    timed.sort(key=lambda row: (row[0], row[1]))
    out: dict[str, list[tuple[str, object]]] = {}
    for _ts, _n, symbol, kind, obj in timed:
        out.setdefault(symbol, []).append((kind, obj))
    return out


def _price_decimals() -> dict[str, int]:
    """``pricePrecision`` per symbol, from the capture's exchangeInfo reply."""
    line = next(iter(open_capture(CRYPTOFEED / "BINANCE_FUTURES.0")))
    info = json.loads(line[line.find(b"{") :])
    return {s["symbol"]: s["pricePrecision"] for s in info["symbols"]}


@pytest.fixture(scope="module")
def cryptofeed_replays() -> dict[str, Replay]:
    _skip_without(CRYPTOFEED / "BINANCE_FUTURES.ws.1.0")
    decimals = _price_decimals()
    # CTKUSDT's snapshot holds 131 bids off its 0.00100 tickSize (0.50579, ...):
    # the book's grid is pricePrecision (5 places), never the tick size.
    return {
        symbol: replay(symbol, events, decimals[symbol], full_every=1)
        for symbol, events in sorted(_cryptofeed_events().items())
    }


def test_btc_book_equals_naive_rebuild_after_every_diff(btc_replay):
    rep = btc_replay
    assert rep.mismatches == []
    assert rep.gaps == 0
    assert rep.snapshots == 1
    # 6,551 diffs: 6 buffered before the snapshot (4 then dropped as stale, 2
    # applied from the buffer), 6,545 applied live.
    assert rep.results == {
        ApplyResult.BUFFERED: 6,
        ApplyResult.STALE_DROPPED: 4,
        ApplyResult.APPLIED: 6547,
    }
    assert rep.compared == 6546  # once after the snapshot (2 diffs), then after each


# Why book tickers are checked by update id, not by time.
#
# ``btcusdt@depth@0ms`` on USD-M is not per update: its diffs arrive every ~52 ms
# (median T step; max 390 ms) and each covers a range U..u of update ids, while
# bookTicker is sent on every top-of-book change (66,089 of them against 6,551
# diffs). Every ticker's ``u`` lies inside some diff's ``U..u``. A book built from
# diffs therefore has no state for most ticker instants, and "the book after the
# last diff with T <= ticker T" lags the ticker by up to one diff window: on this
# capture it has the ticker's best bid and ask prices for 62.9% of tickers and
# prices with quantities for only 1.6%.
#
# The update ids make an exact check possible: with the book at L <= ticker u,
# either nothing happened in between (the ticker's u equals the last applied u:
# 629 tickers) and the top must equal the ticker exactly, or the ticker falls
# inside the next diff's window and the check is the strongest the data allows
# (see ``_consistent``). Both must hold for every ticker once the book is synced;
# the by-time figures are asserted as measured, as a floor against regressions.
def test_btc_book_ticker_agrees_by_update_id(btc_replay):
    rep = btc_replay
    assert rep.ticker_failures == []
    assert rep.tickers == 66089
    # The snapshot and the 2 buffered diffs it lets through are one step, so the
    # first state checked is after both: the 39 earlier tickers are not checked.
    assert rep.tickers_before_sync == 39
    assert rep.tickers_after_last_diff == 0
    assert rep.tickers_exact == rep.tickers_exact_ok == 629
    assert rep.tickers_bracketed == rep.tickers_bracketed_ok == 65421


def test_btc_book_ticker_agreement_by_time_is_bounded_by_the_diff_window(btc_replay):
    rep = btc_replay
    prices = rep.by_time_prices_ok / rep.by_time
    assert rep.by_time == 66050
    assert 0.62 <= prices < 0.64  # measured 41,558 / 66,050 = 0.6292
    assert rep.by_time_all_ok / rep.by_time < 0.02  # quantities change within the window


def test_cryptofeed_books_equal_naive_rebuild_after_every_diff(cryptofeed_replays):
    assert sorted(cryptofeed_replays) == ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    for symbol, rep in cryptofeed_replays.items():
        assert rep.mismatches == [], symbol
        assert rep.gaps == 0, symbol
        assert rep.snapshots == 1, symbol
        assert rep.results[ApplyResult.APPLIED] > 100, symbol
        assert rep.results[ApplyResult.GAP] == 0, symbol
        # Each REST reply came after the first diff: the buffer path was taken.
        assert rep.results[ApplyResult.BUFFERED] >= 1, symbol


def test_cryptofeed_book_tickers_agree_by_update_id(cryptofeed_replays):
    for symbol, rep in cryptofeed_replays.items():
        assert rep.ticker_failures == [], symbol
        checked = rep.tickers_exact + rep.tickers_bracketed
        assert rep.tickers_exact_ok == rep.tickers_exact > 0, symbol
        assert rep.tickers_bracketed_ok == rep.tickers_bracketed, symbol
        assert checked + rep.tickers_before_sync + rep.tickers_after_last_diff == rep.tickers


# -- prices ------------------------------------------------------------------------


def test_public_surface_is_all():
    public = {
        n
        for n, v in vars(engine.book).items()
        if not n.startswith("_") and not (hasattr(v, "__file__") or type(v).__name__ == "module")
    }
    assert set(engine.book.__all__) == public


def test_errors_share_the_engine_root():
    for error in (BookDecodeError, BookPriceError, BookTransitionError):
        assert issubclass(error, BookError)
    assert issubclass(BookError, EngineError)


@pytest.mark.parametrize(
    ("text", "decimals", "units"),
    [
        ("61800.20", 2, 6180020),
        ("61800.2", 2, 6180020),
        ("61800.2000", 2, 6180020),
        ("1000", 2, 100000),
        ("0.00001", 5, 1),
        ("7", 0, 7),
        ("7.000", 0, 7),
    ],
)
def test_price_grid_is_exact(text, decimals, units):
    grid = PriceGrid(decimals=decimals, tick_units=1)
    assert grid.ticks(text) == units
    assert grid.price(units) == float(text)


@pytest.mark.parametrize(
    "text",
    [
        "61800.201",
        "-1.00",
        "1e3",
        "",
        ".5",
        "5.",
        " 1.00",
        "1.0 ",
        "1,00",
        "\u0661.\u0660\u0660",
        "nan",
    ],
)
def test_price_grid_rejects_what_it_cannot_hold(text):
    with pytest.raises(BookPriceError):
        PriceGrid(decimals=2, tick_units=1).ticks(text)


def test_price_grid_from_tick_size():
    grid = PriceGrid.from_tick_size("0.10")
    assert (grid.decimals, grid.tick_units) == (2, 10)
    assert grid.ticks("61800.20") == 618002
    assert grid.text(618002) == "61800.20"
    assert grid.tick_text() == "0.10"
    with pytest.raises(BookPriceError, match=r"not on the tick grid 0\.10"):
        grid.ticks("61800.25")
    with pytest.raises(BookPriceError, match="not positive"):
        PriceGrid.from_tick_size("0.00")
    assert PriceGrid.infer(["1.5", "0.125", "3"]) == PriceGrid(decimals=3, tick_units=1)


@given(
    units=st.lists(st.integers(0, 10**12), min_size=2, max_size=2),
    decimals=st.integers(0, 8),
    pad=st.integers(0, 3),
)
def test_price_grid_round_trips_and_keeps_order(units, decimals, pad):
    grid = PriceGrid(decimals=decimals, tick_units=1)
    texts = [grid.text(u) + ("0" * pad if decimals else "") for u in units]
    assert [grid.ticks(t) for t in texts] == units
    # The float of a price is float() of its text exactly, never a product's rounding.
    assert [grid.price(u) for u in units] == [float(t) for t in texts]
    assert (units[0] < units[1]) == (Decimal(texts[0]) < Decimal(texts[1]))


# -- the book ----------------------------------------------------------------------

SNAP_BIDS = [["100.00", "1.0"], ["99.50", "2.0"], ["99.00", "0.000"], ["98.00", "3.5"]]
SNAP_ASKS = [["100.50", "1.5"], ["101.00", "2.5"], ["103.00", "4.0"]]


def loaded(last_update_id: int = 100) -> OrderBook:
    book = OrderBook("TEST")
    book.apply_snapshot(last_update_id, SNAP_BIDS, SNAP_ASKS, tx_time=7)
    return book


def test_snapshot_loads_levels_and_reads_are_exact():
    book = loaded()
    assert book.synced and book.last_update_id == 100 and book.tx_time == 7
    assert book.grid == PriceGrid(decimals=2, tick_units=1)
    assert side_dict(book, Side.BID) == {"100.00": 1.0, "99.50": 2.0, "98.00": 3.5}
    assert book.best_bid() == (100.0, 1.0)
    assert book.best_ask() == (100.5, 1.5)
    assert book.best_ticks() == (10000, 10050)
    prices, qty = book.levels(Side.BID, 2)
    assert prices.tolist() == [100.0, 99.5] and qty.tolist() == [1.0, 2.0]
    prices, qty = book.levels(Side.ASK)
    assert prices.tolist() == [100.5, 101.0, 103.0] and qty.tolist() == [1.5, 2.5, 4.0]
    assert prices.dtype == qty.dtype == np.float64
    ticks, _qty = book.tick_levels(Side.ASK, 10)
    assert ticks.dtype == np.int64 and ticks.tolist() == [10050, 10100, 10300]
    assert book.levels(Side.BID, 0)[0].shape == (0,)
    assert book.imbalance(1) == pytest.approx((1.0 - 1.5) / 2.5)
    assert book.imbalance(10) == pytest.approx((6.5 - 8.0) / 14.5)
    assert book.level_count(Side.BID) == 3 and book.level_count(Side.ASK) == 3
    with pytest.raises(ValueError, match=">= 0"):
        book.levels(Side.BID, -1)
    with pytest.raises(TypeError):
        book.depth(Side.BID)[1] = 1.0  # type: ignore[index]


def test_empty_book_reads():
    book = OrderBook("TEST", price_decimals=2)
    assert book.best_bid() is None and book.best_ask() is None
    assert book.best_ticks() == (None, None)
    assert math.isnan(book.imbalance(5))
    assert book.levels(Side.ASK, 5)[0].tolist() == []
    assert not book.synced


def test_diff_before_any_snapshot_is_not_synced():
    book = OrderBook("TEST")
    assert book.apply_diff(1, 2, 0, [["1.00", "1"]], []) is ApplyResult.NOT_SYNCED
    assert book.level_count(Side.BID) == 0


def test_stale_diffs_are_dropped_until_one_spans_the_snapshot():
    book = loaded(100)
    assert book.apply_diff(90, 99, 80, [["100.00", "9"]], []) is ApplyResult.STALE_DROPPED
    assert book.best_bid() == (100.0, 1.0)
    # u == lastUpdateId is not stale (the documented rule drops u < lastUpdateId)
    # and spans it, so it is the first diff processed.
    assert book.apply_diff(95, 100, 90, [["100.00", "9"]], []) is ApplyResult.APPLIED
    assert book.best_bid() == (100.0, 9.0)
    # Once bridged, a diff that is not newer than the book is stale.
    assert book.apply_diff(95, 100, 90, [["100.00", "5"]], []) is ApplyResult.STALE_DROPPED
    assert book.best_bid() == (100.0, 9.0)


@pytest.mark.parametrize(("first", "last"), [(100, 100), (100, 120), (50, 120), (101, 120)])
def test_first_diff_must_span_last_update_id(first, last):
    book = loaded(100)
    result = book.apply_diff(first, last, 0, [["100.00", "9"]], [])
    if first <= 100 <= last:
        assert result is ApplyResult.APPLIED and book.last_update_id == last
    else:
        assert result is ApplyResult.GAP and not book.synced
        assert book.best_bid() == (100.0, 1.0)  # nothing applied
        assert book.apply_diff(121, 130, last, [], []) is ApplyResult.NOT_SYNCED


def test_pu_chain_and_gap():
    book = loaded(100)
    assert book.apply_diff(95, 105, 90, [], []) is ApplyResult.APPLIED
    assert book.apply_diff(107, 110, 105, [["99.50", "7"]], []) is ApplyResult.APPLIED
    assert book.apply_diff(115, 120, 112, [["99.50", "8"]], []) is ApplyResult.GAP
    assert not book.synced and book.last_update_id == 110
    assert side_dict(book, Side.BID)["99.50"] == 7.0


def test_level_updates_and_removals():
    book = loaded(100)
    result = book.apply_diff(
        99,
        101,
        0,
        # 100.00 removed, 99.50 changed, 99.75 new (becomes best), 50.00 absent-removed
        [["100.00", "0.000"], ["99.50", "2.5"], ["99.75", "0.1"], ["50.00", "0"]],
        [["100.50", "0"], ["100.25", "3.0"]],
    )
    assert result is ApplyResult.APPLIED
    assert side_dict(book, Side.BID) == {"99.75": 0.1, "99.50": 2.5, "98.00": 3.5}
    assert side_dict(book, Side.ASK) == {"100.25": 3.0, "101.00": 2.5, "103.00": 4.0}
    assert book.tick_levels(Side.BID)[0].tolist() == [9975, 9950, 9800]
    assert book.tick_levels(Side.ASK)[0].tolist() == [10025, 10100, 10300]
    assert book.best_bid() == (99.75, 0.1) and book.best_ask() == (100.25, 3.0)
    # Emptying a side.
    book.apply_diff(102, 103, 101, [], [["100.25", "0"], ["101.00", "0"], ["103.00", "0"]])
    assert book.best_ask() is None and book.level_count(Side.ASK) == 0


def test_snapshot_replaces_everything():
    book = loaded(100)
    book.apply_diff(99, 101, 0, [["97.00", "1"]], [])
    book.apply_snapshot(200, [["90.00", "1"]], [["91.00", "2"]])
    assert side_dict(book, Side.BID) == {"90.00": 1.0}
    assert side_dict(book, Side.ASK) == {"91.00": 2.0}
    assert book.last_update_id == 200 and book.synced
    # A new snapshot needs a new bridging diff: the old chain does not continue.
    assert book.apply_diff(190, 199, 101, [], []) is ApplyResult.STALE_DROPPED
    assert book.apply_diff(201, 210, 199, [], []) is ApplyResult.GAP


def test_bad_levels_raise_and_leave_the_book_alone():
    book = loaded(100)
    with pytest.raises(BookDecodeError):
        book.apply_diff(99, 101, 0, msgspec.Raw(b'[["100.00"]]'), msgspec.Raw(b"[]"))
    with pytest.raises(BookDecodeError):
        book.apply_diff(99, 101, 0, msgspec.Raw(b"[[100.0, 1]]"), msgspec.Raw(b"[]"))
    with pytest.raises(BookDecodeError):
        book.apply_diff(99, 101, 0, b"not json", b"[]")
    with pytest.raises(BookDecodeError):
        book.apply_diff(99, 101, 0, [[100.0, "1"]], [])
    assert book.synced and book.last_update_id == 100
    assert side_dict(book, Side.BID) == {"100.00": 1.0, "99.50": 2.0, "98.00": 3.5}
    with pytest.raises(BookDecodeError):
        book.apply_snapshot(300, b"{}", b"[]")
    with pytest.raises(BookPriceError):
        book.apply_snapshot(300, [["1.001", "1"]], [])
    assert book.last_update_id == 100 and book.best_bid() == (100.0, 1.0)
    # A price the grid cannot hold leaves the book part-applied, hence unsynced.
    with pytest.raises(BookPriceError):
        book.apply_diff(99, 101, 0, [["97.00", "1"], ["96.001", "1"]], [])
    assert not book.synced


def test_decoders():
    assert decode_levels(msgspec.Raw(b'[["1.50","2"],["1.40","0.000"]]')) == [
        ("1.50", 2.0),
        ("1.40", 0.0),
    ]
    assert decode_levels([("1.50", "2")]) == [("1.50", 2.0)]
    snap = decode_snapshot(b'{"lastUpdateId":5,"E":1,"T":2,"bids":[["1.0","1"]],"asks":[]}')
    assert (snap.last_update_id, snap.event_time, snap.tx_time) == (5, 1, 2)
    with pytest.raises(BookDecodeError, match="depth snapshot"):
        decode_snapshot(b'{"E":1}')


# -- the sync machine --------------------------------------------------------------


def test_transition_table_reaches_every_state_without_dead_ends():
    assert {source for source, _event in TRANSITIONS} == set(SyncState)
    reached = {SyncState.AWAITING_SNAPSHOT}
    frontier = [SyncState.AWAITING_SNAPSHOT]
    while frontier:
        state = frontier.pop()
        for (source, _event), target in TRANSITIONS.items():
            if source is state and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(SyncState)
    for state in SyncState:
        assert any(s is state and t is not state for (s, _e), t in TRANSITIONS.items())
    # Only the snapshot leaves AWAITING_SNAPSHOT; only a gap (or a price the book
    # cannot hold) leads back to it.
    assert [
        e for (s, e), t in TRANSITIONS.items() if s is SyncState.AWAITING_SNAPSHOT and t is not s
    ] == [DepthSnapshot]
    back = {
        e for (s, e), t in TRANSITIONS.items() if t is SyncState.AWAITING_SNAPSHOT and s is not t
    }
    assert back == {ApplyResult.GAP, BookPriceError}


def test_sync_buffers_then_bridges_from_the_buffer():
    sync = BookSync(OrderBook("TEST"))
    assert sync.needs_snapshot and sync.state is SyncState.AWAITING_SNAPSHOT
    stream = [
        diff(80, 90, 70, bids=[["100.00", "5"]]),
        diff(91, 99, 90, bids=[["100.00", "6"]]),
        diff(100, 104, 99, bids=[["100.00", "7"]]),  # spans lastUpdateId 102
        diff(105, 110, 104, asks=[["100.50", "0"]]),
    ]
    assert [sync.on_diff(d) for d in stream] == [ApplyResult.BUFFERED] * 4
    assert sync.buffered == 4 and not sync.book.synced
    done = sync.on_snapshot(snapshot(102, SNAP_BIDS, SNAP_ASKS))
    assert [r for _d, r in done] == [
        ApplyResult.STALE_DROPPED,
        ApplyResult.STALE_DROPPED,
        ApplyResult.APPLIED,
        ApplyResult.APPLIED,
    ]
    assert [d for d, _r in done] == stream
    assert sync.state is SyncState.SYNCED and not sync.needs_snapshot and sync.buffered == 0
    assert sync.book.best_bid() == (100.0, 7.0) and sync.book.best_ask() == (101.0, 2.5)
    assert sync.book.last_update_id == 110
    assert sync.stats.snapshots == 1 and sync.stats.gaps == 0


def test_sync_waits_for_the_bridge_when_the_snapshot_is_ahead():
    sync = BookSync(OrderBook("TEST"))
    sync.on_diff(diff(80, 90, 70))
    assert sync.on_snapshot(snapshot(102, SNAP_BIDS, SNAP_ASKS)) == [
        (diff(80, 90, 70), ApplyResult.STALE_DROPPED)
    ]
    assert sync.state is SyncState.AWAITING_BRIDGE and sync.book.synced
    assert sync.on_diff(diff(91, 99, 90)) is ApplyResult.STALE_DROPPED
    assert sync.state is SyncState.AWAITING_BRIDGE
    assert sync.on_diff(diff(100, 104, 99)) is ApplyResult.APPLIED
    assert sync.state is SyncState.SYNCED


def test_snapshot_older_than_the_stream_asks_for_another():
    sync = BookSync(OrderBook("TEST"))
    sync.on_diff(diff(110, 120, 105))
    sync.on_diff(diff(121, 130, 120))
    # lastUpdateId 100 < U of the first buffered diff: updates 101..109 are missing.
    done = sync.on_snapshot(snapshot(100, SNAP_BIDS, SNAP_ASKS))
    assert [r for _d, r in done] == [ApplyResult.GAP, ApplyResult.BUFFERED]
    assert sync.needs_snapshot and sync.buffered == 2 and not sync.book.synced
    done = sync.on_snapshot(snapshot(125, [["1.00", "1"]], [["2.00", "1"]]))
    assert [r for _d, r in done] == [ApplyResult.STALE_DROPPED, ApplyResult.APPLIED]
    assert sync.state is SyncState.SYNCED and sync.book.last_update_id == 130


def test_gap_requests_a_snapshot_and_the_new_one_reinitialises():
    sync = BookSync(OrderBook("TEST"))
    sync.on_snapshot(snapshot(100, SNAP_BIDS, SNAP_ASKS))
    assert sync.on_diff(diff(95, 105, 90, bids=[["99.00", "1"]])) is ApplyResult.APPLIED
    # pu 107 != 105: a diff was lost. Nothing applied from here on.
    gap = diff(108, 112, 107, bids=[["100.00", "0"]])
    assert sync.on_diff(gap) is ApplyResult.GAP
    assert sync.needs_snapshot and not sync.book.synced and sync.buffered == 1
    assert sync.book.best_bid() == (100.0, 1.0)
    after = diff(113, 118, 112, bids=[["95.00", "4"]])
    assert sync.on_diff(after) is ApplyResult.BUFFERED
    # A diff that does not continue the buffered chain restarts the buffer.
    restart = diff(125, 130, 121, asks=[["96.00", "1"]])
    assert sync.on_diff(restart) is ApplyResult.BUFFERED
    assert sync.buffered == 1 and sync.stats.buffer_restarts == 1
    done = sync.on_snapshot(snapshot(127, [["95.50", "2"]], [["96.50", "3"]]))
    assert done == [(restart, ApplyResult.APPLIED)]
    # Only the new snapshot and the diff after it: no level of the old book survives.
    assert side_dict(sync.book, Side.BID) == {"95.50": 2.0}
    assert side_dict(sync.book, Side.ASK) == {"96.00": 1.0, "96.50": 3.0}
    assert sync.stats.gaps == 1 and sync.stats.snapshots == 2


def test_unrequested_snapshot_is_an_invalid_transition():
    sync = BookSync(OrderBook("BTCUSDT"))
    sync.on_snapshot(snapshot(100, SNAP_BIDS, SNAP_ASKS))
    with pytest.raises(
        BookTransitionError,
        match=r"BookSync\(BTCUSDT\): no transition from "
        r"AWAITING_BRIDGE on DepthSnapshot",
    ):
        sync.on_snapshot(snapshot(200))
    assert sync.state is SyncState.AWAITING_BRIDGE
    assert sync.book.last_update_id == 100


def test_book_changed_behind_the_machine_is_an_invalid_transition():
    sync = BookSync(OrderBook("TEST"))
    sync.on_snapshot(snapshot(100, SNAP_BIDS, SNAP_ASKS))
    sync.book.apply_diff(200, 210, 0, [], [])  # a gap, not through the machine
    with pytest.raises(BookTransitionError, match="on NOT_SYNCED"):
        sync.on_diff(diff(95, 105, 90))


def test_price_error_leaves_the_machine_awaiting_a_snapshot():
    sync = BookSync(OrderBook("TEST"))
    sync.on_snapshot(snapshot(100, SNAP_BIDS, SNAP_ASKS))
    with pytest.raises(BookPriceError):
        sync.on_diff(diff(95, 105, 90, bids=[["1.001", "1"]]))
    assert sync.needs_snapshot and not sync.book.synced


def test_buffer_overflow_drops_the_oldest():
    sync = BookSync(OrderBook("TEST"), max_buffer=3)
    stream = [diff(10 * i + 1, 10 * i + 10, 10 * i) for i in range(5)]
    for d in stream:
        sync.on_diff(d)
    assert sync.buffered == 3 and sync.stats.buffer_overflows == 2
    done = sync.on_snapshot(snapshot(25))
    assert [(d.last_id, r) for d, r in done] == [
        (30, ApplyResult.APPLIED),
        (40, ApplyResult.APPLIED),
        (50, ApplyResult.APPLIED),
    ]
    with pytest.raises(ValueError, match="max_buffer"):
        BookSync(OrderBook(), max_buffer=0)


# -- random streams ----------------------------------------------------------------

DECIMALS = 2
PRICES = st.integers(1, 60)  # ticks of 0.05 -> "0.05" .. "3.00"
QTYS = st.sampled_from(["0", "0.000", "0.5", "1", "2.25", "10.000", "0.001"])


def price_text(n: int) -> str:
    return PriceGrid.from_tick_size("0.05").text(n)


LEVELS = st.lists(st.tuples(PRICES.map(price_text), QTYS), max_size=8)


@st.composite
def histories(draw):
    """An exchange's book through a chain of diffs: ``(L0, S0, diffs, states)``.

    ``states[i]`` is the true book (naive ``{side: {price: qty}}``) after
    ``diffs[i]``; ``S0`` at ``L0``, inside the first diff's id range. Update ids
    leave random holes between diffs, as on USD-M, where ``pu`` (not ``U - 1``)
    links them.
    """
    start = draw(st.integers(1, 1000))
    bids = dict(draw(LEVELS))
    asks = dict(draw(LEVELS))
    state = tuple({p: q for p, q in side.items() if Decimal(q)} for side in (bids, asks))
    diffs: list[DepthUpdate] = []
    states = []
    # The first diff spans the snapshot (U <= L0 <= u), as the documented
    # procedure expects of the stream opened before the snapshot was taken.
    first = start - draw(st.integers(0, 3))
    last = first - draw(st.integers(1, 3))
    for i in range(draw(st.integers(1, 25))):
        if i:
            first = last + draw(st.integers(1, 3))
        end = max(first, start) + draw(st.integers(0, 4))
        b, a = draw(LEVELS), draw(LEVELS)
        diffs.append(diff(first, end, last, b, a))
        state = tuple(dict(s) for s in state)
        for side, levels in zip(state, (b, a), strict=True):
            for p, q in levels:
                if Decimal(q):
                    side[p] = q
                else:
                    side.pop(p, None)
        states.append(state)
        last = end
    initial = tuple({p: q for p, q in side.items() if Decimal(q)} for side in (bids, asks))
    return start, initial, diffs, states


def as_floats(state) -> tuple[dict[str, float], dict[str, float]]:
    return tuple({p: float(q) for p, q in side.items()} for side in state)


def book_state(book: OrderBook) -> tuple[dict[str, float], dict[str, float]]:
    return side_dict(book, Side.BID), side_dict(book, Side.ASK)


def ordered_ok(book: OrderBook) -> bool:
    bids = book.tick_levels(Side.BID)[0].tolist()
    asks = book.tick_levels(Side.ASK)[0].tolist()
    return bids == sorted(bids, reverse=True) == sorted(book.depth(Side.BID))[::-1] and (
        asks == sorted(book.depth(Side.ASK))
    )


@settings(max_examples=150, deadline=None)
@given(histories())
def test_random_valid_streams_match_the_naive_model(history):
    start, initial, diffs, states = history
    book = OrderBook("TEST", price_decimals=DECIMALS)
    book.apply_snapshot(start, [list(x) for x in initial[0].items()], list(initial[1].items()))
    assert book_state(book) == as_floats(initial)
    for d, state in zip(diffs, states, strict=True):
        assert book.apply_diff(d.first_id, d.last_id, d.prev_last_id, d.bids, d.asks) is (
            ApplyResult.APPLIED
        )
        assert book_state(book) == as_floats(state)
        assert ordered_ok(book)


@settings(max_examples=200, deadline=None)
@given(histories(), st.data())
def test_sync_never_applies_across_a_gap(history, data):
    """Lossy delivery, snapshots at random points: the book is always a true state.

    The stream loses diffs at random; each snapshot the machine asks for shows the
    exchange a few diffs behind or ahead of the delivery, and sometimes part way
    through a diff (``U <= lastUpdateId < u``, with some of its levels applied).
    Whenever the machine is synced, its book must equal the exchange's book at
    ``last_update_id``; while it awaits the bridge, the snapshot's.
    """
    start, initial, diffs, states = history
    by_last_id = {start: initial} | {d.last_id: s for d, s in zip(diffs, states, strict=True)}
    sync = BookSync(OrderBook("TEST", price_decimals=DECIMALS))
    loaded_state = None

    def give_snapshot(delivered: int) -> None:
        nonlocal loaded_state
        j = data.draw(
            st.integers(delivered - 3, delivered + 3).map(lambda k: max(-1, min(k, len(diffs) - 1)))
        )
        if j < 0:
            last_id, state = start, initial
        elif data.draw(st.booleans()) and diffs[j].first_id < diffs[j].last_id:
            # Part way through diff j: its id range is open at lastUpdateId.
            d = diffs[j]
            last_id = data.draw(st.integers(d.first_id, d.last_id - 1))
            before = states[j - 1] if j else initial
            state = tuple(dict(s) for s in before)
            for side, raw in zip(state, (d.bids, d.asks), strict=True):
                for p, q in msgspec.json.decode(raw)[: data.draw(st.integers(0, 8))]:
                    if Decimal(q):
                        side[p] = q
                    else:
                        side.pop(p, None)
        else:
            last_id, state = diffs[j].last_id, states[j]
        sync.on_snapshot(snapshot(last_id, list(state[0].items()), list(state[1].items())))
        loaded_state = state

    def check() -> None:
        if sync.state is SyncState.SYNCED:
            assert book_state(sync.book) == as_floats(by_last_id[sync.book.last_update_id])
            assert ordered_ok(sync.book)
        elif sync.state is SyncState.AWAITING_BRIDGE:
            assert book_state(sync.book) == as_floats(loaded_state)
        else:
            assert not sync.book.synced

    for i, d in enumerate(diffs):
        if sync.needs_snapshot and data.draw(st.booleans()):
            give_snapshot(i - 1)
            check()
        if data.draw(st.integers(0, 9)) == 0:
            continue  # lost on the way
        sync.on_diff(d)
        check()
    if sync.needs_snapshot:
        give_snapshot(len(diffs) - 1)
        check()


@settings(max_examples=100, deadline=None)
@given(histories(), st.integers(0, 30))
def test_lossless_stream_ends_at_the_exchange_book(history, snapshot_after):
    """No loss, and the snapshot arrives after some diffs were buffered."""
    start, initial, diffs, states = history
    sync = BookSync(OrderBook("TEST", price_decimals=DECIMALS))
    k = min(snapshot_after, len(diffs))
    for d in diffs[:k]:
        assert sync.on_diff(d) is ApplyResult.BUFFERED
    # The snapshot shows the exchange as it was before any of the buffered diffs
    # was sent: the last buffered or first live diff must bridge it.
    sync.on_snapshot(snapshot(start, list(initial[0].items()), list(initial[1].items())))
    for d in diffs[k:]:
        assert sync.on_diff(d) is ApplyResult.APPLIED
    assert sync.state is SyncState.SYNCED
    assert book_state(sync.book) == as_floats(states[-1])
    assert sync.stats.gaps == 0


def test_price_memo_stays_bounded_and_prices_stay_exact():
    # A long session sees far more distinct price strings than the memo holds: it
    # keeps two generations of at most _MEMO_MAX, and every level still lands on
    # its exact tick whether it came from the memo, the older generation or a parse.
    from engine.book._book import _MEMO_MAX

    book = loaded(100)
    assert book.apply_diff(95, 100, 90, [], []) is ApplyResult.APPLIED  # bridges
    n = 3 * _MEMO_MAX
    u = 100
    for i in range(n):
        u += 1
        price = f"{200 + i / 100:.2f}"
        assert book.apply_diff(u, u, u - 1, [], [[price, "1"]]) is ApplyResult.APPLIED
        assert len(book._memo) + len(book._memo_old) <= 2 * _MEMO_MAX
        u += 1
        assert book.apply_diff(u, u, u - 1, [], [[price, "0"]]) is ApplyResult.APPLIED
    # A price seen early (long evicted) and a recent one are both parsed exactly.
    for price in ("200.00", f"{200 + (n - 1) / 100:.2f}"):
        u += 1
        book.apply_diff(u, u, u - 1, [], [[price, "2"]])
        prices, qtys = book.levels(Side.ASK)
        assert dict(zip(prices.tolist(), qtys.tolist(), strict=True))[float(price)] == 2.0
        u += 1
        book.apply_diff(u, u, u - 1, [], [[price, "0"]])


# -- bounded books (max_levels) ----------------------------------------------------


def bounded(state, max_levels: int):
    """A naive side pair after a bounded book's pruning: past ``max_levels +
    max_levels // 4`` a side, only its best ``max_levels`` prices stay."""
    limit = max_levels + max(1, max_levels // 4)
    out = []
    for side, best_first in zip(state, (True, False), strict=True):
        if len(side) > limit:
            keep = sorted(side, key=Decimal, reverse=best_first)[:max_levels]
            side = {p: side[p] for p in keep}
        out.append(side)
    return tuple(out)


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(1, 6))
def test_bounded_book_keeps_the_best_levels_of_the_naive_model(history, max_levels):
    # The naive model is pruned by the same rule after each update; the bounded
    # book must equal it exactly, level by level, and stay ordered.
    start, initial, diffs, _states = history
    book = OrderBook("TEST", price_decimals=DECIMALS, max_levels=max_levels)
    model = bounded(initial, max_levels)
    book.apply_snapshot(start, [list(x) for x in initial[0].items()], list(initial[1].items()))
    assert book_state(book) == as_floats(model)
    for d in diffs:
        assert book.apply_diff(d.first_id, d.last_id, d.prev_last_id, d.bids, d.asks) is (
            ApplyResult.APPLIED
        )
        model = tuple(dict(s) for s in model)
        for side, raw in zip(model, (d.bids, d.asks), strict=True):
            for p, q in msgspec.json.decode(raw):
                if Decimal(q):
                    side[p] = q
                else:
                    side.pop(p, None)
        model = bounded(model, max_levels)
        assert book_state(book) == as_floats(model)
        assert ordered_ok(book)
        assert max(map(book.level_count, Side)) <= max_levels + max(1, max_levels // 4)


def test_bounded_book_prunes_the_farthest_levels():
    book = OrderBook("TEST", max_levels=4)
    assert book.max_levels == 4
    bids = [[f"{100 - i}.00", "1"] for i in range(5)]  # 5 = 4 + 1: not yet pruned
    book.apply_snapshot(10, bids, [["101.00", "1"]])
    assert book.level_count(Side.BID) == 5
    # One more, better than all: 6 > 5, so the two lowest bids go.
    assert book.apply_diff(9, 11, 0, [["100.50", "2"]], []) is ApplyResult.APPLIED
    assert side_dict(book, Side.BID) == {"100.50": 2.0, "100.00": 1.0, "99.00": 1.0, "98.00": 1.0}
    assert book.best_bid() == (100.5, 2.0)
    # A dropped level removed later by the stream is ignored, as any absent level.
    assert book.apply_diff(12, 12, 11, [["96.00", "0"]], []) is ApplyResult.APPLIED
    assert book.level_count(Side.BID) == 4
    with pytest.raises(ValueError, match="max_levels"):
        OrderBook("TEST", max_levels=0)


def test_btc_bounded_book_agrees_with_the_full_book_at_the_top():
    # The real capture: the diff stream reports levels at every depth, and an
    # unbounded book grows past 4,500 levels a side from a 1,000-level snapshot. A
    # book bounded at the snapshot's depth stays within a quarter above it and
    # agrees with the unbounded one on the best 100 levels after every diff.
    _skip_without(BTC)
    stats = CaptureStats()
    full = BookSync(OrderBook("BTCUSDT"))
    small = BookSync(OrderBook("BTCUSDT", max_levels=1000))
    applied = 0
    for line in open_capture(BTC):
        if b'"lastUpdateId"' in line:
            if full.needs_snapshot:
                snap = decode_snapshot(line[line.find(b"{") :])
                full.on_snapshot(snap)
                small.on_snapshot(snap)
            continue
        if b"@depth" not in line:
            continue
        parsed = parse_line(line, stats)
        assert parsed is not None and isinstance(parsed[1], DepthUpdate)
        result = full.on_diff(parsed[1])
        assert small.on_diff(parsed[1]) is result
        if result is not ApplyResult.APPLIED:
            continue
        applied += 1
        for side in Side:
            assert small.book.level_count(side) <= 1250
            for a, b in zip(
                full.book.tick_levels(side, 100), small.book.tick_levels(side, 100), strict=True
            ):
                np.testing.assert_array_equal(a, b)
    assert applied > 6000
    assert min(map(full.book.level_count, Side)) > 4000  # the bound did something

"""The shipped book-imbalance strategy (engine.strategy._book_imbalance): its kernel on
book states built to trigger each rule, its parameters, the refusal of book-less data,
the live feed's book columns against the loopback exchange, and replays of the real
captures in ../shared."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from engine import ConfigError
from engine._config import SizingSection, config_from_dict
from engine._errors import DataError
from engine.feeds._bookcols import BOOK_LEVELS
from engine.feeds._capture import CaptureStats
from engine.feeds._tape import parse_tape
from engine.indicators import book_imbalance_n
from engine.messages import EventKind, Ticks
from engine.strategy import Mode, Signal, resolve_strategy
from engine.strategy._book_imbalance import BookImbalance, BookImbalanceParams
from engine.testing import replay, replay_config, run_strategy

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
EXTERNAL = ROOT.parent / "shared" / "data" / "external"
HISTORY = EXTERNAL / "hftbacktest_history"
# Each capture of ../shared, a pair of files when the second continues the first (the
# second file alone has no REST snapshot: its book never syncs).
CAPTURES = {
    "btcusdt_20230404-05": [
        HISTORY / "usdm_btcusdt_20230404.dat.gz",
        HISTORY / "usdm_btcusdt_20230405.dat.gz",
    ],
    "btcusdt_20240718-19": [
        HISTORY / "usdm_btcusdt_20240718.gz",
        HISTORY / "usdm_btcusdt_20240719.gz",
    ],
    "ethusdt_20240718-19": [
        HISTORY / "usdm_ethusdt_20240718.gz",
        HISTORY / "usdm_ethusdt_20240719.gz",
    ],
    "btcusdt_20240808": [EXTERNAL / "hftbacktest" / "btcusdt_20240808.gz"],
}
T0 = 1_723_161_255_000_000_000  # ns
MS = 1_000_000
# Imbalance thresholds 0.5; two states and 100 ms make a run; no confirmation; the
# trade flow over 5 trades.
BASE = {
    "long_threshold": 0.5,
    "short_threshold": 0.5,
    "persist_updates": 2,
    "persist_ms": 100,
    "confirm": "none",
    "flow_period": 5,
}


class Tape:
    """Synthetic events with book states: depth rows carry the sizes of 10 levels a side."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.t = T0

    def book(self, bid_qty, ask_qty, dt_ms: float = 50) -> Tape:
        self.t += int(dt_ms * MS)
        self.rows.append(("d", self.t, _levels(bid_qty), _levels(ask_qty)))
        return self

    def imbalance(self, x: float, dt_ms: float = 50) -> Tape:
        """A book state of top-5 imbalance ``x`` (equal sizes on five levels a side)."""
        return self.book([1.0 + x] * 5, [1.0 - x] * 5, dt_ms)

    def lost(self, dt_ms: float = 50) -> Tape:
        """A depth row without a synced book (a gap)."""
        self.t += int(dt_ms * MS)
        self.rows.append(("x", self.t))
        return self

    def quote(self, bid_qty: float = 1.0, ask_qty: float = 1.0, bid: float = 100.0,
              dt_ms: float = 10) -> Tape:  # fmt: skip
        self.t += int(dt_ms * MS)
        self.rows.append(("q", self.t, bid, bid + 0.1, bid_qty, ask_qty))
        return self

    def trade(self, qty: float, buyer_maker: bool, dt_ms: float = 10) -> Tape:
        self.t += int(dt_ms * MS)
        self.rows.append(("t", self.t, 100.05, qty, buyer_maker))
        return self

    def ticks(self) -> Ticks:
        n = len(self.rows)
        nan = np.full(n, np.nan)
        cols = {k: nan.copy() for k in ("bid", "bid_qty", "ask", "ask_qty", "price", "qty")}
        kind = np.zeros(n, dtype=np.int8)
        bm = np.zeros(n, dtype=np.int8)
        book_row = np.full(n, -1, dtype=np.int64)
        states: list[tuple[np.ndarray, np.ndarray]] = []
        current = -1
        for i, r in enumerate(self.rows):
            if r[0] == "d":
                kind[i] = EventKind.DEPTH
                current = len(states)
                states.append((r[2], r[3]))
            elif r[0] == "x":
                kind[i] = EventKind.DEPTH
                current = -1
            elif r[0] == "q":
                kind[i] = EventKind.QUOTE
                cols["bid"][i], cols["ask"][i], cols["bid_qty"][i], cols["ask_qty"][i] = r[2:]
            else:
                kind[i] = EventKind.TRADE
                cols["price"][i], cols["qty"][i], bm[i] = r[2], r[3], int(r[4])
            book_row[i] = current
        ts = np.array([r[1] for r in self.rows], dtype=np.int64)
        bq = np.array([s[0] for s in states]).reshape(-1, BOOK_LEVELS)
        aq = np.array([s[1] for s in states]).reshape(-1, BOOK_LEVELS)
        steps = 0.1 * np.arange(BOOK_LEVELS)
        return Ticks(
            ts=ts, ts_exchange=ts, seq=np.arange(n, dtype=np.int64), kind=kind,
            buyer_maker=bm, book_row=book_row,
            book_bid_px=np.tile(100.0 - steps, (len(states), 1)), book_bid_qty=bq,
            book_ask_px=np.tile(100.1 + steps, (len(states), 1)), book_ask_qty=aq,
            **cols,
        )  # fmt: skip


def _levels(qty) -> np.ndarray:
    out = np.zeros(BOOK_LEVELS)
    out[: len(qty)] = qty
    return out


def strategy(**params) -> BookImbalance:
    return BookImbalance(None, SizingSection(), BookImbalanceParams(**{**BASE, **params}))


def scan_all(tape: Tape, mode: Mode = Mode.FLAT, **params) -> tuple[int, int, BookImbalance]:
    s = strategy(**params)
    ticks = tape.ticks()
    i, signal = s.scan(ticks, 0, len(ticks), mode)
    return i, signal, s


def test_imbalance_is_the_indicators_n_level_imbalance():
    rng = np.random.default_rng(7)
    tape = Tape().quote()
    for _ in range(20):
        tape.book(rng.uniform(0, 3, BOOK_LEVELS), rng.uniform(0, 3, BOOK_LEVELS))
    ticks = tape.ticks()
    for levels, decay in ((1, 1.0), (5, 1.0), (5, 0.5), (10, 0.8)):
        s = strategy(levels=levels, decay=decay)
        s.scan(ticks, 0, len(ticks), Mode.WAITING)
        want = book_imbalance_n(ticks.book_bid_qty, ticks.book_ask_qty, levels, decay)[-1]
        assert s.imbalance == pytest.approx(want, rel=1e-12)
        assert s.book_states == 20
    # Depth-weighting changes it: a heavy bid only at the 5th level counts less.
    far = Tape().quote().book([1, 1, 1, 1, 9], [1, 1, 1, 1, 1]).ticks()
    plain, weighted = strategy(), strategy(decay=0.5)
    for s in (plain, weighted):
        s.scan(far, 0, len(far), Mode.WAITING)
    assert plain.imbalance > weighted.imbalance > 0


def test_entry_needs_the_run_to_persist_in_updates_and_in_time():
    tape = Tape().quote().imbalance(0.8).imbalance(0.8, dt_ms=20)  # 2 states, 20 ms
    i, signal, _ = scan_all(tape)
    assert signal == Signal.NONE
    tape.quote(dt_ms=100)  # time alone completes it, on the next quote
    i, signal, s = scan_all(tape)
    assert signal == Signal.ENTER_LONG and i == len(tape.rows) - 1
    assert s.strength == pytest.approx(0.8)
    # Three states needed: the third state signals.
    tape = Tape().quote().imbalance(0.8, dt_ms=200).imbalance(0.8, dt_ms=200)
    assert scan_all(tape, persist_updates=3)[1] == Signal.NONE
    tape.imbalance(0.8)
    assert scan_all(tape, persist_updates=3)[1] == Signal.ENTER_LONG
    # Below the threshold, or broken by a state under it: no run.
    assert scan_all(Tape().quote().imbalance(0.4).imbalance(0.4, 200))[1] == Signal.NONE
    broken = Tape().quote().imbalance(0.8).imbalance(0.2).imbalance(0.8, 200)
    assert scan_all(broken)[1] == Signal.NONE


def test_short_side_and_allow_short():
    tape = Tape().quote().imbalance(-0.7).imbalance(-0.7, dt_ms=150)
    assert scan_all(tape)[1] == Signal.ENTER_SHORT
    assert scan_all(tape, allow_short=False)[1] == Signal.NONE
    assert scan_all(tape, short_threshold=0.75)[1] == Signal.NONE


def test_confirmation_by_trade_flow_and_by_micro_price():
    def run(flow_buy: bool, bid_qty: float, ask_qty: float) -> Tape:
        tape = Tape()
        for _ in range(5):
            tape.trade(1.0, buyer_maker=not flow_buy)
        return tape.quote(bid_qty, ask_qty).imbalance(0.8).imbalance(0.8, dt_ms=150)

    buys_heavy_bid = run(True, 3.0, 1.0)
    sells_light_bid = run(False, 1.0, 3.0)
    for confirm in ("trade_flow", "micro_price", "both"):
        assert scan_all(buys_heavy_bid, confirm=confirm)[1] == Signal.ENTER_LONG
        assert scan_all(sells_light_bid, confirm=confirm)[1] == Signal.NONE
    assert scan_all(sells_light_bid, confirm="none")[1] == Signal.ENTER_LONG
    # Each confirmation alone: buys with a light bid, sells with a heavy one.
    buys_light_bid = run(True, 1.0, 3.0)
    assert scan_all(buys_light_bid, confirm="trade_flow")[1] == Signal.ENTER_LONG
    assert scan_all(buys_light_bid, confirm="micro_price")[1] == Signal.NONE
    assert scan_all(buys_light_bid, confirm="both")[1] == Signal.NONE
    # Thresholds: the micro-price 0.5 half-spreads past the mid (3 vs 1: 0.5) is not past 0.5.
    assert scan_all(buys_heavy_bid, confirm="micro_price", micro_min=0.5)[1] == Signal.NONE
    assert scan_all(buys_heavy_bid, confirm="micro_price", micro_min=0.4)[1] == Signal.ENTER_LONG


def test_a_run_signals_once_and_a_lost_book_ends_it():
    tape = Tape().quote().imbalance(0.8).imbalance(0.8, dt_ms=150).imbalance(0.8).quote()
    s = strategy()
    ticks = tape.ticks()
    i, signal = s.scan(ticks, 0, len(ticks), Mode.FLAT)
    assert signal == Signal.ENTER_LONG
    # Refused (say by risk): the same run does not signal again.
    assert s.scan(ticks, i + 1, len(ticks), Mode.FLAT) == (len(ticks), Signal.NONE)
    # A gap clears the imbalance and the run; the next run signals again.
    tape.lost()
    ticks = tape.ticks()
    s.scan(ticks, len(ticks) - 1, len(ticks), Mode.FLAT)
    assert np.isnan(s.imbalance)
    tape.imbalance(0.8).imbalance(0.8, dt_ms=150)
    ticks = tape.ticks()
    assert s.scan(ticks, i + 1, len(ticks), Mode.FLAT)[1] == Signal.ENTER_LONG
    # Rows of other kinds with no book (book_row -1) keep the last state.
    quiet = Tape().quote().imbalance(0.8).lost().ticks()
    s = strategy()
    s.scan(quiet, 0, 2, Mode.WAITING)
    assert s.imbalance == pytest.approx(0.8)


def test_holding_exits_on_the_opposite_run_and_by_stop():
    tape = Tape().quote().imbalance(0.8).imbalance(0.8, dt_ms=150)
    entry = len(tape.rows) - 1
    tape.imbalance(-0.8).imbalance(-0.8, dt_ms=150)
    s = strategy()
    ticks = tape.ticks()
    i, signal = s.scan(ticks, 0, len(ticks), Mode.FLAT)
    assert (i, signal) == (entry, Signal.ENTER_LONG)
    s.on_entry_filled(1, s.last_ask, int(ticks.ts[i]))
    _, signal = s.scan(ticks, i + 1, len(ticks), Mode.HOLDING)
    assert signal == Signal.EXIT_CROSS and s.exit_reason(signal) == "opposite_signal"
    # The stop: 10 bps below the entry at the bid; and off at 0.
    tape = Tape().quote().imbalance(0.8).imbalance(0.8, dt_ms=150).quote(bid=99.8)
    for stop_bps, want in ((10.0, Signal.EXIT_STOP), (0.0, Signal.NONE)):
        s = strategy(stop_bps=stop_bps, max_hold_ms=0)
        ticks = tape.ticks()
        i, _ = s.scan(ticks, 0, len(ticks), Mode.FLAT)
        s.on_entry_filled(1, s.last_ask, int(ticks.ts[i]))
        assert s.scan(ticks, i + 1, len(ticks), Mode.HOLDING)[1] == want


@pytest.mark.parametrize(
    ("params", "key", "problem"),
    [
        ({"level": 5}, "strategy.params.level", "unknown key"),
        ({"levels": 11}, "strategy.params.levels", "must be <= 10"),
        ({"decay": 0.0}, "strategy.params.decay", "must be > 0"),
        ({"long_threshold": 1.5}, "strategy.params.long_threshold", "must be <= 1"),
        ({"confirm": "volume"}, "strategy.params.confirm", "volume"),
        ({"persist_updates": 0}, "strategy.params.persist_updates", "must be >= 1"),
    ],
)
def test_a_wrong_parameter_names_its_key(tmp_path, params, key, problem):
    config = replay_config(
        tmp_path, [SAMPLE], strategy={"kind": "book_imbalance", "params": params}
    )
    with pytest.raises(ConfigError) as err:
        resolve_strategy(config)
    assert err.value.key == key and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_the_kind_loads_with_defaults_and_the_example_sets_every_one(tmp_path):
    config = replay_config(tmp_path, [SAMPLE], strategy={"kind": "book_imbalance"})
    spec = resolve_strategy(config)
    assert spec.cls is BookImbalance and spec.params == BookImbalanceParams()
    import tomllib

    example = tomllib.loads((ROOT / "examples/configs/book_imbalance.toml").read_text())
    assert example["strategy"]["params"] == {
        f.name: getattr(BookImbalanceParams(), f.name) for f in BookImbalanceParams.__attrs_attrs__
    }


def test_data_without_depth_updates_is_refused(tmp_path):
    candles = EXTERNAL / "freqtrade_1m_usdm" / "ADA_USDT_USDT-1m-futures.feather"
    if not candles.exists():
        pytest.skip("../shared/data/external is not beside the repository")
    config = config_from_dict(
        {
            "data": {"paths": [str(candles)], "tick_store": "off"},
            "journal": {"dir": str(tmp_path / "runs")},
            "logging": {"path": str(tmp_path / "engine.jsonl")},
            "strategy": {"kind": "book_imbalance"},
        },
        source="<test>",
        base_dir=str(tmp_path),
    )
    with pytest.raises(DataError, match="reads the order book; the data has no depth updates"):
        trio.run(replay, config)
    # The CLI: exit 2 and one line.
    cfg = tmp_path / "bi.toml"
    cfg.write_text(
        f'[data]\npaths = ["{candles}"]\ntick_store = "off"\n'
        f'[journal]\ndir = "{tmp_path / "runs"}"\n'
        '[logging]\npath = "-"\nlevel = "error"\n'
        '[strategy]\nkind = "book_imbalance"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--config", str(cfg)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ADAUSDT (only candles" in errors[0], done.stderr[-2000:]


def test_the_sample_trades_through_the_engine():
    run = run_strategy(BookImbalance, [SAMPLE])
    assert run.orders and run.orders[0]["purpose"] == "ENTRY"
    assert run.report.round_trips > 0
    assert set(run.exits()) <= {"opposite_signal", "stop_loss", "take_profit", "time_limit"}
    # Thresholds no imbalance of the sample reaches (1: one side empty): fewer orders.
    quiet = run_strategy(BookImbalance, [SAMPLE], params={"long_threshold": 1.0,
                                                          "short_threshold": 1.0})  # fmt: skip
    assert len(quiet.orders) < len(run.orders)


@pytest.mark.parametrize("name", list(CAPTURES))
def test_real_capture_replays_and_trades(name):
    paths = CAPTURES[name]
    if not all(p.exists() for p in paths):
        pytest.skip("../shared/data/external is not beside the repository")
    run = run_strategy(BookImbalance, paths)
    report = run.report
    assert report.fills > 0 and report.round_trips > 0
    stats = report.trades
    # Printed for the record (README "Book imbalance" quotes these runs).
    print(
        f"{name}: trades {stats['trades']}, win rate {stats['win_rate']}, "
        f"net PnL {report.net_pnl:.4f}, fees {report.fees:.4f}, exits {stats['exit_reasons']}"
    )


def test_a_replay_is_deterministic():
    paths = CAPTURES["btcusdt_20240718-19"][:1]
    if not paths[0].exists():
        pytest.skip("../shared/data/external is not beside the repository")
    first = run_strategy(BookImbalance, paths).report
    again = run_strategy(BookImbalance, paths).report
    assert first.orders > 0 and first.journal_sha256 == again.journal_sha256


# -- live: the feed's batches carry the book replay rebuilds ------------------------------


async def test_live_batches_carry_the_book_and_the_strategy_trades_on_it(tmp_path):
    from _loopback import QUIET, loopback_doc, run_on_loopback

    from engine.feeds._live import LiveFeed
    from engine.venues.sim._recorded import load_recording
    from engine.venues.sim._stream_server import ServerSettings, StreamServer

    recording = load_recording([SAMPLE])
    # The first 1500 depth updates (about 80 s of market) and what came with them.
    ids = [_u(m.data) for m in recording.messages if m.stream.endswith("@depth@0ms")][:1500]
    started = time.monotonic()
    batches: list[Ticks] = []
    done = trio.Event()

    class WatchedFeed(LiveFeed):
        """The real feed, keeping each batch it hands the symbol actor."""

        def _take(self, symbol: str) -> Ticks | None:
            ticks = super()._take(symbol)
            if ticks is not None:
                batches.append(ticks)
            return ticks

    def make_feed(**kwargs) -> LiveFeed:
        return WatchedFeed(**kwargs, record=seen)

    passed = []  # the depth updates the feed passed on, by final update id

    def seen(_ts: int, raw: bytes) -> None:
        if b"depthUpdate" in raw:
            passed.append(_u(raw))
            if passed[-1] == ids[-1]:
                done.set()

    server = StreamServer(recording, ServerSettings(speed=60.0), QUIET)

    def doc(ws_port: int, rest_port: int) -> dict[str, Any]:
        doc = loopback_doc(tmp_path, ws_port, rest_port, stale_ms=60_000)
        # Signals from the book alone (no wall-clock persistence, which would make
        # trading depend on the machine's pace at 60x).
        doc["strategy"] = {
            "kind": "book_imbalance",
            "params": {"persist_ms": 0, "persist_updates": 1, "confirm": "none"},
        }
        doc["model"] = {"enabled": False}
        doc["hardware"] = {"enabled": False}
        return doc

    report = await run_on_loopback(
        server, tmp_path, doc, make_feed=make_feed, until=done, guard_s=600
    )
    # The depth rows the feed passed on are the capture's first ones, and the batches
    # hold them but those of the final step (it goes out empty). Once the book has
    # caught up with the exchange's snapshot, each synced row's state is replay's state
    # of the same diff; before that, the rows of diffs older than the snapshot (which
    # the book drops) carry the snapshot's newer book.
    live = [
        (int(t.book_row[r]), t) for t in batches for r in np.flatnonzero(t.kind == EventKind.DEPTH)
    ]
    ticks = parse_tape([SAMPLE], ["BTCUSDT"], stats=CaptureStats(), book=True).ticks["BTCUSDT"]
    depth = np.flatnonzero(ticks.kind == EventKind.DEPTH)
    assert passed[: len(ids)] == ids and 0.9 * len(ids) < len(live) <= len(passed)
    want = ticks.book_row[depth[: len(live)]]
    same = [
        s >= 0
        and w >= 0
        and all(
            np.array_equal(getattr(t, name)[s], getattr(ticks, name)[w])
            for name in ("book_bid_px", "book_bid_qty", "book_ask_px", "book_ask_qty")
        )
        for (s, t), w in zip(live, want, strict=False)
    ]
    caught_up = same.index(True)
    assert all(same[caught_up:])  # once caught up, every state is replay's
    # Before that: no book yet, or a state replay reaches later (the snapshot was newer).
    first_seen: dict[tuple[bytes, bytes], int] = {}
    for w in range(len(ticks.book_bid_qty)):
        key = (ticks.book_bid_qty[w].tobytes(), ticks.book_ask_qty[w].tobytes())
        first_seen.setdefault(key, w)
    for (s, t), w in zip(live[:caught_up], want[:caught_up], strict=True):
        if s >= 0:
            key = (t.book_bid_qty[s].tobytes(), t.book_ask_qty[s].tobytes())
            assert first_seen.get(key, -1) > w
    print(
        f"live: {len(live)} depth rows, equal from {caught_up}, {time.monotonic() - started:.0f} s"
    )
    assert report.orders > 0


def _u(raw: bytes) -> int:
    """The final update id ``u`` of a depthUpdate's JSON."""
    return int(raw.split(b'"u":')[1].split(b",")[0])

"""Multi-timeframe confirmation (``[strategy.confirm]``, engine.strategy._confirm): the
core drops entries the higher timeframes do not confirm and never exits; a replay of a
real capture with ema_cross takes fewer entries, each agreeing with the timeframes as
the batch indicator functions compute them, the same for every batching."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import orjson
import pytest
import trio

import fsm
from engine import ConfigError
from engine._config import ConfirmSection, SizingSection, StrategySection, config_from_dict
from engine._report import summary_text
from engine.core import SymbolCore
from engine.feeds import CaptureStats
from engine.feeds._tape import load_tape
from engine.indicators import ema, sma
from engine.ledger import PositionLedger
from engine.messages import Ticks
from engine.strategy import Mode, Signal, Strategy
from engine.strategy._confirm import Confirmation
from engine.testing import quiet_logger, replay, replay_config

ROOT = Path(__file__).resolve().parents[1]
HISTORY = ROOT.parent / "shared" / "data" / "external" / "hftbacktest_history"
CAPTURE = [HISTORY / "usdm_btcusdt_20240718.gz", HISTORY / "usdm_btcusdt_20240719.gz"]
T0 = 1_721_347_200_000_000_000  # ns
MS = 1_000_000
# ema_cross fast enough to enter a dozen times in the capture's 8 minutes, and
# timeframes short enough to warm up within it.
STRATEGY = {"sample_ms": 1000, "fast": 3, "slow": 8}
CONFIRM = {"timeframes_ms": [5000, 15000, 30000], "period": 5, "min_agree": 2}


def tape(prices: list[float], dt_ms: int = 100) -> Ticks:
    """A quote then a trade at each price, ``dt_ms`` apart."""
    n = 2 * len(prices)
    ts = T0 + np.repeat(np.arange(len(prices), dtype=np.int64) * dt_ms * MS, 2)
    kind = np.tile(np.array([1, 2], dtype=np.int8), len(prices))
    px = np.repeat(np.asarray(prices, dtype=np.float64), 2)
    quote = kind == 1
    nan = np.full(n, np.nan)
    return Ticks(
        ts=ts,
        ts_exchange=ts,
        seq=np.arange(n, dtype=np.int64),
        kind=kind,
        bid=np.where(quote, px - 0.05, nan),
        bid_qty=np.where(quote, 1.0, nan),
        ask=np.where(quote, px + 0.05, nan),
        ask_qty=np.where(quote, 1.0, nan),
        price=np.where(quote, nan, px),
        qty=np.where(quote, nan, 0.01),
        buyer_maker=np.zeros(n, dtype=np.int8),
    )


class Scripted(Strategy):
    """Raises the given signals at the given rows (entries when FLAT, exits when HOLDING)."""

    kind = "scripted"

    def __init__(self, config: Any = None, sizing: Any = None, params: Any = None) -> None:
        self.script: dict[int, int] = {}
        self._bid = self._ask = float("nan")

    def scan(self, ticks: Ticks, start: int, stop: int, mode: Mode) -> tuple[int, int]:
        for i in range(start, min(stop, len(ticks))):
            if ticks.kind[i] == 1:
                self._bid, self._ask = float(ticks.bid[i]), float(ticks.ask[i])
            signal = self.script.get(i, 0)
            exit_ = signal == Signal.EXIT_CROSS
            if signal and (exit_ == (mode is Mode.HOLDING)) and mode is not Mode.WAITING:
                return i, signal
        return min(stop, len(ticks)), 0

    @property
    def last_bid(self) -> float:
        return self._bid

    @property
    def last_ask(self) -> float:
        return self._ask

    def on_entry_filled(self, side: int, entry_price: float, ts: int) -> None:
        pass

    @classmethod
    def warm_up(cls) -> None:
        pass


def core_with(confirm: dict[str, Any], script: dict[int, int]) -> SymbolCore:
    strategy = Scripted()
    strategy.script = script
    return SymbolCore(
        symbol="BTCUSDT",
        config=StrategySection(confirm=ConfirmSection(**confirm)),
        log=quiet_logger(),
        ledger=PositionLedger(),
        strategy=strategy,
    )


def scan_all(core: SymbolCore, ticks: Ticks, chunk: int) -> list[tuple[int, int]]:
    """Every signal the core lets through, scanning ``chunk`` events at a time."""
    out = []
    start = 0
    while start < len(ticks):
        index, signal = core.scan(ticks, start, min(len(ticks), start + chunk))
        if signal:
            out.append((index, signal))
            start = index + 1
        else:
            start = index
    return out


# 20 s rising by 0.1 a tick (10 ticks a second), then 20 s falling.
RISE_FALL = [100.0 + 0.1 * k for k in range(200)] + [119.9 - 0.1 * k for k in range(200)]
TWO_FRAMES = {"timeframes_ms": [1000, 3000], "period": 2}


@pytest.mark.parametrize("chunk", [1, 7, 10**6])
def test_the_core_drops_entries_against_the_timeframes_and_keeps_the_rest(chunk):
    ticks = tape(RISE_FALL)
    # Rows: 2 per price. Row 10 is 0.5 s in (no bar closed: warming up); rows 200 and
    # 220 are 10 s into the rise (both timeframes up), 600 and 620 10 s into the fall.
    script = {
        10: Signal.ENTER_LONG,
        200: Signal.ENTER_SHORT,
        220: Signal.ENTER_LONG,
        600: Signal.ENTER_LONG,
        620: Signal.ENTER_SHORT,
    }
    core = core_with(TWO_FRAMES, script)
    assert scan_all(core, ticks, chunk) == [(220, Signal.ENTER_LONG), (620, Signal.ENTER_SHORT)]
    assert core.confirm_counts == {"blocked_disagree": 2, "blocked_warmup": 1, "confirmed": 2}
    assert core.ticks == len(ticks)
    # warmup = "pass": the early entry goes through, unconfirmed, and is counted so.
    core = core_with({**TWO_FRAMES, "warmup": "pass"}, script)
    assert scan_all(core, ticks, chunk)[0] == (10, Signal.ENTER_LONG)
    assert core.confirm_counts["passed_warmup"] == 1


def test_min_agree_counts_the_timeframes_that_agree():
    # A fall then a short rise: 1 s bars turn up before 3 s bars do.
    prices = [120.0 - 0.1 * k for k in range(150)] + [105.0 + 0.1 * k for k in range(25)]
    ticks = tape(prices)
    row = 2 * 174  # the last price: 2.5 s into the rise
    conf = Confirmation(ConfirmSection(**TWO_FRAMES))
    conf.feed(ticks, 0, row + 1)
    assert conf.trends().tolist() == [1.0, -1.0]
    for min_agree, decision in ((1, "confirmed"), (2, "blocked_disagree")):
        core = core_with({**TWO_FRAMES, "min_agree": min_agree}, {row: Signal.ENTER_LONG})
        assert core.scan(ticks, 0, len(ticks))[1] == (
            Signal.ENTER_LONG if decision == "confirmed" else 0
        )
        assert core.confirm_counts == {decision: 1}


def test_exits_are_never_held_back():
    ticks = tape(RISE_FALL)
    core = core_with(TWO_FRAMES, {600: Signal.EXIT_CROSS})  # a long's exit in the fall
    core._ledger.adopt("BTCUSDT", 0.01, 100.0)
    core.adopt_position(int(ticks.ts[0]))
    core.take()
    assert core.position.state is fsm.PositionState.IN_POSITION
    assert core.scan(ticks, 0, len(ticks)) == (600, Signal.EXIT_CROSS)
    assert core.confirm_counts == {}


@pytest.mark.parametrize("indicator", ["ema", "sma"])
def test_trends_equal_the_batch_functions_on_bars_of_the_trades(indicator):
    rng = np.random.default_rng(7)
    prices = list(100.0 + np.cumsum(rng.normal(0, 0.05, 3000)))
    ticks = tape(prices, dt_ms=37)
    frames = [1000, 2500, 7000]
    conf = Confirmation(ConfirmSection(timeframes_ms=frames, indicator=indicator, period=4))
    checked = 0
    for row in range(0, len(ticks), 101):
        conf.feed(ticks, checked, row + 1)
        checked = row + 1
        want = batch_trends(ticks, row, frames, indicator, 4)
        np.testing.assert_array_equal(conf.trends(), want)
    assert not np.isnan(conf.trends()).any()  # warm by the end


def batch_trends(ticks: Ticks, row: int, frames: list[int], indicator: str, period: int):
    """Each timeframe's trend as of event ``row``, from the trades up to it: bars of
    their prices (a bar is closed once a trade of a later bar came), the batch
    moving average of the closes, the last close against it."""
    trade = (ticks.kind[: row + 1] == 2) & np.isfinite(ticks.price[: row + 1])
    ts = ticks.ts[: row + 1][trade]
    px = ticks.price[: row + 1][trade]
    func = {"ema": ema, "sma": sma}[indicator]
    out = []
    for tf in frames:
        bucket = ts // (tf * MS)
        last_of_bucket = np.flatnonzero(np.diff(bucket)) if len(bucket) else np.array([], int)
        closes = px[last_of_bucket]  # the buckets a later trade closed
        ma = func(closes, timeperiod=period) if len(closes) else np.array([np.nan])
        if len(closes) == 0 or np.isnan(ma[-1]):
            out.append(np.nan)
        else:
            out.append(float(np.sign(closes[-1] - ma[-1])))
    return np.array(out)


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ({"timeframes_ms": [5000, 5000]}, "strategy.confirm.timeframes_ms", "distinct"),
        ({"timeframes_ms": [0]}, "strategy.confirm.timeframes_ms", "> 0"),
        ({"timeframes_ms": [5000], "min_agree": 2}, "strategy.confirm.min_agree", "<= the"),
        ({"indicator": "rsi"}, "strategy.confirm.indicator", "must be in"),
        ({"period": 1}, "strategy.confirm.period", ">= 2"),
        ({"warmup": "wait"}, "strategy.confirm.warmup", "'block', 'pass'"),
        ({"timeframe_ms": [5000]}, "strategy.confirm.timeframe_ms", "unknown key"),
    ],
)
def test_a_wrong_key_is_one_line_naming_it(table, key, problem):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"strategy": {"confirm": table}}, source="c.toml")
    assert err.value.key == key and problem in str(err.value)
    assert "\n" not in str(err.value)


def run_cli(cfg: Path, toml: str) -> tuple[int, list[str]]:
    """``python -m engine --config cfg`` on the sample with ``toml`` added: its exit
    status and its stderr lines."""
    import subprocess
    import sys

    cfg.write_text(f'[data]\npaths = ["{ROOT / "data/sample"}"]\n' + toml)
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--config", str(cfg)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.returncode, done.stderr.strip().splitlines()


def test_the_cli_exits_2_with_one_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    rc, lines = run_cli(cfg, "[strategy.confirm]\ntimeframes_ms = [5000]\nmin_agree = 2\n")
    assert rc == 2
    assert lines == [
        f"error: {cfg}: strategy.confirm.min_agree: must be <= the number of timeframes (1), got 2"
    ]


def test_off_by_default():
    config = config_from_dict({}, source="c.toml")
    assert not config.strategy.confirm.enabled


# -- refused where it could never act ----------------------------------------------------

ON = {"timeframes_ms": [5000]}


def resolve(doc: dict[str, Any], base_dir: str = ".") -> None:
    from engine.strategy import resolve_strategy

    resolve_strategy(config_from_dict(doc, source="c.toml", base_dir=base_dir))


def test_a_quoting_strategy_refuses_it_naming_the_section():
    with pytest.raises(ConfigError) as err:
        resolve({"strategy": {"kind": "market_maker", "confirm": ON}})
    assert err.value.key == "strategy.confirm"
    assert str(err.value) == (
        "c.toml: strategy.confirm: MarketMaker is a quoting strategy: it has no entry "
        "signals to confirm (remove [strategy.confirm])"
    )
    resolve({"strategy": {"kind": "market_maker"}})  # without the section: fine


def test_a_users_quoting_strategy_refuses_it(tmp_path):
    (tmp_path / "mine.py").write_text(
        "from engine.strategy._market_maker import MarketMaker\n\n\n"
        "class MyQuoter(MarketMaker):\n    pass\n"
    )
    strategy = {"path": "mine.py", "name": "MyQuoter"}
    with pytest.raises(ConfigError, match="MyQuoter is a quoting strategy") as err:
        resolve({"strategy": {**strategy, "confirm": ON}}, base_dir=str(tmp_path))
    assert err.value.key == "strategy.confirm"
    resolve({"strategy": strategy}, base_dir=str(tmp_path))


@pytest.mark.parametrize("mode", ["paper", "live"])
def test_paper_and_live_without_a_trade_stream_refuse_it(mode):
    doc: dict[str, Any] = {
        "engine": {"mode": mode},
        "feeds": {"streams": ["bookTicker", "depth@100ms"]},
        "strategy": {"confirm": ON},
    }
    with pytest.raises(ConfigError) as err:
        resolve(doc)
    assert err.value.key == "strategy.confirm"
    assert "no aggTrade or trade stream" in str(err.value) and "\n" not in str(err.value)
    resolve({**doc, "feeds": {"streams": ["bookTicker", "trade"]}})
    resolve({**doc, "engine": {"mode": "replay"}})  # replay's trades come from the data


def test_the_cli_refuses_it_for_the_market_maker_with_one_line(tmp_path):
    cfg = tmp_path / "mm.toml"
    rc, lines = run_cli(
        cfg, '[strategy]\nkind = "market_maker"\n[strategy.confirm]\ntimeframes_ms = [5000]\n'
    )
    assert rc == 2
    assert lines == [
        f"error: {cfg}: strategy.confirm: MarketMaker is a quoting strategy: it has no "
        "entry signals to confirm (remove [strategy.confirm])"
    ]


# -- a real capture ----------------------------------------------------------------------


def entries(journal: str) -> list[tuple[int, int]]:
    """``(ts, side)`` of every entry order the run sent."""
    db = sqlite3.connect(journal)
    try:
        rows = db.execute("SELECT payload FROM journal WHERE kind = 'SubmitOrder' ORDER BY id")
        orders = [orjson.loads(p) for (p,) in rows]
    finally:
        db.close()
    return [(o["ts_event"], o["side"]) for o in orders if o["purpose"] == "ENTRY"]


def agrees(ticks: Ticks, ts: int, side: int) -> bool | None:
    """Whether ``min_agree`` timeframes trend ``side``'s way as of time ``ts`` (None: a
    trade shares the signal's timestamp, so which of them came first is ambiguous)."""
    upto = int(np.searchsorted(ticks.ts, ts, side="right")) - 1
    before = int(np.searchsorted(ticks.ts, ts, side="left")) - 1
    frames = CONFIRM["timeframes_ms"]
    votes = [
        int(np.count_nonzero(batch_trends(ticks, r, frames, "ema", CONFIRM["period"]) == side))
        for r in {upto, before}
    ]
    if len(set(votes)) > 1:
        return None
    return votes[0] >= CONFIRM["min_agree"]


@pytest.fixture(scope="module")
def capture_ticks() -> Ticks:
    if not all(p.exists() for p in CAPTURE):
        pytest.skip("../shared/data/external is not beside the repository")
    return load_tape(CAPTURE, ["BTCUSDT"], stats=CaptureStats()).ticks["BTCUSDT"]


def run_capture(
    tmp_path: Path, confirm: dict[str, Any] | None, step_ms: int = 250, events: int = 8192
) -> Any:
    strategy = dict(STRATEGY)
    if confirm is not None:
        strategy["confirm"] = confirm
    config = replay_config(tmp_path, CAPTURE, strategy=strategy, model={"enabled": False})
    replay_section = attrs.evolve(config.replay, step_ms=step_ms, max_step_events=events)
    config = attrs.evolve(config, replay=replay_section)
    return trio.run(replay, config)


def test_ema_cross_on_a_real_capture_enters_only_with_the_timeframes(tmp_path, capture_ticks):
    off = run_capture(tmp_path / "off", None)
    on = run_capture(tmp_path / "on", CONFIRM)
    taken_off = entries(off.journal_path)
    taken_on = entries(on.journal_path)
    counts = on.per_symbol[0].confirm
    assert off.per_symbol[0].confirm == {}
    assert 0 < len(taken_on) < len(taken_off)
    assert counts["confirmed"] == len(taken_on) and counts["blocked_disagree"] > 0
    # Each entry taken agrees with the timeframes, computed apart from the engine...
    checks = [agrees(capture_ticks, ts, side) for ts, side in taken_on]
    assert all(c is not False for c in checks) and checks.count(None) <= 1
    # ... and without confirmation some entries did not (the check can fail).
    assert any(agrees(capture_ticks, ts, side) is False for ts, side in taken_off)
    line = next(x for x in summary_text(on).splitlines() if x.strip().startswith("confirm"))
    assert f"confirmed {counts['confirmed']}" in line
    assert not any(x.strip().startswith("confirm ") for x in summary_text(off).splitlines())


def test_the_real_capture_replay_is_the_same_for_every_batching(tmp_path, capture_ticks):
    # replay.step_ms and replay.max_step_events (the driver's chunks: the core scans,
    # and feeds the confirmation, a few events at a time or the whole capture at once).
    digests = {
        (step, events): run_capture(tmp_path / str(step), CONFIRM, step, events).journal_sha256
        for step, events in ((10, 7), (250, 8192), (10**9, 10**6))
    }
    assert len(set(digests.values())) == 1, digests


def test_live_batches_decide_as_the_whole_tape_does(capture_ticks):
    """Paper and live hand the core one batch per step, each a Ticks of its own from
    row 0 (the symbol actor's loop): the same entries pass, the same are dropped."""
    from engine.strategy import strategy_class

    def core() -> SymbolCore:
        config = StrategySection(**STRATEGY, confirm=ConfirmSection(**CONFIRM))
        return SymbolCore(
            symbol="BTCUSDT",
            config=config,
            log=quiet_logger(),
            ledger=PositionLedger(),
            strategy=strategy_class("ema_cross")(config, SizingSection()),
        )

    whole = core()
    taken = [int(capture_ticks.ts[i]) for i, _ in scan_all(whole, capture_ticks, 10**7)]
    stepped = core()
    step_taken = []
    bounds = np.searchsorted(
        capture_ticks.ts, np.arange(capture_ticks.ts[0], capture_ticks.ts[-1] + 1, 250 * MS)
    )
    for lo, hi in zip(bounds, [*bounds[1:], len(capture_ticks)], strict=True):
        batch = capture_ticks.rows(int(lo), int(hi))
        step_taken += [int(batch.ts[i]) for i, _ in scan_all(stepped, batch, len(batch) or 1)]
    assert taken and step_taken == taken
    assert stepped.confirm_counts == whole.confirm_counts
    assert whole.confirm_counts["blocked_disagree"] > 0

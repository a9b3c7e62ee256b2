"""The shipped scalper (engine.strategy._scalper): each of its eight signals on ticks built
to trigger exactly it, its parameters, and replays of the real captures in ../shared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from engine import ConfigError
from engine._config import SizingSection
from engine.messages import Ticks
from engine.strategy import Mode, Signal, resolve_strategy
from engine.strategy._scalper import SIGNALS, Scalper, ScalperParams
from engine.testing import replay_config, run_strategy

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = ROOT.parent / "shared" / "data" / "external"
CAPTURES = [
    *sorted((EXTERNAL / "hftbacktest_history").glob("usdm_*.gz")),
    EXTERNAL / "hftbacktest" / "btcusdt_20240808.gz",
]
T0 = 1_723_161_255_000  # ms
# Short periods so that a few dozen synthetic bars warm every indicator up.
SMALL = {
    "bar_ms": 1000,
    "confirm_window_ms": 3000,
    "ema_fast": 2,
    "ema_slow": 4,
    "rsi_period": 3,
    "bb_period": 5,
    "squeeze_period": 5,
    "volume_period": 3,
    "ofi_period": 5,
    "divergence_bars": 3,
    "spread_period": 5,
}


class Tape:
    """Synthetic market events, one bar (1 s) apart unless told otherwise."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.t = T0

    def quote(self, bid: float, ask: float | None = None, dt: int = 1000) -> Tape:
        self.t += dt
        self.events.append(("q", self.t, bid, bid + 0.1 if ask is None else ask))
        return self

    def mids(self, *mids: float, dt: int = 1000) -> Tape:
        for m in mids:
            self.quote(m - 0.05, m + 0.05, dt=dt)
        return self

    def trade(self, price: float, qty: float, buyer_maker: bool, dt: int = 10) -> Tape:
        self.t += dt
        self.events.append(("t", self.t, price, qty, buyer_maker))
        return self

    def mirrored(self) -> Tape:
        """The same tape upside down around 100: every signal votes the other way."""
        out = Tape()
        for e in self.events:
            if e[0] == "q":
                out.events.append(("q", e[1], 200.0 - e[3], 200.0 - e[2]))
            else:
                out.events.append(("t", e[1], 200.0 - e[2], e[3], not e[4]))
        return out

    def write(self, path: Path) -> Path:
        lines = []
        for seq, e in enumerate(self.events):
            if e[0] == "q":
                data = {
                    "e": "bookTicker", "u": seq + 1, "s": "BTCUSDT", "b": f"{e[2]:.2f}",
                    "B": "5.000", "a": f"{e[3]:.2f}", "A": "5.000", "T": e[1], "E": e[1],
                }  # fmt: skip
                stream = "btcusdt@bookTicker"
            else:
                data = {
                    "e": "trade", "E": e[1], "T": e[1], "s": "BTCUSDT", "t": seq + 1,
                    "p": f"{e[2]:.2f}", "q": f"{e[3]:.3f}", "X": "MARKET", "m": e[4],
                }  # fmt: skip
                stream = "btcusdt@trade"
            wrapped = orjson.dumps({"stream": stream, "data": data}).decode()
            lines.append(f"{e[1] * 1_000_000} {wrapped}")
        path.write_text("\n".join(lines) + "\n")
        return path

    def ticks(self) -> Ticks:
        n = len(self.events)
        nan = np.full(n, np.nan)
        cols = {k: nan.copy() for k in ("bid", "bid_qty", "ask", "ask_qty", "price", "qty")}
        kind = np.zeros(n, dtype=np.int8)
        bm = np.zeros(n, dtype=np.int8)
        ts = np.array([e[1] * 1_000_000 for e in self.events], dtype=np.int64)
        for i, e in enumerate(self.events):
            if e[0] == "q":
                kind[i] = 1
                cols["bid"][i], cols["ask"][i] = e[2], e[3]
            else:
                kind[i] = 2
                cols["price"][i], cols["qty"][i], bm[i] = e[2], e[3], int(e[4])
        return Ticks(
            ts=ts, ts_exchange=ts, seq=np.arange(n, dtype=np.int64), kind=kind,
            buyer_maker=bm, **cols,
        )  # fmt: skip


def flat(tape: Tape, bars: int = 30, mid: float = 100.0) -> Tape:
    """Warm-up: a flat market (no signal votes on it)."""
    return tape.mids(*([mid] * bars))


def micro_trend() -> Tape:
    # Three mid moves up inside one bar: nothing closes a bar, no trade.
    return flat(Tape()).mids(100.1, 100.2, 100.3, dt=100)


def acceleration() -> Tape:
    # Bar closes 100, 100.1, 100.3 (r0 = 0.1, r1 = 0.2): two moves only, no micro trend.
    return flat(Tape()).mids(100.1, 100.3, 100.3)


def volume_spike() -> Tape:
    tape = flat(Tape())
    for _ in range(4):  # bars with one buy and one sell each: mean volume 2, no imbalance
        tape.trade(100.0, 1.0, False).trade(100.0, 1.0, True).mids(100.0)
    # A bar of 5 (> 2 x 2): more bought than sold, the flow imbalance stays small.
    return tape.trade(100.0, 1.0, False).trade(100.0, 1.0, True).trade(100.0, 3.0, False)


def order_flow() -> Tape:
    tape = flat(Tape())
    for _ in range(5):  # five aggressive buys: imbalance 1 (no bar has had volume before)
        tape.trade(100.05, 0.1, False)
    return tape


def squeeze_breakout() -> Tape:
    # A staircase up (wide bands; each bar overshoots by a tick and falls back, so
    # never two mid moves one way), a flat stretch (the bands narrow: a squeeze), then
    # a close above the upper band.
    tape = flat(Tape())
    for close in (100.5, 101.0, 101.5, 102.0):
        tape.mids(close + 0.05).mids(close, dt=100)
    return tape.mids(*([102.0] * 5), 102.4, 102.4)


def ema_cross() -> Tape:
    # A drop (the fast EMA below the slow one), then a jump up through it.
    return flat(Tape()).mids(99.0, 99.0, 99.0, 100.5, 100.5)


def rsi_divergence() -> Tape:
    # A drop (RSI 0), a bounce, a slightly lower low with a higher RSI.
    return flat(Tape()).mids(99.0, 99.5, 99.6, 98.95, 98.95)


def spread() -> Tape:
    # The ask lifts away from an unchanged bid: the spread triples.
    return flat(Tape()).quote(99.95, 100.25, dt=100)


BUILDERS = {
    "micro_trend": micro_trend,
    "acceleration": acceleration,
    "volume_spike": volume_spike,
    "order_flow": order_flow,
    "squeeze_breakout": squeeze_breakout,
    "ema_cross": ema_cross,
    "rsi_divergence": rsi_divergence,
    "spread": spread,
}


def first_signal(tape: Tape, **params) -> tuple[int, Scalper]:
    p = ScalperParams(**{**SMALL, "min_confirmations": 1, "min_strength": 0.0, **params})
    strategy = Scalper(None, _sizing(), p)
    ticks = tape.ticks()
    _, signal = strategy.scan(ticks, 0, len(ticks), Mode.FLAT)
    return signal, strategy


def _sizing() -> SizingSection:
    return SizingSection()


def test_every_signal_has_a_tape():
    assert tuple(BUILDERS) == SIGNALS


@pytest.mark.parametrize("name", SIGNALS)
@pytest.mark.parametrize("mirror", [False, True], ids=["long", "short"])
def test_each_signal_alone_votes_and_enters(name, mirror):
    tape = BUILDERS[name]()
    tape = tape.mirrored() if mirror else tape
    signal, strategy = first_signal(tape)
    assert signal == (Signal.ENTER_SHORT if mirror else Signal.ENTER_LONG)
    assert strategy.votes == (name,)
    assert strategy.strength == pytest.approx(1 / 8, rel=0.5)
    # One vote cannot meet two confirmations.
    assert first_signal(tape, min_confirmations=2)[0] == Signal.NONE
    # Nor a strength threshold above its weight share.
    assert first_signal(tape, min_strength=0.2)[0] == Signal.NONE
    # The flat warm-up alone votes nothing.
    assert first_signal(flat(Tape()))[0] == Signal.NONE


@pytest.mark.parametrize("name", SIGNALS)
def test_each_signal_trades_through_the_engine(tmp_path, name):
    capture = BUILDERS[name]().mids(100.0, dt=100).write(tmp_path / f"{name}.txt")
    params = {**SMALL, "min_confirmations": 1, "min_strength": 0.0}
    run = run_strategy(Scalper, [capture], params=params, venue={"latency_ms": 5.0})
    assert run.orders and run.orders[0]["purpose"] == "ENTRY"
    assert run.orders[0]["side"] == 1
    quiet = run_strategy(Scalper, [capture], params={**params, "min_confirmations": 2})
    assert quiet.orders == []


def test_a_vote_expires_after_its_window():
    tape = micro_trend().mids(100.3, dt=3000)  # the next quote, after the window
    p = ScalperParams(**{**SMALL, "min_confirmations": 1, "min_strength": 0.0})
    strategy = Scalper(None, _sizing(), p)
    ticks = tape.ticks()
    n = len(ticks)
    # Waiting (an order in flight): the vote is cast but nothing is signalled.
    assert strategy.scan(ticks, 0, n - 1, Mode.WAITING) == (n - 1, Signal.NONE)
    assert strategy.scan(ticks, n - 1, n, Mode.FLAT) == (n, Signal.NONE)


def test_linear_decay_weighs_an_older_vote_less():
    tape = micro_trend()
    tape.events.append(("q", tape.t + 1500, 100.25, 100.35))  # 1.5 s later, same mid
    p = {**SMALL, "min_confirmations": 1, "min_strength": 0.0}
    ticks = tape.ticks()
    fresh = Scalper(None, _sizing(), ScalperParams(**p))
    assert fresh.scan(ticks, 0, len(ticks), Mode.FLAT)[1] == Signal.ENTER_LONG
    strengths = {}
    for decay in ("linear", "none"):
        s = Scalper(None, _sizing(), ScalperParams(**p, decay=decay))
        s.scan(ticks, 0, len(ticks) - 1, Mode.WAITING)  # the vote is cast, not signalled
        assert s.scan(ticks, len(ticks) - 1, len(ticks), Mode.FLAT)[1] == Signal.ENTER_LONG
        strengths[decay] = s.strength
    assert strengths["none"] == pytest.approx(1 / 8)
    assert strengths["linear"] == pytest.approx(1 / 8 * (1 - 1.5 / 3))


def test_multi_timeframe_needs_the_slow_trend_to_agree():
    rising = Tape().mids(*[100.0 + 0.01 * i for i in range(60)], dt=1000)
    falling = Tape().mids(*[100.0 - 0.01 * i for i in range(60)], dt=1000)
    extra = {"htf_ms": 5000, "htf_period": 3}
    for base in (rising, falling):
        base.t += 10  # then three quick moves up: a micro-trend long vote
        last = base.events[-1][2] + 0.05
        base.mids(last + 0.1, last + 0.2, last + 0.3, dt=100)
    weights = {**_only("micro_trend"), "allow_short": False}
    assert first_signal(rising, **extra, **weights)[0] == Signal.ENTER_LONG
    assert first_signal(falling, **extra, **weights)[0] == Signal.NONE
    assert first_signal(falling, **weights)[0] == Signal.ENTER_LONG  # without the option


def _only(name: str) -> dict[str, float]:
    return {f"weight_{s}": (1.0 if s == name else 0.0) for s in SIGNALS}


def test_holding_exits_on_the_opposite_signal_and_by_the_exits_stop():
    tape = micro_trend().mids(100.2, 100.1, 100.0, dt=100)  # then three moves down
    p = ScalperParams(**{**SMALL, "min_confirmations": 1, "min_strength": 0.0})
    s = Scalper(None, _sizing(), p)
    ticks = tape.ticks()
    i, signal = s.scan(ticks, 0, len(ticks), Mode.FLAT)
    assert signal == Signal.ENTER_LONG
    s.on_entry_filled(1, s.last_ask, int(ticks.ts[i]))
    opposite, signal = s.scan(ticks, i + 1, len(ticks), Mode.HOLDING)
    assert signal == Signal.EXIT_CROSS and s.exit_reason(signal) == "opposite_signal"
    # The scalper has no stop of its own: [exits] stop_bps (a tight one here) closes
    # first, two ticks down, before the opposite signal.
    from engine._config import ExitsSection, StrategySection
    from engine.core import SymbolCore
    from engine.ledger import PositionLedger
    from engine.strategy._exits import POLICY_SIGNAL, STOP_LOSS
    from engine.testing import quiet_logger

    ledger = PositionLedger()
    core = SymbolCore(
        symbol="BTCUSDT",
        config=StrategySection(kind="scalper"),
        log=quiet_logger(),
        ledger=ledger,
        strategy=Scalper(None, _sizing(), p),
        exits=ExitsSection(stop_bps=1.0),
    )
    i, signal = core.scan(ticks, 0, len(ticks))
    assert signal == Signal.ENTER_LONG
    ledger.adopt("BTCUSDT", 0.01, core.strategy.last_ask)  # as if the entry filled
    core.adopt_position(int(ticks.ts[i]))
    stop, signal = core.scan(ticks, i + 1, len(ticks))
    assert signal == POLICY_SIGNAL + STOP_LOSS and stop < opposite


@pytest.mark.parametrize(
    ("params", "key", "problem"),
    [
        ({"min_confirmatons": 2}, "strategy.params.min_confirmatons", "unknown key"),
        ({"min_confirmations": 9}, "strategy.params.min_confirmations", "must be <= 8"),
        ({"min_strength": 1.5}, "strategy.params.min_strength", "must be <= 1"),
        ({"decay": "exp"}, "strategy.params.decay", "exp"),
        ({"ema_fast": 30}, "strategy.params.ema_fast", "smaller than ema_slow"),
        ({"weight_spred": 1.0}, "strategy.params.weight_spred", "unknown key"),
        ({"weight_spread": -1.0}, "strategy.params.weight_spread", "must be >= 0"),
        (_only("nothing"), "strategy.params.weight_spread", "must be above 0"),
        ({"bar_ms": "1s"}, "strategy.params.bar_ms", "expected an integer"),
        # Stops, targets and time limits are [exits]'s now, not the scalper's.
        ({"stop_bps": 8.0}, "strategy.params.stop_bps", "unknown key"),
        ({"max_hold_ms": 30000}, "strategy.params.max_hold_ms", "unknown key"),
    ],
)
def test_a_wrong_parameter_names_its_key(tmp_path, params, key, problem):
    config = replay_config(
        tmp_path, [ROOT / "data/sample"], strategy={"kind": "scalper", "params": params}
    )
    with pytest.raises(ConfigError) as err:
        resolve_strategy(config)
    assert err.value.key == key and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_the_kind_loads_with_defaults(tmp_path):
    config = replay_config(tmp_path, [ROOT / "data/sample"], strategy={"kind": "scalper"})
    spec = resolve_strategy(config)
    assert spec.cls.__name__ == "Scalper" and spec.params == ScalperParams()


def _engine(tmp_path: Path, capture: Path, name: str) -> dict:
    cfg = tmp_path / f"{name}.toml"
    base = (ROOT / "examples/configs/scalper.toml").read_text()
    cfg.write_text(
        base.replace('paths = ["../../data/sample"]', f'paths = ["{capture}"]').replace(
            'dir = "../../runs"', f'dir = "{tmp_path / "runs"}"'
        )
    )
    report = tmp_path / f"{name}.json"
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--config", str(cfg), "--report", str(report)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(report.read_text())


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_real_capture_replays_trade_and_are_deterministic(tmp_path, capture):
    if not capture.exists():
        pytest.skip("../shared/data/external is not beside the repository")
    first = _engine(tmp_path, capture, "a")
    again = _engine(tmp_path, capture, "b")
    assert first["fills"] > 0
    assert first["journal_sha256"] == again["journal_sha256"]

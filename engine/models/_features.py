"""Model features as data: a :class:`FeatureSpec` names the columns, one builder fills them.

Every feature is a scale-free number read from a symbol's :class:`~engine.indicators.IndicatorSet`
(returns, RSI, MACD histogram, Bollinger %b, ATR, realized volatility, spread, top-of-book
imbalance, order-flow imbalance, VPIN, tick momentum, velocity and acceleration, ...), from a
little trade state (time-decayed volume and trade counts), from the market regime
(:mod:`engine.models._regime`) or, for the two depth features only, from a local order book. No
indicator is computed here: the builder only feeds events to the indicator set and reads its
``values``.

One builder, two ways in:

* :meth:`FeatureBuilder.on_ticks` consumes rows of a :class:`~engine.messages.Ticks` batch,
  the columns the replay feed sends the symbol actor, in one compiled call per range. This is
  the engine's path *and* the training path: :func:`ticks_of` builds the same columns from
  captures with the feed's own column code, :func:`features_at` takes rows from them, and
  ``tools.train`` finds entry signals by running the strategy's ``scan`` over those columns.
* :meth:`FeatureBuilder.on_event` consumes decoded capture messages (and REST depth
  snapshots) one at a time. It goes through the same compiled quote and trade steps, so it
  gives the same rows for the same quotes and trades; it also keeps an order book, which
  the Ticks path cannot (DEPTH rows carry no book content).

Depth features (:data:`DEPTH_FEATURES`: ``book_imbalance_5``, ``book_imbalance_20``) are
therefore computed by :meth:`on_event` only; they stay NaN on the Ticks path, and
:func:`default_feature_spec` leaves them out.

A row at event ``t`` is written before event ``t + 1`` is consumed, so no feature can see the
future. The entry signal's direction is a feature too (``side``, +1 long / -1 short), given to
:meth:`FeatureBuilder.row` by the caller: the model answers "will *this* entry pay".
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, ModuleType

import attrs
import msgspec
import numpy as np
from numba import njit

from .._errors import DataError
from .._progress import slow_step
from ..book import BookError as _BookError
from ..book import BookSync, DepthSnapshot, OrderBook, decode_snapshot
from ..feeds._capture import (
    AggTrade,
    BookTicker,
    CaptureStats,
    DepthUpdate,
    MarketMessage,
    Trade,
    merge_captures,
    open_capture,
    parse_line,
    scan_symbols,
)
from ..feeds._columns import Columns, append_message
from ..indicators import IndicatorSet, IndicatorSpec, spec
from ..indicators._common import drop_stale_kernel_cache
from ..indicators._set import update_quote, update_trade
from ..indicators._specialize import is_cached, specialize, warm
from ..messages import EventKind, Ticks
from ._regime import UNKNOWN, Regime, RegimeDetector

_SECOND = 1_000_000_000
_QUOTE = int(EventKind.QUOTE)
_TRADE = int(EventKind.TRADE)

#: Event types :meth:`FeatureBuilder.on_event` consumes (others are ignored).
FeatureEvent = MarketMessage | DepthSnapshot

#: Features that need the depth book: computed by :meth:`FeatureBuilder.on_event` only.
DEPTH_FEATURES: tuple[str, ...] = ("book_imbalance_5", "book_imbalance_20")


def _indicator_specs(bucket_volume: float) -> tuple[IndicatorSpec, ...]:
    s = _SECOND
    return (
        spec("roc", timeperiod=1, bar_ns=s, label="ret_1s"),
        spec("roc", timeperiod=5, bar_ns=s, label="ret_5s"),
        spec("roc", timeperiod=30, bar_ns=s, label="ret_30s"),
        spec("roc", timeperiod=20, label="ret_20t"),
        spec("rsi", timeperiod=14, bar_ns=s, label="rsi"),
        spec("macd", fastperiod=12, slowperiod=26, signalperiod=9, bar_ns=s, label="macd"),
        spec("bbands", timeperiod=20, bar_ns=s, label="bb"),
        spec("atr", timeperiod=14, bar_ns=s, label="atr"),
        spec("realized_vol", timeperiod=30, bar_ns=s, label="rvol"),
        spec("stoch", bar_ns=s, label="stoch"),
        spec("adx", timeperiod=14, bar_ns=s, label="adx"),
        spec("rolling_vwap", timeperiod=200, label="rvwap"),
        spec("tick_momentum", timeperiod=50, label="tickmom"),
        spec("velocity", timeperiod=20, label="vel"),
        spec("trade_ofi", timeperiod=100, label="ofi"),
        spec("vpin", bucket_volume=bucket_volume, timeperiod=50, label="vpin"),
        spec("book_imbalance", label="bimb"),
        spec("spread_bps", label="spread"),
    )


# -- the compiled quote / trade steps (one definition for both ways in) --------------------

# Slots of the float64 trade/quote state.
(
    _F_BID,
    _F_ASK,
    _F_BID_QTY,
    _F_ASK_QTY,
    _F_LAST_TRADE,
    _F_VOL_FAST,
    _F_VOL_SLOW,
    _F_N_FAST,
    _F_N_SLOW,
    _F_RVOL_LEVEL,
) = range(10)
_N_FLOAT_STATE = 10
# Half-lives of the decayed trade volume / count (seconds).
_FAST_S = 5.0
_SLOW_S = 60.0


def _new_float_state() -> np.ndarray:
    fs = np.zeros(_N_FLOAT_STATE, dtype=np.float64)
    fs[[_F_BID, _F_ASK, _F_BID_QTY, _F_ASK_QTY, _F_LAST_TRADE, _F_RVOL_LEVEL]] = np.nan
    return fs


@njit(cache=True, nogil=True)
def _quote_step(
    fs: np.ndarray,
    spec_table: np.ndarray,
    state: np.ndarray,
    bar_ns: np.ndarray,
    bar_state: np.ndarray,
    values: np.ndarray,
    bid: float,
    ask: float,
    bid_qty: float,
    ask_qty: float,
) -> None:
    fs[_F_BID] = bid
    fs[_F_ASK] = ask
    fs[_F_BID_QTY] = bid_qty
    fs[_F_ASK_QTY] = ask_qty
    update_quote(spec_table, state, bar_ns, bar_state, values, bid, ask, bid_qty, ask_qty)


@njit(cache=True, nogil=True)
def _trade_step(
    fs: np.ndarray,
    t_last: np.ndarray,
    spec_table: np.ndarray,
    state: np.ndarray,
    bar_ns: np.ndarray,
    bar_state: np.ndarray,
    values: np.ndarray,
    rvol_at: int,
    level_half_life_s: float,
    ts: int,
    price: float,
    qty: float,
    side: float,
) -> None:
    # Same rule as the indicator set: a trade with a NaN field is dropped whole.
    if price != price or qty != qty:
        return
    level_keep = 0.0
    if t_last[0] >= 0:
        dt = (ts - t_last[0]) / 1e9
        ff = 0.5 ** (dt / _FAST_S)
        fsl = 0.5 ** (dt / _SLOW_S)
        fs[_F_VOL_FAST] *= ff
        fs[_F_N_FAST] *= ff
        fs[_F_VOL_SLOW] *= fsl
        fs[_F_N_SLOW] *= fsl
        level_keep = 0.5 ** (dt / level_half_life_s)
    t_last[0] = ts
    fs[_F_VOL_FAST] += qty
    fs[_F_VOL_SLOW] += qty
    fs[_F_N_FAST] += 1.0
    fs[_F_N_SLOW] += 1.0
    fs[_F_LAST_TRADE] = price
    update_trade(spec_table, state, bar_ns, bar_state, values, ts, price, qty, side)
    # The slow realized-vol level the volatility regime compares against: a time-weighted
    # EMA of the realized vol, seeded with its first value.
    rv = values[rvol_at]
    if rv == rv:
        level = fs[_F_RVOL_LEVEL]
        if level != level:
            fs[_F_RVOL_LEVEL] = rv
        else:
            fs[_F_RVOL_LEVEL] = level * level_keep + rv * (1.0 - level_keep)


@njit(cache=True, nogil=True)
def _consume_ticks(
    fs: np.ndarray,
    t_last: np.ndarray,
    spec_table: np.ndarray,
    state: np.ndarray,
    bar_ns: np.ndarray,
    bar_state: np.ndarray,
    values: np.ndarray,
    rvol_at: int,
    level_half_life_s: float,
    ts: np.ndarray,
    kind: np.ndarray,
    bid: np.ndarray,
    bid_qty: np.ndarray,
    ask: np.ndarray,
    ask_qty: np.ndarray,
    price: np.ndarray,
    qty: np.ndarray,
    buyer_maker: np.ndarray,
    start: int,
    stop: int,
) -> None:
    for i in range(start, stop):
        k = kind[i]
        if k == _QUOTE:
            _quote_step(
                fs,
                spec_table,
                state,
                bar_ns,
                bar_state,
                values,
                bid[i],
                ask[i],
                bid_qty[i],
                ask_qty[i],
            )
        elif k == _TRADE:
            _trade_step(
                fs,
                t_last,
                spec_table,
                state,
                bar_ns,
                bar_state,
                values,
                rvol_at,
                level_half_life_s,
                ts[i],
                price[i],
                qty[i],
                -1.0 if buyer_maker[i] else 1.0,
            )


#: The kernels above, callees first: :func:`_kernels` copies them onto a set's own kernels.
_KERNELS = ("_quote_step", "_trade_step", "_consume_ticks")


@functools.cache
def _drop_stale_cache() -> None:
    # The kernels inline indicator kernels, and numba only watches a kernel's own file:
    # drop this package's cache (generated copies included) when either package changed.
    # Once per process, before the first kernel runs (at warm-up, not at import).
    here = Path(__file__).parent
    drop_stale_kernel_cache(here, also=[here.parent / "indicators"])


def _read_only(a: np.ndarray) -> np.ndarray:
    # numba types read-only and writable arrays apart: one kernel signature, not two.
    if not a.flags.writeable:
        return a
    view = a.view()
    view.flags.writeable = False
    return view


def _kernels(indicators: IndicatorSet) -> ModuleType:
    """The kernels of this module compiled onto ``indicators``' own set kernels.

    The module-level kernels call the generic set entry points, whose first compilation
    types every indicator of the package (tens of seconds on a cold cache); the copies
    compile only the feature set's indicators (see
    :func:`engine.indicators._specialize.specialize`). Same arithmetic, same results.
    """
    _drop_stale_cache()
    return specialize(sys.modules[__name__], _KERNELS, indicators.kernels)


def _warm_ticks() -> Ticks:
    """A quote and a trade: enough rows to call every branch of :func:`_consume_ticks`."""
    cols = Columns()
    cols.ints.extend((1, 1, 0, _QUOTE, 0, 2, 2, 1, _TRADE, 1))
    nan = math.nan
    cols.floats.extend((99.0, 1.0, 101.0, 1.0, nan, nan, nan, nan, nan, nan, 100.0, 0.5))
    ticks = cols.take()
    assert ticks is not None
    return ticks


class _BackgroundCompile:
    """The default spec's :func:`_consume_ticks` compiling in a child process.

    numba compiles under a process-wide lock (and mostly holds the GIL), so a thread
    would stall every other kernel load and the replay itself; a child process compiles
    on another core and leaves the result in numba's on-disk cache, which this process
    then loads in a fraction of a second. The child runs :func:`_compile_main` with this
    interpreter and the same environment (``NUMBA_CACHE_DIR`` included).
    """

    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the directory holding ``engine``
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-c", f"import {__name__} as m; m._compile_main()"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def done(self) -> bool:
        """Whether the child has exited (its kernels, if any, are in the cache)."""
        return self._proc is None or self._proc.poll() is not None

    def wait(self) -> None:
        """Wait for the child. A failed child only means this process compiles itself."""
        if self._proc is not None:
            self._proc.wait()
            self._proc = None


#: Background compiles in flight, by kernel module (see :meth:`FeatureBuilder.warm_up`).
_compiling: dict[ModuleType, _BackgroundCompile] = {}


def _compile_main() -> None:
    """The child of :class:`_BackgroundCompile`: compile the default spec's kernel."""
    b = FeatureBuilder(default_feature_spec())
    ticks = _warm_ticks()
    warm(b._k._consume_ticks, b._consume_args(ticks, 0, len(ticks)))


# -- the feature table -----------------------------------------------------------------


class _State:
    """What the feature functions read: indicator values, quote/trade state and the book."""

    __slots__ = ("book", "fs", "v")

    def __init__(self, v: np.ndarray, fs: np.ndarray, book: OrderBook) -> None:
        self.v = v
        self.fs = fs
        self.book = book


def _mid(s: _State) -> float:
    return 0.5 * (s.fs[_F_BID] + s.fs[_F_ASK])


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0.0 else math.nan


def _volume_ratio(s: _State) -> float:
    return _ratio(s.fs[_F_VOL_FAST] / _FAST_S, s.fs[_F_VOL_SLOW] / _SLOW_S)


def _as_feature(level: int) -> float:
    return math.nan if level == UNKNOWN else float(level)


def _feature_table(
    ix: Mapping[str, int], detector: RegimeDetector
) -> Mapping[str, Callable[[_State], float]]:
    """Feature name -> how to read it from the state (``ix`` maps indicator value names)."""

    def val(name: str, scale: float = 1.0) -> Callable[[_State], float]:
        i = ix[name]
        return lambda s: s.v[i] * scale

    def per_price_bps(name: str) -> Callable[[_State], float]:
        i = ix[name]
        return lambda s: s.v[i] / _mid(s) * 1e4

    bb_up, bb_lo = ix["bb.upperband"], ix["bb.lowerband"]
    rvwap, rvol, adx = ix["rvwap"], ix["rvol"], ix["adx"]

    def bb_pctb(s: _State) -> float:
        width = s.v[bb_up] - s.v[bb_lo]
        return (s.fs[_F_LAST_TRADE] - s.v[bb_lo]) / width if width > 0.0 else 0.5

    def microprice_bps(s: _State) -> float:
        fs = s.fs
        total = fs[_F_BID_QTY] + fs[_F_ASK_QTY]
        if not total > 0.0:
            return math.nan
        micro = (fs[_F_BID] * fs[_F_ASK_QTY] + fs[_F_ASK] * fs[_F_BID_QTY]) / total
        return (micro / _mid(s) - 1.0) * 1e4

    def signed_log_bps(name: str) -> Callable[[_State], float]:
        # Trades sharing a timestamp make velocity and acceleration explode: compress them.
        i = ix[name]

        def f(s: _State) -> float:
            x = s.v[i] / _mid(s) * 1e4
            return math.copysign(math.log1p(abs(x)), x)

        return f

    def depth_imbalance(n: int) -> Callable[[_State], float]:
        return lambda s: s.book.imbalance(n) if s.book.synced else math.nan

    return MappingProxyType(
        {
            # ROC is in percent: x100 gives bps.
            "ret_1s_bps": val("ret_1s", 100.0),
            "ret_5s_bps": val("ret_5s", 100.0),
            "ret_30s_bps": val("ret_30s", 100.0),
            "ret_20t_bps": val("ret_20t", 100.0),
            "rsi_14": val("rsi"),
            "macd_hist_bps": per_price_bps("macd.macdhist"),
            "bb_pctb": bb_pctb,
            "atr_bps": per_price_bps("atr"),
            "rvol_30s_bps": val("rvol", 1e4),
            "stoch_k": val("stoch.slowk"),
            "adx_14": val("adx"),
            "vwap_dev_bps": lambda s: (_mid(s) / s.v[rvwap] - 1.0) * 1e4,
            "tick_momentum": val("tickmom"),
            "velocity_slog": signed_log_bps("vel.velocity"),
            "acceleration_slog": signed_log_bps("vel.acceleration"),
            "ofi_imbalance": val("ofi.imbalance"),
            "vpin": val("vpin"),
            "book_imbalance_1": val("bimb"),
            "book_imbalance_5": depth_imbalance(5),
            "book_imbalance_20": depth_imbalance(20),
            "spread_bps": val("spread"),
            "microprice_bps": microprice_bps,
            "volume_ratio": _volume_ratio,
            "trade_rate_log": lambda s: math.log1p(s.fs[_F_N_FAST] / _FAST_S),
            "regime_vol": lambda s: _as_feature(detector.vol(s.v[rvol], s.fs[_F_RVOL_LEVEL])),
            "regime_volume": lambda s: _as_feature(detector.volume(_volume_ratio(s))),
            "regime_trend": lambda s: _as_feature(detector.trend(s.v[adx])),
        }
    )


#: Every feature a builder knows, in the default order (depth features included).
FEATURE_NAMES: tuple[str, ...] = (
    "side",
    *_feature_table(
        {n: 0 for n in IndicatorSet(_indicator_specs(1.0)).names}, RegimeDetector()
    ).keys(),
)


@attrs.frozen(kw_only=True)
class FeatureSpec:
    """The columns of a model's input, in order, and how the builder computes them.

    Attributes:
        names: feature names in column order (a subset of :data:`FEATURE_NAMES`;
            ``side`` is the entry direction given to :meth:`FeatureBuilder.row`).
        dtype: numpy dtype of the model input.
        bucket_volume: VPIN bucket size in base units.
        regime: the thresholds of the ``regime_*`` features.
        version: bumped whenever a feature's definition changes (sidecars record it).
    """

    names: tuple[str, ...] = attrs.field(converter=tuple)
    dtype: str = attrs.field(default="float32", validator=attrs.validators.in_(["float32"]))
    bucket_volume: float = attrs.field(default=2.0, validator=attrs.validators.gt(0.0))
    regime: RegimeDetector = attrs.field(
        factory=RegimeDetector, validator=attrs.validators.instance_of(RegimeDetector)
    )
    version: int = 2

    @names.validator
    def _check_names(self, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
        unknown = [n for n in value if n not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"unknown feature names {unknown}; known: {FEATURE_NAMES}")
        if len(set(value)) != len(value):
            raise ValueError("duplicate feature names")

    @property
    def indicator_specs(self) -> tuple[IndicatorSpec, ...]:
        """The indicators the builder feeds."""
        return _indicator_specs(self.bucket_volume)

    @property
    def needs_depth(self) -> bool:
        """Whether a feature of the spec needs the depth book (:data:`DEPTH_FEATURES`)."""
        return any(n in DEPTH_FEATURES for n in self.names)


def default_feature_spec() -> FeatureSpec:
    """The engine's feature spec: :data:`FEATURE_NAMES` without :data:`DEPTH_FEATURES`.

    Every feature of it is computable from :class:`~engine.messages.Ticks` columns.
    """
    return FeatureSpec(names=tuple(n for n in FEATURE_NAMES if n not in DEPTH_FEATURES))


class FeatureBuilder:
    """Consumes one symbol's events in replay order and writes the current feature row.

    Feed it either with :meth:`on_ticks` (the engine and training) or with :meth:`on_event`
    (decoded messages, depth book included), not both.

    Args:
        spec: which features, in which order.

    Attributes:
        indicators: the :class:`IndicatorSet` fed by the events.
        book: the local order book (synced by :meth:`on_event` only; depth features are NaN
            while it is not synced).
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.indicators = IndicatorSet(spec.indicator_specs)
        self.book = OrderBook()
        self._sync = BookSync(self.book)
        self._k = _kernels(self.indicators)
        # While the kernel compiles in the background (:meth:`warm_up`): the compile and
        # the ``(ticks, start, stop)`` ranges to consume once it is done.
        compiling = _compiling.get(self._k)
        self._deferred: tuple[_BackgroundCompile, list[tuple[Ticks, int, int]]] | None = (
            None if compiling is None else (compiling, [])
        )
        self._fs = _new_float_state()
        self._t_last = np.full(1, -1, dtype=np.int64)
        self._state = _State(self.indicators.values, self._fs, self.book)
        ix = self.indicators.index
        self._rvol_at = ix["rvol"]
        self._adx_at = ix["adx"]
        self._half_life = float(spec.regime.level_half_life_s)
        self._detector = spec.regime
        table = _feature_table(ix, spec.regime)
        self._side_at = spec.names.index("side") if "side" in spec.names else -1
        self._fns = tuple((i, table[n]) for i, n in enumerate(spec.names) if n != "side")
        self._dtype = np.dtype(spec.dtype)
        self._seen_trade = False
        self._handlers: Mapping[type, Callable[[int, object], None]] = {
            BookTicker: self._on_quote,
            AggTrade: self._on_agg_trade,
            DepthUpdate: self._on_depth,
            DepthSnapshot: self._on_snapshot,
            Trade: self._on_trade,
        }

    # -- Ticks ---------------------------------------------------------------

    @staticmethod
    def warm_up(*, background: bool = False) -> None:
        """Load (or compile) the default spec's :meth:`on_ticks` kernel.

        A kernel in numba's on-disk cache is loaded now (a fraction of a second; a cache
        numba cannot read is dropped). One that is not (a first run: seconds of
        compilation) is compiled now, or with ``background`` in a child process
        (:class:`_BackgroundCompile`) while the caller goes on starting up: until it is
        done, builders of that kernel keep the ranges :meth:`on_ticks` gives them and
        consume them, in order, at the first :meth:`row` or :meth:`regime` (waiting for
        the child there), so the rows are the same either way. Replay wants that (the
        first signal comes seconds of replay later); a live run would rather not take
        its first signal late, and waits here. :meth:`on_ticks` passes every column
        read-only, so this one compilation serves the replay tape and the live feeds
        alike. The :meth:`on_event` kernels (research only) compile at their first call.
        A stale cache is dropped first (:func:`_kernels`).

        Args:
            background: compile a missing kernel in a child process and return.
        """
        b = FeatureBuilder(default_feature_spec())
        if b._k in _compiling:
            if not background:
                b._catch_up()
            return
        ticks = _warm_ticks()
        kernel, args = b._k._consume_ticks, b._consume_args(ticks, 0, len(ticks))
        if background and not is_cached(kernel, args):
            try:
                _compiling[b._k] = _BackgroundCompile()
                return
            except OSError:  # no child process: compile here, as before
                pass
        warm(kernel, args)  # an unreadable cache is dropped and compiled here
        b.row(1.0)

    def on_ticks(self, ticks: Ticks, start: int = 0, stop: int | None = None) -> None:
        """Consume rows ``[start, stop)`` of a batch in one compiled call.

        QUOTE and TRADE rows are consumed exactly as :meth:`on_event` consumes the
        :class:`BookTicker` and trade messages they were built from; other rows are ignored.
        Every TRADE row counts: unlike :meth:`on_event`, rows cannot tell a raw trade from an
        aggregate one, so a feed should carry one trade stream per symbol.

        Args:
            ticks: the batch (its columns are only read).
            start: first row.
            stop: one past the last row (None: the end of the batch).

        While :meth:`warm_up`'s background compile runs, the range is kept (``ticks`` is
        referenced, not copied) and consumed later, in order.
        """
        n = len(ticks)
        stop = n if stop is None else min(stop, n)
        if start >= stop:
            return
        if self._deferred is not None:
            if not self._deferred[0].done():
                self._deferred[1].append((ticks, start, stop))
                return
            self._catch_up()
        self._k._consume_ticks(*self._consume_args(ticks, start, stop))

    def _consume_args(self, ticks: Ticks, start: int, stop: int) -> tuple[object, ...]:
        ind = self.indicators
        return (
            self._fs,
            self._t_last,
            ind.spec_table,
            ind.state,
            ind.bar_ns,
            ind.bar_state,
            ind.values,
            self._rvol_at,
            self._half_life,
            _read_only(ticks.ts),
            _read_only(ticks.kind),
            _read_only(ticks.bid),
            _read_only(ticks.bid_qty),
            _read_only(ticks.ask),
            _read_only(ticks.ask_qty),
            _read_only(ticks.price),
            _read_only(ticks.qty),
            _read_only(ticks.buyer_maker),
            start,
            stop,
        )

    def _catch_up(self) -> None:
        """Wait for the background compile and consume the ranges kept meanwhile."""
        if self._deferred is None:
            return
        compile_, kept = self._deferred
        self._deferred = None
        # Waits for the child, then loads what it cached (or compiles here if it failed).
        with slow_step("compiling the feature kernels (first run only)"):
            compile_.wait()
            t = _warm_ticks()  # on a scratch builder's state, not this one's
            warm(self._k._consume_ticks, FeatureBuilder(self.spec)._consume_args(t, 0, len(t)))
            for ticks, start, stop in kept:
                self._k._consume_ticks(*self._consume_args(ticks, start, stop))

    # -- messages ------------------------------------------------------------

    def on_event(self, ts: int, msg: object) -> None:
        """Consume one decoded event (other message types are ignored)."""
        self._catch_up()
        handler = self._handlers.get(type(msg))
        if handler is not None:
            handler(ts, msg)

    def _on_quote(self, ts: int, msg: BookTicker) -> None:
        self._k._quote_step(
            self._fs, *self.indicators.arrays, msg.bid, msg.ask, msg.bid_qty, msg.ask_qty
        )

    def _trade(self, ts: int, price: float, qty: float, buyer_maker: bool) -> None:
        self._k._trade_step(
            self._fs,
            self._t_last,
            *self.indicators.arrays,
            self._rvol_at,
            self._half_life,
            ts,
            price,
            qty,
            -1.0 if buyer_maker else 1.0,
        )

    def _on_trade(self, ts: int, msg: Trade) -> None:
        self._seen_trade = True
        self._trade(ts, msg.price, msg.qty, msg.buyer_maker)

    def _on_agg_trade(self, ts: int, msg: AggTrade) -> None:
        # A capture with both streams would count every trade twice: raw trades win.
        if not self._seen_trade:
            self._trade(ts, msg.price, msg.qty, msg.buyer_maker)

    def _on_depth(self, ts: int, msg: DepthUpdate) -> None:
        # On a bad diff the book stays unsynced until the next snapshot: depth features go NaN.
        with contextlib.suppress(_BookError):
            self._sync.on_diff(msg)

    def _on_snapshot(self, ts: int, msg: DepthSnapshot) -> None:
        if self._sync.needs_snapshot:
            self._sync.on_snapshot(msg)

    # -- rows ----------------------------------------------------------------

    @property
    def n_features(self) -> int:
        """Number of columns."""
        return len(self.spec.names)

    def row(self, side: float, out: np.ndarray | None = None) -> np.ndarray:
        """The feature row as of the last event consumed.

        Args:
            side: the entry's direction, +1 long, -1 short.
            out: a ``(n_features,)`` array of :attr:`FeatureSpec.dtype` to fill
                (allocated when None).

        Returns:
            ``out``; NaN where a feature is not warm yet.
        """
        self._catch_up()
        if out is None:
            out = np.empty(self.n_features, dtype=self._dtype)
        s = self._state
        with np.errstate(all="ignore"):
            for i, fn in self._fns:
                out[i] = fn(s)
        if self._side_at >= 0:
            out[self._side_at] = side
        return out

    def ready(self, row: np.ndarray) -> bool:
        """Whether every feature of ``row`` is finite (the indicators are warm)."""
        return bool(np.isfinite(row).all())

    def regime(self) -> Regime:
        """The market regime as of the last event (what the ``regime_*`` features encode)."""
        self._catch_up()
        v, fs = self.indicators.values, self._fs
        return self._detector.classify(
            float(v[self._rvol_at]),
            float(fs[_F_RVOL_LEVEL]),
            _volume_ratio(self._state),
            float(v[self._adx_at]),
        )


# -- history for training ----------------------------------------------------------------


def ticks_of(paths: Sequence[Path], symbol: str | None = None) -> Ticks:
    """One symbol's whole history as the :class:`Ticks` columns the replay feed sends.

    Events are read by the feed's :func:`~engine.feeds.merge_captures` and appended by its
    column code (:func:`engine.feeds._columns.append_message`), so training sees the very
    columns the symbol actor sees in a replay of the same files (``seq`` counts this symbol's
    events only).

    Args:
        paths: capture (or public-data CSV) files.
        symbol: the symbol; None when the files hold exactly one.

    Raises:
        DataError: unreadable files, several symbols and none chosen, or no events.
    """
    paths = [Path(p) for p in paths]
    if symbol is None:
        found = scan_symbols(paths)
        if len(found) != 1:
            raise DataError(f"the data holds symbols {found}: choose one")
        symbol = found[0]
    cols = Columns()
    stats = CaptureStats()
    for seq, (ts, msg) in enumerate(merge_captures(paths, stats, frozenset({symbol}))):
        append_message(cols, ts, seq, msg)
    ticks = cols.take()
    if ticks is None:
        raise DataError(f"no {symbol} events in {[str(p) for p in paths]}")
    return ticks


def features_at(
    ticks: Ticks,
    at: Mapping[int, float] | Sequence[tuple[int, float]],
    spec: FeatureSpec,
) -> np.ndarray:
    """Feature rows at given row indices of ``ticks``, as the symbol actor computes them.

    One :class:`FeatureBuilder` consumes the rows with :meth:`~FeatureBuilder.on_ticks` up to
    and including each wanted index, then writes the row (the calls the engine makes at a
    signal).

    Args:
        ticks: the columns (see :func:`ticks_of`).
        at: ``{row_index: side}`` (or pairs): the row after event ``row_index``.
        spec: the feature spec.

    Returns:
        ``(len(at), n_features)`` rows in ascending index order.
    """
    wanted = dict(at)
    order = sorted(wanted)
    builder = FeatureBuilder(spec)
    rows = np.full((len(order), len(spec.names)), np.nan, dtype=np.dtype(spec.dtype))
    pos = 0
    for k, i in enumerate(order):
        if not 0 <= i < len(ticks):
            raise IndexError(f"row {i} is outside the {len(ticks)} ticks")
        builder.on_ticks(ticks, pos, i + 1)
        pos = i + 1
        builder.row(wanted[i], rows[k])
    return rows


def signal_rows(ticks: Ticks, ts_events: Iterable[int]) -> np.ndarray:
    """The row index of each signal time: the first QUOTE row at exactly that time.

    The strategy raises entries on the first quote of a new sample bucket, and bucket edges
    are times, so that quote is the first one stamped ``ts_event``.

    Raises:
        ValueError: no quote at one of the times.
    """
    quotes = np.flatnonzero(ticks.kind == _QUOTE)
    qts = ticks.ts[quotes]
    want = np.asarray(list(ts_events), dtype=np.int64)
    pos = np.searchsorted(qts, want, side="left")
    bad = (pos >= qts.shape[0]) | (qts[np.minimum(pos, qts.shape[0] - 1)] != want)
    if bad.any():
        raise ValueError(f"no quote at ts {want[bad][:5].tolist()} (of {int(bad.sum())})")
    return quotes[pos]


def training_rows(
    paths: Sequence[Path],
    symbol: str | None,
    signals: Sequence[tuple[int, float]],
    spec: FeatureSpec,
) -> np.ndarray:
    """Feature rows of signals given by time, as training computes them.

    The captures' :class:`Ticks` columns (:func:`ticks_of`), each ``(ts_event, side)`` placed
    at its row (:func:`signal_rows`) and the rows computed by :func:`features_at`: what
    ``tools.train`` does, for checking the engine's journaled rows against it.

    Returns:
        ``(len(signals), n_features)`` rows in the order given.
    """
    ticks = ticks_of(paths, symbol)
    index = signal_rows(ticks, [int(t) for t, _side in signals])
    unique = sorted({int(i) for i in index})
    rows = features_at(ticks, {i: 0.0 for i in unique}, spec)
    out = rows[np.searchsorted(unique, index)]
    if "side" in spec.names:
        # ``side`` is only a column: it does not change the others.
        out[:, spec.names.index("side")] = [side for _t, side in signals]
    return out


def read_events(
    paths: Sequence[Path], symbol: str | None = None
) -> Iterator[tuple[int, FeatureEvent]]:
    """Events of captures in file order, REST depth snapshots included (for :meth:`on_event`).

    Like :func:`engine.feeds.read_capture` (same decoding and monotonic replay time), but a
    recorded ``/depth`` snapshot is yielded as a :class:`~engine.book.DepthSnapshot` so that a
    :class:`FeatureBuilder` can sync its order book from the capture alone.

    Args:
        paths: capture files, read one after the other.
        symbol: keep only this symbol's market events (None keeps all).
    """
    for path in paths:
        stats = CaptureStats()
        last_ts = 0
        for line in open_capture(Path(path)):
            start = line.find(b"{")
            if start >= 0 and line.startswith(b'{"lastUpdateId"', start):
                try:
                    ts = int(line[:start]) if start else last_ts
                    msg: FeatureEvent = decode_snapshot(line[start:])
                except (ValueError, msgspec.DecodeError, _BookError):
                    continue
            else:
                parsed = parse_line(line, stats)
                if parsed is None:
                    continue
                recv, msg = parsed
                if symbol is not None and msg.symbol != symbol:
                    continue
                ts = recv if recv is not None else msg.event_time * 1_000_000
            ts = max(ts, last_ts)
            last_ts = ts
            yield ts, msg


def events_features_at(
    events: Iterable[tuple[int, object]],
    at: Mapping[int, float] | Sequence[tuple[int, float]],
    spec: FeatureSpec,
) -> np.ndarray:
    """Like :func:`features_at` over decoded events through :meth:`FeatureBuilder.on_event`.

    The path for specs with :data:`DEPTH_FEATURES` (research only: the engine cannot
    compute them).
    """
    wanted = dict(at)
    order = sorted(wanted)
    builder = FeatureBuilder(spec)
    rows = np.full((len(order), len(spec.names)), np.nan, dtype=np.dtype(spec.dtype))
    k = 0
    for i, (ts, msg) in enumerate(events):
        if k >= len(order):
            break
        builder.on_event(ts, msg)
        while k < len(order) and order[k] == i:
            builder.row(wanted[i], rows[k])
            k += 1
    return rows

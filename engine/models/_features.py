"""Model features as data: a :class:`FeatureSpec` names the columns, one builder fills them.

Every feature is a scale-free number read from a symbol's :class:`~engine.indicators.IndicatorSet`
(returns, RSI, MACD histogram, Bollinger %b, ATR, realized volatility, spread, top-of-book
imbalance, order-flow imbalance, VPIN, tick momentum, velocity and acceleration, ...), from the
local order book (N-level imbalance via :meth:`~engine.book.OrderBook.imbalance`) or from a little
trade state (time-decayed volume and trade counts). No indicator is computed here: the builder
only feeds events to the indicator set and reads its ``values``.

:class:`FeatureBuilder` consumes events one at a time, in replay order, and :meth:`row` writes the
current feature row. Training calls the same builder over history (:func:`features_at`) and
inference calls it on the live stream, so the two cannot drift apart; and because a row at
event ``t`` is written before event ``t + 1`` is consumed, no feature can see the future.

The entry signal's direction is a feature too (``side``, +1 long / -1 short), given to
:meth:`FeatureBuilder.row` by the caller: the model answers "will *this* entry pay".
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import attrs
import msgspec
import numpy as np

from ..book import BookError as _BookError
from ..book import BookSync, DepthSnapshot, OrderBook, decode_snapshot
from ..feeds._capture import (
    AggTrade,
    BookTicker,
    CaptureStats,
    DepthUpdate,
    MarketMessage,
    Trade,
    open_capture,
    parse_line,
)
from ..indicators import IndicatorSet, IndicatorSpec, spec

_SECOND = 1_000_000_000

#: Event types a :class:`FeatureBuilder` consumes (others are ignored).
FeatureEvent = MarketMessage | DepthSnapshot


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


class _State:
    """What the feature functions read: indicator values, quote, book and trade state."""

    __slots__ = (
        "ask",
        "ask_qty",
        "bid",
        "bid_qty",
        "book",
        "last_trade",
        "n_fast",
        "n_slow",
        "t_decay",
        "v",
        "vol_fast",
        "vol_slow",
    )

    def __init__(self, v: np.ndarray, book: OrderBook) -> None:
        self.v = v
        self.book = book
        self.bid = self.ask = self.bid_qty = self.ask_qty = math.nan
        self.last_trade = math.nan
        self.vol_fast = self.vol_slow = self.n_fast = self.n_slow = 0.0
        self.t_decay = -1


# Half-lives of the decayed trade volume / count (seconds).
_FAST_S = 5.0
_SLOW_S = 60.0


def _mid(s: _State) -> float:
    return 0.5 * (s.bid + s.ask)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0.0 else math.nan


def _feature_table(ix: Mapping[str, int]) -> Mapping[str, Callable[[_State], float]]:
    """Feature name -> how to read it from the state (``ix`` maps indicator value names)."""

    def val(name: str, scale: float = 1.0) -> Callable[[_State], float]:
        i = ix[name]
        return lambda s: s.v[i] * scale

    def per_price_bps(name: str) -> Callable[[_State], float]:
        i = ix[name]
        return lambda s: s.v[i] / _mid(s) * 1e4

    bb_up, bb_lo = ix["bb.upperband"], ix["bb.lowerband"]
    rvwap = ix["rvwap"]

    def bb_pctb(s: _State) -> float:
        width = s.v[bb_up] - s.v[bb_lo]
        return (s.last_trade - s.v[bb_lo]) / width if width > 0.0 else 0.5

    def microprice_bps(s: _State) -> float:
        total = s.bid_qty + s.ask_qty
        if not total > 0.0:
            return math.nan
        micro = (s.bid * s.ask_qty + s.ask * s.bid_qty) / total
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
            "volume_ratio": lambda s: _ratio(s.vol_fast / _FAST_S, s.vol_slow / _SLOW_S),
            "trade_rate_log": lambda s: math.log1p(s.n_fast / _FAST_S),
        }
    )


#: Every feature a builder knows, in the default order.
FEATURE_NAMES: tuple[str, ...] = (
    "side",
    *_feature_table({n: 0 for n in IndicatorSet(_indicator_specs(1.0)).names}).keys(),
)


@attrs.frozen(kw_only=True)
class FeatureSpec:
    """The columns of a model's input, in order, and how the builder computes them.

    Attributes:
        names: feature names in column order (a subset of :data:`FEATURE_NAMES`;
            ``side`` is the entry direction given to :meth:`FeatureBuilder.row`).
        dtype: numpy dtype of the model input.
        bucket_volume: VPIN bucket size in base units.
        version: bumped whenever a feature's definition changes (sidecars record it).
    """

    names: tuple[str, ...] = attrs.field(converter=tuple)
    dtype: str = attrs.field(default="float32", validator=attrs.validators.in_(["float32"]))
    bucket_volume: float = attrs.field(default=2.0, validator=attrs.validators.gt(0.0))
    version: int = 1

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


def default_feature_spec() -> FeatureSpec:
    """The engine's feature spec: every feature in :data:`FEATURE_NAMES` order."""
    return FeatureSpec(names=FEATURE_NAMES)


class FeatureBuilder:
    """Consumes one symbol's events in replay order and writes the current feature row.

    Args:
        spec: which features, in which order.

    Attributes:
        indicators: the :class:`IndicatorSet` fed by the events.
        book: the local order book (depth features are NaN while it is not synced).
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.indicators = IndicatorSet(spec.indicator_specs)
        self.book = OrderBook()
        self._sync = BookSync(self.book)
        self._state = _State(self.indicators.values, self.book)
        table = _feature_table(self.indicators.index)
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

    # -- events --------------------------------------------------------------

    def on_event(self, ts: int, msg: object) -> None:
        """Consume one event (other message types are ignored)."""
        handler = self._handlers.get(type(msg))
        if handler is not None:
            handler(ts, msg)

    def _on_quote(self, ts: int, msg: BookTicker) -> None:
        s = self._state
        s.bid, s.ask, s.bid_qty, s.ask_qty = msg.bid, msg.ask, msg.bid_qty, msg.ask_qty
        self.indicators.update_quote(msg.bid, msg.ask, msg.bid_qty, msg.ask_qty)

    def _trade(self, ts: int, price: float, qty: float, buyer_maker: bool) -> None:
        s = self._state
        if s.t_decay >= 0:
            dt = (ts - s.t_decay) / _SECOND
            ff = 0.5 ** (dt / _FAST_S)
            fs = 0.5 ** (dt / _SLOW_S)
            s.vol_fast *= ff
            s.n_fast *= ff
            s.vol_slow *= fs
            s.n_slow *= fs
        s.t_decay = ts
        s.vol_fast += qty
        s.vol_slow += qty
        s.n_fast += 1.0
        s.n_slow += 1.0
        s.last_trade = price
        self.indicators.update_trade(ts, price, qty, -1 if buyer_maker else 1)

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


# -- reading captures for training -------------------------------------------------------


def read_events(
    paths: Sequence[Path], symbol: str | None = None
) -> Iterator[tuple[int, FeatureEvent]]:
    """Events of captures in file order, REST depth snapshots included.

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


def features_at(
    events: Iterable[tuple[int, object]],
    at: Mapping[int, float] | Sequence[tuple[int, float]],
    spec: FeatureSpec,
) -> np.ndarray:
    """Feature rows at given event indices, computed by a :class:`FeatureBuilder`.

    Args:
        events: ``(ts_ns, message)`` in replay order.
        at: ``{event_index: side}`` (or pairs): the row after event ``event_index``.
        spec: the feature spec.

    Returns:
        ``(len(at), n_features)`` rows in ascending event-index order.
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

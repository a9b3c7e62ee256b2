"""A symbol's indicator set: every indicator's state in one array, one fused njit update.

An :class:`IndicatorSet` is built from :class:`IndicatorSpec` entries. All states are
concatenated into one float64 array (each block laid out exactly as that indicator's
``*_state`` returns it), a small int64 table says which kernel owns which block, and the
latest outputs land in one float64 ``values`` array whose names are
:attr:`IndicatorSet.names`. :func:`update_batch` consumes a batch of market events (and
:func:`update_trade` / :func:`update_quote` / :func:`update_depth` a single one) in one
compiled call that allocates nothing; a strategy kernel can call them from its own njit
code with ``*indicator_set.arrays``.

Inputs by indicator family:

* TA-Lib indicators and realized volatility, Ichimoku, market profile consume *bars* built
  from trades. ``IndicatorSpec.bar_ns`` sets the bar length: 0 makes every trade a bar
  (open = high = low = close = price, volume = qty); otherwise time bars aligned on
  ``ts // bar_ns`` are emitted when the first trade of a later bar arrives.
* VWAP, rolling VWAP, TWAP, tick momentum, velocity, trade OFI and VPIN consume trades.
* Book imbalance and spread consume top-of-book quotes; the N-level imbalance consumes
  depth snapshots (rows of sizes, best level first).

A trade with a NaN price or quantity, or a quote/depth event with a NaN field, is dropped
whole: no state changes and ``values`` keeps its previous content.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs
import numpy as np
from numba import njit

from . import _levels as lv
from . import _micro as mi
from . import _momentum as mo
from . import _overlap as ov
from . import _volatility as vo
from . import _volume as vm
from ._common import borrowed_view

EVENT_QUOTE = 1
EVENT_TRADE = 2
EVENT_DEPTH = 3

SRC_BAR, SRC_TRADE, SRC_QUOTE, SRC_DEPTH = range(4)

# Kernel ids (the order is the dispatch order; only equality matters).
(
    K_SMA,
    K_EMA,
    K_WMA,
    K_RSI,
    K_ROC,
    K_MOM,
    K_TRIX,
    K_RVOL,
    K_MACD,
    K_BBANDS,
    K_STOCHRSI,
    K_ATR,
    K_NATR,
    K_CCI,
    K_WILLR,
    K_ADX,
    K_PLUS_DI,
    K_MINUS_DI,
    K_STOCH,
    K_ICHIMOKU,
    K_AROON,
    K_MFI,
    K_AD,
    K_OBV,
    K_MPROFILE,
    K_VWAP,
    K_RVWAP,
    K_TWAP,
    K_TICKMOM,
    K_VELOCITY,
    K_OFI,
    K_VPIN,
    K_BOOKIMB,
    K_SPREAD,
    K_BOOKIMB_N,
) = range(35)


@attrs.frozen
class _Kind:
    kernel: int
    source: int
    outputs: tuple[str, ...]
    make_state: Callable[..., np.ndarray]


_KINDS: Mapping[str, _Kind] = MappingProxyType(
    {
        "sma": _Kind(K_SMA, SRC_BAR, ("real",), ov.sma_state),
        "ema": _Kind(K_EMA, SRC_BAR, ("real",), lambda timeperiod=30: ov.ema_state(timeperiod)),
        "wma": _Kind(K_WMA, SRC_BAR, ("real",), ov.wma_state),
        "rsi": _Kind(K_RSI, SRC_BAR, ("real",), lambda timeperiod=14: mo.rsi_state(timeperiod)),
        "roc": _Kind(K_ROC, SRC_BAR, ("real",), mo.roc_state),
        "mom": _Kind(K_MOM, SRC_BAR, ("real",), mo.mom_state),
        "trix": _Kind(K_TRIX, SRC_BAR, ("real",), mo.trix_state),
        "realized_vol": _Kind(K_RVOL, SRC_BAR, ("real",), mi.realized_vol_state),
        "macd": _Kind(K_MACD, SRC_BAR, ("macd", "macdsignal", "macdhist"), mo.macd_state),
        "bbands": _Kind(
            K_BBANDS, SRC_BAR, ("upperband", "middleband", "lowerband"), ov.bbands_state
        ),
        "stochrsi": _Kind(K_STOCHRSI, SRC_BAR, ("fastk", "fastd"), mo.stochrsi_state),
        "atr": _Kind(K_ATR, SRC_BAR, ("real",), vo.atr_state),
        "natr": _Kind(K_NATR, SRC_BAR, ("real",), vo.natr_state),
        "cci": _Kind(K_CCI, SRC_BAR, ("real",), mo.cci_state),
        "willr": _Kind(K_WILLR, SRC_BAR, ("real",), mo.willr_state),
        "adx": _Kind(K_ADX, SRC_BAR, ("real",), vo.adx_state),
        "plus_di": _Kind(K_PLUS_DI, SRC_BAR, ("real",), vo.plus_di_state),
        "minus_di": _Kind(K_MINUS_DI, SRC_BAR, ("real",), vo.minus_di_state),
        "stoch": _Kind(K_STOCH, SRC_BAR, ("slowk", "slowd"), mo.stoch_state),
        "ichimoku": _Kind(
            K_ICHIMOKU,
            SRC_BAR,
            ("tenkan", "kijun", "senkou_a", "senkou_b", "chikou"),
            lv.ichimoku_state,
        ),
        "aroon": _Kind(K_AROON, SRC_BAR, ("aroondown", "aroonup"), mo.aroon_state),
        "mfi": _Kind(K_MFI, SRC_BAR, ("real",), mo.mfi_state),
        "ad": _Kind(K_AD, SRC_BAR, ("real",), vm.ad_state),
        "obv": _Kind(K_OBV, SRC_BAR, ("real",), vm.obv_state),
        "market_profile": _Kind(
            K_MPROFILE, SRC_BAR, ("poc", "vah", "val"), lv.market_profile_state
        ),
        "vwap": _Kind(K_VWAP, SRC_TRADE, ("real",), mi.vwap_state),
        "rolling_vwap": _Kind(K_RVWAP, SRC_TRADE, ("real",), mi.rolling_vwap_state),
        "twap": _Kind(K_TWAP, SRC_TRADE, ("real",), mi.twap_state),
        "tick_momentum": _Kind(K_TICKMOM, SRC_TRADE, ("real",), mi.tick_momentum_state),
        "velocity": _Kind(K_VELOCITY, SRC_TRADE, ("velocity", "acceleration"), mi.velocity_state),
        "trade_ofi": _Kind(K_OFI, SRC_TRADE, ("net", "imbalance"), mi.trade_ofi_state),
        "vpin": _Kind(K_VPIN, SRC_TRADE, ("real",), mi.vpin_state),
        "book_imbalance": _Kind(K_BOOKIMB, SRC_QUOTE, ("real",), mi.book_imbalance_state),
        "spread_bps": _Kind(K_SPREAD, SRC_QUOTE, ("real",), mi.spread_bps_state),
        "book_imbalance_n": _Kind(K_BOOKIMB_N, SRC_DEPTH, ("real",), mi.book_imbalance_n_state),
    }
)

INDICATOR_NAMES: tuple[str, ...] = tuple(_KINDS)
"""Names accepted by :class:`IndicatorSpec`."""


def _check_name(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value not in _KINDS:
        raise ValueError(f"unknown indicator {value!r}; known: {', '.join(INDICATOR_NAMES)}")


@attrs.frozen(kw_only=True)
class IndicatorSpec:
    """One indicator of a set.

    Attributes:
        name: indicator name, one of :data:`INDICATOR_NAMES`.
        params: keyword arguments of the indicator's ``*_state`` factory (the batch
            function's parameters).
        bar_ns: bar length in nanoseconds for bar-fed indicators; 0 feeds every trade as
            a bar. Must be 0 for trade, quote and depth indicators.
        label: value name prefix; by default the name followed by the parameter values.
    """

    name: str = attrs.field(validator=_check_name)
    params: Mapping[str, Any] = attrs.field(
        factory=dict, converter=lambda p: MappingProxyType(dict(p))
    )
    bar_ns: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    label: str | None = None

    @property
    def value_label(self) -> str:
        """The label used in value names."""
        if self.label is not None:
            return self.label
        parts = [self.name, *(_fmt(v) for v in self.params.values())]
        if self.bar_ns:
            parts.append(f"bar{self.bar_ns}")
        return "_".join(parts)


def _fmt(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def spec(name: str, /, bar_ns: int = 0, label: str | None = None, **params: Any) -> IndicatorSpec:
    """Shorthand: ``spec("rsi", timeperiod=14)``."""
    return IndicatorSpec(name=name, params=params, bar_ns=bar_ns, label=label)


# spec table columns
_C_KERNEL, _C_OFF, _C_LEN, _C_VAL, _C_NOUT, _C_SRC, _C_BAR = range(7)
_N_COLS = 7
# bar builder state columns: [bucket, open, high, low, close, volume, is_open, done,
#  done_open, done_high, done_low, done_close, done_volume]
_B_BUCKET, _B_O, _B_H, _B_L, _B_C, _B_V, _B_OPEN, _B_DONE = range(8)
_B_DONE_BAR = 8
_B_COLS = 13


class IndicatorSet:
    """State, spec table and values of one symbol's indicators (see module docstring).

    From a strategy's own njit code, pass :attr:`arrays` and unpack it into the kernels::

        iset = IndicatorSet(default_specs(bin_size=1.0, bucket_volume=5.0))

        @njit
        def on_trade(arrays, ts, price, qty, side):
            update_trade(*arrays, ts, price, qty, side)
            return arrays[4][rsi_at]  # values; rsi_at = iset.index["rsi_14"]

    Attributes:
        specs: the entries, in order.
        names: value names, ``values[i]`` is ``names[i]``.
        index: value name -> position in ``values``.
        values: latest outputs (NaN until an indicator is warm).
        arrays: ``(spec_table, state, bar_ns, bar_state, values)``, the leading arguments
            of :func:`update_batch` and friends.
    """

    def __init__(self, specs: Iterable[IndicatorSpec | tuple[str, Mapping[str, Any]]]) -> None:
        entries = tuple(s if isinstance(s, IndicatorSpec) else spec(s[0], **s[1]) for s in specs)
        if not entries:
            raise ValueError("an indicator set needs at least one indicator")
        bar_lengths: list[int] = []
        blocks: list[np.ndarray] = []
        rows: list[list[int]] = []
        names: list[str] = []
        offset = 0
        for e in entries:
            kind = _KINDS[e.name]
            if kind.source != SRC_BAR and e.bar_ns:
                raise ValueError(f"{e.name} consumes ticks, not bars: bar_ns must be 0")
            try:
                block = np.ascontiguousarray(kind.make_state(**e.params), dtype=np.float64)
            except TypeError as exc:
                raise ValueError(f"bad parameters for {e.name}: {exc}") from exc
            builder = -1
            if kind.source == SRC_BAR:
                if e.bar_ns not in bar_lengths:
                    bar_lengths.append(e.bar_ns)
                builder = bar_lengths.index(e.bar_ns)
            label = e.value_label
            outs = [label] if len(kind.outputs) == 1 else [f"{label}.{o}" for o in kind.outputs]
            rows.append(
                [kind.kernel, offset, block.shape[0], len(names), len(outs), kind.source, builder]
            )
            names.extend(outs)
            blocks.append(block)
            offset += block.shape[0]
        if len(set(names)) != len(names):
            raise ValueError("duplicate value names; give the entries distinct labels")
        self.specs = entries
        self.names: tuple[str, ...] = tuple(names)
        self.index: Mapping[str, int] = MappingProxyType({n: i for i, n in enumerate(names)})
        self._initial_state = np.concatenate(blocks)
        self.spec_table = np.array(rows, dtype=np.int64).reshape(len(rows), _N_COLS)
        self.bar_ns = np.array(bar_lengths or [0], dtype=np.int64)
        self.state = self._initial_state.copy()
        self.bar_state = np.zeros((self.bar_ns.shape[0], _B_COLS), dtype=np.float64)
        self.values = np.full(len(names), np.nan, dtype=np.float64)
        self.arrays = (self.spec_table, self.state, self.bar_ns, self.bar_state, self.values)
        self._no_depth = np.zeros((0, 0), dtype=np.float64)

    def reset(self) -> None:
        """Forget all history (in place: the arrays keep their identity)."""
        self.state[:] = self._initial_state
        self.bar_state[:] = 0.0
        self.values[:] = np.nan

    def update_batch(
        self,
        kind: np.ndarray,
        ts: np.ndarray,
        price: np.ndarray,
        qty: np.ndarray,
        side: np.ndarray,
        bid: np.ndarray,
        ask: np.ndarray,
        bid_qty: np.ndarray,
        ask_qty: np.ndarray,
        bid_depth: np.ndarray | None = None,
        ask_depth: np.ndarray | None = None,
    ) -> np.ndarray:
        """Consume a batch of events in one compiled call; returns :attr:`values`.

        Args:
            kind: int8 event kinds, :data:`EVENT_QUOTE`, :data:`EVENT_TRADE` or
                :data:`EVENT_DEPTH`, one per row of the other arrays.
            ts: int64 epoch nanoseconds.
            price, qty, side: trade fields (side +1 buyer aggressor, -1 seller).
            bid, ask, bid_qty, ask_qty: top-of-book fields.
            bid_depth, ask_depth: ``(n, levels)`` sizes for depth events, if any.
        """
        update_batch(
            *self.arrays,
            kind,
            ts,
            price,
            qty,
            side,
            bid,
            ask,
            bid_qty,
            ask_qty,
            self._no_depth if bid_depth is None else bid_depth,
            self._no_depth if ask_depth is None else ask_depth,
        )
        return self.values

    def record_batch(
        self,
        kind: np.ndarray,
        ts: np.ndarray,
        price: np.ndarray,
        qty: np.ndarray,
        side: np.ndarray,
        bid: np.ndarray,
        ask: np.ndarray,
        bid_qty: np.ndarray,
        ask_qty: np.ndarray,
        bid_depth: np.ndarray | None = None,
        ask_depth: np.ndarray | None = None,
    ) -> np.ndarray:
        """Like :meth:`update_batch`, returning the values after every event.

        Returns:
            A new ``(len(kind), len(names))`` float64 array (this one allocates).
        """
        rows = np.empty((np.shape(kind)[0], self.values.shape[0]), dtype=np.float64)
        record_batch(
            *self.arrays,
            kind,
            ts,
            price,
            qty,
            side,
            bid,
            ask,
            bid_qty,
            ask_qty,
            self._no_depth if bid_depth is None else bid_depth,
            self._no_depth if ask_depth is None else ask_depth,
            rows,
        )
        return rows

    def update_trade(self, ts: int, price: float, qty: float, side: int) -> np.ndarray:
        """Consume one trade; returns :attr:`values`."""
        update_trade(*self.arrays, ts, price, qty, side)
        return self.values

    def update_quote(self, bid: float, ask: float, bid_qty: float, ask_qty: float) -> np.ndarray:
        """Consume one top-of-book quote; returns :attr:`values`."""
        update_quote(*self.arrays, bid, ask, bid_qty, ask_qty)
        return self.values

    def update_depth(self, bid_qty: np.ndarray, ask_qty: np.ndarray) -> np.ndarray:
        """Consume one depth snapshot (sizes per level, best first); returns :attr:`values`."""
        update_depth(*self.arrays, bid_qty, ask_qty)
        return self.values


def default_specs(*, bin_size: float, bucket_volume: float) -> tuple[IndicatorSpec, ...]:
    """The default indicator set of a symbol.

    Args:
        bin_size: market-profile bin width in price units (a few ticks).
        bucket_volume: VPIN bucket size in base units (about 1/50 of daily volume).
    """
    second = 1_000_000_000
    return (
        spec("ema", timeperiod=12),
        spec("ema", timeperiod=26),
        spec("rsi", timeperiod=14),
        spec("macd", fastperiod=12, slowperiod=26, signalperiod=9),
        spec("bbands", timeperiod=20),
        spec("realized_vol", timeperiod=100),
        spec("market_profile", bin_size=bin_size, timeperiod=1000),
        spec("atr", timeperiod=14, bar_ns=second),
        spec("adx", timeperiod=14, bar_ns=second),
        spec("stoch", bar_ns=second),
        spec("mfi", timeperiod=14, bar_ns=second),
        spec("cci", timeperiod=14, bar_ns=second),
        spec("vwap"),
        spec("rolling_vwap", timeperiod=200),
        spec("twap", timeperiod=200),
        spec("tick_momentum", timeperiod=50),
        spec("velocity", timeperiod=20),
        spec("trade_ofi", timeperiod=100),
        spec("vpin", bucket_volume=bucket_volume, timeperiod=50),
        spec("book_imbalance"),
        spec("spread_bps"),
    )


def parameters_of(name: str) -> Mapping[str, Any]:
    """Default parameters of indicator ``name`` (those of its state factory)."""
    sig = inspect.signature(_KINDS[name].make_state)
    return MappingProxyType(
        {k: p.default for k, p in sig.parameters.items() if p.default is not p.empty}
    )


def outputs_of(name: str) -> Sequence[str]:
    """Output names of indicator ``name``."""
    return _KINDS[name].outputs


# --- kernels --------------------------------------------------------------------------


@njit(nogil=True)
def _bar_update(
    kernel: int,
    st: np.ndarray,
    o: float,
    h: float,
    lo: float,
    c: float,
    v: float,
    out: np.ndarray,
) -> None:
    if kernel == K_SMA:
        out[0] = ov.sma_update(st, c)
    elif kernel == K_EMA:
        out[0] = ov.ema_update(st, c)
    elif kernel == K_WMA:
        out[0] = ov.wma_update(st, c)
    elif kernel == K_RSI:
        out[0] = mo.rsi_update(st, c)
    elif kernel == K_ROC:
        out[0] = mo.roc_update(st, c)
    elif kernel == K_MOM:
        out[0] = mo.mom_update(st, c)
    elif kernel == K_TRIX:
        out[0] = mo.trix_update(st, c)
    elif kernel == K_RVOL:
        out[0] = mi.realized_vol_update(st, c)
    elif kernel == K_MACD:
        mo.macd_update(st, c, out)
    elif kernel == K_BBANDS:
        ov.bbands_update(st, c, out)
    elif kernel == K_STOCHRSI:
        mo.stochrsi_update(st, c, out)
    elif kernel == K_ATR:
        out[0] = vo.atr_update(st, h, lo, c)
    elif kernel == K_NATR:
        out[0] = vo.natr_update(st, h, lo, c)
    elif kernel == K_CCI:
        out[0] = mo.cci_update(st, h, lo, c)
    elif kernel == K_WILLR:
        out[0] = mo.willr_update(st, h, lo, c)
    elif kernel == K_ADX:
        out[0] = vo.adx_update(st, h, lo, c)
    elif kernel == K_PLUS_DI:
        out[0] = vo.plus_di_update(st, h, lo, c)
    elif kernel == K_MINUS_DI:
        out[0] = vo.minus_di_update(st, h, lo, c)
    elif kernel == K_STOCH:
        mo.stoch_update(st, h, lo, c, out)
    elif kernel == K_ICHIMOKU:
        lv.ichimoku_update(st, h, lo, c, out)
    elif kernel == K_AROON:
        mo.aroon_update(st, h, lo, out)
    elif kernel == K_MFI:
        out[0] = mo.mfi_update(st, h, lo, c, v)
    elif kernel == K_AD:
        out[0] = vm.ad_update(st, h, lo, c, v)
    elif kernel == K_OBV:
        out[0] = vm.obv_update(st, c, v)
    elif kernel == K_MPROFILE:
        lv.market_profile_update(st, c, v, out)


@njit(nogil=True)
def _trade_update(
    kernel: int, st: np.ndarray, ts: int, price: float, qty: float, side: float, out: np.ndarray
) -> None:
    if kernel == K_VWAP:
        out[0] = mi.vwap_update(st, ts, price, qty)
    elif kernel == K_RVWAP:
        out[0] = mi.rolling_vwap_update(st, price, qty)
    elif kernel == K_TWAP:
        out[0] = mi.twap_update(st, ts, price)
    elif kernel == K_TICKMOM:
        out[0] = mi.tick_momentum_update(st, price, qty)
    elif kernel == K_VELOCITY:
        mi.velocity_update(st, ts, price, out)
    elif kernel == K_OFI:
        mi.trade_ofi_update(st, qty, side, out)
    elif kernel == K_VPIN:
        out[0] = mi.vpin_update(st, qty, side)


@njit(nogil=True)
def _advance_bars(bar_ns: np.ndarray, bars: np.ndarray, ts: int, price: float, qty: float) -> None:
    for j in range(bar_ns.shape[0]):
        b = bars[j]
        width = bar_ns[j]
        if width == 0:
            b[_B_DONE] = 1.0
            b[_B_DONE_BAR] = price
            b[_B_DONE_BAR + 1] = price
            b[_B_DONE_BAR + 2] = price
            b[_B_DONE_BAR + 3] = price
            b[_B_DONE_BAR + 4] = qty
            continue
        bucket = float(ts // width)
        b[_B_DONE] = 0.0
        if b[_B_OPEN] != 0.0 and bucket == b[_B_BUCKET]:
            if price > b[_B_H]:
                b[_B_H] = price
            if price < b[_B_L]:
                b[_B_L] = price
            b[_B_C] = price
            b[_B_V] += qty
            continue
        if b[_B_OPEN] != 0.0:
            b[_B_DONE] = 1.0
            for k in range(5):
                b[_B_DONE_BAR + k] = b[_B_O + k]
        b[_B_OPEN] = 1.0
        b[_B_BUCKET] = bucket
        b[_B_O] = price
        b[_B_H] = price
        b[_B_L] = price
        b[_B_C] = price
        b[_B_V] = qty


@njit(nogil=True)
def _on_trade(
    spec_table: np.ndarray,
    state: np.ndarray,
    bar_ns: np.ndarray,
    bar_state: np.ndarray,
    values: np.ndarray,
    ts: int,
    price: float,
    qty: float,
    side: float,
) -> None:
    """Feed one trade to every trade- and bar-fed indicator of a set (see module doc)."""
    if price != price or qty != qty:
        return
    _advance_bars(bar_ns, bar_state, ts, price, qty)
    fside = float(side)
    for e in range(spec_table.shape[0]):
        row = spec_table[e]
        src = row[_C_SRC]
        if src != SRC_BAR and src != SRC_TRADE:
            continue
        bi = max(row[_C_BAR], 0)
        if src == SRC_BAR and bar_state[bi, _B_DONE] == 0.0:
            continue
        st = borrowed_view(state, row[_C_OFF], row[_C_LEN])
        out = borrowed_view(values, row[_C_VAL], row[_C_NOUT])
        if src == SRC_BAR:
            _bar_update(
                row[_C_KERNEL],
                st,
                bar_state[bi, _B_DONE_BAR],
                bar_state[bi, _B_DONE_BAR + 1],
                bar_state[bi, _B_DONE_BAR + 2],
                bar_state[bi, _B_DONE_BAR + 3],
                bar_state[bi, _B_DONE_BAR + 4],
                out,
            )
        else:
            _trade_update(row[_C_KERNEL], st, ts, price, qty, fside, out)


@njit(nogil=True)
def _on_quote(
    spec_table: np.ndarray,
    state: np.ndarray,
    values: np.ndarray,
    bid: float,
    ask: float,
    bid_qty: float,
    ask_qty: float,
) -> None:
    """Feed one top-of-book quote to the quote-fed indicators of a set."""
    if bid != bid or ask != ask or bid_qty != bid_qty or ask_qty != ask_qty:
        return
    for e in range(spec_table.shape[0]):
        row = spec_table[e]
        if row[_C_SRC] != SRC_QUOTE:
            continue
        st = borrowed_view(state, row[_C_OFF], row[_C_LEN])
        vi = row[_C_VAL]
        if row[_C_KERNEL] == K_BOOKIMB:
            values[vi] = mi.book_imbalance_update(st, bid_qty, ask_qty)
        elif row[_C_KERNEL] == K_SPREAD:
            values[vi] = mi.spread_bps_update(st, bid, ask)


@njit(nogil=True)
def _on_depth(
    spec_table: np.ndarray,
    state: np.ndarray,
    values: np.ndarray,
    bid_qty: np.ndarray,
    ask_qty: np.ndarray,
) -> None:
    """Feed one depth snapshot (sizes per level, best first) to the depth-fed indicators."""
    for e in range(spec_table.shape[0]):
        row = spec_table[e]
        if row[_C_SRC] != SRC_DEPTH:
            continue
        st = borrowed_view(state, row[_C_OFF], row[_C_LEN])
        v = mi.book_imbalance_n_update(st, bid_qty, ask_qty)
        if v == v:
            values[row[_C_VAL]] = v


# The public kernels below are cached entry points; the functions they call are compiled
# with them (uncached) so that LLVM can inline the whole chain into one loop.


@njit(cache=True, nogil=True)
def update_trade(
    spec_table: np.ndarray,
    state: np.ndarray,
    bar_ns: np.ndarray,
    bar_state: np.ndarray,
    values: np.ndarray,
    ts: int,
    price: float,
    qty: float,
    side: float,
) -> None:
    """Feed one trade to every trade- and bar-fed indicator of a set (see module doc)."""
    _on_trade(spec_table, state, bar_ns, bar_state, values, ts, price, qty, side)


@njit(cache=True, nogil=True)
def update_quote(
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
    """Feed one top-of-book quote to the quote-fed indicators of a set."""
    _on_quote(spec_table, state, values, bid, ask, bid_qty, ask_qty)


@njit(cache=True, nogil=True)
def update_depth(
    spec_table: np.ndarray,
    state: np.ndarray,
    bar_ns: np.ndarray,
    bar_state: np.ndarray,
    values: np.ndarray,
    bid_qty: np.ndarray,
    ask_qty: np.ndarray,
) -> None:
    """Feed one depth snapshot (sizes per level, best first) to the depth-fed indicators."""
    _on_depth(spec_table, state, values, bid_qty, ask_qty)


@njit(cache=True, nogil=True)
def update_batch(
    spec_table: np.ndarray,
    state: np.ndarray,
    bar_ns: np.ndarray,
    bar_state: np.ndarray,
    values: np.ndarray,
    kind: np.ndarray,
    ts: np.ndarray,
    price: np.ndarray,
    qty: np.ndarray,
    side: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    bid_qty: np.ndarray,
    ask_qty: np.ndarray,
    bid_depth: np.ndarray,
    ask_depth: np.ndarray,
) -> None:
    """Feed a batch of events, row ``i`` of every array being event ``i``.

    ``kind[i]`` selects which fields are read: trades read ``ts, price, qty, side``;
    quotes ``bid, ask, bid_qty, ask_qty``; depth events row ``i`` of ``bid_depth`` and
    ``ask_depth``. ``values`` holds the outputs after the last event.
    """
    for i in range(kind.shape[0]):
        k = kind[i]
        if k == EVENT_TRADE:
            _on_trade(
                spec_table, state, bar_ns, bar_state, values, ts[i], price[i], qty[i], side[i]
            )
        elif k == EVENT_QUOTE:
            _on_quote(spec_table, state, values, bid[i], ask[i], bid_qty[i], ask_qty[i])
        elif k == EVENT_DEPTH:
            _on_depth(spec_table, state, values, bid_depth[i], ask_depth[i])


@njit(cache=True, nogil=True)
def record_batch(
    spec_table: np.ndarray,
    state: np.ndarray,
    bar_ns: np.ndarray,
    bar_state: np.ndarray,
    values: np.ndarray,
    kind: np.ndarray,
    ts: np.ndarray,
    price: np.ndarray,
    qty: np.ndarray,
    side: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    bid_qty: np.ndarray,
    ask_qty: np.ndarray,
    bid_depth: np.ndarray,
    ask_depth: np.ndarray,
    rows: np.ndarray,
) -> None:
    """:func:`update_batch` that also copies ``values`` into ``rows[i]`` after event ``i``.

    For building feature matrices (one row per event) and for checking that the
    incremental path reproduces the batch functions row by row.
    """
    for i in range(kind.shape[0]):
        k = kind[i]
        if k == EVENT_TRADE:
            _on_trade(
                spec_table, state, bar_ns, bar_state, values, ts[i], price[i], qty[i], side[i]
            )
        elif k == EVENT_QUOTE:
            _on_quote(spec_table, state, values, bid[i], ask[i], bid_qty[i], ask_qty[i])
        elif k == EVENT_DEPTH:
            _on_depth(spec_table, state, values, bid_depth[i], ask_depth[i])
        rows[i, :] = values

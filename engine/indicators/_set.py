"""A symbol's indicator set: every indicator's state in one array, one fused njit update.

An :class:`IndicatorSet` is built from :class:`IndicatorSpec` entries. All states are
concatenated into one float64 array (each block laid out exactly as that indicator's
``*_state`` returns it), a small int64 table says which kernel owns which block, and the
latest outputs land in one float64 ``values`` array whose names are
:attr:`IndicatorSet.names`. :func:`update_batch` consumes a batch of market events (and
:func:`update_trade` / :func:`update_quote` / :func:`update_depth` a single one) in one
compiled call that allocates nothing; a strategy kernel can call them from its own njit
code with ``*indicator_set.arrays``.

:data:`REGISTRY` maps every indicator name to its kernel, its parameters (types,
defaults), its inputs and outputs; :func:`spec_from_config` turns a config table into a
validated :class:`IndicatorSpec`, so a strategy reaches any indicator by name.

Inputs by source (:attr:`IndicatorInfo.source`):

* ``bar``: TA-Lib indicators, realized volatility, GARCH, volatility of volatility,
  VPT, VWMA, Ichimoku and market profile consume *bars* built from trades.
  ``IndicatorSpec.bar_ns`` sets the bar length: 0 makes every trade a bar (open = high
  = low = close = price, volume = qty); otherwise time bars aligned on ``ts // bar_ns``
  are emitted when the first trade of a later bar arrives.
* ``trade``: VWAP, rolling VWAP, TWAP, tick momentum, velocity, trade OFI, VPIN, CVD and
  Kyle's lambda.
* ``quote``: book imbalance and spread (top of book).
* ``depth``: the N-level imbalance (rows of sizes, best level first), fed by
  :func:`update_depth` and :func:`update_book`.
* ``book``: depth within N bps and the spoofing signal (prices and sizes per level),
  fed by :func:`update_book`.

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

from . import _flow as fl
from . import _levels as lv
from . import _liquidity as lq
from . import _micro as mi
from . import _momentum as mo
from . import _oscillators as osc
from . import _overlap as ov
from . import _stats as sa
from . import _trend as tr
from . import _volatility as vo
from . import _volmodels as vmod
from . import _volume as vm
from ._common import borrowed_view, check_int

EVENT_QUOTE = 1
EVENT_TRADE = 2
EVENT_DEPTH = 3

SRC_BAR, SRC_TRADE, SRC_QUOTE, SRC_DEPTH, SRC_BOOK = range(5)
_SOURCE_NAMES = ("bar", "trade", "quote", "depth", "book")

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
    K_DEMA,
    K_TEMA,
    K_T3,
    K_KAMA,
    K_HT,
    K_SAR,
    K_VAR,
    K_STDDEV,
    K_LINREG,
    K_PO,
    K_CMO,
    K_ULTOSC,
    K_AROONOSC,
    K_BOP,
    K_DX,
    K_ADXR,
    K_VPT,
    K_VWMA,
    K_GARCH,
    K_VOLVOL,
    K_CLOUD,
    K_CVD,
    K_KYLE,
    K_DEPTH_BPS,
    K_SPOOF,
) = range(60)


class IndicatorConfigError(ValueError):
    """An indicator entry is wrong: unknown name or parameter, wrong type or range.

    Attributes:
        key: the dotted key to blame (``"strategy.indicators[2].window"``), for config
            loaders that report the full path; may be empty.
        problem: what was wrong, without the key.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


@attrs.frozen(kw_only=True)
class Param:
    """One parameter of an indicator.

    Attributes:
        name: keyword (the batch function's and the state factory's).
        type: ``int`` or ``float`` (a float parameter also takes an int).
        default: the default, or None when the parameter is required.
    """

    name: str
    type: type
    default: int | float | None

    @property
    def required(self) -> bool:
        """Whether a value must be given."""
        return self.default is None


@attrs.frozen(kw_only=True)
class IndicatorInfo:
    """What a strategy needs to use an indicator by name (an entry of :data:`REGISTRY`).

    Attributes:
        name: registry name (the batch function's name).
        source: what it consumes: ``"bar"`` (bars built from trades), ``"trade"``,
            ``"quote"`` (top of book), ``"depth"`` (sizes per level) or ``"book"``
            (prices and sizes per level).
        inputs: the fields read, e.g. ``("high", "low", "close")``.
        outputs: output names, in ``values`` order.
        params: parameters with types and defaults.
        update: the ``@njit`` incremental kernel (``<name>_update``).
        make_state: the state factory (``<name>_state``), called with ``params``.
        batch: the batch function over numpy arrays.
        talib: the TA-Lib function it reproduces, or None.
    """

    name: str
    source: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: tuple[Param, ...]
    update: Callable[..., Any]
    make_state: Callable[..., np.ndarray]
    batch: Callable[..., Any]
    talib: str | None
    kernel: int = attrs.field(repr=False)

    @property
    def source_id(self) -> int:
        return _SOURCE_NAMES.index(self.source)


_PARAM_TYPES = {"int": int, "float": float}


def _params_of(batch: Callable[..., Any]) -> tuple[Param, ...]:
    """Parameters of a batch function: its arguments annotated ``int`` or ``float``."""
    out = []
    for p in inspect.signature(batch).parameters.values():
        kind = _PARAM_TYPES.get(str(p.annotation))
        if kind is None:
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        out.append(Param(name=p.name, type=kind, default=default))
    return tuple(out)


C = ("close",)
HL = ("high", "low")
HLC = ("high", "low", "close")
CV = ("close", "volume")
HLCV = ("high", "low", "close", "volume")
_TRADE_TPQ = ("ts", "price", "volume")
_BOOK = ("bid_price[]", "bid_volume[]", "ask_price[]", "ask_volume[]")


def _info(
    name: str,
    kernel: int,
    source: int,
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    module: Any,
    talib: str | None,
    make_state: Callable[..., np.ndarray] | None = None,
) -> IndicatorInfo:
    batch = getattr(module, name)
    return IndicatorInfo(
        name=name,
        source=_SOURCE_NAMES[source],
        inputs=inputs,
        outputs=outputs,
        params=_params_of(batch),
        update=getattr(module, f"{name}_update"),
        make_state=make_state or getattr(module, f"{name}_state"),
        batch=batch,
        talib=talib,
        kernel=kernel,
    )


def _ema_state(timeperiod: int = 30) -> np.ndarray:
    return ov.ema_state(check_int("timeperiod", timeperiod, 1))


def _rsi_state(timeperiod: int = 14) -> np.ndarray:
    return mo.rsi_state(check_int("timeperiod", timeperiod, 2))


_R = (
    ("sma", K_SMA, SRC_BAR, C, ("real",), ov, "SMA"),
    ("ema", K_EMA, SRC_BAR, C, ("real",), ov, "EMA", _ema_state),
    ("wma", K_WMA, SRC_BAR, C, ("real",), ov, "WMA"),
    ("dema", K_DEMA, SRC_BAR, C, ("real",), tr, "DEMA"),
    ("tema", K_TEMA, SRC_BAR, C, ("real",), tr, "TEMA"),
    ("t3", K_T3, SRC_BAR, C, ("real",), tr, "T3"),
    ("kama", K_KAMA, SRC_BAR, C, ("real",), tr, "KAMA"),
    ("ht_trendline", K_HT, SRC_BAR, C, ("real",), tr, "HT_TRENDLINE"),
    ("sar", K_SAR, SRC_BAR, HL, ("real",), tr, "SAR"),
    ("bbands", K_BBANDS, SRC_BAR, C, ("upperband", "middleband", "lowerband"), ov, "BBANDS"),
    ("rsi", K_RSI, SRC_BAR, C, ("real",), mo, "RSI", _rsi_state),
    ("roc", K_ROC, SRC_BAR, C, ("real",), mo, "ROC"),
    ("mom", K_MOM, SRC_BAR, C, ("real",), mo, "MOM"),
    ("trix", K_TRIX, SRC_BAR, C, ("real",), mo, "TRIX"),
    ("macd", K_MACD, SRC_BAR, C, ("macd", "macdsignal", "macdhist"), mo, "MACD"),
    ("apo", K_PO, SRC_BAR, C, ("real",), osc, "APO"),
    ("ppo", K_PO, SRC_BAR, C, ("real",), osc, "PPO"),
    ("cmo", K_CMO, SRC_BAR, C, ("real",), osc, "CMO"),
    ("stochrsi", K_STOCHRSI, SRC_BAR, C, ("fastk", "fastd"), mo, "STOCHRSI"),
    ("stoch", K_STOCH, SRC_BAR, HLC, ("slowk", "slowd"), mo, "STOCH"),
    ("willr", K_WILLR, SRC_BAR, HLC, ("real",), mo, "WILLR"),
    ("cci", K_CCI, SRC_BAR, HLC, ("real",), mo, "CCI"),
    ("ultosc", K_ULTOSC, SRC_BAR, HLC, ("real",), osc, "ULTOSC"),
    ("aroon", K_AROON, SRC_BAR, HL, ("aroondown", "aroonup"), mo, "AROON"),
    ("aroonosc", K_AROONOSC, SRC_BAR, HL, ("real",), osc, "AROONOSC"),
    ("bop", K_BOP, SRC_BAR, ("open", "high", "low", "close"), ("real",), osc, "BOP"),
    ("mfi", K_MFI, SRC_BAR, HLCV, ("real",), mo, "MFI"),
    ("atr", K_ATR, SRC_BAR, HLC, ("real",), vo, "ATR"),
    ("natr", K_NATR, SRC_BAR, HLC, ("real",), vo, "NATR"),
    ("adx", K_ADX, SRC_BAR, HLC, ("real",), vo, "ADX"),
    ("adxr", K_ADXR, SRC_BAR, HLC, ("real",), vo, "ADXR"),
    ("dx", K_DX, SRC_BAR, HLC, ("real",), vo, "DX"),
    ("plus_di", K_PLUS_DI, SRC_BAR, HLC, ("real",), vo, "PLUS_DI"),
    ("minus_di", K_MINUS_DI, SRC_BAR, HLC, ("real",), vo, "MINUS_DI"),
    ("var", K_VAR, SRC_BAR, C, ("real",), sa, "VAR"),
    ("stddev", K_STDDEV, SRC_BAR, C, ("real",), sa, "STDDEV"),
    ("linearreg", K_LINREG, SRC_BAR, C, ("real",), sa, "LINEARREG"),
    ("linearreg_slope", K_LINREG, SRC_BAR, C, ("real",), sa, "LINEARREG_SLOPE"),
    ("linearreg_angle", K_LINREG, SRC_BAR, C, ("real",), sa, "LINEARREG_ANGLE"),
    ("linearreg_intercept", K_LINREG, SRC_BAR, C, ("real",), sa, "LINEARREG_INTERCEPT"),
    ("tsf", K_LINREG, SRC_BAR, C, ("real",), sa, "TSF"),
    ("obv", K_OBV, SRC_BAR, CV, ("real",), vm, "OBV"),
    ("ad", K_AD, SRC_BAR, HLCV, ("real",), vm, "AD"),
    ("vpt", K_VPT, SRC_BAR, CV, ("real",), vm, None),
    ("vwma", K_VWMA, SRC_BAR, CV, ("real",), vm, None),
    ("realized_vol", K_RVOL, SRC_BAR, C, ("real",), mi, None),
    ("garch", K_GARCH, SRC_BAR, C, ("real",), vmod, None),
    ("volvol", K_VOLVOL, SRC_BAR, C, ("real",), vmod, None),
    (
        "ichimoku",
        K_ICHIMOKU,
        SRC_BAR,
        HLC,
        ("tenkan", "kijun", "senkou_a", "senkou_b", "chikou"),
        lv,
        None,
    ),
    ("ichimoku_cloud", K_CLOUD, SRC_BAR, HLC, ("position", "thickness"), lv, None),
    ("market_profile", K_MPROFILE, SRC_BAR, CV, ("poc", "vah", "val"), lv, None),
    ("vwap", K_VWAP, SRC_TRADE, _TRADE_TPQ, ("real",), mi, None),
    ("rolling_vwap", K_RVWAP, SRC_TRADE, ("price", "volume"), ("real",), mi, None),
    ("twap", K_TWAP, SRC_TRADE, ("ts", "price"), ("real",), mi, None),
    ("tick_momentum", K_TICKMOM, SRC_TRADE, ("price", "volume"), ("real",), mi, None),
    ("velocity", K_VELOCITY, SRC_TRADE, ("ts", "price"), ("velocity", "acceleration"), mi, None),
    ("trade_ofi", K_OFI, SRC_TRADE, ("volume", "side"), ("net", "imbalance"), mi, None),
    ("vpin", K_VPIN, SRC_TRADE, ("volume", "side"), ("real",), mi, None),
    ("cvd", K_CVD, SRC_TRADE, ("ts", "volume", "side"), ("real",), fl, None),
    ("kyle_lambda", K_KYLE, SRC_TRADE, ("price", "volume", "side"), ("real",), fl, None),
    ("book_imbalance", K_BOOKIMB, SRC_QUOTE, ("bid_volume", "ask_volume"), ("real",), mi, None),
    ("spread_bps", K_SPREAD, SRC_QUOTE, ("bid", "ask"), ("real",), mi, None),
    (
        "book_imbalance_n",
        K_BOOKIMB_N,
        SRC_DEPTH,
        ("bid_volume[]", "ask_volume[]"),
        ("real",),
        mi,
        None,
    ),
    ("book_depth", K_DEPTH_BPS, SRC_BOOK, _BOOK, ("bid", "ask"), lq, None),
    ("spoofing", K_SPOOF, SRC_BOOK, _BOOK, ("bid", "ask"), lq, None),
)

REGISTRY: Mapping[str, IndicatorInfo] = MappingProxyType({r[0]: _info(*r) for r in _R})
"""Every indicator a strategy can use by name: kernel, parameters, inputs, outputs."""

INDICATOR_NAMES: tuple[str, ...] = tuple(REGISTRY)
"""Names accepted by :class:`IndicatorSpec`."""


def registry_table() -> str:
    """The README's indicator table (markdown), generated from :data:`REGISTRY`."""

    def params(info: IndicatorInfo) -> str:
        return ", ".join(
            f"`{p.name}`" if p.required else f"`{p.name}={p.default!r}`" for p in info.params
        )

    lines = [
        "| name | params | source: inputs | outputs | TA-Lib |",
        "|---|---|---|---|---|",
    ]
    for info in REGISTRY.values():
        outs = ", ".join(info.outputs)
        lines.append(
            f"| `{info.name}` | {params(info) or '-'} | {info.source}: {', '.join(info.inputs)} "
            f"| {outs} | {info.talib or '-'} |"
        )
    return "\n".join(lines) + "\n"


def _check_name(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value not in REGISTRY:
        raise IndicatorConfigError(
            "", f"unknown indicator {value!r}; known: {', '.join(INDICATOR_NAMES)}"
        )


def check_params(name: str, params: Mapping[str, Any], key: str = "") -> dict[str, Any]:
    """Validate ``params`` of indicator ``name`` against :data:`REGISTRY`.

    Returns:
        The parameters with float ones converted to float.

    Raises:
        IndicatorConfigError: unknown name or parameter, wrong type, missing required
            parameter; ``key`` prefixes the dotted key it names.
    """
    prefix = f"{key}." if key else ""
    if name not in REGISTRY:
        raise IndicatorConfigError(
            f"{prefix}name", f"unknown indicator {name!r}; known: {', '.join(INDICATOR_NAMES)}"
        )
    known = {p.name: p for p in REGISTRY[name].params}
    out: dict[str, Any] = {}
    for k, v in params.items():
        p = known.get(k)
        if p is None:
            names = ", ".join(known) or "none"
            raise IndicatorConfigError(
                f"{prefix}{k}", f"unknown parameter of {name} (known: {names})"
            )
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or (p.type is int and not isinstance(v, int))
        ):
            raise IndicatorConfigError(
                f"{prefix}{k}", f"must be {p.type.__name__} for {name}, got {v!r}"
            )
        out[k] = float(v) if p.type is float else v
    for p in known.values():
        if p.required and p.name not in out:
            raise IndicatorConfigError(
                f"{prefix}{p.name}", f"required parameter of {name} is missing"
            )
    return out


def _check_params(instance: IndicatorSpec, attribute: attrs.Attribute, value: Mapping) -> None:
    check_params(instance.name, value)


@attrs.frozen(kw_only=True)
class IndicatorSpec:
    """One indicator of a set.

    Attributes:
        name: indicator name, one of :data:`INDICATOR_NAMES`.
        params: keyword arguments of the indicator's ``*_state`` factory (the batch
            function's parameters); unknown names and wrong types are rejected.
        bar_ns: bar length in nanoseconds for bar-fed indicators; 0 feeds every trade as
            a bar. Must be 0 for trade, quote, depth and book indicators.
        label: value name prefix; by default the name followed by the parameter values.
    """

    name: str = attrs.field(validator=_check_name)
    params: Mapping[str, Any] = attrs.field(
        factory=dict, converter=lambda p: MappingProxyType(dict(p)), validator=_check_params
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


def spec_from_config(entry: Mapping[str, Any], key: str = "indicator") -> IndicatorSpec:
    """Build a spec from a config table: ``{"name": "kama", "timeperiod": 10, ...}``.

    Besides ``name``, the keys ``bar_ns`` and ``label`` are the spec's; every other key
    is a parameter of the indicator. The state is built once, so range errors surface
    here too.

    Raises:
        IndicatorConfigError: naming the dotted key (``key`` + the entry's key) at fault.
    """
    if not isinstance(entry, Mapping):
        raise IndicatorConfigError(key, f"expected a table, got {type(entry).__name__}")
    name = entry.get("name")
    if not isinstance(name, str):
        raise IndicatorConfigError(f"{key}.name", "missing or not a string")
    bar_ns = entry.get("bar_ns", 0)
    if isinstance(bar_ns, bool) or not isinstance(bar_ns, int) or bar_ns < 0:
        raise IndicatorConfigError(f"{key}.bar_ns", f"must be an integer >= 0, got {bar_ns!r}")
    label = entry.get("label")
    if label is not None and not isinstance(label, str):
        raise IndicatorConfigError(f"{key}.label", f"must be a string, got {label!r}")
    raw = {k: v for k, v in entry.items() if k not in ("name", "bar_ns", "label")}
    params = check_params(name, raw, key)
    info = REGISTRY[name]
    if info.source != "bar" and bar_ns:
        raise IndicatorConfigError(
            f"{key}.bar_ns", f"{name} consumes {info.source}s, not bars: must be 0"
        )
    try:
        info.make_state(**params)
    except ValueError as exc:
        # The factories' messages start with the parameter at fault, when there is one.
        first = str(exc).split(" ", 1)[0]
        at = f"{key}.{first}" if any(p.name == first for p in info.params) else key
        raise IndicatorConfigError(at, f"{name}: {exc}") from None
    return IndicatorSpec(name=name, params=params, bar_ns=bar_ns, label=label)


def specs_from_config(
    entries: Sequence[Mapping[str, Any]], key: str = "indicators"
) -> tuple[IndicatorSpec, ...]:
    """Specs of a list of config tables (``[[strategy.indicators]]``), for one set.

    Each entry as :func:`spec_from_config` reads it, named ``key[i]``; the value names
    of the entries (see :attr:`IndicatorSet.names`) must be distinct.

    Raises:
        IndicatorConfigError: naming the dotted key at fault (``indicators[1].label``
            for a value name an earlier entry already has).
    """
    specs: list[IndicatorSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        s = spec_from_config(entry, f"{key}[{i}]")
        for name in value_names(s):
            if name in seen:
                raise IndicatorConfigError(
                    f"{key}[{i}].label",
                    f"value name {name!r} is also entry {seen[name]}'s: give one a label",
                )
            seen[name] = i
        specs.append(s)
    return tuple(specs)


def value_names(entry: IndicatorSpec) -> tuple[str, ...]:
    """The names an entry's outputs take in a set: its label, or ``label.output`` each."""
    outputs = REGISTRY[entry.name].outputs
    label = entry.value_label
    return (label,) if len(outputs) == 1 else tuple(f"{label}.{o}" for o in outputs)


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

    From a strategy's own njit code, pass :attr:`arrays` and unpack it into the kernels,
    preferably the set's own (:attr:`kernels`, compiled for its indicators only)::

        iset = IndicatorSet(default_specs(bin_size=1.0, bucket_volume=5.0))
        update_trade = iset.kernels.update_trade

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
        kernels: a module with :func:`update_batch`, :func:`record_batch`,
            :func:`update_trade`, :func:`update_quote`, :func:`update_depth` and
            :func:`update_book` compiled for this set's indicators only (see
            ``_specialize``): a first start compiles a few kernels, not all of them.
            The module-level functions take the same arguments and work for any set.
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
            kind = REGISTRY[e.name]
            src = kind.source_id
            if src != SRC_BAR and e.bar_ns:
                raise ValueError(f"{e.name} consumes ticks, not bars: bar_ns must be 0")
            try:
                block = np.ascontiguousarray(kind.make_state(**e.params), dtype=np.float64)
            except TypeError as exc:
                raise ValueError(f"bad parameters for {e.name}: {exc}") from exc
            builder = -1
            if src == SRC_BAR:
                if e.bar_ns not in bar_lengths:
                    bar_lengths.append(e.bar_ns)
                builder = bar_lengths.index(e.bar_ns)
            outs = value_names(e)
            rows.append([kind.kernel, offset, block.shape[0], len(names), len(outs), src, builder])
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
        from ._specialize import kernels_for  # imports this module

        self.kernels = kernels_for(frozenset(int(k) for k in self.spec_table[:, _C_KERNEL]))

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
        self.kernels.update_batch(
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
        self.kernels.record_batch(
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
        self.kernels.update_trade(*self.arrays, ts, price, qty, side)
        return self.values

    def update_quote(self, bid: float, ask: float, bid_qty: float, ask_qty: float) -> np.ndarray:
        """Consume one top-of-book quote; returns :attr:`values`."""
        self.kernels.update_quote(*self.arrays, bid, ask, bid_qty, ask_qty)
        return self.values

    def update_depth(self, bid_qty: np.ndarray, ask_qty: np.ndarray) -> np.ndarray:
        """Consume one depth snapshot (sizes per level, best first); returns :attr:`values`."""
        self.kernels.update_depth(*self.arrays, bid_qty, ask_qty)
        return self.values

    def update_book(
        self, bid_px: np.ndarray, bid_qty: np.ndarray, ask_px: np.ndarray, ask_qty: np.ndarray
    ) -> np.ndarray:
        """Consume one book snapshot (float64 prices and sizes per level, best first).

        Feeds the book-fed indicators and, with the sizes, the depth-fed ones; returns
        :attr:`values`.
        """
        self.kernels.update_book(*self.arrays, bid_px, bid_qty, ask_px, ask_qty)
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
    return MappingProxyType(
        {p.name: p.default for p in REGISTRY[name].params if p.default is not None}
    )


def outputs_of(name: str) -> Sequence[str]:
    """Output names of indicator ``name``."""
    return REGISTRY[name].outputs


# --- kernels --------------------------------------------------------------------------


@njit(nogil=True, error_model="numpy")
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
    elif kernel == K_DEMA:
        out[0] = tr.dema_update(st, c)
    elif kernel == K_TEMA:
        out[0] = tr.tema_update(st, c)
    elif kernel == K_T3:
        out[0] = tr.t3_update(st, c)
    elif kernel == K_KAMA:
        out[0] = tr.kama_update(st, c)
    elif kernel == K_HT:
        out[0] = tr.ht_trendline_update(st, c)
    elif kernel == K_SAR:
        out[0] = tr.sar_update(st, h, lo)
    elif kernel == K_VAR:
        out[0] = sa.var_update(st, c)
    elif kernel == K_STDDEV:
        out[0] = sa.stddev_update(st, c)
    elif kernel == K_LINREG:
        out[0] = sa.linreg_update(st, c)
    elif kernel == K_PO:
        out[0] = osc.po_update(st, c)
    elif kernel == K_CMO:
        out[0] = osc.cmo_update(st, c)
    elif kernel == K_ULTOSC:
        out[0] = osc.ultosc_update(st, h, lo, c)
    elif kernel == K_AROONOSC:
        out[0] = osc.aroonosc_update(st, h, lo)
    elif kernel == K_BOP:
        out[0] = osc.bop_update(st, o, h, lo, c)
    elif kernel == K_DX:
        out[0] = vo.dx_update(st, h, lo, c)
    elif kernel == K_ADXR:
        out[0] = vo.adxr_update(st, h, lo, c)
    elif kernel == K_VPT:
        out[0] = vm.vpt_update(st, c, v)
    elif kernel == K_VWMA:
        out[0] = vm.vwma_update(st, c, v)
    elif kernel == K_GARCH:
        out[0] = vmod.garch_update(st, c)
    elif kernel == K_VOLVOL:
        out[0] = vmod.volvol_update(st, c)
    elif kernel == K_CLOUD:
        lv.ichimoku_cloud_update(st, h, lo, c, out)


@njit(nogil=True, error_model="numpy")
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
    elif kernel == K_CVD:
        out[0] = fl.cvd_update(st, ts, qty, side)
    elif kernel == K_KYLE:
        out[0] = fl.kyle_lambda_update(st, price, qty, side)


# The kernels below read the tables element by element: a row view (``bars[j]``,
# ``spec_table[e]``) would cost two atomic reference-count updates per use.


@njit(nogil=True, error_model="numpy")
def _advance_bars(bar_ns: np.ndarray, bars: np.ndarray, ts: int, price: float, qty: float) -> None:
    for j in range(bar_ns.shape[0]):
        width = bar_ns[j]
        if width == 0:
            bars[j, _B_DONE] = 1.0
            bars[j, _B_DONE_BAR] = price
            bars[j, _B_DONE_BAR + 1] = price
            bars[j, _B_DONE_BAR + 2] = price
            bars[j, _B_DONE_BAR + 3] = price
            bars[j, _B_DONE_BAR + 4] = qty
            continue
        bucket = float(ts // width)
        bars[j, _B_DONE] = 0.0
        if bars[j, _B_OPEN] != 0.0 and bucket == bars[j, _B_BUCKET]:
            if price > bars[j, _B_H]:
                bars[j, _B_H] = price
            if price < bars[j, _B_L]:
                bars[j, _B_L] = price
            bars[j, _B_C] = price
            bars[j, _B_V] += qty
            continue
        if bars[j, _B_OPEN] != 0.0:
            bars[j, _B_DONE] = 1.0
            for k in range(5):
                bars[j, _B_DONE_BAR + k] = bars[j, _B_O + k]
        bars[j, _B_OPEN] = 1.0
        bars[j, _B_BUCKET] = bucket
        bars[j, _B_O] = price
        bars[j, _B_H] = price
        bars[j, _B_L] = price
        bars[j, _B_C] = price
        bars[j, _B_V] = qty


@njit(nogil=True, error_model="numpy")
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
        src = spec_table[e, _C_SRC]
        if src != SRC_BAR and src != SRC_TRADE:
            continue
        bi = max(spec_table[e, _C_BAR], 0)
        if src == SRC_BAR and bar_state[bi, _B_DONE] == 0.0:
            continue
        st = borrowed_view(state, spec_table[e, _C_OFF], spec_table[e, _C_LEN])
        out = borrowed_view(values, spec_table[e, _C_VAL], spec_table[e, _C_NOUT])
        if src == SRC_BAR:
            _bar_update(
                spec_table[e, _C_KERNEL],
                st,
                bar_state[bi, _B_DONE_BAR],
                bar_state[bi, _B_DONE_BAR + 1],
                bar_state[bi, _B_DONE_BAR + 2],
                bar_state[bi, _B_DONE_BAR + 3],
                bar_state[bi, _B_DONE_BAR + 4],
                out,
            )
        else:
            _trade_update(spec_table[e, _C_KERNEL], st, ts, price, qty, fside, out)


@njit(nogil=True, error_model="numpy")
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
        if spec_table[e, _C_SRC] != SRC_QUOTE:
            continue
        st = borrowed_view(state, spec_table[e, _C_OFF], spec_table[e, _C_LEN])
        vi = spec_table[e, _C_VAL]
        if spec_table[e, _C_KERNEL] == K_BOOKIMB:
            values[vi] = mi.book_imbalance_update(st, bid_qty, ask_qty)
        elif spec_table[e, _C_KERNEL] == K_SPREAD:
            values[vi] = mi.spread_bps_update(st, bid, ask)


@njit(nogil=True, error_model="numpy")
def _on_depth(
    spec_table: np.ndarray,
    state: np.ndarray,
    values: np.ndarray,
    bid_qty: np.ndarray,
    ask_qty: np.ndarray,
) -> None:
    """Feed one depth snapshot (sizes per level, best first) to the depth-fed indicators."""
    for e in range(spec_table.shape[0]):
        if spec_table[e, _C_SRC] != SRC_DEPTH:
            continue
        st = borrowed_view(state, spec_table[e, _C_OFF], spec_table[e, _C_LEN])
        v = mi.book_imbalance_n_update(st, bid_qty, ask_qty)
        if v == v:
            values[spec_table[e, _C_VAL]] = v


@njit(nogil=True, error_model="numpy")
def _on_book(
    spec_table: np.ndarray,
    state: np.ndarray,
    values: np.ndarray,
    bid_px: np.ndarray,
    bid_qty: np.ndarray,
    ask_px: np.ndarray,
    ask_qty: np.ndarray,
) -> None:
    """Feed one book snapshot to the book-fed indicators, and its sizes to the depth-fed."""
    for e in range(spec_table.shape[0]):
        src = spec_table[e, _C_SRC]
        if src != SRC_BOOK and src != SRC_DEPTH:
            continue
        st = borrowed_view(state, spec_table[e, _C_OFF], spec_table[e, _C_LEN])
        if src == SRC_DEPTH:
            v = mi.book_imbalance_n_update(st, bid_qty, ask_qty)
            if v == v:
                values[spec_table[e, _C_VAL]] = v
            continue
        out = borrowed_view(values, spec_table[e, _C_VAL], spec_table[e, _C_NOUT])
        if spec_table[e, _C_KERNEL] == K_DEPTH_BPS:
            lq.book_depth_update(st, bid_px, bid_qty, ask_px, ask_qty, out)
        elif spec_table[e, _C_KERNEL] == K_SPOOF:
            lq.spoofing_update(st, bid_px, bid_qty, ask_px, ask_qty, out)


@njit(nogil=True, error_model="numpy")
def _on_event(
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
    i: int,
) -> None:
    """Feed event ``i`` of a batch (see :func:`update_batch`)."""
    k = kind[i]
    if k == EVENT_TRADE:
        _on_trade(spec_table, state, bar_ns, bar_state, values, ts[i], price[i], qty[i], side[i])
    elif k == EVENT_QUOTE:
        _on_quote(spec_table, state, values, bid[i], ask[i], bid_qty[i], ask_qty[i])
    elif k == EVENT_DEPTH:
        _on_depth(spec_table, state, values, bid_depth[i], ask_depth[i])


# The public kernels below are cached entry points; the functions they call are compiled
# with them (uncached) so that LLVM can inline the whole chain into one loop.


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy")
def update_book(
    spec_table: np.ndarray,
    state: np.ndarray,
    bar_ns: np.ndarray,
    bar_state: np.ndarray,
    values: np.ndarray,
    bid_px: np.ndarray,
    bid_qty: np.ndarray,
    ask_px: np.ndarray,
    ask_qty: np.ndarray,
) -> None:
    """Feed one book snapshot (prices and sizes per level, best first).

    Book-fed indicators read all four arrays, depth-fed ones the sizes.
    """
    _on_book(spec_table, state, values, bid_px, bid_qty, ask_px, ask_qty)


@njit(cache=True, nogil=True, error_model="numpy")
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
        _on_event(
            spec_table, state, bar_ns, bar_state, values, kind, ts, price, qty, side, bid, ask,
            bid_qty, ask_qty, bid_depth, ask_depth, i,
        )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
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
        _on_event(
            spec_table, state, bar_ns, bar_state, values, kind, ts, price, qty, side, bid, ask,
            bid_qty, ask_qty, bid_depth, ask_depth, i,
        )  # fmt: skip
        rows[i, :] = values

"""The strategy interface the symbol core drives.

A strategy is two things: a numba kernel that scans a range of a symbol's market
columns and returns at the first event that needs Python (a signal) or at the end of
the range the driver gives (the horizon), and Python hooks the core calls around it
(an entry filled, the position closed). The core owns the position machine, sizing,
orders and the journal; the strategy only says *when*: an entry (long or short) or
an exit with a reason. The same strategy object runs in replay (the deterministic
driver hands it long stretches of ticks) and in paper and live (a step's batch).

A shipped strategy is chosen by ``strategy.kind``; ``SHIPPED_STRATEGIES`` (in the
config module) maps each kind to its class, each in a file of the same shape as a
user's: ``ema_cross`` (:mod:`engine.strategy._ema_cross`), ``scalper``, ``book_imbalance``.

A :class:`QuotingStrategy` (``market_maker``) is the other kind: it does not enter and
exit one position but keeps a bid and an ask resting (post-only) and lets its
inventory move with their fills. Its kernel stops when the quotes it wants differ
enough from the ones working (:attr:`Signal.REQUOTE`); the core then asks
:meth:`QuotingStrategy.quotes` and places, amends or cancels one order per side.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, ClassVar

import attrs
from attrs import validators as v

from .._config import SHIPPED_STRATEGIES, Config, SizingSection, StrategySection, build_table
from .._errors import ConfigError
from ..indicators import IndicatorSet, specs_from_config, value_names
from ..messages import Ticks


class Signal(enum.IntEnum):
    """What a strategy's scan stopped for."""

    NONE = 0
    ENTER_LONG = 1
    ENTER_SHORT = 2
    EXIT_CROSS = 3
    EXIT_STOP = 4
    EXIT_TAKE_PROFIT = 5
    EXIT_TIME = 6
    REQUOTE = 7  # a quoting strategy's wanted quotes moved away from the working ones


class Mode(enum.IntEnum):
    """What the kernel looks for; set by the core from the position machine."""

    FLAT = 0  # IDLE: look for entries
    HOLDING = 1  # IN_POSITION: look for exits
    WAITING = 2  # SIGNALED / ORDERING / EXITING: only update indicators
    QUOTING = 3  # a quoting strategy with nothing in flight: look for requotes


EXIT_REASONS: dict[int, str] = {
    Signal.EXIT_CROSS: "cross",
    Signal.EXIT_STOP: "stop_loss",
    Signal.EXIT_TAKE_PROFIT: "take_profit",
    Signal.EXIT_TIME: "time_limit",
}


@attrs.frozen(kw_only=True)
class OrderSpec:
    """How to place an order: what :meth:`Strategy.entry_order` returns.

    ``order_type`` and ``time_in_force`` are Binance's (see
    :class:`~engine.messages.SubmitOrder`); ``price`` is the limit price (NaN for a
    market order).
    """

    order_type: str = attrs.field(default="MARKET", validator=v.in_(("MARKET", "LIMIT")))
    price: float = float("nan")
    time_in_force: str = attrs.field(default="GTC", validator=v.in_(("GTC", "IOC", "FOK", "GTX")))


MARKET = OrderSpec()
"""A market order."""


def configured_entry_order(config: StrategySection, side: int, bid: float, ask: float) -> OrderSpec:
    """The entry order ``[strategy] entry_order`` asks for (``side`` +1 buy, -1 sell)."""
    kind = config.entry_order
    if kind == "market":
        return MARKET
    offset = config.limit_offset_bps * 1e-4
    if kind == "limit_ioc":  # through the opposite touch
        price = ask * (1.0 + offset) if side > 0 else bid * (1.0 - offset)
        return OrderSpec(order_type="LIMIT", price=price, time_in_force="IOC")
    price = bid * (1.0 - offset) if side > 0 else ask * (1.0 + offset)  # at our touch
    tif = "GTX" if kind == "limit_gtx" else "GTC"
    return OrderSpec(order_type="LIMIT", price=price, time_in_force=tif)


class Strategy(abc.ABC):
    """One symbol's strategy state and kernel.

    Args:
        config: the ``[strategy]`` section (its parameters are checked with the config).
        sizing: the ``[sizing]`` section (the ATR period the sizing reads).
    """

    kind: ClassVar[str]
    Params: ClassVar[type | None] = None
    """An attrs class of the strategy's parameters (``[strategy.params]``), or None."""
    uses_book: ClassVar[bool] = False
    """Whether the kernel reads the order book columns (``Ticks.book_*``): replay
    rebuilds the book from depth diffs only for such strategies (it costs about as
    much as the rest of the parse)."""

    @abc.abstractmethod
    def __init__(self, config: StrategySection, sizing: SizingSection, params: Any = None) -> None:
        """One symbol's fresh state; ``params`` is an instance of :attr:`Params`."""

    @abc.abstractmethod
    def scan(self, ticks: Ticks, start: int, stop: int, mode: Mode) -> tuple[int, int]:
        """Advance over events ``start..stop`` (exclusive) of ``ticks`` in ``mode``.

        Returns:
            ``(index, signal)``: the event that raised a :class:`Signal` (the state
            includes it; resume at ``index + 1``), or ``(stop, Signal.NONE)``.
        """

    @property
    @abc.abstractmethod
    def last_bid(self) -> float:
        """The latest bid the kernel saw (an entry's or exit's reference price)."""

    @property
    @abc.abstractmethod
    def last_ask(self) -> float:
        """The latest ask the kernel saw."""

    @property
    def atr(self) -> float:
        """The strategy's ATR, for ATR sizing (NaN: none)."""
        return float("nan")

    @property
    def strength(self) -> float:
        """The latest signal's strength in [0, 1], for sizing by strength (1: full)."""
        return 1.0

    @abc.abstractmethod
    def on_entry_filled(self, side: int, entry_price: float, ts: int) -> None:
        """The position is held from ``ts`` (the ticks' clock) at ``entry_price``;
        ``side`` is +1 long, -1 short. Exits are looked for from the next tick on."""

    def entry_order(self, side: int, bid: float, ask: float) -> OrderSpec | None:
        """How to place an entry (``side`` +1 long, -1 short) at the quote ``bid``/``ask``:
        e.g. ``OrderSpec(order_type="LIMIT", price=bid, time_in_force="GTX")`` for a
        post-only bid at the touch. None (the default): as ``[strategy] entry_order``
        says (a market order unless configured otherwise)."""
        return None

    cross_reason: ClassVar[str] = EXIT_REASONS[Signal.EXIT_CROSS]
    """The journal's name for :attr:`Signal.EXIT_CROSS` (``opposite_signal`` where the
    strategy's own opposite entry signal is what closes)."""

    def exit_reason(self, signal: int) -> str:
        """The journal's name for an exit signal."""
        if signal == Signal.EXIT_CROSS:
            return self.cross_reason
        return EXIT_REASONS[signal]

    # -- configured indicators (``[[strategy.indicators]]``) --------------------------

    reads_indicators: ClassVar[bool] = False
    """Whether the strategy reads ``[[strategy.indicators]]`` (a config that declares
    some for a strategy that does not is refused)."""
    indicator_params: ClassVar[tuple[str, ...]] = ()
    """Fields of :attr:`Params` whose values name configured indicator values; each is
    checked at load to be one (``strategy.params.<field>``)."""
    indicator_set: IndicatorSet | None = None
    """This symbol's configured indicators, once :meth:`configured_indicators` ran."""

    def configured_indicators(self, config: StrategySection) -> IndicatorSet:
        """This symbol's :class:`~engine.indicators.IndicatorSet` of ``config.indicators``,
        kept in :attr:`indicator_set`. Its :attr:`~engine.indicators.IndicatorSet.arrays`
        go to the strategy's njit kernel, which feeds them per tick (compile the kernel
        onto the set with :func:`engine.indicators.bind_to_set`) and reads
        ``values[index[name]]``; Python hooks read :meth:`indicator`."""
        self.indicator_set = IndicatorSet(specs_from_config(config.indicators))
        return self.indicator_set

    def indicator(self, name: str) -> float:
        """The latest value of configured indicator value ``name`` (``"kama_30"``,
        ``"macd_12_26_9.macdsignal"``; NaN while warming up).

        Raises:
            KeyError: no such value (the message lists the configured ones).
        """
        iset = self.indicator_set
        names = () if iset is None else iset.names
        if iset is None or name not in iset.index:
            raise KeyError(f"no configured indicator value {name!r}; configured: {names}")
        return float(iset.values[iset.index[name]])

    @classmethod
    @abc.abstractmethod
    def warm_up(cls) -> None:
        """Load (or compile) the kernel now, not at the first market batch."""


class QuotingStrategy(Strategy):
    """A strategy that quotes both sides (a market maker) instead of taking positions.

    The symbol core drives it in quoting mode: at most one resting GTX (post-only)
    LIMIT order per side, amended in place (:class:`~engine.messages.ReplaceOrder`)
    when the wanted price moves, cancelled when the side is no longer wanted. The
    core keeps the strategy told of what is working (:meth:`on_working`) and of the
    inventory its fills made (:meth:`on_inventory`); the kernel, in
    :attr:`Mode.QUOTING`, returns :attr:`Signal.REQUOTE` at the first event where the
    quotes :meth:`quotes` would give differ from the working ones by the strategy's
    refresh rule, and :attr:`Signal.EXIT_TIME` when the inventory has been held too
    long (the core then closes it with a reduce-only market order). In
    :attr:`Mode.WAITING` (a command unanswered, or that close in flight) it only
    updates its indicators.
    """

    @abc.abstractmethod
    def quotes(self) -> tuple[float, float, float, float]:
        """``(bid_px, bid_qty, ask_px, ask_qty)`` wanted now, on the tick grid; a NaN
        price means no quote on that side (warming up, or the inventory cap)."""

    @abc.abstractmethod
    def on_working(
        self, bid_px: float, ask_px: float, bid_ts: int, ask_ts: int, quiet_until: int
    ) -> None:
        """The prices now working (NaN: no order on that side) and when each was set;
        no requote before ``quiet_until`` (after a denial or a rejection)."""

    @abc.abstractmethod
    def on_inventory(self, qty: float, since_ts: int) -> None:
        """The signed inventory after a fill, non-zero since ``since_ts``."""

    def on_entry_filled(self, side: int, entry_price: float, ts: int) -> None:
        """Not used in quoting mode."""


def state_slot(slot: int, doc: str = "") -> Any:
    """A read-only float property reading ``self._state[slot]``: the kernel's state
    array, where strategies keep their latest quote, ATR, strength...::

        last_bid = state_slot(LAST_BID)
    """

    def get(self: Any) -> float:
        return float(self._state[slot])

    return property(get, doc=doc)


def store_entry(state: Any, slots: tuple[int, int, int], side: int, price: float, ts: int) -> None:
    """Write an entry's side, price and time into the kernel state's ``slots``
    (``(SIDE, ENTRY_PRICE, ENTRY_TS)``): what :meth:`Strategy.on_entry_filled` does
    for kernels that manage their own exits."""
    side_slot, price_slot, ts_slot = slots
    state[side_slot] = float(side)
    state[price_slot] = price
    state[ts_slot] = float(ts)


@attrs.frozen
class StrategySpec:
    """A strategy class with its checked parameters: :meth:`new` makes one per symbol."""

    cls: type[Strategy]
    params: Any = None

    def new(self, config: StrategySection, sizing: SizingSection) -> Strategy:
        """A new strategy for one symbol."""
        return self.cls(config, sizing, self.params)


def strategy_class(kind: str) -> type[Strategy]:
    """The shipped strategy class of ``strategy.kind`` (the config checks the kind)."""
    module, _, name = SHIPPED_STRATEGIES[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def make_strategy(config: StrategySection, sizing: SizingSection) -> Strategy:
    """A new shipped strategy of ``config.kind`` for one symbol."""
    return strategy_class(config.kind)(config, sizing)


def resolve_strategy(config: Config) -> StrategySpec:
    """The strategy ``[strategy]`` names, loaded and with its parameters checked.

    A shipped one by ``kind``; a user's by ``name`` in the file ``path``.

    Raises:
        ConfigError: naming ``strategy.path``, ``strategy.name`` or the dotted
            ``strategy.params.<key>`` that is wrong (one line: the CLI exits 2).
    """
    cfg = config.strategy
    if not cfg.name:
        if cfg.path:
            raise ConfigError(config.where("strategy.name"), "strategy.name", "required with path")
        cls = strategy_class(cfg.kind)
    else:
        if not cfg.path:
            raise ConfigError(config.where("strategy.path"), "strategy.path", "required with name")
        cls = load_strategy(config.resolve(cfg.path), cfg.name, config.where("strategy.path"))
    if config.exits.uses_atr and cls.atr is Strategy.atr:
        key = "exits.atr_stop" if config.exits.atr_stop else "exits.trail_atr"
        raise ConfigError(config.where(key), key, f"{cls.__name__} has no atr (it is NaN)")
    from ._confirm import check_confirm  # it imports this module

    check_confirm(config, cls)  # a [strategy.confirm] that could never act
    if cfg.indicators and not cls.reads_indicators:
        key = "strategy.indicators"
        raise ConfigError(config.where(key), key, f"{cls.__name__} reads no configured indicators")
    if cls.Params is None:
        if cfg.params:
            key = f"strategy.params.{next(iter(cfg.params))}"
            raise ConfigError(config.where(key), key, f"{cls.__name__} takes no [strategy.params]")
        return StrategySpec(cls)
    source = config.where("strategy.params")
    params = build_table(cls.Params, cfg.params, source, "strategy.params")
    configured = {n for s in specs_from_config(cfg.indicators) for n in value_names(s)}
    for field in cls.indicator_params:
        name = getattr(params, field)
        if name not in configured:
            key = f"strategy.params.{field}"
            problem = f"{name!r} is not a value of [[strategy.indicators]] ({sorted(configured)})"
            raise ConfigError(config.where(key), key, problem)
    return StrategySpec(cls, params)


def strategy_label(config: Config) -> str:
    """What the report names the strategy by: ``strategy.kind`` for a shipped one,
    ``<file>:<class>`` (the file resolved against the config's directory) for a user's."""
    cfg = config.strategy
    if cfg.name and cfg.path:
        return f"{config.resolve(cfg.path)}:{cfg.name}"
    return cfg.kind


def load_strategy(path: Path, name: str, where: str) -> type[Strategy]:
    """Class ``name`` of the Python file ``path``, checked to be a complete :class:`Strategy`.

    The file is imported once per process under a name made from its path, so its
    numba kernels cache beside it and worker processes (sweeps) import it the same way.

    Raises:
        ConfigError: the file is missing or fails to import, the class is not there,
            not a Strategy, or leaves part of the interface unimplemented.
    """
    if not path.is_file():
        raise ConfigError(where, "strategy.path", f"{path}: no such file")
    module_name = (
        "trireme_strategy_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    )
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(where, "strategy.path", f"{path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's code: any error is a bad strategy file
            del sys.modules[module_name]
            line = _error_line(exc, path)
            raise ConfigError(
                where, "strategy.path", f"{path}{line}: cannot import: {exc!r}"
            ) from exc
    cls = getattr(module, name, None)
    if cls is None:
        found = sorted(
            n for n, obj in vars(module).items()
            if inspect.isclass(obj) and issubclass(obj, Strategy) and obj is not Strategy
        )  # fmt: skip
        raise ConfigError(
            where, "strategy.name", f"{path}: no class {name!r} (strategies there: {found})"
        )
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
        raise ConfigError(
            where, "strategy.name", f"{path}: {name} is not an engine.strategy.Strategy"
        )
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise ConfigError(where, "strategy.name", f"{path}: {name} does not implement {missing}")
    if cls.Params is not None and not attrs.has(cls.Params):
        raise ConfigError(where, "strategy.name", f"{path}: {name}.Params is not an attrs class")
    return cls


def _error_line(exc: BaseException, path: Path) -> str:
    """``:LINE`` of the innermost frame of ``exc`` in ``path`` ("" when none)."""
    line = ""
    tb = exc.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename) == path:
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    if isinstance(exc, SyntaxError) and exc.lineno:
        line = f":{exc.lineno}"
    return line

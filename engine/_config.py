"""Configuration: frozen attrs classes loaded from TOML.

Every section is a frozen attrs class; unknown keys are refused with their full
dotted path, and a value of the wrong type or out of range is refused naming the
file, the key and what was expected. Relative paths are resolved against the
directory of the config file.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
from attrs import validators as v

from hardware import HardwareConfig

from ._errors import ConfigError


class FieldValueError(ValueError):
    """A cross-field check failed; ``field`` names the key to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


_pos = v.gt(0)
_nonneg = v.ge(0)


def parse_utc(text: str) -> int:
    """An ISO-8601 time as int nanoseconds since the epoch (no zone: UTC).

    Raises:
        ValueError: not an ISO-8601 time.
    """
    when = dt.datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


@attrs.frozen(kw_only=True)
class EngineSection:
    """``[engine]``: how the process runs."""

    mode: Literal["replay", "paper", "live"] = attrs.field(
        default="replay", validator=v.in_(("replay", "paper", "live"))
    )
    live: bool = False
    seed: int = 0


@attrs.frozen(kw_only=True)
class DataSection:
    """``[data]``: what to replay, the bounds of the capture readers' time checks, and
    where parsed data is kept (``tick_store``: ``"auto"``, ``"off"`` or a directory).
    """

    paths: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    max_receive_skew_ms: int = attrs.field(default=900_000, validator=_pos)
    max_time_jump_ms: int = attrs.field(default=3_600_000, validator=_pos)
    tick_store: str = attrs.field(default="auto")
    # Replay only events in [start, end): ISO-8601 times ("2024-08-08T18:01:00Z"; no zone
    # means UTC), "" for no bound. Sweeps' walk-forward windows set them.
    start: str = attrs.field(default="")
    end: str = attrs.field(default="")

    @start.validator
    @end.validator
    def _check_bound(self, attribute: attrs.Attribute[str], value: str) -> None:
        if value:
            try:
                parse_utc(value)
            except ValueError:
                raise FieldValueError(
                    attribute.name, f'expected an ISO-8601 time or "", got {value!r}'
                ) from None

    def __attrs_post_init__(self) -> None:
        if self.start and self.end and parse_utc(self.start) >= parse_utc(self.end):
            raise FieldValueError("end", f"must be after start ({self.start}), got {self.end}")

    @tick_store.validator
    def _check_tick_store(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if not value.strip():
            raise FieldValueError(
                "tick_store", f'expected "auto", "off" or a directory, got {value!r}'
            )


@attrs.frozen(kw_only=True)
class FeedsSection:
    """``[feeds]``: live market data (paper mode) and the recorder."""

    ws_url: str = "wss://fstream.binance.com"
    rest_url: str = "https://fapi.binance.com"
    streams: tuple[str, ...] = ("bookTicker", "aggTrade", "depth@100ms")
    connection: Literal["per_symbol", "combined"] = attrs.field(
        default="per_symbol", validator=v.in_(("per_symbol", "combined"))
    )
    backoff_initial_ms: int = attrs.field(default=250, validator=_pos)
    backoff_max_ms: int = attrs.field(default=30_000, validator=_pos)
    jitter: float = attrs.field(default=0.2, validator=[v.ge(0), v.le(1)])
    stale_ms: int = attrs.field(default=10_000, validator=_pos)
    planned_reconnect_s: float = attrs.field(default=85_800.0, validator=v.gt(0))
    snapshot_limit: int = attrs.field(
        default=1000, validator=v.in_((5, 10, 20, 50, 100, 500, 1000))
    )
    duration_s: float = attrs.field(default=0.0, validator=_nonneg)
    min_step_ms: float = attrs.field(default=0.0, validator=_nonneg)
    inline: bool = attrs.field(default=True, validator=v.instance_of(bool))
    transport: Literal["wsproto", "trio-websocket"] = attrs.field(
        default="wsproto", validator=v.in_(("wsproto", "trio-websocket"))
    )


@attrs.frozen(kw_only=True)
class ReplaySection:
    """``[replay]``: how the feed cuts the stream into steps."""

    step_ms: int = attrs.field(default=250, validator=_pos)
    max_step_events: int = attrs.field(default=8192, validator=_pos)


@attrs.frozen(kw_only=True)
class ChannelsSection:
    """``[channels]``: capacity of each bounded memory channel (in batches)."""

    # At least 1: the feed hands each step to the actors and goes back to the socket;
    # with 0 every send would wait for its actor to be ready.
    market: int = attrs.field(default=4, validator=v.ge(1))
    intents: int = attrs.field(default=4, validator=_nonneg)
    orders: int = attrs.field(default=4, validator=_nonneg)
    reports: int = attrs.field(default=4, validator=_nonneg)
    journal: int = attrs.field(default=16, validator=_nonneg)


SHIPPED_STRATEGIES: dict[str, str] = {
    "ema_cross": "engine.strategy._ema_cross:EmaCross",
    "scalper": "engine.strategy._scalper:Scalper",
    "book_imbalance": "engine.strategy._book_imbalance:BookImbalance",
    "market_maker": "engine.strategy._market_maker:MarketMaker",
}
"""The shipped strategies by ``strategy.kind``: ``module:Class`` (imported on use)."""


def _indicators(instance: Any, attribute: Any, value: tuple[dict[str, Any], ...]) -> None:
    if value:
        from .indicators import IndicatorConfigError, specs_from_config  # numba: on use only

        try:
            specs_from_config(value, "indicators")
        except IndicatorConfigError as exc:
            raise FieldValueError(exc.key, exc.problem) from None


CONFIRM_INDICATORS = ("sma", "ema", "wma", "dema", "tema", "kama")


@attrs.frozen(kw_only=True)
class ConfirmSection:
    """``[strategy.confirm]``: multi-timeframe confirmation of every strategy's entries.

    The symbol core builds bars of each of ``timeframes_ms`` from the symbol's trades
    and keeps ``indicator`` (a moving average of ``period`` bar closes) on each. A
    timeframe is up when its last closed bar closed above that average, down when
    below. An entry signal is taken when at least ``min_agree`` timeframes agree with
    it (0: all of them); exits are never held back. Until every timeframe's average
    exists, ``warmup`` says what happens to an entry: ``"block"`` or ``"pass"``. No
    timeframes (the default): off. See :mod:`engine.strategy._confirm`.
    """

    timeframes_ms: tuple[int, ...] = ()
    indicator: str = attrs.field(default="ema", validator=v.in_(CONFIRM_INDICATORS))
    period: int = attrs.field(default=20, validator=v.ge(2))
    min_agree: int = attrs.field(default=0, validator=_nonneg)
    warmup: Literal["block", "pass"] = attrs.field(
        default="block", validator=v.in_(("block", "pass"))
    )

    def __attrs_post_init__(self) -> None:
        tfs = self.timeframes_ms
        if any(t <= 0 for t in tfs) or len(set(tfs)) != len(tfs) or len(tfs) > 8:
            raise FieldValueError(
                "timeframes_ms", f"must be up to 8 distinct lengths > 0 (ms), got {list(tfs)}"
            )
        if self.min_agree > len(tfs):
            raise FieldValueError(
                "min_agree",
                f"must be <= the number of timeframes ({len(tfs)}), got {self.min_agree}",
            )

    @property
    def enabled(self) -> bool:
        """Whether entries are confirmed (some timeframe configured)."""
        return bool(self.timeframes_ms)


@attrs.frozen(kw_only=True)
class StrategySection:
    """``[strategy]``: which strategy trades, and its parameters.

    A shipped strategy is chosen by ``kind`` (``ema_cross``: the EMA crossover with an
    RSI filter, whose parameters are this section's keys). A user's strategy is a class
    ``name`` in the Python file ``path`` (relative to the config file), with its own
    parameters in ``[strategy.params]``, checked against the class's ``Params``. The
    sizing and exit-retry keys here apply to every strategy.
    """

    kind: str = attrs.field(default="ema_cross", validator=v.in_(SHIPPED_STRATEGIES))
    path: str = ""
    name: str = ""
    params: dict[str, Any] = attrs.field(factory=dict)
    sample_ms: int = attrs.field(default=1000, validator=_pos)
    fast: int = attrs.field(default=12, validator=_pos)
    slow: int = attrs.field(default=26, validator=_pos)
    rsi_period: int = attrs.field(default=14, validator=v.ge(2))
    rsi_long_max: float = attrs.field(default=70.0, validator=[v.ge(0), v.le(100)])
    rsi_short_min: float = attrs.field(default=30.0, validator=[v.ge(0), v.le(100)])
    allow_short: bool = True
    stop_loss_bps: float = attrs.field(default=15.0, validator=_pos)
    take_profit_bps: float = attrs.field(default=25.0, validator=_pos)
    max_hold_ms: int = attrs.field(default=60_000, validator=_pos)
    order_notional: float = attrs.field(default=1000.0, validator=_pos)
    qty_step: float = attrs.field(default=0.001, validator=_pos)
    exit_retry_ms: int = attrs.field(default=250, validator=_nonneg)
    # How entries are placed (a strategy's ``entry_order`` hook may choose per signal):
    # "market"; "limit_gtx", a post-only limit at the touch (bid for a buy) moved
    # ``limit_offset_bps`` away from the spread; "limit_gtc" the same, not post-only;
    # "limit_ioc", an immediate-or-cancel limit at the opposite touch moved
    # ``limit_offset_bps`` through it. An entry still open ``entry_timeout_ms``
    # after it was sent is cancelled (0: never).
    entry_order: str = attrs.field(
        default="market", validator=v.in_(("market", "limit_gtx", "limit_gtc", "limit_ioc"))
    )
    limit_offset_bps: float = attrs.field(default=0.0, validator=_nonneg)
    entry_timeout_ms: float = attrs.field(default=0.0, validator=_nonneg)
    # ``[[strategy.indicators]]``: indicators by registry name (``name``, the indicator's
    # parameters, optional ``bar_ns`` and ``label``), checked at load; a strategy reads
    # them through ``Strategy.configured_indicators`` (README, "Your own strategy").
    indicators: tuple[dict[str, Any], ...] = attrs.field(default=(), validator=_indicators)
    # ``[strategy.confirm]``: multi-timeframe confirmation of entries (off by default).
    confirm: ConfirmSection = ConfirmSection()

    def __attrs_post_init__(self) -> None:
        if self.fast >= self.slow:
            raise FieldValueError(
                "fast", f"must be smaller than slow ({self.slow}), got {self.fast}"
            )


@attrs.frozen(kw_only=True)
class ExitsSection:
    """``[exits]``: exit policies any strategy composes, run by the symbol core while
    a position is held (:mod:`engine.strategy._exits`), on top of the strategy's own.

    Every level is checked from the tick after the entry fill, at the price the
    position would close at (the bid for a long, the ask for a short); 0 turns a
    policy off, and with every key at its default nothing runs (a strategy's own
    exits, as ema_cross's ``strategy.stop_loss_bps``, are unchanged). ``stop_bps`` /
    ``target_bps``: fixed stop and target from the entry price. ``atr_stop``: a stop
    ``k x ATR`` (the strategy's ATR at the entry) away. ``trail_bps`` /
    ``trail_atr``: a trailing stop that far from the best price since the entry.
    ``partial_r`` / ``partial_fraction``: a take-profit ladder, reducing the
    position by each fraction (of the entry quantity) when the gain reaches that
    many R (R: the initial stop distance, the nearer of the fixed and ATR stops).
    ``time_limit_ms``: close after this long. ``opposite_signal``: whether the
    strategy's own exit signals (ema_cross's opposite cross and its bps exits) close.
    """

    stop_bps: float = attrs.field(default=0.0, validator=_nonneg)
    target_bps: float = attrs.field(default=0.0, validator=_nonneg)
    atr_stop: float = attrs.field(default=0.0, validator=_nonneg)
    trail_bps: float = attrs.field(default=0.0, validator=_nonneg)
    trail_atr: float = attrs.field(default=0.0, validator=_nonneg)
    partial_r: tuple[float, ...] = ()
    partial_fraction: tuple[float, ...] = ()
    time_limit_ms: int = attrs.field(default=0, validator=_nonneg)
    opposite_signal: bool = True

    def __attrs_post_init__(self) -> None:
        if len(self.partial_r) != len(self.partial_fraction):
            raise FieldValueError(
                "partial_fraction",
                f"needs one fraction per partial_r step ({len(self.partial_r)}), "
                f"got {len(self.partial_fraction)}",
            )
        if len(self.partial_r) > 4:
            raise FieldValueError("partial_r", f"at most 4 steps, got {len(self.partial_r)}")
        if any(r <= 0.0 for r in self.partial_r) or list(self.partial_r) != sorted(self.partial_r):
            raise FieldValueError("partial_r", f"must be > 0 and rising, got {self.partial_r}")
        if any(not 0.0 < f <= 1.0 for f in self.partial_fraction) or (
            sum(self.partial_fraction) > 1.0 + 1e-9
        ):
            raise FieldValueError(
                "partial_fraction", f"each in (0, 1], summing to <= 1, got {self.partial_fraction}"
            )
        if self.partial_r and self.stop_bps == 0.0 and self.atr_stop == 0.0:
            raise FieldValueError("partial_r", "needs an initial stop (stop_bps or atr_stop) for R")

    @property
    def enabled(self) -> bool:
        """Whether any policy is on (off: the core runs the strategy alone)."""
        return bool(
            self.stop_bps or self.target_bps or self.atr_stop or self.trail_bps
            or self.trail_atr or self.partial_r or self.time_limit_ms
        )  # fmt: skip

    @property
    def uses_atr(self) -> bool:
        """Whether a policy needs the strategy's ATR."""
        return bool(self.atr_stop or self.trail_atr)


_ACTIONS = ("halt", "reduce", "off")
Action = Literal["halt", "reduce", "off"]


@attrs.frozen(kw_only=True)
class TriggersSection:
    """``[risk.triggers]``: automatic moves of the trading machine.

    Each trigger has an action: ``halt`` (no new orders, open orders cancelled),
    ``reduce`` (only exposure-reducing orders) or ``off``. Times are market time.
    """

    daily_loss_limit: float = attrs.field(default=500.0, validator=_pos)
    daily_loss_action: Action = attrs.field(default="halt", validator=v.in_(_ACTIONS))
    max_drawdown: float = attrs.field(default=1_000.0, validator=_pos)
    drawdown_action: Action = attrs.field(default="halt", validator=v.in_(_ACTIONS))
    stale_data_ms: int = attrs.field(default=30_000, validator=_pos)
    stale_data_action: Action = attrs.field(default="reduce", validator=v.in_(_ACTIONS))
    max_reconnects: int = attrs.field(default=5, validator=_pos)
    reconnect_window_ms: int = attrs.field(default=60_000, validator=_pos)
    reconnect_action: Action = attrs.field(default="halt", validator=v.in_(_ACTIONS))
    max_execution_errors: int = attrs.field(default=3, validator=_pos)
    execution_error_window_ms: int = attrs.field(default=60_000, validator=_pos)
    execution_error_action: Action = attrs.field(default="halt", validator=v.in_(_ACTIONS))
    rate_limit_ban_action: Action = attrs.field(default="halt", validator=v.in_(_ACTIONS))
    reconciliation_action: Action = attrs.field(default="halt", validator=v.in_(_ACTIONS))
    cooldown_ms: int = attrs.field(default=60_000, validator=_nonneg)
    auto_resume: bool = True


@attrs.frozen(kw_only=True)
class SizingSection:
    """``[sizing]``: how big an entry is (see :mod:`engine.risk._sizing`)."""

    mode: Literal["fixed", "volatility", "kelly"] = attrs.field(
        default="fixed", validator=v.in_(("fixed", "volatility", "kelly"))
    )
    risk_per_trade: float = attrs.field(default=0.005, validator=[v.gt(0), v.le(1)])
    atr_period: int = attrs.field(default=14, validator=_pos)
    atr_stop_mult: float = attrs.field(default=2.0, validator=_pos)
    kelly_fraction: float = attrs.field(default=0.5, validator=[v.gt(0), v.le(1)])
    kelly_cap: float = attrs.field(default=0.25, validator=[v.gt(0), v.le(1)])
    kelly_min_trades: int = attrs.field(default=10, validator=v.ge(2))
    kelly_window: int = attrs.field(default=50, validator=v.ge(2))
    scale_by_strength: bool = False
    min_scale: float = attrs.field(default=0.25, validator=[v.gt(0), v.le(1)])


@attrs.frozen(kw_only=True)
class RiskSection:
    """``[risk]``: pre-trade limits and triggers."""

    capital: float = attrs.field(default=10_000.0, validator=_pos)
    max_notional_per_symbol: float = attrs.field(default=5_000.0, validator=_pos)
    max_notional_total: float = attrs.field(default=20_000.0, validator=_pos)
    max_orders_per_second: int = attrs.field(default=5, validator=_pos)
    max_leverage: float = attrs.field(default=3.0, validator=_pos)
    max_open_positions: int = attrs.field(default=4, validator=_pos)
    price_band_bps: float = attrs.field(default=50.0, validator=_pos)
    min_notional: float = attrs.field(default=5.0, validator=_nonneg)
    max_correlation: float = attrs.field(default=0.9, validator=[v.gt(0), v.le(1)])
    correlation_window: int = attrs.field(default=240, validator=v.ge(10))
    sample_ms: int = attrs.field(default=250, validator=_pos)
    triggers: TriggersSection = TriggersSection()


@attrs.frozen(kw_only=True)
class PortfolioSection:
    """``[portfolio]``: cvxpy sizing of per-symbol exposure limits, on a step timer."""

    enabled: bool = True
    objective: Literal["min_variance", "mean_variance", "risk_parity", "min_cvar"] = attrs.field(
        default="min_variance",
        validator=v.in_(("min_variance", "mean_variance", "risk_parity", "min_cvar")),
    )
    every_steps: int = attrs.field(default=40, validator=_pos)
    apply_after_steps: int = attrs.field(default=2, validator=_pos)
    lookback: int = attrs.field(default=240, validator=v.ge(10))
    min_periods: int = attrs.field(default=40, validator=v.ge(10))
    max_weight: float = attrs.field(default=0.6, validator=[v.gt(0), v.le(1)])
    leverage: float = attrs.field(default=1.0, validator=v.ge(1))
    long_only: bool = True
    risk_aversion: float = attrs.field(default=1.0, validator=_pos)
    cvar_beta: float = attrs.field(default=0.95, validator=[v.gt(0.5), v.lt(1)])
    exposure_budget: float = attrs.field(default=10_000.0, validator=_pos)


@attrs.frozen(kw_only=True)
class FaultEvent:
    """One scheduled fault for replay tests and drills (``[[faults.events]]``)."""

    at_ms: int = attrs.field(validator=_nonneg)
    kind: Literal["reconnect", "ban", "reject", "reconciliation_failed"] = attrs.field(
        validator=v.in_(("reconnect", "ban", "reject", "reconciliation_failed"))
    )
    symbol: str = ""
    count: int = attrs.field(default=1, validator=_pos)
    duration_ms: int = attrs.field(default=0, validator=_nonneg)


@attrs.frozen(kw_only=True)
class FaultsSection:
    """``[faults]``: faults injected at market-time offsets from the start of the replay."""

    events: tuple[FaultEvent, ...] = ()


@attrs.frozen(kw_only=True)
class VenueSection:
    """``[venue]``: the simulated venue's latency and fee model, or the Binance venue."""

    kind: Literal["sim", "binance"] = attrs.field(
        default="sim", validator=v.in_(("sim", "binance"))
    )
    latency_ms: float = attrs.field(default=5.0, validator=_nonneg)
    taker_fee_bps: float = attrs.field(default=5.0, validator=_nonneg)
    # Resting (maker) fills of LIMIT orders; Binance VIP0 is 2 bps maker, 5 bps taker.
    maker_fee_bps: float = attrs.field(default=2.0, validator=_nonneg)
    # The Binance venue (live mode): REST and user-data stream endpoints, credentials by
    # the NAMES of the environment variables that hold them (never the keys themselves).
    rest_url: str = "https://fapi.binance.com"
    ws_url: str = "wss://fstream.binance.com"
    api_key_env: str = "TRIREME_API_KEY"
    api_secret_env: str = "TRIREME_API_SECRET"
    order_transport: Literal["lean", "httpx"] = attrs.field(
        default="lean", validator=v.in_(("lean", "httpx"))
    )
    recv_window_ms: int = attrs.field(default=5000, validator=[v.gt(0), v.le(60_000)])
    request_timeout_ms: float = attrs.field(default=5000.0, validator=v.gt(0))
    unknown_grace_ms: float = attrs.field(default=2000.0, validator=v.gt(0))
    reconcile: Literal["adopt", "cancel"] = attrs.field(
        default="cancel", validator=v.in_(("adopt", "cancel"))
    )
    # Start-up waits out a 429, a 418 ban and unanswered requests this long, then exit 2.
    startup_deadline_s: float = attrs.field(default=300.0, validator=[v.gt(0), v.le(86_400)])
    # Live: while a position is held, rest the [exits] stop (fixed or trailing) on the
    # exchange as a STOP_MARKET closePosition order; move it when the level moves by more
    # than protective_move_bps; cancel it when the position closes (issue 13). Without
    # an [exits] stop_bps/trail_bps it rests protective_fallback_bps from the entry
    # (an emergency stop; 0: none then).
    protective_stop: bool = True
    # Live: also rest a TAKE_PROFIT_MARKET closePosition at the [exits] final target
    # (target_bps, or a ladder's last rung when its fractions sum to 1; none: none rests).
    protective_target: bool = True
    protective_move_bps: float = attrs.field(default=5.0, validator=_nonneg)
    protective_fallback_bps: float = attrs.field(default=100.0, validator=_nonneg)


_DEFAULT_MODELS = (
    "models/onnx/entry_filter_gbdt.onnx",
    "models/onnx/entry_filter_rf.onnx",
    "models/onnx/entry_filter_mlp.onnx",
)


@attrs.frozen(kw_only=True)
class ModelSection:
    """``[model]``: the ML entry filter (ONNX ensemble, regimes, online retraining).

    Off unless configured (the shipped ``config.toml`` keeps it off too: out of sample it
    did not beat no filter, README's ML section): a default config needs no model files.
    """

    enabled: bool = False
    paths: tuple[str, ...] = _DEFAULT_MODELS
    weights: tuple[float, ...] = ()
    threads: int = attrs.field(default=1, validator=_pos)
    threshold: float = attrs.field(default=0.3, validator=[v.ge(0), v.le(1)])
    threshold_min: float = attrs.field(default=0.2, validator=[v.ge(0), v.le(1)])
    threshold_max: float = attrs.field(default=0.45, validator=[v.ge(0), v.le(1)])
    vol_high_scale: float = attrs.field(default=1.1, validator=_pos)
    vol_low_scale: float = attrs.field(default=1.0, validator=_pos)
    range_scale: float = attrs.field(default=1.05, validator=_pos)
    trend_scale: float = attrs.field(default=0.95, validator=_pos)
    volume_low_scale: float = attrs.field(default=1.05, validator=_pos)
    volume_high_scale: float = attrs.field(default=1.0, validator=_pos)
    target_win_rate: float = attrs.field(default=0.5, validator=[v.ge(0), v.le(1)])
    adapt_window: int = attrs.field(default=20, validator=_pos)
    adapt_gain: float = attrs.field(default=0.2, validator=_nonneg)
    # The labels' fee per leg: the venue's taker fee (the strategy's market orders pay it).
    label_fee_bps: float = attrs.field(default=5.0, validator=_nonneg)
    retrain: bool = True
    retrain_every_events: int = attrs.field(default=50_000, validator=_pos)
    retrain_every_s: float = attrs.field(default=3600.0, validator=v.gt(0))
    retrain_window: int = attrs.field(default=2000, validator=_pos)
    retrain_min_samples: int = attrs.field(default=60, validator=_pos)
    validation_fraction: float = attrs.field(default=0.3, validator=[v.gt(0), v.lt(1)])
    min_auc_gain: float = attrs.field(default=0.0, validator=v.ge(-1))
    apply_after_steps: int = attrs.field(default=4, validator=_pos)
    # Accepted online refits saved here as <sha12>.onnx + .json (empty: not saved).
    swap_dir: str = ""
    # The threshold's regime: "threshold" (RegimeDetector) or "hmm" (regime_model's forward
    # filter on trade bars; the threshold regime until its features are warm).
    regime: str = attrs.field(default="threshold", validator=v.in_(("threshold", "hmm")))
    regime_model: str = "models/onnx/regime/hmm3.json"

    def __attrs_post_init__(self) -> None:
        if self.enabled and not self.paths:
            raise FieldValueError("paths", "an enabled filter needs at least one model")
        if self.weights and len(self.weights) != len(self.paths):
            raise FieldValueError("weights", "one weight per model path (or none)")
        if any(w < 0 for w in self.weights):
            raise FieldValueError("weights", f"must be >= 0, got {list(self.weights)}")
        if self.weights and sum(self.weights) <= 0:
            raise FieldValueError("weights", "at least one weight must be > 0 (or none at all)")
        if not self.threshold_min <= self.threshold <= self.threshold_max:
            raise FieldValueError("threshold", "must lie within [threshold_min, threshold_max]")


@attrs.frozen(kw_only=True)
class JournalSection:
    """``[journal]``: where the SQLite journal of a run goes."""

    dir: str = "runs"


@attrs.frozen(kw_only=True)
class ControlSection:
    """``[control]``: the operator's control socket (empty path = no socket)."""

    socket: str = ""


_port = [v.ge(0), v.le(65_535)]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_name(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _ENV_NAME.match(value):
        raise FieldValueError(
            attribute.name, f"expected an environment variable name, got {value!r}"
        )


def _host(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise FieldValueError(attribute.name, "expected a host to listen on, got ''")


@attrs.frozen(kw_only=True)
class MetricsSection:
    """``[metrics]``: the Prometheus ``/metrics`` endpoint of paper and live runs (port 0:
    any free port)."""

    enabled: bool = False
    host: str = attrs.field(default="127.0.0.1", validator=_host)
    port: int = attrs.field(default=9464, validator=_port)


@attrs.frozen(kw_only=True)
class ApiSection:
    """``[api]``: the HTTP status and control API; ``token_env`` names the environment
    variable holding the bearer token of its POST commands (never the token itself)."""

    enabled: bool = False
    host: str = attrs.field(default="127.0.0.1", validator=_host)
    port: int = attrs.field(default=8480, validator=_port)
    token_env: str = attrs.field(default="TRIREME_API_TOKEN", validator=_env_name)


@attrs.frozen(kw_only=True)
class LoggingSection:
    """``[logging]``: JSON log destination (a file path, or ``-`` for stderr) and level.

    ``progress`` is how long tasks (replays, sweeps) show their progress on stderr:
    ``auto`` (a bar on a terminal, a plain line every ``progress_every_s`` otherwise;
    nothing when the JSON log itself goes to stderr), ``bar``, ``lines`` or ``off``.
    """

    path: str = "logs/trireme.jsonl"
    level: Literal["debug", "info", "warning", "error"] = attrs.field(
        default="info", validator=v.in_(("debug", "info", "warning", "error"))
    )
    progress: Literal["auto", "bar", "lines", "off"] = attrs.field(
        default="auto", validator=v.in_(("auto", "bar", "lines", "off"))
    )
    progress_every_s: float = attrs.field(default=10.0, validator=_pos)

    @property
    def progress_style(self) -> Literal["auto", "bar", "lines", "off"]:
        """``progress``, with ``auto`` silent when the log is on stderr (``path = "-"``):
        a progress line there would break the one-JSON-object-per-line stream."""
        if self.progress == "auto" and self.path == "-":
            return "off"
        return self.progress


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration."""

    engine: EngineSection = EngineSection()
    data: DataSection = DataSection()
    feeds: FeedsSection = FeedsSection()
    replay: ReplaySection = ReplaySection()
    channels: ChannelsSection = ChannelsSection()
    strategy: StrategySection = StrategySection()
    sizing: SizingSection = SizingSection()
    exits: ExitsSection = ExitsSection()
    risk: RiskSection = RiskSection()
    portfolio: PortfolioSection = PortfolioSection()
    venue: VenueSection = VenueSection()
    model: ModelSection = ModelSection()
    faults: FaultsSection = FaultsSection()
    journal: JournalSection = JournalSection()
    control: ControlSection = ControlSection()
    metrics: MetricsSection = MetricsSection()
    api: ApiSection = ApiSection()
    hardware: HardwareConfig = attrs.field(factory=HardwareConfig)
    logging: LoggingSection = LoggingSection()
    source: str = attrs.field(default="<defaults>", eq=False)
    base_dir: str = attrs.field(default=".", eq=False)
    # (dotted key, where its value came from) for every key set by an override.
    origins: tuple[tuple[str, str], ...] = attrs.field(default=(), eq=False, repr=False)

    def resolve(self, path: str) -> Path:
        """A path from the config, relative to the config file's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def where(self, key: str) -> str:
        """Where the value of dotted ``key`` came from: an override, else the file."""
        return _origin_of(key, dict(self.origins)) or self.source


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict or attrs.has(tp):
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, str(tp)
    )


def _convert(value: Any, tp: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(source, key, f"expected {_describe(tp)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(source, key, f"expected {_describe(tp)}, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_convert(item, inner, source, f"{key}[{i}]") for i, item in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type {tp}")
    if origin is dict:
        # A free table (a user strategy's parameters): scalars and lists of scalars,
        # checked against the strategy's own declaration when the strategy loads.
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a table, got {value!r}")
        for name, item in value.items():
            items = item if isinstance(item, list) else [item]
            if not all(isinstance(x, bool | int | float | str) for x in items):
                raise ConfigError(source, f"{key}.{name}", f"expected a value, got {item!r}")
        return dict(value)
    if attrs.has(tp):
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a table, got {value!r}")
        return _build(tp, value, source, key)
    if tp is str and isinstance(value, dt.date | dt.time):
        value = value.isoformat()  # a TOML date-time, for keys that hold a time as text
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(source, key, f"expected {_describe(tp)}, got {value!r}")
    if tp is float:
        # TOML has inf and nan; no key of ours means either (an infinite capital
        # or limit would disable the check it feeds).
        if not math.isfinite(value):
            raise ConfigError(source, key, f"expected a finite number, got {value!r}")
        return float(value)
    return value


def build_table(cls: type, table: dict[str, Any], source: str, prefix: str) -> Any:
    """An attrs class from a TOML table, checked as config sections are (errors name
    ``prefix.key``): how a user strategy's ``[strategy.params]`` are read."""
    try:
        attrs.resolve_types(cls)  # a user's file may use ``from __future__ import annotations``
        return _build(cls, table, source, prefix)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # an unsupported field type in the user's class
        raise ConfigError(source, prefix, str(exc)) from exc


# Keys that once existed: a config that still sets one is refused with why it went.
_CACHE_GONE = "removed: the score cache hit 0 times on every capture (README, ML filter)"
_REMOVED_KEYS: Mapping[str, str] = {
    "model.cache_size": _CACHE_GONE,
    "model.cache_quantum": _CACHE_GONE,
}


def _build(cls: type, table: dict[str, Any], source: str, prefix: str) -> Any:
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}.{name}"
        if key in _REMOVED_KEYS:
            raise ConfigError(source, key, _REMOVED_KEYS[key])
        if name not in fields:
            raise ConfigError(
                source, key, f"unknown key; expected one of: {', '.join(sorted(fields))}"
            )
        kwargs[name] = _convert(value, fields[name].type, source, key)
    for name, field in fields.items():
        if field.default is attrs.NOTHING and name not in kwargs:
            raise ConfigError(source, f"{prefix}.{name}", "required key is missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        bad = _which_field(exc, kwargs)
        key = f"{prefix}.{bad}" if bad else prefix
        raise ConfigError(source, key, _validator_message(exc)) from exc


_ATTRS_MSG = re.compile(r"^'(?P<field>\w+)' (?P<rest>.*)$")


def _which_field(exc: Exception, kwargs: dict[str, Any]) -> str | None:
    if isinstance(exc, FieldValueError):
        return exc.field
    # attrs validators say "'name' must be > 0: -1.0".
    match = _ATTRS_MSG.match(str(exc.args[0]) if exc.args else "")
    return match["field"] if match else None


def _validator_message(exc: Exception) -> str:
    match = _ATTRS_MSG.match(str(exc.args[0]) if exc.args else "")
    if match:
        return match["rest"].replace(": ", ", got ", 1)
    return str(exc)


def _resolve_all(cls: type) -> None:
    """Resolve string annotations of ``cls`` and of every attrs class it contains."""
    attrs.resolve_types(cls)
    for field in attrs.fields(cls):
        for tp in (field.type, *typing.get_args(field.type)):
            if isinstance(tp, type) and attrs.has(tp):
                _resolve_all(tp)


_resolve_all(Config)
_SECTIONS: dict[str, type] = {f.name: f.type for f in attrs.fields(Config) if attrs.has(f.type)}


def config_from_dict(
    data: dict[str, Any],
    *,
    source: str,
    base_dir: str = ".",
    origins: Mapping[str, str] | None = None,
) -> Config:
    """Build a :class:`Config` from a parsed TOML document.

    Args:
        data: the document.
        source: where it came from (the file), named in errors.
        base_dir: what relative paths are relative to.
        origins: dotted keys whose values came from somewhere else (an environment
            variable, ``--set``) and where; an error about such a key names that origin.

    Raises:
        ConfigError: an unknown section or key, or a bad value.
    """
    origins = dict(origins or {})
    try:
        sections: dict[str, Any] = {}
        for name, table in data.items():
            if name not in _SECTIONS:
                raise ConfigError(
                    source,
                    name,
                    f"unknown section; expected one of: {', '.join(sorted(_SECTIONS))}",
                )
            if not isinstance(table, dict):
                raise ConfigError(source, name, "expected a [table]")
            sections[name] = _build(_SECTIONS[name], table, source, name)
    except ConfigError as exc:
        origin = _origin_of(exc.key, origins)
        if origin is None:
            raise
        raise ConfigError(origin, exc.key, exc.problem) from exc
    return Config(
        **sections, source=source, base_dir=base_dir, origins=tuple(sorted(origins.items()))
    )


# -- overrides: environment variables and --set ------------------------------------------

ENV_PREFIX = "TRIREME__"
_KEY_PART = re.compile(r"^[A-Za-z0-9_-]+$")


@attrs.frozen(kw_only=True)
class Override:
    """One config value set from outside the file.

    Attributes:
        key: the dotted key (``"risk.triggers.max_drawdown"``).
        value: the value, as TOML would give it.
        origin: where it came from, for errors (``"--set"``,
            ``"environment variable TRIREME__RISK__CAPITAL"``).
    """

    key: str
    value: Any
    origin: str


def parse_value(text: str) -> Any:
    """A TOML value (``5``, ``1e3``, ``true``, ``["BTCUSDT"]``, ``"x"``), else the text.

    Anything that is not one TOML value is taken as a plain string, so
    ``engine.mode=paper`` needs no quotes; a list or table does need TOML syntax.
    """
    try:
        doc = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return doc["v"] if doc.keys() == {"v"} else text


def set_overrides(items: Sequence[str]) -> list[Override]:
    """Overrides from ``--set dotted.key=value`` options, in order.

    Raises:
        ConfigError: an item without ``=`` or with a malformed key.
    """
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError("--set", item, "expected dotted.key=value")
        _check_key(key, "--set")
        out.append(Override(key=key, value=parse_value(text.strip()), origin="--set"))
    return out


def env_overrides(environ: Mapping[str, str]) -> list[Override]:
    """Overrides from ``TRIREME__SECTION__KEY`` environment variables (sorted by name).

    ``__`` separates the parts of the dotted key and the parts are lower-cased:
    ``TRIREME__RISK__TRIGGERS__MAX_DRAWDOWN=800`` sets ``risk.triggers.max_drawdown``.

    Raises:
        ConfigError: a variable whose name does not make a dotted key.
    """
    out = []
    for name in sorted(n for n in environ if n.startswith(ENV_PREFIX)):
        origin = f"environment variable {name}"
        key = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        _check_key(key, origin)
        out.append(Override(key=key, value=parse_value(environ[name].strip()), origin=origin))
    return out


def _check_key(key: str, origin: str) -> None:
    if not all(_KEY_PART.match(part) for part in key.split(".")):
        raise ConfigError(origin, key, "expected a dotted key such as risk.capital")


def _apply(data: dict[str, Any], override: Override) -> None:
    """Set ``override.key`` in ``data``, creating the tables on the way."""
    *tables, last = override.key.split(".")
    node = data
    for i, part in enumerate(tables):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(tables[: i + 1])
            raise ConfigError(override.origin, override.key, f"{where} is not a table")
        node = child
    node[last] = override.value


def _origin_of(key: str, origins: Mapping[str, str]) -> str | None:
    """The origin of the override that set ``key`` or a table holding it, if any."""
    best = None
    for set_key, origin in origins.items():
        covers = key == set_key or key.startswith((f"{set_key}.", f"{set_key}["))
        if covers and (best is None or len(set_key) > len(best[0])):
            best = (set_key, origin)
    return best[1] if best else None


def load_config(path: str | Path, *, overrides: Sequence[Override] = ()) -> Config:
    """Read and validate a TOML config file, then apply ``overrides`` in order.

    The CLI's precedence is file < environment (:func:`env_overrides`) < ``--set``
    (:func:`set_overrides`): it passes them in that order and the last one wins.
    Relative paths, wherever they were set, are relative to the file's directory.

    Raises:
        ConfigError: the file is missing or unreadable, is not TOML, or holds an
            unknown key or a bad value (an overridden key's error names its origin).
    """
    p = Path(path)
    source = str(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, "", "config file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read config file ({exc.strerror})") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"not valid TOML ({exc})") from exc
    origins: dict[str, str] = {}
    for override in overrides:
        _apply(data, override)
        # A later override of a table replaces what earlier ones set inside it.
        for key in [k for k in origins if k.startswith(f"{override.key}.")]:
            del origins[key]
        origins[override.key] = override.origin
    return config_from_dict(data, source=source, base_dir=str(p.resolve().parent), origins=origins)

"""Prometheus metrics: a collector that reads the running engine at scrape time.

Nothing is counted per event for the metrics: :class:`EngineCollector` reads the
counters, ledgers and statistics the actors already keep (through
:class:`~engine._control.ControlState`) when Prometheus scrapes, in the Trio
thread, so the hot path pays nothing and a scrape sees one consistent moment.

Every family is always exposed (without samples while its part is absent: before
the pipeline runs, or the model filter is off), so a dashboard can be checked
against :func:`metric_names` without a running engine.

Not measured by the engine yet, so not exposed: tick-to-order latency (the hot
path carries no timing from a tick to its order), order rejections by reason
(execution logs them without counting), conflated messages (no channel
conflates), model score distributions (the model actor keeps request counts and
inference latency only), and exchange-to-local latency per symbol (the live feed
keeps one window for all symbols: ``trireme_feed_latency_seconds``).
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import fsm

from .._control import ControlState, risk_open_orders

_QUANTILES = (("0.5", "p50_ms"), ("0.99", "p99_ms"))
_STATES = [s.value for s in fsm.TradingState]


def _version() -> str:
    try:
        return importlib.metadata.version("trireme")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class EngineCollector(Collector):
    """Yields the engine's figures from ``state`` on every scrape.

    Args:
        state: what the supervisor attached (the same the status API reads).
    """

    def __init__(self, state: ControlState) -> None:
        self._state = state
        self._version = _version()

    def describe(self) -> list[Metric]:
        """Every family, without samples (so the registry knows the names up front)."""
        return list(_Families().all())

    def collect(self) -> Iterator[Metric]:
        """Every family, with the samples of the parts attached now."""
        f = _Families()
        s = self._state
        f.info.add_metric([s.mode or "starting", self._version], 1.0)
        f.uptime.add_metric([], s.uptime_s())
        if s.risk is not None:
            _risk(f, s.risk)
            _positions(f, s.risk)
        if s.execution is not None:
            f.orders_sent.add_metric([], s.execution.orders_sent)
            f.orders_expired.add_metric([], s.execution.expired)
        for actor in s.actors:
            f.ticks.add_metric([actor.symbol], actor.ticks)
            f.signals.add_metric([actor.symbol], actor.signals)
            for pos_state, count in sorted(actor.transitions.items()):
                f.transitions.add_metric([actor.symbol, pos_state], count)
        if s.venue is not None:
            f.max_drawdown_venue.add_metric([], s.venue.max_drawdown)
        if s.feed is not None and hasattr(s.feed, "summary"):
            _feed(f, s.feed)
        if s.limiter is not None:
            for header, used in sorted(s.limiter.used().items()):
                f.rate_used.add_metric([header], used)
            f.rate_waiting.add_metric([], s.limiter.waiting)
            f.rate_blocked.add_metric([], s.limiter.blocked_for())
            f.rate_banned.add_metric([], s.limiter.banned_for())
        for name, symbol, stats in s.channel_levels():
            f.chan_used.add_metric([name, symbol], stats.current_buffer_used)
            capacity = stats.max_buffer_size
            f.chan_capacity.add_metric([name, symbol], capacity if math.isfinite(capacity) else -1)
            f.chan_waiting.add_metric([name, symbol], stats.tasks_waiting_send)
        if s.hardware is not None:
            _lag(f, s.hardware.lag)
        if s.model is not None:
            _model(f, s.model, s.filters)
        yield from f.all()


class _Families:
    """One scrape's metric families (fresh each time: families carry their samples)."""

    def __init__(self) -> None:
        g, c = GaugeMetricFamily, CounterMetricFamily
        sym = ["symbol"]
        self.info = g("trireme_info", "The engine: mode and version", labels=["mode", "version"])
        self.uptime = g("trireme_uptime_seconds", "Seconds since the engine started")
        # Trading state and triggers.
        self.trading_state = g(
            "trireme_trading_state", "The account's trading state (1: current)", labels=["state"]
        )
        self.symbol_state = g(
            "trireme_symbol_trading_state",
            "Each symbol's own trading state (1: current)",
            labels=["symbol", "state"],
        )
        self.trigger = g(
            "trireme_trigger_active",
            "Active risk triggers (symbol empty: account-wide)",
            labels=["symbol", "trigger", "action"],
        )
        self.state_changes = c(
            "trireme_trading_state_changes", "Moves of the account's trading machine"
        )
        self.symbol_changes = c(
            "trireme_symbol_trading_state_changes",
            "Moves of each symbol's trading machine",
            labels=sym,
        )
        # Orders.
        self.orders_approved = c("trireme_orders_approved", "Orders risk approved")
        self.orders_denied = c(
            "trireme_orders_denied", "Orders risk denied, by reason code", labels=["reason"]
        )
        self.orders_sent = c("trireme_orders_sent", "Orders execution sent to the venue")
        self.orders_expired = c("trireme_orders_expired", "Orders that expired unfilled")
        self.orders_open = g(
            "trireme_orders_open", "Orders approved and not yet terminal", labels=sym
        )
        self.fills = c("trireme_fills", "Fills applied to the position ledger", labels=sym)
        self.round_trips = c("trireme_round_trips", "Positions closed", labels=sym)
        # Positions and PnL.
        self.position = g("trireme_position_qty", "Signed position (base asset)", labels=sym)
        self.notional = g("trireme_position_notional", "Position notional at the mark", labels=sym)
        self.mark = g("trireme_mark_price", "Latest mid the position was marked to", labels=sym)
        self.realized = g("trireme_pnl_realized", "Realized PnL before fees", labels=sym)
        self.unrealized = g("trireme_pnl_unrealized", "Unrealized PnL at the mark", labels=sym)
        self.fees = c("trireme_fees", "Fees paid", labels=sym)
        self.net = g("trireme_pnl_net", "Realized - fees + unrealized", labels=sym)
        self.exposure = g("trireme_exposure", "Sum of position notionals")
        self.equity = g("trireme_equity", "PnL since the start, as risk last saw it")
        self.account_equity = g("trireme_account_equity", "Capital plus trireme_equity")
        self.drawdown = g("trireme_drawdown", "Equity below its peak now")
        self.max_drawdown = g("trireme_max_drawdown", "Largest drawdown so far (risk)")
        self.max_drawdown_venue = g(
            "trireme_venue_max_drawdown", "Largest drawdown so far (the venue's marks)"
        )
        self.risk_ratio = g(
            "trireme_risk_ratio",
            "Risk metrics over the equity history (absent: too little data)",
            labels=["metric"],
        )
        # Strategy.
        self.ticks = c("trireme_ticks", "Market events the symbol's strategy saw", labels=sym)
        self.signals = c("trireme_signals", "Strategy entry signals", labels=sym)
        self.transitions = c(
            "trireme_position_transitions",
            "Position machine transitions, by target state",
            labels=["symbol", "state"],
        )
        # Feed.
        self.feed_messages = c("trireme_feed_messages", "Websocket messages received")
        self.feed_malformed = c("trireme_feed_malformed", "Messages that could not be decoded")
        self.feed_unknown = c("trireme_feed_unknown", "Messages of no subscribed stream")
        self.feed_connects = c("trireme_feed_connects", "Websocket connections opened")
        self.feed_reconnects = c(
            "trireme_feed_reconnects",
            "Reconnections, by cause (dropped, planned hand-over, stale stream)",
            labels=["cause"],
        )
        self.feed_steps = c("trireme_feed_steps", "Pipeline steps the feed sent")
        self.feed_trades = c("trireme_feed_trades", "Trades passed on", labels=sym)
        self.feed_gaps = c(
            "trireme_feed_gaps",
            "Gaps seen: book (depth update ids) and trade_id (ids passed on not consecutive)",
            labels=["symbol", "kind"],
        )
        self.feed_dropped = c(
            "trireme_feed_dropped",
            "Trades dropped as duplicate or late",
            labels=["symbol", "reason"],
        )
        self.feed_backfilled = c(
            "trireme_feed_backfilled", "Trades backfilled over REST", labels=sym
        )
        self.feed_resyncs = c("trireme_feed_book_resyncs", "Order book resyncs", labels=sym)
        self.feed_synced = g("trireme_feed_book_synced", "1: the book is in sync", labels=sym)
        self.feed_latency = g(
            "trireme_feed_latency_seconds",
            "Exchange-to-local latency over the recent window (all symbols)",
            labels=["quantile"],
        )
        self.feed_latency_max = g(
            "trireme_feed_latency_max_seconds", "Largest exchange-to-local latency in the window"
        )
        # Rate limits.
        self.rate_used = g(
            "trireme_rate_limit_used",
            "REST units used in the current window, by Binance header",
            labels=["limit"],
        )
        self.rate_waiting = g("trireme_rate_limit_waiting", "Requests waiting for the limiter")
        self.rate_blocked = g(
            "trireme_rate_limit_blocked_seconds", "Seconds until requests may go (after a 429)"
        )
        self.rate_banned = g("trireme_rate_limit_banned_seconds", "Seconds left of a 418 ban")
        # Channels.
        chan = ["channel", "symbol"]
        self.chan_used = g("trireme_channel_buffered", "Messages waiting in a channel", labels=chan)
        self.chan_capacity = g(
            "trireme_channel_capacity", "A channel's buffer size (-1: unbounded)", labels=chan
        )
        self.chan_waiting = g(
            "trireme_channel_senders_waiting", "Senders blocked on a full channel", labels=chan
        )
        # Event loop.
        self.lag = g(
            "trireme_event_loop_lag_seconds",
            "Event-loop lag over the recent window",
            labels=["quantile"],
        )
        self.lag_max = g("trireme_event_loop_lag_max_seconds", "Largest event-loop lag")
        self.lag_samples = c("trireme_event_loop_lag_samples", "Event-loop lag samples taken")
        # Model.
        self.model_requests = c("trireme_model_requests", "Entry signals scored")
        self.model_batches = c("trireme_model_batches", "Scoring batches")
        self.model_decisions = c(
            "trireme_model_decisions",
            "Scored entry signals taken or blocked by the filter",
            labels=["symbol", "decision"],
        )
        self.model_latency = g(
            "trireme_model_inference_seconds",
            "Inference time per batch over the recent window",
            labels=["quantile"],
        )
        self.model_retrains = c("trireme_model_retrains", "Online retrains finished")
        self.model_threshold = g(
            "trireme_model_threshold", "The entry filter's current score threshold", labels=sym
        )
        self.model_not_ready = c(
            "trireme_model_not_ready", "Signals passed before features were ready", labels=sym
        )

    def all(self) -> Iterator[Metric]:
        """Every family, in definition order."""
        for value in vars(self).values():
            if isinstance(value, Metric):
                yield value


def _risk(f: _Families, risk: Any) -> None:
    current = risk.trading.state.value
    for state in _STATES:
        f.trading_state.add_metric([state], 1.0 if state == current else 0.0)
    for symbol, machine in risk.symbol_trading.items():
        for state in _STATES:
            f.symbol_state.add_metric([symbol, state], 1.0 if state == machine.state.value else 0)
    for name, (action, _reason) in sorted(risk.active.items()):
        f.trigger.add_metric(["", name, action], 1.0)
    for symbol, table in risk.symbol_active.items():
        for name, (action, _reason) in sorted(table.items()):
            f.trigger.add_metric([symbol, name, action], 1.0)
    f.state_changes.add_metric([], len(risk.state_changes))
    per_symbol = dict.fromkeys(risk.symbol_trading, 0)
    for symbol, *_rest in risk.symbol_changes:
        per_symbol[symbol] = per_symbol.get(symbol, 0) + 1
    for symbol, count in per_symbol.items():
        f.symbol_changes.add_metric([symbol], count)
    f.orders_approved.add_metric([], risk.approved)
    for reason, count in sorted(risk.denied.items()):
        f.orders_denied.add_metric([reason], count)
    open_per_symbol = dict.fromkeys(risk.symbol_trading, 0)
    for order in risk_open_orders(risk):
        open_per_symbol[order.symbol] = open_per_symbol.get(order.symbol, 0) + 1
    for symbol, count in open_per_symbol.items():
        f.orders_open.add_metric([symbol], count)
    m = risk.metrics
    f.equity.add_metric([], risk.equity)
    f.account_equity.add_metric([], m.capital + risk.equity)
    f.drawdown.add_metric([], max(0.0, m.peak - risk.equity))
    f.max_drawdown.add_metric([], m.max_drawdown)
    summary = m.summary()
    for name in ("sharpe_annualized", "sortino_annualized", "profit_factor", "var_hist_99"):
        value = summary.get(name)
        if isinstance(value, int | float) and math.isfinite(value):
            f.risk_ratio.add_metric([name], value)


def _positions(f: _Families, risk: Any) -> None:
    total = 0.0
    for symbol in risk.symbol_trading:
        acct = risk.ledger.account(symbol)
        marked = not math.isnan(acct.last_mid)
        notional = abs(acct.qty) * acct.last_mid if marked else 0.0
        total += notional
        unrealized = acct.unrealized()
        f.position.add_metric([symbol], acct.qty)
        f.notional.add_metric([symbol], notional)
        if marked:
            f.mark.add_metric([symbol], acct.last_mid)
        f.realized.add_metric([symbol], acct.realized)
        f.unrealized.add_metric([symbol], unrealized)
        f.fees.add_metric([symbol], acct.fees)
        f.net.add_metric([symbol], acct.realized - acct.fees + unrealized)
        f.fills.add_metric([symbol], acct.fills)
        f.round_trips.add_metric([symbol], acct.round_trips)
    f.exposure.add_metric([], total)


def _feed(f: _Families, feed: Any) -> None:
    st = feed.stats
    f.feed_messages.add_metric([], st.messages)
    f.feed_malformed.add_metric([], st.malformed)
    f.feed_unknown.add_metric([], st.unknown)
    f.feed_connects.add_metric([], st.connects)
    f.feed_reconnects.add_metric(["dropped"], st.reconnects)
    f.feed_reconnects.add_metric(["planned"], st.planned_reconnects)
    f.feed_reconnects.add_metric(["stale"], st.stale_reconnects)
    f.feed_steps.add_metric([], st.steps)
    for symbol, s in feed.state.items():
        f.feed_trades.add_metric([symbol], s.trades)
        f.feed_gaps.add_metric([symbol, "book"], s.book_gaps)
        f.feed_gaps.add_metric([symbol, "trade_id"], s.passed_id_gaps)
        f.feed_dropped.add_metric([symbol, "duplicate"], s.duplicates)
        f.feed_dropped.add_metric([symbol, "late"], s.late_trades)
        f.feed_backfilled.add_metric([symbol], s.backfilled)
        f.feed_resyncs.add_metric([symbol], s.resyncs)
        f.feed_synced.add_metric([symbol], 1.0 if s.book.book.synced else 0.0)
    latency = feed.latency.summary()
    if latency["count"]:
        for quantile, key in _QUANTILES:
            f.feed_latency.add_metric([quantile], latency[key] / 1000.0)
        f.feed_latency_max.add_metric([], latency["max_ms"] / 1000.0)


def _lag(f: _Families, lag: Any) -> None:
    summary = lag.summary()
    f.lag_samples.add_metric([], summary["count"])
    if summary["count"]:
        for quantile, key in _QUANTILES:
            f.lag.add_metric([quantile], summary[key] / 1000.0)
        f.lag_max.add_metric([], summary["max_ms"] / 1000.0)


def _model(f: _Families, model: Any, filters: dict[str, Any]) -> None:
    summary = model.summary()
    f.model_requests.add_metric([], summary["requests"])
    f.model_batches.add_metric([], summary["batches"])
    if summary["batches"]:
        f.model_latency.add_metric(["0.5"], summary["inference_us_p50"] / 1e6)
        f.model_latency.add_metric(["0.99"], summary["inference_us_p99"] / 1e6)
    f.model_retrains.add_metric([], summary["retrains"])
    for symbol, flt in sorted(filters.items()):
        f.model_threshold.add_metric([symbol], flt.threshold.current)
        f.model_not_ready.add_metric([symbol], flt.not_ready)
        f.model_decisions.add_metric([symbol, "taken"], flt.taken)
        f.model_decisions.add_metric([symbol, "blocked"], flt.blocked)


def metrics_registry(state: ControlState) -> CollectorRegistry:
    """A registry of its own (no global state) with the engine's and the process's metrics."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(EngineCollector(state))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus's text format (version 0.0.4)."""
    return generate_latest(registry)


def metric_names(registry: CollectorRegistry | None = None) -> set[str]:
    """Every series name in the exposition of ``registry`` (default: a detached engine's,
    where every family is present without samples), as PromQL spells them."""
    text = exposition(registry or metrics_registry(ControlState())).decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _hash, _type, name, kind = line.split(" ", 3)
            names.add(name)
            if kind in ("histogram", "summary"):
                names |= {f"{name}_sum", f"{name}_count"}
            if kind == "histogram":
                names.add(f"{name}_bucket")
    return names

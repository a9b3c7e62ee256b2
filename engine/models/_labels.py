"""Triple-barrier labels: did an entry pay, judged only on the quotes after it.

One rule, used offline (:func:`triple_barrier` over a whole history, by ``tools.train``) and
online (:class:`~engine.models.OnlineLabeler`, batch by batch): an entry decided at time ``t``
is filled at the opposite best quote (ask for a long, bid for a short) of the first quote at
or after ``t + latency_ms``, strictly after the decision's own event, as the simulated venue
fills. It is then marked at the side it would close at (bid for a long, ask for a short) on
every later quote until the stop-loss (checked first), the take-profit or the time limit
(``max_hold_ms`` after the fill) is hit. The label is 1 when the round trip's return net of
fees (``fee_bps`` on each leg) is positive. When the quotes run out first the outcome is
``"end"``: the last mark, and no decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import attrs
import numpy as np

_MS = 1_000_000
_QUOTE = 1  # EventKind.QUOTE: the only rows with a best bid/ask


class BarrierParams(Protocol):
    """The barrier settings (``tools.train``'s ``StrategyConfig`` has them all)."""

    take_profit_bps: float
    stop_loss_bps: float
    max_hold_ms: float
    fee_bps: float
    latency_ms: float


@attrs.frozen(kw_only=True)
class Barrier:
    """Barrier settings: take-profit and stop-loss in bps, time limit, fee per leg, latency."""

    take_profit_bps: float = attrs.field(validator=attrs.validators.gt(0.0))
    stop_loss_bps: float = attrs.field(validator=attrs.validators.gt(0.0))
    max_hold_ms: float = attrs.field(validator=attrs.validators.gt(0))
    fee_bps: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    latency_ms: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))


@attrs.frozen
class Quotes:
    """Event columns the barrier reads (:class:`~engine.messages.Ticks` has them too)."""

    ts: np.ndarray  # int64 ns
    kind: np.ndarray  # int8, 1 = quote
    bid: np.ndarray
    ask: np.ndarray


class QuoteColumns(Protocol):
    """Anything with ``ts``, ``kind``, ``bid``, ``ask`` columns: :class:`Quotes`, ``Ticks``."""

    ts: np.ndarray
    kind: np.ndarray
    bid: np.ndarray
    ask: np.ndarray


class BarrierWalk:
    """One entry's walk through the barriers, fed quote columns chunk by chunk.

    Args:
        side: +1 long, -1 short.
        ts_decision: when the entry was decided, ns.
        params: the barrier settings.

    Attributes:
        reason: None while open; then ``"sl"``, ``"tp"`` or ``"time"``.
        ts_resolved: time of the quote that decided it (or the last quote seen).
        ret: the last marked return (a fraction, before fees).
    """

    __slots__ = (
        "entry",
        "hold_ns",
        "reason",
        "ret",
        "side",
        "sl",
        "t_entry",
        "t_send",
        "tp",
        "ts_decision",
        "ts_resolved",
    )

    def __init__(self, side: int, ts_decision: int, params: BarrierParams) -> None:
        self.side = 1 if side > 0 else -1
        self.ts_decision = int(ts_decision)
        self.t_send = self.ts_decision + round(params.latency_ms * _MS)
        self.tp = params.take_profit_bps * 1e-4
        self.sl = params.stop_loss_bps * 1e-4
        self.hold_ns = round(params.max_hold_ms * _MS)
        self.entry = math.nan
        self.t_entry = 0
        self.ret = 0.0
        self.reason: str | None = None
        self.ts_resolved = self.ts_decision

    @property
    def filled(self) -> bool:
        """Whether the entry has its fill price."""
        return self.entry == self.entry

    def feed(self, q: QuoteColumns, start: int, stop: int) -> int:
        """Walk rows ``[start, stop)``, all after the decision's event.

        Returns:
            The row that decided the outcome, or -1 while still open.
        """
        quote = np.flatnonzero(q.kind[start:stop] == _QUOTE) + start
        if quote.shape[0] == 0:
            return -1
        ts = q.ts[quote]
        if not self.filled:
            j = int(np.searchsorted(ts, self.t_send, side="left"))
            if j >= quote.shape[0]:
                return -1
            r = quote[j]
            self.entry = float(q.ask[r] if self.side > 0 else q.bid[r])
            self.t_entry = int(q.ts[r])
            self.ts_resolved = self.t_entry
            quote, ts = quote[j + 1 :], ts[j + 1 :]
            if quote.shape[0] == 0:
                return -1
        px = q.bid[quote] if self.side > 0 else q.ask[quote]
        ret = self.side * (px - self.entry) / self.entry
        stop_hit = ret <= -self.sl
        take_hit = ret >= self.tp
        time_hit = (ts - self.t_entry) >= self.hold_ns
        hit = np.flatnonzero(stop_hit | take_hit | time_hit)
        if hit.shape[0] == 0:
            self.ret = float(ret[-1])
            self.ts_resolved = int(ts[-1])
            return -1
        h = int(hit[0])
        self.ret = float(ret[h])
        self.ts_resolved = int(ts[h])
        self.reason = "sl" if stop_hit[h] else ("tp" if take_hit[h] else "time")
        return int(quote[h])


def net_bps(ret: float, fee_bps: float) -> float:
    """A round trip's return in bps after ``fee_bps`` on each leg."""
    return ret * 1e4 - 2.0 * fee_bps


@attrs.frozen
class Labels:
    """Triple-barrier outcome per signal (arrays aligned with the signals)."""

    label: np.ndarray  # int8: 1 when the net return is positive
    net_bps: np.ndarray  # return after fees, bps
    t0: np.ndarray  # signal time, ns
    t1: np.ndarray  # time the label was decided (barrier hit), ns
    reason: np.ndarray  # 'tp', 'sl', 'time', 'end' (data ran out)


def fill_index(q: QuoteColumns, i: int, latency_ns: float) -> int:
    """First quote at or after ``ts[i] + latency`` strictly after event ``i`` (-1: none)."""
    t_send = int(q.ts[i]) + round(latency_ns)
    j = i + 1
    n = q.ts.shape[0]
    while j < n and (q.kind[j] != _QUOTE or q.ts[j] < t_send):
        j += 1
    return j if j < n else -1


_CHUNK = 4096


def triple_barrier(
    q: QuoteColumns, signals: Sequence[tuple[int, int]], params: BarrierParams
) -> Labels:
    """Label each ``(event_index, side)`` signal from the quotes after it (module docstring)."""
    m = len(signals)
    label = np.zeros(m, dtype=np.int8)
    net = np.zeros(m)
    t0 = np.zeros(m, dtype=np.int64)
    t1 = np.zeros(m, dtype=np.int64)
    reason = np.empty(m, dtype=object)
    n = q.ts.shape[0]
    for k, (i, side) in enumerate(signals):
        walk = BarrierWalk(side, int(q.ts[i]), params)
        start = i + 1
        while start < n and walk.feed(q, start, min(n, start + _CHUNK)) < 0:
            start += _CHUNK
        t0[k] = walk.ts_decision
        if not walk.filled:
            t1[k], reason[k], net[k] = q.ts[-1], "end", -2.0 * params.fee_bps
            continue
        t1[k] = walk.ts_resolved
        reason[k] = walk.reason or "end"
        net[k] = net_bps(walk.ret, params.fee_bps)
        label[k] = 1 if net[k] > 0.0 else 0
    return Labels(label, net, t0, t1, reason)

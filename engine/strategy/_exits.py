"""Exit policies any strategy composes from ``[exits]``: a numba kernel and its holder.

While a position is held the symbol core runs :func:`scan_exits` over a range of the
symbol's market columns before the strategy's own scan: it stops at the first quote
whose closing price (the bid for a long, the ask for a short) crosses a level, and the
strategy then scans only up to that quote. The earlier of the two wins; on the same
quote the policy wins (its levels behave as resting orders, which the quote that
crosses them fills before the strategy decides on it). Levels are those in force
before the quote (a trailing stop moves with the best price of the quotes *before*
it), and checking starts at the first tick after the entry fill, so a replay exits
on exactly the event a resting stop would have filled on, and paper and live run the
same code on their batches.

Policies (0: off), all from the entry price ``P`` and side ``s`` (+1 long):

- ``stop_loss``: ``P * (1 - s * stop_bps / 1e4)``; ``atr_stop``: ``P - s * k * ATR``,
  ATR being the strategy's at the entry (a strategy without one is refused at
  config time; while its ATR is still warming up the trade has no ATR levels and
  the fixed ones, when set, still apply: :attr:`ExitPolicy.atr_missing` counts it).
- ``trailing_stop``: ``best - s * d``, ``best`` the best closing price since the
  entry, ``d`` the tighter of ``trail_bps`` and ``trail_atr x ATR``.
- ``take_profit``: ``P * (1 + s * target_bps / 1e4)``, closing all.
- ``partial_take_profit``: step ``k`` of the ladder reduces the position by
  ``partial_fraction[k]`` of the entry quantity when the gain reaches
  ``partial_r[k]`` R (R: the initial stop distance, the nearer of the fixed and
  ATR stops); the rest continues under every other policy.
- ``time_limit``: the quote at or after ``entry + time_limit_ms``.

When several fire on one quote the reported one is, in order: the nearest stop
(``stop_loss``, ``atr_stop``, ``trailing_stop``; equal levels in that order), then
``take_profit``, ``partial_take_profit``, ``time_limit``.

Live protective orders: each level is a price known from the entry (trailing:
from each new best), so :meth:`ExitPolicy.levels` gives the stop a STOP_MARKET
order resting on the exchange would carry; the core can place it after the entry
fill, amend it when the level moves and cancel it when the position closes, while
this kernel keeps deciding in replay and paper (see the README's exits section).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._config import ExitsSection
from ..messages import Ticks

__all__ = ["EXIT_CODES", "POLICY_SIGNAL", "ExitPolicy", "new_exit_state", "pack", "scan_exits"]

# Exit codes (the kernel's second return value).
NONE, STOP_LOSS, ATR_STOP, TRAILING_STOP, TAKE_PROFIT, PARTIAL, TIME_LIMIT = range(7)
EXIT_CODES: dict[int, str] = {
    STOP_LOSS: "stop_loss",
    ATR_STOP: "atr_stop",
    TRAILING_STOP: "trailing_stop",
    TAKE_PROFIT: "take_profit",
    PARTIAL: "partial_take_profit",
    TIME_LIMIT: "time_limit",
}
POLICY_SIGNAL = 100
"""The core's signal for a policy exit is ``POLICY_SIGNAL + code`` (strategies' own
signals are small numbers)."""

# State layout (float64).
SIDE, ENTRY, ENTRY_TS, BEST, R, STEP = range(6)
STOP_LVL, ATR_LVL, TARGET_LVL, TRAIL_DIST, FRACTION, TRIGGER_PX = range(6, 12)
STATE_SIZE = 12

# Parameter layout (float64).
P_STOP, P_TARGET, P_ATR_K, P_TRAIL, P_TRAIL_ATR, P_TIME_NS, P_STEPS = range(7)
P_LADDER = 7  # then (r, fraction) pairs
MAX_STEPS = 4
PARAMS_SIZE = P_LADDER + 2 * MAX_STEPS

_QUOTE = 1
# A price within this fraction of a level touches it: levels are computed (entry
# times bps, plus R multiples) and would otherwise miss a quote exactly at them by
# a rounding error (100 + 1e-3 * 100 is not 100.1).
_TOUCH = 1e-10


def new_exit_state() -> np.ndarray:
    """A flat exit state (no position: the kernel finds nothing)."""
    state = np.full(STATE_SIZE, np.nan)
    state[SIDE] = 0.0
    state[STEP] = 0.0
    return state


def pack(cfg: ExitsSection) -> np.ndarray:
    """The ``[exits]`` section as the kernel's parameter array."""
    params = np.zeros(PARAMS_SIZE)
    params[P_STOP] = cfg.stop_bps * 1e-4
    params[P_TARGET] = cfg.target_bps * 1e-4
    params[P_ATR_K] = cfg.atr_stop
    params[P_TRAIL] = cfg.trail_bps * 1e-4
    params[P_TRAIL_ATR] = cfg.trail_atr
    params[P_TIME_NS] = cfg.time_limit_ms * 1e6
    params[P_STEPS] = len(cfg.partial_r)
    for k, (r, f) in enumerate(zip(cfg.partial_r, cfg.partial_fraction, strict=True)):
        params[P_LADDER + 2 * k] = r
        params[P_LADDER + 2 * k + 1] = f
    return params


@njit(cache=True, nogil=True)
def enter(state: np.ndarray, params: np.ndarray, side: float, price: float, ts: float,
          atr: float) -> None:  # fmt: skip
    """Set the levels of a position entered at ``price`` at ``ts`` (``side`` +1/-1)."""
    state[SIDE] = side
    state[ENTRY] = price
    state[ENTRY_TS] = ts
    state[BEST] = price
    state[STEP] = 0.0
    has_atr = atr == atr and atr > 0.0
    r = np.nan
    state[STOP_LVL] = np.nan
    state[ATR_LVL] = np.nan
    state[TARGET_LVL] = np.nan
    if params[P_STOP] > 0.0:
        d = params[P_STOP] * price
        state[STOP_LVL] = price - side * d
        r = d
    if params[P_ATR_K] > 0.0 and has_atr:
        d = params[P_ATR_K] * atr
        state[ATR_LVL] = price - side * d
        if not (r <= d):  # r NaN or farther
            r = d
    state[R] = r
    if params[P_TARGET] > 0.0:
        state[TARGET_LVL] = price * (1.0 + side * params[P_TARGET])
    trail = np.nan
    if params[P_TRAIL] > 0.0:
        trail = params[P_TRAIL] * price
    if params[P_TRAIL_ATR] > 0.0 and has_atr:
        d = params[P_TRAIL_ATR] * atr
        if not (trail <= d):
            trail = d
    state[TRAIL_DIST] = trail


@njit(cache=True, nogil=True)
def scan_exits(
    ts: np.ndarray,
    kind: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    start: int,
    stop: int,
    state: np.ndarray,
    params: np.ndarray,
) -> tuple[int, int]:
    """Advance the held position's exit levels over events ``start..stop`` (exclusive).

    Returns:
        ``(index, code)``: the quote that crossed a level and its exit code (the
        state holds its price in ``TRIGGER_PX`` and, for a partial take-profit, the
        fraction in ``FRACTION``), or ``(stop, 0)``. Flat (side 0): ``(stop, 0)``.
    """
    n = min(stop, ts.shape[0])
    side = state[SIDE]
    if side == 0.0:
        return n, 0
    entry = state[ENTRY]
    time_ns = params[P_TIME_NS]
    steps = int(params[P_STEPS])
    tol = _TOUCH * entry
    for i in range(start, n):
        if kind[i] != _QUOTE:
            continue
        px = bid[i] if side > 0.0 else ask[i]
        # The nearest stop in force before this quote (NaN levels never compare).
        code = 0
        level = np.nan
        lvl = state[STOP_LVL]
        if lvl == lvl:
            code, level = STOP_LOSS, lvl
        lvl = state[ATR_LVL]
        if lvl == lvl and (code == 0 or side * (lvl - level) > 0.0):
            code, level = ATR_STOP, lvl
        if state[TRAIL_DIST] == state[TRAIL_DIST]:
            lvl = state[BEST] - side * state[TRAIL_DIST]
            if code == 0 or side * (lvl - level) > 0.0:
                code, level = TRAILING_STOP, lvl
        if code != 0 and side * (px - level) > tol:
            code = 0
        if code == 0:
            lvl = state[TARGET_LVL]
            if lvl == lvl and side * (px - lvl) >= -tol:
                code = TAKE_PROFIT
        if code == 0 and state[STEP] < steps and state[R] == state[R]:
            k = int(state[STEP])
            if side * (px - entry) >= params[P_LADDER + 2 * k] * state[R] - tol:
                code = PARTIAL
                state[FRACTION] = params[P_LADDER + 2 * k + 1]
                state[STEP] = k + 1
        if code == 0 and time_ns > 0.0 and ts[i] - state[ENTRY_TS] >= time_ns:
            code = TIME_LIMIT
        if code != 0:
            state[TRIGGER_PX] = px
            if code != PARTIAL:
                state[SIDE] = 0.0  # closed: nothing more until the next entry
            return i, code
        if side * (px - state[BEST]) > 0.0:
            state[BEST] = px
    return n, 0


class ExitPolicy:
    """One symbol's exit policies: the packed ``[exits]`` and the held position's state.

    Args:
        config: the ``[exits]`` section.
    """

    def __init__(self, config: ExitsSection) -> None:
        self.config = config
        self._params = pack(config)
        self.state = new_exit_state()
        self.atr_missing = 0

    def on_entry(self, side: int, price: float, ts: int, atr: float) -> None:
        """The position is held from ``ts`` at ``price``; levels are checked from the
        next tick on. ``atr`` is the strategy's (NaN: none yet)."""
        if self.config.uses_atr and not (atr > 0.0 and math.isfinite(atr)):
            self.atr_missing += 1
        enter(self.state, self._params, float(side), float(price), float(ts), float(atr))

    def on_flat(self) -> None:
        """The position is closed: stop looking until the next entry."""
        self.state[SIDE] = 0.0

    def scan(self, ticks: Ticks, start: int, stop: int) -> tuple[int, int]:
        """:func:`scan_exits` over events ``start..stop`` of ``ticks``."""
        return scan_exits(  # type: ignore[no-any-return]
            ticks.ts, ticks.kind, ticks.bid, ticks.ask, start, stop, self.state, self._params
        )

    @property
    def fraction(self) -> float:
        """The fraction of the entry quantity the last partial take-profit closes."""
        return float(self.state[FRACTION])

    def levels(self) -> dict[str, float]:
        """The levels in force now (NaN: off): what protective orders would carry."""
        s = self.state
        trail = s[BEST] - s[SIDE] * s[TRAIL_DIST]
        return {
            "stop_loss": float(s[STOP_LVL]),
            "atr_stop": float(s[ATR_LVL]),
            "trailing_stop": float(trail),
            "take_profit": float(s[TARGET_LVL]),
        }

    @staticmethod
    def warm_up() -> None:
        """Load (or compile) the kernels now."""
        cfg = ExitsSection(stop_bps=1.0, trail_bps=1.0, partial_r=(1.0,), partial_fraction=(0.5,))
        policy = ExitPolicy(cfg)
        n = 2
        kind = np.ones(n, dtype=np.int8)
        # Replay batches are writeable; the live feed's ts, bid and ask are read-only
        # views, a numba signature of their own (loaded mid-run otherwise: +0.2 MB).
        for writeable in (True, False):
            policy.on_entry(1, 100.0, 0, float("nan"))
            px = np.full(n, 100.0)
            ticks_ts = np.arange(n, dtype=np.int64)
            px.flags.writeable = ticks_ts.flags.writeable = writeable
            scan_exits(ticks_ts, kind, px, px, 0, n, policy.state, policy._params)

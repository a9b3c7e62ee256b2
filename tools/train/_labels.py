"""Meta-labels for the strategy's own entry signals, and purged walk-forward splits.

The strategy (:mod:`engine.strategy._ema_cross`, its own :func:`scan` kernel) proposes entries;
the model only says which of them to take. Signals come from ``scan`` run over the very
:class:`~engine.messages.Ticks` columns the replay feed sends the symbol actor
(:func:`engine.models.ticks_of`). Each candidate entry is labelled by the triple barrier of
:mod:`engine.models._labels` (shared with the engine's online labeler), which uses *only prices
after the signal*; features come from the columns *up to* the signal (see
:mod:`engine.models`), so the label's future window is never seen by them.

Splits are in time, with the training samples whose label window ``[t0, t1]`` reaches into the
test window (plus an embargo) purged, so no training label overlaps its test window.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import numpy as np

from engine.models._labels import Labels, QuoteColumns, Quotes, triple_barrier
from engine.strategy._ema_cross import (
    Signal,
    make_params,
    new_indicators,
    new_state,
    scan,
)

__all__ = [
    "Labels",
    "Quotes",
    "StrategyConfig",
    "entry_signals",
    "holdout",
    "purged_split",
    "triple_barrier",
    "walk_forward",
]


@attrs.frozen(kw_only=True)
class StrategyConfig:
    """The EMA-cross parameters the signals come from, and the barrier / fee settings.

    The defaults are a *fast* configuration (200 ms samples, 3/8 EMAs, RSI gates widened to
    90/10) chosen to get as many signals as the 345 s BTCUSDT capture holds (about 70; the
    engine's default 1 s, 12/26 gives 7). Barriers follow the strategy's exits:
    ``take_profit_bps``, ``stop_loss_bps``, ``max_hold_ms``. ``fee_bps`` is per leg; the default
    2 bps is Binance's maker fee: at the simulated venue's 5 bps taker fee almost no entry of
    this strategy nets a profit on this capture (12% positives), too few to learn from.
    """

    sample_ms: int = attrs.field(default=200, validator=attrs.validators.gt(0))
    fast: int = 3
    slow: int = 8
    rsi_period: int = 14
    rsi_long_max: float = 90.0
    rsi_short_min: float = 10.0
    allow_short: bool = True
    stop_loss_bps: float = attrs.field(default=6.0, validator=attrs.validators.gt(0.0))
    take_profit_bps: float = attrs.field(default=10.0, validator=attrs.validators.gt(0.0))
    max_hold_ms: int = attrs.field(default=20_000, validator=attrs.validators.gt(0))
    fee_bps: float = attrs.field(default=2.0, validator=attrs.validators.ge(0.0))
    latency_ms: float = 5.0

    def params(self) -> np.ndarray:
        """The :func:`scan` parameter array."""
        return make_params(
            sample_ms=self.sample_ms,
            rsi_long_max=self.rsi_long_max,
            rsi_short_min=self.rsi_short_min,
            allow_short=self.allow_short,
            stop_loss_bps=self.stop_loss_bps,
            take_profit_bps=self.take_profit_bps,
            max_hold_ms=self.max_hold_ms,
        )


def entry_signals(q: QuoteColumns, cfg: StrategyConfig) -> list[tuple[int, int]]:
    """Every entry the strategy would propose if it were always flat.

    The crossover state does not depend on the position, so the entries of a real run are a
    subset of these (those that come while it is flat).

    Returns:
        ``(event_index, side)`` pairs, side +1 long / -1 short.
    """
    state = new_state()
    inds = new_indicators(cfg.fast, cfg.slow, cfg.rsi_period)
    params = cfg.params()
    out: list[tuple[int, int]] = []
    i = 0
    n = q.ts.shape[0]
    while i < n:
        i, sig = scan(q.ts, q.kind, q.bid, q.ask, i, len(q.ts), state, *inds, params)
        if sig == Signal.ENTER_LONG:
            out.append((i, 1))
        elif sig == Signal.ENTER_SHORT:
            out.append((i, -1))
        i += 1
    return out


# -- splits ----------------------------------------------------------------------------


def purged_split(
    t0: np.ndarray, t1: np.ndarray, test_start: int, test_end: int, embargo_ns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train / test indices for one test window ``[test_start, test_end)`` in signal time.

    Train: samples whose whole label window ends before ``test_start - embargo_ns``
    (so none overlaps the test window, and the embargo covers feature memory and serial
    correlation). Test: samples whose signal time is in the window.
    """
    test = np.flatnonzero((t0 >= test_start) & (t0 < test_end))
    train = np.flatnonzero(t1 < test_start - embargo_ns)
    return train, test


def walk_forward(
    t0: np.ndarray, t1: np.ndarray, n_splits: int, embargo_ns: int, min_train: int = 20
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window walk-forward folds over ``n_splits + 1`` equal blocks of signal time.

    Fold ``k`` tests on block ``k + 1`` and trains on everything purged before it
    (:func:`purged_split`); folds with fewer than ``min_train`` training samples or no test
    samples are skipped.
    """
    if t0.shape[0] == 0:
        return
    edges = np.linspace(t0.min(), t0.max() + 1, n_splits + 2).astype(np.int64)
    for k in range(1, n_splits + 1):
        train, test = purged_split(t0, t1, int(edges[k]), int(edges[k + 1]), embargo_ns)
        if train.shape[0] >= min_train and test.shape[0]:
            yield train, test


def holdout(
    t0: np.ndarray, t1: np.ndarray, test_fraction: float, embargo_ns: int
) -> tuple[np.ndarray, np.ndarray]:
    """The last ``test_fraction`` of signals (by count) as test, the purged rest as train."""
    order = np.sort(t0)
    start = int(order[int(len(order) * (1.0 - test_fraction))])
    return purged_split(t0, t1, start, int(order[-1]) + 1, embargo_ns)

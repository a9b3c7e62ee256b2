"""A symbol's side of the ML entry filter: features, adaptive threshold, outcome labels.

The symbol actor feeds the step's ticks to :meth:`EntryFilter.advance` as its strategy
kernel scans them, so a signal's feature row is computed from the ticks up to and
including the signal's own (never later). :meth:`propose` turns a signal into a scoring
request with the regime-scaled, win-rate-adapted threshold of that moment; the model
actor's :class:`~engine.messages.Score` comes back in the same step and :meth:`resolve`
hands the pending entry back for the decision.

Every scored signal is also given to an :class:`~engine.models.OnlineLabeler`, which
labels it from later quotes only (triple barrier: the strategy's exits and fees); the
labels feed online retraining and are journaled (:class:`DecisionLabeled`).

With ``[model] regime = "hmm"`` the threshold's regime is the fitted HMM's
(:class:`~engine.models._hmm.TradeBarRegime`): the same ticks, cut into bars of the model's
``bar_ms``, step its forward filter once per closed bar, and the most probable state (calm,
normal, turbulent) takes the place of the ``vol`` component (calm is low, the last state
high); ``volume`` and ``trend`` stay the thresholds'. Until the bar features are warm the
threshold regime is used and counted (:attr:`EntryFilter.regime_fallback`). The feature row
the model scores is the same either way.

With sequence models (``window`` N > 0) the features are fed through a
:class:`~engine.models.TickWindows`, which keeps the symbol's last N ticks' rows in a
preallocated ring; a request carries the window as of the signal's tick. With a multi-modal
model (``book_levels`` K > 0) it also carries the top K levels of the batch's book at that
tick (:func:`~engine.models.book_at`; NaN where there is none, counted in
:attr:`EntryFilter.book_missing`).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np

from .._config import ModelSection, StrategySection, VenueSection
from ..messages import DecisionLabeled, LabeledDecision, Score, ScoreRequest, Side, Ticks
from ..models import (
    AdaptiveThreshold,
    FeatureBuilder,
    FeatureSpec,
    OnlineLabeler,
    Regime,
    TickWindows,
    book_at,
)
from ..models._hmm import HmmParams, TradeBarRegime
from ..models._regime import HIGH, LOW, NORMAL


@attrs.frozen(kw_only=True, eq=False)
class PendingEntry:
    """An entry signal waiting for its score."""

    correlation_id: str
    side: Side
    qty: float
    price: float
    ts: int
    threshold: float
    regime: str
    row: np.ndarray

    def passes(self, score: float) -> bool:
        """Whether a score takes this entry (at or above its threshold)."""
        return score >= self.threshold


def regime_scales(cfg: ModelSection) -> dict[str, float]:
    """The threshold multipliers per regime component, from ``[model]``."""
    return {
        "vol=high": cfg.vol_high_scale,
        "vol=low": cfg.vol_low_scale,
        "trend=range": cfg.range_scale,
        "trend=trend": cfg.trend_scale,
        "volume=low": cfg.volume_low_scale,
        "volume=high": cfg.volume_high_scale,
    }


def hmm_vol_level(state: int, n_states: int) -> int:
    """The ``vol`` level of an HMM state (ordered calm first): the first LOW, the last HIGH."""
    if state == 0:
        return LOW
    return HIGH if state == n_states - 1 else NORMAL


class EntryFilter:
    """Features, threshold and labels of one symbol's entry signals.

    Args:
        symbol: the instrument.
        spec: the feature spec the models were trained on.
        model: the ``[model]`` section (threshold, adaptation, label fee).
        strategy: the strategy's exits (the labels' barriers).
        venue: the simulated venue's latency (when an entry would fill).
        regime_model: the HMM whose state is the threshold's ``vol`` regime (None: the
            threshold regime, ``[model] regime = "threshold"``).
        window: ticks per sequence window the ensemble reads (0: row models only).
        book_levels: book levels the ensemble reads (0: none).
    """

    def __init__(
        self,
        *,
        symbol: str,
        spec: FeatureSpec,
        model: ModelSection,
        strategy: StrategySection,
        venue: VenueSection,
        regime_model: HmmParams | None = None,
        window: int = 0,
        book_levels: int = 0,
    ) -> None:
        self.symbol = symbol
        self.builder = FeatureBuilder(spec)
        self.windows = TickWindows(self.builder, window) if window > 0 else None
        self.book_levels = book_levels
        self.book_missing = 0  # requests whose book levels are NaN (no book at the tick)
        self.threshold = AdaptiveThreshold(
            base=model.threshold,
            lo=model.threshold_min,
            hi=model.threshold_max,
            regime_scale=regime_scales(model),
            target_win_rate=model.target_win_rate,
            window=model.adapt_window,
            gain=model.adapt_gain,
        )
        self.labeler = OnlineLabeler(
            take_profit_bps=strategy.take_profit_bps,
            stop_loss_bps=strategy.stop_loss_bps,
            max_hold_ms=strategy.max_hold_ms,
            fee_bps=model.label_fee_bps,
            latency_ms=venue.latency_ms,
        )
        self._ticks: Ticks | None = None
        self._fed = 0
        self._decisions = 0
        self._requests: list[ScoreRequest] = []
        self._pending: dict[str, PendingEntry] = {}
        self.not_ready = 0
        self.taken = 0  # scored signals at or above their threshold
        self.blocked = 0  # scored signals below it
        self.hmm = None if regime_model is None else TradeBarRegime(regime_model)
        self.regime_hmm = 0  # proposals whose threshold used the HMM's regime
        self.regime_fallback = 0  # ... the threshold regime, the HMM not warm yet

    def begin(self, ticks: Ticks) -> None:
        """Start a step's batch (the strategy kernel is about to scan it)."""
        self._ticks = ticks
        self._fed = 0

    def advance(self, stop: int) -> None:
        """Feed the batch's ticks up to ``stop`` (exclusive) to the features."""
        if self._ticks is not None and stop > self._fed:
            t = self._ticks
            if self.windows is not None:
                self.windows.on_ticks(t, self._fed, stop)
            else:
                self.builder.on_ticks(t, self._fed, stop)
            if self.hmm is not None:
                self.hmm.on_ticks(t.ts, t.kind, t.price, t.qty, self._fed, stop)
            self._fed = stop

    def propose(self, side: Side, qty: float, price: float, ts: int) -> PendingEntry | None:
        """A scoring request for an entry signal (None: features not warm yet)."""
        row = self.builder.row(float(int(side)))
        if not self.builder.ready(row):
            self.not_ready += 1
            return None
        regime = self.regime()
        self._decisions += 1
        pending = PendingEntry(
            correlation_id=f"{self.symbol}-d{self._decisions}",
            side=side,
            qty=qty,
            price=price,
            ts=ts,
            threshold=self.threshold.value(regime),
            regime=regime.key,
            row=row.copy(),
        )
        self._pending[pending.correlation_id] = pending
        window = book = None
        if self.windows is not None:
            window = np.empty((self.windows.window, row.shape[0]), dtype=row.dtype)
            self.windows.window_into(window, float(int(side)))
        if self.book_levels:
            book = np.empty((self.book_levels, 4), dtype=row.dtype)
            if self._ticks is None or not book_at(self._ticks, self._fed - 1, book):
                self.book_missing += 1
        self._requests.append(
            ScoreRequest(
                correlation_id=pending.correlation_id,
                symbol=self.symbol,
                side=side,
                row=pending.row,
                ts_event=ts,
                window=window,
                book=book,
            )
        )
        self.labeler.add(pending.correlation_id, ts, int(side), pending.row)
        return pending

    def regime(self) -> Regime:
        """The threshold's regime now (counts which model gave it under ``regime = "hmm"``)."""
        regime = self.builder.regime()
        hmm = self.hmm
        if hmm is None:
            return regime
        if hmm.state < 0:
            self.regime_fallback += 1
            return regime
        self.regime_hmm += 1
        vol = hmm_vol_level(hmm.state, hmm.params.n_states)
        return Regime(vol=vol, volume=regime.volume, trend=regime.trend)

    def take_step(
        self, ticks: Ticks | None, next_seq: Callable[[], int]
    ) -> tuple[tuple[ScoreRequest, ...], tuple[LabeledDecision, ...], list[DecisionLabeled]]:
        """The step's requests, the decisions labelled by its ticks, and their records."""
        requests = self.take_requests()
        if ticks is None:
            return requests, (), []
        labeled, records = self.label(ticks, 0, len(ticks), next_seq)
        return requests, labeled, records

    def take_requests(self) -> tuple[ScoreRequest, ...]:
        """The scoring requests proposed since the last call."""
        requests = tuple(self._requests)
        self._requests.clear()
        return requests

    def label(
        self, ticks: Ticks, lo: int, hi: int, next_seq: Callable[[], int]
    ) -> tuple[tuple[LabeledDecision, ...], list[DecisionLabeled]]:
        """Label pending decisions with events ``lo..hi`` of ``ticks``; the decisions
        resolved and their journal records."""
        resolved = self.labeler.on_ticks(ticks, lo, hi)
        labeled = tuple(
            LabeledDecision(
                correlation_id=r.key,
                row=r.row,
                label=int(r.label),
                ts_decision=r.ts_decision,
                ts_resolved=r.ts_resolved,
            )
            for r in resolved
        )
        records = [
            DecisionLabeled(
                symbol=self.symbol,
                label=int(r.label),
                ret_bps=round(float(r.ret_bps), 6),
                ts_decision=r.ts_decision,
                ts_event=r.ts_resolved,
                ts_init=r.ts_resolved,
                seq=next_seq(),
                correlation_id=r.key,
            )
            for r in resolved
        ]
        return labeled, records

    def resolve(self, score: Score) -> PendingEntry:
        """The pending entry a score answers (counted as taken or blocked)."""
        pending = self._pending.pop(score.correlation_id)
        if pending.passes(score.score):
            self.taken += 1
        else:
            self.blocked += 1
        return pending

    def record_outcome(self, win: bool) -> None:
        """A closed trade's result (after fees), for the threshold's win-rate adaptation."""
        self.threshold.record(win)

"""Learning while trading: label the filter's decisions as the market resolves them, retrain.

:class:`OnlineLabeler` holds every decision the entry filter was asked about (its feature row,
side and time) and resolves it by the triple-barrier rule of :mod:`engine.models._labels` (the
same :class:`~engine.models._labels.BarrierWalk` that labels the offline training set) from the
quotes of the batches that follow, never from anything before the decision.

:func:`retrain` fits a challenger on the labelled rows and says whether it beats the current
model on the most recent slice. It is pure, synchronous and CPU-bound (scikit-learn, skl2onnx,
onnxruntime): an actor runs it in ``trio.to_thread.run_sync`` and swaps models itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from ..messages import Ticks
from ._features import FeatureSpec
from ._labels import Barrier, BarrierWalk, QuoteColumns, net_bps
from ._training import (
    CALIBRATION_FOLDS,
    ExportParityError,
    calibration_of,
    check_parity,
    fit_calibrated,
    make_sidecar,
    metrics,
    onnx_proba,
    span,
    to_onnx,
)


@attrs.frozen(kw_only=True, eq=False)
class Labeled:
    """A resolved decision.

    Attributes:
        key: the caller's key given to :meth:`OnlineLabeler.add`.
        ts_decision: when the entry was decided, ns.
        ts_resolved: time of the quote that hit a barrier, ns.
        side: +1 long, -1 short.
        row: the feature row given to :meth:`OnlineLabeler.add` (a copy).
        label: 1 when the round trip net of fees is positive, else 0.
        ret_bps: the round trip's return after fees, bps.
        reason: ``"tp"``, ``"sl"`` or ``"time"``.
    """

    key: str
    ts_decision: int
    ts_resolved: int
    side: int
    row: np.ndarray
    label: int
    ret_bps: float
    reason: str


class OnlineLabeler:
    """Triple-barrier labels for live decisions, resolved batch by batch.

    Args:
        take_profit_bps: take-profit barrier, bps of the fill price.
        stop_loss_bps: stop-loss barrier, bps (checked before the take-profit).
        max_hold_ms: time barrier after the fill.
        fee_bps: fee per leg, subtracted twice from the return.
        latency_ms: the fill is the first quote at or after decision time + latency.

    Raises:
        ValueError: a barrier not positive, a fee or latency negative.
    """

    def __init__(
        self,
        take_profit_bps: float,
        stop_loss_bps: float,
        max_hold_ms: float,
        fee_bps: float,
        latency_ms: float,
    ) -> None:
        self.barrier = Barrier(
            take_profit_bps=take_profit_bps,
            stop_loss_bps=stop_loss_bps,
            max_hold_ms=max_hold_ms,
            fee_bps=fee_bps,
            latency_ms=latency_ms,
        )
        self._pending: list[tuple[str, np.ndarray, BarrierWalk]] = []

    @property
    def pending(self) -> int:
        """Decisions not resolved yet."""
        return len(self._pending)

    def add(self, key: str, ts: int, side: int, row: np.ndarray) -> None:
        """Track a decision made at ``ts`` (after the event at ``ts`` was consumed).

        Only rows given to later :meth:`on_ticks` calls resolve it: pass the batch rows
        *after* the decision's own event.
        """
        if side not in (1, -1):
            raise ValueError(f"side must be +1 or -1, not {side!r}")
        walk = BarrierWalk(side, int(ts), self.barrier)
        self._pending.append((key, np.array(row, copy=True), walk))

    def on_ticks(
        self, ticks: Ticks | QuoteColumns, start: int = 0, stop: int | None = None
    ) -> list[Labeled]:
        """Walk the pending decisions through rows ``[start, stop)``; return those resolved.

        Only QUOTE rows are read. A decision's fill is the first quote at or after its time
        plus the latency, so rows before it (in the same range) are never used.

        Returns:
            The decisions resolved by these rows, by resolution time (ties: order added).
        """
        if not self._pending:
            return []
        n = int(ticks.ts.shape[0])
        stop = n if stop is None else min(stop, n)
        if start >= stop:
            return []
        done: list[tuple[int, int, Labeled]] = []
        still: list[tuple[str, np.ndarray, BarrierWalk]] = []
        fee = self.barrier.fee_bps
        for order, (key, row, walk) in enumerate(self._pending):
            if walk.feed(ticks, start, stop) < 0:
                still.append((key, row, walk))
                continue
            ret = net_bps(walk.ret, fee)
            labeled = Labeled(
                key=key,
                ts_decision=walk.ts_decision,
                ts_resolved=walk.ts_resolved,
                side=walk.side,
                row=row,
                label=1 if ret > 0.0 else 0,
                ret_bps=ret,
                reason=str(walk.reason),
            )
            done.append((walk.ts_resolved, order, labeled))
        self._pending = still
        done.sort(key=lambda d: (d[0], d[1]))
        return [d[2] for d in done]


@attrs.frozen(kw_only=True, eq=False)
class RetrainResult:
    """What :func:`retrain` found.

    Attributes:
        accepted: the challenger should replace the current model.
        reason: why (or why not), one line.
        kind: the model kind fitted.
        blob: the challenger's ONNX bytes (None when no model was fitted).
        sidecar: its sidecar, the shipped schema (load both with
            :meth:`~engine.models.OnnxModel.from_bytes`); None with ``blob``.
        metrics_candidate: the challenger's metrics on the validation slice
            (:func:`engine.models._training.metrics`; empty when none was fitted).
        metrics_current: the current model's on the same slice (empty without one).
        n_train: training rows used (after the purge).
        n_validation: validation rows.
    """

    accepted: bool
    reason: str
    kind: str
    blob: bytes | None = None
    sidecar: Mapping[str, Any] | None = None
    metrics_candidate: Mapping[str, Any] = attrs.field(factory=dict)
    metrics_current: Mapping[str, Any] = attrs.field(factory=dict)
    n_train: int = 0
    n_validation: int = 0


def retrain(
    X: np.ndarray,
    y: np.ndarray,
    ts: np.ndarray,
    *,
    current: bytes | None,
    spec: FeatureSpec,
    kind: str = "gbdt",
    seed: int = 7,
    validation_fraction: float = 0.3,
    min_samples: int = 100,
    min_auc_gain: float = 0.0,
    ts_resolved: np.ndarray | None = None,
    horizon_ns: int = 0,
    threshold: float = 0.5,
    small: bool = False,
) -> RetrainResult:
    """Fit a calibrated challenger on labelled rows; accept it if it beats ``current``.

    The rows are ordered by decision time ``ts``. The most recent ``validation_fraction`` of
    them validate; the older ones train, less any whose label was still open when the
    validation slice starts (resolved at ``ts_resolved``, or ``ts + horizon_ns`` when not
    given): no training label overlaps the validation window. Sigmoid calibration uses 3
    time-ordered folds, fewer (down to 2) when a class has fewer training rows. The
    challenger is exported with skl2onnx (IR 9) and must match scikit-learn within 1e-5 on
    the validation rows. A fold whose sigmoid slope is not negative (it would invert the
    refit) makes the challenger uncalibrated instead (see
    :func:`~engine.models._training.fit_calibrated`; the reason and the sidecar say so).
    Both it and the current model (its ONNX bytes) are scored there by onnxruntime, and
    ``accepted`` is ``AUC(new) > AUC(current) + min_auc_gain``, strictly: a tie keeps the
    current model (at ``min_auc_gain = 0`` an equal refit is no swap), AUC(current) being
    0.5 with no current model. Deterministic for a fixed ``seed``.

    Args:
        X: ``(n, n_features)`` feature rows (rows with a non-finite value are dropped).
        y: ``(n,)`` labels, 0 or 1.
        ts: ``(n,)`` decision times, ns.
        current: the current model's ONNX bytes, or None.
        spec: the feature spec the rows follow (recorded in the sidecar).
        kind: ``"gbdt"``, ``"rf"`` or ``"mlp"``.
        seed: the estimator's random state.
        validation_fraction: share of the most recent rows that validate, in (0, 1).
        min_samples: fewer usable rows are refused.
        min_auc_gain: how much the challenger's AUC must exceed the current one's.
        ts_resolved: ``(n,)`` when each label was decided, ns (see above).
        horizon_ns: label horizon used when ``ts_resolved`` is None.
        threshold: score threshold for the precision / recall in the metrics.
        small: smaller estimators (tests).

    Returns:
        The verdict; refusals (too few rows, one class, a failed fit or export) are results
        with ``accepted=False`` and the reason, not exceptions.

    Raises:
        ValueError: mismatched shapes, a bad fraction or kind.
        ModelError: onnxruntime cannot run ``current``.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y).astype(np.int64)
    ts = np.asarray(ts, dtype=np.int64)
    n_all = X.shape[0]
    if X.ndim != 2 or X.shape[1] != len(spec.names):
        raise ValueError(f"X must be (n, {len(spec.names)}), got {X.shape}")
    if y.shape != (n_all,) or ts.shape != (n_all,):
        raise ValueError("X, y and ts must have one entry per row")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError("validation_fraction must be in (0, 1)")
    if kind not in ("gbdt", "rf", "mlp"):
        raise ValueError(f"unknown model kind {kind!r}")
    end = (
        ts + int(horizon_ns)
        if ts_resolved is None
        else np.asarray(ts_resolved, dtype=np.int64).reshape(n_all)
    )

    def refuse(reason: str, **more: Any) -> RetrainResult:
        return RetrainResult(accepted=False, reason=reason, kind=kind, **more)

    ok = np.isfinite(X).all(axis=1)
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(ts[idx], kind="stable")]
    n = idx.shape[0]
    if n < min_samples:
        return refuse(f"too few samples: {n} usable rows < min_samples {min_samples}")
    n_val = max(1, math.ceil(validation_fraction * n))
    val = idx[n - n_val :]
    older = idx[: n - n_val]
    val_start = int(ts[val[0]])
    train = older[end[older] < val_start]
    sizes = {"n_train": int(train.shape[0]), "n_validation": int(val.shape[0])}
    for name, part in (("training", train), ("validation", val)):
        classes = np.unique(y[part])
        if classes.shape[0] < 2:
            return refuse(
                f"the {name} slice ({part.shape[0]} rows) holds a single class {classes.tolist()}",
                **sizes,
            )
    # Calibration needs a row of each class per fold: small windows get fewer folds.
    folds = min(CALIBRATION_FOLDS, int(np.bincount(y[train]).min()))
    if folds < 2:
        return refuse(
            f"too few of one class to calibrate: {np.bincount(y[train]).tolist()} "
            "training rows per class (need 2 of each)",
            **sizes,
        )
    try:
        model = fit_calibrated(kind, X[train], y[train], seed, small=small, folds=folds)
    except ValueError as exc:
        return refuse(f"fit failed: {exc}", **sizes)
    name = f"entry_filter_{kind}"
    blob = to_onnx(model, len(spec.names), name)
    try:
        parity = check_parity(model, blob, X[val], name)
    except ExportParityError as exc:
        return refuse(f"export refused: {exc}", **sizes)
    m_new = metrics(y[val], onnx_proba(blob, X[val]), threshold)
    m_cur = None if current is None else metrics(y[val], onnx_proba(current, X[val]), threshold)
    auc_new = m_new["auc"]
    auc_cur = 0.5 if m_cur is None or m_cur["auc"] is None else m_cur["auc"]
    # Strictly better: a tie (an identical refit, or one that ranks the slice the same) is
    # no swap.
    accepted = auc_new is not None and auc_new > auc_cur + min_auc_gain
    who = "no current model (0.5)" if m_cur is None else f"current {auc_cur:.4f}"
    verdict = "accepted" if accepted else "refused"
    reason = f"{verdict}: validation AUC {auc_new:.4f} vs {who} + gain {min_auc_gain:g}"
    fallback = calibration_of(model)
    if fallback is not None:
        reason += f"; calibration {fallback}"
    sidecar = make_sidecar(
        name=name,
        kind=kind,
        blob=blob,
        spec=spec,
        seed=seed,
        training_data={"source": "online", "rows": n, "dropped_not_finite": int(n_all - n)},
        splits={
            "purge": "training labels resolved before the validation slice starts",
            "train": span(ts[train]) | {"n": int(train.shape[0])},
            "test": span(ts[val]) | {"n": int(val.shape[0])},
        },
        metrics={
            "train": metrics(y[train], onnx_proba(blob, X[train]), threshold),
            "test": m_new,
            "current_test": m_cur,
        },
        parity=parity,
        folds=folds,
        calibration_fallback=fallback,
    )
    return RetrainResult(
        accepted=accepted,
        reason=reason,
        kind=kind,
        blob=blob,
        sidecar=sidecar,
        metrics_candidate=m_new,
        metrics_current=m_cur or {},
        **sizes,
    )

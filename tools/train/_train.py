"""Build the data set, fit calibrated models, export them to ONNX with sidecars, evaluate.

Models (scikit-learn, fixed seed): gradient boosting, random forest and an MLP
(standardized inputs), each wrapped in :class:`~sklearn.calibration.CalibratedClassifierCV`
(sigmoid, time-ordered folds). skl2onnx converts the calibrated wrapper whole, so calibration
is inside the ``.onnx`` (no post-processing). Export fails unless onnxruntime reproduces
``predict_proba`` within 1e-5 on the held-out rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from engine.models import FeatureBuilder, FeatureSpec, default_feature_spec, read_events

from ._labels import (
    Labels,
    Quotes,
    StrategyConfig,
    backtest,
    entry_signals,
    holdout,
    quotes_of,
    triple_barrier,
)

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
IR_VERSION = 9  # onnxruntime 1.31 refuses the IR 14 that onnx 1.23 writes by default
PARITY_TOL = 1e-5
MODEL_KINDS = ("gbdt", "rf", "mlp")


class ExportParityError(RuntimeError):
    """onnxruntime's probabilities differ from scikit-learn's beyond the tolerance."""


@attrs.frozen
class Dataset:
    """Feature rows and labels of the strategy's entry signals, in time order."""

    X: np.ndarray  # (n, n_features) float32
    y: np.ndarray  # (n,) int8
    labels: Labels  # aligned with the rows
    signal_index: np.ndarray  # event index of each row's signal
    side: np.ndarray
    quotes: Quotes  # every event, for backtests
    dropped_not_warm: int
    digest: str  # sha256 over the input files


def file_digest(paths: Sequence[Path]) -> str:
    """sha256 over the bytes of the files, in order."""
    h = hashlib.sha256()
    for p in paths:
        with Path(p).open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def build_dataset(
    paths: Sequence[Path],
    cfg: StrategyConfig,
    spec: FeatureSpec | None = None,
    symbol: str | None = None,
) -> Dataset:
    """Events -> strategy signals -> triple-barrier labels and feature rows.

    Feature rows come from one :class:`FeatureBuilder` pass, the row of a signal being taken
    right after the signal's event (the same call inference makes).
    """
    spec = spec or default_feature_spec()
    events = list(read_events(paths, symbol))
    q = quotes_of(events)
    signals = entry_signals(q, cfg)
    labels = triple_barrier(q, signals, cfg)
    builder = FeatureBuilder(spec)
    X = np.full((len(signals), len(spec.names)), np.nan, dtype=np.float32)
    k = 0
    for i, (ts, msg) in enumerate(events):
        if k >= len(signals):
            break
        builder.on_event(ts, msg)
        while k < len(signals) and signals[k][0] == i:
            builder.row(signals[k][1], X[k])
            k += 1
    # Rows are kept only when every feature is warm and the label was decided by a barrier.
    keep = np.isfinite(X).all(axis=1) & (labels.reason != "end")
    idx = np.flatnonzero(keep)
    sel = Labels(*(getattr(labels, f.name)[idx] for f in attrs.fields(Labels)))
    return Dataset(
        X=X[idx],
        y=labels.label[idx],
        labels=sel,
        signal_index=np.array([s[0] for s in signals], dtype=np.int64)[idx],
        side=np.array([s[1] for s in signals], dtype=np.int8)[idx],
        quotes=q,
        dropped_not_warm=int((~np.isfinite(X).all(axis=1)).sum()),
        digest=file_digest(paths),
    )


def make_model(kind: str, seed: int, *, small: bool = False) -> Any:
    """An uncalibrated estimator of ``kind`` (``small``: fewer, shallower trees for tests)."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "gbdt":
        # Not HistGradientBoosting: skl2onnx 1.20 cannot convert scikit-learn 1.9's (it writes
        # booleans into an ints attribute of TreeEnsembleClassifier).
        return GradientBoostingClassifier(
            n_estimators=10 if small else 60,
            max_depth=2,
            learning_rate=0.1,
            subsample=0.8,
            min_samples_leaf=3,
            random_state=seed,
        )
    if kind == "rf":
        return RandomForestClassifier(
            n_estimators=10 if small else 100,
            max_depth=4,
            min_samples_leaf=3,
            random_state=seed,
            n_jobs=1,
        )
    if kind == "mlp":
        return make_pipeline(
            StandardScaler(),
            MLPClassifier(
                hidden_layer_sizes=(16,),
                alpha=1e-2,
                max_iter=200 if small else 1000,
                random_state=seed,
            ),
        )
    raise ValueError(f"unknown model kind {kind!r}; known: {MODEL_KINDS}")


def fit_calibrated(kind: str, X: np.ndarray, y: np.ndarray, seed: int, small: bool = False) -> Any:
    """Fit ``kind`` wrapped in sigmoid calibration over time-ordered folds."""
    import warnings

    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import TimeSeriesSplit

    model = CalibratedClassifierCV(
        make_model(kind, seed, small=small), method="sigmoid", cv=TimeSeriesSplit(n_splits=3)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X.astype(np.float64), y)
    return model


def to_onnx(model: Any, n_features: int, name: str = "entry_filter") -> bytes:
    """Convert with skl2onnx at :data:`TARGET_OPSET`, probabilities as a plain tensor, IR 9.

    The graph is named ``name`` (skl2onnx draws a random one), so that the same seed and
    data give byte-identical files.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        target_opset=TARGET_OPSET,
        options={id(model): {"zipmap": False}},
    )
    onx.ir_version = IR_VERSION
    onx.graph.name = name
    return onx.SerializeToString()


def onnx_proba(blob: bytes, X: np.ndarray) -> np.ndarray:
    """P(label 1) from an ONNX blob on float32 rows."""
    import onnxruntime as ort

    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    out = sess.run(["probabilities"], {"input": np.ascontiguousarray(X, dtype=np.float32)})[0]
    return out[:, 1]


def check_parity(model: Any, blob: bytes, X: np.ndarray) -> float:
    """Max |onnx - sklearn| of P(1) on ``X``.

    Raises:
        ExportParityError: above :data:`PARITY_TOL`.
    """
    ref = model.predict_proba(X.astype(np.float32).astype(np.float64))[:, 1]
    diff = float(np.max(np.abs(onnx_proba(blob, X) - ref))) if len(X) else 0.0
    if not diff <= PARITY_TOL:
        raise ExportParityError(f"onnxruntime differs from scikit-learn by {diff:.3g}")
    return diff


def metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUC (None with one class), precision and recall at ``threshold``, base rate."""
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "n": len(y),
        "positives": int(np.sum(y)),
        "base_rate": float(np.mean(y)) if len(y) else None,
        "auc": float(roc_auc_score(y, p)) if both else None,
        "threshold": threshold,
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "selected": int(pred.sum()),
    }


def _iso(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


def _span(t: np.ndarray) -> dict[str, Any]:
    return {
        "first_ts_ns": int(t.min()),
        "last_ts_ns": int(t.max()),
        "first": _iso(int(t.min())),
        "last": _iso(int(t.max())),
    }


def train_all(
    paths: Sequence[Path],
    out_dir: Path,
    cfg: StrategyConfig,
    *,
    kinds: Sequence[str] = MODEL_KINDS,
    seed: int = 7,
    test_fraction: float = 0.3,
    embargo_ms: int = 5_000,
    threshold: float = 0.3,
    small: bool = False,
) -> dict[str, Any]:
    """Train, export and document each model kind; returns a summary (also the sidecars).

    Raises:
        ExportParityError: an export does not reproduce scikit-learn's probabilities.
        ValueError: too few samples or a single class in the training split.
    """
    spec = default_feature_spec()
    ds = build_dataset(paths, cfg, spec)
    embargo_ns = embargo_ms * 1_000_000
    train, test = holdout(ds.labels.t0, ds.labels.t1, test_fraction, embargo_ns)
    if len(train) < 10 or len(np.unique(ds.y[train])) < 2:
        raise ValueError(f"too few training samples ({len(train)}) or a single class")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"samples": len(ds.y), "train": len(train), "test": len(test)}
    for kind in kinds:
        model = fit_calibrated(kind, ds.X[train], ds.y[train], seed, small=small)
        blob = to_onnx(model, len(spec.names), f"entry_filter_{kind}")
        parity = check_parity(model, blob, ds.X[test] if len(test) else ds.X[train])
        p_test = onnx_proba(blob, ds.X[test]) if len(test) else np.zeros(0)
        p_train = onnx_proba(blob, ds.X[train])
        onnx_path = out_dir / f"entry_filter_{kind}.onnx"
        onnx_path.write_bytes(blob)
        sidecar = {
            "model": f"entry_filter_{kind}",
            "estimator": type(model.estimator).__name__
            if kind != "mlp"
            else "Pipeline(StandardScaler, MLPClassifier)",
            "calibration": "CalibratedClassifierCV(method='sigmoid', cv=TimeSeriesSplit(3)), "
            "inside the ONNX graph",
            "feature_names": list(spec.names),
            "feature_spec_version": spec.version,
            "input_name": "input",
            "input_dtype": spec.dtype,
            "output_name": "probabilities",
            "positive_class_column": 1,
            "opset": TARGET_OPSET,
            "ir_version": IR_VERSION,
            "onnx_sha256": hashlib.sha256(blob).hexdigest(),
            "onnx_bytes": len(blob),
            "training_data": {
                "files": [Path(p).name for p in paths],
                "sha256": ds.digest,
            },
            "strategy": attrs.asdict(cfg),
            "seed": seed,
            "splits": {
                "embargo_ms": embargo_ms,
                "train": _span(ds.labels.t0[train]) | {"n": len(train)},
                "test": (_span(ds.labels.t0[test]) | {"n": len(test)}) if len(test) else None,
            },
            "metrics": {
                "train": metrics(ds.y[train], p_train, threshold),
                "test": metrics(ds.y[test], p_test, threshold),
            },
            "parity_max_abs_diff": parity,
        }
        onnx_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
        summary[kind] = {"path": str(onnx_path), "bytes": len(blob), **sidecar["metrics"]}
    return summary


def evaluate(
    paths: Sequence[Path],
    model_paths: Sequence[Path],
    cfg: StrategyConfig,
    *,
    threshold: float = 0.3,
    test_fraction: float = 0.3,
    embargo_ms: int = 5_000,
) -> dict[str, Any]:
    """Score shipped models on ``paths``: metrics on the held-out tail and a backtest of the
    strategy with and without each model as entry filter, on entries after the split only."""
    from engine.models import OnnxModel

    spec = default_feature_spec()
    ds = build_dataset(paths, cfg, spec)
    embargo_ns = embargo_ms * 1_000_000
    _train, test = holdout(ds.labels.t0, ds.labels.t1, test_fraction, embargo_ns)
    start_ns = int(ds.labels.t0[test].min()) if len(test) else 0
    out: dict[str, Any] = {
        "data_sha256": ds.digest,
        "samples": len(ds.y),
        "test": len(test),
        "test_start": _iso(start_ns) if start_ns else None,
        "strategy_unfiltered": backtest(ds.quotes, cfg, None, start_ns),
        "models": {},
    }
    for mp in model_paths:
        model = OnnxModel.load(mp, spec)
        p_all = model.predict_batch(ds.X)
        prob = dict(zip(ds.signal_index.tolist(), p_all.tolist(), strict=True))

        def take(i: int, side: int, prob: dict[int, float] = prob) -> bool:
            # A signal the model cannot score (indicators not warm) passes unfiltered.
            return prob.get(i, 1.0) >= threshold

        out["models"][Path(mp).stem] = {
            "test": metrics(ds.y[test], p_all[test], threshold),
            "strategy_filtered": backtest(ds.quotes, cfg, take, start_ns),
        }
    return out

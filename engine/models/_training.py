"""Fitting, calibrating and exporting the entry-filter models: one definition for the engine's
online retraining (:func:`~engine.models.retrain`) and the offline tool (``tools.train``).

Models (scikit-learn, fixed seed): gradient boosting, random forest and an MLP (standardized
inputs), each wrapped in :class:`~sklearn.calibration.CalibratedClassifierCV` (sigmoid,
time-ordered folds). skl2onnx converts the calibrated wrapper whole, so calibration is inside
the ``.onnx`` (no post-processing). A sigmoid fitted on a few dozen noisy rows can come out
with a non-negative slope, which turns the estimator's ranking upside down (or flat): then
the estimator is refitted on all rows *uncalibrated* and the fallback is recorded
(:func:`calibration_of`, the sidecar's ``calibration``). Not isotonic: on folds of a dozen
rows its steps collapse most scores into ties, which ruins the ranking the online retrain's
AUC comparison reads. An export is refused unless onnxruntime reproduces
``predict_proba`` within :data:`PARITY_TOL`. scikit-learn, skl2onnx and onnxruntime are
imported on first use.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._features import FeatureSpec
from ._onnx import ModelError

TARGET_OPSET: Mapping[str, int] = {"": 17, "ai.onnx.ml": 3}
#: onnxruntime 1.31 refuses the IR 14 that onnx 1.23 writes by default: set it explicitly.
IR_VERSION = 9
PARITY_TOL = 1e-5
MODEL_KINDS = ("gbdt", "rf", "mlp")
CALIBRATION_FOLDS = 3


def calibration_note(folds: int = CALIBRATION_FOLDS, fallback: str | None = None) -> str:
    """How sidecars describe the calibration (``fallback``: why there is none, see
    :func:`calibration_of`)."""
    if fallback is not None:
        return f"none: {fallback}"
    return (
        f"CalibratedClassifierCV(method='sigmoid', cv=TimeSeriesSplit({folds})), "
        "inside the ONNX graph"
    )


#: Attribute :func:`fit_calibrated` sets on an estimator it returned uncalibrated: why.
_FALLBACK_ATTR = "trireme_calibration_fallback_"


def sigmoid_slopes(model: Any) -> list[float]:
    """The slope ``a`` of each fold's sigmoid (P = 1 / (1 + exp(a * f + b))): negative keeps
    the estimator's order; empty for a model that is not sigmoid-calibrated."""
    out = []
    for cc in getattr(model, "calibrated_classifiers_", ()):
        for cal in cc.calibrators:
            if hasattr(cal, "a_"):
                out.append(float(cal.a_))
    return out


def calibration_of(model: Any) -> str | None:
    """Why :func:`fit_calibrated` returned ``model`` uncalibrated (None: it is calibrated)."""
    return getattr(model, _FALLBACK_ATTR, None)


class ExportParityError(ModelError):
    """onnxruntime's probabilities differ from scikit-learn's beyond :data:`PARITY_TOL`.

    Attributes:
        diff: the largest absolute difference of P(1).
    """

    def __init__(self, name: str, diff: float) -> None:
        self.diff = diff
        super().__init__(
            name, "parity", f"onnxruntime differs from scikit-learn by {diff:.3g} (> {PARITY_TOL})"
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


def estimator_name(kind: str) -> str:
    """How sidecars name the estimator of ``kind``."""
    return {
        "gbdt": "GradientBoostingClassifier",
        "rf": "RandomForestClassifier",
        "mlp": "Pipeline(StandardScaler, MLPClassifier)",
    }[kind]


def fit_calibrated(
    kind: str,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    small: bool = False,
    folds: int = CALIBRATION_FOLDS,
) -> Any:
    """Fit ``kind`` wrapped in sigmoid calibration over ``folds`` time-ordered folds.

    scikit-learn needs at least ``folds`` rows of each class. When a fold's sigmoid has a
    slope that is not negative (it would invert or flatten the estimator's scores: seen on a
    few dozen noisy rows), ``kind`` is refitted on all the rows without calibration and
    returned with the reason (:func:`calibration_of`; the sidecar says ``none: ...``).

    Raises:
        ValueError: from scikit-learn, e.g. a calibration fold with a single class.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import TimeSeriesSplit

    model = CalibratedClassifierCV(
        make_model(kind, seed, small=small), method="sigmoid", cv=TimeSeriesSplit(n_splits=folds)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Rows are float32 in the engine: fit on exactly the values ONNX will see.
        model.fit(np.asarray(X, dtype=np.float32).astype(np.float64), y)
        slopes = sigmoid_slopes(model)
        bad = [i for i, a in enumerate(slopes) if not a < 0.0]
        if not bad:
            return model
        plain = make_model(kind, seed, small=small)
        plain.fit(np.asarray(X, dtype=np.float32).astype(np.float64), y)
    why = ", ".join(f"fold {i + 1} slope {slopes[i]:+.3g}" for i in bad)
    setattr(
        plain,
        _FALLBACK_ATTR,
        f"sigmoid calibration refused ({why} of {len(slopes)}: a non-negative slope inverts "
        f"or flattens the scores); {estimator_name(kind)} uncalibrated",
    )
    return plain


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
        target_opset=dict(TARGET_OPSET),
        options={id(model): {"zipmap": False}},
    )
    onx.ir_version = IR_VERSION
    onx.graph.name = name
    return onx.SerializeToString()


def onnx_proba(blob: bytes, X: np.ndarray) -> np.ndarray:
    """P(label 1) from an ONNX blob on float32 rows.

    Raises:
        ModelError: onnxruntime cannot load or run the blob.
    """
    import onnxruntime as ort

    x = np.ascontiguousarray(X, dtype=np.float32)
    if x.shape[0] == 0:
        return np.zeros(0)
    try:
        sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        out = sess.run(["probabilities"], {"input": x})[0]
    except Exception as exc:  # onnxruntime raises its own (non-exported) types
        raise ModelError("<onnx bytes>", "", f"onnxruntime cannot run it ({exc})") from exc
    return out[:, 1].astype(np.float64)


def check_parity(model: Any, blob: bytes, X: np.ndarray, name: str = "entry_filter") -> float:
    """Max |onnx - sklearn| of P(1) on ``X``.

    Raises:
        ExportParityError: above :data:`PARITY_TOL`.
    """
    ref = model.predict_proba(np.asarray(X, dtype=np.float32).astype(np.float64))[:, 1]
    diff = float(np.max(np.abs(onnx_proba(blob, X) - ref))) if len(X) else 0.0
    if not diff <= PARITY_TOL:
        raise ExportParityError(name, diff)
    return diff


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC, None with fewer than two classes."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUC (None with one class), precision and recall at ``threshold``, base rate."""
    from sklearn.metrics import precision_score, recall_score

    pred = (p >= threshold).astype(int)
    return {
        "n": len(y),
        "positives": int(np.sum(y)),
        "base_rate": float(np.mean(y)) if len(y) else None,
        "auc": auc(y, p),
        "threshold": threshold,
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "selected": int(pred.sum()),
    }


def iso(ns: int) -> str:
    """ISO-8601 UTC of epoch nanoseconds, to the millisecond."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


def span(t: np.ndarray) -> dict[str, Any]:
    """First and last of epoch-ns times, as ns and ISO strings."""
    return {
        "first_ts_ns": int(t.min()),
        "last_ts_ns": int(t.max()),
        "first": iso(int(t.min())),
        "last": iso(int(t.max())),
    }


def make_sidecar(
    *,
    name: str,
    kind: str,
    blob: bytes,
    spec: FeatureSpec,
    seed: int,
    training_data: Mapping[str, Any],
    splits: Mapping[str, Any],
    metrics: Mapping[str, Any],
    parity: float,
    strategy: Mapping[str, Any] | None = None,
    folds: int = CALIBRATION_FOLDS,
    calibration_fallback: str | None = None,
) -> dict[str, Any]:
    """The JSON sidecar of an exported model (what :meth:`OnnxModel.load` checks);
    ``calibration_fallback``: :func:`calibration_of` the fitted model."""
    sidecar: dict[str, Any] = {
        "model": name,
        "estimator": estimator_name(kind),
        "calibration": calibration_note(folds, calibration_fallback),
        "feature_names": list(spec.names),
        "feature_spec_version": spec.version,
        "input_name": "input",
        "input_dtype": spec.dtype,
        "output_name": "probabilities",
        "positive_class_column": 1,
        "opset": dict(TARGET_OPSET),
        "ir_version": IR_VERSION,
        "onnx_sha256": hashlib.sha256(blob).hexdigest(),
        "onnx_bytes": len(blob),
        "training_data": dict(training_data),
    }
    if strategy is not None:
        sidecar["strategy"] = dict(strategy)
    sidecar |= {
        "seed": seed,
        "splits": dict(splits),
        "metrics": dict(metrics),
        "parity_max_abs_diff": parity,
    }
    return sidecar

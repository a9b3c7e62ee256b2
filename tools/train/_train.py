"""Build the data set, fit calibrated models, export them to ONNX with sidecars.

The data set is what the engine sees: :func:`engine.models.ticks_of` builds the replay feed's
:class:`~engine.messages.Ticks` columns from the captures, the strategy's ``scan`` finds the
entry signals on them (:func:`~tools.train._labels.entry_signals`) and
:func:`engine.models.features_at` computes each signal's row with
:meth:`~engine.models.FeatureBuilder.on_ticks`, as the symbol actor does. Fitting, calibration,
export, the parity check and the metrics are :mod:`engine.models._training`'s, shared with the
engine's online :func:`~engine.models.retrain`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from engine._progress import Meter
from engine.messages import Ticks
from engine.models import FeatureSpec, default_feature_spec, features_at, ticks_of
from engine.models._training import (
    IR_VERSION,
    MODEL_KINDS,
    TARGET_OPSET,
    ExportParityError,
    calibration_of,
    check_parity,
    fit_calibrated,
    make_model,
    make_sidecar,
    metrics,
    onnx_proba,
    span,
    to_onnx,
)

from ._labels import Labels, StrategyConfig, entry_signals, holdout, triple_barrier

__all__ = [
    "IR_VERSION",
    "MODEL_KINDS",
    "TARGET_OPSET",
    "Dataset",
    "ExportParityError",
    "build_dataset",
    "check_parity",
    "file_digest",
    "fit_calibrated",
    "make_model",
    "metrics",
    "onnx_proba",
    "to_onnx",
    "train_all",
]


@attrs.frozen
class Dataset:
    """Feature rows and labels of the strategy's entry signals, in time order."""

    X: np.ndarray  # (n, n_features) float32
    y: np.ndarray  # (n,) int8
    labels: Labels  # aligned with the rows
    signal_index: np.ndarray  # tick row of each row's signal
    side: np.ndarray
    ticks: Ticks  # every event, for backtests
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
    """Captures -> Ticks columns -> strategy signals -> triple-barrier labels and feature rows.

    A signal's row is taken right after the signal's tick (the call the symbol actor makes).
    Rows are kept only when every feature is warm and a barrier decided the label.
    """
    spec = spec or default_feature_spec()
    ticks = ticks_of(paths, symbol)
    signals = entry_signals(ticks, cfg)
    labels = triple_barrier(ticks, signals, cfg)
    X = features_at(ticks, signals, spec)
    warm = np.isfinite(X).all(axis=1)
    idx = np.flatnonzero(warm & (labels.reason != "end"))
    sel = Labels(*(getattr(labels, f.name)[idx] for f in attrs.fields(Labels)))
    return Dataset(
        X=X[idx],
        y=labels.label[idx],
        labels=sel,
        signal_index=np.array([s[0] for s in signals], dtype=np.int64)[idx],
        side=np.array([s[1] for s in signals], dtype=np.int8)[idx],
        ticks=ticks,
        dropped_not_warm=int((~warm).sum()),
        digest=file_digest(paths),
    )


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
    # Progress on stderr (a bar on a terminal, lines otherwise): the data, then each fit.
    with Meter("training", 1 + len(kinds), "steps") as meter:
        ds = build_dataset(paths, cfg, spec)
        meter.update(1)
        embargo_ns = embargo_ms * 1_000_000
        train, test = holdout(ds.labels.t0, ds.labels.t1, test_fraction, embargo_ns)
        if len(train) < 10 or len(np.unique(ds.y[train])) < 2:
            raise ValueError(f"too few training samples ({len(train)}) or a single class")
        out_dir.mkdir(parents=True, exist_ok=True)
        summary: dict[str, Any] = {"samples": len(ds.y), "train": len(train), "test": len(test)}
        for i, kind in enumerate(kinds):
            model = fit_calibrated(kind, ds.X[train], ds.y[train], seed, small=small)
            blob = to_onnx(model, len(spec.names), f"entry_filter_{kind}")
            parity = check_parity(model, blob, ds.X[test] if len(test) else ds.X[train])
            p_test = onnx_proba(blob, ds.X[test]) if len(test) else np.zeros(0)
            p_train = onnx_proba(blob, ds.X[train])
            onnx_path = out_dir / f"entry_filter_{kind}.onnx"
            onnx_path.write_bytes(blob)
            sidecar = make_sidecar(
                name=f"entry_filter_{kind}",
                kind=kind,
                blob=blob,
                spec=spec,
                seed=seed,
                training_data={"files": [Path(p).name for p in paths], "sha256": ds.digest},
                strategy=attrs.asdict(cfg),
                splits={
                    "embargo_ms": embargo_ms,
                    "train": span(ds.labels.t0[train]) | {"n": len(train)},
                    "test": (span(ds.labels.t0[test]) | {"n": len(test)}) if len(test) else None,
                },
                metrics={
                    "train": metrics(ds.y[train], p_train, threshold),
                    "test": metrics(ds.y[test], p_test, threshold),
                },
                parity=parity,
                calibration_fallback=calibration_of(model),
            )
            onnx_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
            summary[kind] = {"path": str(onnx_path), "bytes": len(blob), **sidecar["metrics"]}
            meter.update(2 + i)
        return summary

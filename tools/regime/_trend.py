"""A multi-timeframe trend model on 1-minute klines: P(next hour's return > 0).

Features per bar ``t`` (all causal): the log returns over the last 5, 15, 60 and 240 bars,
each divided by ``level_t * sqrt(h)`` (the slow per-bar volatility level of
:class:`~engine.models._hmm.BarFeatures`, so a feature is a move in units of its expected
size), and ``log_rvol_ratio``. Label: the log return over the next 60 bars is positive.

Walk-forward on one calendar (:func:`~tools.regime._data.split_times`): fitted on the first
``train_days`` of every symbol but the held-out ones (every 5th bar, labels ending before the
split), judged on the next ``test_days`` by ROC AUC on every bar (overlapping labels) and on
every 60th bar (non-overlapping, with a bootstrap 95 % interval), seen and held-out symbols
apart. The logistic regression is
the exported model (ONNX, probabilities as a plain tensor, with a JSON sidecar); a GBDT is
fitted the same way for comparison only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from engine.models._hmm import FEATURE_NAMES, BarFeatureSpec
from engine.models._training import IR_VERSION, TARGET_OPSET, auc, check_parity, to_onnx

from ._data import HORIZON, SymbolBars, iso, load, split_times

HORIZONS = (5, 15, 60, 240)
TREND_FEATURES = (*(f"ret_{h}m_z" for h in HORIZONS), "log_rvol_ratio")
_STRIDE = 5
_BOOT = 1000
_NS_PER_MIN = 60 * 10**9


def trend_features(b: SymbolBars) -> np.ndarray:
    """``(T, 5)`` features of one symbol (NaN where a horizon or the level is not there)."""
    logc = np.log(b.close)
    n = len(logc)
    out = np.full((n, len(TREND_FEATURES)), np.nan)
    for j, h in enumerate(HORIZONS):
        out[h:, j] = (logc[h:] - logc[:-h]) / (b.level[h:] * np.sqrt(h))
    out[:, -1] = b.X[:, FEATURE_NAMES.index("log_rvol_ratio")]
    return out


def _rows(bars: list[SymbolBars], lo: int, hi: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with ``lo <= ts`` and the label's hour ending by ``hi``, every ``stride``-th."""
    Xs, ys = [], []
    for b in bars:
        F = trend_features(b)
        ok = (
            (b.ts >= lo)
            & (b.ts + HORIZON * _NS_PER_MIN <= hi)
            & np.all(np.isfinite(F), axis=1)
            & np.isfinite(b.next_ret)
        )
        idx = np.flatnonzero(ok)[::stride]
        Xs.append(F[idx])
        ys.append((b.next_ret[idx] > 0).astype(np.int64))
    return np.concatenate(Xs), np.concatenate(ys)


def _scores(model: Any, bars: list[SymbolBars], split: int, end: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, stride in (("every_bar", 1), ("hourly", HORIZON)):
        X, y = _rows(bars, split, end, stride)
        p = model.predict_proba(X)[:, 1]
        out[name] = {"rows": len(y), "base_rate": float(y.mean()), "auc": auc(y, p)}
    # Hourly rows do not overlap: a bootstrap over them gives an honest interval.
    X, y = _rows(bars, split, end, HORIZON)
    p = model.predict_proba(X)[:, 1]
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(_BOOT):
        i = rng.integers(0, len(y), len(y))
        a = auc(y[i], p[i])
        if a is not None:
            boot.append(a)
    lo, hi = np.percentile(boot, [2.5, 97.5]) if boot else (float("nan"), float("nan"))
    out["hourly"]["auc_ci95"] = [float(lo), float(hi)]
    return out


def fit_trend(
    data: Path,
    out_dir: Path,
    *,
    train_days: float,
    test_days: float,
    holdout: list[str],
    seed: int,
) -> dict[str, Any]:
    """Fit, judge and export; returns the summary (also in the sidecar)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    spec = BarFeatureSpec()
    bars = load(data, spec)
    start, split, end = split_times(bars, train_days, test_days)
    seen = [b for b in bars if b.symbol not in holdout]
    held = [b for b in bars if b.symbol in holdout]
    X, y = _rows(seen, start, split, _STRIDE)
    models = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)),
        "gbdt": GradientBoostingClassifier(
            n_estimators=100, max_depth=3, learning_rate=0.05, subsample=0.8, random_state=seed
        ),
    }
    metrics: dict[str, Any] = {}
    for name, model in models.items():
        model.fit(X, y)
        metrics[name] = {"seen_symbols": _scores(model, seen, split, end)}
        if held:
            metrics[name]["held_out_symbols"] = _scores(model, held, split, end)
    model = models["logistic"]
    blob = to_onnx(model, len(TREND_FEATURES), "trend_mtf")
    X_test, _ = _rows(bars, split, end, HORIZON)
    parity = check_parity(model, blob, X_test, "trend_mtf")
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "trend_mtf.onnx"
    onnx_path.write_bytes(blob)
    sidecar = {
        "model": "trend_mtf",
        "estimator": "StandardScaler + LogisticRegression(C=1.0)",
        "target": f"log return over the next {HORIZON} one-minute bars > 0",
        "feature_names": list(TREND_FEATURES),
        "features": {
            "bars": "1-minute closes",
            "ret_Hm_z": "log(close_t / close_{t-H}) / (level_t * sqrt(H))",
            "level": "slow EMA of 30-bar realized vol (engine.models._hmm.BarFeatures)",
            "bar_features": spec.as_dict(),
        },
        "input_name": "input",
        "input_dtype": "float32",
        "output_name": "probabilities",
        "positive_class_column": 1,
        "opset": dict(TARGET_OPSET),
        "ir_version": IR_VERSION,
        "onnx_sha256": hashlib.sha256(blob).hexdigest(),
        "onnx_bytes": len(blob),
        "seed": seed,
        "training_data": {
            "source": "freqtrade_1m_usdm (Binance USD-M 1-minute klines)",
            "symbols": [b.symbol for b in seen],
            "held_out_symbols": sorted(holdout),
            "train": [iso(start), iso(split)],
            "test": [iso(split), iso(end)],
            "train_rows": len(y),
            "train_stride_bars": _STRIDE,
            "train_base_rate": float(y.mean()),
        },
        "metrics": metrics,
        "parity_max_abs_diff": parity,
    }
    onnx_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return {"path": str(onnx_path), **sidecar}


def markdown(result: dict[str, Any]) -> str:
    """The README table of a :func:`fit_trend` result."""
    lines = [
        "| model | symbols | AUC, every bar (rows) | AUC, hourly (rows) | hourly AUC 95% CI "
        "| base rate |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, groups in result["metrics"].items():
        for group, s in groups.items():
            e, h = s["every_bar"], s["hourly"]
            lines.append(
                f"| {name} | {group} | {e['auc']:.3f} ({e['rows']}) | "
                f"{h['auc']:.3f} ({h['rows']}) | {h['auc_ci95'][0]:.3f} to "
                f"{h['auc_ci95'][1]:.3f} | {e['base_rate']:.3f} |"
            )
    return "\n".join(lines) + "\n"

"""Single-row scoring latency of the entry-filter models: ``python -m tools.bench models``.

For each model kind, in one process, the median over ``--repeat`` calls of: onnxruntime
``session.run``, onnxruntime ``run_with_iobinding`` on pre-bound buffers (:class:`OnnxModel`)
and scikit-learn ``predict_proba`` of the same (calibrated) model. The models are fitted here on
random rows (latency does not depend on what they learned), with the shipped sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _median_us(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(min(200, repeat)):
        fn()
    times = np.empty(repeat)
    clock = time.perf_counter_ns
    for i in range(repeat):
        t = clock()
        fn()
        times[i] = clock() - t
    return float(np.median(times) / 1e3)


def run(argv: list[str]) -> dict[str, Any]:
    """Benchmark each model kind; returns medians in microseconds."""
    from engine.models import OnnxModel, default_feature_spec
    from tools.train._train import MODEL_KINDS, TARGET_OPSET, fit_calibrated, to_onnx

    p = argparse.ArgumentParser(prog="python -m tools.bench models")
    p.add_argument("--repeat", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    spec = default_feature_spec()
    n = len(spec.names)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, n)).astype(np.float32)
    y = (X[:, 1] + rng.normal(size=400) > 0).astype(int)
    row = X[0].copy()
    row64 = row.astype(np.float64).reshape(1, -1)
    out: dict[str, Any] = {"repeat": a.repeat, "threads": a.threads, "opset": TARGET_OPSET}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in MODEL_KINDS:
            model = fit_calibrated(kind, X, y, seed=0)
            blob = to_onnx(model, n, kind)
            path = Path(tmp) / f"{kind}.onnx"
            path.write_bytes(blob)
            path.with_suffix(".json").write_text(
                json.dumps(
                    {
                        "feature_names": list(spec.names),
                        "input_dtype": spec.dtype,
                        "feature_spec_version": spec.version,
                        "onnx_sha256": hashlib.sha256(blob).hexdigest(),
                    }
                )
            )
            m = OnnxModel.load(path, spec, threads=a.threads)
            out[kind] = {
                "onnx_bytes": len(blob),
                "ort_run_us": _median_us(lambda m=m: m.predict_one_run(row), a.repeat),
                "ort_iobinding_us": _median_us(lambda m=m: m.predict_one(row), a.repeat),
                "sklearn_predict_proba_us": _median_us(
                    lambda model=model: model.predict_proba(row64), max(50, a.repeat // 20)
                ),
            }
    return out

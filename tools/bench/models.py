"""Entry-filter costs: ``python -m tools.bench models``.

Scoring: for each model kind, in one process, the median over ``--repeat`` calls of:
onnxruntime ``session.run``, onnxruntime ``run_with_iobinding`` on pre-bound buffers
(:class:`OnnxModel`) and scikit-learn ``predict_proba`` of the same (calibrated) model, and
a batch of ``--batch`` rows through ``session.run`` (µs per call and per row). The
models are fitted here on random rows (latency does not depend on what they learned), with the
shipped sizes.

Deep models (``deep``, when PyTorch is installed: the ``dl`` extra): each kind of
:mod:`tools.train._deep` built with ``--window`` rows (multimodal: 5 book levels), exported to
ONNX and served by :class:`~engine.models.SequenceModel`: one window through iobinding
(what the model actor does for one request, ring copy included), one through
``session.run``, and a batch of ``--batch`` windows; PyTorch's own single-window forward for
comparison. Untrained weights: latency does not depend on them.

Features (``features``): ns per event of keeping a :class:`FeatureBuilder` current over the
bundled sample, median over ``--passes`` passes: :meth:`FeatureBuilder.on_ticks` over the
replay feed's columns in ranges of ``--chunks`` rows (the symbol actor calls it once per batch
or per stretch between signals), against :meth:`FeatureBuilder.on_event` per decoded message.
Also the cost of one :meth:`FeatureBuilder.row` and of :func:`retrain` on ``--retrain-rows``.
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


_SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "btcusdt_20240808_180s.gz"


def _features(passes: int, chunks: list[int], retrain_rows: list[int]) -> dict[str, Any]:
    from engine.feeds import CaptureStats, merge_captures
    from engine.models import FeatureBuilder, default_feature_spec, retrain, ticks_of

    spec = default_feature_spec()
    ticks = ticks_of([_SAMPLE])
    events = list(merge_captures([_SAMPLE], CaptureStats()))
    n = len(ticks)
    clock = time.perf_counter_ns

    def per_tick(feed: Callable[[FeatureBuilder], None]) -> float:
        feed(FeatureBuilder(spec))  # compile / warm up
        runs = []
        for _ in range(passes):
            b = FeatureBuilder(spec)
            t = clock()
            feed(b)
            runs.append((clock() - t) / n)
        return float(np.median(runs))

    def by_events(b: FeatureBuilder) -> None:
        on_event = b.on_event
        for ts, msg in events:
            on_event(ts, msg)

    def by_ticks(size: int) -> Callable[[FeatureBuilder], None]:
        def feed(b: FeatureBuilder) -> None:
            for lo in range(0, n, size):
                b.on_ticks(ticks, lo, lo + size)

        return feed

    b = FeatureBuilder(spec)
    b.on_ticks(ticks)
    out_row = np.empty(len(spec.names), dtype=np.float32)
    res: dict[str, Any] = {
        "events": n,
        "on_event_ns_per_tick": per_tick(by_events),
        "on_ticks_ns_per_tick": {str(c): per_tick(by_ticks(c)) for c in chunks},
        "row_us": _median_us(lambda: b.row(1.0, out_row), 2000),
        "regime_us": _median_us(b.regime, 2000),
        "retrain_s": {},
    }
    rng = np.random.default_rng(0)
    for rows in [0, *retrain_rows]:  # 0: a first, untimed call imports scikit-learn & co.
        warm_up = rows == 0
        rows = rows or 200
        X = rng.normal(size=(rows, len(spec.names))).astype(np.float32)
        y = (X[:, 1] + rng.normal(size=rows) > 0.5).astype(np.int8)
        ts = np.arange(rows, dtype=np.int64) * 1_000_000_000
        t = clock()
        r = retrain(X, y, ts, current=None, spec=spec, min_samples=50)
        if warm_up:
            continue
        res["retrain_s"][str(rows)] = {"gbdt": (clock() - t) / 1e9, "accepted": r.accepted}
    return res


def run(argv: list[str]) -> dict[str, Any]:
    """Benchmark each model kind and the feature path; returns medians."""
    from engine.models import OnnxModel, default_feature_spec
    from engine.models._training import MODEL_KINDS, TARGET_OPSET, fit_calibrated, to_onnx

    p = argparse.ArgumentParser(prog="python -m tools.bench models")
    p.add_argument("--repeat", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--chunks", type=int, nargs="+", default=[1, 16, 256, 1 << 30])
    p.add_argument("--retrain-rows", type=int, nargs="*", default=[200, 2000])
    p.add_argument("--only", choices=["scoring", "features", "deep"], default=None)
    p.add_argument("--batch", type=int, default=32, help="rows (windows) per batched call")
    p.add_argument("--window", type=int, default=16, help="deep models: rows per window")
    a = p.parse_args(argv)
    if a.only == "features":
        return {"features": _features(a.passes, a.chunks, a.retrain_rows)}
    if a.only == "deep":
        return {"deep": _deep(a.repeat, a.threads, a.batch, a.window)}
    spec = default_feature_spec()
    n = len(spec.names)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, n)).astype(np.float32)
    y = (X[:, 1] + rng.normal(size=400) > 0).astype(int)
    row = X[0].copy()
    row64 = row.astype(np.float64).reshape(1, -1)
    batch = X[: a.batch].copy()
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
                "batch_rows": a.batch,
                "ort_batch_us": _median_us(
                    lambda m=m: m.predict_batch(batch), max(50, a.repeat // 10)
                ),
            }
            out[kind]["ort_batch_us_per_row"] = out[kind]["ort_batch_us"] / a.batch
    out["deep"] = _deep(a.repeat, a.threads, a.batch, a.window)
    if a.only is None:
        out["features"] = _features(a.passes, a.chunks, a.retrain_rows)
    return out


def _deep(repeat: int, threads: int, batch: int, window: int) -> dict[str, Any]:
    """Latency of each deep model kind (skipped without PyTorch)."""
    try:
        import torch
    except ImportError:
        return {"skipped": "PyTorch is not installed (pip install -e '.[dl]')"}
    from engine.models import SequenceModel, SequenceRing, default_feature_spec
    from tools.train import _deep as deep

    torch.set_num_threads(threads)
    spec = default_feature_spec()
    n = len(spec.names)
    levels = 5
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(batch, window, n)).astype(np.float32)
    books = np.abs(rng.normal(size=(batch, levels, 4))).astype(np.float32) + 1.0
    ring = SequenceRing(window, n)
    for r in windows[0]:
        ring.push(r)
    buf = np.empty((window, n), dtype=np.float32)
    one_w, one_b = windows[:1], books[:1]
    out: dict[str, Any] = {"window": window, "batch": batch, "book_levels": levels}
    for kind in deep.DEEP_KINDS:
        model = deep.build(kind, n, window, levels, np.zeros(n, "f4"), np.ones(n, "f4")).eval()
        blob = deep.to_onnx(model, kind, window, n, levels)
        side = deep.sidecar(
            kind=kind, blob=blob, window=window, levels=levels, seed=0, rows=0, positives=0,
            metrics={}, parity={},
        )  # fmt: skip
        m = SequenceModel.from_bytes(blob, side, spec, threads=threads)

        def served(m=m) -> float:
            ring.copy_into(buf)
            return m.predict_window(buf, books[0])

        def torch_one(model=model, kind=kind) -> object:
            with torch.no_grad():
                x = torch.from_numpy(one_w)
                return model(x, torch.from_numpy(one_b)) if kind == "multimodal" else model(x)

        out[kind] = {
            "onnx_bytes": len(blob),
            "ort_iobinding_window_us": _median_us(served, repeat),
            "ort_run_window_us": _median_us(lambda m=m: m.predict_windows(one_w, one_b), repeat),
            "ort_batch_us": _median_us(
                lambda m=m: m.predict_windows(windows, books), max(50, repeat // 10)
            ),
            "torch_window_us": _median_us(torch_one, max(50, repeat // 10)),
        }
        out[kind]["ort_batch_us_per_window"] = out[kind]["ort_batch_us"] / batch
    return out

"""Sequence models: the per-symbol ring, windowed ONNX scoring, the model actor, a replay.

These need no PyTorch: the sequence model is an ONNX graph built here with ``onnx.helper``
(``p = sigmoid(flatten(window) @ W)``, so every row's position in the window matters). The
PyTorch models, their export and parity are in ``tests/test_deep_torch.py`` (``dl`` extra).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import structlog
import trio

from engine.actors._model import ModelActor, load_ensemble
from engine.models import (
    Ensemble,
    ModelError,
    OnnxModel,
    SequenceModel,
    SequenceRing,
    default_feature_spec,
    load_model,
)
from engine.testing import replay_config

ROOT = Path(__file__).resolve().parents[1]
GBDT = ROOT / "models/onnx/entry_filter_gbdt.onnx"
SPEC = default_feature_spec()
F = len(SPEC.names)


def seq_graph(window: int, seed: int = 0) -> tuple[bytes, np.ndarray]:
    """ONNX bytes of ``p = sigmoid(flatten(x) @ W)``, ``probabilities = [1 - p, p]``; W."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(scale=0.05, size=(window * F, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p"]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "seq",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", window, F])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.ones((1, 1), "f4"), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString(), w


def sidecar(blob: bytes, window: int, extra: dict | None = None) -> dict:
    return {
        "model": "seq_test",
        "input": "sequence",
        "window": window,
        "book_levels": 0,
        "feature_names": list(SPEC.names),
        "feature_spec_version": SPEC.version,
        "input_dtype": SPEC.dtype,
        "onnx_sha256": hashlib.sha256(blob).hexdigest(),
        **(extra or {}),
    }


def write_model(
    tmp_path: Path, window: int, seed: int = 0, extra: dict | None = None
) -> tuple[Path, np.ndarray]:
    blob, w = seq_graph(window, seed)
    path = tmp_path / f"seq_{window}_{seed}.onnx"
    path.write_bytes(blob)
    path.with_suffix(".json").write_text(json.dumps(sidecar(blob, window, extra)))
    return path, w


def expected(window_rows: np.ndarray, w: np.ndarray) -> float:
    z = float(window_rows.reshape(-1).astype(np.float64) @ w[:, 0].astype(np.float64))
    return 1.0 / (1.0 + np.exp(-z))


# -- the ring ---------------------------------------------------------------------------------


def test_ring_keeps_the_last_rows_in_order_across_wraps():
    ring = SequenceRing(4, 3)
    assert np.array_equal(ring.view(), np.zeros((4, 3)))
    for i in range(11):
        ring.push(np.full(3, i, dtype=np.float32))
        want = [max(0, k) if k >= 0 else 0 for k in range(i - 3, i + 1)]
        got = ring.view()[:, 0].tolist()
        # rows not seen yet are zeros (the padding training uses too)
        assert got == [float(k) if k >= 0 else 0.0 for k in range(i - 3, i + 1)], (i, want)
    out = np.empty((2, 3), dtype=np.float32)
    ring.copy_into(out)
    assert out[:, 0].tolist() == [9.0, 10.0]
    assert ring.count == 11


def test_ring_push_and_copy_allocate_nothing():
    ring = SequenceRing(32, F)
    row = np.arange(F, dtype=np.float32)
    out = np.empty((32, F), dtype=np.float32)
    for _ in range(100):  # warm up
        ring.push(row)
        ring.copy_into(out)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(10_000):
            ring.push(row)
            ring.copy_into(out)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A (32, 26) float32 window is 3.3 KB: one copied per call would lift the peak above it
    # (the views numpy makes are ~100-byte objects, freed at once).
    assert held - before < 1024 and peak - before < 2048, (held - before, peak - before)


def test_ring_rejects_empty_shapes():
    with pytest.raises(ValueError):
        SequenceRing(0, 3)


# -- loading and scoring ----------------------------------------------------------------------


def test_load_model_dispatches_on_the_sidecar_and_scores_windows(tmp_path):
    path, w = write_model(tmp_path, 8)
    model = load_model(path, SPEC)
    assert isinstance(model, SequenceModel) and model.window == 8 and model.book_levels == 0
    assert isinstance(load_model(GBDT, SPEC), OnnxModel)
    rng = np.random.default_rng(1)
    windows = rng.normal(size=(5, 10, F)).astype(np.float32)  # longer than 8: last 8 used
    batch = model.predict_windows(windows)
    for i in range(5):
        want = expected(windows[i, -8:], w)
        assert model.predict_window(windows[i]) == pytest.approx(want, abs=1e-6)
        assert batch[i] == pytest.approx(want, abs=1e-6)
    with pytest.raises(ModelError, match="windows, not rows"):
        model.predict_one(windows[0, -1])


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"window": 0}, "window"),
        ({"window": "16"}, "window"),
        ({"book_levels": 11}, "book_levels"),
        ({"input": "image"}, "input"),
        ({"book_levels": 2}, "input_name"),  # the graph has no book input
    ],
)
def test_a_bad_sequence_sidecar_is_refused_naming_the_field(tmp_path, extra, field):
    path, _ = write_model(tmp_path, 8, extra=extra)
    with pytest.raises(ModelError) as info:
        load_model(path, SPEC)
    assert info.value.field == field
    assert str(path.with_suffix(".json")) in str(info.value)


def test_an_ensemble_mixes_row_and_sequence_members(tmp_path):
    path, w = write_model(tmp_path, 6)
    seq = load_model(path, SPEC)
    row_model = OnnxModel.load(GBDT, SPEC)
    ens = Ensemble([row_model, seq], [1.0, 3.0])
    assert ens.window == 6
    rng = np.random.default_rng(2)
    windows = rng.normal(size=(4, 6, F)).astype(np.float32)
    rows = windows[:, -1]
    for i in range(4):
        want = 0.25 * row_model.predict_one(rows[i]) + 0.75 * expected(windows[i], w)
        assert ens.predict_one(rows[i], windows[i]) == pytest.approx(want, abs=1e-6)
    assert ens.predict_batch(rows, windows) == pytest.approx(
        [ens.predict_one(rows[i], windows[i]) for i in range(4)], abs=1e-6
    )


# -- the model actor --------------------------------------------------------------------------


def _actor(tmp_path: Path, paths: list[Path]) -> ModelActor:
    import attrs

    from engine._config import ModelSection

    cfg = attrs.evolve(ModelSection(), enabled=True, paths=tuple(map(str, paths)), retrain=False)
    ensemble = load_ensemble(cfg, SPEC, lambda p: Path(p))
    return ModelActor(
        config=cfg,
        ensemble=ensemble,
        symbols=["BTCUSDT", "ETHUSDT"],
        requests={},
        replies={},
        log=structlog.get_logger(),
    )


def _request(symbol: str, k: int, row: np.ndarray):
    from engine.messages import ScoreRequest, Side

    return ScoreRequest(
        correlation_id=f"{symbol}-d{k}", symbol=symbol, side=Side.BUY, row=row, ts_event=k
    )


def test_the_actor_scores_each_request_on_its_own_symbols_window(tmp_path):
    path, w = write_model(tmp_path, 4)
    actor = _actor(tmp_path, [path])
    rng = np.random.default_rng(3)
    history: dict[str, list[np.ndarray]] = {"BTCUSDT": [], "ETHUSDT": []}

    def window_of(symbol: str) -> np.ndarray:
        rows = history[symbol][-4:]
        pad = [np.zeros(F, dtype=np.float32)] * (4 - len(rows))
        return np.stack(pad + rows)

    k = 0
    # single requests, then steps with several requests (two of one symbol in one step)
    for step_symbols in [["BTCUSDT"], ["ETHUSDT"], ["BTCUSDT", "BTCUSDT", "ETHUSDT"]] * 3:
        requests, want = [], []
        for s in step_symbols:
            row = rng.normal(size=F).astype(np.float32)
            k += 1
            requests.append(_request(s, k, row))
            history[s].append(row)
            want.append(expected(window_of(s), w))
        got = [score.score for score in actor.score(requests)]
        assert got == pytest.approx(want, abs=1e-6)


def test_a_book_reading_model_is_refused_by_the_actor(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    blob, _ = seq_graph(4)
    proto = onnx.load_from_string(blob)
    proto.graph.input.append(
        helper.make_tensor_value_info("book", TensorProto.FLOAT, ["batch", 2, 4])
    )
    blob = proto.SerializeToString()
    path = tmp_path / "mm.onnx"
    path.write_bytes(blob)
    path.with_suffix(".json").write_text(json.dumps(sidecar(blob, 4, {"book_levels": 2})))
    assert load_model(path, SPEC).book_levels == 2
    with pytest.raises(ModelError) as info:
        _actor(tmp_path, [path])
    assert info.value.field == "book_levels"


def test_a_replay_with_a_sequence_member_in_the_ensemble(tmp_path, sample):
    from engine import make_logger, run_replay

    path, _ = write_model(tmp_path, 16)
    strategy = {"sample_ms": 200, "fast": 3, "slow": 8, "max_hold_ms": 20000}
    config = replay_config(
        tmp_path,
        [sample],
        strategy=strategy,
        model={"enabled": True, "paths": [str(GBDT), str(path)], "retrain": False},
    )
    log, log_file = make_logger(str(tmp_path / "engine.jsonl"), "info")
    try:
        report = trio.run(functools.partial(run_replay, config, log=log))
    finally:
        log_file.close()
    db = sqlite3.connect(report.journal_path)
    try:
        scored = [json.loads(p) for (p,) in db.execute(
            "SELECT payload FROM journal WHERE kind = 'EntryScored' ORDER BY id"
        )]  # fmt: skip
    finally:
        db.close()
    assert scored and report.model["requests"] == len(scored)
    # Recompute every score from the journaled rows: GBDT on the row, the sequence model on
    # the symbol's last 16 rows, averaged.
    gbdt, seq = OnnxModel.load(GBDT, SPEC), load_model(path, SPEC)
    ring = SequenceRing(16, F)
    for r in scored:
        row = np.array([np.nan if x is None else x for x in r["features"]], dtype=np.float32)
        ring.push(row)
        want = 0.5 * gbdt.predict_one(row) + 0.5 * seq.predict_window(ring.view())
        assert r["score"] == pytest.approx(want, abs=1e-6)


def test_the_deep_command_without_pytorch_says_how_to_get_it(monkeypatch, capsys, sample):
    import sys

    from tools.train.__main__ import main

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    assert main(["deep", "--data", str(sample)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ".[dl]" in err and err.count("\n") == 1

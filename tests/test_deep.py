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


def _request(
    symbol: str,
    k: int,
    row: np.ndarray,
    window: np.ndarray | None = None,
    book: np.ndarray | None = None,
):
    from engine.messages import ScoreRequest, Side

    return ScoreRequest(
        correlation_id=f"{symbol}-d{k}",
        symbol=symbol,
        side=Side.BUY,
        row=row,
        ts_event=k,
        window=window,
        book=book,
    )


def test_the_actor_scores_each_request_on_the_window_it_carries(tmp_path):
    from engine.actors._symbol import ProtocolError

    path, w = write_model(tmp_path, 4)
    actor = _actor(tmp_path, [path])
    rng = np.random.default_rng(3)
    k = 0
    # single requests, then steps with several requests (two of one symbol in one step)
    for step_symbols in [["BTCUSDT"], ["ETHUSDT"], ["BTCUSDT", "BTCUSDT", "ETHUSDT"]] * 3:
        requests, want = [], []
        for s in step_symbols:
            window = rng.normal(size=(4, F)).astype(np.float32)
            k += 1
            requests.append(_request(s, k, window[-1], window))
            want.append(expected(window, w))
        got = [score.score for score in actor.score(requests)]
        assert got == pytest.approx(want, abs=1e-6)
    with pytest.raises(ProtocolError, match="without the window"):
        actor.score([_request("BTCUSDT", 99, np.zeros(F, dtype=np.float32))])


def book_graph(window: int, levels: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A multi-modal test graph: ``p = sigmoid(flatten(x) @ W + flatten(nan_to_0(book)) @ V)``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w = rng.normal(scale=0.05, size=(window * F, 1)).astype(np.float32)
    v = rng.normal(scale=1e-5, size=(levels * 4, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["lx"]),
        helper.make_node("IsNaN", ["book"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "book"], ["book0"]),
        helper.make_node("Flatten", ["book0"], ["bflat"], axis=1),
        helper.make_node("MatMul", ["bflat", "V"], ["lb"]),
        helper.make_node("Add", ["lx", "lb"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p"]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mm",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", window, F]),
            helper.make_tensor_value_info("book", TensorProto.FLOAT, ["batch", levels, 4]),
        ],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(v, "V"),
            numpy_helper.from_array(np.ones((1, 1), "f4"), "one"),
            numpy_helper.from_array(np.zeros((), "f4"), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString(), w, v


def write_book_model(tmp_path: Path, window: int, levels: int):
    blob, w, v = book_graph(window, levels)
    path = tmp_path / f"mm_{window}_{levels}.onnx"
    path.write_bytes(blob)
    path.with_suffix(".json").write_text(json.dumps(sidecar(blob, window, {"book_levels": levels})))
    return path, w, v


def expected_mm(window_rows: np.ndarray, book: np.ndarray, w: np.ndarray, v: np.ndarray) -> float:
    z = float(window_rows.reshape(-1).astype(np.float64) @ w[:, 0].astype(np.float64))
    z += float(np.nan_to_num(book.reshape(-1)).astype(np.float64) @ v[:, 0].astype(np.float64))
    return 1.0 / (1.0 + np.exp(-z))


def test_a_book_reading_model_is_served_with_the_book_each_request_carries(tmp_path):
    from engine.actors._symbol import ProtocolError

    path, w, v = write_book_model(tmp_path, 4, 2)
    actor = _actor(tmp_path, [path])
    assert actor.ensemble.book_levels == 2
    rng = np.random.default_rng(4)
    windows = rng.normal(size=(3, 4, F)).astype(np.float32)
    books = (60_000 + rng.normal(size=(3, 2, 4))).astype(np.float32)
    books[2] = np.nan  # no book at that tick: the graph reads 0
    for batch in ([0], [0, 1, 2]):
        got = actor.score(
            [_request("BTCUSDT", i, windows[i, -1], windows[i], books[i]) for i in batch]
        )
        want = [expected_mm(windows[i], books[i], w, v) for i in batch]
        assert [g.score for g in got] == pytest.approx(want, abs=1e-6)
    with pytest.raises(ProtocolError, match="book levels"):
        actor.score([_request("BTCUSDT", 9, windows[0, -1], windows[0])])


# -- per-tick windows: the engine's filter, training's windows_at ------------------------------


@pytest.fixture(scope="module")
def tape_ticks(sample):
    from engine.feeds import CaptureLimits, CaptureStats, load_tape

    tape = load_tape(
        [sample], ("BTCUSDT",), limits=CaptureLimits(), stats=CaptureStats(), store=None, book=True
    )
    return tape.ticks["BTCUSDT"]


def _filter(window: int, levels: int):
    from engine import load_config
    from engine.actors._filter import EntryFilter

    cfg = load_config(ROOT / "config.toml")
    return EntryFilter(
        symbol="BTCUSDT",
        spec=SPEC,
        model=cfg.model,
        strategy=cfg.strategy,
        venue=cfg.venue,
        window=window,
        book_levels=levels,
    )


def _signals(ticks, every: int = 1499) -> list[tuple[int, float]]:
    """Quote rows spread over the sample, alternating sides (some before warm-up)."""
    from engine.messages import EventKind

    quotes = np.flatnonzero(ticks.kind == int(EventKind.QUOTE))
    return [(int(q), 1.0 if k % 2 else -1.0) for k, q in enumerate(quotes[50::every])]


def _engine_windows(ticks, signals, window: int, levels: int, chunks: list[int]):
    """The filter fed as the symbol actor feeds it, in batches of the given sizes: each
    signal's request (None: features not warm)."""
    from engine.messages import Side

    flt = _filter(window, levels)
    out: dict[int, object] = {}
    pending = list(signals)
    pos, c = 0, 0
    while pos < len(ticks):
        stop = min(len(ticks), pos + chunks[c % len(chunks)])
        batch = ticks.rows(pos, stop)
        flt.begin(batch)
        while pending and pending[0][0] < stop:
            i, side = pending.pop(0)
            flt.advance(i - pos + 1)  # the scan stopped at the signal's row
            p = flt.propose(Side(int(side)), 1.0, 1.0, int(ticks.ts[i]))
            out[i] = flt.take_requests()[0] if p is not None else None
        flt.advance(stop - pos)
        pos, c = stop, c + 1
    return out, flt


@pytest.mark.parametrize("chunks", [[1, 7, 333], [5000], [40_000]])
def test_windows_are_the_last_ticks_whatever_the_batches(tape_ticks, chunks):
    from engine.models import windows_at

    ticks = tape_ticks
    signals = _signals(ticks)
    win, lev = 8, 3
    want_w, want_b = windows_at(ticks, signals, SPEC, win, lev)
    got, flt = _engine_windows(ticks, signals, win, lev, chunks)
    scored = 0
    for k, (i, _side) in enumerate(signals):
        r = got[i]
        if r is None:
            continue
        scored += 1
        np.testing.assert_array_equal(r.window, want_w[k])  # NaN == NaN here
        np.testing.assert_array_equal(r.book, want_b[k])
        np.testing.assert_array_equal(r.row, want_w[k, -1])
    assert scored >= 15 and flt.book_missing == 0


def test_a_window_is_the_rows_of_the_last_ticks(tape_ticks):
    """Brute force: a row after every QUOTE and TRADE row; the windows are their last 8."""
    from engine.messages import EventKind
    from engine.models import FeatureBuilder, windows_at

    ticks = tape_ticks.rows(0, 12_000)
    signals = _signals(ticks, every=701)
    got, _ = windows_at(ticks, signals, SPEC, 8)
    b = FeatureBuilder(SPEC)
    rows, where = [], {}
    feature = (ticks.kind == int(EventKind.QUOTE)) | (ticks.kind == int(EventKind.TRADE))
    for i in range(signals[-1][0] + 1):
        b.on_ticks(ticks, i, i + 1)
        if feature[i]:
            rows.append(b.row(0.0))
        where[i] = len(rows)
    side_at = SPEC.names.index("side")
    for k, (i, side) in enumerate(signals):
        last = rows[max(0, where[i] - 8) : where[i]]
        want = np.zeros((8, F), dtype=np.float32)
        if last:
            want[8 - len(last) :] = np.stack(last)
            want[8 - len(last) :, side_at] = side
        np.testing.assert_array_equal(got[k], want)


def test_tick_windows_allocate_nothing_per_tick(tape_ticks):
    from engine.models import FeatureBuilder, TickWindows

    tw = TickWindows(FeatureBuilder(SPEC), 16)
    ticks = tape_ticks
    tw.on_ticks(ticks, 0, 2000)  # warm up
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        tw.on_ticks(ticks, 2000, 2001)
        for i in range(2001, 6001):
            tw.on_ticks(ticks, i, i + 1)  # every tick pushes a row (a range of one)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One (26,) float32 row is 104 bytes: 4,000 rows kept would be 400 KB.
    assert held - before < 2048 and peak - before < 8192, (held - before, peak - before)


def _replay(tmp_path, sample, paths):
    from engine import make_logger, run_replay

    strategy = {"sample_ms": 200, "fast": 3, "slow": 8, "max_hold_ms": 20000}
    config = replay_config(
        tmp_path,
        [sample],
        strategy=strategy,
        model={"enabled": True, "paths": [str(p) for p in paths], "retrain": False},
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
    return report, scored


def _training_windows(ticks, scored, window: int, levels: int = 0):
    """Training's windows of the journaled signals (tools.train deep's placement)."""
    from engine.models import windows_at
    from engine.models._features import signal_rows

    rows = signal_rows(ticks, [r["ts_event"] for r in scored])
    assert (np.diff(rows) >= 0).all()
    at = [(int(i), 1.0 if r["side"] == 1 else -1.0) for i, r in zip(rows, scored, strict=True)]
    return windows_at(ticks, at, SPEC, window, levels)


def test_a_replay_with_a_sequence_member_in_the_ensemble(tmp_path, sample, tape_ticks):
    path, _ = write_model(tmp_path, 16)
    _report, scored = _replay(tmp_path, sample, [GBDT, path])
    # Recompute every score from training's windows: GBDT on the row, the sequence model on
    # the symbol's last 16 ticks' rows, averaged; each window ends in the journaled row.
    gbdt, seq = OnnxModel.load(GBDT, SPEC), load_model(path, SPEC)
    windows, _ = _training_windows(tape_ticks, scored, 16)
    for r, window in zip(scored, windows, strict=True):
        row = np.array([np.nan if x is None else x for x in r["features"]], dtype=np.float32)
        np.testing.assert_array_equal(window[-1], row)
        want = 0.5 * gbdt.predict_one(row) + 0.5 * seq.predict_window(window)
        assert r["score"] == pytest.approx(want, abs=1e-6)


def test_a_replay_serves_the_multimodal_model_its_book(tmp_path, sample, tape_ticks):
    path, w, v = write_book_model(tmp_path, 8, 5)
    report, scored = _replay(tmp_path, sample, [path])
    assert report.model["book_missing"] == 0
    windows, books = _training_windows(tape_ticks, scored, 8, 5)
    assert np.isfinite(books).all()
    for r, window, book in zip(scored, windows, books, strict=True):
        assert r["score"] == pytest.approx(expected_mm(window, book, w, v), abs=1e-6)


def test_the_deep_command_without_pytorch_says_how_to_get_it(monkeypatch, capsys, sample):
    import sys

    from tools.train.__main__ import main

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    assert main(["deep", "--data", str(sample)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ".[dl]" in err and err.count("\n") == 1


def test_without_a_book_the_levels_are_nan_and_counted(sample):
    """Data without book columns (``ticks_of``: no depth book): every request's levels are
    NaN (the graph reads 0, as training builds them) and the filter counts them."""
    from engine.models import book_at, ticks_of

    ticks = ticks_of([sample])
    assert (ticks.book_row < 0).all()
    got, flt = _engine_windows(ticks, _signals(ticks), 8, 3, [4096])
    served = [r for r in got.values() if r is not None]
    assert served and flt.book_missing == len(served)
    assert all(np.isnan(r.book).all() and r.book.shape == (3, 4) for r in served)
    out = np.zeros((3, 4), dtype=np.float32)
    assert not book_at(ticks, 10, out) and np.isnan(out).all()


def test_model_reads_book_from_the_sidecars(tmp_path):
    import attrs

    from engine._config import ModelSection
    from engine.actors._model import model_reads_book

    seq, _ = write_model(tmp_path, 4)
    mm, _w, _v = write_book_model(tmp_path, 4, 2)
    on = attrs.evolve(ModelSection(), enabled=True)
    assert not model_reads_book(attrs.evolve(on, paths=(str(GBDT), str(seq))), Path)
    assert model_reads_book(attrs.evolve(on, paths=(str(GBDT), str(mm))), Path)
    assert not model_reads_book(attrs.evolve(on, enabled=False, paths=(str(mm),)), Path)
    assert not model_reads_book(attrs.evolve(on, paths=(str(tmp_path / "missing.onnx"),)), Path)

"""The PyTorch sequence models (``dl`` extra): fit, ONNX export, parity, serving, the CLI.

Skipped when PyTorch is not installed (``pip install -e '.[dl]'``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.models import SequenceModel, default_feature_spec, load_model  # noqa: E402
from tools.train import _deep  # noqa: E402

SPEC = default_feature_spec()
F = len(SPEC.names)
WINDOW, LEVELS = 8, 3


def data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    windows = rng.normal(size=(n, WINDOW, F)).astype(np.float32)
    windows[rng.random(size=windows.shape) < 0.02] = np.nan  # the journal's nulls
    windows[:4, :3] = 0.0  # padding rows
    mid = 60_000 + rng.normal(size=(n, 1))
    books = np.empty((n, LEVELS, 4), dtype=np.float32)
    books[:, :, 0] = mid - 0.1 * (1 + np.arange(LEVELS))
    books[:, :, 2] = mid + 0.1 * (1 + np.arange(LEVELS))
    books[:, :, 1] = rng.exponential(size=(n, LEVELS))
    books[:, :, 3] = rng.exponential(size=(n, LEVELS))
    books[-3:, -1] = np.nan  # a thin side
    y = (np.nan_to_num(windows[:, -1, 1]) + rng.normal(size=n) > 0).astype(np.int64)
    return windows, books, y


@pytest.mark.parametrize("kind", _deep.DEEP_KINDS)
def test_export_matches_pytorch_and_serves_through_the_engine(kind):
    windows, books, y = data()
    model = _deep.fit(kind, windows, books, y, levels=LEVELS, seed=1, epochs=3)
    blob = _deep.to_onnx(model, kind, WINDOW, F, LEVELS)
    parity = _deep.check_parity(model, kind, blob, windows, books)
    assert parity["max_abs_diff"] <= 1e-5 and parity["rows"] == len(y)
    side = _deep.sidecar(
        kind=kind, blob=blob, window=WINDOW, levels=LEVELS, seed=1, rows=len(y),
        positives=int(y.sum()), metrics={}, parity=parity,
    )  # fmt: skip
    served = SequenceModel.from_bytes(blob, side, SPEC)
    assert served.window == WINDOW
    assert served.book_levels == (LEVELS if kind == "multimodal" else 0)
    want = _deep.predict(model, kind, windows, books)
    assert np.isfinite(want).all()
    assert want.std() > 0  # the model is not a constant
    got_batch = served.predict_windows(windows, books)
    np.testing.assert_allclose(got_batch, want, atol=1e-5)
    for i in range(0, len(y), 7):  # the iobinding path
        assert served.predict_window(windows[i], books[i]) == pytest.approx(want[i], abs=1e-5)


def test_parity_check_catches_a_different_graph():
    windows, books, y = data()
    a = _deep.fit("lstm", windows, books, y, levels=LEVELS, seed=1, epochs=2)
    b = _deep.fit("lstm", windows, books, y, levels=LEVELS, seed=2, epochs=2)
    blob_b = _deep.to_onnx(b, "lstm", WINDOW, F, LEVELS)
    with pytest.raises(_deep.DeepParityError, match="lstm"):
        _deep.check_parity(a, "lstm", blob_b, windows, books)


def test_export_is_loadable_by_the_pinned_onnxruntime_versions():
    import onnx

    windows, books, y = data(32)
    model = _deep.fit("transformer", windows, books, y, levels=LEVELS, seed=0, epochs=1)
    proto = onnx.load_from_string(_deep.to_onnx(model, "transformer", WINDOW, F, LEVELS))
    # onnxruntime 1.20 (the pin's floor) loads IR <= 10 and opset <= 21
    assert proto.ir_version <= 10
    assert {o.domain: o.version for o in proto.opset_import}[""] == _deep.OPSET <= 21


def test_training_features_are_the_served_features(tmp_path, sample):
    """Train a multi-modal model on ``tools.train deep``'s windows and book levels, serve it
    in a replay, and score the replay's journaled signals with PyTorch on training's windows
    and books: the engine's scores are PyTorch's (1e-5), so the windows and book levels
    training builds are the ones the engine serves."""
    import functools
    import sqlite3

    import trio

    import engine
    from tools.train._driver_data import driver_signals, read_signals

    root = Path(__file__).resolve().parents[1]
    cfg = engine.load_config(root / "config.toml")
    sig = driver_signals(cfg, [sample], tmp_path / "driver")
    windows, books = _deep.sequences_of(cfg, [sample], sig, 6, 4)
    assert np.isfinite(books).all()  # the sample has a book from its first seconds
    y = np.where(sig.label > 0, 1, 0)
    model = _deep.fit("multimodal", windows, books, y, levels=4, seed=0, epochs=2)
    blob = _deep.to_onnx(model, "multimodal", 6, F, 4)
    side = _deep.sidecar(
        kind="multimodal", blob=blob, window=6, levels=4, seed=0, rows=len(y),
        positives=int(y.sum()), metrics={}, parity={},
    )  # fmt: skip
    path = tmp_path / "mm.onnx"
    path.write_bytes(blob)
    path.with_suffix(".json").write_text(json.dumps(side))
    config = _serving(cfg, sample, path, tmp_path / "serve")
    log, log_file = engine.make_logger(str(tmp_path / "serve.jsonl"), "info")
    try:
        report = trio.run(functools.partial(engine.run_replay, config, log=log))
    finally:
        log_file.close()
    assert report.model["book_missing"] == 0
    served = read_signals(Path(report.journal_path))
    db = sqlite3.connect(report.journal_path)
    try:
        scores = [json.loads(p)["score"] for (p,) in db.execute(
            "SELECT payload FROM journal WHERE kind = 'EntryScored' ORDER BY id"
        )]  # fmt: skip
    finally:
        db.close()
    assert len(scores) == len(served.symbol) > 10
    w, b = _deep.sequences_of(cfg, [sample], served, 6, 4)
    want = _deep.predict(model, "multimodal", w, b)
    np.testing.assert_allclose(scores, want, atol=1e-5)
    assert np.std(want) > 0


def _serving(cfg, sample: Path, path: Path, work: Path):
    """``cfg`` replaying ``sample`` with only the model at ``path`` (threshold as shipped)."""
    import attrs

    work.mkdir(parents=True, exist_ok=True)
    return attrs.evolve(
        cfg,
        data=attrs.evolve(cfg.data, paths=(str(sample),)),
        model=attrs.evolve(cfg.model, enabled=True, paths=(str(path),), weights=(), retrain=False),
        journal=attrs.evolve(cfg.journal, dir=str(work)),
        logging=attrs.evolve(cfg.logging, path=str(work / "engine.jsonl"), progress="off"),
    )


def test_the_deep_command_exports_models_the_engine_loads(tmp_path, sample, capsys):
    from tools.train.__main__ import main

    rc = main([
        "deep", "--data", str(sample), "--epochs", "2", "--window", "4", "--book-levels", "2",
        "--out", str(tmp_path / "models"), "--work-dir", str(tmp_path / "work"),
    ])  # fmt: skip
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["labelled"] > 0 and len(result["exported"]) == len(_deep.DEEP_KINDS)
    for kind in _deep.DEEP_KINDS:
        path = tmp_path / "models" / f"entry_filter_{kind}.onnx"
        model = load_model(path, SPEC)
        assert isinstance(model, SequenceModel) and model.window == 4
        assert json.loads(path.with_suffix(".json").read_text())["parity"]["max_abs_diff"] <= 1e-5
    # the multimodal model read a real book: the sample's rebuilt levels at its signals
    from tools.train._driver_data import read_signals

    journal = next((tmp_path / "work" / "c0").glob("*.sqlite"))
    import engine

    cfg = engine.load_config(Path(__file__).resolve().parents[1] / "config.toml")
    _windows, books = _deep.sequences_of(cfg, [sample], read_signals(journal), 4, 2)
    assert np.isfinite(books).any()
    assert (books[:, 0, 0] < books[:, 0, 2])[np.isfinite(books[:, 0, 0])].all()  # bid < ask


def test_the_deep_command_refuses_bad_arguments(capsys):
    from tools.train.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["deep", "--window", "0"])
    assert info.value.code == 2

"""The PyTorch sequence models (``dl`` extra): fit, ONNX export, parity, serving, the CLI.

Skipped when PyTorch is not installed (``pip install -e '.[dl]'``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.models import SequenceModel, SequenceRing, default_feature_spec, load_model  # noqa: E402
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


def test_training_windows_are_the_rings_windows():
    from tools.train._driver_data import DriverSignals

    rng = np.random.default_rng(4)
    n = 9
    symbols = ("A", "B", "A", "A", "B", "A", "A", "A", "B")
    X = rng.normal(size=(n, F)).astype(np.float32)
    sig = DriverSignals(
        X=X, label=np.zeros(n, np.int8), ret_bps=np.zeros(n), side=np.ones(n, np.int8),
        ts=np.arange(n, dtype=np.int64), ts_resolved=np.arange(n, dtype=np.int64),
        symbol=symbols, correlation_id=tuple(map(str, range(n))), journal_path=Path("x"),
    )  # fmt: skip
    w = _deep.windows_of(sig, 3)
    for i in range(n):
        own = [X[j] for j in range(i + 1) if symbols[j] == symbols[i]][-3:]
        want = np.stack([np.zeros(F, np.float32)] * (3 - len(own)) + own)
        np.testing.assert_array_equal(w[i], want)
    ring = SequenceRing(3, F)
    for j in (0, 2, 3):
        ring.push(X[j])
    np.testing.assert_array_equal(ring.view(), w[3])


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
    books = _deep.books_of(cfg, [sample], read_signals(journal), 2)
    assert np.isfinite(books).any()
    assert (books[:, 0, 0] < books[:, 0, 2])[np.isfinite(books[:, 0, 0])].all()  # bid < ask


def test_the_deep_command_refuses_bad_arguments(capsys):
    from tools.train.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["deep", "--window", "0"])
    assert info.value.code == 2

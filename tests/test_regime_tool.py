"""``python -m tools.regime``: a walk-forward fit and comparison on real klines (a small window)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.models._hmm import FEATURE_NAMES, BarFeatureSpec, HmmParams, forward_filter
from tools.regime.__main__ import main
from tools.regime._data import load, split_times

ROOT = Path(__file__).resolve().parents[1]
KLINES = ROOT.parent / "shared/data/external/freqtrade_1m_usdm"
SYMBOLS = ("BTC", "ETH", "XRP")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real symbols' candle files (links), so that a fit takes seconds."""
    if not KLINES.is_dir():
        pytest.skip("../shared/data/external is not beside the repository")
    d = tmp_path_factory.mktemp("klines")
    for base in SYMBOLS:
        name = f"{base}_USDT_USDT-1m-futures.feather"
        (d / name).symlink_to(KLINES / name)
    return d


def test_fit_writes_an_ordered_model_and_compares_out_of_sample(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("hmmlearn")
    out = tmp_path / "hmm2.json"
    argv = ["fit", "--data", str(data), "--states", "2", "--out", str(out)]
    argv += ["--train-days", "3", "--test-days", "2", "--holdout", "XRPUSDT"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    params = HmmParams.load(out)
    assert params.labels == ("calm", "turbulent")
    col = FEATURE_NAMES.index("log_rvol_ratio")
    assert params.means[0, col] < params.means[1, col]
    td = params.meta["training_data"]
    assert td["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert td["held_out_symbols"] == ["XRPUSDT"]
    # Training bars are the warm bars before the split, of the training symbols only.
    bars = load(data, params.features)
    _, split, _ = split_times(bars, 3, 2)
    n_train = sum(
        int(np.count_nonzero((b.ts < split) & np.all(np.isfinite(b.X), axis=1)))
        for b in bars
        if b.symbol != "XRPUSDT"
    )
    assert td["bars"] == n_train
    assert result["holdout"] == ["XRPUSDT"]
    for group, symbols in (
        ("seen_symbols", ["BTCUSDT", "ETHUSDT"]),
        ("held_out_symbols", ["XRPUSDT"]),
    ):
        g = result[group]
        assert g["symbols"] == symbols
        # Two test days less the last hour, per symbol.
        assert 0 < g["bars"] <= len(symbols) * (2 * 1440 - 60 + 1)
        for model in ("hmm", "threshold"):
            shares = [r.get("share", 0.0) for r in g[model]["regimes"].values()]
            assert sum(shares) == pytest.approx(1.0)
        # The one-state reference is nested in the HMM family: fitted on the same bars,
        # the HMM should explain held-out bars at least about as well.
        assert np.isfinite(g["loglik_per_bar"]["gain"])
    # The comparison is reproducible from the saved file alone.
    assert main(["compare", "--data", str(data), "--model", str(out)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again == {k: v for k, v in result.items() if k != "path"}
    # The HMM's regime per test bar is the filter's argmax over the whole causal series.
    probs, _ = forward_filter(params, bars[0].X)
    assert probs.shape == (len(bars[0].ts), 2)


def test_markdown_table(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = ROOT / "models/onnx/regime/hmm3.json"
    # The shipped model on three symbols: its held-out symbol is not among them.
    assert main(["compare", "--data", str(data), "--model", str(model), "--markdown"]) == 0
    text = capsys.readouterr().out
    assert "| seen_symbols | hmm | turbulent |" in text
    assert "| seen_symbols | threshold | vol=high |" in text
    assert "top/bottom next-hour vol" in text


def test_bad_data_directory_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", "--data", str(tmp_path), "--out", str(tmp_path / "x.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(tmp_path) in err and "no *_USDT_USDT-1m-futures.feather files" in err


def test_unknown_holdout_symbol_is_exit_2(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", "--data", str(data), "--out", str(tmp_path / "x.json"), "--holdout", "NOPEUSDT"]
    assert main(argv) == 2
    assert "NOPEUSDT" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_trend_model_exports_onnx_that_matches_sklearn(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    from tools.regime._trend import TREND_FEATURES, trend_features

    argv = ["trend", "--data", str(data), "--out", str(tmp_path)]
    argv += ["--train-days", "3", "--test-days", "2", "--holdout", "XRPUSDT"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    blob = (tmp_path / "trend_mtf.onnx").read_bytes()
    sidecar = json.loads((tmp_path / "trend_mtf.json").read_text())
    assert sidecar["feature_names"] == list(TREND_FEATURES)
    assert sidecar["onnx_bytes"] == len(blob)
    assert sidecar["training_data"]["held_out_symbols"] == ["XRPUSDT"]
    assert sidecar["parity_max_abs_diff"] <= 1e-5
    for name in ("logistic", "gbdt"):
        for group in ("seen_symbols", "held_out_symbols"):
            s = result["metrics"][name][group]
            assert 0.0 <= s["every_bar"]["auc"] <= 1.0
            lo, hi = s["hourly"]["auc_ci95"]
            assert lo <= hi
    # The exported graph runs on features computed from the held-out symbol's bars.
    bars = load(data, BarFeatureSpec())
    F = trend_features(bars[-1])
    F = F[np.all(np.isfinite(F), axis=1)][:500].astype(np.float32)
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    p = sess.run(["probabilities"], {"input": F})[0]
    assert p.shape == (len(F), 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert 0.0 < p[:, 1].min() <= p[:, 1].max() < 1.0


@pytest.mark.slow
def test_readme_regime_tables_are_what_compare_prints(capsys: pytest.CaptureFixture[str]) -> None:
    if not KLINES.is_dir():
        pytest.skip("../shared/data/external is not beside the repository")
    model = ROOT / "models/onnx/regime/hmm3.json"
    assert main(["compare", "--data", str(KLINES), "--model", str(model), "--markdown"]) == 0
    table = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text()
    assert table.strip() in readme, "README's Regimes tables are stale: paste compare --markdown"


def test_shipped_trend_model_matches_its_sidecar() -> None:
    import hashlib

    ort = pytest.importorskip("onnxruntime")
    from tools.regime._trend import TREND_FEATURES

    blob = (ROOT / "models/onnx/regime/trend_mtf.onnx").read_bytes()
    sidecar = json.loads((ROOT / "models/onnx/regime/trend_mtf.json").read_text())
    assert sidecar["onnx_sha256"] == hashlib.sha256(blob).hexdigest()
    assert sidecar["feature_names"] == list(TREND_FEATURES)
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [sidecar["input_name"]]
    assert sess.get_inputs()[0].shape[1] == len(TREND_FEATURES)

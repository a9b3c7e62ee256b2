"""tools.train: triple-barrier labels, purged splits, export parity, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skl2onnx")

from engine.models import OnnxModel, default_feature_spec, features_at
from engine.models._labels import Quotes, triple_barrier
from engine.models._training import (
    MODEL_KINDS,
    ExportParityError,
    check_parity,
    fit_calibrated,
    to_onnx,
)
from engine.strategy._ema_cross import Signal, new_indicators, new_state, scan
from tools.train.__main__ import main
from tools.train._labels import (
    StrategyConfig,
    entry_signals,
    holdout,
    purged_split,
    walk_forward,
)
from tools.train._train import build_dataset

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "btcusdt_20240808_180s.gz"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BTC = SHARED / "external" / "hftbacktest" / "btcusdt_20240808.gz"


def _quotes(mids: list[float], step_ms: int = 100) -> Quotes:
    n = len(mids)
    ts = np.arange(n, dtype=np.int64) * step_ms * 1_000_000
    mid = np.array(mids)
    return Quotes(ts, np.ones(n, dtype=np.int8), mid - 0.005, mid + 0.005)


def test_triple_barrier_take_profit_stop_and_fees():
    cfg = StrategyConfig(take_profit_bps=10, stop_loss_bps=5, max_hold_ms=10_000, fee_bps=2.0)
    up = [100.0] * 3 + [100.2] * 3  # +~15 bps
    down = [100.0] * 3 + [99.8] * 3  # ~-20 bps
    lab = triple_barrier(_quotes(up), [(0, 1)], cfg)
    assert lab.reason[0] == "tp" and lab.label[0] == 1
    assert lab.net_bps[0] == pytest.approx((100.195 - 100.005) / 100.005 * 1e4 - 4.0)
    assert triple_barrier(_quotes(down), [(0, 1)], cfg).reason[0] == "sl"
    short = triple_barrier(_quotes(down), [(0, -1)], cfg)
    assert short.reason[0] == "tp" and short.label[0] == 1
    # A gain smaller than the fees is a 0 label at the time limit.
    flat = triple_barrier(_quotes([100.0] * 200), [(0, 1)], cfg)
    assert flat.reason[0] == "time" and flat.label[0] == 0


def test_label_ignores_prices_before_the_signal():
    cfg = StrategyConfig(take_profit_bps=10, stop_loss_bps=5, max_hold_ms=10_000)
    a = [100.0, 100.0, 100.0, 100.2, 100.2]
    b = [50.0, 200.0, 100.0, 100.2, 100.2]
    la = triple_barrier(_quotes(a), [(2, 1)], cfg)
    lb = triple_barrier(_quotes(b), [(2, 1)], cfg)
    assert la.net_bps[0] == lb.net_bps[0] and la.label[0] == lb.label[0]


def test_purged_splits_never_overlap():
    rng = np.random.default_rng(0)
    t0 = np.sort(rng.integers(0, 10**12, 500))
    t1 = t0 + rng.integers(1, 5 * 10**10, 500)
    embargo = 10**10
    folds = list(walk_forward(t0, t1, 4, embargo))
    assert len(folds) == 4
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0
        # Every training label window ends an embargo before the first test signal.
        assert t1[train].max() < t0[test].min() - embargo
    train, test = holdout(t0, t1, 0.3, embargo)
    assert t1[train].max() < t0[test].min() - embargo
    assert len(test) >= 0.29 * len(t0)
    tr, _te = purged_split(t0, t1, int(t0[250]), int(t0[300]), embargo)
    assert (t1[tr] < t0[250] - embargo).all()


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_export_parity(kind):
    rng = np.random.default_rng(3)
    n_feat = len(default_feature_spec().names)
    X = rng.normal(size=(160, n_feat)).astype(np.float32)
    y = (X[:, 1] + 0.5 * rng.normal(size=160) > 0.3).astype(int)
    model = fit_calibrated(kind, X[:120], y[:120], seed=0, small=True)
    blob = to_onnx(model, n_feat)
    assert check_parity(model, blob, X[120:]) <= 1e-5


def test_parity_failure_raises():
    rng = np.random.default_rng(4)
    n_feat = len(default_feature_spec().names)
    X = rng.normal(size=(120, n_feat)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    a = fit_calibrated("rf", X, y, seed=0, small=True)
    b = fit_calibrated("rf", X, 1 - y, seed=0, small=True)
    with pytest.raises(ExportParityError):
        check_parity(a, to_onnx(b, n_feat), X)


def test_dataset_from_the_sample():
    ds = build_dataset([SAMPLE], StrategyConfig())
    assert ds.X.shape[1] == len(default_feature_spec().names)
    assert len(ds.y) > 5 and np.isfinite(ds.X).all()
    assert (ds.labels.t1 > ds.labels.t0).all()


def _engine_signals(ticks, cfg: StrategyConfig, step: int) -> list[tuple[int, int]]:
    """Entry signals as the symbol actor meets them: ``scan`` batch by batch, always flat."""
    state = new_state()
    inds = new_indicators(cfg.fast, cfg.slow, cfg.rsi_period)
    params = cfg.params()
    out = []
    for lo in range(0, len(ticks), step):
        hi = min(lo + step, len(ticks))
        cols = (ticks.ts[lo:hi], ticks.kind[lo:hi], ticks.bid[lo:hi], ticks.ask[lo:hi])
        i = 0
        while i < hi - lo:
            i, sig = scan(*cols, i, hi - lo, state, *inds, params)
            if sig in (Signal.ENTER_LONG, Signal.ENTER_SHORT):
                out.append((lo + i, 1 if sig == Signal.ENTER_LONG else -1))
            i += 1
    return out


def test_training_rows_are_the_engine_rows():
    """Signals and rows of the data set equal those of a batch-by-batch engine-style pass."""
    cfg = StrategyConfig()
    spec = default_feature_spec()
    ds = build_dataset([SAMPLE], cfg)
    signals = _engine_signals(ds.ticks, cfg, step=777)
    assert signals == entry_signals(ds.ticks, cfg)
    rows = features_at(ds.ticks, signals, spec)
    kept = {i: k for k, (i, _side) in enumerate(signals)}
    np.testing.assert_array_equal(ds.X, rows[[kept[i] for i in ds.signal_index]])


@pytest.mark.skipif(not BTC.exists(), reason="../shared/data is not beside the repository")
def test_cli_trains_exports_and_evaluates(tmp_path, capsys):
    assert main(["--data", str(BTC), "--out", str(tmp_path), "--models", "rf"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rf"]["bytes"] < 1_000_000
    onnx = tmp_path / "entry_filter_rf.onnx"
    side = json.loads(onnx.with_suffix(".json").read_text())
    assert side["ir_version"] == 9 and side["parity_max_abs_diff"] <= 1e-5
    assert side["splits"]["train"]["last_ts_ns"] < side["splits"]["test"]["first_ts_ns"]
    OnnxModel.load(onnx, default_feature_spec())
    assert main(["evaluate", "--data", str(BTC), "--model", str(onnx), "--no-replay"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["out_of_sample"] is False and ev["models"] == [str(onnx.resolve())]
    assert set(ev["metrics"]["all_signals"]) == {"ensemble", "entry_filter_rf"}

"""engine.models online learning: labels from later quotes only, vetted retraining."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pytest

pytest.importorskip("skl2onnx")

from engine.messages import Ticks
from engine.models import (
    OnlineLabeler,
    OnnxModel,
    RetrainResult,
    default_feature_spec,
    retrain,
    ticks_of,
)
from engine.models._labels import Quotes, triple_barrier
from engine.models._training import (
    auc,
    calibration_of,
    fit_calibrated,
    make_model,
    sigmoid_slopes,
    to_onnx,
)
from tools.train._labels import StrategyConfig, entry_signals

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "btcusdt_20240808_180s.gz"
CFG = StrategyConfig()


def _labeler(cfg: StrategyConfig = CFG) -> OnlineLabeler:
    return OnlineLabeler(
        take_profit_bps=cfg.take_profit_bps,
        stop_loss_bps=cfg.stop_loss_bps,
        max_hold_ms=cfg.max_hold_ms,
        fee_bps=cfg.fee_bps,
        latency_ms=cfg.latency_ms,
    )


@pytest.fixture(scope="module")
def sample_ticks() -> Ticks:
    return ticks_of([SAMPLE])


def _replay(labeler: OnlineLabeler, ticks, signals, batch: int):
    """Feed ``ticks`` in batches, adding each decision after its own row, as an actor would."""
    out = []
    pending = list(signals)
    for lo in range(0, len(ticks), batch):
        hi = min(lo + batch, len(ticks))
        pos = lo
        while pending and pending[0][0] < hi:
            i, side = pending.pop(0)
            out += labeler.on_ticks(ticks, pos, i + 1)
            pos = i + 1
            labeler.add(f"sig-{i}", int(ticks.ts[i]), side, np.full(3, float(i)))
        out += labeler.on_ticks(ticks, pos, hi)
    return out


@pytest.mark.parametrize("batch", [1, 333, 5000])
def test_online_labels_equal_the_training_labels(sample_ticks, batch):
    signals = entry_signals(sample_ticks, CFG)
    assert len(signals) > 10
    offline = triple_barrier(sample_ticks, signals, CFG)
    labeler = _labeler()
    got = {lab.key: lab for lab in _replay(labeler, sample_ticks, signals, batch)}
    decided = {f"sig-{i}": k for k, (i, _s) in enumerate(signals) if offline.reason[k] != "end"}
    assert set(got) == set(decided)
    assert labeler.pending == len(signals) - len(decided)
    for key, k in decided.items():
        lab = got[key]
        assert (lab.label, lab.reason, lab.ts_resolved) == (
            offline.label[k],
            offline.reason[k],
            offline.t1[k],
        )
        assert lab.ret_bps == offline.net_bps[k]
        assert lab.ts_decision == offline.t0[k] and lab.side == signals[k][1]
        assert lab.row[0] == float(signals[k][0])


def _quotes(mids: list[float], step_ms: int = 100) -> Quotes:
    n = len(mids)
    ts = np.arange(n, dtype=np.int64) * step_ms * 1_000_000
    mid = np.array(mids)
    return Quotes(ts, np.ones(n, dtype=np.int8), mid - 0.005, mid + 0.005)


def test_barriers_fees_and_order():
    labeler = OnlineLabeler(
        take_profit_bps=10, stop_loss_bps=5, max_hold_ms=10_000, fee_bps=2.0, latency_ms=0.0
    )
    up = _quotes([100.0] * 3 + [100.2] * 3)
    labeler.add("long", 0, 1, np.zeros(2))
    labeler.add("short", 0, -1, np.ones(2))
    out = labeler.on_ticks(up, 1, len(up.ts))
    assert [lab.key for lab in out] == ["long", "short"]  # same quote: order added
    long, short = out
    assert (long.reason, long.label) == ("tp", 1)
    assert long.ret_bps == pytest.approx((100.195 - 100.005) / 100.005 * 1e4 - 4.0)
    assert (short.reason, short.label) == ("sl", 0)
    assert labeler.pending == 0 and labeler.on_ticks(up, 0, len(up.ts)) == []
    flat = _quotes([100.0] * 200)
    labeler.add("flat", 0, 1, np.zeros(2))
    (lab,) = labeler.on_ticks(flat, 1, 200)
    assert lab.reason == "time" and lab.label == 0 and lab.ret_bps < 0


def test_only_quotes_after_the_decision_count():
    base = _quotes([100.0] * 10 + [100.2] * 5)
    wild = attrs.evolve(base, bid=base.bid.copy(), ask=base.ask.copy())
    wild.bid[:9] = 50.0  # everything up to the decision's own row
    wild.ask[:9] = 200.0
    results = []
    for q in (base, wild):
        labeler = OnlineLabeler(
            take_profit_bps=10, stop_loss_bps=5, max_hold_ms=10_000, fee_bps=0.0, latency_ms=50.0
        )
        labeler.add("k", int(q.ts[8]), 1, np.zeros(1))
        # Rows up to the decision are given too: the latency keeps them out of the fill.
        results += labeler.on_ticks(q, 0, len(q.ts))
    a, b = results
    assert (a.label, a.ret_bps, a.ts_resolved) == (b.label, b.ret_bps, b.ts_resolved)
    assert a.reason == "tp"


# -- retrain -----------------------------------------------------------------------------


def _data(n: int, seed: int = 0):
    spec = default_feature_spec()
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(spec.names))).astype(np.float32)
    y = (X[:, 1] + 0.7 * rng.normal(size=n) > 0.3).astype(np.int8)
    ts = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 1_000_000_000
    return spec, X, y, ts


@pytest.fixture(scope="module")
def first() -> RetrainResult:
    spec, X, y, ts = _data(300)
    return retrain(X, y, ts, current=None, spec=spec, seed=3, min_samples=100, small=True)


def test_retrain_accepts_a_model_that_learned(first):
    assert first.accepted, first.reason
    assert first.metrics_current == {} and first.metrics_candidate["auc"] > 0.7
    assert first.n_validation == 90 and first.n_train == 210
    side = first.sidecar
    assert side["ir_version"] == 9 and side["parity_max_abs_diff"] <= 1e-5
    assert side["splits"]["train"]["last_ts_ns"] < side["splits"]["test"]["first_ts_ns"]
    spec = default_feature_spec()
    model = OnnxModel.from_bytes(first.blob, dict(side), spec)
    _spec, X, _y, _ts = _data(5, seed=9)
    assert 0.0 <= model.predict_one(X[0]) <= 1.0


def test_retrain_is_deterministic(first):
    spec, X, y, ts = _data(300)
    again = retrain(X, y, ts, current=None, spec=spec, seed=3, min_samples=100, small=True)
    assert again.blob == first.blob and again.sidecar == first.sidecar


def test_retrain_compares_with_the_current_model(first):
    spec, X, y, ts = _data(300)
    # A current model fitted on shuffled labels scores near chance on the same slice.
    noise = fit_calibrated("gbdt", X[:200], np.random.default_rng(1).permutation(y[:200]), 0, True)
    weak = retrain(X, y, ts, current=to_onnx(noise, X.shape[1]), spec=spec, seed=3, small=True)
    assert weak.accepted and weak.metrics_current["auc"] < weak.metrics_candidate["auc"]
    # Against itself the challenger cannot clear a positive margin.
    same = retrain(X, y, ts, current=first.blob, spec=spec, seed=3, small=True, min_auc_gain=0.01)
    assert not same.accepted and same.blob is not None
    assert same.metrics_current["auc"] == pytest.approx(same.metrics_candidate["auc"])
    assert "refused" in same.reason


def test_retrain_refusals():
    spec, X, y, ts = _data(300)
    few = retrain(X[:50], y[:50], ts[:50], current=None, spec=spec, min_samples=100)
    assert not few.accepted and few.blob is None and "too few" in few.reason
    one = retrain(X, np.zeros(300), ts, current=None, spec=spec, min_samples=100)
    assert not one.accepted and "single class" in one.reason
    rare = np.zeros(300, dtype=np.int8)
    rare[[10, 250, 280]] = 1  # one positive to train on, two to validate
    lone = retrain(X, rare, ts, current=None, spec=spec, min_samples=100)
    assert not lone.accepted and "too few of one class to calibrate" in lone.reason
    with pytest.raises(ValueError):
        retrain(X[:, :3], y, ts, current=None, spec=spec)
    with pytest.raises(ValueError):
        retrain(X, y * 2, ts, current=None, spec=spec)


def test_retrain_purges_labels_open_into_validation():
    spec, X, y, ts = _data(300)
    X[5, 2] = np.nan  # dropped, not fatal
    late = ts.copy()
    late[150:210] = ts[-1]  # these labels resolve inside the validation window
    res = retrain(X, y, ts, current=None, spec=spec, ts_resolved=late, small=True)
    assert res.sidecar["training_data"]["dropped_not_finite"] == 1
    assert res.n_validation == 90 and res.n_train == 299 - 90 - 60
    horizon = retrain(X, y, ts, current=None, spec=spec, horizon_ns=10_000_000_000, small=True)
    assert horizon.n_train == 299 - 90 - 10


def test_a_tie_is_not_a_swap(first):
    """At ``min_auc_gain = 0`` a refit must be strictly better: the same refit again (the
    same bytes, so the same validation AUC) keeps the current model."""
    spec, X, y, ts = _data(300)
    again = retrain(X, y, ts, current=first.blob, spec=spec, seed=3, small=True, min_auc_gain=0)
    assert again.blob == first.blob
    assert again.metrics_current["auc"] == again.metrics_candidate["auc"]
    assert not again.accepted and again.reason.startswith("refused"), again.reason


def _inverting(n: int = 48):
    """One informative feature whose relation to the label flips after the first quarter:
    each time-ordered calibration fold sees the opposite of what its estimator learned, and
    every fold's sigmoid comes out with a positive slope (measured: +1.35, +1.37, +0.40)."""
    spec = default_feature_spec()
    rng = np.random.default_rng(5)
    X = rng.normal(size=(n, len(spec.names))).astype(np.float32)
    y = (X[:, 1] > 0).astype(np.int64)
    y[12:48] = 1 - y[12:48]
    return spec, X, y


def test_calibration_that_would_invert_falls_back_to_uncalibrated():
    _spec, X, y = _inverting()
    # What sigmoid calibration does here: the fitted ranking is turned upside down.
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import TimeSeriesSplit

    raw = CalibratedClassifierCV(
        make_model("gbdt", 0, small=True), method="sigmoid", cv=TimeSeriesSplit(3)
    ).fit(X.astype(np.float64), y)
    assert all(a > 0 for a in sigmoid_slopes(raw))
    assert auc(y, raw.predict_proba(X.astype(np.float64))[:, 1]) < 0.5  # inverted
    model = fit_calibrated("gbdt", X, y, 0, small=True)
    assert sigmoid_slopes(model) == []  # uncalibrated, and it says why
    why = calibration_of(model)
    assert why is not None and "fold 1 slope +" in why and "uncalibrated" in why
    assert auc(y, model.predict_proba(X.astype(np.float64))[:, 1]) > 0.9  # not inverted


def test_an_ordinary_fit_stays_calibrated():
    _spec, X, y, _ts = _data(300)
    model = fit_calibrated("gbdt", X[:200], y[:200], 0, small=True)
    slopes = sigmoid_slopes(model)
    assert len(slopes) == 3 and all(a < 0 for a in slopes)
    assert calibration_of(model) is None


def test_retrain_says_when_it_refused_calibration():
    spec, X, y = _inverting()
    # 48 training rows (the inverting case) and 21 later validation rows of the later regime.
    rng = np.random.default_rng(6)
    Xv = rng.normal(size=(21, X.shape[1])).astype(np.float32)
    yv = (Xv[:, 1] <= 0).astype(np.int64)
    X, y = np.concatenate([X, Xv]), np.concatenate([y, yv])
    ts = 1_700_000_000_000_000_000 + np.arange(len(y), dtype=np.int64) * 1_000_000_000
    res = retrain(X, y, ts, current=None, spec=spec, seed=0, min_samples=30, small=True)
    assert res.n_train == 48 and res.n_validation == 21
    assert res.sidecar is not None and res.sidecar["calibration"].startswith("none: sigmoid")
    assert "calibration sigmoid calibration refused" in res.reason

"""The HMM regime model's online path (engine.models._hmm) on real 1-minute klines.

The forward filter must give what a plain NumPy forward filter and hmmlearn's own forward
pass give on the shipped model and real BTCUSDT bars (within 1e-9), and bar by bar what it
gives in batch (exactly).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import DataError
from engine.models._hmm import (
    FEATURE_NAMES,
    BarFeatures,
    BarFeatureSpec,
    HmmFilter,
    HmmParams,
    HmmRegime,
    bar_features,
    forward_filter,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models/onnx/regime/hmm3.json"
KLINES = ROOT.parent / "shared/data/external/freqtrade_1m_usdm/BTC_USDT_USDT-1m-futures.feather"
BARS = 4000


@pytest.fixture(scope="module")
def params() -> HmmParams:
    return HmmParams.load(MODEL)


@pytest.fixture(scope="module")
def btc() -> tuple[np.ndarray, np.ndarray]:
    """The last :data:`BARS` BTCUSDT 1-minute candles (close, volume)."""
    if not KLINES.exists():
        pytest.skip("../shared/data/external is not beside the repository")
    frame = pd.read_feather(KLINES, columns=["close", "volume"]).iloc[-BARS:]
    return frame["close"].to_numpy(np.float64), frame["volume"].to_numpy(np.float64)


@pytest.fixture(scope="module")
def warm_features(params: HmmParams, btc: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    X, _, _ = bar_features(*btc, params.features)
    ok = np.all(np.isfinite(X), axis=1)
    first = int(np.argmax(ok))
    assert ok[first:].all()
    return X[first:]


def _numpy_features(close: np.ndarray, volume: np.ndarray, spec: BarFeatureSpec) -> np.ndarray:
    """The features written out with pandas, independently of the kernel."""
    r = pd.Series(np.log(close)).diff()
    rvol = np.sqrt((r * r).rolling(spec.window).mean()).to_numpy()
    a = 1.0 - 2.0 ** (-1.0 / spec.level_half_life)
    level = np.full_like(rvol, np.nan)
    first = spec.window  # the first full window of returns
    level[first] = rvol[first]
    for t in range(first + 1, len(rvol)):
        level[t] = level[t - 1] + a * (rvol[t] - level[t - 1])

    def ema(x: np.ndarray, half_life: float) -> np.ndarray:
        alpha = 1.0 - 2.0 ** (-1.0 / half_life)
        out = np.empty_like(x)
        out[0] = x[0]
        for t in range(1, len(x)):
            out[t] = out[t - 1] + alpha * (x[t] - out[t - 1])
        return out

    fast, slow = ema(volume, spec.volume_fast), ema(volume, spec.volume_slow)
    X = np.column_stack([r.to_numpy() / level, np.log(rvol / level), np.log(fast / slow)])
    X[: first + spec.warm_bars] = np.nan
    return X


def _numpy_forward(params: HmmParams, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Textbook scaled forward filter with densities from NumPy's linear algebra."""
    Z = (X - params.shift) / params.scale
    k, d = params.means.shape
    logb = np.empty((len(Z), k))
    for s in range(k):
        diff = Z - params.means[s]
        inv = np.linalg.inv(params.covars[s])
        _, logdet = np.linalg.slogdet(params.covars[s])
        logb[:, s] = -0.5 * (d * math.log(2 * math.pi) + logdet + np.sum(diff @ inv * diff, 1))
    probs = np.empty((len(Z), k))
    ll = np.empty(len(Z))
    prior = params.startprob.copy()
    for t in range(len(Z)):
        m = logb[t].max()
        joint = prior * np.exp(logb[t] - m)
        c = joint.sum()
        probs[t] = joint / c
        ll[t] = m + math.log(c) - np.log(params.scale).sum()
        prior = probs[t] @ params.transmat
    return probs, ll


def test_shipped_model_is_ordered_calm_to_turbulent(params: HmmParams) -> None:
    col = FEATURE_NAMES.index("log_rvol_ratio")
    assert params.labels == ("calm", "normal", "turbulent")
    assert np.all(np.diff(params.means[:, col]) > 0)
    assert np.allclose(params.transmat.sum(axis=1), 1.0)
    td = params.meta["training_data"]
    assert td["held_out_symbols"] not in ([], None)
    assert not set(td["held_out_symbols"]) & set(td["symbols"])


def test_features_match_a_plain_pandas_computation(
    params: HmmParams, btc: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _, _ = bar_features(*btc, params.features)
    ref = _numpy_features(*btc, params.features)
    assert np.array_equal(np.isnan(X), np.isnan(ref))
    ok = np.isfinite(ref)
    assert ok.sum() > 3 * (BARS // 2)
    # pandas rolls a running sum (its rounding), the kernel re-adds the window.
    np.testing.assert_allclose(X[ok], ref[ok], rtol=1e-8, atol=1e-10)


def test_incremental_features_equal_batch(
    params: HmmParams, btc: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _, _ = bar_features(*btc, params.features)
    online = BarFeatures(params.features)
    rows = []
    for c, v in zip(*btc, strict=True):
        online.update(c, v)
        rows.append(online.values.copy())
    assert np.array_equal(np.array(rows), X, equal_nan=True)


def test_forward_filter_equals_numpy_forward(params: HmmParams, warm_features: np.ndarray) -> None:
    probs, ll = forward_filter(params, warm_features)
    ref_probs, ref_ll = _numpy_forward(params, warm_features)
    np.testing.assert_allclose(probs, ref_probs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ll, ref_ll, rtol=0, atol=1e-9)
    # Every state is visited on these bars: the comparison covers all of them.
    assert set(np.argmax(probs, axis=1)) == {0, 1, 2}


def test_forward_filter_equals_hmmlearn_forward_pass(
    params: HmmParams, warm_features: np.ndarray
) -> None:
    hmm = pytest.importorskip("hmmlearn.hmm")
    from hmmlearn import _hmmc

    model = hmm.GaussianHMM(n_components=params.n_states, covariance_type="full")
    model.n_features = len(FEATURE_NAMES)
    model.startprob_ = params.startprob
    model.transmat_ = params.transmat
    model.means_ = params.means
    model.covars_ = params.covars
    Z = (warm_features - params.shift) / params.scale
    total, fwd = _hmmc.forward_log(
        model.startprob_, model.transmat_, model._compute_log_likelihood(Z)
    )
    ref = np.exp(fwd - np.logaddexp.reduce(fwd, axis=1, keepdims=True))
    probs, ll = forward_filter(params, warm_features)
    np.testing.assert_allclose(probs, ref, rtol=0, atol=1e-9)
    # The summed per-bar likelihoods are hmmlearn's score (ours in raw feature units).
    jacobian = len(Z) * float(np.log(params.scale).sum())
    assert ll.sum() == pytest.approx(total - jacobian, rel=1e-10)
    assert model.score(Z) == pytest.approx(total, rel=1e-12)


def test_incremental_filter_equals_batch(
    params: HmmParams, btc: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _, _ = bar_features(*btc, params.features)
    first = int(np.argmax(np.all(np.isfinite(X), axis=1)))
    probs, ll = forward_filter(params, X[first:])
    regime = HmmRegime(params)
    states, online_probs, online_ll = [], [], []
    f = HmmFilter(params)
    for t, (c, v) in enumerate(zip(*btc, strict=True)):
        states.append(regime.update(c, v))
        if t >= first:
            online_ll.append(f.update(X[t]))
            online_probs.append(f.probs.copy())
    assert np.array_equal(np.array(online_probs), probs)
    assert np.array_equal(np.array(online_ll), ll)
    assert states[:first] == [-1] * first
    assert states[first:] == np.argmax(probs, axis=1).tolist()
    assert np.array_equal(regime.filter.probs, probs[-1])


def test_missing_bar_only_predicts(params: HmmParams, warm_features: np.ndarray) -> None:
    f = HmmFilter(params)
    for x in warm_features[:50]:
        f.update(x)
    before = f.probs.copy()
    assert f.update(np.full(len(FEATURE_NAMES), np.nan)) == 0.0
    np.testing.assert_allclose(f.probs, before @ params.transmat, rtol=0, atol=1e-15)
    f.reset()
    assert np.array_equal(f.probs, params.startprob)


def test_bad_bar_changes_no_feature_state(params: HmmParams) -> None:
    f = BarFeatures(params.features)
    assert not f.update(100.0, 1.0)
    state = f._state.copy()
    for close, volume in ((math.nan, 1.0), (0.0, 1.0), (-1.0, 1.0), (100.0, -1.0)):
        assert not f.update(close, volume)
        assert np.isnan(f.values).all()
        assert np.array_equal(f._state, state)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("transmat"), "missing key 'transmat'"),
        (lambda d: d.update(means=[[0.0, 0.0]]), "means: shape"),
        (lambda d: d.update(format_version=99), "format_version 99"),
        (lambda d: d["transmat"][0].__setitem__(0, 5.0), "transmat rows must sum to 1"),
        (lambda d: d["features"].update(window=1), "features:"),
    ],
)
def test_bad_parameter_file_names_file_and_key(tmp_path: Path, edit, message: str) -> None:
    doc = json.loads(MODEL.read_text())
    edit(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=message) as info:
        HmmParams.load(path)
    assert str(path) in str(info.value)


def test_round_trip(params: HmmParams, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(params.to_json()))
    again = HmmParams.load(path)
    for name in ("startprob", "transmat", "means", "covars", "shift", "scale"):
        assert np.array_equal(getattr(again, name), getattr(params, name))
    assert again.features == params.features
    assert again.meta == params.meta


def test_step_kernels_allocate_nothing_per_bar(
    params: HmmParams, warm_features: np.ndarray
) -> None:
    """numba's runtime counts every array it allocates: the batch loops over the step
    kernels make the same number of allocations for 100 bars as for thousands."""
    from numba.core.runtime import _nrt_python, rtsys

    was_enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:

        def allocations(fn) -> int:
            before = rtsys.get_allocation_stats().alloc
            fn()
            return rtsys.get_allocation_stats().alloc - before

        n = len(warm_features)
        assert n > 1000
        close = np.exp(np.cumsum(warm_features[:, 0] * 1e-3)) * 100.0
        volume = np.exp(warm_features[:, 2])
        counts = [
            allocations(lambda m=m: forward_filter(params, warm_features[:m])) for m in (100, n)
        ]
        assert counts[0] == counts[1]
        counts = [
            allocations(lambda m=m: bar_features(close[:m], volume[:m], params.features))
            for m in (100, n)
        ]
        assert counts[0] == counts[1]
    finally:
        if not was_enabled:
            _nrt_python.memsys_disable_stats()

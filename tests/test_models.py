"""engine.models: features without look-ahead, checked ONNX loading, iobinding, cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine import EngineError
from engine.feeds._capture import BookTicker, Trade
from engine.models import (
    FEATURE_NAMES,
    Ensemble,
    FeatureBuilder,
    FeatureSpec,
    ModelError,
    OnnxModel,
    ScoreCache,
    default_feature_spec,
    features_at,
    read_events,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "onnx"
SAMPLE = ROOT / "data" / "sample" / "btcusdt_20240808_180s.gz"


@pytest.fixture(scope="session")
def spec() -> FeatureSpec:
    return default_feature_spec()


@pytest.fixture(scope="session")
def sample_events():
    """The first 60 s of the bundled sample (enough to warm every feature)."""
    events = []
    for ts, msg in read_events([SAMPLE]):
        if events and ts - events[0][0] > 60e9:
            break
        events.append((ts, msg))
    return events


@pytest.fixture(scope="session")
def shipped() -> list[Path]:
    paths = sorted(SHIPPED.glob("*.onnx"))
    assert paths, "models/onnx ships no model"
    return paths


def test_public_surface():
    import engine.models as m

    public = {n for n in vars(m) if not n.startswith("_") and type(vars(m)[n]).__name__ != "module"}
    assert set(m.__all__) == public
    assert issubclass(ModelError, EngineError)


def test_spec_has_the_features(spec):
    assert spec.names == FEATURE_NAMES
    assert len(spec.names) >= 18
    with pytest.raises(ValueError, match="unknown feature"):
        FeatureSpec(names=("side", "nope"))


def test_features_warm_up_and_are_finite(sample_events, spec):
    rows = features_at(sample_events, {len(sample_events) - 1: -1.0}, spec)
    assert rows.dtype == np.float32
    assert np.isfinite(rows).all(), dict(zip(spec.names, rows[0], strict=True))
    assert rows[0, spec.names.index("side")] == -1.0


def _perturb_after(events, t):
    """Events after ``t`` replaced by wild prices, sizes and sides (times kept)."""
    rng = np.random.default_rng(0)
    out = list(events[: t + 1])
    for ts, msg in events[t + 1 :]:
        if isinstance(msg, BookTicker):
            f = float(rng.uniform(0.5, 1.5))
            msg = BookTicker(
                symbol=msg.symbol, bid=msg.bid * f, ask=msg.ask * f, bid_qty=9.0, ask_qty=0.1
            )
        elif isinstance(msg, Trade):
            msg = Trade(
                symbol=msg.symbol,
                price=msg.price * float(rng.uniform(0.5, 1.5)),
                qty=50.0,
                buyer_maker=not msg.buyer_maker,
            )
        out.append((ts, msg))
    return out


def test_no_look_ahead(sample_events, spec):
    n = len(sample_events)
    at = {t: 1.0 for t in (n // 2, n // 2 + 7, (3 * n) // 4)}
    base = features_at(sample_events, at, spec)
    for t in at:
        changed = _perturb_after(sample_events, t)
        rows = features_at(changed, at, spec)
        k = sorted(at).index(t)
        np.testing.assert_array_equal(rows[: k + 1], base[: k + 1])
        # ...and the perturbation does reach the rows after it.
        if k + 1 < len(at):
            assert not np.array_equal(rows[k + 1 :], base[k + 1 :])


def test_builder_row_is_features_at(sample_events, spec):
    b = FeatureBuilder(spec)
    for ts, msg in sample_events:
        b.on_event(ts, msg)
    out = np.empty(b.n_features, dtype=np.float32)
    b.row(1.0, out)
    ref = features_at(sample_events, {len(sample_events) - 1: 1.0}, spec)[0]
    np.testing.assert_array_equal(out, ref)
    assert b.ready(out)


# -- shipped models: no ../shared needed -------------------------------------------------


def test_shipped_models_load_and_score(shipped, spec, sample_events):
    row = features_at(sample_events, {len(sample_events) - 1: 1.0}, spec)[0]
    for path in shipped:
        side = json.loads(path.with_suffix(".json").read_text())
        assert side["ir_version"] == 9
        assert side["feature_names"] == list(spec.names)
        assert path.stat().st_size < 1_000_000
        model = OnnxModel.load(path, spec)
        p = model.predict_one(row)
        assert 0.0 <= p <= 1.0


def test_iobinding_equals_session_run(shipped, spec):
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(20, len(spec.names))).astype(np.float32)
    for path in shipped:
        model = OnnxModel.load(path, spec)
        for r in rows:
            assert model.predict_one(r) == model.predict_one_run(r)
        np.testing.assert_allclose(
            model.predict_batch(rows), [model.predict_one_run(r) for r in rows], atol=1e-6
        )


def _copy(shipped: list[Path], tmp_path: Path) -> Path:
    src = shipped[0]
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_wrong_feature_order_refused(shipped, spec, tmp_path):
    dst = _copy(shipped, tmp_path)
    side = json.loads(dst.with_suffix(".json").read_text())
    names = side["feature_names"]
    names[1], names[2] = names[2], names[1]
    dst.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="feature_names") as info:
        OnnxModel.load(dst, spec)
    assert info.value.field == "feature_names"
    assert dst.with_suffix(".json").name in str(info.value)


def test_wrong_sha256_refused(shipped, spec, tmp_path):
    dst = _copy(shipped, tmp_path)
    side = json.loads(dst.with_suffix(".json").read_text())
    side["onnx_sha256"] = "0" * 64
    dst.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="onnx_sha256") as info:
        OnnxModel.load(dst, spec)
    assert info.value.field == "onnx_sha256"


def test_tampered_model_refused(shipped, spec, tmp_path):
    dst = _copy(shipped, tmp_path)
    dst.write_bytes(dst.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="onnx_sha256"):
        OnnxModel.load(dst, spec)


def test_wrong_dtype_and_missing_sidecar_refused(shipped, spec, tmp_path):
    dst = _copy(shipped, tmp_path)
    side = json.loads(dst.with_suffix(".json").read_text())
    side["input_dtype"] = "float64"
    dst.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="input_dtype"):
        OnnxModel.load(dst, spec)
    dst.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="no sidecar"):
        OnnxModel.load(dst, spec)


def test_ensemble_is_the_weighted_mean(shipped, spec):
    models = [OnnxModel.load(p, spec) for p in shipped]
    weights = list(range(1, len(models) + 1))
    ens = Ensemble(models, weights)
    rows = np.random.default_rng(2).normal(size=(5, len(spec.names))).astype(np.float32)
    w = np.array(weights) / sum(weights)
    want = sum(wi * m.predict_batch(rows) for wi, m in zip(w, models, strict=True))
    np.testing.assert_allclose(ens.predict_batch(rows), want, atol=1e-7)
    assert ens.predict_one(rows[0]) == pytest.approx(want[0], abs=1e-6)
    with pytest.raises(ValueError):
        Ensemble(models, [1.0])


def test_cache_hits_on_quantized_rows(shipped, spec):
    model = OnnxModel.load(shipped[0], spec)
    cache = ScoreCache(model, maxsize=2, quantum=1e-2)
    row = np.linspace(-1, 1, len(spec.names)).astype(np.float32)
    p = cache.predict_one(row)
    assert cache.predict_one(row + 1e-4) == p  # same grid point
    assert (cache.hits, cache.misses) == (1, 1)
    cache.predict_one(row + 1.0)
    cache.predict_one(row + 2.0)  # evicts the first
    assert len(cache) == 2
    cache.predict_one(row)
    assert (cache.hits, cache.misses) == (1, 4)

"""engine.models: Ticks features without look-ahead, checked ONNX loading, iobinding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import attrs
import numpy as np
import pytest

from engine import EngineError
from engine.feeds import CaptureStats, merge_captures
from engine.feeds._columns import Columns, append_message
from engine.feeds._tape import COLUMN_NAMES
from engine.messages import EventKind, Ticks
from engine.models import (
    DEPTH_FEATURES,
    FEATURE_NAMES,
    Ensemble,
    FeatureBuilder,
    FeatureSpec,
    ModelError,
    OnnxModel,
    default_feature_spec,
    features_at,
    read_events,
    ticks_of,
    training_rows,
)
from engine.models._features import events_features_at

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "onnx"
SAMPLE = ROOT / "data" / "sample" / "btcusdt_20240808_180s.gz"


@pytest.fixture(scope="session")
def spec() -> FeatureSpec:
    return default_feature_spec()


@pytest.fixture(scope="session")
def sample_events():
    """The bundled sample's first 90 s as decoded messages (the replay feed's reader)."""
    events = []
    for ts, msg in merge_captures([SAMPLE], CaptureStats()):
        if events and ts - events[0][0] > 90e9:
            break
        events.append((ts, msg))
    return events


def _columns(events) -> Ticks:
    cols = Columns()
    for seq, (ts, msg) in enumerate(events):
        append_message(cols, ts, seq, msg)
    ticks = cols.take()
    assert ticks is not None
    return ticks


@pytest.fixture(scope="session")
def sample_ticks(sample_events) -> Ticks:
    """The same events as the columns the replay feed builds."""
    return _columns(sample_events)


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


def test_default_spec_is_every_ticks_feature(spec):
    assert spec.names == tuple(n for n in FEATURE_NAMES if n not in DEPTH_FEATURES)
    assert not spec.needs_depth
    assert {"regime_vol", "regime_volume", "regime_trend"} <= set(spec.names)
    assert set(DEPTH_FEATURES) <= set(FEATURE_NAMES)
    assert len(spec.names) >= 20
    with pytest.raises(ValueError, match="unknown feature"):
        FeatureSpec(names=("side", "nope"))


def test_ticks_of_builds_the_feed_columns(sample_ticks):
    ticks = ticks_of([SAMPLE])
    n = len(sample_ticks)
    assert ticks.ts[0] == sample_ticks.ts[0]
    for field in ("ts", "kind", "bid", "ask", "price", "qty", "buyer_maker"):
        np.testing.assert_array_equal(getattr(ticks, field)[:n], getattr(sample_ticks, field))
    assert set(np.unique(ticks.kind)) <= {int(k) for k in EventKind}


def test_features_warm_up_and_are_finite(sample_ticks, spec):
    rows = features_at(sample_ticks, {len(sample_ticks) - 1: -1.0}, spec)
    assert rows.dtype == np.float32
    assert np.isfinite(rows).all(), dict(zip(spec.names, rows[0], strict=True))
    assert rows[0, spec.names.index("side")] == -1.0


def _rows64(builder: FeatureBuilder) -> np.ndarray:
    return builder.row(1.0, np.empty(builder.n_features, dtype=np.float64))


def test_on_ticks_equals_on_event(sample_events, sample_ticks):
    """Same quotes and trades, two ways in: the same rows, in float64, at many points."""
    spec = FeatureSpec(names=FEATURE_NAMES)
    by_event, by_ticks = FeatureBuilder(spec), FeatureBuilder(spec)
    checks = 0
    pos = 0
    step = 997
    ticks_cols = [n for n in spec.names if n not in DEPTH_FEATURES]
    keep = [spec.names.index(n) for n in ticks_cols]
    for i, (ts, msg) in enumerate(sample_events):
        by_event.on_event(ts, msg)
        if i % step == step - 1 or i == len(sample_events) - 1:
            by_ticks.on_ticks(sample_ticks, pos, i + 1)
            pos = i + 1
            a, b = _rows64(by_event)[keep], _rows64(by_ticks)[keep]
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=0.0)
            assert by_event.regime() == by_ticks.regime()
            checks += np.isfinite(a).all()
    assert checks > 10


def test_chunking_does_not_matter(sample_ticks, spec):
    rng = np.random.default_rng(5)
    whole, chunked = FeatureBuilder(spec), FeatureBuilder(spec)
    whole.on_ticks(sample_ticks, 0, len(sample_ticks))
    cuts = np.sort(rng.choice(len(sample_ticks), 300, replace=False))
    pos = 0
    for c in [*cuts.tolist(), len(sample_ticks)]:
        chunked.on_ticks(sample_ticks, pos, c)
        chunked.on_ticks(sample_ticks, c, c)  # empty range: nothing
        pos = c
    np.testing.assert_array_equal(_rows64(chunked), _rows64(whole))
    np.testing.assert_array_equal(chunked.indicators.state, whole.indicators.state)


def test_other_rows_are_ignored(sample_ticks, spec):
    """DEPTH, KLINE and MARK rows change nothing: same rows as without them."""
    rng = np.random.default_rng(6)
    n = len(sample_ticks)
    other = rng.random(n) < 0.2
    kind = sample_ticks.kind.copy()
    kind[other] = rng.choice([EventKind.DEPTH, EventKind.KLINE, EventKind.MARK], other.sum())
    noisy = attrs.evolve(sample_ticks, kind=kind)
    # Row columns are masked; the (empty here) book state arrays are per state, not per row.
    kept = attrs.evolve(
        sample_ticks, **{name: getattr(sample_ticks, name)[~other] for name in COLUMN_NAMES}
    )
    a, b = FeatureBuilder(spec), FeatureBuilder(spec)
    a.on_ticks(noisy)
    b.on_ticks(kept)
    np.testing.assert_array_equal(_rows64(a), _rows64(b))


def _perturb_after(ticks: Ticks, t: int) -> Ticks:
    """Rows after ``t`` replaced by wild prices, sizes, sides and later times."""
    rng = np.random.default_rng(0)
    n = len(ticks)
    after = np.arange(n) > t
    f = np.where(after, rng.uniform(0.5, 1.5, n), 1.0)
    shift = np.where(after, np.cumsum(rng.integers(0, 3_000_000_000, n)), 0)
    return attrs.evolve(
        ticks,
        ts=ticks.ts + shift,
        bid=ticks.bid * f,
        ask=ticks.ask * f,
        bid_qty=np.where(after, 9.0, ticks.bid_qty),
        ask_qty=np.where(after, 0.1, ticks.ask_qty),
        price=ticks.price * f,
        qty=np.where(after, 50.0, ticks.qty),
        buyer_maker=np.where(after, 1 - ticks.buyer_maker, ticks.buyer_maker).astype(np.int8),
    )


def test_no_look_ahead(sample_ticks, spec):
    n = len(sample_ticks)
    at = {t: 1.0 for t in (n // 2, n // 2 + 7, (3 * n) // 4, n - 2)}
    base = features_at(sample_ticks, at, spec)
    assert np.isfinite(base).all()
    for t in at:
        changed = _perturb_after(sample_ticks, t)
        rows = features_at(changed, at, spec)
        k = sorted(at).index(t)
        np.testing.assert_array_equal(rows[: k + 1], base[: k + 1])
        # ...and the perturbation does reach the rows after it.
        if k + 1 < len(at):
            assert not np.array_equal(rows[k + 1 :], base[k + 1 :])


def test_builder_row_is_features_at(sample_ticks, spec):
    b = FeatureBuilder(spec)
    b.on_ticks(sample_ticks, 0, len(sample_ticks))
    out = np.empty(b.n_features, dtype=np.float32)
    b.row(1.0, out)
    ref = features_at(sample_ticks, [(len(sample_ticks) - 1, 1.0)], spec)[0]
    np.testing.assert_array_equal(out, ref)
    assert b.ready(out)


def test_regime_features_are_the_regime(sample_ticks, spec):
    b = FeatureBuilder(spec)
    seen = set()
    for stop in range(2000, len(sample_ticks), 1500):
        b.on_ticks(sample_ticks, stop - 1500 if stop > 2000 else 0, stop)
        row = b.row(1.0)
        r = b.regime()
        got = [row[spec.names.index(f"regime_{c}")] for c in ("vol", "volume", "trend")]
        want = [r.vol, r.volume, r.trend]
        assert [(-1 if np.isnan(g) else int(g)) for g in got] == want
        seen.add(r.key)
    assert any("unknown" not in k for k in seen)


def test_depth_features_need_the_event_path(sample_events, sample_ticks):
    """The book comes from depth messages and snapshots, which Ticks rows do not carry."""
    spec = FeatureSpec(names=("side", *DEPTH_FEATURES))
    events = list(read_events([SAMPLE]))[:20_000]
    rows = events_features_at(events, {len(events) - 1: 1.0}, spec)
    assert np.isfinite(rows).all()
    assert np.isnan(features_at(sample_ticks, {len(sample_ticks) - 1: 1.0}, spec)[0, 1:]).all()


# -- shipped models: no ../shared needed -------------------------------------------------


def test_shipped_models_load_and_score(shipped, spec, sample_ticks):
    row = features_at(sample_ticks, {len(sample_ticks) - 1: 1.0}, spec)[0]
    for path in shipped:
        side = json.loads(path.with_suffix(".json").read_text())
        assert side["ir_version"] == 9
        assert side["feature_names"] == list(spec.names)
        assert side["feature_spec_version"] == spec.version
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


def test_from_bytes_checks_like_load(shipped, spec):
    path = shipped[0]
    blob = path.read_bytes()
    side = json.loads(path.with_suffix(".json").read_text())
    row = np.linspace(-1, 1, len(spec.names)).astype(np.float32)
    model = OnnxModel.from_bytes(blob, side, spec)
    assert model.predict_one(row) == OnnxModel.load(path, spec).predict_one(row)
    with pytest.raises(ModelError, match="onnx_sha256"):
        OnnxModel.from_bytes(blob + b"\0", side, spec)


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


def test_training_rows_find_signals_by_time(spec):
    ticks = ticks_of([SAMPLE])
    quotes = np.flatnonzero(ticks.kind == EventKind.QUOTE)
    picks = [int(quotes[k]) for k in (30_000, 12_000, 20_000)]
    # The first quote at a time: step back over quotes sharing it.
    picks = [int(quotes[np.searchsorted(ticks.ts[quotes], ticks.ts[i])]) for i in picks]
    signals = [(int(ticks.ts[i]), side) for i, side in zip(picks, (1, -1, 1), strict=True)]
    got = training_rows([SAMPLE], "BTCUSDT", signals, spec)
    for row, i, (_t, side) in zip(got, picks, signals, strict=True):
        np.testing.assert_array_equal(row, features_at(ticks, {i: float(side)}, spec)[0])
    with pytest.raises(ValueError, match="no quote"):
        training_rows([SAMPLE], "BTCUSDT", [(int(ticks.ts[0]) - 1, 1)], spec)


@pytest.mark.parametrize("key", ["cache_size", "cache_quantum"])
def test_a_config_that_still_sets_the_removed_score_cache_is_refused(key):
    from engine import ConfigError
    from engine._config import config_from_dict

    with pytest.raises(ConfigError, match=f"x.toml: model.{key}: removed: the score cache") as exc:
        config_from_dict({"model": {key: 1}}, source="x.toml")
    assert exc.value.key == f"model.{key}"

"""The HMM regime in the entry filter (``[model] regime = "hmm"``): bars from the ticks, one
forward-filter step per bar, the threshold regime while it warms up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
import trio
from test_model_filter import FAST  # the strategy the shipped entry models were trained for

from engine import load_config
from engine.actors._filter import EntryFilter, hmm_vol_level
from engine.messages import EventKind
from engine.models import ModelError, default_feature_spec, ticks_of
from engine.models._hmm import HmmParams, TradeBarRegime, bar_features, forward_filter
from engine.models._regime import HIGH, LOW, NORMAL
from engine.testing import replay, replay_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
SHIPPED = ROOT / "models/onnx/regime/hmm3.json"
MODELS = [str(ROOT / f"models/onnx/entry_filter_{k}.onnx") for k in ("gbdt", "rf", "mlp")]
# The shipped model's bars are 1 minute: 150 of them to warm up, longer than any capture.
# The sample is 180 s: the same parameters on 500 ms bars warm up within it.
FAST_BAR_MS = 500


def fast_model(tmp_path: Path) -> Path:
    doc = json.loads(SHIPPED.read_text())
    doc["bar_ms"] = FAST_BAR_MS
    path = tmp_path / "hmm_500ms.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def ticks():
    return ticks_of([SAMPLE])


def _feed(params: HmmParams, ticks, chunks: list[int]) -> list[tuple[float, float, int]]:
    """The sample's ticks through an :class:`EntryFilter` in the given chunk sizes; its bars."""
    cfg = load_config(ROOT / "config.toml")
    flt = EntryFilter(
        symbol="BTCUSDT",
        spec=default_feature_spec(),
        model=attrs.evolve(cfg.model, regime="hmm"),
        strategy=cfg.strategy,
        venue=cfg.venue,
        regime_model=params,
    )
    trace: list[tuple[float, float, int]] = []
    flt.hmm = TradeBarRegime(params, trace=trace)
    pos, i = 0, 0
    while pos < len(ticks):
        stop = min(len(ticks), pos + chunks[i % len(chunks)])
        flt.begin(ticks.rows(pos, stop))
        # A signal's scan feeds the filter up to its row, then the rest of the batch.
        mid = (stop - pos) // 3
        flt.advance(mid)
        flt.advance(stop - pos)
        pos, i = stop, i + 1
    assert flt.hmm.bars == len(trace)
    return trace


def _offline_bars(ticks, bar_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed bars of the trades, by NumPy: last price and summed quantity per bar."""
    trade = (ticks.kind == int(EventKind.TRADE)) & np.isfinite(ticks.price)
    ts, price, qty = ticks.ts[trade], ticks.price[trade], ticks.qty[trade]
    bar = ts // (bar_ms * 1_000_000)
    first, last = int(bar[0]), int(bar[-1])
    close = np.full(last - first, np.nan)
    volume = np.zeros(last - first)
    for b in range(first, last):  # the last bar is still open: not closed
        rows = np.flatnonzero(bar == b)
        if rows.size:
            close[b - first] = price[rows[-1]]
            volume[b - first] = qty[rows].sum()
        else:
            close[b - first] = close[b - first - 1]
    return close, volume


def test_the_hmm_regimes_equal_an_offline_forward_pass_on_the_same_bars(ticks, tmp_path):
    params = HmmParams.load(fast_model(tmp_path))
    trace = _feed(params, ticks, [997])
    close = np.array([c for c, _, _ in trace])
    volume = np.array([v for _, v, _ in trace])
    states = np.array([s for _, _, s in trace])
    # The bars are the trades' (last price, summed quantity), as NumPy cuts them.
    want_close, want_volume = _offline_bars(ticks, FAST_BAR_MS)
    assert len(trace) == len(want_close) > 300
    np.testing.assert_array_equal(close, want_close)
    np.testing.assert_allclose(volume, want_volume, rtol=1e-12, atol=0)
    # Offline: the batch features and the batch forward filter from the first warm bar.
    X, _, _ = bar_features(close, volume, params.features)
    warm = int(np.flatnonzero(np.isfinite(X).all(axis=1))[0])
    assert warm == params.features.window + params.features.warm_bars
    probs, _ = forward_filter(params, X[warm:])
    want = np.concatenate([np.full(warm, -1), probs.argmax(axis=1)])
    np.testing.assert_array_equal(states, want)
    assert len(set(want[warm:].tolist())) >= 2, "the sample visits more than one state"
    # However the ticks are batched, the same bars and states.
    assert _feed(params, ticks, [1, 7, 5000, 313]) == trace


def test_a_gap_longer_than_the_warm_up_starts_the_hmm_afresh():
    params = attrs.evolve(HmmParams.load(SHIPPED), bar_ms=1000)
    trace: list[tuple[float, float, int]] = []
    bars = TradeBarRegime(params, trace=trace)
    sec = 1_000_000_000
    ts = np.array([0, sec, 3 * sec, (4 + bars.max_gap + 1) * sec, (6 + bars.max_gap) * sec])
    kind = np.full(ts.shape, int(EventKind.TRADE), dtype=np.int8)
    price = np.array([100.0, 101.0, 102.0, 103.0, 104.0])
    qty = np.ones(5)
    bars.on_ticks(ts, kind, price, qty, 0, len(ts))
    # Bars 0, 1, an empty 2 at the last close, 3; the gap is a break (no empty bars), then
    # the bar after it closes.
    assert [(c, v) for c, v, _ in trace] == [
        (100.0, 1.0),
        (101.0, 1.0),
        (101.0, 0.0),
        (102.0, 1.0),
        (103.0, 1.0),
    ]
    assert bars.breaks == 1 and bars.state == -1


def test_states_map_to_vol_levels():
    assert [hmm_vol_level(s, 3) for s in range(3)] == [LOW, NORMAL, HIGH]
    assert [hmm_vol_level(s, 2) for s in range(2)] == [LOW, HIGH]


def _config(tmp_path: Path, **model):
    return replay_config(
        tmp_path,
        [SAMPLE],
        strategy=FAST,
        model={"enabled": True, "paths": MODELS, "retrain": False, **model},
    )


def test_a_replay_with_the_hmm_regime_uses_it_once_warm(tmp_path):
    path = fast_model(tmp_path)
    report = trio.run(replay, _config(tmp_path / "a", regime="hmm", regime_model=str(path)))
    model = report.model
    assert model["regime_hmm"] > 0 and model["regime_fallback"] > 0
    assert model["regime_hmm"] + model["regime_fallback"] == model["requests"]
    assert model["regime_bars"] == len(_offline_bars(ticks_of([SAMPLE]), FAST_BAR_MS)[0])
    # Deterministic, whatever the step length.
    config = _config(tmp_path / "b", regime="hmm", regime_model=str(path))
    config = attrs.evolve(config, replay=attrs.evolve(config.replay, step_ms=7))
    again = trio.run(replay, config)
    assert again.journal_sha256 == report.journal_sha256


def test_a_cold_hmm_falls_back_to_the_threshold_regime_exactly(tmp_path):
    # The shipped model (1-minute bars) never warms up on a 180 s sample: every proposal
    # uses the threshold regime, counted, and the journal is the threshold regime's.
    hmm = trio.run(replay, _config(tmp_path / "hmm", regime="hmm", regime_model=str(SHIPPED)))
    threshold = trio.run(replay, _config(tmp_path / "threshold"))
    assert hmm.model["regime_hmm"] == 0
    assert hmm.model["regime_fallback"] == hmm.model["requests"] > 0
    assert "regime_fallback" not in threshold.model
    assert hmm.journal_sha256 == threshold.journal_sha256


@pytest.mark.parametrize(
    ("content", "said"),
    [(None, "cannot read HMM parameters"), ('{"format_version": 1}', "feature_version")],
)
def test_a_bad_regime_model_is_refused_in_one_line(tmp_path, content, said):
    path = tmp_path / "hmm.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ModelError, match=r"model\.regime_model"):
        trio.run(replay, _config(tmp_path, regime="hmm", regime_model=str(path)))
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        f'[data]\npaths = ["{SAMPLE}"]\n[journal]\ndir = "{tmp_path}/runs"\n'
        f'[logging]\npath = "{tmp_path}/log.jsonl"\n'
        f"[model]\nenabled = true\npaths = {json.dumps(MODELS)}\n"
        f'regime = "hmm"\nregime_model = "{path}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    said_lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("trireme: ")]
    assert len(said_lines) == 1, proc.stderr
    assert "model.regime_model" in said_lines[0] and str(path) in said_lines[0]
    assert said in said_lines[0]


def test_the_regime_key_is_validated():
    from engine._config import ModelSection

    with pytest.raises(ValueError, match="regime"):
        ModelSection(regime="markov")

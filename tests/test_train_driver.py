"""Training rows from the engine's own replay (tools.train._driver_data), on the bundled sample."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.models import default_feature_spec
from tools.train._driver_data import driver_signals, take_all
from tools.train._evaluate import strategy_of
from tools.train._train import build_dataset

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "btcusdt_20240808_180s.gz"


@pytest.fixture(scope="module")
def config() -> engine.Config:
    return engine.load_config(ROOT / "config.toml")


@pytest.fixture(scope="module")
def signals(config, tmp_path_factory):
    return driver_signals(config, [SAMPLE], tmp_path_factory.mktemp("driver"))


def test_take_all_config(config):
    m = take_all(config).model
    assert (m.enabled, m.threshold, m.threshold_min, m.adapt_gain, m.retrain) == (
        True,
        0.0,
        0.0,
        0.0,
        False,
    )
    assert take_all(config).strategy == config.strategy


def test_every_signal_scored_taken_and_labelled_by_the_engine(signals):
    n = len(signals.ts)
    assert n > 0
    assert signals.X.shape == (n, len(default_feature_spec().names))
    assert np.isfinite(signals.X).all()  # not-warm signals are never scored
    assert np.all(np.diff(signals.ts) >= 0)
    assert len(signals.labelled) > 0
    db = sqlite3.connect(f"file:{signals.journal_path}?mode=ro", uri=True)
    try:
        scored = [
            json.loads(p)
            for (p,) in db.execute("SELECT payload FROM journal WHERE kind = 'EntryScored'")
        ]
        fills = db.execute("SELECT COUNT(*) FROM journal WHERE kind = 'OrderFilled'").fetchone()
    finally:
        db.close()
    assert all(r["taken"] for r in scored) and len(scored) == n
    assert fills[0] > 0
    lab = signals.labelled
    # The documented label rule: 1 when the return after fees is positive.
    assert np.array_equal(signals.label[lab] == 1, signals.ret_bps[lab] > 0.0)
    assert np.isnan(signals.ret_bps[signals.label < 0]).all()


def test_rows_and_labels_match_the_offline_builder(config, signals):
    """At every decision both see, the engine's row and label equal the offline ones."""
    ds = build_dataset([SAMPLE], strategy_of(config))
    offline_ts = ds.ticks.ts[ds.signal_index]
    common = np.intersect1d(signals.ts[signals.labelled], offline_ts)
    assert len(common) > 0
    for t in common:
        i = np.flatnonzero(signals.ts == t)[0]
        j = np.flatnonzero(offline_ts == t)[0]
        np.testing.assert_allclose(signals.X[i], ds.X[j], rtol=1e-5, atol=1e-6)
        assert signals.label[i] == ds.y[j]

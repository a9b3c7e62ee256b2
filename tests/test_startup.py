"""Start-up: the feature kernels compile only the feature set's indicators, once.

(Timings are in ``python -m tools.bench startup``, not here.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest

import engine.models._features as features
from engine.feeds import CaptureStats, merge_captures
from engine.feeds._columns import Columns, append_message
from engine.indicators import _set
from engine.models import FeatureBuilder, default_feature_spec
from engine.models._features import features_at

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"


@pytest.fixture(scope="session")
def ticks():
    """The sample's first 20,000 events as the columns the replay feed builds."""
    cols = Columns()
    for seq, (ts, msg) in enumerate(merge_captures([SAMPLE], CaptureStats())):
        if seq == 20_000:
            break
        append_message(cols, ts, seq, msg)
    out = cols.take()
    assert out is not None
    return out


def test_feature_kernels_call_the_feature_sets_own_indicator_kernels():
    b = FeatureBuilder(default_feature_spec())
    kernels = b.indicators.kernels
    assert kernels is not _set  # a writable tree: generated
    assert b._k is not features
    assert b._k.update_quote is kernels.update_quote
    assert b._k.update_trade is kernels.update_trade
    # The generated set module holds only the set's kernels: the MACD branch is there,
    # the (unused) Kaufman adaptive moving average's is not.
    text = Path(kernels.__file__).read_text()
    assert "macd_update" in text and "kama_update" not in text


def test_specialized_feature_rows_equal_the_generic_kernels(ticks, monkeypatch):
    spec = default_feature_spec()
    at = {i: 1.0 for i in range(500, len(ticks), 997)}
    fast = features_at(ticks, at, spec)
    monkeypatch.setattr(features, "_kernels", lambda indicators: features)
    generic = features_at(ticks, at, spec)
    np.testing.assert_array_equal(fast, generic)
    assert np.isfinite(fast[-1]).all()


def test_one_compilation_serves_tape_and_live_columns(ticks):
    FeatureBuilder.warm_up()
    b = FeatureBuilder(default_feature_spec())
    # Live columns (Columns.take) carry writable kind/side arrays; the tape's are read-only.
    assert ticks.kind.flags.writeable
    b.on_ticks(ticks, 0, 100)
    frozen = ticks.kind.copy()
    frozen.flags.writeable = False
    b.on_ticks(attrs.evolve(ticks, kind=frozen), 100, 200)
    assert len(b._k._consume_ticks.signatures) == 1


def _copy_engine(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "engine"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())


def test_a_stale_feature_cache_is_dropped_at_warm_up_not_at_import(tmp_path: Path):
    _copy_engine(tmp_path)
    cache = tmp_path / "engine/models/__pycache__"
    (cache / "sets/__pycache__").mkdir(parents=True)
    stamp = cache / "numba-kernels.sha256"
    stamp.write_text("a digest of other sources")
    stale = [
        cache / "_features._consume_ticks-1.py311.nbi",
        cache / "sets/set_0123.py",
        cache / "sets/__pycache__/set_0123._consume_ticks-1.py311.nbi",
    ]
    for path in stale:
        path.write_text("")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def python(code: str) -> None:
        subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True)

    python("import engine.models, engine.models._features")
    assert all(p.exists() for p in stale)  # importing touches nothing
    python(
        "from engine.models import FeatureBuilder, default_feature_spec as d; FeatureBuilder(d())"
    )
    assert not any(p.exists() for p in stale)
    assert stamp.read_text() != "a digest of other sources"
    generated = list((cache / "sets").glob("set_*.py"))
    assert len(generated) == 1  # the builder's own kernels, written afresh

"""Start-up: the feature kernels compile only the feature set's indicators, once; a
missing kernel cache compiles in a child process while the replay starts, an unreadable
one is rebuilt, and the rows are the same every way.

(Timings are in ``python -m tools.bench startup``, not here.)
"""

from __future__ import annotations

import json
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
    b.row(1.0)  # on a cold cache the ranges wait for the background compile until here
    assert len(b._k._consume_ticks.signatures) == 1


class _Gate:
    """Stands in for the child process of a background compile: done when opened."""

    def __init__(self) -> None:
        self.open = False
        self.waited = 0

    def done(self) -> bool:
        return self.open

    def wait(self) -> None:
        self.waited += 1
        self.open = True


def test_ranges_kept_while_the_kernel_compiles_give_the_same_rows(ticks, monkeypatch):
    spec = default_feature_spec()
    want = features_at(ticks, {9_999: 1.0, 19_999: -1.0}, spec)
    module = FeatureBuilder(spec)._k
    gate = _Gate()
    monkeypatch.setitem(features._compiling, module, gate)

    # Consumed at the first row: the builder waits for the compile there.
    a = FeatureBuilder(spec)
    before = a.indicators.values.copy()
    a.on_ticks(ticks, 0, 4_000)
    a.on_ticks(ticks, 4_000, 10_000)
    np.testing.assert_array_equal(a.indicators.values, before)  # nothing consumed yet
    np.testing.assert_array_equal(a.row(1.0), want[0])
    assert gate.waited == 1
    a.on_ticks(ticks, 10_000, 20_000)  # compiled: consumed at once
    np.testing.assert_array_equal(a.row(-1.0), want[1])

    # Consumed by the first on_ticks after the compile is done, before its own range.
    gate.open = False
    b = FeatureBuilder(spec)
    b.on_ticks(ticks, 0, 7_000)
    gate.open = True
    b.on_ticks(ticks, 7_000, 10_000)
    np.testing.assert_array_equal(b.row(1.0), want[0])


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


_COLD_RUN = """
import sys
import numpy as np
import engine.models._features as f
from engine.models import FeatureBuilder, default_feature_spec, features_at
from engine.strategy import _ema_cross
ticks = f.ticks_of([sys.argv[1]])
FeatureBuilder.warm_up(background=True)
_ema_cross.warm_up()
at = {i: 1.0 for i in range(500, 20_000, 997)}
rows = features_at(ticks, at, default_feature_spec())
np.save(sys.argv[2], rows)
print("background" if f._compiling else "loaded")
"""


@pytest.mark.slow
def test_start_up_with_a_missing_then_a_corrupt_kernel_cache(tmp_path: Path, ticks):
    # A first run compiles in a child process, a second loads the cache, and a run on
    # cache files that numba cannot read recompiles: the same rows every time.
    cache = tmp_path / "numba"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}

    def run(name: str) -> tuple[str, np.ndarray]:
        out = tmp_path / f"{name}.npy"
        done = subprocess.run(
            [sys.executable, "-c", _COLD_RUN, str(SAMPLE), str(out)],
            cwd=tmp_path,
            env=env,
            check=False,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip(), np.load(out)

    full = features_at(ticks, {i: 1.0 for i in range(500, 20_000, 997)}, default_feature_spec())
    how, rows = run("missing")
    assert how == "background"
    np.testing.assert_array_equal(rows, full)
    how, again = run("cached")
    assert how == "loaded"
    np.testing.assert_array_equal(again, rows)
    indexes = sorted(cache.rglob("*.nbi"))
    data = sorted(cache.rglob("*.nbc"))
    assert any("_consume_ticks" in p.name for p in indexes)
    assert any("_ema_cross.scan" in p.name for p in indexes)
    for path in data:  # every data file truncated: the indexes still list them
        path.write_bytes(path.read_bytes()[:10])
    how, broken = run("corrupt_data")
    np.testing.assert_array_equal(broken, rows)
    for path in cache.rglob("*.nbi"):
        path.write_bytes(b"not a pickle")
    how, broken = run("corrupt_index")
    assert how == "background"
    np.testing.assert_array_equal(broken, rows)


def test_kernel_load_skips_numbas_blas_probe_and_scipy_still_imports():
    # numba's BLAS probe imports scipy.linalg (a warm start's largest single cost); the
    # kernels do not need it, and scipy stays importable afterwards.
    code = (
        "import sys\n"
        "from engine.strategy import _ema_cross\n"
        "_ema_cross.warm_up()\n"
        "assert 'scipy.linalg' not in sys.modules, 'probed'\n"
        "import numba.np.arraymath as a\n"
        "assert a._HAVE_BLAS is False\n"
        "import scipy.linalg.cython_blas\n"
        "import numpy as np\n"
        "from numba import njit\n"
        "assert njit(lambda x: np.dot(x, x))(np.ones(3)) == 3.0\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)


# Modules of paper, live and the other commands: a replay must not load them (each costs
# import time on every start; together about a fifth of the engine's import).
_NOT_FOR_REPLAY = (
    "engine.feeds._live",
    "engine.venues.binance",
    "engine.venues.sim._stream_server",
    "engine.venues.sim._exchange_api",
    "engine.feeds._record",
    "engine.feeds._archive",
    "engine.ops",
    "engine.models",
    "httpx",
    "h11",
    "wsproto",
    "trio_websocket",
    "prometheus_client",
)

_REPLAY_MODULES = """
import json, runpy, sys
out = sys.argv[1]
sys.argv = ["engine", "--config", "config.toml", "--set", "journal.dir=" + sys.argv[2]]
try:
    runpy.run_module("engine", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    assert not exc.code, exc.code
with open(out, "w") as f:
    json.dump(sorted(sys.modules), f)
"""


def test_a_replay_does_not_import_the_live_modules(tmp_path: Path):
    # ``python -m engine --config config.toml`` (the shipped replay) in a fresh interpreter.
    out = tmp_path / "modules.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _REPLAY_MODULES, str(out), str(tmp_path / "runs")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "journal_sha256" in done.stdout  # it did replay
    loaded = set(json.loads(out.read_text()))
    assert "engine.venues.sim._venue" in loaded  # the replay's own venue
    found = sorted(
        m for m in loaded for name in _NOT_FOR_REPLAY if m == name or m.startswith(name + ".")
    )
    assert found == []


def test_the_loopback_exchange_names_still_import_from_engine_venues_sim():
    code = (
        "import sys\n"
        "import engine.venues.sim as sim\n"
        "assert 'engine.venues.sim._stream_server' not in sys.modules\n"
        "from engine.venues.sim import StreamServer, load_recording, REQUEST_FAULT_KINDS\n"
        "assert StreamServer.__module__ == 'engine.venues.sim._stream_server'\n"
        "assert all(getattr(sim, name) is not None for name in sim.__all__)\n"
        "try:\n"
        "    sim.NoSuchName\n"
        "except AttributeError as exc:\n"
        "    assert 'NoSuchName' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)


@pytest.mark.slow
def test_the_first_run_after_warm_up_compiles_nothing(tmp_path: Path):
    # What `make run` does after installing, on an empty kernel cache: warm-up, then the
    # shipped replay, which must find every kernel it calls in the cache.
    cache = tmp_path / "numba"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}

    def engine(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "engine", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done

    warm = engine("warm-up", "--config", "config.toml")
    assert warm.stdout.startswith("warm-up: kernels ready in ")
    compiled = set(cache.rglob("*.nbc"))
    assert any("_ema_cross.scan" in p.name for p in compiled)
    run = engine("--config", "config.toml", "--set", f"journal.dir={tmp_path / 'runs'}")
    assert "journal_sha256" in run.stdout
    assert set(cache.rglob("*.nbc")) == compiled  # nothing new compiled


def test_warm_up_with_a_bad_config_value_exits_2_naming_the_key(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "engine", "warm-up", "--set", "risk.capital=-5"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "risk.capital" in done.stderr and len(done.stderr.splitlines()) == 1

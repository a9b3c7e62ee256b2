"""Set kernels compiled for a set's own indicators (``engine.indicators._specialize``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import engine.indicators as ind
from engine.indicators import _set
from engine.indicators._common import drop_stale_kernel_cache
from engine.indicators._specialize import ENTRY_POINTS, kernels_for, module_source


def _events(n: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(7)
    kind = np.where(np.arange(n) % 3 == 0, ind.EVENT_TRADE, ind.EVENT_QUOTE).astype(np.int8)
    ts = 1_723_161_255_000_000_000 + np.cumsum(rng.integers(0, 400_000_000, n))
    price = 60_000.0 + np.cumsum(rng.standard_normal(n))
    qty = rng.lognormal(0.0, 1.0, n)
    side = np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8)
    return kind, ts.astype(np.int64), price, qty, side, price - 0.05, price + 0.05, qty, qty[::-1]


def test_dispatchers_keep_only_the_sets_kernels():
    text = module_source([_set.K_RSI, _set.K_VWAP])
    assert "mo.rsi_update" in text and "mi.vwap_update" in text
    assert "ov.sma_update" not in text and "mi.twap_update" not in text
    # The loops and entry points are the generic ones, copied.
    for name in ENTRY_POINTS:
        assert f"def {name}(" in text


def test_a_set_without_bar_kernels_gets_an_empty_bar_dispatcher():
    text = module_source([_set.K_VWAP])
    head = text[text.index("def _bar_update(") :]
    body = head[head.index("\n") + 1 : head.index("\n\n")]
    assert body.strip() == "pass"


def test_specialized_kernels_equal_the_generic_ones():
    specs = [
        *ind.default_specs(bin_size=1.0, bucket_volume=5.0),
        ind.spec("kama", timeperiod=10, bar_ns=1_000_000_000),
        ind.spec("cci", timeperiod=5),
    ]
    ev = _events(3000)
    fast = ind.IndicatorSet(specs)
    assert fast.kernels is not _set  # a writable tree: generated
    rows = fast.record_batch(*ev)
    generic = ind.IndicatorSet(specs)
    ref = np.empty_like(rows)
    _set.record_batch(*generic.arrays, *ev, generic._no_depth, generic._no_depth, ref)
    np.testing.assert_array_equal(rows, ref)
    assert np.isfinite(rows[-1]).sum() > len(generic.names) // 2


def test_one_module_per_kernel_set():
    a = ind.IndicatorSet([ind.spec("ema", timeperiod=3), ind.spec("ema", timeperiod=9)])
    b = ind.IndicatorSet([ind.spec("ema", timeperiod=5)])
    c = ind.IndicatorSet([ind.spec("sma", timeperiod=5)])
    assert a.kernels is b.kernels is kernels_for(frozenset([_set.K_EMA]))
    assert c.kernels is not a.kernels


def test_stale_generated_modules_are_swept(tmp_path: Path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text("X = 1\n")
    drop_stale_kernel_cache(pkg)
    sets = pkg / "__pycache__" / "sets"
    (sets / "__pycache__").mkdir(parents=True)
    generated = sets / "set_0123.py"
    generated.write_text("# generated\n")
    cached = sets / "__pycache__" / "set_0123.update_trade-1.py311.nbi"
    cached.write_text("")
    drop_stale_kernel_cache(pkg)  # unchanged sources: kept
    assert generated.exists() and cached.exists()
    (pkg / "mod.py").write_text("X = 2\n")
    drop_stale_kernel_cache(pkg)
    assert not generated.exists() and not cached.exists()

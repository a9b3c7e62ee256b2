"""Batch kernels with a ramp or blocks: every length equals the incremental updates.

T3 runs its six EMAs skewed (a five-row ramp in and out), ULTOSC and the LINEARREG
family work in blocks of rows (``_UO_BLOCK``, ``_LR_BLOCK``), MACD, TRIX, DEMA and TEMA
run their EMA chains and their outputs in separate loops per block (``CHAIN_BLOCK``,
``_DEMA_BLOCK``), APO and PPO run both EMAs in one loop. A series cut anywhere, around
the ramps and on either side of a block edge, NaN or not, must give the values the O(1)
updates give at every index, bit for bit.

The EMA-chain and ATR loops carry no per-row NaN test: a NaN is caught by the chain
itself going NaN (and, for ATR's previous close, a running sum). A NaN in any one input
on any row, seed rows and the last row included, must still give the updates' values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import engine.indicators as ind
from engine.indicators._common import CHAIN_BLOCK as _CHAIN_BLOCK
from engine.indicators._oscillators import _UO_BLOCK
from engine.indicators._stats import _LR_BLOCK
from engine.indicators._trend import _DEMA_BLOCK
from engine.indicators._volatility import _BLOCK as _ATR_BLOCK

SIZE = 3 * max(_UO_BLOCK, _LR_BLOCK) + 40


def _series(nan_at: int | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240808)
    close = 60_000.0 + np.cumsum(rng.standard_normal(SIZE))
    spread = np.abs(rng.standard_normal(SIZE))
    d = {"high": close + 0.5 * spread, "low": close - 0.5 * spread, "close": close}
    if nan_at is not None:
        d["close"][nan_at] = np.nan
    return d


# name, inputs, params, first output row (where the ramp or the first block starts)
CASES: list[tuple[str, tuple[str, ...], dict[str, Any], int]] = [
    ("t3", ("close",), {}, 24),
    ("t3", ("close",), {"timeperiod": 2, "vfactor": 1.0}, 6),
    ("t3", ("close",), {"timeperiod": 11, "vfactor": 0.0}, 60),
    ("ultosc", ("high", "low", "close"), {}, 28),
    ("ultosc", ("high", "low", "close"), {"timeperiod1": 1, "timeperiod2": 2, "timeperiod3": 3}, 3),
    ("linearreg", ("close",), {}, 13),
    ("linearreg_slope", ("close",), {"timeperiod": 5}, 4),
    ("linearreg_angle", ("close",), {}, 13),
    ("linearreg_intercept", ("close",), {"timeperiod": 40}, 39),
    ("tsf", ("close",), {"timeperiod": 2}, 1),
    ("trix", ("close",), {}, 88),
    ("trix", ("close",), {"timeperiod": 5}, 13),
    ("trix", ("close",), {"timeperiod": 1}, 1),
    ("apo", ("close",), {}, 25),
    ("apo", ("close",), {"fastperiod": 5, "slowperiod": 5}, 4),
    ("apo", ("close",), {"fastperiod": 9, "slowperiod": 3}, 8),
    ("ppo", ("close",), {}, 25),
    ("ppo", ("close",), {"fastperiod": 2, "slowperiod": 7}, 6),
    ("dema", ("close",), {}, 59),
    ("dema", ("close",), {"timeperiod": 3}, 5),
    ("tema", ("close",), {"timeperiod": 4}, 10),
    ("apo", ("close",), {"matype": 0}, 25),
    ("ppo", ("close",), {"matype": 2}, 25),
]


def _lengths(first: int) -> list[int]:
    near = range(max(0, first - 2), first + 10)
    edges = [
        first + k * b + d
        for b in (_UO_BLOCK, _LR_BLOCK, _CHAIN_BLOCK, _DEMA_BLOCK)
        for k in (1, 2)
        for d in (-1, 0, 1, 2)
    ]
    return sorted({0, 1, 2, *near, *edges, SIZE})


def _incremental(name: str, inputs: tuple[str, ...], params: dict[str, Any], d: dict) -> np.ndarray:
    state = getattr(ind, f"{name}_state")(**params)
    update: Callable[..., float] = getattr(ind, f"{name}_update")
    cols = [d[k] for k in inputs]
    return np.array([update(state, *(c[i] for c in cols)) for i in range(SIZE)])


@pytest.mark.parametrize("nan_at", [None, 30, _LR_BLOCK + 20])
@pytest.mark.parametrize(("name", "inputs", "params", "first"), CASES)
def test_every_length_equals_the_updates(name, inputs, params, first, nan_at):
    d = _series(nan_at)
    ref = _incremental(name, inputs, params, d)
    batch = getattr(ind, name)
    for n in _lengths(first):
        ours = batch(*(d[k][:n] for k in inputs), **params)
        # A NaN row is NaN in the batch and the update alike (the tick is skipped).
        np.testing.assert_array_equal(ours, ref[:n], err_msg=f"{name} {params} length {n}")


def _updates(name: str, d: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The O(1) updates of ``name`` (period ``n``) over the series, one row per output."""
    if name == "macd":
        state, buf = ind.macd_state(n, 2 * n, n), np.empty(3)
        rows = []
        for x in d["close"]:
            ind.macd_update(state, x, buf)
            rows.append(buf.copy())
        return np.array(rows).T
    if name in ("atr", "natr"):
        state = getattr(ind, f"{name}_state")(n)
        update = getattr(ind, f"{name}_update")
        cols = (d["high"], d["low"], d["close"])
        return np.array([[update(state, *(c[i] for c in cols)) for i in range(SIZE)]])
    if name in ("apo", "ppo"):
        state = getattr(ind, f"{name}_state")(n, 3 * n)
    elif name in ("dema", "tema"):
        state = getattr(ind, f"{name}_state")(n)
    else:
        state = ind.ema_state(n) if name == "ema" else ind.trix_state(n)
    update = getattr(ind, f"{name}_update")
    return np.array([[update(state, x) for x in d["close"]]])


def _batch(name: str, d: dict[str, np.ndarray], n: int) -> np.ndarray:
    if name == "macd":
        return np.array(ind.macd(d["close"], n, 2 * n, n))
    if name in ("atr", "natr"):
        return getattr(ind, name)(d["high"], d["low"], d["close"], n)[None]
    if name in ("apo", "ppo"):
        return getattr(ind, name)(d["close"], n, 3 * n)[None]
    return getattr(ind, name)(d["close"], n)[None]


@pytest.mark.parametrize(
    ("name", "column"),
    [(k, c) for k in ("atr", "natr") for c in ("high", "low", "close")]
    + [(k, "close") for k in ("ema", "trix", "macd", "apo", "ppo", "dema", "tema")],
)
def test_a_nan_anywhere_equals_the_updates(name: str, column: str) -> None:
    n = 5
    # Seed rows, the first output row and the one after, block edges of NATR's chain,
    # the middle, the last two rows.
    rows = [0, 1, n - 1, n, n + 1, n + 2, 3 * n, n + 1 + _ATR_BLOCK, n + _ATR_BLOCK]
    # MACD's (5, 10, 5), TRIX's, TEMA's and DEMA's (5) first block edges, APO's seeds.
    rows += [13 + _CHAIN_BLOCK, 14 + _CHAIN_BLOCK, 13 + 2 * _CHAIN_BLOCK, 2 * n, 3 * n - 1]
    rows += [9 + _DEMA_BLOCK, 8 + _DEMA_BLOCK]
    rows += [SIZE // 2, SIZE - 2, SIZE - 1]
    for at in rows:
        d = _series(None)
        d[column][at] = np.nan
        ours = _batch(name, d, n)
        ref = _updates(name, d, n)
        np.testing.assert_array_equal(ours, ref, err_msg=f"{name}: NaN {column}[{at}]")


@pytest.mark.parametrize("nan_at", [None, 30, _CHAIN_BLOCK + 20])
@pytest.mark.parametrize("n", [5, 13])
def test_macd_every_length_equals_the_updates(n: int, nan_at: int | None) -> None:
    # MACD (n, 2n, n): first output row 3n - 2, where its blocks start.
    d = _series(nan_at)
    ref = _updates("macd", d, n)
    for m in _lengths(3 * n - 2):
        ours = np.array(ind.macd(d["close"][:m], n, 2 * n, n)).reshape(3, m)
        np.testing.assert_array_equal(ours, ref[:, :m], err_msg=f"macd {n} length {m}")

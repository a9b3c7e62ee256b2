"""The compiled order builder of ``python -m tools.bench compiled_order`` writes, for
every order, the request today's venue path writes (``OrderTemplate.prepare``,
``Credentials.sign_query``, ``LeanTransport._request_bytes``), byte for byte, and
refuses as risk's entry checks would: the bench's figures compare the same work."""

from __future__ import annotations

import numpy as np
import pytest

from tools.bench import compiled_order
from tools.bench.compiled_order import _Paths

TS = 1_723_136_400_000


@pytest.fixture(scope="module")
def paths() -> _Paths:
    return _Paths()


@pytest.mark.parametrize(
    ("side", "qty"),
    [(0, 0.016), (1, 0.0234), (0, 0.04025933258009822), (1, 0.029), (0, 1.0), (1, 12.3456)],
)
def test_the_compiled_request_is_the_venue_paths(paths: _Paths, side: int, qty: float) -> None:
    bid = 60000.0
    want = paths.python(side, qty, bid, bid + 0.1, 7, TS)
    size = paths.compiled(side, qty, bid, bid + 0.1, 7, TS)
    assert bytes(paths.out[:size]) == want


def test_the_compiled_checks_refuse(paths: _Paths) -> None:
    bid = 60000.0
    assert paths.compiled(0, 0.0004, bid, bid + 0.1, 1, TS) == -5  # rounds to 0
    assert paths.compiled(0, 0.001, bid, bid + 0.1, 1, TS) == -1  # 60 USDT < 100
    assert paths.compiled(0, 0.01, bid, bid * 1.02, 1, TS) == -2  # ~99 bps from the mid > 50
    limits = paths.limits.copy()
    try:
        paths.limits[2] = 500.0  # the symbol's notional
        assert paths.compiled(0, 0.01, bid, bid + 0.1, 1, TS) == -3
        paths.limits[2] = 1e9
        paths.limits[3] = 1.0  # one order a second
        paths.recent[:] = 0
        assert paths.compiled(0, 0.01, bid, bid + 0.1, 1, TS) > 0
        assert paths.compiled(0, 0.01, bid, bid + 0.1, 2, TS + 1) == -4
    finally:
        paths.limits[:] = limits
        paths.recent[:] = 0


def test_the_bench_runs_and_checks_every_order() -> None:
    out = compiled_order.run(["--orders", "20", "--rounds", "1", "--sweep-mib", "1"])
    assert out["same_bytes"] is True
    assert set(out["compiled_us"]) == {"warm", "cold"}
    assert np.isfinite(out["python_over_compiled_warm"])

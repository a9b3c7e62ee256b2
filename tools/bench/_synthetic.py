"""Synthetic market data for benchmarks: seeded, reproducible, in the capture format.

``write_quotes`` writes ``n`` USD-M ``bookTicker`` events, one every ``interval_ms``,
whose mid is a seeded Gaussian random walk on the tick grid, as the engine's capture
format (``<receive ns> {json}`` lines, plain text). The same file feeds Trireme's
replay and, through :func:`read_quotes`, NautilusTrader's ``QuoteTick`` wrangler, so
both engines see exactly the same quotes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

START_MS = 1_722_470_400_000  # 2024-08-01 00:00:00 UTC


def quote_arrays(
    n: int, *, seed: int = 7, start_price: float = 3000.0, tick: float = 0.01
) -> dict[str, np.ndarray]:
    """The quotes as columns: bid, ask, bid_qty, ask_qty (floats, on the tick grid)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.25, n)  # dollars per quote
    mid_ticks = np.round((start_price + np.cumsum(steps)) / tick)
    mid_ticks = np.maximum(mid_ticks, 100.0)  # keep the walk positive
    spread_ticks = rng.integers(1, 4, n)
    bid = mid_ticks * tick
    ask = (mid_ticks + spread_ticks) * tick
    bid_qty = np.round(rng.uniform(0.1, 50.0, n), 3)
    ask_qty = np.round(rng.uniform(0.1, 50.0, n), 3)
    return {"bid": bid, "ask": ask, "bid_qty": bid_qty, "ask_qty": ask_qty}


def write_quotes(
    path: Path,
    n: int,
    *,
    symbol: str = "ETHUSDT",
    interval_ms: int = 100,
    seed: int = 7,
) -> Path:
    """Write ``n`` bookTicker events to ``path`` (skipped when an identical file exists).

    Returns:
        ``path``.
    """
    marker = path.with_suffix(path.suffix + ".ok")
    stamp = f"{n} {symbol} {interval_ms} {seed}\n"
    if path.exists() and marker.exists() and marker.read_text() == stamp:
        return path
    cols = quote_arrays(n, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for i in range(n):
            ms = START_MS + i * interval_ms
            out.write(
                f'{ms * 1_000_000 + 250_000} {{"e":"bookTicker","u":{i + 1},"s":"{symbol}",'
                f'"b":"{cols["bid"][i]:.2f}","B":"{cols["bid_qty"][i]:.3f}",'
                f'"a":"{cols["ask"][i]:.2f}","A":"{cols["ask_qty"][i]:.3f}",'
                f'"T":{ms},"E":{ms}}}\n'
            )
    marker.write_text(stamp)
    return path

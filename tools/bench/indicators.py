"""Indicator kernels: batch ns/element next to TA-Lib, incremental ns/update, fused set.

``python -m tools.bench indicators [--size N] [--repeat N] [--only a,b]`` prints JSON
with, for every indicator (``--only``: the batch pairs of the named ones alone):

- ``incremental_ns``: ns per update, called the way the symbol actor calls it: a
  one-indicator :class:`~engine.indicators.IndicatorSet` fed ``size`` trades (or quotes)
  in one ``update_batch`` call, so the figure includes the set's dispatch. Bar-fed
  indicators get one bar per trade.
- ``batch_ns`` / ``talib_ns``: ns per element of our batch function and TA-Lib's on the
  same ``size``-element random walk (TA-Lib indicators only), timed alternately repeat
  by repeat so that both see the same machine load; ``batch_vs_talib`` is the median
  of the per-repeat ratios. These pairs are timed in thread CPU time (a shared machine
  preempts either side at random), and with glibc's allocator told to keep freed memory
  (``malloc_pinned``): otherwise whichever side happens to get a fresh mapping for its
  output array pays its page faults, a random cost as large as the work measured.

plus ``fused_default_set``: the default set of a symbol fed the BTCUSDT capture (or a
synthetic stream of the same mix when the capture is absent), per event, per trade, and
per single-trade call from Python. Every figure is the median over ``--repeat`` runs,
after one untimed run that compiles or loads the kernels. Times are thread CPU time:
the kernels run in the calling thread, and wall time on a shared machine also counts
whatever else ran meanwhile.

``--paired`` (with ``--repeat`` >= 41, default 41 there) times only the TA-Lib-shared
batch functions, in a paired design: per repeat, ours and TA-Lib's on the same array
back to back, the order alternating repeat by repeat (so neither side always runs on
the caches or the clock state the other left), in thread CPU time with the pinned
allocator as above. Each function gets ``ratio_median``, the median of the per-pair
ratios ours / TA-Lib, and ``ratio_ci95``, a percentile bootstrap 95% interval of that
median (``BOOTSTRAP`` resamples of blocks of ``BLOCK`` consecutive pairs, fixed seed).
``below_with_confidence`` lists the functions whose whole interval is at or below 1,
``above_with_confidence`` those whose whole interval is above 1, ``undecided`` the
rest. A control, TA-Lib's ATR timed against itself, shows the run's resolution: on a
loaded machine, differences within its interval's width are not resolved.

EMA and ATR read about 1.00 by construction: TA-Lib 0.8.1's loops for them are the
same instructions as ours (a subtract and an FMA per row on EMA's loop-carried chain,
one FMA on ATR's; ``perf annotate`` on ``TA_EMA.fma``/``TA_ATR.fma``), so both sides run
at the chain's latency, which no bit-identical rewrite can shorten.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gzip
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

import engine.indicators as ind

try:  # TA-Lib is a test-only dependency; without it the comparison columns are null.
    import talib
except ImportError:  # pragma: no cover - depends on the environment
    talib = None

CAPTURE = (
    Path(__file__).resolve().parents[2].parent
    / "shared/data/external/hftbacktest/btcusdt_20240808.gz"
)

# name -> (input series, params); TA-Lib's function is the upper-case name.
_SHARED: dict[str, tuple[str, dict[str, Any]]] = {
    "sma": ("c", {"timeperiod": 30}),
    "ema": ("c", {"timeperiod": 30}),
    "wma": ("c", {"timeperiod": 30}),
    "rsi": ("c", {"timeperiod": 14}),
    "macd": ("c", {}),
    "bbands": ("c", {"timeperiod": 20}),
    "atr": ("hlc", {"timeperiod": 14}),
    "natr": ("hlc", {"timeperiod": 14}),
    "stoch": ("hlc", {}),
    "stochrsi": ("c", {}),
    "willr": ("hlc", {"timeperiod": 14}),
    "cci": ("hlc", {"timeperiod": 14}),
    "roc": ("c", {"timeperiod": 10}),
    "mom": ("c", {"timeperiod": 10}),
    "trix": ("c", {"timeperiod": 30}),
    "obv": ("cv", {}),
    "adx": ("hlc", {"timeperiod": 14}),
    "plus_di": ("hlc", {"timeperiod": 14}),
    "minus_di": ("hlc", {"timeperiod": 14}),
    "aroon": ("hl", {"timeperiod": 14}),
    "mfi": ("hlcv", {"timeperiod": 14}),
    "ad": ("hlcv", {}),
    "dema": ("c", {"timeperiod": 30}),
    "tema": ("c", {"timeperiod": 30}),
    "t3": ("c", {}),
    "kama": ("c", {"timeperiod": 30}),
    "ht_trendline": ("c", {}),
    "sar": ("hl", {}),
    "var": ("c", {}),
    "stddev": ("c", {}),
    "linearreg": ("c", {}),
    "linearreg_slope": ("c", {}),
    "linearreg_angle": ("c", {}),
    "linearreg_intercept": ("c", {}),
    "tsf": ("c", {}),
    "apo": ("c", {}),
    "ppo": ("c", {}),
    "cmo": ("c", {}),
    "ultosc": ("hlc", {}),
    "aroonosc": ("hl", {}),
    "bop": ("ohlc", {}),
    "dx": ("hlc", {}),
    "adxr": ("hlc", {}),
}

# Indicators TA-Lib lacks: params for the one-indicator set (incremental figure only).
_OWN: dict[str, dict[str, Any]] = {
    "realized_vol": {"timeperiod": 100},
    "ichimoku": {},
    "market_profile": {"bin_size": 1.0, "timeperiod": 500},
    "vwap": {},
    "rolling_vwap": {"timeperiod": 100},
    "twap": {"timeperiod": 100},
    "tick_momentum": {"timeperiod": 50},
    "velocity": {"timeperiod": 20},
    "trade_ofi": {"timeperiod": 100},
    "vpin": {"bucket_volume": 50.0, "timeperiod": 50},
    "book_imbalance": {},
    "spread_bps": {},
    "book_imbalance_n": {"levels": 5},
    "vpt": {},
    "vwma": {"timeperiod": 20},
    "garch": {"omega": 1e-9, "alpha": 0.05, "beta": 0.9},
    "volvol": {},
    "ichimoku_cloud": {},
    "cvd": {},
    "kyle_lambda": {"timeperiod": 100},
    "book_depth": {"bps": 10.0},
    "spoofing": {"levels": 5, "near_bps": 10.0, "large": 3.0, "timeperiod": 100},
}


def _series(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240808)
    c = 60_000.0 + np.cumsum(rng.standard_normal(size))
    spread = np.abs(rng.standard_normal(size))
    v = rng.lognormal(0.0, 1.0, size)
    ts = 1_723_161_255_000_000_000 + np.cumsum(rng.integers(0, 20_000_000, size))
    return {
        "c": c,
        "o": np.r_[c[0], c[:-1]],
        "h": c + 0.5 * spread,
        "l": c - 0.5 * spread,
        "v": v,
        "ts": ts.astype(np.int64),
        "side": np.where(rng.random(size) < 0.5, 1, -1).astype(np.int8),
        "bid_depth": np.abs(rng.standard_normal((size, 5))),
        "ask_depth": np.abs(rng.standard_normal((size, 5))),
    }


def _pin_malloc() -> bool:
    """Make glibc reuse freed memory (no mmap per large array, no trimming); True if done."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
        # mallopt takes a C int: ctypes masks a larger Python int to 32 bits, and 2**62
        # became 0, i.e. trim on every free, so that each large output was faulted in
        # anew (a 1M-row EMA: 4.1 ns/row instead of 2.0). INT_MAX is the largest value.
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError, TypeError):  # not glibc
        return False


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median thread CPU time of ``fn`` (preemption on a shared machine excluded)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return statistics.median(times)


def _per_element(fn: Callable[[], object], repeat: int, size: int) -> float:
    return _median_time(fn, repeat) / size * 1e9


def _per_element_pair(
    ours: Callable[[], object], theirs: Callable[[], object], repeat: int, size: int
) -> tuple[float, float, float]:
    """Two functions timed alternately in thread CPU time (same load for both).

    Returns:
        Median ns per element of each, and the median of the per-repeat ratios (the
        paired estimate, robust to load that drifts between repeats).
    """
    ours()
    theirs()
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeat):
        t0 = time.thread_time()
        ours()
        t1 = time.thread_time()
        theirs()
        t2 = time.thread_time()
        a.append(t1 - t0)
        b.append(t2 - t1)
    ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
    return statistics.median(a) / size * 1e9, statistics.median(b) / size * 1e9, ratio


BOOTSTRAP = 4000
"""Bootstrap resamples for the paired mode's confidence intervals."""


def _paired_ratios(
    ours: Callable[[], object], theirs: Callable[[], object], repeat: int
) -> list[float]:
    """Per-pair ratios ours / theirs, timed back to back in alternating order."""
    ours()
    theirs()
    ratios: list[float] = []
    for r in range(repeat):
        first, second = (ours, theirs) if r % 2 == 0 else (theirs, ours)
        t0 = time.thread_time_ns()
        first()
        t1 = time.thread_time_ns()
        second()
        t2 = time.thread_time_ns()
        a, b = (t1 - t0, t2 - t1) if r % 2 == 0 else (t2 - t1, t1 - t0)
        ratios.append(a / b)
    return ratios


BLOCK = 4
"""Consecutive pairs resampled together: the load drifts, so neighbouring ratios correlate."""


def median_ci(
    values: list[float], resamples: int = BOOTSTRAP, seed: int = 18, block: int = BLOCK
) -> tuple[float, float, float]:
    """Median of ``values`` and a moving-block bootstrap 95% interval of it.

    Blocks of ``block`` consecutive values are drawn with replacement, so that runs of
    correlated ratios (a stretch of heavy load) are not counted as independent evidence;
    an iid bootstrap gave intervals that excluded 1 for a function timed against itself.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    b = max(1, min(block, n))
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - b + 1, size=(resamples, -(-n // b)))
    idx = (starts[:, :, None] + np.arange(b)).reshape(resamples, -1)[:, :n]
    medians = np.median(x[idx], axis=1)
    lo, hi = np.quantile(medians, [0.025, 0.975])
    return float(np.median(x)), float(lo), float(hi)


def _paired(s: dict[str, np.ndarray], repeat: int, only: list[str]) -> dict[str, Any]:
    """The paired comparison of every (or every ``only``) TA-Lib-shared batch function.

    ``control`` times TA-Lib's ATR against itself the same way: its interval should
    hold 1, and its width is the resolution of the run (the machine's noise).
    """
    table: dict[str, Any] = {}
    below: list[str] = []
    above: list[str] = []
    undecided: list[str] = []
    for name, (inputs, params) in _SHARED.items():
        if only and name not in only:
            continue
        data = [s[k] for k in inputs]
        ours = getattr(ind, name)
        theirs = getattr(talib, name.upper())

        def run_ours(f=ours, d=data, p=params) -> object:  # type: ignore[no-untyped-def]
            return f(*d, **p)

        def run_theirs(f=theirs, d=data, p=params) -> object:  # type: ignore[no-untyped-def]
            return f(*d, **p)

        ratios = _paired_ratios(run_ours, run_theirs, repeat)
        med, lo, hi = median_ci(ratios)
        table[name] = {"ratio_median": med, "ratio_ci95": [lo, hi]}
        (below if hi <= 1.0 else above if lo > 1.0 else undecided).append(name)
    hlc = [s["h"], s["l"], s["c"]]

    def control() -> object:
        return talib.ATR(*hlc, timeperiod=14)

    med, lo, hi = median_ci(_paired_ratios(control, control, repeat))
    return {
        "indicators": table,
        "below_with_confidence": below,
        "above_with_confidence": above,
        "undecided": undecided,
        "control_talib_atr_vs_itself": {"ratio_median": med, "ratio_ci95": [lo, hi]},
    }


@njit
def _feed_books(arrays, bp, bq, ap, aq):  # type: ignore[no-untyped-def]
    for i in range(bp.shape[0]):
        ind.update_book(*arrays, bp[i], bq[i], ap[i], aq[i])


def _events(kind: int, s: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Event arrays of one kind over the series (quotes: bid/ask around the close)."""
    n = s["c"].shape[0]
    half = 0.05 + 0.0 * s["c"]
    return (
        np.full(n, kind, dtype=np.int8),
        s["ts"],
        s["c"],
        s["v"],
        s["side"],
        s["c"] - half,
        s["c"] + half,
        s["v"],
        s["v"][::-1].copy(),
        s["bid_depth"],
        s["ask_depth"],
    )


def _incremental_ns(
    name: str, params: dict[str, Any], s: dict[str, np.ndarray], repeat: int
) -> float:
    iset = ind.IndicatorSet([ind.spec(name, **params)])
    if ind.REGISTRY[name].source == "book":
        n = s["c"].shape[0]
        mid = s["c"][:, None]
        step = 0.1 * np.arange(1.0, 6.0)
        books = (mid - step, s["bid_depth"], mid + step, s["ask_depth"])

        def feed() -> None:
            iset.reset()
            _feed_books(iset.arrays, *books)

        return _median_time(feed, repeat) / n * 1e9
    source = {"book_imbalance": ind.EVENT_QUOTE, "spread_bps": ind.EVENT_QUOTE}
    kind = source.get(name, ind.EVENT_DEPTH if name == "book_imbalance_n" else ind.EVENT_TRADE)
    events = _events(kind, s)

    def once() -> None:
        iset.reset()
        iset.update_batch(*events)

    return _median_time(once, repeat) / s["c"].shape[0] * 1e9


def _capture_events(limit: int) -> tuple[np.ndarray, ...] | None:
    if not CAPTURE.exists():
        return None
    rows: list[tuple[int, int, float, float, int, float, float, float, float]] = []
    with gzip.open(CAPTURE, "rt") as f:
        for line in f:
            sp = line.find(" ")
            head = line[sp : sp + 40]
            ts = int(line[:sp])
            if "@trade" in head:
                d = json.loads(line[sp + 1 :])["data"]
                side = -1 if d["m"] else 1
                trade = (float(d["p"]), float(d["q"]), side)
                rows.append((ts, ind.EVENT_TRADE, *trade, 0.0, 0.0, 0.0, 0.0))
            elif "@bookTicker" in head:
                d = json.loads(line[sp + 1 :])["data"]
                quote = (float(d["b"]), float(d["a"]), float(d["B"]), float(d["A"]))
                rows.append((ts, ind.EVENT_QUOTE, 0.0, 0.0, 0, *quote))
            if len(rows) >= limit:
                break
    cols = list(zip(*rows, strict=True))
    return (
        np.array(cols[1], dtype=np.int8),
        np.array(cols[0], dtype=np.int64),
        *(np.array(c, dtype=np.float64) for c in cols[2:4]),
        np.array(cols[4], dtype=np.int8),
        *(np.array(c, dtype=np.float64) for c in cols[5:]),
    )


def _synthetic_events(s: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, ...]:
    # The capture's mix: about one trade per three top-of-book updates.
    kind = np.where(np.arange(n) % 4 == 0, ind.EVENT_TRADE, ind.EVENT_QUOTE).astype(np.int8)
    e = _events(ind.EVENT_TRADE, {k: v[:n] for k, v in s.items()})
    return (kind, *e[1:9])


def _fused(s: dict[str, np.ndarray], repeat: int) -> dict[str, Any]:
    events = _capture_events(10**9)
    source = "btcusdt_20240808 capture"
    if events is None:
        events = _synthetic_events(s, min(s["c"].shape[0], 100_000))
        source = "synthetic (capture absent)"
    specs = ind.default_specs(bin_size=1.0, bucket_volume=5.0)
    iset = ind.IndicatorSet(specs)
    kind = events[0]
    n_events = kind.shape[0]
    n_trades = int((kind == ind.EVENT_TRADE).sum())

    def batch() -> None:
        iset.reset()
        iset.update_batch(*events)

    per_event = _median_time(batch, repeat) / n_events * 1e9
    trades = tuple(a[kind == ind.EVENT_TRADE] for a in events)

    def batch_trades() -> None:
        iset.reset()
        iset.update_batch(*trades)

    per_trade = _median_time(batch_trades, repeat) / n_trades * 1e9
    ts, px, qty, side = (
        trades[1].tolist(),
        trades[2].tolist(),
        trades[3].tolist(),
        trades[4].tolist(),
    )
    calls = min(n_trades, 20_000)
    update = ind.update_trade
    arrays = iset.arrays

    def python_calls() -> None:
        iset.reset()
        for i in range(calls):
            update(*arrays, ts[i], px[i], qty[i], side[i])

    per_call = _median_time(python_calls, repeat) / calls * 1e9
    return {
        "source": source,
        "indicators": len(specs),
        "values": len(iset.names),
        "events": n_events,
        "trades": n_trades,
        "ns_per_event_in_batch": per_event,
        "ns_per_trade_in_batch": per_trade,
        "ns_per_trade_python_call": per_call,
        "target_ns": 1000,
    }


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark and return its JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench indicators")
    parser.add_argument("--size", type=int, default=1_000_000, help="series length")
    parser.add_argument(
        "--repeat", type=int, default=None, help="timed runs per figure (5; --paired: 41)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated TA-Lib-shared names: time only their batch pairs (no "
        "incremental, own-indicator or fused figures)",
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="paired design for the TA-Lib-shared batch functions only: median ratio "
        "ours / TA-Lib with a bootstrap 95%% interval (--repeat >= 41, default 41)",
    )
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 41 if args.paired else 5
    only = [n for n in args.only.split(",") if n]
    unknown = sorted(set(only) - set(_SHARED))
    if unknown:
        parser.error(f"--only: not TA-Lib-shared indicators: {', '.join(unknown)}")
    if args.size < 1000 or args.repeat < 1:
        parser.error("--size must be >= 1000 and --repeat >= 1")
    if args.paired and args.repeat < 41:
        parser.error("--paired needs --repeat >= 41")
    if args.paired and talib is None:
        parser.error("--paired needs TA-Lib (pip install ta-lib)")
    pinned = _pin_malloc()
    s = _series(args.size)
    size = args.size
    if args.paired:
        return {
            "benchmark": "indicators-paired",
            "size": size,
            "repeat": args.repeat,
            "malloc_pinned": pinned,
            "talib_version": talib.__ta_version__.decode(),
            "bootstrap": BOOTSTRAP,
            **_paired(s, args.repeat, only),
        }
    out: dict[str, Any] = {
        "benchmark": "indicators",
        "size": size,
        "repeat": args.repeat,
        "unit": "ns",
        "malloc_pinned": pinned,
        "talib_version": None if talib is None else talib.__ta_version__.decode(),
        "indicators": {},
    }
    table = out["indicators"]
    for name, (inputs, params) in _SHARED.items():
        if only and name not in only:
            continue
        data = [s[k] for k in inputs]
        ours = getattr(ind, name)
        row: dict[str, Any] = {}
        if not only:
            row["incremental_ns"] = _incremental_ns(name, params, s, args.repeat)

        def run_ours(f=ours, d=data, p=params) -> object:  # type: ignore[no-untyped-def]
            return f(*d, **p)

        if talib is not None:
            theirs = getattr(talib, name.upper())

            def run_theirs(f=theirs, d=data, p=params) -> object:  # type: ignore[no-untyped-def]
                return f(*d, **p)

            row["batch_ns"], row["talib_ns"], row["batch_vs_talib"] = _per_element_pair(
                run_ours, run_theirs, args.repeat, size
            )
        else:
            row["batch_ns"] = _per_element(run_ours, args.repeat, size)
        table[name] = row
    for name, params in {} if only else _OWN.items():
        table[name] = {"incremental_ns": _incremental_ns(name, params, s, args.repeat)}
    shared = {k: r["batch_vs_talib"] for k, r in table.items() if "batch_vs_talib" in r}
    if shared:
        out["batch_vs_talib_max"] = max(shared.values())
        out["batch_at_or_below_talib"] = [k for k, r in shared.items() if r <= 1.0]
        out["batch_above_talib"] = {k: r for k, r in shared.items() if r > 1.0}
    if not only:
        out["fused_default_set"] = _fused(s, args.repeat)
    return out

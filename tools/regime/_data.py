"""Freqtrade 1-minute USD-M candles per symbol, their bar features and a time split."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pandas as pd

from engine.models._hmm import BarFeatureSpec, bar_features

SUFFIX = "_USDT_USDT-1m-futures.feather"
#: Bars over which the next-hour targets are measured.
HORIZON = 60
_NS_PER_DAY = 86_400 * 10**9


class BadDataError(Exception):
    """The data directory or a file in it is not usable (one line, naming it)."""


@attrs.frozen(kw_only=True, eq=False)
class SymbolBars:
    """One symbol's candles and what the tools derive from them (arrays of one length).

    Attributes:
        symbol: ``BTCUSDT``.
        ts: candle open times, int ns UTC.
        close, volume: the candles' close and base volume.
        X: :func:`~engine.models._hmm.bar_features` (NaN rows while cold).
        rvol, level: realized vol of the last ``window`` bars and its slow level.
        next_rvol: realized vol of the next :data:`HORIZON` bars' log returns (NaN at the end).
        next_ret: log return over the next :data:`HORIZON` bars (NaN at the end).
    """

    symbol: str
    ts: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    X: np.ndarray
    rvol: np.ndarray
    level: np.ndarray
    next_rvol: np.ndarray
    next_ret: np.ndarray


def _forward(close: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.zeros(close.shape[0])
    r[1:] = np.diff(np.log(close))
    c2 = np.concatenate(([0.0], np.cumsum(r * r)))
    n = close.shape[0]
    next_rvol = np.full(n, np.nan)
    next_ret = np.full(n, np.nan)
    if n > horizon:
        # bars t+1..t+horizon: returns r[t+1..t+horizon]
        idx = np.arange(n - horizon)
        next_rvol[idx] = np.sqrt((c2[idx + horizon + 1] - c2[idx + 1]) / horizon)
        next_ret[idx] = np.log(close[idx + horizon] / close[idx])
    return next_rvol, next_ret


def load(data: Path, spec: BarFeatureSpec, symbols: list[str] | None = None) -> list[SymbolBars]:
    """Every ``*-1m-futures.feather`` of ``data`` (or ``symbols`` of them), sorted by symbol.

    Raises:
        BadDataError: no such files, a file that cannot be read, missing columns, or times
            that are not strictly increasing.
    """
    files = sorted(Path(data).glob(f"*{SUFFIX}"))
    if not files:
        raise BadDataError(f"{data}: no *{SUFFIX} files")
    out = []
    for path in files:
        symbol = path.name.removesuffix(SUFFIX) + "USDT"
        if symbols and symbol not in symbols:
            continue
        try:
            frame = pd.read_feather(path, columns=["date", "close", "volume"])
        except Exception as exc:  # pyarrow raises many types for a bad file
            raise BadDataError(f"{path}: cannot read as Freqtrade feather ({exc})") from None
        ts = frame["date"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
        if len(ts) < 2 or not np.all(np.diff(ts) > 0):
            raise BadDataError(f"{path}: date: not strictly increasing")
        close = frame["close"].to_numpy(dtype=np.float64)
        volume = frame["volume"].to_numpy(dtype=np.float64)
        X, rvol, level = bar_features(close, volume, spec)
        next_rvol, next_ret = _forward(close, HORIZON)
        out.append(
            SymbolBars(
                symbol=symbol,
                ts=ts,
                close=close,
                volume=volume,
                X=X,
                rvol=rvol,
                level=level,
                next_rvol=next_rvol,
                next_ret=next_ret,
            )
        )
    if symbols:
        missing = sorted(set(symbols) - {b.symbol for b in out})
        if missing:
            raise BadDataError(f"{data}: no candles for {missing}")
    return out


def split_times(
    bars: list[SymbolBars], train_days: float, test_days: float
) -> tuple[int, int, int]:
    """``(start, split, end)``: one calendar for every symbol.

    ``start`` is the earliest first candle, ``split`` ``train_days`` later (training uses
    bars before it), ``end`` ``test_days`` after ``split`` (evaluation uses bars in
    ``[split, end)``), so no symbol is trained on a time another is judged on.
    """
    start = min(int(b.ts[0]) for b in bars)
    split = start + int(train_days * _NS_PER_DAY)
    return start, split, split + int(test_days * _NS_PER_DAY)


def iso(ts_ns: int) -> str:
    """UTC ISO time of int ns."""
    return pd.Timestamp(ts_ns, unit="ns", tz="UTC").isoformat()

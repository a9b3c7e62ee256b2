"""The trade list as a file: CSV or Parquet, chosen by the path's extension."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import attrs

from .._errors import ConfigError
from ._trades import Trade

TRADE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
COLUMNS = tuple(a.name for a in attrs.fields(Trade))


def trades_format(path: Path, *, option: str = "--trades") -> str:
    """The format ``path``'s extension names.

    Raises:
        ConfigError: naming ``option`` when the extension is not one of
            :data:`TRADE_FORMATS`.
    """
    fmt = TRADE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(TRADE_FORMATS)
        raise ConfigError(option, "", f"{path}: unknown extension {path.suffix!r} (use {known})")
    return fmt


def write_trades(trades: Sequence[Trade], path: Path) -> None:
    """Write the trades (one row each, :data:`COLUMNS`) atomically.

    Times are int nanoseconds (UTC); a trade still open has empty exit fields.

    Raises:
        ConfigError: the extension is not a known format.
        OSError: the file cannot be written (no temporary file is left).
    """
    fmt = trades_format(path)
    rows = [attrs.asdict(t) for t in trades]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        if fmt == "csv":
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
        else:
            _write_parquet(rows, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_parquet(rows: list[dict[str, object]], path: Path) -> None:
    import pyarrow as pa  # only for Parquet
    import pyarrow.parquet as pq

    types = {
        "symbol": pa.string(),
        "side": pa.string(),
        "exit_reason": pa.string(),
        "correlation_id": pa.string(),
        "entry_ts": pa.timestamp("ns", tz="UTC"),
        "exit_ts": pa.timestamp("ns", tz="UTC"),
        "entry_fills": pa.int64(),
        "exit_fills": pa.int64(),
    }
    schema = pa.schema([(c, types.get(c, pa.float64())) for c in COLUMNS])
    table = pa.table({c: [r[c] for r in rows] for c in COLUMNS}, schema=schema)
    pq.write_table(table, path)

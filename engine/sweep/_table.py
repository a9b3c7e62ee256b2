"""The sweep's outputs: the ranked table (CSV or Parquet) and the best config as TOML."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .._config import Config
from .._errors import ConfigError

#: Ranking metrics: name -> True when larger is better.
RANK_BY = {
    "net_pnl": True,
    "sharpe": True,
    "win_rate": True,
    "profit_factor": True,
    "max_drawdown": False,
}
TABLE_SUFFIXES = (".csv", ".parquet")


def check_out_path(path: Path) -> None:
    """Refuse an ``--out`` the sweep could not write, before any replay.

    Raises:
        ConfigError: not ``.csv`` or ``.parquet``, a directory, or no directory for it.
    """
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ConfigError("--out", "", f"expected a .csv or .parquet file, got {path}")
    if path.is_dir():
        raise ConfigError("--out", "", f"{path} is a directory; expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("--out", "", f"cannot create {path.parent} ({exc.strerror})") from exc


def rank_key(metric: str) -> Any:
    """A sort key: the best ``metric`` first, rows without it last, ties by grid order."""
    larger = RANK_BY[metric]

    def key(row: Mapping[str, Any]) -> tuple[int, float, int]:
        value = row.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0.0, row["point"])
        return (0, -value if larger else value, row["point"])

    return key


def write_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], path: Path) -> None:
    """Write ``rows`` to ``path``: CSV (floats as Python's shortest exact repr, empty for
    none) or Parquet (one typed column each), by the extension."""
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
        pq.write_table(table, path)
        return
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else _cell(row[c]) for c in columns])


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return json.dumps(list(value))
    return repr(value) if isinstance(value, float) else str(value)


# -- the best config as TOML ------------------------------------------------------------

# Keys holding paths: written absolute, so the file works from wherever it is read.
_PATH_KEYS = ("data.paths", "journal.dir", "logging.path", "model.paths", "control.socket")
_NOT_PATHS = {"data.tick_store": ("auto", "off"), "logging.path": ("-",), "control.socket": ("",)}


def config_toml(config: Config, header: str = "") -> str:
    """The whole of ``config`` as a TOML document that :func:`engine.load_config` reads
    back to the same configuration (relative paths made absolute, no time window)."""
    doc = attrs.asdict(config, recurse=True)
    for name in ("source", "base_dir", "origins"):
        doc.pop(name)
    doc["data"]["start"] = doc["data"]["end"] = ""
    for key in (*_PATH_KEYS, "data.tick_store"):
        section, name = key.split(".")
        value = doc[section][name]
        if isinstance(value, tuple):
            doc[section][name] = tuple(str(config.resolve(v)) for v in value)
        elif value not in _NOT_PATHS.get(key, ()):
            doc[section][name] = str(config.resolve(value))
    lines = [f"# {line}" for line in header.splitlines()]
    for name, table in doc.items():
        _table(lines, name, table)
    return "\n".join(lines) + "\n"


def _table(lines: list[str], name: str, table: dict[str, Any]) -> None:
    lines += ["", f"[{name}]"]
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, dict) or (
            isinstance(value, tuple) and value and isinstance(value[0], dict)
        ):
            nested.append((key, value))
        else:
            lines.append(f"{key} = {_value(value)}")
    for key, value in nested:
        if isinstance(value, dict):
            _table(lines, f"{name}.{key}", value)
        else:
            for item in value:
                lines += ["", f"[[{name}.{key}]]"]
                lines += [f"{k} = {_value(v)}" for k, v in item.items()]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")

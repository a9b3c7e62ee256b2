"""The grid of a sweep: ``--grid key=v1,v2`` axes, their cartesian product, one config each.

Values are TOML (``5``, ``0.5``, ``true``, ``"text"``, ``["BTCUSDT", "ETHUSDT"]``) and
are typed by the config schema: each point is the base config with the point's values
applied as overrides, validated exactly as ``--set`` values are. A key or a value that
no point accepts is an error naming the dotted key; a combination that the schema
refuses while its values are fine elsewhere (``strategy.fast`` not below
``strategy.slow``) is skipped and counted by reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from .._config import Config, Override, load_config, parse_value, set_overrides
from .._errors import ConfigError
from ..strategy import resolve_strategy

GRID_ORIGIN = "--grid"


@attrs.frozen(kw_only=True)
class Axis:
    """One ``--grid`` option: a dotted key and the values to try, in order.

    Attributes:
        key: the dotted config key (``"strategy.fast"``).
        values: the values as TOML gives them (typed by the schema per point).
    """

    key: str
    values: tuple[Any, ...]


@attrs.frozen(kw_only=True)
class SweepPoint:
    """One point of the grid: its parameters and the validated config.

    Attributes:
        index: position in the grid's product order (ties in a ranking go to the lower).
        params: ``(dotted key, value)`` per axis, the value as the config holds it.
        config: the full config of the point.
    """

    index: int
    params: tuple[tuple[str, Any], ...]
    config: Config


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets and quotes (``["A","B"],["C"]`` is two values)."""
    parts: list[str] = []
    depth = 0
    quote = ""
    current: list[str] = []
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def parse_grid(items: Sequence[str]) -> tuple[Axis, ...]:
    """Axes from ``--grid dotted.key=v1,v2,...`` options.

    Raises:
        ConfigError: an item without ``=``, a malformed or repeated key, or an empty value.
    """
    axes: list[Axis] = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(GRID_ORIGIN, item, "expected dotted.key=value1,value2,...")
        # The same key check as --set (one part per dotted name).
        set_overrides([f"{key}=0"])
        if any(a.key == key for a in axes):
            raise ConfigError(GRID_ORIGIN, key, "given twice; list all its values in one --grid")
        texts = _split_values(text)
        if any(not t for t in texts):
            raise ConfigError(GRID_ORIGIN, key, f"empty value in {text!r}")
        axes.append(Axis(key=key, values=tuple(parse_value(t) for t in texts)))
    if not axes:
        raise ConfigError(GRID_ORIGIN, "", "at least one --grid key=values is needed")
    return tuple(axes)


def config_value(config: Config, key: str) -> Any:
    """The value of dotted ``key`` in ``config`` (as the schema typed it)."""
    node: Any = config
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def grid_points(
    path: Path, base: Sequence[Override], axes: Sequence[Axis]
) -> tuple[list[SweepPoint], dict[str, int]]:
    """Every point of the grid, each a config validated by the schema.

    Args:
        path: the config file.
        base: overrides applied before the point's (environment, ``--set``).
        axes: the grid.

    Returns:
        The valid points in product order, and the skipped combinations counted by
        reason (the config error's text).

    Raises:
        ConfigError: a key or value that fails in every point it appears in (an unknown
            key, a value of the wrong type or out of range), naming the dotted key.
    """
    points: list[SweepPoint] = []
    accepted: list[tuple[int, ...]] = []
    failures: list[tuple[tuple[int, ...], ConfigError]] = []
    ranges = [range(len(a.values)) for a in axes]
    for index, combo in enumerate(itertools.product(*ranges)):
        overrides = [
            Override(key=a.key, value=a.values[j], origin=GRID_ORIGIN)
            for a, j in zip(axes, combo, strict=True)
        ]
        try:
            config = load_config(path, overrides=[*base, *overrides])
            resolve_strategy(config)  # a user strategy's [strategy.params], checked by it
        except ConfigError as exc:
            failures.append((combo, exc))
            continue
        params = tuple((a.key, config_value(config, a.key)) for a in axes)
        points.append(SweepPoint(index=index, params=params, config=config))
        accepted.append(combo)
    # A value that no point accepts is the user's mistake, not a combination to skip.
    for i, axis in enumerate(axes):
        for j in range(len(axis.values)):
            bad = [exc for combo, exc in failures if combo[i] == j]
            if bad and not any(combo[i] == j for combo in accepted):
                raise bad[0]
    skipped: dict[str, int] = {}
    for _combo, exc in failures:
        skipped[str(exc)] = skipped.get(str(exc), 0) + 1
    return points, skipped

"""Replay helpers: build a config in code, run a replay, vary Trio's scheduling."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
import trio
from structlog.typing import FilteringBoundLogger

from .._config import Config, config_from_dict
from .._replay import run_replay
from .._report import RunReport


def replay_config(tmp_dir: Path, data: list[str | Path], **sections: dict[str, Any]) -> Config:
    """A replay config for tests: data paths, journal and log under ``tmp_dir``.

    Args:
        tmp_dir: where the journal and the log go.
        data: capture files or directories.
        **sections: TOML-like overrides, e.g. ``strategy={"fast": 3, "slow": 8}``.
    """
    doc: dict[str, Any] = {
        "data": {"paths": [str(p) for p in data]},
        "journal": {"dir": str(tmp_dir / "runs")},
        "logging": {"path": str(tmp_dir / "engine.jsonl")},
    }
    for name, table in sections.items():
        doc.setdefault(name, {}).update(table)
    return config_from_dict(doc, source="<test>", base_dir=str(tmp_dir))


def quiet_logger() -> FilteringBoundLogger:
    """A logger that drops everything below CRITICAL and writes nothing."""
    return structlog.wrap_logger(
        structlog.ReturnLogger(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
    )


async def replay(config: Config, *, data: list[str] | None = None) -> RunReport:
    """Run a replay with a quiet logger (tests read the journal)."""
    return await run_replay(config, data=data, log=quiet_logger())


@contextlib.contextmanager
def scheduler_seed(seed: int) -> Iterator[None]:
    """Run Trio's scheduler with a fully shuffled, seeded order of ready tasks.

    Trio already randomises the order in which ready tasks run; this makes every
    batch of ready tasks a seeded random permutation (the mode pytest-trio uses
    under Hypothesis), so that tests can replay under many different schedules.
    It patches Trio internals for the duration of the block.
    """
    run_mod = trio._core._run
    saved = (run_mod._r, run_mod._ALLOW_DETERMINISTIC_SCHEDULING)
    run_mod._r = random.Random(seed)
    run_mod._ALLOW_DETERMINISTIC_SCHEDULING = True
    try:
        yield
    finally:
        run_mod._r, run_mod._ALLOW_DETERMINISTIC_SCHEDULING = saved

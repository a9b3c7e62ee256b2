"""Running a sweep on Dask: every point a task, results taken as they finish.

The client side: it submits :func:`~engine.sweep._task.replay_point` per point (and
per walk-forward window), takes results in completion order (``as_completed``),
reports each on a callback, and builds the rows. Rows depend only on the replays,
never on which worker ran them or in which order they finished: the tables of a
``LocalCluster`` and of any other cluster are identical.

Walk-forward: every fold's training replays go in at once; when a fold's training
results are all in, its best point (by the ranking metric; ties to the earlier grid
point) is replayed on the fold's test window, and only those test replays make rows.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from .._config import Config
from ._grid import SweepPoint
from ._table import rank_key
from ._task import replay_point
from ._walk import Fold, iso

#: ``progress(done, total, label, row_or_error)`` after each finished task.
Progress = Callable[[int, int, str, Mapping[str, Any] | BaseException], None]


@attrs.frozen(kw_only=True)
class SweepOutcome:
    """What a sweep produced.

    Attributes:
        rows: the table's rows, ranked (plain sweep) or by fold (walk-forward).
        best: the point to write as the best config (the last fold's pick in a
            walk-forward), or None when no replay succeeded.
        failed: ``(label, error text)`` of each task that raised.
    """

    rows: list[dict[str, Any]]
    best: SweepPoint | None
    failed: list[tuple[str, str]]


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Any]:
    """A ``distributed.Client``: of the cluster at ``scheduler``, else of a new
    ``LocalCluster`` of ``workers`` processes with one thread each (closed on exit).

    A replay holds the GIL for most of its run: processes, not threads, run several
    at once.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler, timeout="30s")
        try:
            yield client
        finally:
            client.close()
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def label_of(point: SweepPoint) -> str:
    """``strategy.fast=5 strategy.slow=21``."""
    return " ".join(f"{k}={_text(v)}" for k, v in point.params)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(list(value)) if isinstance(value, tuple) else str(value)


def _key(what: str, index: int) -> str:
    # A fresh key per submission: Dask would hand back a held result for a repeated
    # key (a benchmark's second sweep, or a sweep run twice on one client).
    return f"trireme-{what}-{index}-{uuid.uuid4().hex}"


def _windowed(config: Config, start: int, end: int) -> Config:
    return attrs.evolve(config, data=attrs.evolve(config.data, start=iso(start), end=iso(end)))


def _row(point: SweepPoint, result: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"point": point.index, **dict(point.params)}
    row.update({k: v for k, v in result.items() if k != "wall_seconds"})
    return row


def run_grid(
    client: Any,
    points: Sequence[SweepPoint],
    *,
    data: list[str] | None,
    rank_by: str,
    progress: Progress,
) -> SweepOutcome:
    """Replay every point once over the whole data; rows ranked by ``rank_by``."""
    from distributed import as_completed

    futures = {
        client.submit(replay_point, p.config, data, key=_key("sweep", p.index)): p for p in points
    }
    rows: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    for done, future in enumerate(as_completed(futures), start=1):
        point = futures[future]
        label = label_of(point)
        try:
            result = future.result()
        except Exception as exc:  # a task's error, re-raised here by Dask
            failed.append((label, f"{type(exc).__name__}: {exc}"))
            progress(done, len(futures), label, exc)
            continue
        progress(done, len(futures), label, result)
        rows.append(_row(point, result))
    rows.sort(key=rank_key(rank_by))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    by_index = {p.index: p for p in points}
    best = by_index[rows[0]["point"]] if rows else None
    return SweepOutcome(rows=rows, best=best, failed=failed)


def run_walk_forward(
    client: Any,
    points: Sequence[SweepPoint],
    folds: Sequence[Fold],
    *,
    data: list[str] | None,
    rank_by: str,
    progress: Progress,
) -> SweepOutcome:
    """Train every point on each fold's train window, replay each fold's best on its
    test window; rows are the test (out-of-sample) results only, in fold order."""
    from distributed import as_completed

    tasks: dict[Any, tuple[str, Fold, SweepPoint]] = {}
    for fold in folds:
        for p in points:
            cfg = _windowed(p.config, fold.train_start, fold.train_end)
            future = client.submit(
                replay_point, cfg, data, key=_key(f"train-{fold.index}", p.index)
            )
            tasks[future] = ("train", fold, p)
    total = len(tasks) + len(folds)
    trained: dict[int, list[dict[str, Any]]] = {f.index: [] for f in folds}
    pending = {f.index: len(points) for f in folds}
    rows: list[dict[str, Any]] = []
    picks: dict[int, SweepPoint] = {}
    failed: list[tuple[str, str]] = []
    by_index = {p.index: p for p in points}
    queue = as_completed(list(tasks))
    for done, future in enumerate(queue, start=1):
        phase, fold, point = tasks.pop(future)
        label = f"fold {fold.index} {phase}: {label_of(point)}"
        try:
            result = future.result()
        except Exception as exc:  # a task's error, re-raised here by Dask
            failed.append((label, f"{type(exc).__name__}: {exc}"))
            progress(done, total, label, exc)
            result = None
        else:
            progress(done, total, label, result)
        if phase == "test":
            if result is not None:
                rows.append(_fold_row(fold, point, result))
            continue
        if result is not None:
            trained[fold.index].append(_row(point, result))
        pending[fold.index] -= 1
        if pending[fold.index]:
            continue
        ranked = sorted(trained[fold.index], key=rank_key(rank_by))
        if not ranked:
            total -= 1  # nothing trained: no test replay for this fold
            continue
        pick = by_index[ranked[0]["point"]]
        picks[fold.index] = pick
        cfg = _windowed(pick.config, fold.test_start, fold.test_end)
        test = client.submit(replay_point, cfg, data, key=_key(f"test-{fold.index}", pick.index))
        tasks[test] = ("test", fold, pick)
        queue.add(test)
    rows.sort(key=lambda r: r["fold"])
    best = picks[max(picks)] if picks else None
    return SweepOutcome(rows=rows, best=best, failed=failed)


def _fold_row(fold: Fold, point: SweepPoint, result: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "fold": fold.index,
        "train_start": iso(fold.train_start),
        "train_end": iso(fold.train_end),
        "test_start": iso(fold.test_start),
        "test_end": iso(fold.test_end),
        **_row(point, result),
    }


def data_span(config: Config, data: list[str] | None) -> tuple[list[str], int, int]:
    """The data's absolute paths and the replay times of its first and last event
    (loading it through the tick store, so the workers map it instead of parsing).

    Raises:
        DataError: the data cannot be found or read, or holds no event.
    """
    from .._errors import DataError
    from .._replay import replay_sources
    from ..feeds import CaptureLimits, CaptureStats, load_tape

    paths, store, symbols = replay_sources(config, data)
    limits = CaptureLimits(
        max_receive_skew_ms=config.data.max_receive_skew_ms,
        max_time_jump_ms=config.data.max_time_jump_ms,
    )
    tape = load_tape(paths, symbols, limits=limits, stats=CaptureStats(), store=store)
    if tape.first_ts is None or tape.last_ts is None:
        raise DataError(f"{', '.join(str(p) for p in paths)}: no market events found")
    return [str(p.resolve()) for p in paths], tape.first_ts, tape.last_ts

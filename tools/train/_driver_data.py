"""Entry signals, feature rows and labels from the engine's own replay.

No second strategy loop: the data are replayed by the engine (:func:`engine.run_replay`,
the deterministic driver) with the filter in *take-all* mode (threshold, its floor and
its adaptation at 0, online retraining off), so every entry signal the strategy fires is
scored, journaled with the row the model actor saw (``EntryScored.features``, the same
feature code as in any run) and taken. Each is labelled by the engine itself
(``DecisionLabeled``: the triple barrier with the strategy's exits and
``model.label_fee_bps`` a leg, from quotes after the decision only). Rows and labels are
joined by correlation id, in journal order.

Take-all differs from a run with the filter off in one way: a signal whose features are
not warm yet is not an entry with the filter on (no score, no entry), so the position path
can differ from the unfiltered run's right after warm-up; such signals have no row anyway.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import attrs
import numpy as np

import engine

__all__ = ["DriverSignals", "driver_signals", "take_all"]


@attrs.frozen
class DriverSignals:
    """The engine's scored entry signals of one replay, in journal order.

    ``label`` is -1 where the engine had not decided the label when the data ended.
    """

    X: np.ndarray  # (n, n_features) float32, NaN where the journal has null
    label: np.ndarray  # (n,) int8: 1 paid after fees, 0 did not, -1 undecided
    ret_bps: np.ndarray  # (n,) float64 net return of the label's barrier, NaN if undecided
    side: np.ndarray  # (n,) int8
    ts: np.ndarray  # (n,) int64 decision time (ns)
    ts_resolved: np.ndarray  # (n,) int64 when the label was decided (ns); int64 max if not
    symbol: tuple[str, ...]
    correlation_id: tuple[str, ...]
    journal_path: Path

    @property
    def labelled(self) -> np.ndarray:
        """Indices of the rows with a decided label."""
        return np.flatnonzero(self.label >= 0)


def take_all(config: engine.Config) -> engine.Config:
    """``config`` with the filter on, taking every scored signal and never retraining."""
    m = attrs.evolve(
        config.model,
        enabled=True,
        threshold=0.0,
        threshold_min=0.0,
        adapt_gain=0.0,
        retrain=False,
    )
    return attrs.evolve(config, model=m)


def read_signals(journal_path: Path) -> DriverSignals:
    """The ``EntryScored`` rows of a journal joined with their ``DecisionLabeled``."""
    db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT kind, payload FROM journal WHERE kind IN "
            "('EntryScored', 'DecisionLabeled') ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    scored: list[dict] = []
    labels: dict[str, dict] = {}
    for kind, payload in rows:
        r = json.loads(payload)
        if kind == "EntryScored":
            scored.append(r)
        else:
            labels[r["correlation_id"]] = r
    n = len(scored)
    width = len(scored[0]["features"]) if scored else 0
    X = np.array(
        [[np.nan if x is None else x for x in r["features"]] for r in scored],
        dtype=np.float32,
    ).reshape(n, width)
    lab = [labels.get(r["correlation_id"]) for r in scored]
    return DriverSignals(
        X=X,
        label=np.array([-1 if x is None else x["label"] for x in lab], dtype=np.int8),
        ret_bps=np.array([np.nan if x is None else x["ret_bps"] for x in lab], dtype=np.float64),
        side=np.array([r["side"] for r in scored], dtype=np.int8),
        ts=np.array([r["ts_event"] for r in scored], dtype=np.int64),
        ts_resolved=np.array(
            [np.iinfo(np.int64).max if x is None else x["ts_event"] for x in lab], dtype=np.int64
        ),
        symbol=tuple(r["symbol"] for r in scored),
        correlation_id=tuple(r["correlation_id"] for r in scored),
        journal_path=journal_path,
    )


def driver_signals(config: engine.Config, files: Sequence[Path], work_dir: Path) -> DriverSignals:
    """Replay ``files`` with ``config`` in take-all mode; its scored, labelled signals.

    The journal and the log go under ``work_dir``; everything but the data paths, those
    locations and the filter settings of :func:`take_all` is the config's.

    Raises:
        engine.ConfigError: the config is invalid.
        engine.DataError: the data cannot be read.
    """
    import trio

    cfg = take_all(config)
    cfg = attrs.evolve(
        cfg,
        data=attrs.evolve(cfg.data, paths=tuple(str(p) for p in files)),
        journal=attrs.evolve(cfg.journal, dir=str(work_dir)),
        # The caller shows progress over its replays, not each replay its own.
        logging=attrs.evolve(cfg.logging, path=str(work_dir / "engine.jsonl"), progress="off"),
    )
    log, stream = engine.make_logger(cfg.logging.path, cfg.logging.level)
    try:
        report = trio.run(partial(engine.run_replay, cfg, log=log))
    finally:
        if stream is not None:
            stream.close()
    return read_signals(Path(report.journal_path))

"""Parameter sweeps on Dask: a grid of deterministic replays, ranked; walk-forward.

``trireme sweep --grid strategy.fast=5,8,13 --grid strategy.slow=21,34 --out r.csv``
runs every combination as a Dask task (:func:`replay_point`) on a ``LocalCluster``
of worker processes or on a user's cluster, and writes the ranked table and the
best config. See :mod:`engine.sweep._cli` for the command and README "Sweeps".
"""

from ._cli import main as main
from ._grid import Axis as Axis
from ._grid import SweepPoint as SweepPoint
from ._grid import grid_points as grid_points
from ._grid import parse_grid as parse_grid
from ._run import SweepOutcome as SweepOutcome
from ._run import dask_client as dask_client
from ._run import run_grid as run_grid
from ._run import run_walk_forward as run_walk_forward
from ._table import config_toml as config_toml
from ._table import write_table as write_table
from ._task import replay_point as replay_point
from ._task import trade_pnls as trade_pnls
from ._walk import Fold as Fold
from ._walk import WalkForward as WalkForward
from ._walk import folds as folds
from ._walk import parse_walk_forward as parse_walk_forward

__all__ = [
    "Axis",
    "Fold",
    "SweepOutcome",
    "SweepPoint",
    "WalkForward",
    "config_toml",
    "dask_client",
    "folds",
    "grid_points",
    "main",
    "parse_grid",
    "parse_walk_forward",
    "replay_point",
    "run_grid",
    "run_walk_forward",
    "trade_pnls",
    "write_table",
]

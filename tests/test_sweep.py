"""Parameter sweeps: the grid, walk-forward windows, replay windows, and the same sweep on
a LocalCluster and on a real ``dask scheduler`` with two ``dask worker`` processes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trio

from engine import ConfigError, load_config
from engine._config import Override, parse_utc
from engine._replay import run_replay
from engine.feeds import CaptureStats
from engine.feeds._tape import parse_tape, restrict_tape
from engine.sweep import folds, grid_points, parse_grid, parse_walk_forward, trade_pnls
from engine.sweep._walk import iso
from engine.testing import quiet_logger

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
GRID = ["--grid", "strategy.fast=5,8", "--grid", "strategy.slow=13,21"]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The sample, ML filter off, journal and log under ``tmp_path``."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[data]\npaths = ["{SAMPLE}"]\n[model]\nenabled = false\n'
        f'[journal]\ndir = "{tmp_path / "runs"}"\n[logging]\npath = "{tmp_path / "log.jsonl"}"\n'
        "[hardware]\nenabled = false\n"
    )
    return path


def test_grid_values_are_split_and_typed(config_file: Path) -> None:
    axes = parse_grid(["strategy.fast=5,30", "strategy.slow=21,34", 'data.symbols=["BTCUSDT"],[]'])
    assert [a.key for a in axes] == ["strategy.fast", "strategy.slow", "data.symbols"]
    assert axes[2].values == (["BTCUSDT"], [])
    points, skipped = grid_points(config_file, [], axes)
    # fast=30 with slow=21 breaks the schema's cross-field rule: skipped and counted; the
    # value 30 is fine with slow=34, so it is not an error of the user's.
    assert len(points) == 6
    assert sum(skipped.values()) == 2
    assert all("strategy.fast" in reason and "smaller than slow" in reason for reason in skipped)
    assert points[0].params == (
        ("strategy.fast", 5),
        ("strategy.slow", 21),
        ("data.symbols", ("BTCUSDT",)),
    )
    # Typed by the schema: an integer given for a float key is a float.
    (point,) = grid_points(config_file, [], parse_grid(["strategy.stop_loss_bps=10"]))[0]
    assert point.params == (("strategy.stop_loss_bps", 10.0),)
    assert isinstance(point.params[0][1], float)


@pytest.mark.parametrize(
    ("grid", "named"),
    [
        ("strategy.fsat=1,2", "--grid: strategy.fsat: unknown key"),
        ("strategy.fast=5,abc", "--grid: strategy.fast: expected an integer, got 'abc'"),
        ("strategy.fast=-1", "--grid: strategy.fast: must be > 0"),
        ("strategy.fast", "--grid: strategy.fast: expected dotted.key=value1,value2"),
        ("strategy.fast=5,", "--grid: strategy.fast: empty value"),
    ],
)
def test_a_bad_key_or_value_exits_2_naming_it(
    config_file: Path, tmp_path: Path, grid: str, named: str
) -> None:
    out = tmp_path / "r.csv"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "sweep",
            "--config",
            str(config_file),
            "--grid",
            grid,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and named in result.stderr
    assert not out.exists()


def test_walk_forward_windows() -> None:
    walk = parse_walk_forward("3/1")
    day = 86_400 * 10**9
    assert (walk.train_ns, walk.test_ns) == (3 * day, day)
    assert parse_walk_forward("90m/30m").train_ns == 90 * 60 * 10**9
    t0 = 1_700_000_000_123_456_789
    got = folds(walk, t0, t0 + 6 * day - 1)
    # Tests start after 3 days and follow each other: [3, 4), [4, 5), [5, 6) days.
    assert [(f.test_start - t0 // 1000 * 1000) // day for f in got] == [3, 4, 5]
    assert all(a.test_end == b.test_start for a, b in itertools.pairwise(got))
    assert all(f.train_end == f.test_start and f.train_end - f.train_start == 3 * day for f in got)
    assert parse_utc(iso(got[0].test_start)) == got[0].test_start
    with pytest.raises(ConfigError, match="--walk-forward: 3/1 needs more data"):
        folds(walk, t0, t0 + 3 * day)
    with pytest.raises(ConfigError, match="--walk-forward"):
        parse_walk_forward("3d")


def test_a_window_is_the_events_in_it_renumbered() -> None:
    tape = parse_tape([SAMPLE], ["BTCUSDT"], stats=CaptureStats())
    merged = tape.merged_ts()
    start, end = int(merged[1000]) + 1, int(merged[30_000])
    part = restrict_tape(tape, start, end)
    ticks = part.ticks["BTCUSDT"]
    inside = (merged >= start) & (merged < end)
    assert len(part) == int(inside.sum()) > 0
    assert np.array_equal(np.sort(ticks.seq), np.arange(len(part)))
    assert ticks.ts.min() >= start and ticks.ts.max() < end
    assert part.first_ts == ticks.ts[0] and part.last_ts == ticks.ts[-1]


async def test_a_replay_restricted_by_data_start_and_end(config_file: Path) -> None:
    whole = load_config(config_file)
    start, end = "2024-08-08T23:55:00Z", "2024-08-08T23:56:30.5Z"
    window = load_config(
        config_file,
        overrides=[
            Override(key="data.start", value=start, origin="test"),
            Override(key="data.end", value=end, origin="test"),
        ],
    )
    full = await run_replay(whole, log=quiet_logger())
    part = await run_replay(window, log=quiet_logger())
    assert parse_utc(start) <= part.first_ts and part.last_ts < parse_utc(end)
    assert 0 < part.events < full.events
    with pytest.raises(ConfigError, match=r"data\.end: must be after start"):
        load_config(
            config_file,
            overrides=[
                Override(key="data.start", value=end, origin="test"),
                Override(key="data.end", value=start, origin="test"),
            ],
        )
    # Round trips from the journal add up to the run's net PnL (it ends flat).
    pnls = trade_pnls(Path(full.journal_path))
    assert len(pnls) == full.round_trips > 0
    assert sum(pnls) == pytest.approx(full.net_pnl, abs=1e-9)


# -- the same sweep on two real Dask clusters ------------------------------------------


def _sweep(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "sweep",
            "--config",
            str(config),
            *GRID,
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=out.parent,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def dask_cluster(tmp_path: Path):
    """A real ``dask scheduler`` and two ``dask worker`` processes on free ports; yields
    the scheduler's address once both workers have registered."""
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    info = tmp_path / "scheduler.json"
    common = ["--no-dashboard"]
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--scheduler-file", str(info), "--port", "0", *common],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    for _ in range(2):
        procs.append(
            subprocess.Popen(
                [dask, "worker", "--scheduler-file", str(info), "--nthreads", "1", *common],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        with Client(scheduler_file=str(info), timeout="120s") as client:
            client.wait_for_workers(2, timeout=300)
            address = client.scheduler.address
            assert len(client.scheduler_info()["workers"]) == 2
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)


def test_the_same_sweep_on_a_local_and_a_distributed_cluster(
    config_file: Path, tmp_path: Path, dask_cluster: str
) -> None:
    local = _sweep(config_file, tmp_path / "local.csv", "--workers", "2")
    remote = _sweep(config_file, tmp_path / "remote.csv", "--scheduler", dask_cluster)
    assert dask_cluster in remote.stderr and "LocalCluster" in local.stderr
    # Streamed: a progress line per finished replay.
    assert sum("sweep [" in line for line in local.stderr.splitlines()) == 4
    table = (tmp_path / "local.csv").read_text()
    assert table == (tmp_path / "remote.csv").read_text()
    rows = table.splitlines()
    assert rows[0].startswith("rank,point,strategy.fast,strategy.slow,net_pnl,trades,win_rate")
    assert len(rows) == 5
    cells = [r.split(",") for r in rows[1:]]
    nets = [float(c[4]) for c in cells]
    assert nets == sorted(nets, reverse=True)
    assert {(c[2], c[3]) for c in cells} == {("5", "13"), ("5", "21"), ("8", "13"), ("8", "21")}
    # The best config, replayed here, is rank 1's replay (same journal digest).
    best = load_config(tmp_path / "local.best.toml")
    assert (best.strategy.fast, best.strategy.slow) == (int(cells[0][2]), int(cells[0][3]))
    report = trio.run(lambda: run_replay(best, log=quiet_logger(), journal_path=tmp_path / "j"))
    assert report.journal_sha256 == cells[0][-1]

    # Walk-forward on the distributed cluster: out-of-sample rows only, each the replay
    # of the fold's pick on its test window.
    wf = tmp_path / "wf.parquet"
    _sweep(config_file, wf, "--scheduler", dask_cluster, "--walk-forward", "60s/30s")
    import pyarrow.parquet as pq

    folds_out = pq.read_table(wf).to_pylist()
    assert [r["fold"] for r in folds_out] == [0, 1, 2, 3]
    for a, b in itertools.pairwise(folds_out):
        assert a["test_end"] == b["test_start"]
    for row in folds_out:
        cfg = load_config(
            config_file,
            overrides=[
                Override(key="strategy.fast", value=row["strategy.fast"], origin="test"),
                Override(key="strategy.slow", value=row["strategy.slow"], origin="test"),
                Override(key="data.start", value=row["test_start"], origin="test"),
                Override(key="data.end", value=row["test_end"], origin="test"),
            ],
        )
        journal = tmp_path / f"fold{row['fold']}.sqlite"
        got = trio.run(lambda c=cfg, j=journal: run_replay(c, log=quiet_logger(), journal_path=j))
        assert got.journal_sha256 == row["journal_sha256"]
        assert got.net_pnl == row["net_pnl"]
    assert json.loads(json.dumps(folds_out))  # plain values, no numpy objects

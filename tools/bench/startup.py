"""Start-up: set-up time of ``python -m engine`` on a fresh clone (cold) and again (warm).

``python -m tools.bench startup [--cold N] [--warm N] [--config PATH] [--set KEY=VALUE]``
copies the working tree's files that git does not ignore (what a fresh clone of it would
have: no ``__pycache__`` numba caches) to a temporary directory and runs
``python -m engine --config config.toml`` there (with the ``--set`` overrides, e.g.
``--set model.enabled=true`` for the ML filter the shipped config leaves off), as a user
would:

- ``cold``: each run in a new copy with empty ``NUMBA_CACHE_DIR`` and ``XDG_CACHE_HOME``
  (nothing compiled, no tick store);
- ``warm``: runs repeated in the last cold run's copy, caches kept.

For each it reports the median of the engine's own ``set-up`` figure (symbol scan,
kernel and model load, up to the first event), of the whole process's wall time and of
its CPU time (user + system, all threads: on a shared machine wall time also counts
whatever else ran), whether a cold run wrote a progress line on stderr, and whether
every run gave the same journal digest. Targets (issue 12): cold set-up under 5 s,
warm under 0.5 s. With the ML filter on, a cold replay compiles the feature kernel in a
child process and waits for it at the first signal, after set-up: the progress lines
say how long that wait was, and ``wall_s`` / ``cpu_s`` (the child's CPU included) count it.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_SETUP = re.compile(r"^\s*set-up\s+([0-9.]+) s", re.MULTILINE)
_DIGEST = re.compile(r"^\s*journal_sha256\s+([0-9a-f]{64})", re.MULTILINE)


def _copy_tree(dest: Path) -> None:
    """The files a commit of the working tree would hold (tracked or not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        src = ROOT / name
        if not src.is_file():  # deleted in the working tree
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def _run_once(tree: Path, config: str, caches: Path, sets: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(caches / "numba")
    env["XDG_CACHE_HOME"] = str(caches / "xdg")
    env["PYTHONPATH"] = str(tree)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--config", config, *_set_args(sets)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"startup bench: the engine exited {done.returncode}:\n{done.stderr}")
    setup = _SETUP.search(done.stdout)
    digest = _DIGEST.search(done.stdout)
    if setup is None or digest is None:
        raise SystemExit("startup bench: no 'set-up' or 'journal_sha256' line in the report")
    return {
        "setup_s": float(setup.group(1)),
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "progress_lines": [
            ln
            for ln in done.stderr.splitlines()
            if ln.startswith("trireme: ") and " replay" not in ln
        ],
        "digest": digest.group(1),
    }


def _set_args(sets: list[str]) -> list[str]:
    return [arg for item in sets for arg in ("--set", item)]


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(runs),
        "setup_s": round(statistics.median(r["setup_s"] for r in runs), 3),
        "wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
        "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
        "setup_s_each": [round(r["setup_s"], 3) for r in runs],
    }


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the JSON-able result."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench startup")
    parser.add_argument("--cold", type=int, default=3, help="cold runs (fresh copy and caches)")
    parser.add_argument("--warm", type=int, default=5, help="warm runs (last cold copy)")
    parser.add_argument("--config", default="config.toml", help="config, relative to the tree")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override passed to the engine (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.cold < 1 or args.warm < 0:
        parser.error("--cold must be >= 1 and --warm >= 0")
    cold: list[dict[str, Any]] = []
    warm: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="trireme-startup-") as tmp:
        for i in range(args.cold):
            tree = Path(tmp) / f"clone{i}"
            _copy_tree(tree)
            caches = Path(tmp) / f"caches{i}"
            cold.append(_run_once(tree, args.config, caches, args.set))
        warm = [_run_once(tree, args.config, caches, args.set) for _ in range(args.warm)]
    digests = {r["digest"] for r in cold + warm}
    return {
        "benchmark": "startup",
        "command": " ".join(["python -m engine --config", args.config, *_set_args(args.set)]),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cold": _medians(cold),
        "warm": _medians(warm) if warm else None,
        "cold_progress_lines": cold[0]["progress_lines"],
        "same_digest": len(digests) == 1,
        "digest": sorted(digests)[0],
        "targets": {"cold_setup_s": 5.0, "warm_setup_s": 0.5},
    }

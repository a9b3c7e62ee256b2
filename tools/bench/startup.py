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
every run gave the same journal digest. The whole process splits as: the interpreter
(``python_s``: ``python -c pass``), importing the engine (``import_s``, ``import_cpu_s``:
``python -c "import engine._cli"`` in the warm copy, less the interpreter; run between the
warm runs),
then ``setup_s`` up to the first event, then the run and the report. ``compiled`` names
the kernels a cold run compiled (numba's cache files written: one per signature, the
background feature compile included) and ``recompiled`` counts those a warm run wrote
(0 when warm means warm).

``--warm-up`` runs ``python -m engine warm-up`` (what ``make run`` and ``make test`` do
after installing) in each cold copy first, times it (``warm_up_each``), and then times
the first run after it as the cold run (``compiled`` then shows what it still compiled).
``--tree DIR`` measures another tree than this checkout; ``--ref DIR`` runs the same in
a second tree (e.g. ``git archive HEAD | tar -x -C DIR``),
each of its runs next to the working tree's (interleaved A/B: the machine's load hits
both alike), and reports it under ``ref``. Targets (issue 12): cold set-up under 5 s,
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


def _copy_tree(src: Path, dest: Path) -> None:
    """The files a commit of ``src`` would hold (tracked or not ignored); a tree that is
    not a git checkout is copied whole, less its ``__pycache__`` directories."""
    if not (src / ".git").exists():
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
        return
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=src,
        check=True,
        capture_output=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        path = src / name
        if not path.is_file():  # deleted in the working tree
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def _env(tree: Path, caches: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(caches / "numba")
    env["XDG_CACHE_HOME"] = str(caches / "xdg")
    env["PYTHONPATH"] = str(tree)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _kernel_files(caches: Path) -> set[Path]:
    """numba's data files: one per compiled signature of a cached kernel."""
    return set((caches / "numba").rglob("*.nbc"))


def _kernel_name(path: Path) -> str:
    # ``_ema_cross.scan-87.py311.1.nbc`` -> ``_ema_cross.scan``
    return path.name.split("-", 1)[0]


def _run_once(tree: Path, config: str, caches: Path, sets: list[str]) -> dict[str, Any]:
    before_files = _kernel_files(caches)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--config", config, *_set_args(sets)],
        cwd=tree,
        env=_env(tree, caches),
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
    written = sorted(_kernel_name(p) for p in _kernel_files(caches) - before_files)
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
        "compiled": {name: written.count(name) for name in dict.fromkeys(written)},
    }


def _timed(code: str, tree: Path, caches: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``python -c code`` in the tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=tree,
        env=_env(tree, caches),
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


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


def _summary(
    cold: list[dict[str, Any]],
    warm: list[dict[str, Any]],
    imports: list[tuple[float, float]],
    pythons: list[tuple[float, float]],
) -> dict[str, Any]:
    out: dict[str, Any] = {"cold": {**_medians(cold), "compiled": cold[0]["compiled"]}}
    if cold[0]["warm_up"] is not None:
        out["cold"]["warm_up_each"] = [r["warm_up"] for r in cold]
    if warm:
        python_s, python_cpu_s = (statistics.median(x) for x in zip(*pythons, strict=True))
        import_s, import_cpu_s = (statistics.median(x) for x in zip(*imports, strict=True))
        out["warm"] = {
            **_medians(warm),
            "python_s": round(python_s, 3),
            "import_s": round(import_s - python_s, 3),
            "import_cpu_s": round(import_cpu_s - python_cpu_s, 3),
            "recompiled": sum(sum(r["compiled"].values()) for r in warm),
        }
    out["cold_progress_lines"] = cold[0]["progress_lines"]
    out["digests"] = sorted({r["digest"] for r in cold + warm})
    return out


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
    parser.add_argument(
        "--warm-up",
        action="store_true",
        help="cold runs: run `python -m engine warm-up` first (as make run does after "
        "installing) and time the first run after it",
    )
    parser.add_argument(
        "--tree", type=Path, default=ROOT, metavar="DIR", help="the tree to measure (default: this)"
    )
    parser.add_argument(
        "--ref", type=Path, default=None, metavar="DIR", help="a reference tree, run interleaved"
    )
    args = parser.parse_args(argv)
    if args.cold < 1 or args.warm < 0:
        parser.error("--cold must be >= 1 and --warm >= 0")
    trees = {"tree": args.tree.resolve(), **({"ref": args.ref.resolve()} if args.ref else {})}
    cold: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
    warm: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
    imports: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
    pythons: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
    last: dict[str, tuple[Path, Path]] = {}
    with tempfile.TemporaryDirectory(prefix="trireme-startup-") as tmp:
        for i in range(args.cold):
            for label, src in trees.items():
                tree = Path(tmp) / label / f"clone{i}"
                _copy_tree(src, tree)
                caches = Path(tmp) / label / f"caches{i}"
                warm_up = None
                if args.warm_up:
                    code = (
                        "import sys; from engine._cli import main; "
                        f"sys.exit(main(['warm-up', '--config', {args.config!r}, "
                        f"*{_set_args(args.set)!r}]))"
                    )
                    wall, cpu = _timed(code, tree, caches)
                    warm_up = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
                cold[label].append(_run_once(tree, args.config, caches, args.set))
                cold[label][-1]["warm_up"] = warm_up
                last[label] = (tree, caches)
        for _ in range(args.warm):
            for label in trees:
                tree, caches = last[label]
                warm[label].append(_run_once(tree, args.config, caches, args.set))
                imports[label].append(_timed("import engine._cli", tree, caches))
                pythons[label].append(_timed("pass", tree, caches))
    main = _summary(cold["tree"], warm["tree"], imports["tree"], pythons["tree"])
    out: dict[str, Any] = {
        "benchmark": "startup",
        "command": " ".join(["python -m engine --config", args.config, *_set_args(args.set)]),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        **main,
        "same_digest": len(main["digests"]) == 1,
        "digest": main["digests"][0],
        "targets": {"cold_setup_s": 5.0, "warm_setup_s": 0.5},
    }
    if args.ref:
        out["ref"] = {
            "dir": str(args.ref),
            **_summary(cold["ref"], warm["ref"], imports["ref"], pythons["ref"]),
        }
    return out

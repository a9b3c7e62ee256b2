"""``trireme warm-up``: compile the kernels a config's runs use, once, after installing.

numba compiles a kernel at its first call and caches it on disk (``__pycache__`` beside
the sources, or ``NUMBA_CACHE_DIR``); a first run on a fresh clone pays for every kernel
it uses. ``warm-up`` pays for them ahead: it replays the bundled sample with the given
config (its strategy, exits, confirmation and ML filter; the data, symbols, window,
journal, log and tick store replaced), which compiles exactly the kernels a replay of
that config calls, the capture parser's included, and compiles the ML filter's feature
kernel in the foreground when ``[model]`` is enabled. ``make run`` and ``make test`` call
it once after installing, so the first ``python -m engine`` is a warm start. Kernels
already cached load in a fraction of a second, so a second call costs little.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from ._errors import ConfigError, DataError, EngineError
from ._progress import slow_step

_SAMPLE = Path("data/sample/btcusdt_20240808_180s.gz")


def build_warm_up_parser() -> argparse.ArgumentParser:
    """The parser of ``trireme warm-up``."""
    from ._cli import PROG, _add_set_option, _Parser

    parser = _Parser(
        prog=f"{PROG} warm-up",
        description="compile (or load) the kernels a run of CONFIG uses, by replaying the "
        "bundled sample with it once; run once after installing (make run and make test do)",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="the config to warm up for (default: bundled)"
    )
    _add_set_option(parser)
    return parser


def warm_up_main(argv: Sequence[str]) -> int:
    """``trireme warm-up``: 0 done, 2 bad usage or config, 1 the replay failed."""
    from ._cli import bundled_config, load_cli_config
    from ._logging import make_logger
    from ._replay import run_replay

    args = build_warm_up_parser().parse_args(argv)
    sample = bundled_config().parent / _SAMPLE
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trireme-warm-up-") as tmp:
        sets = [
            *args.set,
            f"data.paths=[{json.dumps(str(sample))}]",
            "data.symbols=[]",
            'data.start=""',
            'data.end=""',
            "data.tick_store=off",
            "engine.mode=replay",
            f"journal.dir={json.dumps(tmp)}",
            "logging.path=-",
            "logging.level=error",
        ]
        try:
            config = load_cli_config(args.config, sets)
        except ConfigError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        log, _ = make_logger("-", "error")
        with slow_step("compiling kernels (once after installing)"):
            try:
                if config.model.enabled:
                    from .models import FeatureBuilder

                    FeatureBuilder.warm_up()  # in this process, not in the background
                trio.run(lambda: run_replay(config, log=log))
            except (ConfigError, DataError) as exc:
                sys.stderr.write(f"error: {exc}\n")
                return 2
            except EngineError as exc:
                sys.stderr.write(f"error: warm-up replay failed: {exc}\n")
                return 1
    sys.stdout.write(f"warm-up: kernels ready in {time.perf_counter() - started:.1f} s\n")
    return 0

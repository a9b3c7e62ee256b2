"""Command-line interface: ``python -m engine --config config.toml [...]``.

Exit codes: 0 done, 1 the run failed (an actor died; see the log), 2 bad usage,
config or data (one line on stderr naming the file, key and what was expected).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import trio

from ._config import load_config
from ._errors import ActorFailedError, ConfigError, DataError, JournalError
from ._logging import make_logger
from ._report import summary_text, write_report
from ._supervisor import run_replay

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but every usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs)."""
    parser = _Parser(
        prog="python -m engine",
        description="Trireme: replay recorded Binance USD-M futures data through the engine.",
    )
    parser.add_argument("--config", required=True, type=Path, help="TOML config file")
    parser.add_argument(
        "--data",
        action="append",
        metavar="PATH",
        help="capture file or directory to replay (repeatable; overrides data.paths)",
    )
    parser.add_argument("--report", type=Path, metavar="PATH", help="write the summary as JSON")
    parser.add_argument(
        "--mode",
        choices=["replay"],
        default=None,
        help="run mode (only replay in this version; paper and live come with the live venues)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if args.mode is not None and args.mode != config.engine.mode:
            raise ConfigError("--mode", "", f"{args.mode!r} conflicts with engine.mode")
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    log, log_file = make_logger(
        config.logging.path, config.logging.level, base_dir=Path(config.base_dir)
    )
    try:
        report = trio.run(lambda: run_replay(config, data=args.data, log=log))
    except (DataError, JournalError) as exc:
        log.error("cannot start", error=str(exc))
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    except ActorFailedError as exc:
        sys.stderr.write(f"error: {exc} (see the log for details)\n")
        return EXIT_FAILED
    finally:
        if log_file is not None:
            log_file.close()
    sys.stdout.write(summary_text(report) + "\n")
    if args.report is not None:
        write_report(report, args.report)
    return EXIT_OK

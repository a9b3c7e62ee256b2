"""Command-line interface: ``python -m engine --config config.toml [...]``.

``python -m engine control ACTION (--socket PATH | --config PATH)`` sends an
operator command (status, halt, reduce, resume) to a running engine.

Exit codes: 0 done, 1 the run failed (an actor died; see the log), 2 bad usage,
config or data (one line on stderr naming the file, key and what was expected).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import orjson
import trio
from structlog.typing import FilteringBoundLogger

from ._config import Config, load_config
from ._control import ControlError, ControlState, send_control, serve_control
from ._errors import ActorFailedError, ConfigError, DataError, JournalError
from ._logging import make_logger
from ._report import summary_text, write_report
from ._supervisor import RunReport, run_replay
from .messages import ControlCommand

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


def build_control_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m engine control``."""
    parser = _Parser(
        prog="python -m engine control",
        description="Send an operator command to a running engine.",
    )
    parser.add_argument("action", choices=["status", "halt", "reduce", "resume"])
    parser.add_argument("--reason", default="operator", help="why (logged and journaled)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", type=Path, help="the engine's control socket")
    where.add_argument("--config", type=Path, help="read control.socket from this config")
    return parser


def control_main(argv: Sequence[str]) -> int:
    """``python -m engine control ACTION``: 0 done, 1 refused or unreachable, 2 bad usage."""
    args = build_control_parser().parse_args(argv)
    path = args.socket
    if path is None:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return EXIT_USAGE
        if not config.control.socket:
            sys.stderr.write(f"error: {args.config}: control.socket: not set in this config\n")
            return EXIT_USAGE
        path = config.resolve(config.control.socket)
    reason = "" if args.action == "status" else args.reason
    try:
        answer = send_control(path, args.action, reason)
    except ControlError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_FAILED
    sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    return EXIT_OK if answer.get("ok") else EXIT_FAILED


async def _run(config: Config, data: list[str] | None, log: FilteringBoundLogger) -> RunReport:
    """The replay, with the control socket served beside it when configured."""
    if not config.control.socket:
        return await run_replay(config, data=data, log=log)
    send, receive = trio.open_memory_channel[ControlCommand](16)
    state = ControlState()
    path = config.resolve(config.control.socket)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, send, state, log.bind(actor="control"))
        report = await run_replay(config, data=data, log=log, control=receive, control_state=state)
        nursery.cancel_scope.cancel()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["control"]:
        return control_main(argv[1:])
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
        report = trio.run(_run, config, args.data, log)
    except (DataError, JournalError, ControlError) as exc:
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

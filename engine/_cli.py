"""Command-line interface: ``python -m engine --config config.toml [...]``.

``python -m engine control ACTION (--socket PATH | --config PATH)`` sends an
operator command (status, halt, reduce, resume) to a running engine;
``python -m engine sim-exchange --data CAPTURE`` serves a capture as a
Binance-compatible exchange; ``python -m engine record --config C --out DIR``
records live streams.

Exit codes: 0 done, 1 the run failed (an actor died; see the log), 2 bad usage,
config or data (one line on stderr naming the file, key and what was expected).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import attrs
import orjson
import trio
from structlog.typing import FilteringBoundLogger

from ._config import Config, load_config
from ._control import ControlError, ControlState, send_control, serve_control
from ._errors import ActorFailedError, ConfigError, DataError, JournalError, single_cause
from ._logging import make_logger
from ._report import summary_text, write_report
from ._signals import wait_for_stop
from ._supervisor import RunReport, run_live, run_paper, run_replay
from .feeds._record import record
from .feeds._recorder import CaptureWriter
from .messages import ControlCommand
from .models import ModelError
from .venues.binance import ReconciliationError
from .venues.sim._exchange_limits import LimitSettings
from .venues.sim._recorded import load_recording
from .venues.sim._stream_server import ServerSettings, StreamServer, TradingSettings, split_faults
from .venues.sim._trading import AccountSettings

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
        choices=["replay", "paper", "live"],
        default=None,
        help="replay recorded data, paper-trade live streams on the simulated venue, or "
        "trade live on the Binance venue (overrides engine.mode)",
    )
    parser.add_argument(
        "--i-understand-live",
        action="store_true",
        help="live mode only: confirm that real orders will be sent (also needs "
        "engine.live = true in the config)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="paper mode: stop after this long (default feeds.duration_s; 0 = until Ctrl-C)",
    )
    return parser


def build_sim_exchange_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m engine sim-exchange``."""
    parser = _Parser(
        prog="python -m engine sim-exchange",
        description="Serve a capture as a Binance USD-M compatible exchange: market data, "
        "signed trading endpoints matched against the replayed book, user-data streams.",
    )
    parser.add_argument("--data", action="append", required=True, metavar="PATH")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9443, help="websocket port")
    parser.add_argument("--rest-port", type=int, default=9080, help="REST port")
    parser.add_argument("--speed", type=float, default=1.0, help="x recorded pace; 0 = flat out")
    parser.add_argument("--ping-interval", type=float, default=180.0, metavar="SECONDS")
    parser.add_argument("--pong-timeout", type=float, default=600.0, metavar="SECONDS")
    parser.add_argument(
        "--max-connection",
        type=float,
        default=86_400.0,
        metavar="SECONDS",
        help="close connections after this long (Binance: 24 h)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="playback faults drop@S, stall@S:SECONDS, gap@S, garbage@S, drop_user_stream@S; "
        "request faults KIND[:ARG][*COUNT][@METHOD/PATH] armed from the start, KIND one of "
        "429 (ARG Retry-After s), 418 (ARG ban ms), 503-executed, 503-lost, 503-unavailable, "
        "-1021, -2019, -4164, slow (ARG delay ms), drop_user_stream (repeatable)",
    )
    trading = parser.add_argument_group("trading")
    trading.add_argument(
        "--api-key-env",
        default="SIM_API_KEY",
        metavar="VAR",
        help="environment variable holding the accepted API key (default SIM_API_KEY)",
    )
    trading.add_argument(
        "--api-secret-env",
        default="SIM_API_SECRET",
        metavar="VAR",
        help="environment variable holding its secret (default SIM_API_SECRET)",
    )
    trading.add_argument("--balance", type=float, default=10_000.0, help="starting USDT wallet")
    trading.add_argument("--maker-fee-bps", type=float, default=2.0)
    trading.add_argument("--taker-fee-bps", type=float, default=5.0)
    trading.add_argument("--leverage", type=int, default=20, help="initial leverage per symbol")
    trading.add_argument("--weight-limit", type=int, default=2400, help="request weight per minute")
    trading.add_argument("--orders-10s", type=int, default=300, help="orders per 10 seconds")
    trading.add_argument("--orders-1m", type=int, default=1200, help="orders per minute")
    trading.add_argument(
        "--ban-after", type=int, default=3, help="requests sent while rate limited before a 418"
    )
    trading.add_argument(
        "--ban-seconds", type=float, default=120.0, help="first IP ban; doubles on repeats"
    )
    trading.add_argument(
        "--listen-key-ttl", type=float, default=3600.0, metavar="SECONDS", help="listenKey life"
    )
    parser.add_argument("--log", default="-", help="JSON log file, or - for stderr")
    return parser


def sim_exchange_main(argv: Sequence[str]) -> int:
    """``python -m engine sim-exchange``: serve until interrupted."""
    args = build_sim_exchange_parser().parse_args(argv)
    try:
        faults, request_faults = split_faults(args.fault)
        trading = TradingSettings(
            account=AccountSettings(
                balance=str(args.balance),
                maker_fee_bps=str(args.maker_fee_bps),
                taker_fee_bps=str(args.taker_fee_bps),
                leverage=args.leverage,
            ),
            limits=LimitSettings(
                weight_per_minute=args.weight_limit,
                orders_per_10s=args.orders_10s,
                orders_per_minute=args.orders_1m,
                ban_after=args.ban_after,
                ban_s=args.ban_seconds,
            ),
            faults=request_faults,
            listen_key_ttl_s=args.listen_key_ttl,
        )
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    api_key = os.environ.get(args.api_key_env, "").strip()
    api_secret = os.environ.get(args.api_secret_env, "").strip()
    api_keys = {api_key: api_secret} if api_key and api_secret else {}
    if not api_keys:
        sys.stderr.write(
            f"warning: {args.api_key_env}/{args.api_secret_env} not set: "
            "signed endpoints will answer -2015\n"
        )
    try:
        recording = load_recording(args.data)
    except DataError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    if not recording.messages:
        sys.stderr.write(f"error: {', '.join(args.data)}: no stream messages found\n")
        return EXIT_USAGE
    log, log_file = make_logger(args.log, "info")
    settings = ServerSettings(
        speed=args.speed,
        ping_interval_s=args.ping_interval,
        pong_timeout_s=args.pong_timeout,
        max_connection_s=args.max_connection,
        faults=faults,
    )
    server = StreamServer(
        recording,
        settings,
        log.bind(actor="sim-exchange"),
        trading=trading,
        api_keys=api_keys,
    )

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            ws_port, rest_port = await nursery.start(
                server.serve, args.host, args.port, args.rest_port
            )
            sys.stdout.write(
                f"sim-exchange: ws://{args.host}:{ws_port}  http://{args.host}:{rest_port}"
                f"  ({len(recording.messages)} messages, symbols {', '.join(recording.symbols)})\n"
            )
            sys.stdout.flush()
            await wait_for_stop()
            nursery.cancel_scope.cancel()

    try:
        trio.run(serve)
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen: {exc}\n")
        return EXIT_FAILED
    finally:
        if log_file is not None:
            log_file.close()
    return EXIT_OK


def build_record_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m engine record``."""
    parser = _Parser(
        prog="python -m engine record",
        description="Record live market streams to gzip captures the replay feed reads.",
    )
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR")
    parser.add_argument("--duration", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--rotate-mb", type=float, default=256.0)
    parser.add_argument("--rotate-s", type=float, default=3600.0)
    return parser


def record_main(argv: Sequence[str]) -> int:
    """``python -m engine record``: 0 done, 2 bad usage or config."""
    args = build_record_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if not config.data.symbols:
            raise ConfigError(str(args.config), "data.symbols", "recording needs the symbols")
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    log, log_file = make_logger(
        config.logging.path, config.logging.level, base_dir=Path(config.base_dir)
    )
    writer = CaptureWriter(
        args.out, rotate_bytes=int(args.rotate_mb * (1 << 20)), rotate_s=args.rotate_s
    )
    try:
        lines = trio.run(record, config, writer, log, args.duration)
    finally:
        writer.close()
        if log_file is not None:
            log_file.close()
    sys.stdout.write(f"recorded {lines} messages to {len(writer.files)} file(s) in {args.out}\n")
    return EXIT_OK


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


async def _stop_on_signal_or_time(stop: trio.Event, duration: float) -> None:
    await wait_for_stop(duration)
    stop.set()


def check_live_consent(config: Config, *, confirmed: bool) -> None:
    """Refuse live mode unless the config and the command line both ask for it.

    Raises:
        ConfigError: live mode without ``engine.live = true``, without the
            ``--i-understand-live`` flag, or without the Binance venue.
    """
    if config.engine.mode != "live":
        return
    if not config.engine.live:
        raise ConfigError(
            config.source, "engine.live", "live mode sends real orders: set live = true"
        )
    if not confirmed:
        raise ConfigError(
            config.source,
            "engine.mode",
            "live mode sends real orders: pass --i-understand-live to confirm",
        )
    if config.venue.kind != "binance":
        raise ConfigError(config.source, "venue.kind", 'live mode needs kind = "binance"')


async def _run(
    config: Config, data: list[str] | None, log: FilteringBoundLogger, duration: float | None
) -> RunReport:
    """The run, with the control socket served beside it when configured."""
    send, receive = trio.open_memory_channel[ControlCommand](16)
    state = ControlState()
    control = receive if config.control.socket else None
    async with trio.open_nursery() as nursery:
        if config.control.socket:
            path = config.resolve(config.control.socket)
            await nursery.start(serve_control, path, send, state, log.bind(actor="control"))
        if config.engine.mode in ("paper", "live"):
            stop = trio.Event()
            limit = config.feeds.duration_s if duration is None else duration
            nursery.start_soon(_stop_on_signal_or_time, stop, limit)
            runner = run_live if config.engine.mode == "live" else run_paper
            report = await runner(config, log=log, stop=stop, control=control, control_state=state)
        else:
            report = await run_replay(
                config, data=data, log=log, control=control, control_state=state
            )
        nursery.cancel_scope.cancel()
    return report


def _trio_run(*args: Any) -> Any:
    """``trio.run``, re-raising the error itself when a nursery wrapped just one."""
    try:
        return trio.run(*args)
    except BaseExceptionGroup as group:
        cause = single_cause(group)
        if cause is not group:
            raise cause from group
        raise


# Errors that mean the run could not start (nothing traded): exit 2 with one line.
_CANNOT_START = (
    ConfigError,
    DataError,
    JournalError,
    ControlError,
    ModelError,
    ReconciliationError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"control": control_main, "sim-exchange": sim_exchange_main, "record": record_main}
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if args.mode is not None:
            config = attrs.evolve(config, engine=attrs.evolve(config.engine, mode=args.mode))
        check_live_consent(config, confirmed=args.i_understand_live)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    log, log_file = make_logger(
        config.logging.path, config.logging.level, base_dir=Path(config.base_dir)
    )
    try:
        report = _trio_run(_run, config, args.data, log, args.duration)
    except (
        ConfigError,
        DataError,
        JournalError,
        ControlError,
        ModelError,
        ReconciliationError,
    ) as exc:
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

"""Command-line interface: ``trireme [run] [--config config.toml] [...]``.

``trireme`` (or ``python -m engine``) runs the engine: a replay, paper or live run
(``run``, the default command); ``trireme control ACTION`` sends an operator command
(status, halt, reduce, resume) to a running engine; ``trireme sim-exchange --data
CAPTURE`` serves a capture as a Binance-compatible exchange; ``trireme record``
records live streams; ``trireme hardware`` shows the CPU plan.

The configuration is the file (the bundled default without ``--config``), then
``TRIREME__SECTION__KEY`` environment variables, then ``--set section.key=value``
options: a later layer wins.

Exit codes: 0 done, 1 the run failed (an actor died; see the log), 2 bad usage,
config or data (one line on stderr naming the file, key and what was expected).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import importlib.metadata
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import attrs
import orjson
import trio
from structlog.typing import FilteringBoundLogger

from ._config import Config, Override, env_overrides, load_config, set_overrides
from ._control import ControlError, ControlState, send_control, serve_control
from ._errors import ActorFailedError, ConfigError, DataError, JournalError, single_cause
from ._logging import make_logger
from ._memory import is_glibc, malloc_exec_env, reexec
from ._preflight import check_config_paths, check_cpus
from ._progress import Meter, file_bytes, watch
from ._replay import run_replay
from ._report import RunReport, check_results_paths, summary_text, write_report, write_results
from ._signals import wait_for_stop
from ._streaming import run_live, run_paper
from .feeds import CaptureLimits, CaptureStats, expand_paths, open_tick_store
from .messages import ControlCommand
from .strategy import resolve_strategy

# The other commands' modules (the loopback exchange, the recorder, the archive, the ops
# server, the Binance venue) are imported where used: a replay does not load them.

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
PROG = "trireme"

# One line per command for ``trireme --help``; each has its own ``--help``.
COMMANDS = {
    "run": "replay captures, or paper/live trade (the default command: the options above)",
    "sim-exchange": "serve a capture as a Binance USD-M compatible exchange (loopback)",
    "record": "record live market streams to gzip captures that replay reads",
    "control": "send status, halt, reduce, resume or flatten to a running engine",
    "hardware": "show the CPU topology and the pinning plan (--apply to apply it)",
    "data": "download Binance's public-data archive (verified, resumable); list what is on "
    "disk; import captures into the tick store",
    "sweep": "replay a grid of configs as Dask tasks (walk-forward too): ranked table, best config",
    "warm-up": "compile the kernels a config uses, once after installing (make run/test do)",
}

_EPILOG = "commands:\n{commands}\n\n{more}".format(
    commands="\n".join(f"  {name:<14}{line}" for name, line in COMMANDS.items()),
    more=f"""\
'{PROG} COMMAND --help' shows a command's options.

configuration, each layer overriding the one before:
  1. the --config file (without --config: the bundled config, which replays the
     bundled sample and writes runs/ and logs/ under the current directory)
  2. environment variables TRIREME__SECTION__KEY=value (TRIREME__RISK__CAPITAL=5000,
     TRIREME__RISK__TRIGGERS__MAX_DRAWDOWN=800)
  3. --set section.key=value options
values are TOML (5000, true, ["BTCUSDT"], "text"); anything else is a plain string.""",
)


def version() -> str:
    """The installed distribution's version (``unknown`` when run from a bare checkout)."""
    try:
        return importlib.metadata.version("trireme")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def bundled_config() -> Path:
    """The default config: shipped inside the package, or the checkout's ``config.toml``.

    A wheel carries ``engine/_bundle/`` (the config, the sample capture and the
    models, laid out as in the repository, so the config's relative paths hold); a
    source checkout or an editable install uses the repository's own files.
    """
    here = Path(__file__).resolve().parent
    packaged = here / "_bundle" / "config.toml"
    return packaged if packaged.is_file() else here.parent / "config.toml"


class _Parser(argparse.ArgumentParser):
    """argparse, but every usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def _add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set risk.capital=5000 (repeatable; wins over "
        "the file and TRIREME__* environment variables)",
    )


def load_cli_config(path: Path | None, sets: Sequence[str] = ()) -> Config:
    """The configuration: the file, then ``TRIREME__*`` variables, then ``--set``.

    Without a file, the bundled config is used with its journal and log under the
    current directory (never inside the installed package).

    Raises:
        ConfigError: a bad file, variable or ``--set`` value, naming where it came from.
    """
    overrides: list[Override] = []
    if path is None:
        path = bundled_config()
        origin = "default (no --config)"
        overrides += [
            Override(key="journal.dir", value=str(Path.cwd() / "runs"), origin=origin),
            Override(
                key="logging.path", value=str(Path.cwd() / "logs/trireme.jsonl"), origin=origin
            ),
        ]
    overrides += env_overrides(os.environ)
    overrides += set_overrides(sets)
    return load_config(path, overrides=overrides)


def open_log(
    destination: str, level: str, *, base_dir: Path | None, source: str, key: str
) -> tuple[FilteringBoundLogger, IO[bytes] | None]:
    """:func:`make_logger`, with a log file that cannot be opened as a :class:`ConfigError`."""
    try:
        return make_logger(destination, level, base_dir=base_dir)
    except OSError as exc:
        raise ConfigError(source, key, f"cannot open the log file ({exc.strerror or exc})") from exc


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``trireme [run]`` (also used by the docs)."""
    parser = _Parser(
        prog=PROG,
        usage=f"{PROG} [run] [--config PATH] [--set KEY=VALUE ...] [options]\n"
        f"       {PROG} {{{','.join(c for c in COMMANDS if c != 'run')}}} ...",
        description="Trireme: an actor-model trading engine for Binance USD-M futures. "
        "Replays recorded data, paper-trades live streams on a simulated venue, or trades "
        "live.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {version()}", help="print the version"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help=f"TOML config file (default: the bundled {bundled_config()})",
    )
    _add_set_option(parser)
    parser.add_argument(
        "--data",
        action="append",
        metavar="PATH",
        help="capture file or directory to replay (repeatable; overrides data.paths)",
    )
    parser.add_argument("--report", type=Path, metavar="PATH", help="write the summary as JSON")
    parser.add_argument(
        "--trades", type=Path, metavar="PATH", help="write the trade list (.csv or .parquet)"
    )
    parser.add_argument(
        "--tearsheet", type=Path, metavar="PATH", help="write an offline HTML tear sheet (.html)"
    )
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
        prog=f"{PROG} sim-exchange",
        description="Serve a capture as a Binance USD-M compatible exchange: market data, "
        "signed trading endpoints matched against the replayed book, user-data streams.",
    )
    parser.add_argument("--data", action="append", required=True, metavar="PATH")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9443, help="websocket port")
    parser.add_argument("--rest-port", type=int, default=9080, help="REST port")
    parser.add_argument("--speed", type=float, default=1.0, help="x recorded pace; 0 = flat out")
    parser.add_argument(
        "--original-times",
        action="store_true",
        help="serve the capture's bytes and clock as recorded (default: re-timed so that "
        "event times and the server time agree with the wall clock)",
    )
    parser.add_argument(
        "--start",
        choices=["client", "now"],
        default="client",
        help="start playback with the first REST or websocket client (default) or at once",
    )
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


def _join_negative_values(argv: Sequence[str], options: Sequence[str]) -> list[str]:
    """``--fault -1021*2`` as ``--fault=-1021*2``: argparse takes a value starting with
    ``-`` for an option, and Binance's error codes are negative."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if arg in options and nxt[:1] == "-" and nxt[1:2].isdigit():
            out.append(f"{arg}={nxt}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def sim_exchange_main(argv: Sequence[str]) -> int:
    """``trireme sim-exchange``: serve until interrupted; 2 for bad usage or a busy port."""
    from .venues.sim._exchange_limits import LimitSettings
    from .venues.sim._recorded import load_recording
    from .venues.sim._stream_server import (
        ServerSettings,
        StreamServer,
        TradingSettings,
        split_faults,
    )
    from .venues.sim._trading import AccountSettings

    args = build_sim_exchange_parser().parse_args(_join_negative_values(argv, ["--fault"]))
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
    try:
        recording = load_recording(args.data)
    except DataError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    if not recording.messages:
        sys.stderr.write(f"error: {', '.join(args.data)}: no stream messages found\n")
        return EXIT_USAGE
    try:
        log, log_file = open_log(args.log, "info", base_dir=None, source="--log", key="")
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    settings = ServerSettings(
        speed=args.speed,
        ping_interval_s=args.ping_interval,
        pong_timeout_s=args.pong_timeout,
        max_connection_s=args.max_connection,
        faults=faults,
        original_times=args.original_times,
        start=args.start,
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
            if not api_keys:  # once listening: an error before it is the only line
                sys.stderr.write(
                    f"warning: {args.api_key_env}/{args.api_secret_env} not set: "
                    "signed endpoints will answer -2015\n"
                )
            await wait_for_stop()
            nursery.cancel_scope.cancel()

    try:
        _trio_run(serve)
    except OSError as exc:
        # Nothing served yet: a port in use or an address not on this machine.
        sys.stderr.write(
            f"error: cannot listen on {args.host} (websocket port {args.port}, REST port "
            f"{args.rest_port}): {exc.strerror or exc}\n"
        )
        return EXIT_USAGE
    finally:
        if log_file is not None:
            log_file.close()
    return EXIT_OK


def build_record_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m engine record``."""
    parser = _Parser(
        prog=f"{PROG} record",
        description="Record live market streams to gzip captures the replay feed reads.",
    )
    parser.add_argument("--config", required=True, type=Path, help="TOML config file")
    _add_set_option(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR")
    parser.add_argument("--duration", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--rotate-mb", type=float, default=256.0)
    parser.add_argument("--rotate-s", type=float, default=3600.0)
    return parser


def record_main(argv: Sequence[str]) -> int:
    """``trireme record``: 0 done, 2 bad usage or config."""
    from .feeds._record import record
    from .feeds._recorder import CaptureWriter

    args = build_record_parser().parse_args(argv)
    try:
        config = load_cli_config(args.config, args.set)
        if not config.data.symbols:
            raise ConfigError(
                config.where("data.symbols"), "data.symbols", "recording needs the symbols"
            )
        check_config_paths(config)
        log, log_file = _config_log(config)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
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
    """The parser of ``trireme control``."""
    parser = _Parser(
        prog=f"{PROG} control",
        description="Send an operator command to a running engine.",
    )
    parser.add_argument("action", choices=["status", "halt", "reduce", "resume", "flatten"])
    parser.add_argument("--reason", default="operator", help="why (logged and journaled)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", type=Path, help="the engine's control socket")
    where.add_argument("--config", type=Path, help="read control.socket from this config")
    _add_set_option(parser)
    return parser


def control_main(argv: Sequence[str]) -> int:
    """``trireme control ACTION``: 0 done, 1 refused or unreachable, 2 bad usage."""
    args = build_control_parser().parse_args(argv)
    path = args.socket
    if path is None:
        try:
            config = load_cli_config(args.config, args.set)
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
    """The run, with the control socket, metrics and HTTP API served beside it when configured."""
    send, receive = trio.open_memory_channel[ControlCommand](16)
    state = ControlState()
    control = receive if config.control.socket or config.api.enabled else None
    async with trio.open_nursery() as nursery:
        # [metrics] and [api] (each when enabled); first: a missing token stops the start.
        if config.metrics.enabled or config.api.enabled:
            from .ops import serve_ops

            await nursery.start(serve_ops, config, state, send, log.bind(actor="ops"))
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


def _cannot_start() -> tuple[type[Exception], ...]:
    """Errors that mean the run could not start (nothing traded): exit 2 with one line.

    Imported when an error is raised (an ``except`` clause evaluates it then): a run
    that goes well does not load the model or Binance modules for them.
    """
    from .models import ModelError
    from .venues.binance import ReconciliationError, StartupDeadlineError

    return (
        ConfigError,
        DataError,
        JournalError,
        ControlError,
        ModelError,
        ReconciliationError,
        StartupDeadlineError,
    )


def _config_log(config: Config) -> tuple[FilteringBoundLogger, IO[bytes] | None]:
    return open_log(
        config.logging.path,
        config.logging.level,
        base_dir=Path(config.base_dir),
        source=config.where("logging.path"),
        key="logging.path",
    )


def _check_report_path(path: Path) -> None:
    """Refuse a ``--report`` path that cannot be written, before the run rather than after.

    Raises:
        ConfigError: the path is a directory or its directory cannot be created.
    """
    if path.is_dir():
        raise ConfigError("--report", "", f"{path} is a directory; expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            "--report", "", f"cannot create {path.parent} ({exc.strerror or exc})"
        ) from exc


def build_data_parser() -> argparse.ArgumentParser:
    """The parser of ``trireme data``."""
    from .feeds._archive import DEFAULT_BASE_URL

    parser = _Parser(
        prog=f"{PROG} data",
        description="Binance's public-data archive (data.binance.vision): download and list; "
        "the tick store: import.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    get = sub.add_parser(
        "download",
        help="fetch daily USD-M files, verify their sha256, resume partial downloads",
    )
    get.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    get.add_argument(
        "--kinds", default="aggTrades", help="comma-separated: aggTrades,trades,bookTicker,klines"
    )
    get.add_argument("--interval", default="1m", help="kline interval (with --kinds klines)")
    get.add_argument("--from", dest="start", required=True, type=_day, metavar="YYYY-MM-DD")
    get.add_argument("--to", dest="end", required=True, type=_day, metavar="YYYY-MM-DD")
    get.add_argument("--out", required=True, type=Path, metavar="DIR")
    get.add_argument("--base-url", default=DEFAULT_BASE_URL)
    get.add_argument("--parallel", type=int, default=4)
    show = sub.add_parser("list", help="what is on disk: days per symbol and kind, and gaps")
    show.add_argument("dir", type=Path)
    imp = sub.add_parser(
        "import",
        help="parse captures into the tick store (data.tick_store) ahead of a replay",
        description="Parse captures or CSV files into the tick store, as the first replay "
        "of the same data (data.symbols, or every symbol found) would, and print what is "
        "stored. Clear the store by deleting its directory.",
    )
    imp.add_argument(
        "paths", nargs="*", metavar="PATH", help="capture file or directory (default: data.paths)"
    )
    imp.add_argument("--config", type=Path, default=None, help="TOML config file")
    imp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    return parser


def _import_main(args: argparse.Namespace) -> int:
    """``trireme data import PATH...``: 0 stored, 2 bad config or data."""
    from ._replay import resolve_symbols
    from ._supervisor import needs_book

    try:
        config = load_cli_config(args.config, args.set)
        store = open_tick_store(
            config.data.tick_store,
            base_dir=Path(config.base_dir),
            where=config.where("data.tick_store"),
        )
        # With the order book columns when the configured strategy or model reads them.
        book = needs_book(config, resolve_strategy(config).cls)
        if store is None:
            raise ConfigError(
                config.where("data.tick_store"), "data.tick_store", "the tick store is off"
            )
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    limits = CaptureLimits(
        max_receive_skew_ms=config.data.max_receive_skew_ms,
        max_time_jump_ms=config.data.max_time_jump_ms,
    )
    try:
        paths = expand_paths(args.paths or [config.resolve(p) for p in config.data.paths])
        symbols = resolve_symbols(config, paths)
        started = time.perf_counter()
        stats = CaptureStats()
        meter = Meter(
            "import",
            file_bytes(paths),
            "bytes",
            style=config.logging.progress_style,
            every_s=config.logging.progress_every_s,
        )
        with watch(meter, lambda: stats.read.n):
            tape = store.load(paths, symbols, limits=limits, stats=stats, book=book)
        seconds = time.perf_counter() - started
    except DataError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    if store.last_outcome == "not_stored":
        sys.stderr.write(f"error: data.tick_store: {store.last_problem}\n")
        return EXIT_USAGE
    entry = store.entry_for(paths, symbols, limits=limits, book=book)
    size = sum(f.stat().st_size for f in entry.iterdir()) if entry.is_dir() else 0
    outcome = {
        "hit": "already stored",
        "imported": "imported",
        "rebuilt": f"rebuilt ({store.last_problem})",
    }
    span = (
        (tape.last_ts - tape.first_ts) / 1e9
        if tape.first_ts is not None and tape.last_ts is not None
        else 0.0
    )
    first = _utc(tape.first_ts)
    last = _utc(tape.last_ts)
    sys.stdout.write(
        f"{outcome[store.last_outcome]}: {len(tape):,} events, symbols {', '.join(tape.symbols)}, "
        f"{size / 1e6:.1f} MB, {first} .. {last} ({span:,.0f} s of market), "
        f"{seconds:.2f} s\n  into {entry}\n"
    )
    return EXIT_OK


def _utc(ts: int | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def data_main(argv: Sequence[str]) -> int:
    """``trireme data download|list|import``: 0 done, 2 bad usage or a download that failed."""
    from .feeds._archive import archive_files, list_archive
    from .feeds._archive import download as download_archive

    args = build_data_parser().parse_args(argv)
    if args.action == "import":
        return _import_main(args)
    if args.action == "list":
        if not args.dir.is_dir():
            sys.stderr.write(f"error: {args.dir}: not a directory\n")
            return EXIT_USAGE
        for span in list_archive(args.dir):
            gaps = ", ".join(str(d) for d in span.gaps) or "none"
            sys.stdout.write(
                f"{span.symbol:<12} {span.kind:<11} {span.first} .. {span.last}  "
                f"{span.files} day(s)  gaps: {gaps}"
                + (f"  unfinished: {span.partial}" if span.partial else "")
                + "\n"
            )
        return EXIT_OK
    symbols = [s for s in args.symbols.split(",") if s]
    kinds = [k for k in args.kinds.split(",") if k]

    try:
        files = archive_files(symbols, kinds, args.start, args.end, interval=args.interval)
        with Meter("download", len(files), "files") as meter:
            stats = trio.run(
                functools.partial(
                    download_archive,
                    files,
                    args.out,
                    base_url=args.base_url,
                    parallel=args.parallel,
                    progress=lambda done, _total: meter.update(done),
                )
            )
    except DataError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    sys.stdout.write(
        f"downloaded {stats.downloaded} (resumed {stats.resumed}), already present "
        f"{stats.already_present}, not in the archive {len(stats.missing)}; "
        f"{stats.bytes / 1e6:.1f} MB into {args.out}\n"
    )
    for path in stats.missing:
        sys.stdout.write(f"  missing: {path}\n")
    return EXIT_OK


def _hardware_main(argv: Sequence[str]) -> int:
    from hardware._cli import main as hardware_main

    return hardware_main(list(argv))


def _sweep_main(argv: Sequence[str]) -> int:
    from .sweep import main as sweep_main  # Dask: imported only for a sweep

    return sweep_main(argv)


def _warm_up_main(argv: Sequence[str]) -> int:
    from ._warmup import warm_up_main

    return warm_up_main(argv)


def _exec_with_malloc_tunables(config: Config) -> None:
    """A paper or live run with ``hardware.malloc_at_exec``: execute this command line
    again at once (same PID, streams and arguments) with the ``hardware.malloc_*``
    settings in ``GLIBC_TUNABLES``, which glibc reads at exec, so that start-up's
    allocations are laid out that way too (engine._memory). Returns when there is
    nothing to do (replay, off, not glibc, already done) or the exec failed: the run
    then applies them with ``mallopt`` and its report says which way.
    """
    if config.engine.mode not in ("paper", "live") or not config.hardware.malloc_at_exec:
        return
    args = sys.argv[1:]
    if sys.orig_argv[len(sys.orig_argv) - len(args) :] != args:
        return  # main() under another program's command line: not ours to run again
    env = malloc_exec_env(
        os.environ,
        mmap_threshold_kb=config.hardware.malloc_mmap_threshold_kb,
        arena_max=config.hardware.malloc_arena_max,
        glibc=is_glibc(),
    )
    if env is not None:
        with contextlib.suppress(OSError):
            reexec(env)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    own_command_line = argv is None  # the process's own: it may execute itself again
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "warm-up": _warm_up_main,
        "control": control_main,
        "sim-exchange": sim_exchange_main,
        "record": record_main,
        "hardware": _hardware_main,
        "data": data_main,
        "sweep": _sweep_main,
    }
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    if argv[:1] == ["run"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    try:
        config = load_cli_config(args.config, args.set)
        if args.mode is not None:
            config = attrs.evolve(config, engine=attrs.evolve(config.engine, mode=args.mode))
        check_live_consent(config, confirmed=args.i_understand_live)
        if own_command_line:
            _exec_with_malloc_tunables(config)  # returns when there is nothing to do
        check_config_paths(config)
        check_cpus(config)
        resolve_strategy(config)  # a bad strategy file or parameter: exit 2 before anything
        if args.report is not None:
            _check_report_path(args.report)
        check_results_paths(args.trades, args.tearsheet)
        log, log_file = _config_log(config)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    try:
        report = _trio_run(_run, config, args.data, log, args.duration)
    except _cannot_start() as exc:
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
        try:
            write_report(report, args.report)
        except OSError as exc:
            sys.stderr.write(f"error: --report: cannot write {args.report} ({exc.strerror})\n")
            return EXIT_FAILED
    try:
        write_results(report, config, trades_path=args.trades, tearsheet_path=args.tearsheet)
    except (OSError, JournalError) as exc:
        sys.stderr.write(f"error: --trades/--tearsheet: {exc}\n")
        return EXIT_FAILED
    return EXIT_OK

"""Operator control: a local Unix socket that takes halt, reduce, resume and status.

Protocol: one line per connection, ``<action> [reason ...]``, answered with one
JSON line. ``halt``, ``reduce`` and ``resume`` are queued for the risk actor, which
applies them at its next step; ``status`` returns :meth:`ControlState.snapshot`,
the same document the HTTP API's ``GET /api/v1/status`` serves (:mod:`engine.ops`).
Only processes that can open the socket file (mode 0600, owner only) can send
commands.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import socket as stdlib_socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from structlog.typing import FilteringBoundLogger

from ._errors import EngineError
from .messages import ControlCommand

_MAX_LINE = 4096
ACTIONS = ("halt", "reduce", "resume", "flatten")
"""What an operator may ask for (``status`` aside); ``flatten`` is ``reduce`` plus an exit
of every open position (until ``resume``)."""
# The latest per-symbol trading-state moves that ``status`` shows, per symbol.
_RECENT_CHANGES = 5

FLATTEN_NOTE = (
    "no new entries; every open position is closed with a market order at the next step "
    "(reduce-only; retried like any exit) until resume"
)


class ControlError(EngineError):
    """The control socket cannot be served or reached."""


@attrs.define
class ControlState:
    """What ``status`` and the metrics read: the supervisor attaches the running actors.

    Everything is read in the Trio thread, when asked (a status request, a scrape),
    so the actors pay nothing per event for being watched.

    Attributes:
        risk: the risk actor (None until the pipeline is built: ``starting``).
        mode: ``replay``, ``paper`` or ``live``.
        actors: the symbol actors.
        venue: the venue (its ledger holds the positions).
        execution: the execution actor.
        feed: the replay or live feed.
        model: the model actor (None: the filter is off).
        filters: each symbol's entry filter.
        hardware: the hardware actor (event-loop lag).
        channels: the pipeline's send channels by name (one, or one per symbol).
        limiter: the REST rate limiter (paper and live).
        created: monotonic time the state was made (the uptime's origin).
        started_at: the wall-clock time of the same moment (ISO 8601, UTC).
    """

    risk: Any = None
    mode: str = ""
    actors: list[Any] = attrs.Factory(list)
    venue: Any = None
    execution: Any = None
    feed: Any = None
    model: Any = None
    filters: dict[str, Any] = attrs.Factory(dict)
    hardware: Any = None
    channels: dict[str, Any] = attrs.Factory(dict)
    limiter: Any = None
    created: float = attrs.Factory(time.monotonic)
    started_at: str = attrs.Factory(lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def attach(self, **parts: Any) -> None:
        """Point the state at the running pipeline's parts (keyword per attribute).

        Raises:
            AttributeError: an unknown part.
        """
        for name, value in parts.items():
            if name not in attrs.fields_dict(type(self)):
                raise AttributeError(f"ControlState has no part {name!r}")
            setattr(self, name, value)

    def uptime_s(self) -> float:
        """Seconds since the state was made (monotonic)."""
        return time.monotonic() - self.created

    def channel_levels(self) -> list[tuple[str, str, Any]]:
        """``(channel, symbol, statistics)`` of every attached channel (symbol "" for one)."""
        out = []
        for name, value in self.channels.items():
            items = value.items() if isinstance(value, Mapping) else (("", value),)
            for symbol, channel in items:
                out.append((name, symbol, channel.statistics()))
        return out

    def snapshot(self) -> dict[str, Any]:
        """The engine's status: the one document both ``status`` and the HTTP API serve.

        Keys: ``mode``, ``started_at``, ``uptime_s``, ``trading_state`` and ``active``
        (the account's machine and its triggers), ``symbols`` (per symbol: trading state,
        triggers, latest moves, position, PnL, open orders, feed health), ``positions``
        (the open ones), ``open_orders``, ``pnl`` (totals), ``orders``, ``feed``,
        ``approved``, ``denied``, ``equity``, ``exposure_limits``, ``metrics`` (risk).
        Before the pipeline runs: ``trading_state`` is ``starting``.
        """
        base: dict[str, Any] = {
            "mode": self.mode,
            "started_at": self.started_at,
            "uptime_s": round(self.uptime_s(), 3),
        }
        risk = self.risk
        if risk is None:
            return {**base, "trading_state": "starting", "active": {}}
        ledger = risk.ledger
        symbols = list(getattr(risk, "symbol_trading", {}))
        open_orders = [_order_view(o) for o in risk_open_orders(risk)]
        feed = _feed_view(self.feed)
        per_symbol_feed = feed.get("symbols", {})
        recent = _recent_changes(getattr(risk, "symbol_changes", []))
        per_symbol: dict[str, Any] = {}
        positions = []
        totals = {"realized": 0.0, "fees": 0.0, "unrealized": 0.0}
        exposure: dict[str, float] = {}
        for symbol in symbols:
            acct = ledger.account(symbol)
            mark = acct.last_mid if not math.isnan(acct.last_mid) else None
            unrealized = acct.unrealized()
            position = {
                "qty": acct.qty,
                "avg_price": acct.avg_price,
                "mark": mark,
                "notional": abs(acct.qty) * mark if mark is not None else None,
            }
            pnl = {
                "realized": acct.realized,
                "fees": acct.fees,
                "unrealized": unrealized,
                "net": acct.realized - acct.fees + unrealized,
                "fills": acct.fills,
                "round_trips": acct.round_trips,
            }
            totals["realized"] += acct.realized
            totals["fees"] += acct.fees
            totals["unrealized"] += unrealized
            exposure[symbol] = position["notional"] or 0.0
            if acct.qty != 0.0:
                positions.append({"symbol": symbol, **position, "unrealized": unrealized})
            machine = risk.symbol_trading[symbol]
            per_symbol[symbol] = {
                "trading_state": machine.state.value,
                "triggers": _triggers(risk.symbol_active.get(symbol, {})),
                "changes": recent.get(symbol, []),
                "position": position,
                "pnl": pnl,
                "open_orders": sum(1 for o in open_orders if o["symbol"] == symbol),
                "feed": per_symbol_feed.get(symbol, {}),
            }
        # Exposure at the marks now (risk's own copy is filled in for the report).
        metrics = {**risk.metrics.summary(), "exposure": dict(sorted(exposure.items()))}
        return {
            **base,
            "trading_state": risk.trading.state.value,
            "active": _triggers(risk.active),
            "symbols": per_symbol,
            "positions": positions,
            "open_orders": open_orders,
            "pnl": {**totals, "net": totals["realized"] - totals["fees"] + totals["unrealized"]},
            "orders": _orders_view(self.execution, risk),
            "feed": feed,
            "approved": risk.approved,
            "denied": dict(sorted(risk.denied.items())),
            "equity": risk.equity,
            "exposure_limits": dict(risk.exposure_limits),
            "metrics": metrics,
        }


def risk_open_orders(risk: Any) -> list[Any]:
    """The orders risk approved that are not filled, canceled, rejected or expired yet."""
    return list(risk.open_orders)


def _triggers(table: Mapping[str, tuple[str, str]]) -> dict[str, dict[str, str]]:
    return {name: {"action": a, "reason": r} for name, (a, r) in sorted(table.items())}


def _recent_changes(changes: list[tuple[str, str, str, str]]) -> dict[str, list[dict[str, str]]]:
    """The latest moves of each symbol's machine, oldest first (bounded per symbol)."""
    out: dict[str, list[dict[str, str]]] = {}
    for symbol, a, b, why in reversed(changes):
        moves = out.setdefault(symbol, [])
        if len(moves) < _RECENT_CHANGES:
            moves.insert(0, {"from": a, "to": b, "reason": why})
        elif all(len(m) >= _RECENT_CHANGES for m in out.values()):
            break
    return out


def _order_view(order: Any) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side.name,
        "qty": order.qty,
        "ref_price": order.ref_price,
        "purpose": order.purpose.name.lower(),
        "reduce_only": order.reduce_only,
        "ts_event": order.ts_event,
    }


def _orders_view(execution: Any, risk: Any) -> dict[str, int]:
    out = {"approved": risk.approved, "denied": sum(risk.denied.values())}
    if execution is not None:
        out |= {
            "sent": execution.orders_sent,
            "fills": execution.fills,
            "expired": execution.expired,
        }
    return out


def _feed_view(feed: Any) -> dict[str, Any]:
    """The live feed's health (counters, latency, books), or a replay feed's progress."""
    if feed is None:
        return {}
    if hasattr(feed, "summary"):  # the live feed
        return feed.summary()
    return {k: getattr(feed, k, None) for k in ("steps", "first_ts", "last_ts")}


def queue_command(
    commands: trio.MemorySendChannel[ControlCommand],
    action: str,
    reason: str,
    log: FilteringBoundLogger,
) -> dict[str, Any]:
    """Queue an operator command for the risk actor; the answer the socket and HTTP send.

    ``flatten`` reduces and closes every position; see :data:`FLATTEN_NOTE`.
    """
    if action not in ACTIONS:
        return {
            "ok": False,
            "error": f"unknown action {action!r}; expected status, {', '.join(ACTIONS)}",
        }
    queued, why = action, reason
    try:
        commands.send_nowait(ControlCommand(action=queued, reason=why))
    except trio.WouldBlock:
        return {"ok": False, "error": "command queue full; try again"}
    log.warning("operator command queued", action=action, reason=reason)
    answer: dict[str, Any] = {"ok": True, "queued": queued, "reason": why}
    if action == "flatten":
        answer["note"] = FLATTEN_NOTE
    return answer


async def serve_control(
    path: Path,
    commands: trio.MemorySendChannel[ControlCommand],
    state: ControlState,
    log: FilteringBoundLogger,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control socket until cancelled; the socket file is removed on exit.

    Raises:
        ControlError: another engine is already listening on ``path``, or the path
            cannot be a socket (see :func:`check_socket_path`).
    """
    _prepare(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ControlError(f"{path}: cannot listen ({exc.strerror or exc})") from exc
    finally:
        os.umask(old_umask)
    sock.listen(8)
    listener = trio.SocketListener(sock)
    log.info("control socket listening", path=str(path))

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(5):
                reply = await _answer(stream, commands, state, log)
                await stream.send_all(orjson.dumps(reply) + b"\n")

    try:
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(handle, stream)
    finally:
        _remove(path)


# sun_path of struct sockaddr_un is 108 bytes on Linux, the last one for the NUL.
MAX_SOCKET_PATH = 107


def check_socket_path(path: Path) -> None:
    """Refuse a control socket path that cannot be served, without touching anything.

    Raises:
        ControlError: the path is too long for a Unix socket, lies under a file, or
            names something that is not a socket (which serving would delete).
    """
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise ControlError(
            f"{path}: too long for a Unix socket ({size} bytes, at most {MAX_SOCKET_PATH}); "
            "choose a shorter path"
        )
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ControlError(f"{path}: {parent} is not a directory")
            break
    if (path.exists() or path.is_symlink()) and not path.is_socket():
        raise ControlError(f"{path}: exists and is not a socket; refusing to replace it")


def _prepare(path: Path) -> None:
    # Local, instant file-system calls at start-up: not worth a thread.
    check_socket_path(path)
    if path.exists():
        if _is_live(path):
            raise ControlError(f"{path}: another engine is listening on this control socket")
        path.unlink()  # a stale socket of an engine that died
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ControlError(f"{path}: cannot create {path.parent} ({exc.strerror})") from exc


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


async def _answer(
    stream: trio.SocketStream,
    commands: trio.MemorySendChannel[ControlCommand],
    state: ControlState,
    log: FilteringBoundLogger,
) -> dict[str, Any]:
    data = b""
    while b"\n" not in data and len(data) < _MAX_LINE:
        chunk = await stream.receive_some(_MAX_LINE)
        if not chunk:
            break
        data += chunk
    words = data.decode("utf-8", "replace").strip().split(maxsplit=1)
    if not words:
        return {"ok": False, "error": "empty command"}
    action = words[0].lower()
    reason = words[1] if len(words) > 1 else "operator"
    if action == "status":
        return {"ok": True, **state.snapshot()}
    return queue_command(commands, action, reason, log)


def _is_live(path: Path) -> bool:
    probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def send_control(path: Path, action: str, reason: str = "", timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to a running engine and return its JSON answer (blocking).

    Raises:
        ControlError: nothing is listening at ``path`` or the answer is not JSON.
    """
    line = f"{action} {reason}".strip().encode() + b"\n"
    client = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        client.connect(str(path))
        client.sendall(line)
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise ControlError(f"{path}: no engine is listening ({exc.strerror or exc})") from exc
    finally:
        client.close()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ControlError(f"{path}: unreadable answer {data[:200]!r}") from exc

"""Operator control: a local Unix socket that takes halt, reduce, resume and status.

Protocol: one line per connection, ``<action> [reason ...]``, answered with one
JSON line. ``halt``, ``reduce`` and ``resume`` are queued for the risk actor, which
applies them at its next step; ``status`` returns the trading state and the
active triggers. Only processes that can open the socket file (mode 0600, owner
only) can send commands.
"""

from __future__ import annotations

import contextlib
import os
import socket as stdlib_socket
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from structlog.typing import FilteringBoundLogger

from ._errors import EngineError
from .messages import ControlCommand

_MAX_LINE = 4096
_ACTIONS = ("halt", "reduce", "resume")


class ControlError(EngineError):
    """The control socket cannot be served or reached."""


@attrs.define
class ControlState:
    """What ``status`` reports; the supervisor points ``risk`` at the running risk actor."""

    risk: Any = None

    def snapshot(self) -> dict[str, Any]:
        """The trading state and active triggers (or ``starting`` before risk runs)."""
        risk = self.risk
        if risk is None:
            return {"trading_state": "starting", "active": {}}
        return {
            "trading_state": risk.trading.state.value,
            "active": {name: {"action": a, "reason": r} for name, (a, r) in risk.active.items()},
            "approved": risk.approved,
            "denied": dict(risk.denied),
            "equity": risk.equity,
            "exposure_limits": dict(risk.exposure_limits),
            "metrics": risk.metrics.summary(),
        }


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
    if action not in _ACTIONS:
        return {
            "ok": False,
            "error": f"unknown action {action!r}; expected status, halt, reduce, resume",
        }
    try:
        commands.send_nowait(ControlCommand(action=action, reason=reason))
    except trio.WouldBlock:
        return {"ok": False, "error": "command queue full; try again"}
    log.warning("operator command queued", action=action, reason=reason)
    return {"ok": True, "queued": action, "reason": reason}


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

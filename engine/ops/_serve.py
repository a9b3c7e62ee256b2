"""``serve_ops``: the metrics endpoint and the HTTP API beside a run."""

from __future__ import annotations

import os

import attrs
import trio
from structlog.typing import FilteringBoundLogger

from .._config import Config
from .._control import ControlState
from .._errors import ConfigError
from ..messages import ControlCommand
from ._api import api_routes, metrics_routes
from ._http import Handler, bound_port, listen, serve_http
from ._metrics import metrics_registry

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@attrs.frozen(kw_only=True)
class OpsAddresses:
    """Where :func:`serve_ops` listens: ``(host, port)`` of each, None when off."""

    metrics: tuple[str, int] | None = None
    api: tuple[str, int] | None = None


def api_token(config: Config) -> str:
    """The API's bearer token, from the variable ``api.token_env`` names.

    Raises:
        ConfigError: the variable is not set or empty (naming ``api.token_env`` and
            the variable, never a value).
    """
    name = config.api.token_env
    token = os.environ.get(name, "").strip()
    if not token:
        raise ConfigError(
            config.where("api.token_env"),
            "api.token_env",
            f"environment variable {name} is not set or empty (the API's bearer token)",
        )
    return token


async def serve_ops(
    config: Config,
    state: ControlState,
    commands: trio.MemorySendChannel[ControlCommand],
    log: FilteringBoundLogger,
    *,
    task_status: trio.TaskStatus[OpsAddresses] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``[metrics]`` and ``[api]`` (those enabled) until cancelled.

    ``task_status.started`` gets the bound addresses (the ports chosen for port 0).
    With neither enabled it reports ``OpsAddresses()`` and returns.

    Raises:
        ConfigError: ``api`` is enabled and its token variable is unset, or an
            address cannot be bound (naming ``metrics.port`` or ``api.port``).
    """
    m, a = config.metrics, config.api
    # (section, host, port, routes); the API joins the metrics listener on the same address.
    plan: list[tuple[str, str, int, dict[str, dict[str, Handler]]]] = []
    if m.enabled:
        plan.append(("metrics", m.host, m.port, metrics_routes(metrics_registry(state))))
    if a.enabled:
        routes = api_routes(state, commands, api_token(config), log)
        if plan and a.port != 0 and (a.host, a.port) == (m.host, m.port):
            plan[0][3].update(routes)
        else:
            plan.append(("api", a.host, a.port, routes))
    if not plan:
        task_status.started(OpsAddresses())
        return
    # Bind everything before serving anything: a refused address is one ConfigError.
    bound: dict[str, tuple[str, int]] = {}
    served: list[tuple[list[trio.SocketListener], dict[str, dict[str, Handler]]]] = []
    complete = False
    try:
        for section, host, port, routes in plan:
            try:
                listeners = await listen(host, port)
            except OSError as exc:
                raise ConfigError(
                    config.where(f"{section}.port"),
                    f"{section}.port",
                    f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                ) from exc
            served.append((listeners, routes))
            bound[section] = (host, bound_port(listeners))
        complete = True
    finally:
        if not complete:  # release what was bound before the failure
            for listeners, _routes in served:
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
    if a.enabled and "api" not in bound:
        bound["api"] = bound["metrics"]  # one listener serves both
    async with trio.open_nursery() as nursery:
        for listeners, routes in served:
            nursery.start_soon(serve_http, listeners, routes, log)
        for section, (host, port) in bound.items():
            log.info(f"{section} endpoint listening", url=f"http://{host}:{port}")
            if host not in _LOOPBACK:
                # Plain HTTP: the bearer token crosses the network readable.
                log.warning(
                    "endpoint listens beyond loopback; put TLS and access control in front",
                    url=f"http://{host}:{port}",
                )
        task_status.started(OpsAddresses(metrics=bound.get("metrics"), api=bound.get("api")))

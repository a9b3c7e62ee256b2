"""The HTTP status and control API (``[api]``), and the ``/metrics`` route.

Routes::

    GET  /api/v1/status    the engine's status (no credentials): ControlState.snapshot
    POST /api/v1/halt      queue halt    } need ``Authorization: Bearer <token>``;
    POST /api/v1/reduce    queue reduce  } the body may be {"reason": "..."}
    POST /api/v1/resume    queue resume  }
    POST /api/v1/flatten   reduce and close every open position (see FLATTEN_NOTE)
    GET  /metrics          Prometheus text format ([metrics])

Commands go through the same queue and answer as the Unix control socket's
(:func:`engine._control.queue_command`): ``202`` when queued, ``503`` when the queue is
full. The token is compared in constant time and never logged; a missing or wrong
one is ``401`` with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import functools
import hmac
from typing import Any

import orjson
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from structlog.typing import FilteringBoundLogger

from .._control import ControlState, queue_command
from ..messages import ControlCommand
from ._http import Handler, Request, Response, error
from ._metrics import exposition

API_PREFIX = "/api/v1"
_COMMANDS = ("halt", "reduce", "resume", "flatten")
_MAX_REASON = 200


def _json(status: int, document: Any) -> Response:
    return Response(status=status, body=orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS))


def api_routes(
    state: ControlState,
    commands: trio.MemorySendChannel[ControlCommand],
    token: str,
    log: FilteringBoundLogger,
) -> dict[str, dict[str, Handler]]:
    """The API's routes: status without credentials, commands with the bearer token."""

    async def status(_request: Request) -> Response:
        return _json(200, state.snapshot())

    async def command(action: str, request: Request) -> Response:
        if not _authorized(request, token):
            log.warning("api command refused: bad or missing token", action=action)
            return error(401, "missing or wrong bearer token", (("www-authenticate", "Bearer"),))
        reason = _reason(request.body)
        if reason is None:
            return error(400, 'body must be empty or JSON {"reason": "<text>"}')
        answer = queue_command(commands, action, reason or "operator (http)", log)
        return _json(202 if answer["ok"] else 503, answer)

    routes: dict[str, dict[str, Handler]] = {f"{API_PREFIX}/status": {"GET": status}}
    for action in _COMMANDS:
        routes[f"{API_PREFIX}/{action}"] = {"POST": functools.partial(command, action)}
    return routes


def metrics_routes(registry: CollectorRegistry) -> dict[str, dict[str, Handler]]:
    """``GET /metrics`` in Prometheus's text format."""

    async def metrics(_request: Request) -> Response:
        return Response(status=200, body=exposition(registry), content_type=CONTENT_TYPE_LATEST)

    return {"/metrics": {"GET": metrics}}


def _authorized(request: Request, token: str) -> bool:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # compare_digest on bytes: constant time in the length of the presented value.
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def _reason(body: bytes) -> str | None:
    """The reason in the body ("" when there is none), or None when the body is bad."""
    if not body.strip():
        return ""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("reason", ""), str):
        return None
    return document.get("reason", "")[:_MAX_REASON]

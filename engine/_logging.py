"""Structured logging: one JSON object per line, Elastic Common Schema field names.

Lines carry ``@timestamp`` (UTC, ISO 8601, ms), ``log.level``, ``message``,
``ecs.version``, ``service.name``, ``event.dataset`` and the event's own fields,
so Filebeat can ship them to Elasticsearch unchanged. Values that look like
secrets (keys named ``*key*``, ``*secret*``, ``*signature*``, ``*token*``,
``*password*``) are redacted before rendering. No global structlog configuration
is touched: the logger is built here and passed to whoever logs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import IO, Any

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

ECS_VERSION = "1.6.0"
SERVICE = "trireme"
_SECRET_WORDS = ("key", "secret", "signature", "token", "password", "passphrase")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def redact_secrets(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Replace the value of any field whose name suggests a secret."""
    for key in event_dict:
        lowered = key.lower()
        if any(word in lowered for word in _SECRET_WORDS) and key != "client_order_id":
            event_dict[key] = "[REDACTED]"
    return event_dict


def to_ecs(_logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Rename structlog's keys to ECS and add the fixed ECS fields."""
    out: dict[str, Any] = {
        "@timestamp": event_dict.pop("timestamp"),
        "log.level": event_dict.pop("level", method),
        "message": event_dict.pop("event", ""),
        "ecs.version": ECS_VERSION,
        "service.name": SERVICE,
        "event.dataset": event_dict.pop("dataset", f"{SERVICE}.engine"),
    }
    exc = event_dict.pop("exception", None)
    if exc:
        out["error.stack_trace"] = exc
    out.update(event_dict)
    return out


def _dumps(obj: Any, **_kw: Any) -> bytes:
    return orjson.dumps(obj, default=str)


def make_logger(
    destination: str | Path, level: str = "info", *, base_dir: Path | None = None
) -> tuple[FilteringBoundLogger, IO[bytes] | None]:
    """Build the engine's JSON logger.

    Args:
        destination: a file path (appended to; its directory is created) or ``-``
            for stderr.
        level: ``debug``, ``info``, ``warning`` or ``error``.
        base_dir: directory that a relative path is resolved against.

    Returns:
        The logger and the file it writes to (to close at exit), or None for stderr.
    """
    if str(destination) == "-":
        stream: IO[bytes] = sys.stderr.buffer
        owned = None
    else:
        path = Path(destination)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = owned = path.open("ab")
    logger = structlog.wrap_logger(
        structlog.BytesLogger(stream),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%dT%H:%M:%S.%fZ", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            to_ecs,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=True,
    )
    return logger, owned

"""Structured logging: one JSON object per line, Elastic Common Schema (ECS).

Every line starts with the ecs-logging header ``@timestamp`` (UTC, ISO 8601),
``log.level``, ``message`` and ``ecs.version``; every other field is a nested
JSON object, so that Filebeat (``ndjson`` parser, ``expand_keys``) and
Elasticsearch see one shape:

* ECS fields of the right type: ``service.name``, ``event.dataset``,
  ``process.pid`` on every line; ``log.logger`` (the actor), ``event.action``,
  ``event.reason``, ``event.duration`` (nanoseconds), ``url.full`` and
  ``error.{type,message,stack_trace}`` where a call passes the key that maps to
  them (:data:`ECS_KEYS`, ``error``, ``exc_info``); a dotted key under an ECS
  field set (``**{"http.request.method": "GET"}``) is that ECS field;
* everything else under the one custom namespace ``trireme`` (``trireme.symbol``,
  ``trireme.qty``...), dotted keys expanded into nested objects at every depth.

Values become plain JSON: ``Decimal`` and numpy numbers become numbers, enums
their value, tuples and sets lists, anything else its ``str``. Fields whose name
suggests a secret (``*key*``, ``*secret*``, ``*signature*``, ``*token*``,
``*password*``, at any depth) are redacted before anything is rendered. No
global structlog configuration is touched: the logger is built here and passed
to whoever logs. ``tools/ops/`` has the Filebeat input and the Elasticsearch
index template for these lines.
"""

from __future__ import annotations

import enum
import functools
import logging
import numbers
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from ._errors import single_cause

# The ECS release the lines conform to: the newest one released (tag v9.4.0 of
# elastic/ecs) at the time ../shared/ecs/ecs_flat.yml (9.5.0-dev) was taken.
ECS_VERSION = "9.4.0"
SERVICE = "trireme"
NAMESPACE = "trireme"
REDACTED = "[REDACTED]"
_SECRET_WORDS = ("key", "secret", "signature", "token", "password", "passphrase")
_NOT_SECRET = frozenset({"client_order_id"})
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def _ms_to_ns(value: Any) -> int:
    return round(float(value) * 1_000_000)


# Keys a log call may pass -> the ECS field each becomes, with its conversion.
ECS_KEYS: Mapping[str, tuple[str, Callable[[Any], Any]]] = {
    "actor": ("log.logger", str),
    "action": ("event.action", str),
    "reason": ("event.reason", str),
    "dataset": ("event.dataset", str),
    "url": ("url.full", str),
    # Durations of what the line reports: ECS wants them in nanoseconds.
    "solve_ms": ("event.duration", _ms_to_ns),
    "latency_ms": ("event.duration", _ms_to_ns),
}


# The field sets of ECS (the first part of every dotted ECS name, from ecs_flat.yml): a
# dotted key under one of them is taken as that ECS field ("http.request.method"),
# any other key is custom.
# fmt: off
ECS_FIELD_SETS = frozenset((
    "agent", "client", "cloud", "container", "data_stream", "destination", "device", "dll",
    "dns", "ecs", "email", "entity", "error", "event", "faas", "file", "gen_ai", "group",
    "host", "http", "log", "network", "observer", "orchestrator", "organization", "package",
    "process", "registry", "related", "rule", "server", "service", "source", "span", "threat",
    "tls", "trace", "transaction", "url", "user", "user_agent", "volume", "vulnerability",
))
# fmt: on


# Values that hold no field names: passed as they are by the redaction and the ECS
# mapping, without their isinstance checks (a log line's fields are mostly these).
_SCALARS = frozenset({str, int, float, bool, type(None)})


@functools.lru_cache(maxsize=4096)
def _is_secret(key: str) -> bool:
    # Memoised: a run logs the same few hundred field names over and over.
    lowered = key.lower()
    return key not in _NOT_SECRET and any(word in lowered for word in _SECRET_WORDS)


def _redact(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_secret(str(k)) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_secrets(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Replace the value of any field whose name suggests a secret, at any depth."""
    for key, value in event_dict.items():
        event_dict[key] = REDACTED if _is_secret(key) else _redact(value)
    return event_dict


def plain(value: Any) -> Any:
    """``value`` as plain JSON data: one JSON type per Python type, whatever the caller passed.

    Mappings keep their keys (as strings; dotted keys are expanded by the caller),
    sequences and sets become lists, numbers become ``int`` or ``float``
    (``Decimal`` and numpy included; ``bool`` stays ``bool``), enums their value
    (their name when the value is not a string or a number), anything else ``str``.
    """
    if value is None or type(value) in (bool, str, int, float):
        return value
    if isinstance(value, enum.Enum):
        inner = value.value
        return inner if type(inner) in (str, int, float) else value.name
    if isinstance(value, np.generic):  # np.float64 is a float, but not one orjson writes
        return plain(value.item())
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Decimal | numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((plain(v) for v in value), key=str)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def put(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``dotted`` (``a.b.c``) in ``target`` as nested objects, merging objects.

    A mapping value is expanded the same way, key by key, so ``{"a.b": 1}`` and
    ``{"a": {"b": 1}}`` give the same object (as Filebeat's ``expand_keys`` and
    Elasticsearch read them). Where a leaf and an object meet at one path the
    later value wins; such keys are a bug at the call site, and tests/test_ecs_logs.py
    finds them.
    """
    *parents, leaf = dotted.split(".")
    node = target
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if isinstance(value, Mapping):
        child = node.get(leaf)
        if not isinstance(child, dict):
            child = node[leaf] = {}
        for key, inner in value.items():
            put(child, str(key), inner)
    else:
        node[leaf] = value


def _exception(exc_info: Any) -> BaseException | None:
    """The exception that structlog's ``exc_info`` argument names, if any."""
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple):
        return exc_info[1] if len(exc_info) > 1 else None
    return sys.exc_info()[1] if exc_info else None


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _error_fields(error: Any, exc: BaseException | None) -> dict[str, str]:
    """ECS ``error.*`` from an ``error=`` value and the logged exception.

    An exception gives ``error.type`` and ``error.message``; a string (or
    anything else) passed as ``error=`` is the message. The exception of
    ``exc_info`` adds ``error.stack_trace`` (and the type and message that the
    ``error=`` value did not give: those of the lone error inside exception groups).
    """
    out: dict[str, str] = {}
    if isinstance(error, BaseException):
        out["type"] = _type_name(error)
        out["message"] = str(error)
    elif error is not None:
        out["message"] = str(error)
    if exc is not None:
        # A nursery wraps the error that failed a task in exception groups: name that
        # error, and keep the whole group in the trace.
        cause = single_cause(exc)
        out.setdefault("type", _type_name(cause))
        out.setdefault("message", str(cause))
        out["stack_trace"] = "".join(traceback.format_exception(exc)).rstrip("\n")
    return out


def to_ecs(_logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Turn structlog's event dict into an ECS document (see the module docstring)."""
    out: dict[str, Any] = {
        "@timestamp": event_dict.pop("timestamp"),
        "log.level": event_dict.pop("level", method),
        "message": str(event_dict.pop("event", "")),
        "ecs.version": ECS_VERSION,
    }
    fields: dict[str, Any] = {
        "service": {"name": SERVICE},
        "event": {"dataset": f"{SERVICE}.engine"},
        "process": {"pid": os.getpid()},
    }
    error = _error_fields(
        event_dict.pop("error", None), _exception(event_dict.pop("exc_info", None))
    )
    if error:
        fields["error"] = error
    custom: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key in ECS_KEYS:
            name, convert = ECS_KEYS[key]
            if value is not None:
                put(fields, name, convert(value))
        elif key.partition(".")[0] in ECS_FIELD_SETS and "." in key:
            put(fields, key, plain(value))
        else:
            inner = key.removeprefix(f"{NAMESPACE}.")
            if type(value) in _SCALARS and "." not in inner:
                custom[inner] = value  # what put() and plain() make of it
            else:
                put(custom, inner, plain(value))
    if custom:
        fields[NAMESPACE] = custom
    out.update(fields)
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
            redact_secrets,
            to_ecs,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=True,
    )
    return logger, owned

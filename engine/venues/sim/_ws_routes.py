"""Websocket paths and stream names of the loopback exchange, as Binance USD-M takes them.

Paths (``<route>`` is empty, ``/public``, ``/market`` or ``/private``, Binance's
routed endpoints since 2026; the loopback exchange serves every stream on each)::

    <route>/ws                          raw events; streams come by SUBSCRIBE
    <route>/ws/<stream>[/<stream>...]   raw events of these streams
    <route>/stream?streams=<a>/<b>      combined-stream envelopes
    <route>/ws?listenKey=<key>          user data (ccxt.pro, python-binance)
    <route>/stream?listenKey=<key>      user data, combined envelopes

A path element that is neither a market stream (``<symbol>@<kind>``, ``!<kind>``)
nor a listen key (60 or more letters and digits) is ignored, as Binance ignores
it: ccxt.pro numbers its connections ``/public/ws/0``, ``/public/ws/1``...

Stream names a capture rarely holds are served from the one it does hold when
the events are the same kind: every ``<symbol>@depth[@<speed>]`` from the
recorded diff stream (a faster diff stream is a valid, finer version of a
slower one: each ``pu`` still equals the previous ``u``), and
``<symbol>@markPrice[@1s]`` likewise.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Collection

import attrs

_ROUTES = ("/public", "/market", "/private")
_LISTEN_KEY = re.compile(r"^[A-Za-z0-9]{60,}$")
_DEPTH = re.compile(r"^(?P<symbol>[^@]+)@depth(@\d+ms)?$")
_MARK = re.compile(r"^(?P<symbol>[^@]+)@markPrice(@1s)?$")


@attrs.frozen(kw_only=True)
class WsRoute:
    """What a websocket request asks for.

    Attributes:
        combined: send combined-stream envelopes (``/stream``).
        streams: market stream names as the client wrote them.
        listen_keys: user-data listen keys.
    """

    combined: bool
    streams: tuple[str, ...] = ()
    listen_keys: tuple[str, ...] = ()


def parse_ws_target(target: str) -> WsRoute | None:
    """The route of a websocket request target, or ``None`` for an unknown path."""
    url = urllib.parse.urlsplit(target)
    path = url.path.rstrip("/") or "/"
    for route in _ROUTES:
        if path == route or path.startswith(route + "/"):
            path = path[len(route) :] or "/"
            break
    query = urllib.parse.parse_qs(url.query)
    if path == "/ws" or path.startswith("/ws/"):
        combined = False
        names = [s for s in path[len("/ws") :].split("/") if s]
    elif path == "/stream":
        combined = True
        names = [s for s in query.get("streams", [""])[0].split("/") if s]
    else:
        return None
    names += [k for k in query.get("listenKey", []) if k]
    streams = tuple(n for n in names if is_market_stream(n))
    keys = tuple(n for n in names if is_listen_key(n))
    return WsRoute(combined=combined, streams=streams, listen_keys=keys)


def is_market_stream(name: str) -> bool:
    """``<symbol>@<kind>...`` or ``!<kind>...``."""
    return "@" in name or name.startswith("!")


def is_listen_key(name: str) -> bool:
    """Binance listen keys are 64 letters and digits (60 or more accepted)."""
    return bool(_LISTEN_KEY.match(name))


def recorded_name(name: str, recorded: Collection[str]) -> str:
    """The recorded stream that serves ``name`` (``name`` itself when none does).

    Args:
        name: a stream name as a client asked for it.
        recorded: the stream names the capture holds.
    """
    if name in recorded:
        return name
    for pattern, kind in ((_DEPTH, "depth"), (_MARK, "markPrice")):
        match = pattern.match(name)
        if match is None:
            continue
        symbol = match.group("symbol")
        for candidate in sorted(recorded):
            other = pattern.match(candidate)
            if other is not None and other.group("symbol") == symbol and kind in candidate:
                return candidate
    return name

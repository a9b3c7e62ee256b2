"""Faults armed on the loopback exchange's next matching REST requests.

Kinds (``arg`` in brackets):

* ``429`` [Retry-After seconds, default 1]: refused as rate limited; requests
  sent before Retry-After count as strikes towards a 418 ban, as for a real 429.
* ``418`` [ban length ms, default 2000]: the IP is banned from now on.
* ``503-executed``: the request IS executed, but the reply is Binance's 503
  "Unknown error, please check your request or try again later." (-1000).
* ``503-lost``: the same reply, and the request was NOT executed. A client
  cannot tell the two apart; it must query.
* ``503-unavailable``: 503 "Service Unavailable.": not executed, safe to resend.
* ``-1021``: refused, "Timestamp for this request is outside of the recvWindow."
* ``-2019``: refused, "Margin is insufficient."
* ``-4164``: refused, the MIN_NOTIONAL message.
* ``slow`` [delay ms, default 1000]: executed at once, the reply held back.
* ``drop_user_stream``: every user-data websocket is cut just before the request
  runs, so its events reach no stream (REST queries still show them).

By default the order faults (``503-*``, ``-2019``, ``-4164``,
``drop_user_stream``) match ``POST /fapi/v1/order``, ``-1021`` matches any
signed request and the rest match any request. Text form (``--fault``):
``KIND[:ARG][*COUNT][@METHOD/PATH]``, e.g. ``503-executed*2``,
``slow:1500@GET/fapi/v1/depth``, ``418:5000``.
"""

from __future__ import annotations

import attrs

REQUEST_FAULT_KINDS = (
    "429",
    "418",
    "503-executed",
    "503-lost",
    "503-unavailable",
    "-1021",
    "-2019",
    "-4164",
    "slow",
    "drop_user_stream",
)
_ORDER_KINDS = ("503-executed", "503-lost", "503-unavailable", "-2019", "-4164", "drop_user_stream")
_DEFAULT_ARG = {"429": 1.0, "418": 2000.0, "slow": 1000.0}


@attrs.frozen(kw_only=True)
class RequestFault:
    """``count`` occurrences of ``kind`` on the next requests that match.

    Attributes:
        kind: one of :data:`REQUEST_FAULT_KINDS`.
        arg: Retry-After seconds (429), ban ms (418), delay ms (slow); else unused.
        count: how many matching requests it hits.
        method: HTTP method to match, or ``None`` for the kind's default.
        path: path to match (``/fapi/v1/order``), or ``None`` for the default.
    """

    kind: str = attrs.field(validator=attrs.validators.in_(REQUEST_FAULT_KINDS))
    arg: float = attrs.field(default=-1.0)
    count: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    method: str | None = None
    path: str | None = None

    @property
    def value(self) -> float:
        """``arg``, or the kind's default when not given."""
        return self.arg if self.arg >= 0 else _DEFAULT_ARG.get(self.kind, 0.0)

    def matches(self, method: str, path: str, signed: bool) -> bool:
        """Whether a request is one this fault hits."""
        if self.method is not None or self.path is not None:
            return (self.method in (None, method)) and (self.path in (None, path))
        if self.kind in _ORDER_KINDS:
            return method == "POST" and path == "/fapi/v1/order"
        if self.kind == "-1021":
            return signed
        return True

    @classmethod
    def parse(cls, text: str) -> RequestFault:
        """``KIND[:ARG][*COUNT][@METHOD/PATH]``.

        Raises:
            ValueError: not of that form.
        """
        head, _, where = text.partition("@")
        head, _, count = head.partition("*")
        kind, _, arg = head.partition(":")
        method = path = None
        if where:
            slash = where.find("/")
            method, path = (where[:slash] or None, where[slash:]) if slash >= 0 else (where, None)
        try:
            return cls(
                kind=kind,
                arg=float(arg) if arg else -1.0,
                count=int(count) if count else 1,
                method=method.upper() if method else None,
                path=path,
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"bad request fault {text!r}: expected KIND[:ARG][*COUNT][@METHOD/PATH] with "
                f"KIND one of {', '.join(REQUEST_FAULT_KINDS)}"
            ) from exc


class FaultBox:
    """Armed request faults, consumed first-armed first."""

    def __init__(self) -> None:
        self._armed: list[list] = []  # [fault, occurrences left]
        self.fired: list[tuple[str, str, str]] = []  # (kind, method, path), in order

    def arm(self, fault: RequestFault) -> None:
        """Hit the next ``fault.count`` matching requests."""
        self._armed.append([fault, fault.count])

    def take(self, method: str, path: str, signed: bool) -> RequestFault | None:
        """The fault for this request, if one is armed; uses up one occurrence."""
        for entry in self._armed:
            fault, left = entry
            if fault.matches(method, path, signed):
                if left <= 1:
                    self._armed.remove(entry)
                else:
                    entry[1] = left - 1
                self.fired.append((fault.kind, method, path))
                return fault
        return None

    @property
    def pending(self) -> int:
        """Occurrences still armed, all faults together."""
        return sum(left for _f, left in self._armed)

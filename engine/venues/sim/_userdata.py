"""Listen keys of the loopback exchange's user-data stream (no I/O).

Binance USD-M: ``POST /fapi/v1/listenKey`` returns the account's active key,
extending it, or a new one; ``PUT`` extends it by 60 minutes (-1125 when there
is none); ``DELETE`` closes it. A key not kept alive expires; its stream then
gets ``listenKeyExpired``. The simulated exchange has one account, so at most
one key is active. Keys are 64 characters, derived deterministically.
"""

from __future__ import annotations

import hashlib

from . import _exchange_errors as err


class ListenKeys:
    """The active listen key and its expiry.

    Args:
        ttl_s: validity after create/keepalive, seconds (Binance: 3600).
    """

    def __init__(self, ttl_s: float = 3600.0) -> None:
        self.ttl_s = ttl_s
        self._key: str | None = None
        self._expires = 0.0
        self._issued = 0

    @property
    def active(self) -> str | None:
        """The active key, or ``None``."""
        return self._key

    def create(self, now: float) -> str:
        """Return the active key extended, or a new one."""
        if self._key is None:
            self._issued += 1
            digest = hashlib.sha256(f"trireme-sim-listen-key-{self._issued}".encode())
            self._key = digest.hexdigest()
        self._expires = now + self.ttl_s
        return self._key

    def keepalive(self, now: float, key: str | None = None) -> str:
        """Extend the active key.

        Raises:
            ExchangeApiError: -1125 when no key is active (or ``key`` is not it).
        """
        if self._key is None or (key and key != self._key):
            raise err.code(400, -1125, "This listenKey does not exist.")
        self._expires = now + self.ttl_s
        return self._key

    def close(self, key: str | None = None) -> str | None:
        """Close the active key; returns it (``None`` if there was none)."""
        closed = self._key if (not key or key == self._key) else None
        if closed is not None:
            self._key = None
        return closed

    def expire_due(self, now: float) -> str | None:
        """Drop the key if its time is up; returns the key that expired."""
        if self._key is not None and now >= self._expires:
            key, self._key = self._key, None
            return key
        return None

    def expire_now(self) -> str | None:
        """Expire the active key immediately (tests); returns it."""
        key, self._key = self._key, None
        return key

"""HMAC-SHA256 request signing as Binance documents it, and the credentials that sign.

Binance signs the exact ``totalParams`` string that is sent (query string, then
body, concatenated without a separator); this module builds the query string
itself, so the bytes signed are the bytes sent and nothing re-encodes them.
The secret never leaves :class:`Credentials`: it is not in ``repr``, ``str`` or
any attribute a logger would print, and the object refuses to be pickled.
"""

from __future__ import annotations

import hashlib
import os
from typing import NoReturn

from ._errors import AuthenticationError

API_KEY_HEADER = "X-MBX-APIKEY"

_REDACTED = "<redacted>"
_BLOCK = hashlib.sha256().block_size  # 64
_IPAD = bytes(x ^ 0x36 for x in range(256))  # translate tables: key XOR pad
_OPAD = bytes(x ^ 0x5C for x in range(256))


class MissingCredentialsError(AuthenticationError):
    """An environment variable named for a key or secret is unset or empty.

    Attributes:
        variable: the variable's name (never its value).
    """

    def __init__(self, variable: str) -> None:
        self.variable = variable
        super().__init__(f"environment variable {variable} is not set (Binance API credentials)")


class Credentials:
    """A Binance API key and its secret; signs payloads, never shows the secret.

    The HMAC is keyed once here: the SHA-256 states after the key's inner and
    outer pads (RFC 2104) are kept, and a signature copies them, so an order pays
    two hash copies and no key padding, in C calls only (``hmac``'s object wraps
    each step in Python calls).

    Args:
        api_key: the API key, sent as the ``X-MBX-APIKEY`` header.
        secret: the API secret.
    """

    __slots__ = ("_api_key", "_headers", "_inner", "_outer")

    def __init__(self, api_key: str, secret: str) -> None:
        if not api_key or not secret:
            raise AuthenticationError("empty API key or secret")
        self._api_key = api_key
        self._headers = {API_KEY_HEADER: api_key}
        key = secret.encode()
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    @property
    def headers(self) -> dict[str, str]:
        """The ``X-MBX-APIKEY`` header (a fresh dict each call)."""
        return dict(self._headers)

    def sign(self, payload: str | bytes) -> str:
        """Return the lowercase hex HMAC-SHA256 of ``payload`` under the secret.

        Args:
            payload: the exact query string and body that will be sent.
        """
        inner = self._inner.copy()
        inner.update(payload.encode() if isinstance(payload, str) else payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def sign_query(self, params: str, *, timestamp_ms: int, recv_window_ms: int | None) -> str:
        """Append ``recvWindow``, ``timestamp`` and ``signature`` to a query string.

        Args:
            params: already-encoded ``k=v&k=v`` parameters (may be empty).
            timestamp_ms: the server-time estimate, epoch ms.
            recv_window_ms: the ``recvWindow`` to send, or ``None`` for the
                venue default (5000 ms).

        Returns:
            The string to send, ending with ``&signature=<hex>``.
        """
        window = f"recvWindow={recv_window_ms}&" if recv_window_ms is not None else ""
        sep = "&" if params else ""
        query = f"{params}{sep}{window}timestamp={timestamp_ms}"
        # :meth:`sign`, inline: this runs between a tick and its order's write.
        inner = self._inner.copy()
        inner.update(query.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return f"{query}&signature={outer.hexdigest()}"

    def __repr__(self) -> str:
        return f"Credentials(api_key={_REDACTED}, secret={_REDACTED})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("Credentials cannot be pickled (the secret must not leave the process)")


def credentials_from_env(key_var: str, secret_var: str) -> Credentials:
    """Read credentials from the environment variables named in config.

    Args:
        key_var: name of the variable holding the API key.
        secret_var: name of the variable holding the secret.

    Returns:
        The :class:`Credentials`.

    Raises:
        MissingCredentialsError: a variable is unset or empty; the message
            names the variable, never a value.
    """
    values = []
    for var in (key_var, secret_var):
        value = os.environ.get(var, "").strip()
        if not value:
            raise MissingCredentialsError(var)
        values.append(value)
    return Credentials(values[0], values[1])

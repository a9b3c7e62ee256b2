"""What a compiled order path would cost: one numba call from a signal to the request bytes.

``python -m tools.bench compiled_order [--orders N] [--rounds R] [--sweep-mib M]``
prints JSON. The measurement behind the redesign issue 12's note proposes for the
live tick-to-order figure (the Python order path is 2.5-3.5x the whole 100 us budget
warm, and runs 1.5-2x slower again live, its code and data out of the cache between
ticks). Two ways from an entry signal (side, quantity, the quote) to the bytes of a
signed ``POST /fapi/v1/order`` request:

- ``python``: today's venue path without its socket write: :meth:`OrderTemplate.prepare`
  (filters, rounding, params), :meth:`Credentials.sign_query` (recvWindow, timestamp,
  HMAC-SHA256 signature) and :meth:`LeanTransport._request_bytes`, the calls
  ``BinanceVenue.submit`` makes for a market entry;
- ``compiled``: one ``numba.njit`` function doing risk's entry checks as comparisons
  (minimum notional, price band against the mid, the symbol's notional after the
  order, an order-rate window), the quantity's digits, the client order id's, the
  timestamp's, the HMAC (OpenSSL's ``HMAC``, the library CPython's ``hashlib`` uses,
  called through ctypes from nopython code) and the request into a preallocated
  buffer.

Each is timed per order (``perf_counter_ns``) warm, in a loop, and cold: after a
sweep of ``--sweep-mib`` MiB of memory (past the last-level cache, as between live
ticks). Rounds alternate the two. ``same_bytes`` checks, for every order, that the
compiled request is byte for byte the Python one; a difference is an error.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import statistics
import time
from decimal import Decimal
from typing import Any

import numba
import numpy as np

KEY = "benchkey" + "A" * 56
SECRET = "benchsecret" + "b" * 53
SYMBOL = "BTCUSDT"
BASE_URL = "http://127.0.0.1:9080"
RECV_WINDOW_MS = 5000
STEP_DECIMALS = 3  # BTCUSDT's market step, 0.001
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).copy()


def _libcrypto() -> tuple[Any, int]:
    """OpenSSL's one-shot ``HMAC`` (pointer arguments as 64-bit integers, which is what
    they are on the 64-bit ABIs numba targets) and ``EVP_sha256()``'s digest."""
    name = ctypes.util.find_library("crypto")
    if name is None:
        raise RuntimeError("libcrypto not found (CPython's hashlib links it)")
    lib = ctypes.CDLL(name)
    lib.EVP_sha256.restype = ctypes.c_uint64
    lib.EVP_sha256.argtypes = []
    hmac = lib.HMAC
    hmac.restype = ctypes.c_uint64
    u64 = ctypes.c_uint64
    hmac.argtypes = [u64, u64, ctypes.c_int, u64, ctypes.c_size_t, u64, u64]
    return hmac, int(lib.EVP_sha256())


_HMAC, _SHA256 = _libcrypto()


@numba.njit(inline="always")
def _put(out: np.ndarray, at: int, part: np.ndarray) -> int:
    out[at : at + part.size] = part
    return at + part.size


@numba.njit(inline="always")
def _digits(out: np.ndarray, at: int, value: int, width: int) -> int:
    """``value`` in decimal, zero-padded to ``width`` (0: as many digits as it has)."""
    n = 1
    v = value
    while v >= 10:
        v //= 10
        n += 1
    n = max(n, width)
    for i in range(n - 1, -1, -1):
        out[at + i] = 48 + value % 10
        value //= 10
    return at + n


@numba.njit  # not cached: it calls a ctypes function (an address fixed per process)
def build_order(
    out: np.ndarray,
    heads: np.ndarray,  # (2, H) uint8, per side "symbol=...&side=...&type=MARKET&quantity="
    head_len: np.ndarray,
    parts: np.ndarray,  # (5, P) uint8: the fixed parts below, by row
    part_len: np.ndarray,
    hex_digits: np.ndarray,
    key: np.ndarray,
    digest: np.ndarray,
    recent: np.ndarray,  # the order-rate window's times (ns), a ring
    limits: np.ndarray,  # min_notional, band_bps, max_notional, max_per_second
    side: int,  # 0 buy, 1 sell
    qty: float,
    bid: float,
    ask: float,
    position: float,
    order_id: int,
    ts_ns: int,
    ts_ms: int,
    sha256: int,
) -> int:
    """The request's length in ``out``, or a negative refusal: -1 under the minimum
    notional, -2 outside the price band, -3 over the symbol's notional, -4 the
    order rate, -5 a quantity that rounds to 0."""
    # Down to the step, as the template rounds (the float's decimal text, ROUND_DOWN).
    units = int(qty * 10**STEP_DECIMALS + 1e-9)
    if units <= 0:
        return -5
    price = ask if side == 0 else bid
    mid = 0.5 * (bid + ask)
    qty_r = units / 10**STEP_DECIMALS
    if qty_r * price < limits[0]:
        return -1
    if abs(price - mid) / mid * 1e4 > limits[1]:
        return -2
    after = position + (qty_r if side == 0 else -qty_r)
    if abs(after) * price > limits[2]:
        return -3
    window = 0
    for t in recent:
        if t > ts_ns - 1_000_000_000:
            window += 1
    if window >= limits[3]:
        return -4
    at = _put(out, 0, parts[0, : part_len[0]])  # "POST /fapi/v1/order?"
    query = at
    at = _put(out, at, heads[side, : head_len[side]])
    whole = units // 10**STEP_DECIMALS
    frac = units % 10**STEP_DECIMALS
    at = _digits(out, at, whole, 0)
    out[at] = 46  # "." and the step's decimals, as the template writes them
    at = _digits(out, at + 1, frac, STEP_DECIMALS)
    at = _put(out, at, parts[1, : part_len[1]])  # "&newClientOrderId=tr"
    at = _digits(out, at, order_id, 20)
    at = _put(out, at, parts[2, : part_len[2]])  # "&recvWindow=...&timestamp="
    at = _digits(out, at, ts_ms, 0)
    _HMAC(
        sha256,
        key.ctypes.data,
        key.size,
        out[query:].ctypes.data,
        at - query,
        digest.ctypes.data,
        0,
    )
    at = _put(out, at, parts[3, : part_len[3]])  # "&signature="
    for b in digest:
        out[at] = hex_digits[b >> 4]
        out[at + 1] = hex_digits[b & 15]
        at += 2
    at = _put(out, at, parts[4, : part_len[4]])  # " HTTP/1.1\r\n" + headers + "\r\n"
    recent[order_id % recent.size] = ts_ns
    return at


def _rows(parts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(p) for p in parts)
    rows = np.zeros((len(parts), width), dtype=np.uint8)
    for i, p in enumerate(parts):
        rows[i, : len(p)] = np.frombuffer(p, dtype=np.uint8)
    return rows, np.array([len(p) for p in parts], dtype=np.int64)


class _Paths:
    """Both paths, set up for BTCUSDT market entries."""

    def __init__(self) -> None:
        from engine.messages import Side
        from engine.venues.binance import OrderTemplate
        from engine.venues.binance._signing import Credentials
        from engine.venues.binance._templates import OrderType
        from engine.venues.binance._transport import LeanTransport

        self.template = OrderTemplate(
            symbol=SYMBOL,
            tick_size=Decimal("0.1"),
            step_size=Decimal("0.001"),
            market_step_size=Decimal("0.001"),
            min_notional=Decimal("100"),
        )
        self.credentials = Credentials(KEY, SECRET)
        self.transport = LeanTransport(BASE_URL, pool_size=1)
        self.sides = (Side.BUY, Side.SELL)
        self.market = OrderType.MARKET
        request = self.transport._request_bytes(
            "POST", "/fapi/v1/order?X", self.credentials.headers
        )
        before, after = request.split(b"X", 1)
        self.heads, self.head_len = _rows(
            [f"symbol={SYMBOL}&side={s}&type=MARKET&quantity=".encode() for s in ("BUY", "SELL")]
        )
        self.parts, self.part_len = _rows(
            [
                before,
                b"&newClientOrderId=tr",
                f"&recvWindow={RECV_WINDOW_MS}&timestamp=".encode(),
                b"&signature=",
                after,
            ]
        )
        self.key = np.frombuffer(SECRET.encode(), dtype=np.uint8).copy()
        self.digest = np.zeros(32, dtype=np.uint8)
        self.out = np.zeros(1024, dtype=np.uint8)
        self.recent = np.zeros(64, dtype=np.int64)
        # The checks run on every order and pass (the rate limit is out of reach here:
        # the same times repeat round after round).
        self.limits = np.array([100.0, 50.0, 1e9, 1e9])

    def python(self, side: int, qty: float, bid: float, ask: float, n: int, ts_ms: int) -> bytes:
        prepared = self.template.prepare(
            self.sides[side],
            qty,
            client_order_id=f"tr{n:020d}",
            order_type=self.market,
            ref_price=ask if side == 0 else bid,
        )
        query = self.credentials.sign_query(
            prepared.params, timestamp_ms=ts_ms, recv_window_ms=RECV_WINDOW_MS
        )
        return self.transport._request_bytes(
            "POST", f"{prepared.path}?{query}", self.credentials.headers
        )

    def compiled(self, side: int, qty: float, bid: float, ask: float, n: int, ts_ms: int) -> int:
        return int(
            build_order(
                self.out, self.heads, self.head_len, self.parts, self.part_len, HEX, self.key,
                self.digest, self.recent, self.limits, side, qty, bid, ask, 0.0, n,
                ts_ms * 1_000_000, ts_ms, _SHA256,
            )
        )  # fmt: skip


def _sweep(buffer: np.ndarray) -> None:
    buffer += 1  # every cache line written: the caches hold the sweep, not the path


def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench compiled_order")
    parser.add_argument("--orders", type=int, default=400, help="orders per path per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweep-mib", type=int, default=64, help="cold: memory swept before each")
    args = parser.parse_args(argv)
    paths = _Paths()
    sweep = np.zeros(args.sweep_mib * 2**20 // 8, dtype=np.int64)
    rng = np.random.default_rng(7)
    orders = [
        (int(rng.integers(2)), float(rng.uniform(0.002, 0.05)), 60000.0 + float(rng.normal()))
        for _ in range(args.orders)
    ]
    ts0 = 1_723_136_400_000
    # Same bytes, every order (and the compile, before any timing).
    mismatches = 0
    for n, (side, qty, bid) in enumerate(orders):
        want = paths.python(side, qty, bid, bid + 0.1, n, ts0 + n)
        size = paths.compiled(side, qty, bid, bid + 0.1, n, ts0 + n)
        mismatches += bytes(paths.out[:size]) != want
    if mismatches:
        raise AssertionError(f"{mismatches} compiled requests differ from the Python ones")
    times: dict[str, dict[str, list[float]]] = {
        name: {"warm": [], "cold": []} for name in ("python", "compiled")
    }
    clock = time.perf_counter_ns
    for _round in range(args.rounds):
        for name in ("python", "compiled"):
            call = paths.python if name == "python" else paths.compiled
            for cold in (False, True):
                row = times[name]["cold" if cold else "warm"]
                for n, (side, qty, bid) in enumerate(orders):
                    if cold:
                        _sweep(sweep)
                    t0 = clock()
                    call(side, qty, bid, bid + 0.1, n, ts0 + n)
                    row.append((clock() - t0) / 1e3)
    out: dict[str, Any] = {"orders": args.orders, "rounds": args.rounds, "same_bytes": True}
    for name, rows in times.items():
        out[f"{name}_us"] = {
            kind: {
                "p50": round(statistics.median(values), 2),
                "p90": round(sorted(values)[int(0.9 * len(values))], 2),
            }
            for kind, values in rows.items()
        }
    for kind in ("warm", "cold"):
        out[f"python_over_compiled_{kind}"] = round(
            out["python_us"][kind]["p50"] / out["compiled_us"][kind]["p50"], 1
        )
    out["sweep_mib"] = args.sweep_mib
    return out

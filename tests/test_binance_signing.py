"""Signing, credentials, client order ids and error mapping of the Binance venue."""

from __future__ import annotations

import logging
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import EngineError
from engine.venues.binance import (
    API_KEY_HEADER,
    CLIENT_ORDER_ID_PATTERN,
    AuthenticationError,
    BinanceError,
    ClientOrderIds,
    Credentials,
    IpBannedError,
    MissingCredentialsError,
    OrderRejectedError,
    RateLimitedError,
    RequestRejectedError,
    ServiceUnavailableError,
    TimestampSkewError,
    UnknownOrderStateError,
    credentials_from_env,
    error_from_response,
)

SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
PAYLOAD = (
    "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
    "&recvWindow=5000&timestamp=1591702613943"
)
SIGNATURE = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


def test_signature_matches_the_documented_vector() -> None:
    creds = Credentials("key", SECRET)
    assert creds.sign(PAYLOAD) == SIGNATURE
    assert creds.sign(PAYLOAD.encode()) == SIGNATURE
    assert creds.sign(PAYLOAD) == SIGNATURE  # the keyed HMAC is copied, not consumed


def test_sign_query_appends_window_timestamp_and_signature_over_what_is_sent() -> None:
    creds = Credentials("key", SECRET)
    params = "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
    sent = creds.sign_query(params, timestamp_ms=1591702613943, recv_window_ms=5000)
    assert sent == f"{PAYLOAD}&signature={SIGNATURE}"
    bare = creds.sign_query("", timestamp_ms=5, recv_window_ms=None)
    assert bare == f"timestamp=5&signature={creds.sign('timestamp=5')}"


def test_credentials_never_show_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    creds = Credentials("my-api-key-123", SECRET)
    assert creds.headers == {API_KEY_HEADER: "my-api-key-123"}
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}", repr([creds])):
        assert SECRET not in text
        assert "my-api-key-123" not in text
        assert "redacted" in text
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("creds %s %r", creds, creds)
    assert SECRET not in caplog.text
    assert not hasattr(creds, "__dict__")
    with pytest.raises(TypeError):
        pickle.dumps(creds)


def test_credentials_from_env_names_the_missing_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIREME_TEST_KEY", "k")
    monkeypatch.delenv("TRIREME_TEST_SECRET", raising=False)
    with pytest.raises(MissingCredentialsError, match="TRIREME_TEST_SECRET") as info:
        credentials_from_env("TRIREME_TEST_KEY", "TRIREME_TEST_SECRET")
    assert info.value.variable == "TRIREME_TEST_SECRET"
    assert isinstance(info.value, EngineError)
    monkeypatch.setenv("TRIREME_TEST_SECRET", SECRET)
    monkeypatch.setenv("TRIREME_TEST_KEY", "  ")
    with pytest.raises(MissingCredentialsError, match="TRIREME_TEST_KEY"):
        credentials_from_env("TRIREME_TEST_KEY", "TRIREME_TEST_SECRET")
    monkeypatch.setenv("TRIREME_TEST_KEY", "k")
    assert credentials_from_env("TRIREME_TEST_KEY", "TRIREME_TEST_SECRET").sign(PAYLOAD) == (
        SIGNATURE
    )


@given(run_id=st.text(max_size=200), seq=st.integers(min_value=0, max_value=2**70))
def test_client_order_ids_are_valid_deterministic_and_parse_back(run_id: str, seq: int) -> None:
    ids = ClientOrderIds(run_id)
    cid = ids.make(seq)
    assert CLIENT_ORDER_ID_PATTERN.match(cid)
    assert cid == ClientOrderIds(run_id).make(seq)  # idempotent across instances
    assert ids.parse(cid) == seq
    assert ids.is_engine_id(cid)


@given(
    a=st.text(max_size=50),
    b=st.text(max_size=50),
    seq_a=st.integers(min_value=0, max_value=10**9),
    seq_b=st.integers(min_value=0, max_value=10**9),
)
def test_client_order_ids_never_collide_across_runs_or_sequences(
    a: str, b: str, seq_a: int, seq_b: int
) -> None:
    if (a, seq_a) != (b, seq_b):
        assert ClientOrderIds(a).make(seq_a) != ClientOrderIds(b).make(seq_b)
    if a != b:
        assert ClientOrderIds(b).parse(ClientOrderIds(a).make(seq_a)) is None


def test_client_order_ids_refuse_foreign_ids_and_bad_sequences() -> None:
    ids = ClientOrderIds("run-1")
    assert ids.parse("web_abc") is None
    assert ids.parse(ids.make(5) + "!") is None
    assert not ids.is_engine_id("autoclose-123")
    with pytest.raises(ValueError):
        ids.make(-1)


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (429, b'{"code":-1003,"msg":"Too many requests."}', {"Retry-After": "7"}, RateLimitedError),
        (418, b'{"code":-1003,"msg":"Way too many"}', {}, IpBannedError),
        (400, b'{"code":-1021,"msg":"Timestamp outside recvWindow."}', {}, TimestampSkewError),
        (401, b'{"code":-2015,"msg":"Invalid API-key"}', {}, AuthenticationError),
        (400, b'{"code":-1022,"msg":"Signature invalid."}', {}, AuthenticationError),
        (
            503,
            b'{"code":-1000,"msg":"Unknown error, please check your request or try again later."}',
            {},
            UnknownOrderStateError,
        ),
        (500, b"<html>oops</html>", {}, UnknownOrderStateError),
        (408, b'{"code":-1007,"msg":"Timeout waiting for response"}', {}, UnknownOrderStateError),
        (503, b'{"code":-1000,"msg":"Service Unavailable."}', {}, ServiceUnavailableError),
        (
            503,
            b'{"code":-1008,"msg":"Server is currently overloaded"}',
            {},
            ServiceUnavailableError,
        ),
        (400, b'{"code":-2019,"msg":"Margin is insufficient."}', {}, RequestRejectedError),
    ],
)
def test_error_mapping(status: int, body: bytes, headers: dict, expected: type) -> None:
    err = error_from_response(status, body, headers)
    assert type(err) is expected
    assert isinstance(err, BinanceError)
    assert isinstance(err, EngineError)
    assert err.status == status


def test_error_mapping_details() -> None:
    err = error_from_response(429, b'{"code":-1003,"msg":"x"}', {"retry-after": "12"})
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == 12.0
    assert err.code == -1003
    msg = b'{"code":-1003,"msg":"Way too many requests; IP banned until 1591702613943."}'
    ban = error_from_response(418, msg)
    assert isinstance(ban, IpBannedError)
    assert ban.banned_until_ms == 1591702613943
    assert ban.retry_after is None
    rejected = error_from_response(
        400, {"code": -4164, "msg": "notional too small"}, order_endpoint=True
    )
    assert isinstance(rejected, OrderRejectedError)
    assert (rejected.code, rejected.msg) == (-4164, "notional too small")
    assert "-4164" in str(rejected)


def test_public_surface_is_exactly_all() -> None:
    import engine.venues.binance as binance

    public = {n for n in dir(binance) if not n.startswith("_")}
    assert set(binance.__all__) == public
    for name in binance.__all__:
        obj = getattr(binance, name)
        assert name.isupper() or obj.__module__.startswith("engine.venues.binance."), name

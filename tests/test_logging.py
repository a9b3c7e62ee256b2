"""JSON log lines: the ECS layout, the mapping of known keys, value types and secret redaction."""

from __future__ import annotations

import enum
import json
import os
from decimal import Decimal

import numpy as np

from engine import make_logger
from engine._logging import ECS_VERSION


def write(tmp_path, level="info", **fields):
    """One line logged at ``level`` with ``fields``, parsed back from the file."""
    path = tmp_path / "x" / "log.jsonl"
    log, handle = make_logger(path, "info")
    getattr(log, level)("hello", **fields)
    handle.close()
    (line,) = path.read_text().splitlines()
    return line, json.loads(line)


def test_ecs_header_nested_fields_and_redaction(tmp_path):
    log, handle = make_logger(tmp_path / "x" / "log.jsonl", "info")
    log.info("hello", symbol="BTCUSDT", api_key="s3cret", signature="abc", **{"from": "IDLE"})
    log.debug("filtered out")
    handle.close()
    (line,) = (tmp_path / "x" / "log.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert list(record)[:4] == ["@timestamp", "log.level", "message", "ecs.version"]
    assert record["message"] == "hello"
    assert record["log.level"] == "info"
    assert record["ecs.version"] == ECS_VERSION
    assert record["service"] == {"name": "trireme"}
    assert record["event"] == {"dataset": "trireme.engine"}
    assert record["process"] == {"pid": os.getpid()}
    assert record["@timestamp"].endswith("Z")
    custom = record["trireme"]
    assert custom["symbol"] == "BTCUSDT" and custom["from"] == "IDLE"
    assert custom["api_key"] == "[REDACTED]" and custom["signature"] == "[REDACTED]"
    assert "s3cret" not in line
    # Nothing else at the top level: every other key is ECS or under trireme.
    assert set(record) == {*list(record)[:4], "service", "event", "process", "trireme"}


def test_secrets_nested_in_objects_and_lists_are_redacted(tmp_path):
    line, record = write(
        tmp_path,
        request={"params": {"symbol": "BTCUSDT", "X-MBX-APIKEY": "k3y", "signature": "s1g"}},
        attempts=[{"token": "t0k", "n": 1}],
        client_order_id="tr-BTCUSDT-1",
    )
    assert record["trireme"]["request"]["params"] == {
        "symbol": "BTCUSDT",
        "X-MBX-APIKEY": "[REDACTED]",
        "signature": "[REDACTED]",
    }
    assert record["trireme"]["attempts"] == [{"token": "[REDACTED]", "n": 1}]
    assert record["trireme"]["client_order_id"] == "tr-BTCUSDT-1"  # an id, not a secret
    assert "k3y" not in line and "s1g" not in line and "t0k" not in line


def test_known_keys_become_ecs_fields(tmp_path):
    _line, record = write(
        tmp_path,
        actor="risk",
        action="halt",
        reason="operator",
        url="wss://fstream.binance.com/stream",
        latency_ms=1.25,
    )
    assert record["log"] == {"logger": "risk"}
    assert record["event"] == {
        "dataset": "trireme.engine",
        "action": "halt",
        "reason": "operator",
        "duration": 1_250_000,  # nanoseconds
    }
    assert record["url"] == {"full": "wss://fstream.binance.com/stream"}
    assert "trireme" not in record


def test_dotted_keys_under_an_ecs_field_set_are_ecs_fields(tmp_path):
    _line, record = write(
        tmp_path,
        **{
            "event.dataset": "trireme.sim_exchange.access",
            "http.request.method": "GET",
            "http.response.status_code": 200,
            "order.qty": 1.5,
        },
    )
    assert record["event"] == {"dataset": "trireme.sim_exchange.access"}
    assert record["http"] == {"request": {"method": "GET"}, "response": {"status_code": 200}}
    assert record["trireme"] == {"order": {"qty": 1.5}}


def test_error_string_is_error_message(tmp_path):
    _line, record = write(tmp_path, "warning", error="connection reset", symbol="BTCUSDT")
    assert record["error"] == {"message": "connection reset"}
    assert record["trireme"] == {"symbol": "BTCUSDT"}


def test_an_exception_becomes_error_type_message_and_stack_trace(tmp_path):
    path = tmp_path / "log.jsonl"
    log, handle = make_logger(path, "info")
    try:
        raise KeyError("BTCUSDT")
    except KeyError:
        log.error("crashed", exc_info=True)
    try:
        {}["x"]
    except KeyError as exc:
        log.error("crashed again", error=repr(exc), exc_info=True)
    log.error("an exception object", error=ValueError("bad price"))
    handle.close()
    first, second, third = (json.loads(x) for x in path.read_text().splitlines())
    assert first["error"]["type"] == "KeyError"
    assert first["error"]["message"] == "'BTCUSDT'"
    trace = first["error"]["stack_trace"]
    assert trace.startswith("Traceback (most recent call last):")
    assert "test_logging.py" in trace and trace.endswith("KeyError: 'BTCUSDT'")
    # The caller's own message wins; the type and trace still come from the exception.
    assert second["error"]["message"] == "KeyError('x')"
    assert second["error"]["type"] == "KeyError" and "stack_trace" in second["error"]
    assert third["error"] == {"type": "ValueError", "message": "bad price"}
    for record in (first, second, third):
        assert "exc_info" not in record.get("trireme", {}) and "exception" not in record


class _Side(enum.Enum):
    BUY = 1


class _Purpose(enum.Enum):
    ENTRY = "ENTRY"


def test_values_become_one_json_type_each(tmp_path):
    _line, record = write(
        tmp_path,
        qty=Decimal("0.016"),
        price=np.float64(61813.5),
        step=np.int64(80),
        taken=np.bool_(True),
        side=_Side.BUY,
        purpose=_Purpose.ENTRY,
        symbols=("BTCUSDT", "ETHUSDT"),
        cpus={3, 1},
        journal=tmp_path / "j.sqlite",
        weights={"BTCUSDT": Decimal("0.5")},
    )
    custom = record["trireme"]
    assert custom["qty"] == 0.016 and isinstance(custom["qty"], float)
    assert custom["price"] == 61813.5
    assert custom["step"] == 80 and isinstance(custom["step"], int)
    assert custom["taken"] is True
    assert custom["side"] == 1 and custom["purpose"] == "ENTRY"
    assert custom["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert custom["cpus"] == [1, 3]
    assert custom["journal"] == str(tmp_path / "j.sqlite")
    assert custom["weights"] == {"BTCUSDT": 0.5}


def test_dotted_keys_expand_into_nested_objects(tmp_path):
    _line, record = write(
        tmp_path,
        **{"order.qty": 0.5, "order.side": "BUY", "trireme.order.price": 100.0},
        book={"top.bid": 1.0, "top": {"ask": 2.0}},
    )
    assert record["trireme"]["order"] == {"qty": 0.5, "side": "BUY", "price": 100.0}
    assert record["trireme"]["book"] == {"top": {"bid": 1.0, "ask": 2.0}}


def test_the_scalar_fast_path_writes_what_the_general_path_writes(tmp_path, monkeypatch):
    # Redaction and the ECS mapping pass plain scalars on without their type checks;
    # with that fast path off (no type counts as a plain scalar) every line is the same.
    from engine import _logging

    class Side(enum.Enum):
        BUY = "BUY"

    def write(path):
        log, stream = make_logger(path)
        bound = log.bind(actor="symbol", symbol="BTCUSDT", api_key="k" * 8)
        bound.info("order intent", side="BUY", qty=0.001, price=60000.5, flag=True, none=None)
        bound.info("n", **{"a.b": 1, "a": 2, "trireme.c": "x", "d": {"e.f": 3, "token": "t"}})
        bound.info("x", side=Side.BUY, qty=np.float64(1.5), n=np.int64(3), dec=Decimal("0.1"))
        bound.info("y", reason="signal", nan=float("nan"), ids=[1, 2], pair=("a", 1), s={"b"})
        stream.close()
        return [json.loads(line) for line in path.read_text().splitlines()]

    fast = write(tmp_path / "fast.jsonl")
    monkeypatch.setattr(_logging, "_SCALARS", frozenset())
    general = write(tmp_path / "general.jsonl")
    for a, b in zip(fast, general, strict=True):
        a.pop("@timestamp")
        b.pop("@timestamp")
        assert a == b
    assert fast[0]["trireme"]["api_key"] == "[REDACTED]"

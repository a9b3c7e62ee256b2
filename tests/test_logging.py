"""JSON log lines: ECS field names and secret redaction."""

from __future__ import annotations

import json

from engine import make_logger


def test_ecs_fields_and_redaction(tmp_path):
    log, handle = make_logger(tmp_path / "x" / "log.jsonl", "info")
    log.info("hello", symbol="BTCUSDT", api_key="s3cret", signature="abc", **{"from": "IDLE"})
    log.debug("filtered out")
    handle.close()
    (line,) = (tmp_path / "x" / "log.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["message"] == "hello"
    assert record["log.level"] == "info"
    assert record["ecs.version"] == "1.6.0"
    assert record["service.name"] == "trireme"
    assert record["event.dataset"] == "trireme.engine"
    assert record["@timestamp"].endswith("Z")
    assert record["symbol"] == "BTCUSDT" and record["from"] == "IDLE"
    assert record["api_key"] == "[REDACTED]" and record["signature"] == "[REDACTED]"
    assert "s3cret" not in line

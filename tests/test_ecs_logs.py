"""Every log line that real engine runs write is clean ECS, checked against Elastic's field list.

One module fixture runs the engine the ways an operator would and collects every
line of one JSON log file:

* the CLI replaying the bundled sample with the ML filter on, the hardware actor
  applying its plan, the control socket served and every replay fault injected;
* the CLI refusing to start (a missing capture file, a missing model);
* a replay whose journal fails mid-run (a SQLite trigger refuses the 40th
  record), so the supervisor's crash line is written with its traceback;
* a live run against the loopback exchange (real HTTP and websockets on
  127.0.0.1) with feed faults, refused orders, an order whose answer is lost,
  and a foreign open order that reconciliation cancels; the exchange logs to
  the same file.

Each line is then checked against ``../shared/ecs/ecs_flat.yml`` (elastic/ecs):
an ECS field has a JSON type its ECS type accepts; any other field is under
``trireme.``; each field has one JSON type across all lines; no path is both a
leaf and an object; and ``tools/ops/``'s index template maps every custom field
with a type that accepts what was seen.
"""

from __future__ import annotations

import ast
import collections
import json
import os
import sqlite3
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
import yaml
from test_model_filter import FAST as STRATEGY  # the strategy the shipped models were trained for

from engine import config_from_dict, make_logger
from engine._cli import main as cli_main
from engine._errors import ActorFailedError
from engine._logging import ECS_FIELD_SETS, ECS_KEYS, ECS_VERSION
from engine._replay import run_replay
from engine._streaming import run_live
from engine.journal import Journal
from engine.venues.sim._exchange_api import sign
from engine.venues.sim._exchange_faults import RequestFault
from engine.venues.sim._recorded import load_recording
from engine.venues.sim._stream_server import Fault, ServerSettings, StreamServer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
MODELS = [str(ROOT / f"models/onnx/entry_filter_{k}.onnx") for k in ("gbdt", "rf", "mlp")]
ECS_FLAT = ROOT.parent / "shared/ecs/ecs_flat.yml"
TEMPLATE = ROOT / "tools/ops/elasticsearch-index-template.json"
FILEBEAT = ROOT / "tools/ops/filebeat.yml"
KEY = "simkey" + "A" * 58
SECRET = "simsecret" + "b" * 55
HEADER = ("@timestamp", "log.level", "message", "ecs.version")
NAMESPACE = "trireme"

# JSON types (as named by _json_type) each ECS / Elasticsearch field type accepts.
STRING_TYPES = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text", "ip"}
ACCEPTS: dict[str, set[str]] = {
    **{t: {"string"} for t in STRING_TYPES},
    "date": {"string", "integer"},
    "long": {"integer"},
    "integer": {"integer"},
    "short": {"integer"},
    "byte": {"integer"},
    "unsigned_long": {"integer"},
    "float": {"integer", "float"},
    "double": {"integer", "float"},
    "half_float": {"integer", "float"},
    "scaled_float": {"integer", "float"},
    "boolean": {"boolean"},
    "object": {"object"},
    "flattened": {"object"},
    "nested": {"object"},
}

# Fast and loose, so that orders flow at 60x pace: wall-clock buckets of 20 ms.
LIVE_STRATEGY = {
    **STRATEGY,
    "sample_ms": 20,
    "stop_loss_bps": 3.0,
    "take_profit_bps": 5.0,
    "max_hold_ms": 2000,
}


def _toml(doc: dict[str, Any]) -> str:
    """``doc`` as a config file (JSON scalars and arrays are TOML); ``events`` as tables."""
    lines = []
    for section, table in doc.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if key == "events":
                continue
            lines.append(f"{key} = {json.dumps(value)}")
        for event in table.get("events", []):
            lines.append(f"[[{section}.events]]")
            lines.extend(f"{k} = {json.dumps(v)}" for k, v in event.items())
    return "\n".join(lines) + "\n"


def _cli_replay(tmp: Path, log_path: Path) -> None:
    """The CLI replays the sample: ML filter, hardware actor, control socket, faults."""
    doc = {
        "data": {"paths": [str(SAMPLE)]},
        "journal": {"dir": str(tmp / "runs")},
        "logging": {"path": str(log_path)},
        "strategy": STRATEGY,
        "model": {"enabled": True, "paths": MODELS, "retrain_every_events": 20000},
        "control": {"socket": str(tmp / "ctl.sock")},
        "faults": {
            "events": [
                {"at_ms": 20000, "kind": "reconnect", "symbol": "BTCUSDT", "count": 6},
                {"at_ms": 40000, "kind": "reject", "symbol": "BTCUSDT", "count": 4},
                {"at_ms": 60000, "kind": "ban", "duration_ms": 5000},
                {"at_ms": 90000, "kind": "reconciliation_failed"},
            ]
        },
    }
    (tmp / "replay.toml").write_text(_toml(doc))
    out = subprocess.run(
        [sys.executable, "-m", "engine", "--config", str(tmp / "replay.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def _cli_cannot_start(tmp: Path, log_path: Path) -> None:
    """The CLI refuses to start: a capture file that is not there, a model that is not there."""
    base = {
        "journal": {"dir": str(tmp / "runs")},
        "logging": {"path": str(log_path)},
        "hardware": {"enabled": False},  # in process: leave pytest's CPU affinity alone
    }
    cases = {
        "no_data.toml": {**base, "data": {"paths": [str(tmp / "missing.gz")]}},
        "no_model.toml": {
            **base,
            "data": {"paths": [str(SAMPLE)]},
            "model": {"enabled": True, "paths": [str(tmp / "missing.onnx")]},
        },
    }
    for name, doc in cases.items():
        (tmp / name).write_text(_toml(doc))
        assert cli_main(["--config", str(tmp / name)]) == 2


def _replay_crash(tmp: Path, log_path: Path) -> None:
    """The journal refuses a write mid-run: the supervisor logs the crash and raises."""
    journal_path = tmp / "crash" / "journal.sqlite"
    Journal(journal_path).close()
    with sqlite3.connect(journal_path) as db:
        db.execute(
            "CREATE TRIGGER disk_full BEFORE INSERT ON journal"
            " WHEN (SELECT count(*) FROM journal) >= 40"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    config = config_from_dict(
        {
            "data": {"paths": [str(SAMPLE)]},
            "journal": {"dir": str(tmp / "crash")},
            "strategy": {**STRATEGY, "stop_loss_bps": 2.0, "take_profit_bps": 2.0},
            "hardware": {"enabled": False},
        },
        source="<test>",
        base_dir=str(tmp),
    )
    log, handle = make_logger(log_path)
    try:
        with pytest.raises(ActorFailedError):
            trio.run(lambda: run_replay(config, log=log, journal_path=journal_path))
    finally:
        assert handle is not None
        handle.close()


async def _place_foreign_order(server: StreamServer, ws_port: int, rest_port: int) -> None:
    """A resting order that someone else placed: the engine's reconciliation cancels it."""
    async with trio_websocket.open_websocket_url(
        f"ws://127.0.0.1:{ws_port}/ws/btcusdt@bookTicker"
    ) as ws:
        while not server.book_ready("BTCUSDT"):  # a market-data client starts the playback
            await ws.get_message()
    best_bid = next(iter(server.levels("BTCUSDT", "bids")))[0]
    query = urllib.parse.urlencode(
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.010",
            "price": str((best_bid * Decimal("0.98")).quantize(Decimal("0.1"))),
            "newClientOrderId": "manual-1",
            "timestamp": str(server.exchange_ms()),
        }
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest_port}") as http:
        reply = await http.post(
            "/fapi/v1/order",
            content=query + "&signature=" + sign(SECRET, query),
            headers={"X-MBX-APIKEY": KEY, "content-type": "application/x-www-form-urlencoded"},
        )
    assert reply.status_code == 200, reply.text


def _live_run(tmp: Path, log_path: Path) -> None:
    """Live mode against the loopback exchange, with faults on both sides."""
    log, handle = make_logger(log_path)
    server = StreamServer(
        load_recording([SAMPLE]),
        ServerSettings(
            speed=60.0,  # the 180 s capture in 3 s
            # Wall-clock seconds after playback starts: well after the engine connected.
            faults=(Fault(kind="gap", at_s=2.0), Fault(kind="garbage", at_s=2.5)),
        ),
        log.bind(actor="sim-exchange"),
        api_keys={KEY: SECRET},
    )

    async def run() -> None:
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
                await _place_foreign_order(server, ws_port, rest_port)
                # The engine's first order is refused, its second one's answer is lost.
                server.arm_fault(RequestFault.parse("-2019"))
                server.arm_fault(RequestFault.parse("503-lost"))
                local = {"ws_url": f"ws://127.0.0.1:{ws_port}"}
                local["rest_url"] = f"http://127.0.0.1:{rest_port}"
                config = config_from_dict(
                    {
                        "engine": {"mode": "live", "live": True},
                        "data": {"symbols": ["BTCUSDT"]},
                        "journal": {"dir": str(tmp / "live")},
                        "feeds": {
                            **local,
                            "streams": ["bookTicker", "trade", "depth@0ms"],
                            "backoff_initial_ms": 50,
                            "backoff_max_ms": 500,
                        },
                        "strategy": LIVE_STRATEGY,
                        "venue": {
                            "kind": "binance",
                            **local,
                            "api_key_env": "ECS_TEST_API_KEY",
                            "api_secret_env": "ECS_TEST_API_SECRET",
                            "unknown_grace_ms": 500,
                        },
                        "hardware": {"enabled": False},
                    },
                    source="<test>",
                    base_dir=str(tmp),
                )
                stop = trio.Event()

                async def stop_when_played() -> None:
                    # The lines this module checks are written long before the capture
                    # ends; the stop drains what is still in flight (no settle guess).
                    await server.finished.wait()
                    stop.set()

                nursery.start_soon(stop_when_played)
                await run_live(config, log=log, stop=stop)
                nursery.cancel_scope.cancel()

    with pytest.MonkeyPatch.context() as env:
        env.setenv("ECS_TEST_API_KEY", KEY)
        env.setenv("ECS_TEST_API_SECRET", SECRET)
        try:
            trio.run(run)
        finally:
            assert handle is not None
            handle.close()


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every line the runs of the module docstring wrote, parsed."""
    tmp = tmp_path_factory.mktemp("ecs")
    log_path = tmp / "engine.jsonl"
    _cli_replay(tmp, log_path)
    _cli_cannot_start(tmp, log_path)
    _replay_crash(tmp, log_path)
    _live_run(tmp, log_path)
    out = []
    for n, text in enumerate(log_path.read_text().splitlines(), 1):
        record = json.loads(text)
        assert isinstance(record, dict), f"line {n} is not a JSON object"
        out.append(record)
    return out


@pytest.fixture(scope="module")
def ecs() -> dict[str, dict[str, Any]]:
    """Elastic's field list: flat name -> its definition (type, normalize...)."""
    if not ECS_FLAT.exists():
        pytest.skip("../shared/ecs/ecs_flat.yml is not beside the repository")
    with ECS_FLAT.open() as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text())


# -- flattening, as Elasticsearch reads a document ---------------------------------------


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    raise AssertionError(f"unexpected JSON value {value!r}")


def leaves(doc: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str, bool]]:
    """(dotted path, JSON type, in an array) of every value; dotted keys split as Elasticsearch
    does, arrays unrolled (an array of objects is objects at the same path), nulls skipped."""
    for key, value in doc.items():
        path = f"{prefix}{key}"
        parts = key.split(".")
        for n in range(1, len(parts)):  # "error.stack_trace": "error" is an object
            yield prefix + ".".join(parts[:n]), "object", False
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is None:
                continue
            if isinstance(item, list):
                raise AssertionError(f"{path}: nested arrays")
            if isinstance(item, dict):
                yield path, "object", isinstance(value, list)
                yield from leaves(item, path + ".")
            else:
                yield path, _json_type(item), isinstance(value, list)


def field_types(lines: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Dotted path -> the JSON types seen there, over every line."""
    seen: dict[str, set[str]] = collections.defaultdict(set)
    for record in lines:
        for path, kind, _array in leaves(record):
            seen[path].add(kind)
    return seen


def _numbers(kinds: set[str]) -> set[str]:
    return {"number" if k in ("integer", "float") else k for k in kinds}


# -- the lines -----------------------------------------------------------------------


def test_the_runs_wrote_the_lines_that_matter(lines):
    # The fixture did exercise what this module claims: each is a real engine path. (The
    # feed's own fault lines, "book gap; resyncing" and "malformed message", need the feed
    # connected when the wall-clock faults fire: checked like every line, not required.)
    messages = collections.Counter(r["message"] for r in lines)
    for message in (
        "replay starting",
        "model filter loaded",
        "entry scored",
        "hardware settings applied",
        "control socket listening",
        "fault injected",
        "portfolio limits",
        "cannot start",
        "actor failed; trading halted",
        "live starting",
        "binance venue ready",
        "reconciliation cancelled an open order",
        "reconciled with the exchange",
        "feed connected",
        "fault: depth update skipped",
        "sim exchange listening",
    ):
        assert messages[message], f"no {message!r} line"
    assert messages["cannot start"] >= 2


def test_every_line_starts_with_the_ecs_logging_header(lines):
    for record in lines:
        assert tuple(record)[:4] == HEADER, record
        assert record["ecs.version"] == ECS_VERSION
        assert record["log.level"] in ("debug", "info", "warning", "error")
        assert record["service"]["name"] == "trireme"
        assert record["event"]["dataset"].startswith("trireme.")  # .engine, .sim_exchange.access
        assert isinstance(record["process"]["pid"], int)


def test_the_ecs_field_sets_are_those_of_the_field_list(ecs):
    # A dotted key under one of these is logged as an ECS field, not under trireme.
    assert {name.split(".")[0] for name in ecs if "." in name} == ECS_FIELD_SETS


def test_ecs_version_is_a_release_no_newer_than_the_field_list(ecs):
    # ecs_flat.yml carries no version; ../shared/ecs/SOURCES.md names its commit (9.5.0-dev).
    sources = (ECS_FLAT.parent / "SOURCES.md").read_text()
    major, minor, _patch = (int(x) for x in ECS_VERSION.split("."))
    assert (major, minor) >= (9, 0)
    assert f"{major}.{minor + 1}.0-dev" in sources or f"{major}.{minor}.0" in sources


def test_every_field_is_ecs_with_a_compatible_type_or_custom(lines, ecs):
    wrong = []
    for path, kinds in field_types(lines).items():
        if path == NAMESPACE or path.startswith(NAMESPACE + "."):
            continue
        spec = ecs.get(path)
        if spec is None:
            # A parent object of ECS fields (error, event, log...) is fine; nothing else is.
            if kinds == {"object"} and any(name.startswith(path + ".") for name in ecs):
                continue
            wrong.append(f"{path}: not an ECS field and not under {NAMESPACE}.")
            continue
        bad = kinds - ACCEPTS[spec["type"]]
        if bad:
            wrong.append(f"{path}: ECS type {spec['type']}, seen {sorted(bad)}")
    assert not wrong, "\n".join(wrong)


def test_no_ecs_field_is_an_array_unless_ecs_says_so(lines, ecs):
    for record in lines:
        for path, _kind, array in leaves(record):
            if array and path in ecs:
                assert "array" in ecs[path].get("normalize", []), path


def test_each_field_has_one_type_and_no_path_is_leaf_and_object(lines):
    clashes = {p: k for p, k in field_types(lines).items() if len(_numbers(k)) > 1}
    assert not clashes, clashes


def test_the_crash_line_carries_an_ecs_error_object(lines):
    (crash,) = [r for r in lines if r["message"] == "actor failed; trading halted"]
    error = crash["error"]
    assert set(error) == {"type", "message", "stack_trace"}
    assert error["type"] == "engine._errors.JournalError"
    assert "database or disk is full" in error["message"]
    assert error["stack_trace"].startswith("Traceback") or "Exception Group" in error["stack_trace"]
    assert "JournalError" in error["stack_trace"]
    assert crash["log.level"] == "error"
    for record in lines:  # never a plain string beside error.* (the old crash line)
        assert isinstance(record.get("error", {}), dict)


def test_event_duration_is_nanoseconds(lines):
    solves = [r for r in lines if r["message"] == "portfolio limits"]
    assert solves
    for record in lines:
        duration = record["event"].get("duration")
        assert duration is None or (isinstance(duration, int) and duration >= 0)
    acks = [r for r in lines if "duration" in r["event"] and r["message"] != "portfolio limits"]
    # An order acknowledged over 127.0.0.1 takes well over a microsecond and under a minute.
    assert acks and all(1_000 < r["event"]["duration"] < 60_000_000_000 for r in acks)


def test_no_secret_reaches_the_log(lines):
    text = json.dumps(lines)
    assert KEY not in text and SECRET not in text


# -- tools/ops -----------------------------------------------------------------------


def _mapping_types(properties: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted path -> mapping type of an index template's ``properties``."""
    out = {}
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            out[path] = spec.get("type", "object")
            out.update(_mapping_types(spec["properties"], path + "."))
        else:
            out[path] = spec["type"]
    return out


def _dynamic_types(template: dict[str, Any]) -> dict[str, str]:
    """``path_match`` -> the mapping type of the template's dynamic templates."""
    out = {}
    for entry in template["template"]["mappings"].get("dynamic_templates", []):
        ((_name, rule),) = entry.items()
        out[rule["path_match"]] = rule["mapping"]["type"]
    return out


def _template_type(template: dict[str, Any], path: str) -> str | None:
    """The mapping type the template gives ``path``, or None when it does not map it."""
    mapped = _mapping_types(template["template"]["mappings"]["properties"])
    if path in mapped:
        return mapped[path]
    for pattern, kind in _dynamic_types(template).items():
        parent = pattern.removesuffix("*")
        if path.startswith(parent) and "." not in path.removeprefix(parent):
            return kind
    return None


def test_the_index_template_maps_every_field_seen_with_a_type_that_accepts_it(lines, template):
    assert template["index_patterns"] == ["logs-trireme-*"]
    assert (
        "data_stream" in template and "@timestamp" in template["template"]["mappings"]["properties"]
    )
    wrong = []
    for path, kinds in field_types(lines).items():
        kind = _template_type(template, path)
        if kind is None:
            wrong.append(f"{path}: not in the template")
        elif kinds - ACCEPTS[kind]:
            wrong.append(f"{path}: template type {kind}, seen {sorted(kinds)}")
    assert not wrong, "\n".join(wrong)


def test_the_index_template_types_ecs_fields_as_ecs_does(template, ecs):
    for path, kind in _mapping_types(template["template"]["mappings"]["properties"]).items():
        if path.split(".")[0] == NAMESPACE:
            continue
        if path in ecs:
            assert kind == ecs[path]["type"], path
        else:
            assert kind == "object" and any(n.startswith(path + ".") for n in ecs), path


def _log_call_keys() -> dict[str, list[str]]:
    """Keyword names of every structlog call in the engine's code -> where they are."""
    keys: dict[str, list[str]] = collections.defaultdict(list)
    methods = {"debug", "info", "warning", "error", "exception", "critical", "bind"}
    for package in ("engine", "hardware", "fsm", "tools"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                if not (
                    (isinstance(func, ast.Name) and func.id == "log")  # log = self._log.info
                    or (
                        isinstance(func, ast.Attribute)
                        and func.attr in methods
                        and ast.unparse(func.value).lower().endswith("log")
                    )
                ):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                for kw in node.keywords:
                    if kw.arg is not None:
                        keys[kw.arg].append(where)
                    elif isinstance(kw.value, ast.Dict):
                        for k in kw.value.keys:
                            assert isinstance(k, ast.Constant), f"{where}: computed log key"
                            keys[k.value].append(where)
                    # ``**fields`` of a variable: only the runs above can see its keys.
    return keys


def test_the_index_template_maps_every_key_any_log_call_passes(template):
    # Also the calls no run above reaches (rare venue errors): no field is left to
    # Elasticsearch's dynamic mapping.
    missing = {
        key: where
        for key, where in _log_call_keys().items()
        if key not in ECS_KEYS
        and key not in ("error", "exc_info")
        and key.partition(".")[0] not in ECS_FIELD_SETS
        and _template_type(template, f"{NAMESPACE}.{key.removeprefix(NAMESPACE + '.')}") is None
    }
    assert not missing, missing


def test_the_filebeat_input_reads_the_log_as_ecs_ndjson():
    doc = yaml.safe_load(FILEBEAT.read_text())
    (entry,) = doc["filebeat.inputs"]
    assert entry["type"] == "filestream" and entry["id"]
    assert any(p.endswith("trireme.jsonl") for p in entry["paths"])
    (parser,) = [p["ndjson"] for p in entry["parsers"] if "ndjson" in p]
    assert parser["target"] == ""  # fields at the root, where ECS wants them
    assert parser["expand_keys"] and parser["overwrite_keys"] and parser["add_error_key"]
    assert doc["output.elasticsearch"]["index"] == "logs-trireme-default"
    assert os.path.basename(str(TEMPLATE)) in FILEBEAT.read_text()

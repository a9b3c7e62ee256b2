"""Prometheus metrics: a real Prometheus server scrapes a running paper engine.

Debian's ``prometheus`` package provides the server (``.ci/run`` installs it). Without
the binary the scrape test is skipped with the reason, except in CI (``CI=true``),
where its absence fails. The Grafana dashboard is checked against the exposition.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from test_http_api import paper_engine, recording  # noqa: F401 (a fixture)

from engine._control import ControlState
from engine.ops import exposition, metric_names, metrics_registry

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "tools/ops/grafana-dashboard.json"


@pytest.fixture
def prometheus_binary() -> str:
    # A synchronous fixture: skip and fail outside Trio, with their reason shown.
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the prometheus binary is missing in CI: .ci/run installs Debian's package")
        pytest.skip("no prometheus binary (apt-get install prometheus); CI=true makes this fail")
    return found


def free_port() -> int:
    # Prometheus cannot report a port it chose itself: pick one the kernel just gave out.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def query(client: httpx.AsyncClient, base: str, promql: str) -> list[dict]:
    answer = await client.get(f"{base}/api/v1/query", params={"query": promql})
    if answer.status_code != 200:
        return []
    body = answer.json()
    return body["data"]["result"] if body.get("status") == "success" else []


async def test_prometheus_scrapes_a_paper_engine_and_answers_promql(
    tmp_path,
    recording,  # noqa: F811
    prometheus_binary,
):
    binary = prometheus_binary
    with trio.fail_after(180):
        async with (
            paper_engine(tmp_path, recording, metrics={"enabled": True, "port": 0}) as engine,
            httpx.AsyncClient(timeout=10) as client,
        ):
            host, port = engine.addresses.metrics
            # Our own view first: the exposition parses and carries the engine's figures.
            while True:
                text = (await client.get(f"http://{host}:{port}/metrics")).text
                families = {f.name: f for f in text_string_to_metric_families(text)}
                messages = families["trireme_feed_messages"].samples
                if messages and messages[0].value > 0:
                    break
                await trio.sleep(0.05)  # polling for the condition
            assert families["trireme_info"].samples[0].labels["mode"] == "paper"
            states = {
                s.labels["state"]: s.value
                for s in families["trireme_symbol_trading_state"].samples
                if s.labels["symbol"] == "BTCUSDT"
            }
            assert states == {"ACTIVE": 1.0, "REDUCING": 0.0, "HALTED": 0.0}
            channels = {
                (s.labels["channel"], s.labels["symbol"])
                for s in families["trireme_channel_capacity"].samples
            }
            assert ("market", "BTCUSDT") in channels and ("orders", "") in channels
            assert families["trireme_rate_limit_used"].samples  # the feed's snapshot weight

            web = free_port()
            config = tmp_path / "prometheus.yml"
            config.write_text(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: trireme\n"
                f"    static_configs:\n      - targets: ['{host}:{port}']\n"
            )
            log_path = tmp_path / "prometheus.log"
            command = [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ]
            with log_path.open("wb") as log:
                server = await trio.lowlevel.open_process(command, stdout=log, stderr=log)
            base = f"http://127.0.0.1:{web}"
            try:
                # Wait until Prometheus has scraped us and answers PromQL with our series.
                while True:
                    if server.poll() is not None:
                        tail = log_path.read_text(errors="replace")[-2000:]
                        pytest.fail(f"prometheus exited with {server.returncode}:\n{tail}")
                    try:
                        result = await query(
                            client, base, 'trireme_feed_messages_total{job="trireme"} > 0'
                        )
                    except httpx.TransportError:
                        result = []  # not listening yet
                    if result:
                        break
                    await trio.sleep(0.2)  # polling for the condition
                assert float(result[0]["value"][1]) > 0
                up = await query(client, base, 'up{job="trireme"}')
                assert up and up[0]["value"][1] == "1"
                state = await query(
                    client, base, 'trireme_symbol_trading_state{symbol="BTCUSDT",state="ACTIVE"}'
                )
                assert state and state[0]["value"][1] == "1"
            finally:
                server.terminate()
                with trio.CancelScope(shield=True):
                    await server.wait()


def dashboard_expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return exprs


_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip


def series_names(expr: str) -> set[str]:
    """The metric names an expression reads (label matchers, ranges and strings removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    # Not after a digit or a dot: "5m" in a duration, "1e3" in a number.
    for match in re.finditer(r"(?<![0-9A-Za-z_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _PROMQL_WORDS or word.startswith("$"):
            continue
        if text[max(0, match.start() - 1)] == "$":
            continue  # a Grafana variable ($__rate_interval)
        names.add(word)
    return names


def test_the_grafana_dashboard_reads_only_series_we_expose():
    exprs = dashboard_expressions()
    assert len(exprs) >= 15
    ours = metric_names()
    seen: set[str] = set()
    for expr in exprs:
        names = series_names(expr)
        assert names, f"no metric in {expr!r}"
        missing = names - ours
        assert not missing, f"{expr!r} reads {sorted(missing)}, not in our exposition"
        seen |= names
    # The dashboard covers every area of the issue.
    for needed in (
        "trireme_feed_messages_total",
        "trireme_feed_reconnects_total",
        "trireme_feed_latency_seconds",
        "trireme_orders_denied_total",
        "trireme_fills_total",
        "trireme_position_qty",
        "trireme_pnl_net",
        "trireme_drawdown",
        "trireme_trading_state",
        "trireme_symbol_trading_state",
        "trireme_rate_limit_used",
        "trireme_channel_buffered",
        "trireme_event_loop_lag_seconds",
        "trireme_model_decisions_total",
    ):
        assert needed in seen, f"the dashboard has no panel on {needed}"


def test_the_checker_sees_names_it_must_refuse():
    assert series_names('sum by (symbol) (rate(trireme_fills_total{symbol=~"$symbol"}[5m]))') == {
        "trireme_fills_total"
    }
    assert series_names("trireme_equity - trireme_no_such_thing offset 5m") == {
        "trireme_equity",
        "trireme_no_such_thing",
    }
    assert "trireme_no_such_thing" not in metric_names()


def test_a_detached_engine_exposes_every_family_without_samples():
    text = exposition(metrics_registry(ControlState())).decode()
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} >= {"trireme_info", "trireme_feed_messages"}
    # Only info and uptime have samples before the pipeline is attached.
    with_samples = {f.name for f in families if f.samples and f.name.startswith("trireme_")}
    assert with_samples == {"trireme_info", "trireme_uptime_seconds"}

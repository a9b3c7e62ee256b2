"""The HTTP status and control API, over real HTTP (httpx) against a running paper engine.

The paper engine trades the bundled BTCUSDT sample served by the loopback exchange,
in the same Trio run, as in ``test_live.py``; :func:`paper_engine` is shared with
``test_metrics.py``.
"""

from __future__ import annotations

import contextlib
import http
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from engine import config_from_dict
from engine._control import ControlState
from engine._logging import make_logger
from engine._streaming import run_paper
from engine.messages import ControlCommand
from engine.ops import OpsAddresses, serve_ops
from engine.testing import quiet_logger
from engine.venues.sim._recorded import load_recording
from engine.venues.sim._stream_server import ServerSettings, StreamServer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
SPEED = 20.0
QUIET = quiet_logger()
TOKEN_ENV = "TRIREME_TEST_API_TOKEN"
TOKEN = "s3cret-token-for-the-test-only-7f1c"


@pytest.fixture(scope="module")
def recording():
    return load_recording([SAMPLE])


@attrs.define
class PaperEngine:
    """A paper engine running against the loopback exchange, with its ops endpoints."""

    addresses: OpsAddresses
    state: ControlState
    stop: trio.Event
    done: trio.Event
    report: Any = None

    def url(self, which: str, path: str) -> str:
        host, port = getattr(self.addresses, which)
        return f"http://{host}:{port}{path}"


def ops_config(tmp_path: Path, ws_port: int, rest_port: int, **sections: Any):
    return config_from_dict(
        {
            "engine": {"mode": "paper"},
            "data": {"symbols": ["BTCUSDT"]},
            "journal": {"dir": str(tmp_path / "runs")},
            "feeds": {
                "ws_url": f"ws://127.0.0.1:{ws_port}",
                "rest_url": f"http://127.0.0.1:{rest_port}",
                "streams": ["bookTicker", "trade", "depth@0ms"],
                "stale_ms": 60_000,
            },
            "strategy": {"sample_ms": 20, "fast": 3, "slow": 8, "rsi_period": 5},
            "hardware": {"enabled": False},
            **sections,
        },
        source="<test>",
        base_dir=str(tmp_path),
    )


@contextlib.asynccontextmanager
async def paper_engine(
    tmp_path: Path, recording: Any, log: Any = QUIET, **sections: Any
) -> AsyncIterator[PaperEngine]:
    """Run the loopback exchange, ``serve_ops`` and ``run_paper`` until the block ends."""
    server = StreamServer(recording, ServerSettings(speed=SPEED), QUIET)
    async with trio.open_nursery() as nursery:
        ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
        config = ops_config(tmp_path, ws_port, rest_port, **sections)
        state = ControlState()
        send, receive = trio.open_memory_channel[ControlCommand](16)
        addresses = await nursery.start(serve_ops, config, state, send, log)
        engine = PaperEngine(addresses=addresses, state=state, stop=trio.Event(), done=trio.Event())

        async def run() -> None:
            engine.report = await run_paper(
                config, log=log, stop=engine.stop, control=receive, control_state=state
            )
            engine.done.set()

        nursery.start_soon(run)
        yield engine
        engine.stop.set()
        await engine.done.wait()
        nursery.cancel_scope.cancel()


async def wait_for(
    client: httpx.AsyncClient, url: str, condition: Callable[[Any], bool]
) -> dict[str, Any]:
    """GET ``url`` until its JSON satisfies ``condition`` (the caller's fail_after bounds it)."""
    while True:
        answer = await client.get(url)
        if answer.status_code == 200:
            document = answer.json()
            if condition(document):
                return document
        await trio.sleep(0.05)  # a polling interval: the condition, not the time, ends the wait


def api_sections(**api: Any) -> dict[str, Any]:
    return {"api": {"enabled": True, "port": 0, "token_env": TOKEN_ENV, **api}}


async def test_status_and_commands_over_http_against_a_paper_engine(
    tmp_path, recording, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    log_path = tmp_path / "engine.jsonl"
    log, log_file = make_logger(log_path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with trio.fail_after(120):
            async with (
                paper_engine(tmp_path, recording, log=log, **api_sections()) as engine,
                httpx.AsyncClient(timeout=10) as client,
            ):
                status_url = engine.url("api", "/api/v1/status")
                status = await wait_for(
                    client,
                    status_url,
                    lambda s: s.get("symbols", {}).get("BTCUSDT", {}).get("feed", {}).get("trades"),
                )
                assert status["mode"] == "paper" and status["trading_state"] == "ACTIVE"
                btc = status["symbols"]["BTCUSDT"]
                assert btc["trading_state"] == "ACTIVE" and btc["triggers"] == {}
                assert set(btc["position"]) == {"qty", "avg_price", "mark", "notional"}
                assert set(btc["pnl"]) >= {"realized", "fees", "unrealized", "net"}
                assert status["feed"]["connects"] >= 1 and status["feed"]["messages"] > 0
                assert isinstance(status["open_orders"], list)
                assert status["uptime_s"] > 0 and "metrics" in status

                # Commands: no token, a wrong one, a wrong scheme -> 401; nothing queued.
                halt = engine.url("api", "/api/v1/halt")
                for headers in (
                    {},
                    {"Authorization": "Bearer not-the-token"},
                    {"Authorization": f"Basic {TOKEN}"},
                ):
                    refused = await client.post(halt, headers=headers)
                    assert refused.status_code == 401
                    assert refused.headers["www-authenticate"] == "Bearer"
                    assert refused.json()["ok"] is False
                bad = await client.post(halt, headers=auth, content=b"[1, 2]")
                assert bad.status_code == 400

                answer = await client.post(halt, headers=auth, json={"reason": "drill"})
                assert answer.status_code == 202
                assert answer.json() == {"ok": True, "queued": "halt", "reason": "drill"}
                status = await wait_for(client, status_url, lambda s: s["active"])
                assert status["active"] == {"manual": {"action": "halt", "reason": "drill"}}
                await wait_for(client, status_url, lambda s: s["trading_state"] == "HALTED")

                answer = await client.post(engine.url("api", "/api/v1/resume"), headers=auth)
                assert answer.status_code == 202
                await wait_for(client, status_url, lambda s: s["trading_state"] == "ACTIVE")

                answer = await client.post(engine.url("api", "/api/v1/flatten"), headers=auth)
                assert answer.status_code == 202
                assert answer.json()["queued"] == "flatten" and "note" in answer.json()
                status = await wait_for(
                    client, status_url, lambda s: s["trading_state"] == "REDUCING"
                )
                assert status["active"]["flatten"]["reason"] == "operator (http)"

                # The wrong method and an unknown path.
                assert (await client.get(halt)).status_code == 405
                assert (await client.get(engine.url("api", "/api/v1/nope"))).status_code == 404
            # The Unix socket's status is the same document (one status function).
            socket_view = {"ok": True, **engine.state.snapshot()}
            assert set(socket_view) - {"ok"} == set(status)
            assert engine.report.trading_state == "REDUCING"
    finally:
        if log_file is not None:
            log_file.close()
    text = log_path.read_text()
    assert "api command refused" in text  # the refusals were logged...
    assert TOKEN not in text  # ...and the token never was


async def test_metrics_and_api_share_one_listener_on_the_same_address(
    tmp_path, recording, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with trio.fail_after(30):
        send, _receive = trio.open_memory_channel[ControlCommand](1)
        config = ops_config(tmp_path, 1, 1, metrics={"enabled": True, "port": 0}, **api_sections())
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(serve_ops, config, ControlState(), send, QUIET)
            assert addresses.metrics != addresses.api  # port 0 twice: two listeners
            nursery.cancel_scope.cancel()
        # A fixed port given to both: one listener answers both paths.
        probe = trio.socket.socket()
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        config = ops_config(
            tmp_path,
            1,
            1,
            metrics={"enabled": True, "port": port},
            **api_sections(port=port),
        )
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            addresses = await nursery.start(serve_ops, config, ControlState(), send, QUIET)
            assert addresses.metrics == addresses.api == ("127.0.0.1", port)
            base = f"http://127.0.0.1:{port}"
            status = (await client.get(f"{base}/api/v1/status")).json()
            assert status["trading_state"] == "starting"
            metrics = await client.get(f"{base}/metrics")
            assert metrics.headers["content-type"].startswith("text/plain")
            assert 'trireme_info{mode="starting"' in metrics.text
            nursery.cancel_scope.cancel()


async def test_an_address_in_use_is_a_config_error_naming_the_key(tmp_path, monkeypatch):
    from engine._errors import ConfigError

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with trio.fail_after(30):
        send, _receive = trio.open_memory_channel[ControlCommand](1)
        taken = trio.socket.socket()
        await taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = ops_config(tmp_path, 1, 1, **api_sections(port=port))
        with pytest.raises(ConfigError, match=rf"api\.port: cannot listen on 127\.0\.0\.1:{port}"):
            await serve_ops(config, ControlState(), send, QUIET)
        taken.close()


def test_a_missing_token_variable_exits_2_naming_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "--set",
            "api.enabled=true",
            "--set",
            f'api.token_env="{TOKEN_ENV}"',
            "--set",
            f'logging.path="{tmp_path / "engine.jsonl"}"',
            "--set",
            f'journal.dir="{tmp_path / "runs"}"',
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "api.token_env" in lines[0] and TOKEN_ENV in lines[0]
    assert not list((tmp_path / "runs").glob("*.sqlite"))  # refused before anything ran


async def test_malformed_and_oversized_requests_get_an_answer_and_a_closed_connection(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    send, receive = trio.open_memory_channel[ControlCommand](1)
    config = ops_config(tmp_path, 1, 1, **api_sections())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(serve_ops, config, ControlState(), send, QUIET)

            async def exchange(data: bytes) -> bytes:
                stream = await trio.open_tcp_stream(*addresses.api)
                async with stream:
                    await stream.send_all(data)
                    answer = b""
                    while chunk := await stream.receive_some(65536):
                        answer += chunk  # the server closes the connection
                    return answer

            garbage = await exchange(b"NOT HTTP AT ALL\r\n\r\n")
            assert garbage.startswith(b"HTTP/1.1 400 Bad Request\r\n")
            huge = b"x" * (70 * 1024)
            oversized = await exchange(
                b"POST /api/v1/halt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + TOKEN.encode()
                + b"\r\nContent-Length: "
                + str(len(huge)).encode()
                + b"\r\n\r\n"
                + huge
            )
            phrase = http.HTTPStatus(413).phrase.encode()  # as this Python names it
            assert oversized.startswith(b"HTTP/1.1 413 " + phrase + b"\r\n")
            with pytest.raises(trio.WouldBlock):
                receive.receive_nowait()  # nothing was queued
            nursery.cancel_scope.cancel()

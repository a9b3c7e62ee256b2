"""One rate-limit budget and a patient start-up, against the loopback exchange.

The loopback exchange (in this Trio run, real HTTP over 127.0.0.1) enforces
Binance's rules: a request sent before a 429's ``Retry-After`` is a strike, and
three strikes ban the IP (418). Its fault injection arms a 429 or 418 on the
engine's first requests. The tests wait for what the engine logs it did, never
for a time.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
from _loopback import KEY, SECRET, loopback_doc

from engine import config_from_dict
from engine._streaming import run_live, run_paper
from engine.testing import quiet_logger
from engine.venues.sim._exchange_faults import RequestFault
from engine.venues.sim._recorded import Recording, load_recording
from engine.venues.sim._stream_server import ServerSettings, StreamServer, TradingSettings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
QUIET = quiet_logger()


@pytest.fixture(scope="module")
def recording() -> Recording:
    return load_recording([SAMPLE])


class LogWatch:
    """A structlog processor that keeps the engine's log events and wakes waiters."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self._logged = trio.Event()

    def __call__(self, _logger: Any, _method: str, event_dict: dict[str, Any]) -> Any:
        self.events.append(dict(event_dict))
        self.counts[str(event_dict.get("event"))] += 1
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass  # a worker thread (the portfolio solver): the next Trio log wakes us
        else:
            self._logged.set()
        raise structlog.DropEvent

    async def wait(self, message: str) -> None:
        while not self.counts[message]:
            if self._logged.is_set():
                self._logged = trio.Event()
            await self._logged.wait()

    def logger(self) -> Any:
        return structlog.wrap_logger(
            structlog.ReturnLogger(),
            processors=[self],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        )


def doc(tmp_path: Path, ws_port: int, rest_port: int, mode: str) -> dict[str, Any]:
    out = loopback_doc(tmp_path, ws_port, rest_port, mode)
    out["engine"]["live"] = mode == "live"
    out["hardware"] = {"enabled": False}
    if mode == "live":
        out["venue"] = {
            "kind": "binance",
            "rest_url": f"http://127.0.0.1:{rest_port}",
            "ws_url": f"ws://127.0.0.1:{ws_port}",
            "api_key_env": "SIM_API_KEY",
            "api_secret_env": "SIM_API_SECRET",
        }
    return out


async def run_until(
    tmp_path: Path, recording: Recording, faults: tuple[str, ...], mode: str, message: str
) -> tuple[LogWatch, StreamServer]:
    """Run the engine against the loopback exchange until it logs ``message``."""
    server = StreamServer(
        recording,
        ServerSettings(speed=20.0),
        QUIET,
        trading=TradingSettings(faults=tuple(RequestFault.parse(f) for f in faults)),
        api_keys={KEY: SECRET},
    )
    watch = LogWatch()
    # Old code retried into a ban and never got there: bounded, it fails instead.
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
            config = config_from_dict(
                doc(tmp_path, ws_port, rest_port, mode), source="<test>", base_dir=str(tmp_path)
            )
            stop = trio.Event()

            async def stop_when_logged() -> None:
                await watch.wait(message)
                stop.set()

            nursery.start_soon(stop_when_logged)
            runner = run_live if mode == "live" else run_paper
            await runner(config, log=watch.logger(), stop=stop)
            nursery.cancel_scope.cancel()
    return watch, server


async def test_feed_waits_out_a_429_instead_of_retrying_into_a_ban(tmp_path, recording):
    watch, server = await run_until(
        tmp_path, recording, ("429:5@GET/fapi/v1/depth",), "paper", "book synced"
    )
    assert server.api.faults.fired == [("429", "GET", "/fapi/v1/depth")]
    # Nothing was sent before Retry-After: no strike, no ban.
    assert server.api.limiter.rejected_429 == 1
    assert server.api.limiter.rejected_418 == 0
    (waited,) = [e for e in watch.events if e["event"].startswith("book snapshot rate limited")]
    assert waited["wait_s"] > 4


async def test_live_start_up_waits_out_a_429_and_a_ban(tmp_path, recording, monkeypatch):
    monkeypatch.setenv("SIM_API_KEY", KEY)
    monkeypatch.setenv("SIM_API_SECRET", SECRET)
    faults = ("429:2@GET/fapi/v1/time", "418:3000@GET/fapi/v1/exchangeInfo")
    watch, server = await run_until(tmp_path, recording, faults, "live", "binance venue ready")
    assert [f[0] for f in server.api.faults.fired] == ["429", "418"]
    # One refusal each: no request went out before Retry-After or during the ban.
    assert server.api.limiter.rejected_429 == 1
    assert server.api.limiter.rejected_418 == 1
    waits = [e for e in watch.events if str(e["event"]).startswith("start-up")]
    assert [(e["event"].split(";")[0], e["step"]) for e in waits] == [
        ("start-up rate limited (429)", "server time"),
        ("start-up IP banned (418)", "exchangeInfo"),
    ]


def test_cli_exits_2_in_one_line_when_a_ban_outlasts_the_start_up_deadline(tmp_path):
    env = {
        **os.environ,
        "SIM_API_KEY": KEY,
        "SIM_API_SECRET": SECRET,
        "PYTHONUNBUFFERED": "1",
    }
    exchange = subprocess.Popen(
        [
            sys.executable, "-m", "engine", "sim-exchange", "--data", str(SAMPLE),
            "--port", "0", "--rest-port", "0",
            "--fault", "418:600000@GET/fapi/v1/time",  # banned for 10 minutes
            "--api-key-env", "SIM_API_KEY", "--api-secret-env", "SIM_API_SECRET",
            "--log", str(tmp_path / "exchange.jsonl"),
        ],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert exchange.stdout is not None
        banner = exchange.stdout.readline()
        assert banner.startswith("sim-exchange:"), banner
        ws_url, rest_url = (w for w in banner.split() if w.startswith(("ws://", "http://")))
        config = tmp_path / "live.toml"
        config.write_text(
            f"""
[engine]
mode = "live"
live = true
[data]
symbols = ["BTCUSDT"]
[journal]
dir = "{tmp_path / "runs"}"
[logging]
path = "{tmp_path / "engine.jsonl"}"
[hardware]
enabled = false
[feeds]
ws_url = "{ws_url}"
rest_url = "{rest_url}"
[venue]
kind = "binance"
rest_url = "{rest_url}"
ws_url = "{ws_url}"
api_key_env = "SIM_API_KEY"
api_secret_env = "SIM_API_SECRET"
startup_deadline_s = 30
"""
        )
        engine = subprocess.run(
            [sys.executable, "-m", "engine", "--config", str(config), "--i-understand-live"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        exchange.terminate()
        exchange.wait(timeout=10)
        if exchange.stdout is not None:
            exchange.stdout.close()
    assert engine.returncode == 2, engine.stderr
    (line,) = engine.stderr.splitlines()
    assert line.startswith("error: venue start-up not done within venue.startup_deadline_s = 30 s")
    assert "418" in line and "nothing traded" in line

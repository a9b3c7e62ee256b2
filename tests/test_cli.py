"""The command line, as a user runs it: exit codes, stdout summary, JSON report and logs."""

from __future__ import annotations

import importlib.metadata
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def write_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"""
[data]
paths = ["{ROOT / "data/sample/btcusdt_20240808_180s.gz"}"]
[journal]
dir = "{tmp_path / "runs"}"
[logging]
path = "{tmp_path / "logs/engine.jsonl"}"
{extra}
"""
    )
    return cfg


def test_run_prints_summary_writes_report_and_ecs_logs(tmp_path):
    cfg = write_config(tmp_path)
    out = cli("--config", str(cfg), "--report", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    for word in ("events", "orders", "fills", "round trips", "realized PnL", "fees"):
        assert word in out.stdout
    assert "max drawdown" in out.stdout and "events/s" in out.stdout
    # Nothing but progress lines (shown when a step takes over a second: machine speed).
    assert [x for x in out.stderr.splitlines() if not x.startswith("trireme: ")] == []
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["orders"] > 0 and report["fills"] > 0
    assert len(report["journal_sha256"]) == 64
    assert report["journal_sha256"] in out.stdout
    lines = (tmp_path / "logs/engine.jsonl").read_text().splitlines()
    assert len(lines) > 5
    for line in lines:
        record = json.loads(line)
        for key in ("@timestamp", "log.level", "ecs.version", "message", "service"):
            assert key in record
    transitions = [json.loads(x) for x in lines if '"position transition"' in x]
    assert transitions and all({"symbol", "from", "to"} <= set(t["trireme"]) for t in transitions)
    assert not any(line.startswith("{") for line in out.stdout.splitlines())


def test_three_runs_give_the_same_digest_on_another_capture(tmp_path, btc_capture):
    cfg = write_config(tmp_path)
    digests = set()
    for n in range(3):
        report = tmp_path / f"r{n}.json"
        out = cli("--config", str(cfg), "--data", str(btc_capture), "--report", str(report))
        assert out.returncode == 0, out.stderr
        digests.add(json.loads(report.read_text())["journal_sha256"])
    assert len(digests) == 1


def test_logs_to_stderr_with_dash(tmp_path):
    cfg = (
        write_config(tmp_path)
        .read_text()
        .replace(f'path = "{tmp_path / "logs/engine.jsonl"}"', 'path = "-"')
    )
    (tmp_path / "c2.toml").write_text(cfg)
    out = cli("--config", str(tmp_path / "c2.toml"))
    assert out.returncode == 0
    assert all(json.loads(line)["ecs.version"] for line in out.stderr.splitlines())
    assert "journal_sha256" in out.stdout


@pytest.mark.parametrize(
    ("args", "extra", "expected"),
    [
        (["--bogus"], "", "unrecognized arguments: --bogus"),
        (["--mode", "live"], "", "engine.live: live mode sends real orders: set live = true"),
        (
            ["--mode", "live"],
            "[engine]\nlive = true",
            "engine.mode: live mode sends real orders: pass --i-understand-live",
        ),
        (
            ["--mode", "live", "--i-understand-live"],
            "[engine]\nlive = true",
            'venue.kind: live mode needs kind = "binance"',
        ),
        (
            ["--mode", "live", "--i-understand-live"],
            '[engine]\nlive = true\n[venue]\nkind = "binance"\n'
            'api_key_env = "TRIREME_TEST_UNSET_KEY"\napi_secret_env = "TRIREME_TEST_UNSET_SECRET"',
            "venue.api_key_env: environment variable TRIREME_TEST_UNSET_KEY is not set",
        ),
        (["--mode", "bogus"], "", "invalid choice: 'bogus'"),
        ([], "[risk]\nmax_notional = 5", "risk.max_notional: unknown key"),
        ([], "[strategy]\nfast = -1", "strategy.fast: must be > 0, got -1"),
        (["--data", "/nonexistent/x.gz"], "", "/nonexistent/x.gz: no such market data"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, extra, expected):
    cfg = write_config(tmp_path, extra)
    out = cli("--config", str(cfg), *args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert expected in lines[0]
    if "config" not in expected and extra:
        assert str(cfg) in lines[0]


def test_missing_config_exits_2(tmp_path):
    out = cli("--config", str(tmp_path / "nope.toml"))
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {tmp_path / 'nope.toml'}: config file not found"


# -- refusals before anything runs (issue 11 items 13 and 14) ---------------------------


def _socket_path_too_long(tmp: Path) -> str:
    return str(tmp / ("s" * 120))


@pytest.mark.parametrize(
    ("extra", "args", "expected"),
    [
        (
            "",
            ["--set", 'journal.dir="{tmp}/afile"'],
            "journal.dir: {tmp}/afile is not a directory",
        ),
        (
            "",
            ["--set", 'journal.dir="{tmp}/afile/runs"'],
            "journal.dir: cannot create {tmp}/afile/runs (Not a directory)",
        ),
        ('[control]\nsocket = "{long}"', [], "control.socket: {long}: too long for a Unix socket"),
        (
            '[control]\nsocket = "{tmp}/afile/c.sock"',
            [],
            "control.socket: {tmp}/afile/c.sock: {tmp}/afile is not a directory",
        ),
        (
            '[control]\nsocket = "{tmp}/afile"',
            [],
            "control.socket: {tmp}/afile: exists and is not a socket; refusing to replace it",
        ),
        ("", ["--set", 'logging.path="{tmp}"'], "--set: logging.path: {tmp} is a directory"),
        (
            "[model]\nenabled = true\nweights = [1.0, -1.0, 1.0]",
            [],
            "model.weights: must be >= 0",
        ),
        (
            "[model]\nenabled = true\nweights = [0.0, 0.0, 0.0]",
            [],
            "model.weights: at least one weight must be > 0",
        ),
        ("", ["--report", "{tmp}"], "--report: {tmp} is a directory; expected a file path"),
        ("[risk]\ncapital = inf", [], "risk.capital: expected a finite number, got inf"),
        (
            "[risk]\nmax_notional_per_symbol = inf",
            [],
            "risk.max_notional_per_symbol: expected a finite number, got inf",
        ),
        ("[channels]\nmarket = 0", [], "channels.market: must be >= 1, got 0"),
        (
            "[hardware]\ntrio_cpus = [999999]",
            [],
            "hardware.trio_cpus[0]: CPU 999999 does not exist on this machine",
        ),
    ],
)
def test_unusable_paths_and_values_exit_2_with_one_line(tmp_path, extra, args, expected):
    (tmp_path / "afile").write_text("keep me\n")
    fill = {"tmp": str(tmp_path), "long": _socket_path_too_long(tmp_path)}
    cfg = write_config(tmp_path, extra.format(**fill))
    out = cli("--config", str(cfg), *(a.format(**fill) for a in args))
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert expected.format(**fill) in lines[0]
    assert (tmp_path / "afile").read_text() == "keep me\n"  # never deleted nor replaced
    assert not list(tmp_path.glob("*.tmp"))


def test_actor_crash_names_the_original_error(tmp_path, monkeypatch, capsys):
    # An actor that raises: its output channels close as it unwinds and the actors
    # downstream see EndOfChannel. The user must see the original error, not that.
    from engine._cli import main
    from engine.core import RiskCore

    def broken_check(self, order):
        raise RuntimeError("risk check exploded")

    monkeypatch.setattr(RiskCore, "check", broken_check)
    cfg = write_config(tmp_path)
    assert main(["--config", str(cfg)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "RuntimeError" in err[0] and "risk check exploded" in err[0]
    assert "EndOfChannel" not in err[0] and "ExceptionGroup" not in err[0]
    records = [
        json.loads(line) for line in (tmp_path / "logs/engine.jsonl").read_text().splitlines()
    ]
    failed = [r for r in records if "actor failed" in r["message"]]
    assert len(failed) == 1
    fields = _flatten(failed[0])
    named = [v for k, v in fields.items() if "stack_trace" not in k and isinstance(v, str)]
    assert any("risk check exploded" in v for v in named), fields
    assert not any("EndOfChannel" in v for v in named)


def _flatten(record: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# -- --set and environment overrides (issue 12 item 6, issue 15 item 5) -------------------


def test_set_and_environment_override_the_file_in_that_order(tmp_path, monkeypatch):
    cfg = write_config(tmp_path)
    monkeypatch.setenv("TRIREME__DATA__SYMBOLS", '["ETHUSDT"]')
    out = cli("--config", str(cfg))
    assert out.returncode == 2
    assert "data.symbols: ETHUSDT not found in the data" in out.stderr  # env beat the file
    out = cli("--config", str(cfg), "--set", 'data.symbols=["BTCUSDT"]')
    assert out.returncode == 0, out.stderr  # --set beat the environment
    assert "symbols BTCUSDT" in out.stdout


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({}, ["--set", "risk.capital=inf"], "error: --set: risk.capital: expected a finite"),
        ({}, ["--set", "risk.capital"], "error: --set: risk.capital: expected dotted.key=value"),
        ({}, ["--set", "risk.bogus=1"], "error: --set: risk.bogus: unknown key"),
        ({}, ["--set", "strategy.fast=-3"], "error: --set: strategy.fast: must be > 0, got -3"),
        (
            {"TRIREME__RISK__TRIGGERS__MAX_DRAWDOWN": "-1"},
            [],
            "error: environment variable TRIREME__RISK__TRIGGERS__MAX_DRAWDOWN: "
            "risk.triggers.max_drawdown: must be > 0",
        ),
        (
            {"TRIREME__RISK__CAPITL": "1"},
            [],
            "error: environment variable TRIREME__RISK__CAPITL: risk.capitl: unknown key",
        ),
    ],
)
def test_bad_override_names_the_key_and_where_it_came_from(
    tmp_path, monkeypatch, env, args, expected
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = cli("--config", str(write_config(tmp_path)), *args)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith(expected), out.stderr


# -- one command, its help, its version ----------------------------------------------


def _trireme() -> list[str]:
    script = Path(sys.executable).with_name("trireme")
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine"]


def test_help_lists_every_command_each_with_its_own_help():
    from engine._cli import COMMANDS

    out = subprocess.run(
        [*_trireme(), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: trireme ")
    assert {"run", "sim-exchange", "record", "control", "hardware"} <= set(COMMANDS)
    for name in COMMANDS:
        assert f"\n  {name} " in out.stdout, name
        sub = subprocess.run(
            [*_trireme(), name, "--help"], capture_output=True, text=True, timeout=120, check=False
        )
        assert sub.returncode == 0, (name, sub.stderr)
        assert sub.stdout.startswith("usage: "), name
    assert "TRIREME__RISK__CAPITAL" in out.stdout and "--set" in out.stdout


def test_version():
    out = subprocess.run(
        [*_trireme(), "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"trireme {importlib.metadata.version('trireme')}"


def test_bench_help_exits_0_and_lists_every_benchmark():
    from tools.bench.__main__ import BENCHMARKS

    out = subprocess.run(
        [sys.executable, "-m", "tools.bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for name in BENCHMARKS:
        assert f"\n  {name} " in out.stdout


def test_runs_the_bundled_config_from_any_directory(tmp_path):
    # No --config: the bundled config and sample, output under the current directory.
    out = cli(cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "symbols BTCUSDT" in out.stdout
    assert list((tmp_path / "runs").glob("replay-*.sqlite"))
    assert (tmp_path / "logs/trireme.jsonl").stat().st_size > 0


# -- sim-exchange --------------------------------------------------------------------


def test_sim_exchange_on_a_port_in_use_exits_2_with_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = cli("sim-exchange", "--data", str(SAMPLE), "--port", str(port), "--rest-port", "0")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: cannot listen on 127.0.0.1 (websocket port {port}")
    assert "in use" in lines[0]


@pytest.mark.parametrize("form", [["--fault", "-1021*2"], ["--fault=-1021*2"]])
async def test_sim_exchange_takes_negative_error_code_faults(form):
    # -1021 is parsed by the fault parser (which refuses unknown kinds), not by argparse
    # as an option; the server starts and says where it listens.
    cmd = [sys.executable, "-m", "engine", "sim-exchange", "--data", str(SAMPLE)]
    cmd += ["--port", "0", "--rest-port", "0", *form]
    with trio.fail_after(120):
        process = await trio.lowlevel.open_process(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            first = b""
            while b"\n" not in first:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    break
                first += chunk
            assert first.startswith(b"sim-exchange: ws://127.0.0.1:"), first
        finally:
            process.terminate()
            await process.wait()


def test_single_cause_sets_aside_what_a_failed_peer_caused():
    from engine._errors import single_cause

    cause = RuntimeError("the real one")
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [cause, trio.EndOfChannel()])])
    assert single_cause(group) is cause
    closed = BaseExceptionGroup("g", [trio.BrokenResourceError(), cause, trio.EndOfChannel()])
    assert single_cause(closed) is cause
    two = ExceptionGroup("g", [cause, ValueError("another")])
    assert single_cause(two) is two  # independent failures stay together
    lone = trio.EndOfChannel()
    assert single_cause(ExceptionGroup("g", [lone])) is lone

"""The command line, as a user runs it: exit codes, stdout summary, JSON report and logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    assert out.stderr == ""
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["orders"] > 0 and report["fills"] > 0
    assert len(report["journal_sha256"]) == 64
    assert report["journal_sha256"] in out.stdout
    lines = (tmp_path / "logs/engine.jsonl").read_text().splitlines()
    assert len(lines) > 5
    for line in lines:
        record = json.loads(line)
        for key in ("@timestamp", "log.level", "ecs.version", "message", "service.name"):
            assert key in record
    transitions = [json.loads(x) for x in lines if '"position transition"' in x]
    assert transitions and all({"symbol", "from", "to"} <= set(t) for t in transitions)
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

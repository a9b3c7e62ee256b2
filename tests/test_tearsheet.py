"""The tear sheet (``--tearsheet``): one self-contained HTML file, opened in headless
Chromium (Debian's ``chromium``): the screenshot is not blank and the page writes
nothing to the console (it has no script: any console line is an error).

Without chromium the browser tests skip locally and fail in CI (``CI=true``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engine._cli import main
from engine.results import read_trades

ROOT = Path(__file__).resolve().parents[1]
HISTORY = ROOT.parent / "shared" / "data" / "external" / "hftbacktest_history"
# References that would need the network (a CDN script, a web font, a remote image).
REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|@import|url\(\s*["']?https?:""")
CONSOLE = re.compile(r":CONSOLE[:(]\d+\)?\] (.*)")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; a missing browser fails the test in CI, skips it elsewhere."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path is not None:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (CI installs Debian's chromium: see .ci/run)")
    pytest.skip("chromium is not installed (Debian: apt-get install chromium)")


def render(chromium: str, page: Path, tmp_path: Path) -> tuple[np.ndarray, list[str]]:
    """Screenshot ``page`` in headless Chromium: the pixels (H x W x channels, 0..1)
    and the console lines the page wrote."""
    from matplotlib.image import imread

    shot = tmp_path / f"{page.stem}.png"
    profile = tmp_path / f"{page.stem}-profile"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",  # root in containers; the page is our own file
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: nothing resolves
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,2400",
        # Virtual time: the page is laid out and painted before the shot, however
        # slow the machine (a budget of virtual, not wall-clock, milliseconds).
        "--virtual-time-budget=5000",
        f"--screenshot={shot}",
        page.resolve().as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    assert shot.is_file(), f"no screenshot (exit {out.returncode}): {out.stderr[-2000:]}"
    console = [m.group(1) for m in CONSOLE.finditer(out.stderr)]
    return imread(shot), console


def not_blank(pixels: np.ndarray) -> bool:
    """Whether a screenshot shows something: grey-level variance and enough ink."""
    grey = pixels[..., :3].mean(axis=2)
    return float(grey.var()) > 1e-3 and float((grey < 0.9).mean()) > 0.01


@pytest.fixture(scope="module")
def sample_sheet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tear sheet (and its JSON report) of the bundled sample, written by the CLI."""
    import json

    tmp = tmp_path_factory.mktemp("sheet")
    sheet, report = tmp / "sheet.html", tmp / "r.json"
    code = main(
        [
            "--set",
            f"journal.dir={tmp / 'runs'}",
            "--set",
            f"logging.path={tmp / 'engine.jsonl'}",
            "--report",
            str(report),
            "--tearsheet",
            str(sheet),
        ]
    )
    assert code == 0
    return sheet, json.loads(report.read_text())


def test_tearsheet_is_one_self_contained_file_with_every_section(sample_sheet):
    sheet, report = sample_sheet
    text = sheet.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text.lower()  # nothing to run, nothing to fetch
    assert not REMOTE.search(text), REMOTE.search(text)
    for heading in (
        "Equity and drawdown",
        "Trades on price",
        "Distribution of trade returns",
        "Per symbol",
        "Per exit reason",
        "Config",
    ):
        assert f"<h2>{heading}" in text, heading
    assert text.count("<svg") == 3  # equity+drawdown, BTCUSDT price, returns
    assert report["journal_sha256"] in text and report["config_sha256"] in text
    assert "quote mid from the replayed tape" in text
    for reason in report["trades"]["exit_reasons"]:
        assert f"<td>{reason}</td>" in text
    trades = read_trades(Path(report["journal_path"]))
    # the trade rows, the per-symbol row and the run table's symbols
    assert text.count("<td>BTCUSDT</td>") == len(trades) + 2
    assert "n/a (run too short" in text


def test_tearsheet_renders_in_headless_chromium(chromium, sample_sheet, tmp_path):
    pixels, console = render(chromium, sample_sheet[0], tmp_path)
    assert console == []
    assert not_blank(pixels)


def test_the_browser_checks_catch_a_blank_page_and_a_console_error(chromium, tmp_path):
    """The two checks can fail: a blank page and a page with a script error."""
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    pixels, console = render(chromium, blank, tmp_path)
    assert not not_blank(pixels) and console == []
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><body><h1>Some text</h1>"
        "<script>console.error('boom'); missing_function();</script></body></html>"
    )
    _pixels, console = render(chromium, broken, tmp_path)
    assert any("boom" in line for line in console)
    assert any("missing_function is not defined" in line for line in console)


@pytest.mark.skipif(not HISTORY.is_dir(), reason="needs ../shared/data/external")
def test_two_symbol_capture_tearsheet(chromium, tmp_path):
    data = [HISTORY / "usdm_btcusdt_20240719.gz", HISTORY / "usdm_ethusdt_20240719.gz"]
    sheet = tmp_path / "two.html"
    args = ["--set", f"journal.dir={tmp_path / 'runs'}"]
    args += ["--set", f"logging.path={tmp_path / 'engine.jsonl'}", "--set", "model.enabled=false"]
    for path in data:
        args += ["--data", str(path)]
    assert main([*args, "--tearsheet", str(sheet)]) == 0
    text = sheet.read_text()
    assert text.count("<svg") == 4  # equity, two prices, returns
    assert "<td>ETHUSDT</td>" in text and "<td>BTCUSDT</td>" in text
    pixels, console = render(chromium, sheet, tmp_path)
    assert console == [] and not_blank(pixels)


def test_tearsheet_is_the_same_for_the_same_run(sample_sheet):
    """No dates, random ids or hash salts from the run's wall clock in the file."""
    from engine.results import run_results, tearsheet_html

    report = sample_sheet[1]
    results = run_results(Path(report["journal_path"]), start_equity=10_000.0)
    pages = [
        tearsheet_html(
            title="t",
            run={"journal_sha256": report["journal_sha256"]},
            stats=results.stats,
            trades=results.trades,
            curve=(results.ts, results.equity),
            curve_source="fills",
            prices={},
            price_source="fills",
            config_text="{}",
        )
        for _ in range(2)
    ]
    assert pages[0] == pages[1] and pages[0].count("<svg") == 3

"""Shared fixtures: paths to the repository's sample and to ../shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/btcusdt_20240808_180s.gz"
EXTERNAL = ROOT.parent / "shared/data/external"
BTC_CAPTURE = EXTERNAL / "hftbacktest/btcusdt_20240808.gz"
CRYPTOFEED = EXTERNAL / "cryptofeed"


@pytest.fixture(scope="session")
def sample() -> Path:
    """The bundled BTCUSDT sample (always present)."""
    return SAMPLE


@pytest.fixture(scope="session")
def btc_capture() -> Path:
    """The full BTCUSDT capture from ../shared (skips when absent)."""
    if not BTC_CAPTURE.exists():
        pytest.skip("../shared/data/external is not beside the repository")
    return BTC_CAPTURE


@pytest.fixture(scope="session")
def cryptofeed_dir() -> Path:
    """The 4-symbol cryptofeed capture directory from ../shared (skips when absent)."""
    if not CRYPTOFEED.exists():
        pytest.skip("../shared/data/external is not beside the repository")
    return CRYPTOFEED


@pytest.fixture(scope="session", autouse=True)
def _tick_store_in_a_temporary_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Replays keep their tick store (``data.tick_store = "auto"``) under a temporary
    ``XDG_CACHE_HOME``, never in the user's own cache; subprocesses inherit it."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))

"""The README's notebook runs top to bottom in a real Jupyter kernel (nbclient)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples/notebooks/backtest.ipynb"


# jupyter_client's own deprecation notices (platformdirs, datetime) are not ours.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_notebook_executes(tmp_path, monkeypatch):
    # A kernelspec for this interpreter (the venv's python) in a temporary Jupyter
    # path: no network, nothing written outside tmp_path.
    spec = tmp_path / "jupyter/kernels/trireme-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "trireme test",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("TRIREME__DATA__TICK_STORE", "off")
    # Journals and the log go to tmp_path (environment overrides, as for the CLI).
    monkeypatch.setenv("TRIREME__JOURNAL__DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TRIREME__LOGGING__PATH", str(tmp_path / "engine.jsonl"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="trireme-test",
        timeout=600,
        # Run where the notebook lives: its relative paths hold.
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "trireme replay: 1 file(s), symbols BTCUSDT" in text
    assert "<Result 1 symbol(s)" in str(nb.cells[1].outputs[0]["data"]["text/plain"])
    if (REPO.parent / "shared/data/external/freqtrade_1m_usdm").is_dir():
        assert "reads quotes; the data has candles and marks only (BTCUSDT)" in text

"""The notebooks run from top to bottom against real run folders, without an error or warning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _read(name):
    return nbformat.read(NOTEBOOKS / name, as_version=4)


@pytest.mark.parametrize("name", ["settlement_outcomes.ipynb", "strategy_comparison.ipynb"])
def test_notebook_is_stored_clean(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert "KOVA_RUN_DIR" in code[0].source  # the first code cell says which run it reads
    # the analysis lives in kova_sim.analysis; notebooks only call it and plot
    assert not any("read_parquet" in cell.source or "def " in cell.source for cell in code)


def _execute(name, monkeypatch, **env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # no deprecation warning from jupyter_core
    nb = _read(name)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, if a cell fails
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    warnings = [out.text for out in outputs if out.output_type == "stream" and out.name == "stderr"]
    assert not warnings, warnings
    return outputs


def _images(outputs):
    return sum("image/png" in out.get("data", {}) for out in outputs)


def test_settlement_outcomes_runs(small_run, monkeypatch):
    outputs = _execute("settlement_outcomes.ipynb", monkeypatch, KOVA_RUN_DIR=str(small_run.path))
    text = "".join(out.get("text", "") for out in outputs)
    assert "small-1: scenario 'small', seed 1" in text
    assert f"(summary insufficient_funds_events: {small_run.summary['insufficient_funds_events']})" in text
    assert _images(outputs) >= 4


def test_strategy_comparison_runs(small_run, mixed_run, monkeypatch):
    dirs = os.pathsep.join([str(small_run.path), str(mixed_run.path)])
    outputs = _execute("strategy_comparison.ipynb", monkeypatch, KOVA_RUN_DIRS=dirs)
    html = "".join(out.get("data", {}).get("text/html", "") for out in outputs)
    assert "small-1" in html and "mixed-6" in html and "random-band" in html
    assert _images(outputs) >= 2

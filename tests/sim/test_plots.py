"""kova_sim.plots: every run folder gets its five PNGs, also a run in which nothing happened."""

from __future__ import annotations

import shutil
import struct
import time

import pytest

from kova_sim.plots import PLOTS, write_plots
from kova_sim.run import run_scenario
from kova_sim.scenario import parse_scenario

from .conftest import NO_LEASES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED = ["price.png", "utilisation.png", "revenue_lorenz.png", "time_to_lease.png", "escrow_paused.png"]


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 10_000, f"{path.name} is only {len(data)} bytes"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    assert (width, height) == (800, 450)
    assert b"Software" not in data  # no matplotlib version in the file: runs stay comparable


@pytest.mark.parametrize("which", ["small_run", "no_lease_run"])
def test_write_plots_writes_the_five_pngs(request, tmp_path, which):
    source = request.getfixturevalue(which)
    folder = tmp_path / source.path.name
    shutil.copytree(source.path, folder)
    written = write_plots(folder)
    assert [p.name for p in written] == EXPECTED == [f"{name}.png" for name in PLOTS]
    assert sorted(p.name for p in (folder / "plots").iterdir()) == sorted(EXPECTED)
    for path in written:
        assert path.parent == folder / "plots"
        _check_png(path)


def test_write_plots_is_repeatable(small_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(small_run.path, folder)
    first = {p.name: p.read_bytes() for p in write_plots(folder)}
    second = {p.name: p.read_bytes() for p in write_plots(folder)}
    assert first == second


def test_write_plots_is_fast(small_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(small_run.path, folder)
    write_plots(folder)  # fonts and caches warm up once per process
    started = time.perf_counter()
    write_plots(folder)
    assert time.perf_counter() - started < 3  # ~0.4 s here; generous for a loaded machine


def test_run_scenario_with_plots_writes_them(tmp_path):
    out = tmp_path / "no-leases"
    run_scenario(parse_scenario(NO_LEASES), out, plots=True)
    for name in EXPECTED:
        _check_png(out / "plots" / name)


@pytest.mark.parametrize("missing", ["timeseries", "orders", "providers"])
def test_write_plots_names_a_missing_table(small_run, tmp_path, missing):
    folder = tmp_path / "run"
    shutil.copytree(small_run.path, folder)
    (folder / f"{missing}.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=f"no {missing}.parquet"):
        write_plots(folder)


def test_write_plots_titles_fall_back_to_the_folder_name(small_run, tmp_path):
    folder = tmp_path / "untitled"
    shutil.copytree(small_run.path, folder)
    (folder / "summary.json").unlink()
    for path in write_plots(folder):
        _check_png(path)

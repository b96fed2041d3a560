"""Parameter sweeps: grids, seeds, real sweeps on a Dask LocalCluster, the CLI as a process."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from kova_sim.run import DEFAULT_ENGINE, run_scenario
from kova_sim.scenario import parse_scenario, resolved
from kova_sim.sweep import (
    HEADLINE_METRICS,
    DefinitionMismatch,
    GridAxis,
    GridError,
    SweepError,
    expand_points,
    parse_grid,
    parse_path,
    run_id,
    run_seed,
    run_sweep,
)

TINY = {
    "name": "tiny",
    "seed": 11,
    "duration": "1h",
    "providers": [
        {
            "name": "fixed",
            "count": 2,
            "capacity": {"cpu": 4, "memory": "16Gi", "storage": "100Gi"},
            "pricing": {"strategy": "fixed", "price_per_block": 1},
        },
        {
            "name": "cheap",
            "count": 1,
            "capacity": {"cpu": 4, "memory": "16Gi", "storage": "100Gi"},
            "pricing": {"strategy": "undercut", "floor": 0.6, "step": 0.05},
        },
    ],
    "demand": [
        {
            "name": "web",
            "arrivals": {"process": "poisson", "rate": "30/h"},
            "resources": {"cpu": 1, "memory": "1Gi", "storage": "1Gi"},
            "max_price": 1.5,
            "lifetime": {"distribution": "exponential", "mean": "30m"},
            "deposit": {"blocks": "20m"},
        }
    ],
}
"""An hour of three providers and one stream of deployments: a run takes well under a second."""

KOVA_SIM = Path(sys.executable).with_name("kova-sim")


def tiny(**changes):
    data = copy.deepcopy(TINY)
    data.update(changes)
    return data


def kova_sim(*args, cwd=None):
    return subprocess.run(
        [str(KOVA_SIM), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def one_line(text):
    return " ".join(text.split())


def final_table(stdout):
    """The rows of the table the command prints at the end, by label."""
    rows = [line.split("│") for line in stdout.splitlines() if line.count("│") == 3]
    return {row[1].strip(): row[2].strip() for row in rows}


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("scenario") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def cluster():
    """A real Dask cluster of two worker processes, shared by the module's sweeps."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as local,
        Client(local) as client,
    ):
        yield local, client


# --------------------------------------------------------------------------- grids


@pytest.mark.parametrize(
    ("spec", "axis"),
    [
        ("fee_bps=0,250", GridAxis("fee_bps", ("0", "250"))),
        (
            "providers[0].pricing.floor=0.5, 0.7",
            GridAxis("providers[0].pricing.floor", ("0.5", "0.7")),
        ),
        ("demand[0].arrivals.rate=12/h,1/m", GridAxis("demand[0].arrivals.rate", ("12/h", "1/m"))),
        ("duration=2h", GridAxis("duration", ("2h",))),
    ],
)
def test_grid_options_are_a_path_and_its_values_as_given(spec, axis):
    assert parse_grid(spec) == axis


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fee_bps", "expected PATH=V1,V2,..."),
        ("=1,2", "expected PATH=V1,V2,..."),
        ("fee_bps=", "empty value"),
        ("fee_bps=1,,2", "empty value"),
        ("providers..count=1", "is not a field path"),
        ("providers[x].count=1", "is not a field path"),
        ("fee_bps=1,1", "the value 1 is given twice"),
        ("seed=1,2", "the seed cannot be a grid parameter"),
    ],
)
def test_malformed_grid_options_are_refused_naming_the_option(spec, message):
    with pytest.raises(GridError) as caught:
        parse_grid(spec)
    assert f"--grid {spec}" in str(caught.value) and message in str(caught.value)


def test_paths_are_the_syntax_of_the_scenario_errors():
    assert parse_path("fee_bps") == ("fee_bps",)
    assert parse_path("providers[0].pricing.floor") == ("providers", 0, "pricing", "floor")
    assert parse_path("demand[1].arrivals.at[2]") == ("demand", 1, "arrivals", "at", 2)


def test_axis_values_read_as_yaml_scalars():
    assert parse_grid("x=0,0.5,2h,1Gi,12/h").parsed == (0, 0.5, "2h", "1Gi", "12/h")
    assert parse_grid("x=0,0.5").numeric and not parse_grid("x=0,2h").numeric
    assert parse_grid("providers[0].pricing.floor=1").slug == "providers-0-pricing-floor"


def test_points_are_the_product_in_the_order_given_with_the_values_set():
    scenario = parse_scenario(TINY)
    axes = [parse_grid("providers[0].count=1,3"), parse_grid("duration=2h,90m,600")]
    points = expand_points(scenario, axes)
    assert [p.index for p in points] == list(range(6))
    assert [(p.scenario.providers[0].count, p.scenario.duration) for p in points] == [
        (1, 7200), (1, 5400), (1, 600), (3, 7200), (3, 5400), (3, 600),
    ]  # fmt: skip
    assert points[4].values == (("providers[0].count", "3"), ("duration", "90m"))
    assert points[4].label() == "providers[0].count=3, duration=90m"
    # everything else is the scenario's, and the values go through its validation (units)
    more = expand_points(scenario, [parse_grid("demand[0].resources.memory=1Gi"),
                                    parse_grid("demand[0].arrivals.rate=12/h"),
                                    parse_grid("providers[1].pricing.floor=0.5")])  # fmt: skip
    (point,) = more
    assert point.scenario.demand[0].resources.memory == 2**30
    assert point.scenario.demand[0].arrivals.rate == 12.0
    assert point.scenario.providers[1].pricing.build().floor == 500_000
    assert point.scenario.providers[0] == scenario.providers[0]


def test_no_grid_is_one_point_the_scenario_itself():
    scenario = parse_scenario(TINY)
    (point,) = expand_points(scenario, [])
    assert point.index == 0 and point.values == ()
    assert resolved(point.scenario) == resolved(scenario)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            ["providers[2].count=1"],
            "--grid providers[2].count=1: providers[2]: index out of range (providers has 2 entries)",
        ),
        (["providers[0].failures.mtbf=1h"], "providers[0].failures: no such field"),
        (["fee_bps.x=1"], "fee_bps is not a mapping"),
        (
            ["providers[0].colour=red"],
            "--grid providers[0].colour=red: providers[0].colour=red makes the scenario invalid: providers[0].colour: unknown field",
        ),
        (
            ["fee_bps=0,20000"],
            "--grid fee_bps=0,20000: fee_bps=20000 makes the scenario invalid: fee_bps:",
        ),
        (
            ["demand[0].lifetime.mean=2h,soon"],
            "demand[0].lifetime.mean=soon makes the scenario invalid: demand[0].lifetime.mean: not a duration",
        ),
        (["fee_bps=0", "fee_bps=1"], "fee_bps is already a grid parameter"),
        # each value is valid alone, the pair is not: the point is named
        (
            ["providers[0].poll_phase=0,10", "poll_interval=15,5"],
            "grid point 3 (providers[0].poll_phase=10, poll_interval=5) makes the scenario invalid: providers[0].poll_phase: must be less than poll_interval",
        ),
    ],
)
def test_bad_grids_are_refused_before_anything_runs(specs, message):
    with pytest.raises(GridError) as caught:
        expand_points(parse_scenario(TINY), [parse_grid(s) for s in specs])
    assert message in str(caught.value)


# --------------------------------------------------------------------------- seeds and ids


def test_independent_seeds_are_reproducible_distinct_and_63_bit():
    seeds = {(p, r): run_seed(11, p, r) for p in range(20) for r in range(5)}
    assert seeds == {(p, r): run_seed(11, p, r, "independent") for p in range(20) for r in range(5)}
    assert len(set(seeds.values())) == 100
    assert all(0 <= s < 2**63 for s in seeds.values())
    assert run_seed(12, 0, 0) != run_seed(11, 0, 0)  # derived from the scenario's seed
    assert run_seed(11, 0, 1) != run_seed(11, 1, 0)


def test_common_seeds_are_shared_by_the_points_of_a_replication():
    assert {run_seed(11, p, 0, "common") for p in range(10)} == {run_seed(11, 0, 0, "common")}
    per_replication = [run_seed(11, 3, r, "common") for r in range(10)]
    assert len(set(per_replication)) == 10
    assert run_seed(11, 0, 0, "common") != run_seed(11, 0, 0, "independent")
    with pytest.raises(ValueError, match="unknown seeds mode"):
        run_seed(11, 0, 0, "shared")


def test_seeds_follow_the_seed_sequence():
    state = np.random.SeedSequence(11, spawn_key=(2, 1)).generate_state(2, np.uint64)
    assert run_seed(11, 2, 1) == (int(state[1]) ^ (int(state[0]) >> 1)) & (2**63 - 1)


@pytest.mark.parametrize(
    ("args", "expected"),
    [((3, 1), "p003-r01"), ((0, 0, 4, 2), "p000-r00"), ((12, 7, 1500, 10), "p0012-r07"),
     ((5, 120, 6, 200), "p005-r120")],
)  # fmt: skip
def test_run_ids_are_stable_and_sort_in_order(args, expected):
    assert run_id(*args) == expected


# --------------------------------------------------------------------------- a real sweep


@pytest.fixture(scope="module")
def fee_sweep(cluster, tmp_path_factory):
    """TINY at two fees, two replications each, on the two-worker cluster."""
    out = tmp_path_factory.mktemp("sweeps") / "fee"
    result = run_sweep(
        parse_scenario(TINY), ["fee_bps=0,250"], replications=2, out=out, client=cluster[1]
    )
    return out, result


def test_a_sweep_writes_a_row_per_run_with_its_grid_values_and_seed(fee_sweep):
    out, result = fee_sweep
    assert (result.done, result.skipped, result.failures) == (4, 0, [])
    runs = pq.read_table(out / "runs.parquet")
    assert runs.num_rows == 4
    assert runs.column_names[:6] == [
        "run_id",
        "point",
        "fee_bps",
        "replication",
        "seed",
        "wall_seconds",
    ]
    assert runs.column("run_id").to_pylist() == ["p000-r00", "p000-r01", "p001-r00", "p001-r01"]
    assert runs.column("fee_bps").to_pylist() == ["0", "0", "250", "250"]
    assert runs.column("seed").to_pylist() == [run_seed(11, p, r) for p in (0, 1) for r in (0, 1)]
    assert all(w > 0 for w in runs.column("wall_seconds").to_pylist())
    for metric in HEADLINE_METRICS:
        assert metric in runs.column_names
    assert str(runs.schema.field("provider_revenue").type) == "int64"  # micro-units, exact
    assert runs.column("money_conserved").to_pylist() == [True] * 4
    # the fee was set: the network earns only at 250 bps
    fees = runs.column("network_fees").to_pylist()
    assert fees[:2] == [0, 0] and all(f > 0 for f in fees[2:])
    # each run folder says where it sits in the sweep
    record = json.loads((out / "runs" / "p001-r00" / "sweep.json").read_text())
    assert record["grid"] == {"fee_bps": "250"} and record["seed"] == run_seed(11, 1, 0)
    assert record["point"] == 1 and record["replication"] == 0


def test_each_run_is_the_scenario_run_on_its_own_with_its_seed(fee_sweep):
    out, _ = fee_sweep
    seed = run_seed(11, 1, 1)
    alone = run_scenario(parse_scenario(tiny(fee_bps=250, seed=seed)), engine=DEFAULT_ENGINE)
    in_sweep = json.loads((out / "runs" / "p001-r01" / "summary.json").read_text())
    assert in_sweep == alone.summary
    row = pq.read_table(out / "runs.parquet").to_pylist()[3]
    assert row["run_id"] == "p001-r01"
    assert {k: row[k] for k in HEADLINE_METRICS} == {k: alone.summary[k] for k in HEADLINE_METRICS}


def test_the_summary_has_a_row_per_point_with_confidence_intervals(fee_sweep):
    out, _ = fee_sweep
    summary = pq.read_table(out / "summary.parquet").to_pylist()
    runs = pq.read_table(out / "runs.parquet").to_pylist()
    assert [(s["point"], s["fee_bps"], s["n"]) for s in summary] == [(0, "0", 2), (1, "250", 2)]
    for s in summary:
        values = [r["provider_revenue"] for r in runs if r["point"] == s["point"]]
        assert s["provider_revenue_mean"] == pytest.approx(np.mean(values))
        assert s["provider_revenue_std"] == pytest.approx(np.std(values, ddof=1))
        # Student's t with one degree of freedom: 12.706 standard errors either side
        half = 12.7062047 * np.std(values, ddof=1) / np.sqrt(2)
        assert s["provider_revenue_ci_high"] == pytest.approx(np.mean(values) + half)
        for metric in HEADLINE_METRICS:
            mean, low, high = (s[f"{metric}_{k}"] for k in ("mean", "ci_low", "ci_high"))
            assert low <= mean <= high, metric


def test_the_plots_are_each_headline_metric_against_each_parameter(fee_sweep):
    out, result = fee_sweep
    names = sorted(p.name for p in (out / "plots").iterdir())
    assert names == sorted(f"{m}-vs-fee_bps.png" for m in HEADLINE_METRICS)
    assert all(p.stat().st_size > 5000 for p in result.plots)


def test_two_parameters_draw_a_line_per_value_of_the_other(cluster, tmp_path):
    result = run_sweep(
        parse_scenario(tiny(duration="20m")),
        ["fee_bps=0,100", "providers[1].pricing.floor=0.6,0.9"],
        replications=1,
        out=tmp_path / "two",
        client=cluster[1],
        seeds="common",
    )
    assert result.done == 4 and result.summary.num_rows == 4
    seeds = result.runs.column("seed").to_pylist()
    assert len(set(seeds)) == 1  # common random numbers: one seed per replication
    names = {p.name for p in result.plots}
    assert "fill_rate-vs-providers-1-pricing-floor.png" in names and len(names) == 16


def test_a_second_run_of_the_same_sweep_skips_every_run(fee_sweep, cluster):
    out, _ = fee_sweep
    before = (out / "runs.parquet").read_bytes()
    again = run_sweep(
        parse_scenario(TINY), ["fee_bps=0,250"], replications=2, out=out, client=cluster[1]
    )
    assert (again.done, again.skipped, again.failures) == (0, 4, [])
    assert (out / "runs.parquet").read_bytes() == before


def test_a_run_whose_folder_is_for_another_seed_is_run_again(fee_sweep, cluster, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(fee_sweep[0], out)
    summary_path = out / "runs" / "p000-r01" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["seed"] += 1
    summary_path.write_text(json.dumps(summary))
    (out / "runs" / "p001-r00" / "sweep.json").unlink()  # as if stopped before the end
    again = run_sweep(
        parse_scenario(TINY), ["fee_bps=0,250"], replications=2, out=out, client=cluster[1]
    )
    assert (again.done, again.skipped) == (2, 2)
    assert json.loads(summary_path.read_text())["seed"] == run_seed(11, 0, 1)
    rerun = pq.read_table(out / "runs.parquet").drop_columns(["wall_seconds"])
    assert rerun.equals(pq.read_table(fee_sweep[0] / "runs.parquet").drop_columns(["wall_seconds"]))


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ({"replications": 3}, "replications"),
        ({"grids": ["fee_bps=0,100"]}, "the --grid options"),
        ({"seeds": "common"}, "seeds"),
        ({"scenario": tiny(duration="2h")}, "the scenario"),
    ],
)
def test_another_sweep_on_the_same_folder_is_refused(fee_sweep, cluster, change, differs):
    out, _ = fee_sweep
    held = (out / "sweep.json").read_text()
    args = {"grids": ["fee_bps=0,250"], "replications": 2, "seeds": "independent"}
    args.update({k: v for k, v in change.items() if k != "scenario"})
    scenario = parse_scenario(change.get("scenario", TINY))
    with pytest.raises(DefinitionMismatch) as caught:
        run_sweep(scenario, args.pop("grids"), out=out, client=cluster[1], **args)
    assert differs in str(caught.value) and "give a new --out folder" in str(caught.value)
    assert (out / "sweep.json").read_text() == held


def test_a_failed_run_is_reported_and_the_others_complete(cluster, tmp_path):
    out = tmp_path / "failing"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "p001-r00").write_text("a file where the run folder should go\n")
    result = run_sweep(
        parse_scenario(TINY), ["fee_bps=0,250"], replications=2, out=out, client=cluster[1]
    )
    assert (result.done, result.skipped) == (3, 0)
    (failure,) = result.failures
    assert (failure.run_id, failure.grid, failure.seed) == (
        "p001-r00",
        {"fee_bps": "250"},
        run_seed(11, 1, 0),
    )
    assert failure.error_type == "FileExistsError"
    written = json.loads((out / "failures.json").read_text())
    assert written == [failure.as_dict()]
    assert written[0]["grid"] == {"fee_bps": "250"} and written[0]["seed"] == run_seed(11, 1, 0)
    runs = pq.read_table(out / "runs.parquet")
    assert runs.column("run_id").to_pylist() == ["p000-r00", "p000-r01", "p001-r01"]
    assert pq.read_table(out / "summary.parquet").column("n").to_pylist() == [2, 1]
    # once the way is clear, the same sweep runs the failed run only, and the failure is gone
    (out / "runs" / "p001-r00").unlink()
    again = run_sweep(
        parse_scenario(TINY), ["fee_bps=0,250"], replications=2, out=out, client=cluster[1]
    )
    assert (again.done, again.skipped, again.failures) == (1, 3, [])
    assert not (out / "failures.json").exists()


def test_an_unreachable_scheduler_is_an_error_and_nothing_is_written(tmp_path):
    with pytest.raises(SweepError, match="cannot reach the Dask scheduler"):
        run_sweep(parse_scenario(TINY), [], replications=1, out=tmp_path / "o",
                  client="tcp://127.0.0.1:1", connect_timeout=0.5)  # fmt: skip
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- the command


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (
            "providers[5].count=1,2",
            "--grid providers[5].count=1,2: providers[5]: index out of range",
        ),
        (
            "providers[0].speed=1,2",
            "--grid providers[0].speed=1,2: providers[0].speed=1 makes the scenario invalid: providers[0].speed: unknown field",
        ),
        ("fee_bps=0,20000", "--grid fee_bps=0,20000: fee_bps=20000 makes the scenario invalid"),
        (
            "demand[0].arrivals.rate=12/h,fast",
            "demand[0].arrivals.rate=fast makes the scenario invalid: demand[0].arrivals.rate",
        ),
        (
            "providers[0]count=1",
            "is not a field path: write fields with dots and list entries with [index]",
        ),
    ],
)
def test_the_command_refuses_a_bad_grid_naming_the_path(scenario_file, tmp_path, grid, message):
    out = tmp_path / "out"
    result = kova_sim("sweep", scenario_file, "--grid", grid, "--replications", 2, "--out", out)
    assert result.returncode == 2, result.stderr
    assert message in one_line(result.stderr), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not out.exists()


def test_the_command_refuses_an_unreachable_scheduler(scenario_file, tmp_path):
    out = tmp_path / "out"
    result = kova_sim("sweep", scenario_file, "--replications", 1, "--out", out,
                      "--scheduler", "not-an-address::1")  # fmt: skip
    assert result.returncode == 2
    assert "--scheduler not-an-address::1: cannot reach the Dask scheduler" in one_line(
        result.stderr
    )
    assert "Traceback" not in result.stderr and not out.exists()


def test_the_command_runs_a_sweep_and_resumes_it(scenario_file, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", scenario_file, "--grid", "fee_bps=0,250", "--grid", "duration=10m,20m",
            "--replications", 2, "--out", out, "--workers", 2, "--seeds", "common"]  # fmt: skip
    first = kova_sim(*args)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert final_table(first.stdout)["runs done"] == "8"
    runs = pq.read_table(out / "runs.parquet")
    assert runs.num_rows == 8 and runs.column("duration").to_pylist()[:2] == ["10m", "10m"]
    seeds = runs.column("seed").to_pylist()
    assert seeds == [run_seed(11, 0, r, "common") for r in (0, 1)] * 4
    assert pq.read_table(out / "summary.parquet").num_rows == 4
    assert len(list((out / "plots").iterdir())) == 2 * len(HEADLINE_METRICS)
    definition = json.loads((out / "sweep.json").read_text())
    assert definition["grids"] == [{"path": "fee_bps", "values": ["0", "250"]},
                                   {"path": "duration", "values": ["10m", "20m"]}]  # fmt: skip
    assert (definition["replications"], definition["seeds"]) == (2, "common")

    before = (out / "runs.parquet").read_bytes()
    second = kova_sim(*args)
    assert second.returncode == 0, second.stderr
    table = final_table(second.stdout)
    assert table["runs done"] == "0" and table["skipped (done before)"] == "8"
    assert table["failed"] == "0"
    assert (out / "runs.parquet").read_bytes() == before

    changed = kova_sim(*[a if a != "fee_bps=0,250" else "fee_bps=0,500" for a in args])
    assert changed.returncode == 2
    assert "holds another sweep: the --grid options differ" in one_line(changed.stderr)
    assert (out / "runs.parquet").read_bytes() == before


def test_the_command_runs_on_a_scheduler_and_reports_failed_runs(scenario_file, cluster, tmp_path):
    local, _ = cluster
    out = tmp_path / "remote"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "p000-r01").write_text("in the way\n")
    args = ["sweep", scenario_file, "--grid", "providers[0].count=1,3", "--replications", 2,
            "--out", out, "--scheduler", local.scheduler_address, "-q"]  # fmt: skip
    failed = kova_sim(*args)
    assert failed.returncode == 1, failed.stderr
    stderr = one_line(failed.stderr)
    assert "1 run(s) failed" in stderr and "Traceback" not in stderr
    assert f"p000-r01 (providers[0].count=1; seed {run_seed(11, 0, 1)}): FileExistsError" in stderr
    (failure,) = json.loads((out / "failures.json").read_text())
    assert failure["grid"] == {"providers[0].count": "1"} and failure["seed"] == run_seed(11, 0, 1)
    assert pq.read_table(out / "runs.parquet").num_rows == 3

    (out / "runs" / "p000-r01").unlink()
    fixed = kova_sim(*args)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout == "" and not (out / "failures.json").exists()
    runs = pq.read_table(out / "runs.parquet")
    assert runs.num_rows == 4
    assert runs.column("providers").to_pylist() == [2, 2, 4, 4]  # the count was set (+1 cheap)

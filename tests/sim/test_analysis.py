"""kova_sim.analysis: reading run folders, and the tables the notebooks show."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from kova_core import DeploymentPaused, DeploymentResumed
from kova_sim import analysis, outputs
from kova_sim.analysis import (
    Run,
    compare_runs,
    escrow_exhaustion,
    gini,
    load_run,
    lorenz,
    pauses,
    price_dynamics,
    revenue_by_provider,
    revenue_by_strategy,
    strategy_comparison,
    written_off_by_stream,
)
from kova_sim.outputs import TABLES
from kova_sim.recorder import SCHEMAS

# --------------------------------------------------------------------------- gini and lorenz

GINI_CASES = [
    # (values, gini)
    ([], 0.0),
    ([0, 0, 0], 0.0),
    ([5], 0.0),
    ([3, 3, 3, 3], 0.0),
    ([0, 10], 0.5),
    ([0, 0, 0, 7], 0.75),  # one holds all of n: (n - 1) / n
    ([0] * 9 + [1], 0.9),
    ([1, 2, 3, 4], 0.25),
    ([4, 1, 3, 2], 0.25),  # order does not matter
]


@pytest.mark.parametrize(("values", "expected"), GINI_CASES)
def test_gini_hand_cases(values, expected):
    assert gini(values) == pytest.approx(expected)


def test_gini_is_the_outputs_one():
    assert analysis.gini is outputs.gini


@pytest.mark.parametrize(("values", "expected"), GINI_CASES)
def test_lorenz_curve_hand_cases(values, expected):
    x, y = lorenz(values)
    assert (x[0], y[0], x[-1], y[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert len(x) == len(y) == max(len(values) + 1, 2) or sum(values) == 0
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)
    assert np.all(y <= x + 1e-12)  # never above the equality line
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
    assert 1 - 2 * area == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "x", "y"),
    [
        ([1, 1], [0, 0.5, 1], [0, 0.5, 1]),
        ([0, 0, 7], [0, 1 / 3, 2 / 3, 1], [0, 0, 0, 1]),
        ([3, 1], [0, 0.5, 1], [0, 0.25, 1]),
        ([], [0, 1], [0, 1]),
        ([0, 0], [0, 1], [0, 1]),  # all zero: the equality line, as gini is 0
    ],
)
def test_lorenz_points(values, x, y):
    lx, ly = lorenz(values)
    np.testing.assert_allclose(lx, x)
    np.testing.assert_allclose(ly, y)


@pytest.mark.parametrize("values", [[1, -1], [1, float("nan")], [float("inf")]])
def test_lorenz_refuses_negative_or_non_finite_values(values):
    with pytest.raises(ValueError, match="non-negative"):
        lorenz(values)


def test_lorenz_agrees_with_gini_on_random_values():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100):
        values = rng.pareto(1.5, n)
        x, y = lorenz(values)
        area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
        assert 1 - 2 * area == pytest.approx(gini(values))


# --------------------------------------------------------------------------- load_run


@pytest.fixture(scope="module")
def run(small_run):
    return load_run(small_run.path)


def test_load_run_reads_every_table_summary_and_scenario(small_run, run):
    assert isinstance(run, Run)
    assert run.name == "small-1"
    assert run.path == small_run.path
    assert run.summary == small_run.summary
    assert run.scenario["name"] == "small"
    assert run.duration == 6 * 3600 and run.settlement_interval == 60
    for name in TABLES:
        frame = getattr(run, name)
        assert list(frame.columns) == SCHEMAS[name].names
        assert len(frame) == small_run.result.tables[name].num_rows
    assert set(run.tables) == set(TABLES)
    assert load_run(run) is run
    assert "small-1" in repr(run) and "DataFrame" not in repr(run)


def test_load_run_keeps_integers_exact(run):
    assert run.ledger["amount"].dtype == np.int64
    assert run.leases["price"].dtype == np.int64
    assert run.providers["revenue"].dtype == np.int64
    # integer columns with nulls are nullable integers, not floats
    assert run.orders["first_lease_at"].dtype == pd.Int64Dtype()
    assert run.leases["closed_at"].dtype == pd.Int64Dtype()
    assert run.ledger["lease_id"].dtype == pd.Int64Dtype()
    assert run.orders["first_lease_at"].isna().any()


def test_load_run_accepts_a_string_path(small_run):
    assert load_run(str(small_run.path)).name == "small-1"


def _copy(small_run, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(small_run.path, folder)
    return folder


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        ("nothing-there", FileNotFoundError, "not a directory"),
        ("empty-folder", FileNotFoundError, "missing deployments.parquet, orders.parquet, bids.parquet, leases.parquet, ledger.parquet, providers.parquet, timeseries.parquet, summary.json, scenario.yaml"),
        ("no-leases", FileNotFoundError, r"is not a run folder: missing leases.parquet \("),
        ("no-summary", FileNotFoundError, r"missing summary.json \("),
        ("summary-is-a-list", ValueError, "summary.json: expected a mapping"),
        ("summary-is-not-json", ValueError, "summary.json: cannot be parsed"),
        ("ledger-without-amount", ValueError, "ledger.parquet: not a ledger table, missing columns amount"),
        ("bids-not-parquet", ValueError, "bids.parquet: not a readable Parquet table"),
    ],
)
def test_load_run_refuses_a_folder_that_is_not_a_run(small_run, tmp_path, damage, error, message):
    folder = _copy(small_run, tmp_path)
    if damage == "nothing-there":
        folder = tmp_path / "nothing"
    elif damage == "empty-folder":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif damage == "no-leases":
        (folder / "leases.parquet").unlink()
    elif damage == "no-summary":
        (folder / "summary.json").unlink()
    elif damage == "summary-is-a-list":
        (folder / "summary.json").write_text(json.dumps([1, 2]))
    elif damage == "summary-is-not-json":
        (folder / "summary.json").write_text("{not json")
    elif damage == "ledger-without-amount":
        table = pq.read_table(folder / "ledger.parquet")
        pq.write_table(table.drop_columns(["amount"]), folder / "ledger.parquet")
    elif damage == "bids-not-parquet":
        (folder / "bids.parquet").write_text("not parquet")
    with pytest.raises(error, match=message):
        load_run(folder)


# --------------------------------------------------------------------------- revenue


def test_revenue_by_provider_sums_to_the_summary(run):
    table = revenue_by_provider(run)
    assert int(table["revenue"].sum()) == run.summary["provider_revenue"]
    assert len(table) == run.summary["providers"]
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    assert table["revenue"].is_monotonic_decreasing
    assert table["share"].sum() == pytest.approx(1)
    assert table["cumulative_share"].iloc[-1] == pytest.approx(1)
    np.testing.assert_allclose(table["revenue_units"], table["revenue"] / 1e6)
    assert table["revenue"].dtype == np.int64
    assert int(table["leases_won"].sum()) == run.summary["leases"]
    assert set(table["strategy"]) == {"fixed", "undercut"}
    assert gini(table["revenue"]) == pytest.approx(run.summary["provider_revenue_gini"], abs=1e-6)


@pytest.mark.parametrize("by", ["strategy", "group"])
def test_revenue_by_strategy_adds_up(run, by):
    table = revenue_by_strategy(run, by=by)
    assert table.columns[0] == by
    assert int(table["revenue"].sum()) == run.summary["provider_revenue"]
    assert int(table["providers"].sum()) == run.summary["providers"]
    assert int(table["leases_won"].sum()) == run.summary["leases"]
    assert table["share"].sum() == pytest.approx(1)
    # the mean price over every lease, from the per-strategy means weighted by leases won
    weighted = (table["mean_price"] * table["leases_won"]).sum() / table["leases_won"].sum()
    assert weighted == pytest.approx(run.summary["mean_clearing_price"], abs=1)
    fixed = table.set_index(by).loc["fixed"]
    assert fixed["mean_price_units"] == 1.0  # fixed providers price at $1
    assert fixed["providers"] == 3


def test_revenue_by_strategy_utilisation_is_cpu_weighted(run):
    table = revenue_by_strategy(run).set_index("strategy")
    p = run.providers
    for strategy, rows in p.groupby("strategy"):
        expected = (rows["utilisation"] * rows["cpu"]).sum() / rows["cpu"].sum()
        assert table.loc[strategy, "mean_utilisation"] == pytest.approx(expected)


def test_revenue_by_strategy_refuses_an_unknown_grouping(run):
    with pytest.raises(ValueError, match="by must be"):
        revenue_by_strategy(run, by="colour")


# --------------------------------------------------------------------------- escrow and debt


@pytest.mark.parametrize("which", ["small_run", "mixed_run"])
def test_pauses_match_the_core_events(request, which):
    small_run = request.getfixturevalue(which)  # the small run, or the mixed one
    table = pauses(load_run(small_run.path))
    truth_paused = sorted((e.deployment_id, e.height) for e in small_run.events if isinstance(e, DeploymentPaused))
    truth_resumed = sorted((e.deployment_id, e.height) for e in small_run.events if isinstance(e, DeploymentResumed))
    assert truth_paused and truth_resumed  # the scenario exercises both
    assert sorted(zip(table["deployment_id"], table["paused_at"], strict=True)) == truth_paused
    resumed = table[table["ended"] == "resumed"]
    assert sorted(zip(resumed["deployment_id"], resumed["resumed_at"].astype(int), strict=True)) == truth_resumed


def test_a_paused_deployment_that_lost_its_leases_resumes_at_the_next_deposit(mixed_run):
    run = load_run(mixed_run.path)
    table = pauses(run)
    leases = run.leases.set_index("lease_id")
    debts = run.ledger[run.ledger["reason"] == "debt"]
    paid_on_resume = set(zip(debts["lease_id"].astype(int).map(leases["deployment_id"]), debts["block"], strict=True))
    resumed = table[table["ended"] == "resumed"]
    silent = [(d, int(b)) for d, b in zip(resumed["deployment_id"], resumed["resumed_at"], strict=True) if (d, int(b)) not in paid_on_resume]
    assert silent  # the fixture has such a resume; the events confirm it
    truth = {(e.deployment_id, e.height) for e in mixed_run.events if isinstance(e, DeploymentResumed)}
    assert set(silent) <= truth


def test_pauses_per_round_match_the_timeseries(run):
    table = pauses(run)
    per_round = Counter(table["paused_at"].tolist())
    ts = run.timeseries
    assert {int(b): int(n) for b, n in zip(ts["block"], ts["deployments_paused"], strict=True) if n} == dict(per_round)
    assert len(table) == run.summary["insufficient_funds_events"]


def test_pauses_are_consistent(run):
    table = pauses(run)
    assert set(table["ended"]) <= {"resumed", "closed", "run_end"}
    assert (table["paused_blocks"] >= 0).all()
    assert (table["ended_at"] - table["paused_at"] == table["paused_blocks"]).all()
    assert (table["paused_at"] % run.settlement_interval == 0).all()
    assert table["resumed_at"].notna().tolist() == (table["ended"] == "resumed").tolist()
    # deployments still paused at the end hold the leases the leases table says are paused
    still = table[table["ended"] == "run_end"]
    paused_leases = run.leases[run.leases["state"] == "insufficient_funds"]
    assert int(still["leases"].sum()) == len(paused_leases)
    assert run.timeseries["paused_leases"].iloc[-1] == len(paused_leases)
    assert set(table["stream"]) == {"web"}  # jobs never pause


def test_escrow_exhaustion_is_consistent_with_the_run(run):
    table = escrow_exhaustion(run)
    summary = run.summary
    assert 0 < len(table) <= summary["insufficient_funds_events"]
    assert int(table["pauses"].sum()) == summary["insufficient_funds_events"]
    assert table["deployment_id"].is_unique
    assert (table["resumes"] <= table["pauses"]).all()
    assert (table["resumed"] == (table["resumes"] > 0)).all()
    assert table["first_pause_block"].is_monotonic_increasing
    # what was written off: every write-off of a paused deployment is here; the rest came from
    # deployments closed between rounds without the escrow for the blocks since the last one
    written = int(table["debt_written_off"].sum())
    assert written <= summary["debt_written_off"]
    leases = run.leases
    elsewhere = leases.loc[~leases["deployment_id"].isin(table["deployment_id"]), "written_off"]
    assert written + int(elsewhere.sum()) == summary["debt_written_off"]
    np.testing.assert_allclose(table["debt_written_off_units"], table["debt_written_off"] / 1e6)
    # open deployments have no close reason; closed ones have one
    assert table["close_reason"].isna().tolist() == table["closed_at"].isna().tolist()
    assert set(table["close_reason"].dropna()) <= {"tenant_closed", "expired", "provider_lost", "container_failed"}


def test_escrow_exhaustion_resumed_flag_matches_the_core_events(small_run, run):
    table = escrow_exhaustion(run).set_index("deployment_id")
    resumed = Counter(e.deployment_id for e in small_run.events if isinstance(e, DeploymentResumed))
    assert table["resumes"].to_dict() == {d: resumed.get(d, 0) for d in table.index}


def test_written_off_by_stream_sums_to_the_summary(run):
    table = written_off_by_stream(run)
    summary = run.summary
    assert int(table["written_off"].sum()) == summary["debt_written_off"]
    assert int(table["deployments"].sum()) == summary["deployments"] + summary["jobs"]
    assert int(table["leases"].sum()) == summary["leases"]
    assert set(table["stream"]) == {"web", "batch"}
    rows = table.set_index("stream")
    assert rows.loc["batch", "paused"] == 0 and rows.loc["batch", "kind"] == "job"
    assert rows.loc["web", "paused"] == len(escrow_exhaustion(run))
    assert rows.loc["web", "written_off"] > 0
    assert int(table["billed"].sum()) == summary["tenant_spend"] + summary["debt_written_off"]
    assert ((table["written_off_share"] >= 0) & (table["written_off_share"] <= 1)).all()


# --------------------------------------------------------------------------- prices


def test_price_dynamics_has_one_row_per_round(run):
    table = price_dynamics(run)
    assert len(table) == len(run.timeseries)
    np.testing.assert_allclose(table["hours"], run.timeseries["block"] / 3600)
    accepted = table["accepted"] > 0
    assert table.loc[~accepted, "accepted_mean_units"].isna().all()
    assert table.loc[accepted, "accepted_mean_units"].notna().all()


def test_price_dynamics_rolling_mean_weights_each_lease_once(run):
    # a window of one round is the round's mean; a window of every round is the mean of all
    # leases accepted, the summary's mean clearing price
    one = price_dynamics(run, window_rounds=1)
    accepted = one["accepted"] > 0
    np.testing.assert_allclose(one.loc[accepted, "rolling_mean_units"], one.loc[accepted, "accepted_mean_units"])
    everything = price_dynamics(run, window_rounds=len(run.timeseries))
    last = everything["rolling_mean_units"].iloc[-1]
    assert last == pytest.approx(run.summary["mean_clearing_price"] / 1e6, abs=1e-6)
    ten = price_dynamics(run)  # by default, ten rounds
    assert ten["rolling_mean_units"].notna().sum() >= accepted.sum()


def test_price_dynamics_refuses_an_empty_window(run):
    with pytest.raises(ValueError, match="window_rounds"):
        price_dynamics(run, window_rounds=0)


# --------------------------------------------------------------------------- several runs


def test_compare_runs_puts_summaries_side_by_side(small_run, mixed_run):
    table = compare_runs([small_run.path, load_run(mixed_run.path)])
    assert list(table.columns) == ["small-1", "mixed-6"]
    assert table.loc["provider_revenue", "small-1"] == small_run.summary["provider_revenue"]
    assert table.loc["provider_revenue_units", "mixed-6"] == mixed_run.summary["provider_revenue"] / 1e6
    assert table.loc["network_fees", "mixed-6"] > 0  # the mixed run charges a fee
    assert table.loc["scenario"].tolist() == ["small", "mixed"]
    assert set(small_run.summary) <= set(table.index)
    assert table.index.get_loc("provider_revenue_units") == table.index.get_loc("provider_revenue") + 1


def test_compare_runs_tells_runs_with_the_same_name_apart(small_run, tmp_path):
    other = tmp_path / "elsewhere" / "small-1"
    shutil.copytree(small_run.path, other)
    table = compare_runs([small_run.path, other])
    assert list(table.columns) == [str(small_run.path), str(other)]


def test_compare_runs_needs_a_run():
    with pytest.raises(ValueError, match="no runs"):
        compare_runs([])


def test_strategy_comparison_stacks_each_runs_strategies(small_run, mixed_run):
    table = strategy_comparison([small_run.path, mixed_run.path])
    assert list(table.columns)[:2] == ["run", "strategy"]
    assert set(zip(table["run"], table["strategy"], strict=True)) == {
        ("small-1", "fixed"), ("small-1", "undercut"),
        ("mixed-6", "fixed"), ("mixed-6", "random-band"), ("mixed-6", "utilisation"),
    }  # fmt: skip
    for name, summary in (("small-1", small_run.summary), ("mixed-6", mixed_run.summary)):
        rows = table[table["run"] == name]
        assert int(rows["revenue"].sum()) == summary["provider_revenue"]
        assert rows["share"].sum() == pytest.approx(1)


# --------------------------------------------------------------------------- a run without leases


def test_every_helper_copes_with_a_run_without_leases(no_lease_run):
    run = load_run(no_lease_run.path)
    assert run.summary["leases"] == 0 and run.leases.empty
    providers = revenue_by_provider(run)
    assert (providers["revenue"] == 0).all() and (providers["share"] == 0).all()
    strategies = revenue_by_strategy(run)
    assert strategies["mean_price"].isna().all() and (strategies["share"] == 0).all()
    for helper in (pauses, escrow_exhaustion):
        table = helper(run)
        assert table.empty and "deployment_id" in table.columns
    written = written_off_by_stream(run)
    assert written["written_off"].tolist() == [0] and written["deployments"].tolist() == [run.summary["deployments"]]
    prices = price_dynamics(run)
    assert len(prices) == len(run.timeseries) and prices["rolling_mean_units"].isna().all()
    assert compare_runs([run]).loc["leases", "no-leases-3"] == 0
    x, y = lorenz(run.providers["revenue"])
    assert x.tolist() == [0.0, 1.0] and y.tolist() == [0.0, 1.0]


def test_inferred_pauses_agree_with_the_deployments_table(run):
    # pauses() rebuilds pauses from the ledger; the deployments table counts the core's events
    table = pauses(run)
    counted = run.deployments.set_index("deployment_id")
    inferred = table.groupby("deployment_id").size()
    assert inferred.to_dict() == counted.loc[counted["pauses"] > 0, "pauses"].to_dict()
    resumed = table[table["ended"] == "resumed"].groupby("deployment_id").size()
    assert resumed.to_dict() == counted.loc[counted["resumes"] > 0, "resumes"].to_dict()
    money = counted["spent"] + counted["refunded"] + counted["escrow"]
    assert (money == counted["deposited"]).all()

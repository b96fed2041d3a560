"""The run folder: same scenario and seed give byte-identical tables and summary; the resolved
scenario runs the same scenario again; every table has its schema; the ledger adds up."""

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
import yaml

from kova_sim import load_scenario, parse_scenario, run_scenario
from kova_sim.outputs import TABLES, gini
from kova_sim.recorder import SCHEMAS
from kova_sim.scenario import resolved

# every source of randomness the engine has: Poisson arrivals with a daily cycle, random phases,
# random-band prices, exponential and log-normal lifetimes, failures, top-up draws
BUSY = """
name: busy
seed: 11
duration: 8h
fee_bps: 150
providers:
  - name: fixed
    count: 3
    capacity: {cpu: 4, memory: 16Gi, storage: 100Gi}
    failures: {mtbf: 3h, mttr: 20m}
  - name: band
    count: 2
    capacity: {cpu: 4, memory: 16Gi, storage: 100Gi}
    pricing: {strategy: random-band, low: 0.4, high: 1.2}
  - name: costs
    capacity: {cpu: 8, memory: 32Gi, storage: 200Gi}
    pricing: {strategy: cost-plus, margin_bps: 3000}
    costs: {cpu: 0.1, memory: 0.02}
demand:
  - name: web
    arrivals: {process: poisson, rate: 25/h, daily_cycle: {amplitude: 0.6}}
    replicas: 2
    resources: {cpu: 1, memory: 2Gi, storage: 10Gi}
    max_price: 1.5
    lifetime: {distribution: lognormal, median: 40m, sigma: 1}
    deposit: {blocks: 15m}
    top_up: {policy: when-paused, probability: 0.5, delay: 2m}
    selection: {policy: weighted, price: 2, reputation: 1, response: 0.5}
  - name: jobs
    kind: job
    tenants: 3
    arrivals: {process: poisson, rate: 8/h}
    resources: {cpu: 2, memory: 4Gi, storage: 10Gi}
    max_price: 2
    runtime: {distribution: exponential, mean: 30m}
    max_runtime: 1h
    deposit: {blocks: 40m}
    selection: {policy: reputation}
    on_failure: close
"""


@pytest.fixture(scope="module")
def busy():
    return parse_scenario(yaml.safe_load(BUSY))


@pytest.fixture(scope="module")
def two_runs(busy, tmp_path_factory):
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    return run_scenario(busy, a, plots=False), a, run_scenario(busy, b, plots=False), b


def test_same_scenario_and_seed_give_identical_bytes(two_runs):
    _, a, _, b = two_runs
    for name in [*(f"{t}.parquet" for t in TABLES), "summary.json", "scenario.yaml"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_another_seed_gives_another_run(busy, two_runs, tmp_path):
    _, a, _, _ = two_runs
    other = run_scenario(busy.model_copy(update={"seed": 12}), tmp_path, plots=False)
    assert (a / "ledger.parquet").read_bytes() != (tmp_path / "ledger.parquet").read_bytes()
    assert other.summary["money_drift"] == 0


def test_the_run_exercises_what_it_should(two_runs):
    result, *_ = two_runs
    s = result.summary
    reasons = Counter(result.tables["leases"].column("close_reason").to_pylist())
    assert s["money_drift"] == 0 and s["money_conserved"] is True
    assert s["insufficient_funds_events"] > 0 and s["debt_written_off"] > 0
    assert s["network_fees"] > 0 and s["jobs"] > 0 and s["deployments"] > 0
    assert reasons["provider_lost"] > 0 and reasons["job_completed"] > 0
    assert reasons["job_timed_out"] + reasons["job_out_of_funds"] > 0


def test_tables_have_their_schemas(two_runs):
    _, a, _, _ = two_runs
    for name in TABLES:
        assert pq.read_schema(a / f"{name}.parquet").remove_metadata() == SCHEMAS[name]


def test_ledger_adds_up_to_every_balance(two_runs):
    result, a, _, _ = two_runs
    ledger = pq.read_table(a / "ledger.parquet").to_pylist()
    balances = Counter()
    for row in ledger:
        balances[row["source"]] -= row["amount"]
        balances[row["destination"]] += row["amount"]
    del balances["external"]
    market = result.simulation.market
    assert {k: v for k, v in balances.items() if v} == {
        k: v for k, v in market.balances.items() if v
    }
    assert all(v >= 0 for v in balances.values())
    providers = pq.read_table(a / "providers.parquet").to_pylist()
    for row in providers:
        assert row["revenue"] == balances[f"provider:{row['provider_id']}"]
        assert row["profit"] == row["revenue"] - row["cost"]


def test_summary_figures_agree_with_the_tables(two_runs):
    result, a, _, _ = two_runs
    summary = json.loads((a / "summary.json").read_text())
    orders = result.tables["orders"].to_pandas()
    leases = result.tables["leases"].to_pandas()
    providers = result.tables["providers"].to_pandas()
    assert summary["orders"] == len(orders) and summary["leases"] == len(leases)
    assert summary["orders_leased"] == orders["first_lease_at"].notna().sum()
    assert summary["provider_revenue"] == providers["revenue"].sum()
    assert summary["provider_revenue_gini"] == round(gini(providers["revenue"]), 6)
    assert summary["debt_written_off"] == leases["written_off"].sum()
    ttl = orders["time_to_lease"].dropna()
    assert summary["time_to_lease_median"] == ttl.median()
    series = result.tables["timeseries"].to_pandas()
    assert list(series["block"]) == list(range(60, 8 * 3600 + 1, 60))
    # the run ends on a round (8 h is a whole number of rounds): nothing is paid after it
    assert series["tenant_spend"].iloc[-1] == summary["tenant_spend"]
    assert series["written_off"].iloc[-1] == summary["debt_written_off"]


def test_resolved_scenario_runs_the_same_scenario(busy, two_runs, tmp_path):
    result, a, _, _ = two_runs
    again = load_scenario(a / "scenario.yaml")
    assert resolved(again) == resolved(busy)
    rerun = run_scenario(again, tmp_path, plots=False)
    assert (tmp_path / "ledger.parquet").read_bytes() == (a / "ledger.parquet").read_bytes()
    assert rerun.summary == result.summary


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], 0.0), ([0, 0], 0.0), ([5, 5, 5, 5], 0.0), ([0, 0, 0, 10], 0.75), ([1, 3], 0.25)],
)
def test_gini(values, expected):
    assert gini(values) == pytest.approx(expected)


def test_on_failure_decides_between_redeploy_and_close(two_runs):
    result, *_ = two_runs
    market = result.simulation.market
    lost = [lease for lease in market.leases.values() if str(lease.close_reason) == "provider_lost"]
    by_stream = Counter(result.simulation.recorder.stream_of[lease.deployment_id] for lease in lost)
    assert by_stream["jobs"] > 0 and by_stream["web"] > 0
    releases = 0
    for lease in lost:
        dep = market.deployments[lease.deployment_id]
        if result.simulation.recorder.stream_of[dep.id] == "jobs":  # on_failure: close
            assert dep.closed_at == lease.closed_at and str(dep.close_reason) == "tenant_closed"
        else:  # redeploy: the reopened order is bid on and leased again
            releases += market.orders[lease.order_id].lease_id != lease.id
    assert releases > 0


def test_common_random_numbers_across_variants(busy):
    """Changing one group's pricing, or the tenants' top-up probability, leaves the demand (and
    the other groups' phases and failures) drawn exactly as before."""
    from kova_sim import simulate

    def draws(scenario):
        sim = simulate(scenario)
        arrivals = [
            (d.created_at, sim.tenancies[d.id].duration) for d in sim.market.deployments.values()
        ]
        phases = {p.group.name: [] for p in sim.providers.values()}
        for p in sim.providers.values():
            phases[p.group.name].append(p.phase)
        failures = [p.failures for p in sim.providers.values() if p.group.name == "fixed"]
        return sorted(arrivals), phases, failures

    base = draws(busy)
    data = yaml.safe_load(BUSY)
    data["providers"][1]["pricing"] = {"strategy": "fixed", "price_per_block": 0.3}
    cheaper = parse_scenario(data)
    data = yaml.safe_load(BUSY)
    data["demand"][0]["top_up"]["probability"] = 0.9
    keener = parse_scenario(data)
    for variant in (draws(cheaper), draws(keener)):
        assert variant[0] == base[0]  # every arrival at the same block, with the same lifetime
        assert variant[1] == base[1]  # every provider polls at the same phase
        assert variant[2] == base[2]  # the failing group fails as often


# --------------------------------------------------------------------------- recording bids


def _with_record(record):
    data = yaml.safe_load(BUSY)
    if record is not None:
        data["record"] = record
    return run_scenario(parse_scenario(data), None)


def test_bid_recording_keeps_what_the_scenario_asks_and_changes_no_outcome():
    full = _with_record(None)
    top = _with_record({"bids": "top-k", "top_k": 2})
    aggregates = _with_record({"bids": "aggregates"})
    bids = full.tables["bids"].to_pandas()
    assert len(bids) == int(full.tables["orders"].to_pandas()["bids"].sum()) > 0
    # what tenants accepted, and everything else, is the same whatever is recorded
    for name in TABLES:
        if name != "bids":
            assert full.tables[name].equals(top.tables[name]), name
            assert full.tables[name].equals(aggregates.tables[name]), name
    assert aggregates.tables["bids"].num_rows == 0
    assert aggregates.tables["bids"].schema == SCHEMAS["bids"]
    # top-k: the two cheapest of each order (ties to the earlier bid) and every accepted bid
    ranked = bids.sort_values(["price", "bid_id"]).groupby("order_id").head(2)
    accepted = bids[bids["state"] == "accepted"]
    expected = sorted(set(ranked["bid_id"]) | set(accepted["bid_id"]))
    kept = top.tables["bids"].to_pandas()
    assert kept["bid_id"].tolist() == expected
    assert kept.equals(bids[bids["bid_id"].isin(expected)].reset_index(drop=True))
    assert len(kept) < len(bids)
    # per-order aggregates, written in every mode, agree with the full bid table
    orders = aggregates.tables["orders"].to_pandas().set_index("order_id")
    by_order = bids.groupby("order_id")["price"]
    for column, values in (("bid_min_price", by_order.min()), ("bid_max_price", by_order.max()),
                           ("bid_median_price", by_order.median())):
        assert orders.loc[values.index, column].tolist() == values.tolist(), column
    assert orders.loc[orders["bids"] == 0, "bid_min_price"].isna().all()


def test_bad_recording_names_the_field():
    data = yaml.safe_load(BUSY)
    data["record"] = {"bids": "some", "top_k": 0}
    with pytest.raises(Exception) as caught:
        parse_scenario(data)
    text = str(caught.value)
    assert "record.bids" in text and "record.top_k" in text

"""The shipped scenarios: each is valid, says what it answers, conserves money to the micro-unit,
and shows what its comment says it shows.

Each runs once, at full size, in a module fixture (about 5-10 s each with the exact engine).
"""

from collections import Counter
from pathlib import Path

import pytest

from kova_sim import load_scenario, run_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SHIPPED = [
    "baseline",
    "price-war",
    "scarcity",
    "budget-exhaustion",
    "jobs-batch",
    "mixed-strategies",
]


BENCHMARKS = ["bench-large"]
"""Research-scale scenarios for benchmarks/sim_scale.py: checked here, run there."""


def test_the_six_are_shipped_and_nothing_else_is_untested():
    assert sorted(p.stem for p in SCENARIOS.glob("*.yaml")) == sorted(SHIPPED + BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_scenarios_are_valid_and_as_large_as_promised(name):
    path = SCENARIOS / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("#") and "Question:" in text.split("\nname:")[0]
    scenario = load_scenario(path)
    assert scenario.name == name
    assert sum(g.count for g in scenario.providers) == 10_000
    assert len({g.pricing.strategy for g in scenario.providers}) == 5
    assert any(g.failures for g in scenario.providers)
    assert all(s.top_up.policy == "when-paused" for s in scenario.demand)
    expected_orders = sum(s.arrivals.rate * s.replicas for s in scenario.demand) * (
        scenario.duration / 3600
    )
    assert expected_orders >= 250_000


def test_bench_large_is_what_its_generator_writes(tmp_path):
    import subprocess
    import sys

    script = SCENARIOS.parent / "benchmarks" / "make_bench_large.py"
    out = tmp_path / "bench-large.yaml"
    subprocess.run([sys.executable, script, "--out", out], check=True, capture_output=True)
    assert out.read_text() == (SCENARIOS / "bench-large.yaml").read_text()


def test_large_solo_keeps_each_regions_capacity_in_one_provider():
    # benchmarks/sim_scale.py --parts large-solo: bench-large's orders with one bidder each
    import importlib.util

    path = SCENARIOS.parent / "benchmarks" / "sim_scale.py"
    spec = importlib.util.spec_from_file_location("sim_scale", path)
    sim_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim_scale)
    base = load_scenario(SCENARIOS / "bench-large.yaml")
    solo = base.model_copy(update=sim_scale.large_solo_changes())

    def by_region(scenario):
        totals = {}
        for g in scenario.providers:
            cpu, count = totals.get(g.attributes["region"], (0, 0))
            totals[g.attributes["region"]] = (cpu + g.capacity.cpu * g.count, count + g.count)
        return totals

    assert {r: cpu for r, (cpu, _) in by_region(solo).items()} == {
        r: cpu for r, (cpu, _) in by_region(base).items()
    }
    assert all(count == 1 for _, count in by_region(solo).values())
    assert len(solo.providers) == len({s.attributes["region"] for s in base.demand}) == 100
    assert solo.demand == base.demand


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request):
    path = SCENARIOS / f"{request.param}.yaml"
    return path, run_scenario(load_scenario(path), None)


def test_each_says_what_it_answers_and_is_named_after_its_file(shipped):
    path, result = shipped
    text = path.read_text()
    assert text.startswith("#") and "Question:" in text.split("\nname:")[0]
    assert result.simulation.scenario.name == path.stem
    assert result.simulation.scenario.seed == 1


def test_money_is_conserved_to_the_micro_unit(shipped):
    _, result = shipped
    market = result.simulation.market
    assert result.summary["money_drift"] == 0 == market.money_drift()
    assert all(balance >= 0 for balance in market.balances.values())
    balances = Counter()
    for t in market.ledger:
        balances[t.source] -= t.amount
        balances[t.destination] += t.amount
    assert balances.pop("external") == -(market.credited - market.withdrawn)
    assert +balances == +Counter(market.balances)
    s = result.summary
    escrow = sum(v for k, v in market.balances.items() if k.startswith("escrow:"))
    assert s["credited"] == s["tenant_spend"] + s["refunded"] + escrow


def _providers(result):
    return result.tables["providers"].to_pandas()


def _leases(result):
    return result.tables["leases"].to_pandas()


def test_each_shows_what_it_claims(shipped):
    path, result = shipped
    s = result.summary
    name = path.stem
    if name == "baseline":
        assert s["fill_rate"] == 1.0 and s["mean_clearing_price"] == 1_000_000
        assert s["insufficient_funds_events"] == 0 and 0.5 < s["utilisation"] < 0.75
    elif name == "price-war":
        by_strategy = _providers(result).groupby("strategy")["revenue"].sum()
        share = by_strategy["undercut"] / by_strategy.sum()
        assert share > 0.5, "the undercutters, a third of the capacity, take most revenue"
        assert s["mean_clearing_price"] < 1_000_000
    elif name == "scarcity":
        assert s["fill_rate"] < 0.8 and s["orders_given_up"] > 0 and s["utilisation"] > 0.9
        leases = _leases(result)
        providers = _providers(result).set_index("provider_id")
        utilisation_priced = leases[
            leases.provider_id.map(providers["strategy"]) == "utilisation"
        ]
        assert (utilisation_priced.price == utilisation_priced.price.max()).mean() > 0.5
    elif name == "budget-exhaustion":
        assert s["insufficient_funds_events"] > 100 and s["debt_written_off"] > 0
        reasons = Counter(result.tables["ledger"].column("reason").to_pylist())
        assert reasons["debt"] > 0, "some tenants top up and resume"
    elif name == "jobs-batch":
        assert s["jobs"] > 5 * s["deployments"]
        reasons = Counter(_leases(result)["close_reason"].dropna())
        assert reasons["job_completed"] > 0 and reasons["job_timed_out"] > 0
        assert reasons["job_out_of_funds"] > 0
    elif name == "mixed-strategies":
        strategies = set(_providers(result)["strategy"])
        assert strategies == {"fixed", "cost-plus", "utilisation", "undercut", "random-band"}
        assert _providers(result)["failures"].sum() > 0
    else:  # pragma: no cover - the list above is the list of files
        pytest.fail(f"no claim checked for {name}")

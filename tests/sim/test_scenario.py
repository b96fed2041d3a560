"""Scenario files: quantities, defaults, the resolved form, and the reference in docs/."""

import re
from pathlib import Path

import pytest
import yaml

from kova_sim import ScenarioError, parse_scenario
from kova_sim.scenario import resolved, units

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = {
    "name": "m",
    "duration": "1h",
    "providers": [{"capacity": {"cpu": 4, "memory": "8Gi", "storage": "100Gi"}}],
    "demand": [
        {
            "arrivals": {"process": "poisson", "rate": 6},
            "resources": {"cpu": "500m", "memory": "512Mi", "storage": "1Gi"},
            "max_price": "1.25",
            "lifetime": {"distribution": "fixed", "value": "10m"},
        }
    ],
}


def test_quantities_become_exact_integers():
    s = parse_scenario(MINIMAL)
    assert s.duration == 3600 and s.poll_interval == 15 and s.settlement_interval == 60
    stream = s.demand[0]
    assert stream.max_price == 1_250_000
    assert (stream.resources.cpu, stream.resources.memory) == (500, 512 * 1024**2)
    assert stream.lifetime.value == 600
    assert s.providers[0].name == "group-0" and stream.name == "stream-0"


@pytest.mark.parametrize(
    ("rate", "per_hour"), [(6, 6.0), ("6/h", 6.0), ("0.5/m", 30.0), ("48/d", 2.0), ("1/s", 3600.0)]
)
def test_rates(rate, per_hour):
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    data["demand"][0]["arrivals"]["rate"] = rate
    assert parse_scenario(data).demand[0].arrivals.rate == pytest.approx(per_hour)


@pytest.mark.parametrize(("micro", "written"), [(0, 0), (1_000_000, 1), (1_500_000, "1.5"), (1, "0.000001")])
def test_money_is_written_back_in_units(micro, written):
    assert units(micro) == written


def test_money_in_strategy_parameters_is_in_units():
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    data["providers"][0]["pricing"] = {"strategy": "undercut", "floor": 0.5, "step": "0.01"}
    strategy = parse_scenario(data).providers[0].pricing.build()
    assert (strategy.floor, strategy.step) == (500_000, 10_000)
    data["providers"][0]["pricing"] = {"strategy": "cost-plus", "margin_bps": 1500}
    data["providers"][0]["costs"] = {"cpu": 0.02}
    strategy = parse_scenario(data).providers[0].pricing.build(parse_scenario(data).providers[0].costs)
    assert (strategy.cpu_cost, strategy.margin_bps) == (20_000, 1500)


def test_cost_plus_needs_a_cost_somewhere():
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    data["providers"][0]["pricing"] = {"strategy": "cost-plus"}
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data)
    assert [str(p) for p in err.value.problems] == [
        "providers[0].pricing.cpu_cost: cost-plus needs at least one unit cost > 0"
    ]


def test_resolved_fills_every_default_and_reads_back_the_same():
    s = parse_scenario(MINIMAL)
    data = resolved(s)
    assert data["providers"][0]["pricing"] == {"strategy": "fixed", "price_per_block": 1}
    assert data["demand"][0]["selection"] == {"policy": "cheapest"}
    assert data["demand"][0]["top_up"]["policy"] == "never"
    assert data["demand"][0]["max_price"] == "1.25"
    again = parse_scenario(yaml.safe_load(yaml.safe_dump(data)))
    assert resolved(again) == data


def test_duplicate_names_are_refused():
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    data["providers"] = data["providers"] * 2
    data["providers"][0]["name"] = data["providers"][1]["name"] = "same"
    with pytest.raises(ScenarioError, match="two provider groups are named 'same'"):
        parse_scenario(data)


def test_every_problem_is_reported_at_once():
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    data["duration"] = 0
    data["demand"][0]["max_price"] = "lots"
    data["providers"][0]["count"] = -1
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data)
    paths = sorted(p.path for p in err.value.problems)
    assert paths == ["demand[0].max_price", "duration", "providers[0].count"]


def test_the_reference_example_in_the_docs_is_valid():
    text = (ROOT / "docs" / "simulator.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    scenario = parse_scenario(yaml.safe_load(example))
    assert scenario.name == "example" and scenario.providers[0].failures.mtbf == 3 * 86400

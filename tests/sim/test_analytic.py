"""Checks where theory gives the answer.

- M/M/inf: with ample capacity, Poisson arrivals at rate lambda and exponential lifetimes of mean
  1/mu, the time-averaged number of active leases is lambda/mu; the run's own batch means give
  the confidence interval.
- With fixed prices and ample escrow, a provider earns exactly blocks leased x price.
- Escrow exhaustion: a lease paying p per block from escrow E pauses at the first settlement
  round after E / p blocks of billing.
"""

import itertools
import math

import numpy as np
import pytest
import yaml

from kova_sim import parse_scenario, run_scenario, simulate

T_99_19 = 2.861  # Student t, 99% two-sided, 19 degrees of freedom

MM_INF = """
name: mm-inf
seed: 7
duration: 3d
providers:
  - capacity: {cpu: 1000, memory: 4000Gi, storage: 40Ti}   # never the bottleneck
demand:
  - arrivals: {process: poisson, rate: 60/h}              # lambda = 1/60 per block
    resources: {cpu: 1, memory: 1Gi, storage: 1Gi}
    max_price: 2
    lifetime: {distribution: exponential, mean: 30m}        # 1/mu = 1800 blocks
    deposit: {blocks: 1d}
"""


def _time_average(starts, ends, a, b):
    """Mean number of intervals [start, end) covering a block of [a, b)."""
    overlap = np.clip(np.minimum(ends, b) - np.maximum(starts, a), 0, None)
    return overlap.sum() / (b - a)


def test_active_leases_match_lambda_over_mu():
    result = run_scenario(parse_scenario(yaml.safe_load(MM_INF)))
    leases = result.tables["leases"].to_pandas()
    duration = result.simulation.scenario.duration
    starts = leases["created_at"].to_numpy()
    ends = leases["closed_at"].fillna(duration).to_numpy()
    warmup, batches = 2 * 3600, 20
    edges = np.linspace(warmup, duration, batches + 1).astype(int)
    means = np.array([_time_average(starts, ends, a, b) for a, b in itertools.pairwise(edges)])
    half_width = T_99_19 * means.std(ddof=1) / math.sqrt(batches)
    expected = (60 / 3600) * 1800  # lambda / mu = 30
    assert half_width < 3, "the interval is too wide to tell anything"
    assert abs(means.mean() - expected) <= half_width, (means.mean(), half_width)
    assert result.summary["insufficient_funds_events"] == 0
    assert result.summary["fill_rate"] == 1.0


def test_timeseries_counts_the_leases_active_at_each_round():
    result = run_scenario(parse_scenario(yaml.safe_load(MM_INF) | {"duration": "12h"}))
    leases = result.tables["leases"].to_pandas()
    series = result.tables["timeseries"].to_pandas()
    created = leases["created_at"].to_numpy()
    closed = leases["closed_at"].fillna(np.iinfo(np.int64).max).to_numpy()
    for block, active in zip(series["block"], series["active_leases"], strict=True):
        # a round runs before any command of its block: a lease that starts at the round's block
        # is not yet billed; one that closes at it still is
        assert active == int(((created < block) & (closed >= block)).sum())


FIXED_PRICES = """
name: fixed-prices
seed: 3
duration: 6h                      # a whole number of rounds: the last round pays to the end
providers:
  - name: cheap
    capacity: {cpu: 4, memory: 16Gi, storage: 100Gi}
    pricing: {strategy: fixed, price_per_block: 0.7}
  - name: middle
    count: 2
    capacity: {cpu: 4, memory: 16Gi, storage: 100Gi}
  - name: dear
    capacity: {cpu: 8, memory: 32Gi, storage: 200Gi}
    pricing: {strategy: fixed, price_per_block: 1.3}
demand:
  - arrivals: {process: poisson, rate: 30/h}
    resources: {cpu: 1, memory: 2Gi, storage: 10Gi}
    max_price: 2
    lifetime: {distribution: exponential, mean: 40m}
    deposit: {blocks: 1d}
"""


def test_fixed_price_revenue_is_blocks_leased_times_price():
    result = run_scenario(parse_scenario(yaml.safe_load(FIXED_PRICES)))
    duration = result.simulation.scenario.duration
    leases = result.tables["leases"].to_pandas()
    providers = result.tables["providers"].to_pandas().set_index("provider_id")
    assert result.summary["insufficient_funds_events"] == 0
    blocks = leases["closed_at"].fillna(duration).astype("int64") - leases["created_at"]
    earned = (blocks * leases["price"]).groupby(leases["provider_id"]).sum()
    assert len(earned) == len(providers) == 4, "every provider should have won some work"
    for provider_id, revenue in providers["revenue"].items():
        assert revenue == earned.get(provider_id, 0)
    prices = dict(zip(providers["group"], providers.index, strict=True))
    assert set(leases.loc[leases.provider_id == prices["cheap"], "price"]) == {700_000}


EXHAUSTION = """
name: exhaustion
seed: 5
duration: 4h
providers:
  - capacity: {cpu: 100, memory: 400Gi, storage: 4Ti}
    pricing: {strategy: fixed, price_per_block: 0.75}
demand:
  - arrivals: {process: poisson, rate: 20/h}
    resources: {cpu: 1, memory: 1Gi, storage: 1Gi}
    max_price: 2
    lifetime: {distribution: fixed, value: 3h}
    deposit: {blocks: 7m}          # 420 blocks at $2 = $840: 1120 blocks at $0.75
"""


def test_escrow_runs_out_at_balance_over_burn_rate():
    sim = simulate(parse_scenario(yaml.safe_load(EXHAUSTION)), keep_events=True)
    paused = {e.lease_id: e.height for e in sim.events if type(e).__name__ == "LeasePaused"}
    started = [lease for lease in sim.market.leases.values()]
    assert len(paused) > 20
    for lease in started:
        blocks_paid_for = (420 * 2_000_000) // lease.price  # balance / burn rate
        exhausted = lease.created_at + blocks_paid_for
        first_round_after = (exhausted // 60 + 1) * 60
        if first_round_after <= 4 * 3600:
            assert paused[lease.id] == first_round_after
        else:
            assert lease.id not in paused


@pytest.mark.parametrize("amplitude", [0.0, 0.8])
def test_daily_cycle_keeps_the_mean_rate(amplitude):
    from kova_sim.engine import arrival_times

    doc = yaml.safe_load(MM_INF)
    doc["demand"][0]["arrivals"] = {
        "process": "poisson",
        "rate": "120/h",
        "daily_cycle": {"amplitude": amplitude, "peak": "14h"},
    }
    scenario = parse_scenario(doc | {"duration": "20d"})
    times = np.array(list(arrival_times(scenario.demand[0], np.random.default_rng(1), 20 * 86400)))
    assert abs(len(times) / (20 * 24) - 120) < 3 * math.sqrt(120 / 24)  # 3 sigma of the daily mean
    hours = (times % 86400) // 3600
    by_hour = np.bincount(hours, minlength=24)
    if amplitude:
        assert by_hour[14] > 1.5 * by_hour[2]  # the peak at 2 pm, the trough at 2 am
    else:
        assert by_hour.max() < 1.3 * by_hour.min()

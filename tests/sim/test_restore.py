"""A market restored from records (``Market.restore``) goes on exactly as the one it was taken
from: every shipped scenario's recorded commands (shortened) are replayed twice, straight
through, and with the market forgetting its closed deployments and being rebuilt from copies of
its records at several points; the ledgers, the leases that remain and the balances agree."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import yaml

from kova_core import BidState, Market
from kova_sim.commands import _Replay, market_for, read_commands
from kova_sim.run import run_scenario
from kova_sim.scenario import parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
CASES = ["baseline", "budget-exhaustion", "jobs-batch", "mixed-strategies", "price-war", "scarcity"]


def records(market: Market) -> dict:
    """What a driver would have stored: copies of the records, open bids only."""
    copy = dataclasses.replace
    return {
        "height": market.height, "last_round": market.last_round,
        "balances": dict(market.balances), "credited": market.credited,
        "withdrawn": market.withdrawn, "next_ids": dict(market.next_ids),
        "tenants": [copy(t) for t in market.tenants.values()],
        "providers": [copy(p) for p in market.providers.values()],
        "deployments": [copy(d) for d in market.deployments.values()],
        "orders": [copy(o) for o in market.orders.values()],
        "bids": [copy(b) for b in market.bids.values() if b.state is BidState.OPEN],
        "leases": [copy(x) for x in market.leases.values()],
    }  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_a_restored_market_goes_on_as_the_one_it_was_taken_from(name, tmp_path):
    data = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    data["duration"] = "6h"
    for group in data["providers"]:
        group["count"] = max(1, group["count"] // 4)
    path = tmp_path / "commands.jsonl"
    run_scenario(parse_scenario(data), None, engine="exact", commands=path)
    header, commands = read_commands(path)

    straight = _Replay(market_for(header), header)
    for line in commands:
        straight.issue(line)
    reference = straight.market

    settings = {"fee_bps": header["fee_bps"], "settlement_interval": header["settlement_interval"],
                "accepted_denoms": header["accepted_denoms"]}  # fmt: skip
    cuts = set(random.Random(name).sample(range(len(commands)), 8))
    rebuilt = _Replay(Market(**settings), header)
    ledger = []
    forgotten = 0
    for i, line in enumerate(commands):
        if i in cuts:
            ledger += rebuilt.market.ledger
            forgotten += len(rebuilt.market.forget_closed())
            rebuilt.market = Market.restore(**records(rebuilt.market), **settings)
        rebuilt.issue(line)
    ledger += rebuilt.market.ledger
    market = rebuilt.market

    assert ledger == reference.ledger
    assert {k: v for k, v in market.balances.items() if v} == {
        k: v for k, v in reference.balances.items() if v
    }
    assert forgotten > 0 and len(market.deployments) < len(reference.deployments)
    for lease_id, lease in market.leases.items():
        assert lease == reference.leases[lease_id]
    for dep_id, dep in market.deployments.items():
        assert market.escrow(dep_id) == reference.escrow(dep_id)
        assert dep.state == reference.deployments[dep_id].state
    for provider_id, provider in market.providers.items():
        twin = reference.providers[provider_id]
        assert (provider.free, provider.completed, provider.failed) == (
            twin.free, twin.completed, twin.failed)
    assert market.open_orders() == [o for o in reference.open_orders() if o.id in market.orders]
    assert market.money_drift() == 0

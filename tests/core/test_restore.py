"""What a live driver needs of the market beyond the simulator's commands: ids numbered by the
driver, a provider whose machine changes, auditors, no ledger kept in memory, forgetting closed
deployments, and rebuilding from records (``Market.restore``; the long check that a restored
market goes on exactly as the original is ``tests/sim/test_restore.py``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kova_core import (
    FixedPrice,
    InvalidAmount,
    Market,
    PlacementMismatch,
    Resources,
    UnknownEntity,
    parse_manifest,
)

from .helpers import GIB, big_provider, check_invariants, manifest


def test_ids_numbered_by_the_driver():
    market = Market()
    assert market.add_tenant("a", tenant_id=7) == 7
    assert market.add_tenant("b") == 8  # numbering goes on after the given one
    with pytest.raises(InvalidAmount):
        market.add_tenant("c", tenant_id=7)
    with pytest.raises(InvalidAmount):
        market.add_tenant("d", tenant_id=0)
    box = Resources(cpu=1000, memory=GIB, storage=GIB)
    assert market.add_provider(capacity=box, provider_id=3) == 3


def test_a_provider_whose_machine_shrinks_bids_on_nothing_until_it_fits():
    market = Market()
    tenant = market.add_tenant()
    market.credit(tenant, 10_000_000, 0)
    provider = big_provider(market)
    market.create_deployment(tenant, manifest(count=2), 1_000_000, 0)
    rng = np.random.default_rng(0)
    placed = market.poll(provider, FixedPrice(price_per_block=1000), rng, 1)
    assert len(placed) == 2
    market.update_provider(provider, capacity=Resources(cpu=500, memory=GIB, storage=GIB),
                           attributes={"region": "eu"}, gpu_models=(), height=2)  # fmt: skip
    shrunk = market.providers[provider]
    assert not Resources().fits_in(shrunk.free)  # its bids reserve more than it has
    assert shrunk.attributes == {"region": "eu"}
    market.create_deployment(tenant, manifest(), 1_000_000, 3)
    # the poll withdraws the newer bid; the older one (half a core) fits what is left
    events = market.poll(provider, FixedPrice(price_per_block=1000), rng, 4)
    assert [type(e).__name__ for e in events] == ["BidWithdrawn"]
    check_invariants(market)


def test_auditors_a_driver_sets_count_for_signed_by():
    market = Market()
    tenant = market.add_tenant()
    market.credit(tenant, 10_000_000, 0)
    provider = big_provider(market)
    signed = parse_manifest({
        "version": "2.0", "services": {"web": {"image": "busybox:1.36"}},
        "profiles": {"compute": {"web": {"resources": {"cpu": {"units": 0.5},
                                                       "memory": {"size": "512Mi"},
                                                       "storage": {"size": "1Gi"}}}},
                     "placement": {"dc": {"signedBy": {"anyOf": ["auditor:9"]},
                                          "pricing": {"web": {"denom": "uakt", "amount": 10}}}}},
        "deployment": {"web": {"dc": {"profile": "web", "count": 1}}},
    })  # fmt: skip
    events = market.create_deployment(tenant, signed, 1000, 0)
    order_id = events[-1].order_id
    with pytest.raises(PlacementMismatch):
        market.place_bid(order_id, provider, 5, 1)
    market.set_auditors(provider, {"auditor:9"}, 2)
    assert market.place_bid(order_id, provider, 5, 3)


def test_without_a_ledger_in_memory_the_transfers_are_still_returned():
    market = Market(keep_ledger=False)
    tenant = market.add_tenant()
    events = market.credit(tenant, 5, 0)
    assert events and market.ledger == [] and market.balance(f"tenant:{tenant}") == 5


def test_closed_deployments_are_forgotten_and_then_unknown():
    market = Market()
    tenant = market.add_tenant()
    market.credit(tenant, 10_000_000, 0)
    provider = big_provider(market)
    dep = market.create_deployment(tenant, manifest(), 1_000_000, 0)[0].deployment_id
    (bid,) = market.poll(provider, FixedPrice(price_per_block=1000), np.random.default_rng(0), 1)
    market.accept_bid(bid.bid_id, 2)
    market.close_deployment(dep, 100)
    assert market.forget_closed() == [dep]
    assert market.forget_closed() == []
    assert not market.deployments and not market.orders and not market.leases
    assert not market.bids
    with pytest.raises(UnknownEntity):
        market.close_deployment(dep, 101)
    assert market.providers[provider].completed == 1  # its record stays
    assert market.providers[provider].free == market.providers[provider].capacity
    assert market.money_drift() == 0


def test_records_that_do_not_fit_together_are_refused():
    market = Market()
    tenant = market.add_tenant()
    market.credit(tenant, 10_000_000, 0)
    big_provider(market)
    market.create_deployment(tenant, manifest(), 1_000_000, 0)
    orders = [dataclasses.replace(o) for o in market.orders.values()]
    with pytest.raises(ValueError, match="do not hold"):
        Market.restore(height=0, last_round=0, balances={}, credited=0, withdrawn=0,
                       orders=orders)  # fmt: skip  (no deployment for the order)
    with pytest.raises(ValueError, match="deferred"):
        Market.restore(height=0, last_round=0, balances={}, credited=0, withdrawn=0,
                       defer_rounds=True)  # fmt: skip

"""Whole traces of small hand-made scenarios: every core event the engine caused, with its block.

Each scenario has one provider polling every 15 blocks from a fixed phase and one scheduled
arrival, so every block in the trace can be worked out by hand (the comments do it).
"""

import textwrap

import pytest
import yaml

from kova_sim import parse_scenario, simulate

DEPLOYMENT = """
name: trace
duration: 400
providers:
  - capacity: {cpu: 2, memory: 4Gi, storage: 20Gi}
    poll_phase: 3                      # polls at 3, 18, 33, ...; fixed $1/block (the default)
demand:
  - arrivals: {process: scheduled, at: [10]}
    resources: {cpu: 1, memory: 1Gi, storage: 1Gi}
    max_price: 2
    lifetime: {distribution: fixed, value: 300}   # from the first lease: closes at 30 + 300
    deposit: {blocks: 90}              # 90 x $2 = $180 of escrow
    review_window: 20                  # the tenant chooses at 10 + 20
    top_up: {policy: when-paused, probability: 1, delay: 20, blocks: 60}
"""

DEPLOYMENT_TRACE = """
@10 Transfer(source=external, destination=tenant:1, amount=180000000, reason=credit)
@10 DeploymentCreated(deployment_id=1, tenant_id=1, kind=deployment)
@10 Transfer(source=tenant:1, destination=escrow:1, amount=180000000, reason=deposit)
@10 OrderOpened(order_id=1, deployment_id=1)
@18 BidPlaced(bid_id=1, order_id=1, provider_id=1, price=1000000, response_time=8)
@30 LeaseStarted(lease_id=1, deployment_id=1, order_id=1, provider_id=1, price=1000000)
@60 Transfer(source=escrow:1, destination=provider:1, amount=30000000, reason=settlement, lease_id=1, start=30, end=60)
@60 SettlementRound(deployments_paid=1, deployments_paused=0, amount_paid=30000000)
@120 Transfer(source=escrow:1, destination=provider:1, amount=60000000, reason=settlement, lease_id=1, start=60, end=120)
@120 SettlementRound(deployments_paid=1, deployments_paused=0, amount_paid=60000000)
@180 Transfer(source=escrow:1, destination=provider:1, amount=60000000, reason=settlement, lease_id=1, start=120, end=180)
@180 SettlementRound(deployments_paid=1, deployments_paused=0, amount_paid=60000000)
@240 LeasePaused(lease_id=1, deployment_id=1, provider_id=1, debt=60000000)
@240 DeploymentPaused(deployment_id=1, debt=60000000)
@240 SettlementRound(deployments_paid=0, deployments_paused=1, amount_paid=0)
@260 Transfer(source=external, destination=tenant:1, amount=180000000, reason=credit)
@260 Transfer(source=tenant:1, destination=escrow:1, amount=180000000, reason=deposit)
@260 Transfer(source=escrow:1, destination=provider:1, amount=60000000, reason=debt, lease_id=1, start=180, end=240)
@260 LeaseResumed(lease_id=1, deployment_id=1, provider_id=1)
@260 DeploymentResumed(deployment_id=1)
@300 Transfer(source=escrow:1, destination=provider:1, amount=40000000, reason=settlement, lease_id=1, start=260, end=300)
@300 SettlementRound(deployments_paid=1, deployments_paused=0, amount_paid=40000000)
@330 Transfer(source=escrow:1, destination=provider:1, amount=30000000, reason=close, lease_id=1, start=300, end=330)
@330 LeaseClosed(lease_id=1, deployment_id=1, provider_id=1, reason=tenant_closed)
@330 OrderClosed(order_id=1, deployment_id=1, reason=tenant_closed)
@330 Transfer(source=escrow:1, destination=tenant:1, amount=80000000, reason=refund)
@330 DeploymentClosed(deployment_id=1, reason=tenant_closed)
@360 SettlementRound(deployments_paid=0, deployments_paused=0, amount_paid=0)
"""
# 18: the first poll after the order opened at 10.  30: the review window ends; billing starts.
# 60/120/180: rounds pay 30, 60, 60 blocks at $1.  240: $30 left < $60 owed: nothing is paid,
# the lease pauses with its debt.  260: the top-up (delay 20) is the debt plus 60 blocks at the
# max price, $60 + $120; the debt is paid for [180, 240) and billing restarts at 260 (the paused
# blocks 240-260 are never billed).  330: closed after its 300-block lifetime; 180 + 180 - 60 -
# 60 - 60 - 40 - 30 = $80 goes back.  No round at 420: the run ends at 400.

JOB = """
name: job
duration: 200
providers:
  - capacity: {cpu: 2, memory: 4Gi, storage: 20Gi}
    poll_phase: 0
    pricing: {strategy: fixed, price_per_block: 0.5}
demand:
  - kind: job
    arrivals: {process: scheduled, at: [5]}
    resources: {cpu: 1, memory: 1Gi, storage: 1Gi}
    max_price: 1
    runtime: {distribution: fixed, value: 100}
    deposit: {blocks: 150}
    review_window: 20
"""

JOB_TRACE = """
@5 Transfer(source=external, destination=tenant:1, amount=150000000, reason=credit)
@5 DeploymentCreated(deployment_id=1, tenant_id=1, kind=job)
@5 Transfer(source=tenant:1, destination=escrow:1, amount=150000000, reason=deposit)
@5 OrderOpened(order_id=1, deployment_id=1)
@15 BidPlaced(bid_id=1, order_id=1, provider_id=1, price=500000, response_time=10)
@25 LeaseStarted(lease_id=1, deployment_id=1, order_id=1, provider_id=1, price=500000)
@60 SettlementRound(deployments_paid=0, deployments_paused=0, amount_paid=0)
@120 SettlementRound(deployments_paid=0, deployments_paused=0, amount_paid=0)
@125 Transfer(source=escrow:1, destination=provider:1, amount=50000000, reason=close, lease_id=1, start=25, end=125)
@125 LeaseClosed(lease_id=1, deployment_id=1, provider_id=1, reason=job_completed)
@125 OrderClosed(order_id=1, deployment_id=1, reason=job_completed)
@125 Transfer(source=escrow:1, destination=tenant:1, amount=100000000, reason=refund)
@125 DeploymentClosed(deployment_id=1, reason=job_completed)
@180 SettlementRound(deployments_paid=0, deployments_paused=0, amount_paid=0)
"""
# A job is charged at completion, not per round: 100 blocks x $0.5 at 125, the rest refunded.

GIVE_UP = """
name: giveup
duration: 100
providers:
  - capacity: {cpu: 2, memory: 4Gi, storage: 20Gi}
    poll_phase: 0                      # asks $1, above the tenant's max: never bids
demand:
  - arrivals: {process: scheduled, at: [10]}
    resources: {cpu: 1, memory: 1Gi, storage: 1Gi}
    max_price: 0.5
    lifetime: {distribution: fixed, value: 100}
    deposit: {blocks: 10}
    review_window: 20
    patience: 60
"""

GIVE_UP_TRACE = """
@10 Transfer(source=external, destination=tenant:1, amount=5000000, reason=credit)
@10 DeploymentCreated(deployment_id=1, tenant_id=1, kind=deployment)
@10 Transfer(source=tenant:1, destination=escrow:1, amount=5000000, reason=deposit)
@10 OrderOpened(order_id=1, deployment_id=1)
@60 SettlementRound(deployments_paid=0, deployments_paused=0, amount_paid=0)
@70 OrderClosed(order_id=1, deployment_id=1, reason=expired)
@70 Transfer(source=escrow:1, destination=tenant:1, amount=5000000, reason=refund)
@70 DeploymentClosed(deployment_id=1, reason=tenant_closed)
"""
# The tenant looks at 30, 50 and 70; at 70 its patience (60 from 10) is over: the order is given
# up and, with nothing running, the tenant closes the deployment and gets its deposit back.


@pytest.mark.parametrize(
    ("scenario", "trace"),
    [(DEPLOYMENT, DEPLOYMENT_TRACE), (JOB, JOB_TRACE), (GIVE_UP, GIVE_UP_TRACE)],
    ids=["deployment", "job", "give-up"],
)
def test_whole_trace(scenario, trace):
    sim = simulate(parse_scenario(yaml.safe_load(scenario)), keep_events=True)
    assert [str(e) for e in sim.events] == textwrap.dedent(trace).strip().splitlines()
    assert sim.market.money_drift() == 0


def test_every_provider_polls_at_its_phase_then_every_interval():
    doc = yaml.safe_load(DEPLOYMENT)
    doc["providers"] = [
        {"name": "a", "capacity": {"cpu": 2, "memory": "4Gi", "storage": "20Gi"}, "poll_phase": 7},
        {"name": "b", "count": 2, "capacity": {"cpu": 2, "memory": "4Gi", "storage": "20Gi"}},
    ]
    doc["demand"][0]["arrivals"] = {"process": "scheduled", "at": [0, 100, 200]}
    doc["demand"][0]["replicas"] = 1
    doc["demand"][0]["review_window"] = 14  # choose before the next poll round of bids
    sim = simulate(parse_scenario(doc), keep_events=True)
    phases = {p.id: p.phase for p in sim.providers.values()}
    assert phases[1] == 7
    assert all(0 <= phase < 15 for phase in phases.values())
    for event in sim.events:
        if type(event).__name__ == "BidPlaced":
            # a bid is placed at a poll: phase + k x 15
            assert (event.height - phases[event.provider_id]) % 15 == 0
            order = sim.market.orders[event.order_id]
            # ... and at the provider's first poll after the order opened
            assert event.height - order.created_at < 15


def test_a_reopened_order_is_reviewed_again_while_a_sibling_still_waits():
    # three replicas on two one-core providers: the third order waits all day while the two
    # leases fail and reopen; each reopened order must be looked after again
    doc = {
        "name": "siblings",
        "seed": 1,
        "duration": "6h",
        "providers": [
            {
                "count": 2,
                "capacity": {"cpu": 1, "memory": "4Gi", "storage": "20Gi"},
                "failures": {"mtbf": "1h", "mttr": "5m"},
            }
        ],
        "demand": [
            {
                "arrivals": {"process": "scheduled", "at": [0]},
                "replicas": 3,
                "resources": {"cpu": 1, "memory": "1Gi", "storage": "1Gi"},
                "max_price": 2,
                "lifetime": {"distribution": "fixed", "value": "1d"},
                "deposit": {"blocks": "1d"},
                "patience": "1d",
            }
        ],
    }
    sim = simulate(parse_scenario(doc), keep_events=True)
    reopened = [e for e in sim.events if type(e).__name__ == "OrderReopened"]
    assert len(reopened) >= 2
    tenancy = sim.tenancies[1]
    for order_id in sim.market.deployments[1].order_ids:
        order = sim.market.orders[order_id]
        if str(order.state) == "open":
            assert order_id in tenancy.reviewing, f"order {order_id} is open and nobody looks"
    for event in reopened:
        # every reopened order got a lease again once a provider was back
        later = [
            e for e in sim.events
            if type(e).__name__ == "LeaseStarted" and e.order_id == event.order_id
            and e.height > event.height
        ]
        open_bids_after = sim.market.orders[event.order_id].open_bids
        assert later or not open_bids_after, f"order {event.order_id} has bids nobody accepts"


def test_placement_attributes_and_gpus_decide_who_can_bid():
    doc = {
        "name": "placement",
        "seed": 4,
        "duration": "3h",
        "providers": [
            {
                "name": "gpu",
                "capacity": {"cpu": 8, "memory": "32Gi", "storage": "500Gi", "gpu": 2},
                "pricing": {"strategy": "cost-plus"},
                "costs": {"cpu": 0.01, "gpu": 0.5},
            },
            {
                "name": "eu",
                "capacity": {"cpu": 8, "memory": "32Gi", "storage": "500Gi"},
                "attributes": {"region": "eu"},
            },
        ],
        "demand": [
            {
                "name": "training",
                "arrivals": {"process": "poisson", "rate": "4/h"},
                "resources": {"cpu": 1, "memory": "1Gi", "storage": "1Gi", "gpu": 1},
                "max_price": 2,
                "lifetime": {"distribution": "exponential", "mean": "30m"},
            },
            {
                "name": "eu-web",
                "arrivals": {"process": "poisson", "rate": "4/h"},
                "resources": {"cpu": 1, "memory": "1Gi", "storage": "1Gi"},
                "attributes": {"region": "eu"},
                "max_price": 2,
                "lifetime": {"distribution": "exponential", "mean": "30m"},
            },
        ],
    }
    sim = simulate(parse_scenario(doc))
    bidders = {}
    for bid in sim.market.bids.values():
        stream = sim.recorder.stream_of[sim.market.orders[bid.order_id].deployment_id]
        bidders.setdefault(stream, set()).add(sim.market.providers[bid.provider_id].name)
    assert bidders == {"training": {"gpu-0"}, "eu-web": {"eu-0"}}
    # cost-plus: (1 core x $0.01 + 1 GPU x $0.50) x 1.2 (the default 20% margin)
    prices = {lease.price for lease in sim.market.leases.values() if lease.provider_id == 1}
    assert prices == {612_000}

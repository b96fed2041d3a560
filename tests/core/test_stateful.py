"""Random sequences of market commands, with every invariant checked after every step.

Run ``pytest tests/core/test_stateful.py -n 0 -s`` to see how many examples and steps ran.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kova_core import (
    MICRO,
    BidState,
    CloseReason,
    DebtWrittenOff,
    DeploymentNotPayable,
    DeploymentPaused,
    DeploymentResumed,
    DeploymentState,
    DepositTooSmall,
    IllegalTransition,
    InsufficientBalance,
    KovaError,
    LeaseClosed,
    LeaseState,
    Limits,
    ManifestError,
    Market,
    OrderState,
    ProviderState,
    Resources,
    TooManyOpenOrders,
    pricing_strategy,
    selection_policy,
    tenant_account,
)

from .helpers import GIB, check_invariants, check_limits, manifest

STATS: Counter[str] = Counter()

SMALL = Resources(cpu=2000, memory=4 * GIB, storage=20 * GIB)


class MarketMachine(RuleBasedStateMachine):
    """Drives one market through random commands at random, increasing heights."""

    FEE_BPS = 250
    SETTLEMENT_INTERVAL = 60
    LIMITS: Limits | None = None

    def __init__(self) -> None:
        super().__init__()
        self.market = Market(
            fee_bps=self.FEE_BPS, settlement_interval=self.SETTLEMENT_INTERVAL, limits=self.LIMITS
        )
        self.rng = np.random.default_rng(0)
        self.tenants = [self.market.add_tenant(f"t{i}") for i in range(3)]
        self.providers = [
            self.market.add_provider(capacity=SMALL, attributes={"region": r})
            for r in ("eu", "us", "eu")
        ]
        for t in self.tenants:
            self.market.credit(t, 5_000 * MICRO, 0)
        STATS["examples"] += 1

    def _record(self, events: list) -> None:
        STATS["steps"] += 1
        for e in events:
            if isinstance(e, DeploymentPaused):
                STATS["pauses"] += 1
            elif isinstance(e, DeploymentResumed):
                STATS["resumes"] += 1
            elif isinstance(e, DebtWrittenOff):
                STATS["write-offs"] += 1
            elif isinstance(e, LeaseClosed):
                STATS[f"lease closed: {e.reason}"] += 1

    @property
    def now(self) -> int:
        return self.market.height

    def _pick(self, items: list, index: int):
        return items[index % len(items)] if items else None

    # --------------------------------------------------------------- rules

    @rule(
        tenant=st.integers(0, 2),
        count=st.integers(1, 3),
        job=st.booleans(),
        cpu=st.sampled_from(["0.25", "0.5", "1"]),
        price=st.integers(1, MICRO),
        deposit=st.integers(0, 300 * MICRO),
        runtime=st.integers(1, 600),
        region=st.sampled_from([None, "eu", "us"]),
    )
    def create(self, tenant, count, job, cpu, price, deposit, runtime, region) -> None:
        m = manifest(
            count=count,
            cpu=cpu,
            price=price,
            kind="job" if job else "deployment",
            max_runtime=runtime if job else None,
            attributes={"region": region} if region else None,
        )
        t = self.tenants[tenant]
        try:
            events = self.market.create_deployment(t, m, deposit, self.now)
        except InsufficientBalance:
            assert self.market.balance(tenant_account(t)) < deposit
            return
        except (DepositTooSmall, TooManyOpenOrders, ManifestError) as e:  # the limits
            STATS[f"rejected: {type(e).__name__}"] += 1
            return
        self._record(events)

    @rule(
        tenant=st.integers(0, 2),
        provider=st.integers(0, 2),
        count=st.integers(1, 2),
        price=st.integers(1, MICRO),
        deposit=st.one_of(st.just(0), st.integers(1, 100 * MICRO)),
    )
    def deploy_and_lease(self, tenant, provider, count, price, deposit) -> None:
        """A tenant deploys with a small escrow and takes the first bid on each order."""
        t = self.tenants[tenant]
        if self.market.balance(tenant_account(t)) < deposit:
            return
        try:
            events = self.market.create_deployment(t, manifest(count=count), deposit, self.now)
        except (DepositTooSmall, TooManyOpenOrders, ManifestError) as e:  # the limits
            STATS[f"rejected: {type(e).__name__}"] += 1
            return
        self._record(events)
        p = self.providers[provider]
        for order_id in self.market.deployments[events[0].deployment_id].order_ids:
            try:
                placed = self.market.place_bid(order_id, p, price, self.now)
                self._record(placed)
                self._record(self.market.accept_bid(placed[-1].bid_id, self.now))
            except KovaError as e:
                STATS[f"rejected: {type(e).__name__}"] += 1

    @rule(
        order=st.integers(0, 10**6),
        provider=st.integers(0, 2),
        price=st.integers(1, 4 * MICRO),
        any_order=st.booleans(),
    )
    def bid(self, order, provider, price, any_order) -> None:
        # mostly open orders; sometimes any order, to exercise the rejections
        orders = [o.id for o in self.market.open_orders()]
        if any_order or not orders:
            orders = sorted(self.market.orders)
        if not orders:
            return
        try:
            self._record(
                self.market.place_bid(
                    self._pick(orders, order), self.providers[provider], price, self.now
                )
            )
        except KovaError as e:  # a typed rejection: nothing may have changed
            STATS[f"rejected: {type(e).__name__}"] += 1

    @rule(provider=st.integers(0, 2), tenant=st.integers(0, 2))
    def bid_on_all_of_one_tenant(self, provider, tenant) -> None:
        """A provider bids on every open order of one tenant (a flood's orders, or a large
        deployment's), as far as its capacity and the limits let it."""
        t = self.tenants[tenant]
        for order in self.market.open_orders():
            if self.market.deployments[order.deployment_id].tenant_id != t:
                continue
            try:
                self._record(
                    self.market.place_bid(
                        order.id, self.providers[provider], order.max_price, self.now
                    )
                )
            except KovaError as e:
                STATS[f"rejected: {type(e).__name__}"] += 1

    @rule(provider=st.integers(0, 2), name=st.sampled_from(["fixed", "undercut", "random-band"]))
    def poll(self, provider, name) -> None:
        strategy = pricing_strategy(name)
        self._record(self.market.poll(self.providers[provider], strategy, self.rng, self.now))

    @rule(index=st.integers(0, 10**6), accept=st.booleans())
    def answer_bid(self, index, accept) -> None:
        open_bids = [b.id for b in self.market.bids.values() if b.state is BidState.OPEN]
        bid = self._pick(open_bids, index)
        if bid is None:
            return
        try:
            if accept:
                self._record(self.market.accept_bid(bid, self.now))
            else:
                self._record(self.market.withdraw_bid(bid, self.now))
        except KovaError as e:
            STATS[f"rejected: {type(e).__name__}"] += 1

    @rule(
        provider=st.integers(0, 2),
        policy=st.sampled_from(["cheapest", "reputation", "fastest", "weighted"]),
    )
    def poll_and_choose(self, provider, policy) -> None:
        """A provider polls, then every tenant picks a bid on each open order that has one."""
        self.poll(provider, "fixed")
        chooser = selection_policy(policy)
        for order in self.market.open_orders():
            if order.state is not OrderState.OPEN:  # closed by an earlier acceptance's catch-up
                continue
            choice = chooser.choose(self.market.bid_views(order.id))
            if choice is None:
                continue
            try:
                self._record(self.market.accept_bid(choice.bid_id, self.now))
            except DeploymentNotPayable:
                STATS["rejected: DeploymentNotPayable"] += 1

    @rule(index=st.integers(0, 10**6), amount=st.integers(1, 1_000 * MICRO))
    def deposit(self, index, amount) -> None:
        live = [d.id for d in self.market.deployments.values() if d.state != "closed"]
        dep = self._pick(live or sorted(self.market.deployments), index)
        if dep is None:
            return
        try:
            self._record(self.market.deposit(dep, amount, self.now))
        except (IllegalTransition, InsufficientBalance) as e:
            STATS[f"rejected: {type(e).__name__}"] += 1

    @rule(blocks=st.integers(1, 400))
    def advance(self, blocks) -> None:
        self._record(self.market.tick(self.now + blocks))

    @rule(index=st.integers(0, 10**6))
    def close(self, index) -> None:
        live = [d.id for d in self.market.deployments.values() if d.state != "closed"]
        dep = self._pick(live, index)
        if dep is not None:
            self._record(self.market.close_deployment(dep, self.now))

    @rule(index=st.integers(0, 10**6))
    def finish_job(self, index) -> None:
        running = [
            x.id
            for x in self.market.leases.values()
            if x.state is LeaseState.ACTIVE and self.market.deployments[x.deployment_id].is_job
        ]
        lease = self._pick(running, index)
        if lease is not None:
            # success or failure from the lease and the index, not a boolean of its own: some
            # runs of Hypothesis draw mostly its simplest values (a boolean's is False), and a
            # run once finished no job successfully; this way both outcomes come in every run
            succeeded = (lease + index) % 2 == 0
            self._record(self.market.finish_job(lease, self.now, succeeded=succeeded))

    @rule(index=st.integers(0, 10**6), coin=st.integers(0, 3))
    def fail_lease(self, index, coin) -> None:
        if coin:  # containers fail less often than the other commands happen
            return
        live = [x.id for x in self.market.leases.values() if x.state is not LeaseState.CLOSED]
        lease = self._pick(live, index)
        if lease is not None:
            self._record(self.market.fail_lease(lease, self.now, CloseReason.CONTAINER_FAILED))

    @rule(provider=st.integers(0, 2), coin=st.integers(0, 3))
    def provider_fails_or_recovers(self, provider, coin) -> None:
        p = self.market.providers[self.providers[provider]]
        if p.state is ProviderState.ONLINE:
            if coin:  # failures are rarer than recoveries
                return
            self._record(self.market.fail_provider(p.id, self.now))
        else:
            self._record(self.market.recover_provider(p.id, self.now))

    @rule(index=st.integers(0, 10**6))
    def expire(self, index) -> None:
        open_orders = [o.id for o in self.market.orders.values() if o.state is OrderState.OPEN]
        order = self._pick(open_orders, index)
        if order is not None:
            self._record(self.market.expire_order(order, self.now))

    @precondition(lambda self: any(self.market.balances.get(f"provider:{p}") for p in (1, 2, 3)))
    @rule(provider=st.integers(0, 2), fraction=st.integers(1, 100))
    def provider_withdraws(self, provider, fraction) -> None:
        account = f"provider:{self.providers[provider]}"
        amount = self.market.balance(account) * fraction // 100
        if amount:
            self._record(self.market.withdraw(account, amount, self.now))

    # --------------------------------------------------------------- invariants

    @invariant()
    def invariants_hold(self) -> None:
        check_invariants(self.market)
        check_limits(self.market)

    @invariant()
    def paused_deployments_are_not_billed(self) -> None:
        for dep in self.market.deployments.values():
            if dep.state is DeploymentState.INSUFFICIENT_FUNDS:
                assert self.market.burn_rate(dep.id) == 0


class NoFeeShortRoundsMachine(MarketMachine):
    """The same commands on a market with no fee and rounds every 17 blocks."""

    FEE_BPS = 0
    SETTLEMENT_INTERVAL = 17


class LimitedMachine(MarketMachine):
    """The same commands on a market with every limit on, tight enough to be met often: a
    deposit for 2 blocks, 2 replicas per deployment, 3 open orders per tenant, orders no
    larger than the largest provider, orders closed 150 blocks after they open, and a third
    of a provider's capacity for one tenant's bids beyond a first."""

    LIMITS = Limits(
        min_deposit_blocks=2, max_replicas=2, max_open_orders=3, largest_provider=True,
        order_lifetime=150, tenant_share_bps=3333,
    )  # fmt: skip


SETTINGS = settings(
    max_examples=300,
    stateful_step_count=80,
    derandomize=True,  # the same examples every run, so the coverage check below is stable
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MarketMachine.TestCase.settings = SETTINGS
NoFeeShortRoundsMachine.TestCase.settings = SETTINGS
LimitedMachine.TestCase.settings = SETTINGS
TestMarketMachine = MarketMachine.TestCase
TestNoFeeShortRoundsMachine = NoFeeShortRoundsMachine.TestCase
TestLimitedMachine = LimitedMachine.TestCase


def teardown_module() -> None:
    """Print what the run covered, and make sure it covered the interesting paths."""
    print("\nstateful test:", dict(sorted(STATS.items())))
    assert STATS["examples"] > 0 and STATS["steps"] > 0
    for path in (
        "pauses",
        "resumes",
        "write-offs",
        "lease closed: job_completed",
        "lease closed: job_failed",
        "lease closed: job_out_of_funds",
        "lease closed: provider_lost",
        "lease closed: tenant_closed",
        "rejected: DepositTooSmall",  # LimitedMachine's limits, each met
        "rejected: TooManyOpenOrders",
        "rejected: ManifestError",
        "rejected: TenantShareReached",
    ):
        assert STATS[path] > 0, f"the stateful test never reached {path!r}: rebalance its rules"

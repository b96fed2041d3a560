"""The market: deployments, orders, bids, leases, escrow, the ledger and settlement.

Theory of operation
-------------------
:class:`Market` holds the whole state of one Kova network in memory and changes it only through
commands (``create_deployment``, ``place_bid``, ``accept_bid``, ``deposit``, ``tick`` …). Each
command takes the block ``height`` at which it happens and returns the events it caused, in
order; the driver carries them out (start, pause or remove a container, record a transfer).

Time only moves forward. Before a command at height ``h`` does anything, the market catches up
to ``h``: it runs every settlement round (heights divisible by ``settlement_interval``) and
every job deadline up to and including ``h``, in block order. So rounds are never skipped, and
``tick(h)`` is just a command that does nothing else.

Money lives in ledger accounts — ``tenant:<id>``, ``escrow:<deployment id>``,
``provider:<id>``, ``network`` — and moves only through :class:`Transfer` entries, each checked
so that no balance goes negative. Money enters through ``credit`` and leaves through
``withdraw``; :meth:`Market.money_drift` is zero whenever money is conserved. What is paid is
decided by the pure functions of ``_settlement``; lifecycles by the tables of ``_state``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np

from ._entities import Bid, Deployment, Lease, Order, Provider, Tenant
from ._errors import (
    DeploymentNotPayable,
    DepositTooSmall,
    DuplicateBid,
    InsufficientBalance,
    InsufficientCapacity,
    InvalidAmount,
    InvalidHeight,
    ManifestError,
    ManifestProblem,
    NotAJob,
    OrderNotOpen,
    PlacementMismatch,
    PriceAboveMax,
    ProviderOffline,
    TenantShareReached,
    TooManyOpenOrders,
    UnknownEntity,
)
from ._events import (
    BidPlaced,
    BidsLost,
    BidsPlaced,
    BidWithdrawn,
    DebtWrittenOff,
    DeploymentClosed,
    DeploymentCreated,
    DeploymentPaused,
    DeploymentResumed,
    Event,
    LeaseClosed,
    LeasePaused,
    LeaseResumed,
    LeaseStarted,
    OrderClosed,
    OrderOpened,
    OrderReopened,
    ProviderLost,
    ProviderRecovered,
    SettlementRound,
    Transfer,
    TransferReason,
)
from ._limits import Limits, max_price_per_block
from ._manifest import Manifest
from ._money import require_amount
from ._poll import ProviderView, plan_poll
from ._pricing import PricingContext, PricingStrategy, auto_bid_price, prices_alike
from ._reputation import reputation_score
from ._resources import Resources
from ._selection import BidView
from ._settlement import (
    BPS,
    Claim,
    Payment,
    job_deadline,
    job_next_deadline,
    job_out_of_funds,
    owed,
    plan_close,
    plan_round,
)
from ._specs import OrderSpec, deployment_denom, provider_matches
from ._state import (
    BidState,
    CloseReason,
    DeploymentState,
    LeaseState,
    OrderState,
    ProviderState,
    job_outcome,
    transition,
)

__all__ = [
    "EXTERNAL",
    "NETWORK",
    "Market",
    "escrow_account",
    "provider_account",
    "tenant_account",
]

NETWORK = "network"
"""The ledger account that collects the network fee."""
EXTERNAL = "external"
"""Where credited money comes from and withdrawn money goes: outside the system, no balance."""


def tenant_account(tenant_id: int) -> str:
    """The ledger account of a tenant's balance."""
    return f"tenant:{tenant_id}"


def escrow_account(deployment_id: int) -> str:
    """The ledger account of a deployment's (or job's) escrow."""
    return f"escrow:{deployment_id}"


def provider_account(provider_id: int) -> str:
    """The ledger account of a provider's earnings."""
    return f"provider:{provider_id}"


E = TypeVar("E")
_new_view = tuple.__new__


@dataclass(frozen=True, slots=True)
class _Tally:
    """A deployment whose rounds are deferred: its leases' price per block, its next round and
    how much less than a full round that one owes (leases started since the last round), and
    the first round at which its escrow cannot pay."""

    rate: int
    first_round: int
    gap: int
    check: int


_NOTHING = Resources()
_UNITS = {"cpu": "millicores", "memory": "bytes", "storage": "bytes", "gpu": "GPUs"}
_PATHS = {"cpu": "cpu.units", "memory": "memory.size", "storage": "storage", "gpu": "gpu.units"}


def _lowest_open_bid(order: Order) -> int | None:
    """The best competing price a polling provider sees on an order it has not bid on."""
    bids = order.open_bids
    return min(bids.values()) if bids else None


class Market:
    """One Kova network's state, changed only by commands that return the events they cause.

    ``fee_bps`` is the network's fee in basis points of each payment to a provider (default 0);
    ``settlement_interval`` the blocks between settlement rounds (default 60);
    ``accepted_denoms`` the denominations manifests may price in (default: all).

    ``defer_rounds`` (simulators, with no fee): a round does no per-lease work for a deployment
    whose escrow surely covers it. Each billing deployment keeps a tally (its leases' rate and
    the first round at which its escrow may fall short, the same arithmetic as
    :func:`job_deadline`); rounds before that only add what it owes to :attr:`accrued`, and the
    money moves when the deployment is next touched (a deposit, a lease starting or ending, a
    close, that round, or :meth:`flush`), as one settlement transfer per lease covering the
    rounds in between, dated at the last of them. Every outcome (pauses, debts, write-offs,
    refunds, each lease's ``blocks_paid`` and ``total_paid``, every balance after
    :meth:`flush`) is the same as without it; the ledger has the per-round settlement
    transfers of each lease merged into runs, and balances lag by :attr:`accrued` until
    :meth:`flush`.

    ``forget_closed_bids`` (simulators that record bids as they are placed): a bid leaves
    :attr:`bids` once it is no longer open (accepted, lost or withdrawn), so the market's memory
    does not grow with every bid ever placed; commands naming such a bid then raise
    :class:`UnknownEntity`.

    ``keep_ledger`` (default True): every transfer is also appended to :attr:`ledger`. A driver
    that stores the transfers its commands return (the live orchestrator) turns it off, so
    memory does not grow with history; :meth:`forget_closed` does the same for closed
    deployments, and :meth:`restore` builds a market from a driver's records.
    """

    def __init__(
        self,
        *,
        fee_bps: int = 0,
        settlement_interval: int = 60,
        accepted_denoms: Collection[str] | None = None,
        defer_rounds: bool = False,
        forget_closed_bids: bool = False,
        keep_ledger: bool = True,
        limits: Limits | None = None,
    ) -> None:
        if isinstance(fee_bps, bool) or not isinstance(fee_bps, int) or not 0 <= fee_bps <= BPS:
            raise InvalidAmount(f"fee_bps must be an integer from 0 to {BPS}, got {fee_bps!r}")
        if defer_rounds and fee_bps:
            raise InvalidAmount("defer_rounds needs fee_bps 0 (a fee is taken payment by payment)")
        if not isinstance(settlement_interval, int) or settlement_interval < 1:
            raise InvalidHeight(
                f"settlement_interval must be a positive integer, got {settlement_interval!r}"
            )
        self.fee_bps = fee_bps
        self.settlement_interval = settlement_interval
        self.accepted_denoms = None if accepted_denoms is None else frozenset(accepted_denoms)
        self.limits = Limits() if limits is None else limits
        self.height = 0
        self.last_round = 0
        self.tenants: dict[int, Tenant] = {}
        self.providers: dict[int, Provider] = {}
        self.deployments: dict[int, Deployment] = {}
        self.orders: dict[int, Order] = {}
        self.bids: dict[int, Bid] = {}
        self.leases: dict[int, Lease] = {}
        self.ledger: list[Transfer] = []
        self.credited = 0
        self.withdrawn = 0
        self._balances: dict[str, int] = {}
        self._next_id: dict[str, int] = {}
        self._open_orders: dict[int, Order] = {}
        self._open_by_tenant: dict[int, int] = {}  # tenant id -> its open orders
        # the largest capacity of any provider, per resource (Limits.largest_provider)
        self.largest = Resources()
        # Limits.order_lifetime: each open order's closing block, and a heap of them
        self._lifetimes: dict[int, int] = {}
        self._lifetime_heap: list[tuple[int, int]] = []
        # Limits.tenant_share_bps: per provider and tenant, its open bids (how many, and what
        # they reserve)
        self._shares = self.limits.tenant_share_bps is not None
        self._reserved_for: dict[int, dict[int, tuple[int, Resources]]] = {}
        self._billing: set[int] = set()  # deployments (not jobs) with at least one active lease
        self._job_deadlines: dict[int, int] = {}  # job id -> block its next deadline falls on
        self._deadline_heap: list[tuple[int, int]] = []
        # Events of catching up (rounds, deadlines) not yet returned: a command that raises after
        # catching up leaves them here, and the next command returns them first.
        self._outbox: list[Event] = []
        # Deferred rounds (see the class docstring): per billing deployment its tally, what the
        # tallies add up to, and when each may next fall short.
        self.defer_rounds = defer_rounds
        self.forget_closed_bids = forget_closed_bids
        self.keep_ledger = keep_ledger
        self._closed: list[int] = []  # deployments closed since forget_closed last ran
        self.accrued = 0
        self._tallies: dict[int, _Tally] = {}
        self._rate = 0  # Σ price per block of the leases of tallied deployments
        self._short_of_full: dict[int, int] = {}  # round -> Σ of its first, partial claims' gap
        self._checks: list[tuple[int, int]] = []  # (round at which it may fall short, dep id)

    # ------------------------------------------------------------------ queries

    def balance(self, account: str) -> int:
        """The balance of a ledger account in micro-units (0 if it never held money)."""
        return self._balances.get(account, 0)

    @property
    def balances(self) -> Mapping[str, int]:
        """Every account's balance (a read-only view)."""
        return MappingProxyType(self._balances)

    def escrow(self, deployment_id: int) -> int:
        """A deployment's escrow balance."""
        return self.balance(escrow_account(deployment_id))

    @property
    def next_ids(self) -> Mapping[str, int]:
        """The id each kind of entity (``tenant``, ``provider``, ``deployment``, ``order``,
        ``bid``, ``lease``) gets next: what a driver keeps to :meth:`restore` a market whose
        records leave out forgotten ones."""
        return MappingProxyType(self._next_id)

    def money_drift(self) -> int:
        """Σ balances − (credited − withdrawn): zero whenever money is conserved."""
        return sum(self._balances.values()) - (self.credited - self.withdrawn)

    def open_orders(self) -> list[Order]:
        """The orders open for bids, by id."""
        return [self._open_orders[i] for i in sorted(self._open_orders)]

    def debt(self, deployment_id: int) -> int:
        """What a paused deployment owes its providers (0 when it is not paused)."""
        dep = self._deployment(deployment_id)
        return sum(self.leases[i].debt for i in dep.lease_ids)

    def burn_rate(self, deployment_id: int) -> int:
        """Micro-units per block its active leases cost."""
        dep = self._deployment(deployment_id)
        return sum(
            self.leases[i].price for i in dep.lease_ids if self.leases[i].state is LeaseState.ACTIVE
        )

    def job_deadline(self, deployment_id: int) -> int | None:
        """The block at which a running job will be stopped (escrow or max runtime), if any."""
        return self._job_deadlines.get(deployment_id)

    def next_deadline(self) -> int | None:
        """The next block, other than a settlement round, at which the market changes without a
        command, if any: a running job is stopped, or an open order's lifetime ends
        (``Limits.order_lifetime``)."""
        deadline = self._next_deadline()
        expiry = self._next_expiry() if self._lifetime_heap else None
        if deadline is None:
            return expiry
        return deadline[0] if expiry is None else min(deadline[0], expiry)

    def cannot_serve(self, order_id: int, provider_id: int) -> list[str]:
        """Why a provider cannot bid on an order now, in words (empty: it can, as far as the
        market goes; its price is its own): it is lost, its placement does not match, or its
        free capacity is short. Raises :class:`UnknownEntity`."""
        order = self._order(order_id)
        provider = self._provider(provider_id)
        reasons = []
        if provider.state is not ProviderState.ONLINE:
            reasons.append(f"the provider is {provider.state.value}")
        mismatch = provider_matches(
            order.spec, provider.attributes, provider.auditors, provider.gpu_models
        )
        if mismatch:
            reasons.append(f"placement: {mismatch}")
        if not order.resources.fits_in(provider.free):
            reasons.append(f"capacity: {provider.free} free, the order needs {order.resources}")
        return reasons

    def bid_views(self, order_id: int) -> list[BidView]:
        """The open bids on an order as a tenant sees them (price, reputation, response), by id."""
        order = self._order(order_id)
        bids, providers = self.bids, self.providers
        views = []
        for bid_id in sorted(order.open_bids):
            bid = bids[bid_id]
            provider_id = bid.provider_id
            provider = providers[provider_id]
            completed, failed = provider.completed, provider.failed
            # positional: BidView(bid_id, provider_id, price, response_time, reputation,
            # completed, failed), built once per open bid a tenant reviews
            view = (
                bid_id, provider_id, bid.price, bid.response_time,
                reputation_score(completed, failed), completed, failed,
            )  # fmt: skip
            views.append(_new_view(BidView, view))
        return views

    # ------------------------------------------------------------------ accounts

    def add_tenant(self, name: str = "", *, tenant_id: int | None = None) -> int:
        """Register a tenant and return its id: the next one, or ``tenant_id`` (a driver whose
        accounts are numbered elsewhere; raises :class:`InvalidAmount` if it is taken or not
        a positive integer)."""
        tenant_id = self._given_id("tenant", tenant_id, self.tenants)
        self.tenants[tenant_id] = Tenant(id=tenant_id, name=name or f"tenant-{tenant_id}")
        return tenant_id

    def add_provider(
        self,
        *,
        capacity: Resources,
        name: str = "",
        attributes: Mapping[str, str] | None = None,
        auditors: Iterable[str] = (),
        gpu_models: Iterable[str] = (),
        provider_id: int | None = None,
    ) -> int:
        """Register a provider with its capacity and placement attributes; return its id (the
        next one, or ``provider_id``, as for :meth:`add_tenant`).

        ``gpu_models`` are ``vendor/model`` keys such as ``nvidia/a100`` (case does not
        matter: the manifest side is lower-cased too). Raises
        :class:`InvalidAmount` if a capacity component is negative.
        """
        if not capacity.is_nonnegative():
            raise InvalidAmount(f"capacity must not be negative: {capacity}")
        provider_id = self._given_id("provider", provider_id, self.providers)
        self.providers[provider_id] = Provider(
            id=provider_id,
            name=name or f"provider-{provider_id}",
            capacity=capacity,
            attributes=MappingProxyType({str(k): str(v) for k, v in (attributes or {}).items()}),
            auditors=frozenset(auditors),
            gpu_models=frozenset(g.lower() for g in gpu_models),
        )
        self._grow_largest(capacity)
        return provider_id

    def update_provider(
        self,
        provider_id: int,
        *,
        capacity: Resources,
        attributes: Mapping[str, str],
        gpu_models: Iterable[str],
        height: int,
    ) -> list[Event]:
        """A provider's machine changed (its agent's heartbeat says so): new capacity, placement
        attributes and GPUs. What its leases hold and its bids reserve stay held; if the new
        capacity is less than that, it bids on nothing until its poll (:func:`plan_poll`)
        withdraws the bids it can no longer honour. Raises :class:`UnknownEntity`,
        :class:`InvalidAmount` (a negative capacity), :class:`InvalidHeight`."""
        provider = self._provider(provider_id)
        if not capacity.is_nonnegative():
            raise InvalidAmount(f"capacity must not be negative: {capacity}")
        self._advance(height)
        provider.capacity = capacity
        provider.attributes = MappingProxyType({str(k): str(v) for k, v in attributes.items()})
        provider.gpu_models = frozenset(g.lower() for g in gpu_models)
        provider.free = capacity - provider.used - provider.reserved
        self._grow_largest(capacity)
        return self._take()

    def _grow_largest(self, capacity: Resources) -> None:
        """:attr:`largest` covers ``capacity`` too (it never shrinks while the market runs)."""
        largest = self.largest
        if not capacity.fits_in(largest):
            self.largest = Resources(*map(max, largest, capacity))

    def set_auditors(self, provider_id: int, auditors: Iterable[str], height: int) -> list[Event]:
        """The auditors whose audits of a provider stand now (placement's ``signedBy``).
        Raises :class:`UnknownEntity`, :class:`InvalidHeight`."""
        provider = self._provider(provider_id)
        self._advance(height)
        provider.auditors = frozenset(auditors)
        return self._take()

    def credit(self, tenant_id: int, amount: int, height: int) -> list[Event]:
        """Credit a tenant's balance with money from outside (an operator's top-up).

        Raises :class:`UnknownEntity`, :class:`InvalidAmount` (not a positive int),
        :class:`InvalidHeight`.
        """
        self._tenant(tenant_id)
        require_amount(amount, "amount", positive=True)
        self._advance(height)
        events = self._take()
        self.credited += amount
        events.append(
            self._move(EXTERNAL, tenant_account(tenant_id), amount, TransferReason.CREDIT)
        )
        return events

    def withdraw(self, account: str, amount: int, height: int) -> list[Event]:
        """Take money out of a tenant's or provider's account (out of the system).

        Raises :class:`InvalidAmount`, :class:`InsufficientBalance`, :class:`UnknownEntity`
        (for an account that is not a tenant's or a provider's).
        """
        kind, _, raw_id = account.partition(":")
        ids = {"tenant": self.tenants.keys(), "provider": self.providers.keys()}.get(kind)
        if ids is None or not (raw_id.isascii() and raw_id.isdigit()) or int(raw_id) not in ids:
            raise UnknownEntity("account", account)
        require_amount(amount, "amount", positive=True)
        self._advance(height)
        if self.balance(account) < amount:
            raise InsufficientBalance(account, self.balance(account), amount)
        events = self._take()
        events.append(self._move(account, EXTERNAL, amount, TransferReason.WITHDRAWAL))
        self.withdrawn += amount
        return events

    # ------------------------------------------------------------------ deployments

    def create_deployment(
        self, tenant_id: int, manifest: Manifest, deposit: int, height: int
    ) -> list[Event]:
        """Create a deployment (or job, for ``kind: job``) from a parsed manifest.

        Moves ``deposit`` from the tenant's balance into the new escrow and opens one order per
        service replica. The first event, :class:`DeploymentCreated`, carries the new id.
        Raises :class:`UnknownEntity`, :class:`InvalidAmount`, :class:`InsufficientBalance`,
        :class:`ManifestError` (a denomination the network does not accept, or several
        denominations in one deployment), :class:`InvalidHeight`.
        """
        self._tenant(tenant_id)
        require_amount(deposit, "deposit")
        limits = self.limits
        problems, specs = self._manifest_problems(manifest)
        if problems:
            raise ManifestError(problems, manifest.warnings)
        self.require_deposit(specs, deposit)
        if limits.max_open_orders is not None:
            open_now = self._open_by_tenant.get(tenant_id, 0)
            if open_now + len(specs) > limits.max_open_orders:
                raise TooManyOpenOrders(
                    f"tenant {tenant_id} has {open_now} open orders and asks for {len(specs)}"
                    f" more; the network allows {limits.max_open_orders} open at once"
                )
        self._advance(height)
        account = tenant_account(tenant_id)
        if self.balance(account) < deposit:
            raise InsufficientBalance(account, self.balance(account), deposit)
        events = self._take()
        dep_id = self._new_id("deployment")
        dep = Deployment(
            id=dep_id,
            tenant_id=tenant_id,
            kind="job" if manifest.is_job else "deployment",
            created_at=height,
            max_runtime=manifest.max_runtime,
        )
        self.deployments[dep_id] = dep
        events.append(
            DeploymentCreated(
                height=height, deployment_id=dep_id, tenant_id=tenant_id, kind=dep.kind
            )
        )
        if deposit:
            events.append(
                self._move(
                    tenant_account(tenant_id),
                    escrow_account(dep_id),
                    deposit,
                    TransferReason.DEPOSIT,
                )
            )
        lifetime = limits.order_lifetime
        for spec in specs:
            order_id = self._new_id("order")
            order = Order(id=order_id, deployment_id=dep_id, spec=spec, created_at=height)
            self.orders[order_id] = order
            self._open_orders[order_id] = order
            if lifetime is not None:
                self._lives(order_id, height + lifetime)
            dep.order_ids.append(order_id)
            events.append(OrderOpened(height=height, order_id=order_id, deployment_id=dep_id))
        if specs:
            self._open_by_tenant[tenant_id] = self._open_by_tenant.get(tenant_id, 0) + len(specs)
        return events

    def require_deposit(self, specs: Sequence[OrderSpec], deposit: int) -> None:
        """Raise :class:`DepositTooSmall` if ``deposit`` is below the network's minimum for a
        deployment of these orders (``Limits.min_deposit`` of their summed maximum prices):
        what :meth:`create_deployment` requires, and a dry run asks (nothing changes)."""
        limits = self.limits
        needed = limits.min_deposit(max_price_per_block(specs))
        if deposit < needed:
            raise DepositTooSmall(
                f"a deposit of at least {needed} micro is needed: {limits.min_deposit_blocks}"
                f" blocks at the deployment's max price of"
                f" {needed // limits.min_deposit_blocks} per block"
            )

    def manifest_problems(self, manifest: Manifest) -> tuple[ManifestProblem, ...]:
        """What this network's rules refuse in a parsed manifest, as :meth:`create_deployment`
        refuses it (it changes nothing): more replicas than ``Limits.max_replicas`` (checked
        before any order spec is made), else denominations (several, or one the network does
        not accept), else, with ``Limits.largest_provider``, each compute profile larger than
        the largest provider. Empty if the network takes it."""
        return self._manifest_problems(manifest)[0]

    def _manifest_problems(
        self, manifest: Manifest
    ) -> tuple[tuple[ManifestProblem, ...], tuple[OrderSpec, ...]]:
        """:meth:`manifest_problems`, and the order specs (none past too many replicas)."""
        limits = self.limits
        replicas = sum(group.count for group in manifest.groups)
        if limits.max_replicas is not None and replicas > limits.max_replicas:
            most = max(manifest.groups, key=lambda group: group.count)  # the first of the largest
            return (ManifestProblem(
                f"deployment.{most.service}.{most.placement}.count",
                f"the deployment asks for {replicas} replicas; the network allows at most"
                f" {limits.max_replicas} per deployment",
            ),), ()  # fmt: skip
        specs = manifest.order_specs()
        try:
            deployment_denom(specs, self.accepted_denoms)
        except ManifestError as error:
            return error.problems, specs
        if limits.largest_provider and self.providers:
            return self._size_problems(manifest), specs
        return (), specs

    def _size_problems(self, manifest: Manifest) -> tuple[ManifestProblem, ...]:
        """Every compute profile the manifest deploys fits in the largest provider, per resource
        (:attr:`largest`): a problem naming each field that does not."""
        largest = self.largest
        problems = []
        used = dict.fromkeys(group.profile for group in manifest.groups)
        for name in used:
            needs = manifest.compute_profiles[name].resources
            for key, path in _PATHS.items():
                if getattr(needs, key) > getattr(largest, key):
                    problems.append(ManifestProblem(
                        f"profiles.compute.{name}.resources.{path}",
                        f"asks for {getattr(needs, key)} {_UNITS[key]}; the largest provider"
                        f" on the network has {getattr(largest, key)}, so nobody could bid",
                    ))  # fmt: skip
        return tuple(problems)

    def deposit(self, deployment_id: int, amount: int, height: int) -> list[Event]:
        """Move ``amount`` from the tenant's balance into a deployment's escrow.

        If the deployment is paused and the escrow now covers its debt, the debt is paid and its
        leases resume (billing restarts at ``height``); otherwise they stay paused.
        Raises :class:`UnknownEntity`, :class:`InvalidAmount`, :class:`InsufficientBalance`,
        :class:`IllegalTransition` (a closed deployment), :class:`InvalidHeight`.
        """
        dep = self._deployment(deployment_id)
        require_amount(amount, "amount", positive=True)
        self._advance(height)
        if dep.state is DeploymentState.CLOSED:
            transition("deployment", dep.id, dep.state, "deposit")
        source = tenant_account(dep.tenant_id)
        if self.balance(source) < amount:
            raise InsufficientBalance(source, self.balance(source), amount)
        events = self._take()
        events += self._untally(dep, self.last_round)
        events.append(self._move(source, escrow_account(dep.id), amount, TransferReason.DEPOSIT))
        if dep.state is DeploymentState.INSUFFICIENT_FUNDS:
            events += self._try_resume(dep, height)
        self._tally(dep)
        if dep.is_job:
            self._schedule_job(dep)
        return events

    def close_deployment(self, deployment_id: int, height: int) -> list[Event]:
        """The tenant closes a deployment or job.

        Settles every lease up to ``height`` (paying what escrow can, writing off the rest),
        closes the leases, orders and open bids, and refunds what is left to the tenant.
        Raises :class:`UnknownEntity`, :class:`IllegalTransition` (already closed),
        :class:`InvalidHeight`.
        """
        dep = self._deployment(deployment_id)
        self._advance(height)
        if dep.state is DeploymentState.CLOSED:
            transition("deployment", dep.id, dep.state, "close")
        events = self._take()
        events += self._close_deployment(dep, height, CloseReason.TENANT_CLOSED)
        return events

    def expire_order(self, order_id: int, height: int) -> list[Event]:
        """Give up on an open order that has no acceptable bid: it closes, its bids are lost.

        Raises :class:`UnknownEntity`, :class:`IllegalTransition` (not open),
        :class:`InvalidHeight`.
        """
        order = self._order(order_id)
        self._advance(height)
        if order.state is not OrderState.OPEN:
            transition("order", order.id, order.state, "expire")
        events = self._take()
        events += self._close_order(order, height, CloseReason.EXPIRED, "expire")
        return events

    # ------------------------------------------------------------------ bids and leases

    def place_bid(self, order_id: int, provider_id: int, price: int, height: int) -> list[Event]:
        """A provider bids ``price`` micro per block on an order, reserving its resources.

        Raises :class:`OrderNotOpen`, :class:`PriceAboveMax`, :class:`InsufficientCapacity`,
        :class:`DuplicateBid`, :class:`PlacementMismatch`, :class:`ProviderOffline`,
        :class:`InvalidAmount` (price not a positive int), :class:`UnknownEntity`,
        :class:`InvalidHeight`.
        """
        order = self._order(order_id)
        provider = self._provider(provider_id)
        require_amount(price, "price", positive=True)
        self._advance(height)
        if provider.state is not ProviderState.ONLINE:
            raise ProviderOffline(f"provider {provider.id} is {provider.state}")
        if order.state is not OrderState.OPEN:
            raise OrderNotOpen(f"order {order.id} is {order.state}")
        if price > order.max_price:
            raise PriceAboveMax(
                f"price {price} is above order {order.id}'s max price {order.max_price}"
            )
        if order.id in provider.open_bids:
            raise DuplicateBid(
                f"provider {provider.id} already has open bid {provider.open_bids[order.id]}"
                f" on order {order.id}"
            )
        mismatch = provider_matches(
            order.spec, provider.attributes, provider.auditors, provider.gpu_models
        )
        if mismatch:
            raise PlacementMismatch(
                f"provider {provider.id} cannot serve order {order.id}: {mismatch}"
            )
        if not order.resources.fits_in(provider.free):
            raise InsufficientCapacity(
                f"provider {provider.id} has {provider.free} free,"
                f" order {order.id} needs {order.resources}"
            )
        if self._shares and not self._within_share(order, provider):
            tenant_id = self.deployments[order.deployment_id].tenant_id
            raise TenantShareReached(
                f"provider {provider.id}'s open bids on tenant {tenant_id}'s orders reserve"
                f" {self._reserved_for[provider.id][tenant_id][1]}; one tenant's may reserve at"
                f" most {self.limits.share_of(provider.capacity)}"
                f" ({self.limits.tenant_share_bps} bps of its capacity) beyond a first bid"
            )
        events = self._take()
        events.append(self._place_bid(order, provider, price, height))
        return events

    def _within_share(self, order: Order, provider: Provider) -> bool:
        """Whether a new bid of ``provider`` on ``order`` keeps its open bids on the order's
        tenant's orders within ``Limits.tenant_share_bps`` of its capacity (a first bid on the
        tenant's orders always does)."""
        held = self._reserved_for.get(provider.id, {}).get(
            self.deployments[order.deployment_id].tenant_id
        )
        return held is None or (held[1] + order.resources).fits_in(
            self.limits.share_of(provider.capacity)
        )

    def withdraw_bid(self, bid_id: int, height: int) -> list[Event]:
        """A provider takes back its open bid, releasing the reserved resources.

        Raises :class:`UnknownEntity`, :class:`IllegalTransition` (not open),
        :class:`InvalidHeight`.
        """
        bid = self._bid(bid_id)
        self._advance(height)
        if bid.state is not BidState.OPEN:
            transition("bid", bid.id, bid.state, "withdraw")
        events = self._take()
        events.append(self._withdraw(bid, height))
        return events

    def accept_bid(self, bid_id: int, height: int) -> list[Event]:
        """The tenant accepts a bid: a lease starts, the order's other bids are lost.

        The provider's reservation becomes the lease's allocation; billing starts at ``height``.
        Raises :class:`UnknownEntity`, :class:`IllegalTransition` (bid or order not open),
        :class:`DeploymentNotPayable` (deployment paused for insufficient funds),
        :class:`InvalidHeight`.
        """
        bid = self._bid(bid_id)
        self._advance(height)
        order = self.orders[bid.order_id]
        dep = self.deployments[order.deployment_id]
        provider = self.providers[bid.provider_id]
        if bid.state is not BidState.OPEN:
            transition("bid", bid.id, bid.state, "accept")
        if dep.state is DeploymentState.INSUFFICIENT_FUNDS:
            raise DeploymentNotPayable(
                f"deployment {dep.id} is paused for insufficient funds: deposit first"
            )
        events = self._take()
        events += self._untally(dep, self.last_round)
        order.state = transition("order", order.id, order.state, "match")
        bid.state = transition("bid", bid.id, bid.state, "accept")
        self._not_open(order, dep.tenant_id)
        self._release(bid)
        if self.forget_closed_bids:
            del self.bids[bid.id]
        provider.used += order.resources
        provider.free -= order.resources
        events += self._lose_open_bids(order, height)
        lease_id = self._new_id("lease")
        lease = Lease(
            id=lease_id,
            deployment_id=dep.id,
            order_id=order.id,
            provider_id=provider.id,
            bid_id=bid.id,
            price=bid.price,
            resources=order.resources,
            created_at=height,
            last_settled=height,
        )
        self.leases[lease_id] = lease
        order.lease_id = lease_id
        dep.lease_ids.append(lease_id)
        provider.leases.add(lease_id)
        events.append(
            LeaseStarted(
                height=height,
                lease_id=lease_id,
                deployment_id=dep.id,
                order_id=order.id,
                provider_id=provider.id,
                price=bid.price,
            )
        )
        if dep.is_job:
            # a job whose escrow cannot pay the next block of its running leases stops now,
            # in this command's events, not at the next command
            self._schedule_job(dep)
            self._advance(height)
            events += self._take()
        else:
            self._billing.add(dep.id)
            self._tally(dep)
        return events

    def finish_job(self, lease_id: int, height: int, *, succeeded: bool = True) -> list[Event]:
        """A job's container ran to completion (``succeeded``: exit code 0) on this lease.

        The job is charged ``runtime x price`` for the lease (paying what escrow can), the lease
        and its order close (``job_completed`` or ``job_failed``, which counts against the
        provider), and once none of its orders is open or running the job closes and the rest of
        its escrow is refunded. Raises :class:`UnknownEntity`, :class:`IllegalTransition`
        (lease closed), :class:`NotAJob`, :class:`InvalidHeight`.
        """
        lease = self._lease(lease_id)
        self._advance(height)
        dep = self.deployments[lease.deployment_id]
        if not dep.is_job:
            raise NotAJob(f"lease {lease.id} belongs to deployment {dep.id}, which is not a job")
        if lease.state is LeaseState.CLOSED:
            transition("lease", lease.id, lease.state, "close")
        events = self._take()
        reason = CloseReason.JOB_COMPLETED if succeeded else CloseReason.JOB_FAILED
        events += self._close_leases(dep, [lease], height, reason)
        events += self._close_order(self.orders[lease.order_id], height, reason)
        events += self._maybe_finish_job(dep, height)
        return events

    def fail_lease(
        self, lease_id: int, height: int, reason: CloseReason = CloseReason.CONTAINER_FAILED
    ) -> list[Event]:
        """A lease ends through its provider's fault (``container_failed`` or ``provider_lost``).

        It is settled up to ``height`` (paying what escrow can), closed, counted against the
        provider, and its order is opened for bids again. Raises :class:`UnknownEntity`,
        :class:`IllegalTransition` (closed lease), ``ValueError`` (a reason that is not the
        provider's fault), :class:`InvalidHeight`.
        """
        if reason not in (CloseReason.CONTAINER_FAILED, CloseReason.PROVIDER_LOST):
            raise ValueError(f"fail_lease takes container_failed or provider_lost, not {reason}")
        lease = self._lease(lease_id)
        self._advance(height)
        if lease.state is LeaseState.CLOSED:
            transition("lease", lease.id, lease.state, "close")
        events = self._take()
        events += self._fail_lease(lease, height, reason)
        return events

    # ------------------------------------------------------------------ providers

    def poll(
        self,
        provider_id: int,
        strategy: PricingStrategy,
        rng: np.random.Generator,
        height: int,
        *,
        orders: Iterable[int] | None = None,
    ) -> list[Event]:
        """One auto-bidder poll: the provider bids on every open order it can serve.

        Orders are visited by id. An order gets a bid if the provider is online, has no open bid
        on it, matches its placement, has the free capacity (each bid reserves some, so later
        orders see less), and ``strategy`` prices it within its maximum price.

        ``orders`` limits the visit to those order ids (the ones not open are passed over): a
        driver that knows which open orders the provider has not bid on and matches saves the
        visit of the others, with the same outcome. Raises :class:`UnknownEntity`,
        :class:`InvalidHeight`.
        """
        provider = self._provider(provider_id)
        self._advance(height)
        events = self._take()
        if provider.state is not ProviderState.ONLINE:
            return events
        open_orders = self._open_orders
        if orders is None:
            visit = self.open_orders()
        else:
            visit = [open_orders[i] for i in sorted(orders) if i in open_orders]
        free = provider.free
        if not visit and _NOTHING.fits_in(free):  # nothing to bid on or to withdraw: most
            return events  # polls of a driver that says which orders are new to the provider
        bids: Mapping[int, Any] = provider.open_bids  # only its keys are read, if free is not short
        if not _NOTHING.fits_in(free):  # a provider whose machine shrank (update_provider)
            orders = self.orders
            bids = {o: (bid_id, orders[o].resources) for o, bid_id in bids.items()}
        view = ProviderView(
            provider.capacity, provider.used, bids, provider.attributes, provider.auditors,
            provider.gpu_models, provider.reserved, free,
        )  # fmt: skip
        if self._shares:
            admit, admitted = self._share_guard(provider)
            plan = plan_poll(view, visit, strategy, rng, height, _lowest_open_bid, admit, admitted)
        else:
            plan = plan_poll(view, visit, strategy, rng, height, _lowest_open_bid)
        for bid_id in plan.withdraw:
            events.append(self._withdraw(self.bids[bid_id], height))
        for order_id, price in plan.bids:
            events.append(self._place_bid(open_orders[order_id], provider, price, height))
        return events

    def _share_guard(
        self, provider: Provider
    ) -> tuple[Callable[[Order], bool], Callable[[Order], None]]:
        """For :func:`plan_poll`: whether a bid on an order keeps the provider's bids on its
        tenant's orders within their share, counting the bids planned so far in the poll."""
        share = self.limits.share_of(provider.capacity)
        held = {t: r for t, (_, r) in self._reserved_for.get(provider.id, {}).items()}
        deployments = self.deployments

        def admit(order: Order) -> bool:
            mine = held.get(deployments[order.deployment_id].tenant_id)
            return mine is None or (mine + order.resources).fits_in(share)

        def admitted(order: Order) -> None:
            tenant_id = deployments[order.deployment_id].tenant_id
            mine = held.get(tenant_id)
            held[tenant_id] = order.resources if mine is None else mine + order.resources

        return admit, admitted

    def poll_late(
        self,
        order_id: int,
        polls: Sequence[tuple[int, int, PricingStrategy, np.random.Generator]],
    ) -> tuple[list[Event], list[bool]]:
        """Polls of one order, carried out after their time by a driver that defers polls (see
        ``kova_sim``'s fast engine): each ``(height, provider id, strategy, generator)``, in the
        order they happened, bids on the order as :meth:`poll` would have at that height.
        Returns the events and, for each poll, whether it placed a bid.

        The driver promises what the market cannot check: each provider matches the order's
        placement; nothing such a poll reads (the provider's state and free capacity, the
        order's state and open bids, the generator) changed between its height and now but
        through these polls; and the heights are not before the last command that changed any
        of it. Bids move no money and change no round, so carrying them out late changes
        nothing else. Heights after the market's move the market to the last of them first.
        Raises :class:`UnknownEntity`, :class:`InvalidHeight` (not a non-negative integer).
        """
        order = self._order(order_id)
        if self._shares or self.limits.order_lifetime is not None:
            raise ValueError(
                "polls cannot be carried out late under limits.tenant_share_bps or"
                " limits.order_lifetime: what a poll reads changes with other orders and blocks"
            )
        if not polls:
            return [], []
        heights_given = [poll[0] for poll in polls]
        if set(map(type, heights_given)) != {int} or min(heights_given) < 0:
            raise InvalidHeight(f"heights must be non-negative integers, got {heights_given!r}")
        last = max(heights_given)
        if last > self.height:
            self._advance(last)
        events = self._take()
        placed = [False] * len(polls)
        if order.state is not OrderState.OPEN:
            return events, placed
        spec = order.spec
        needs = spec.resources
        max_price = spec.max_price
        others = order.open_bids
        best = min(others.values()) if others else None
        providers, created_at = self.providers, order.created_at
        bid_ids: list[int] = []
        provider_ids: list[int] = []
        prices: list[int] = []
        heights: list[int] = []
        # many providers share free capacities and reservations: each check, sum and
        # difference is made once (``left``: the free capacity after a bid, None if it does
        # not fit)
        left: dict[Resources, Resources | None] = {}
        plus: dict[Resources, Resources] = {}
        # a strategy that reads only the order, the capacity and the free capacity prices
        # the same for the same capacity and free capacity (see PricingStrategy.reads)
        known: dict[tuple[int, Resources, Resources], int | None] = {}
        alike_of: dict[int, bool] = {}
        online = ProviderState.ONLINE
        next_ids = self._next_id
        next_id = next_ids.get("bid", 1)
        for i, (height, provider_id, strategy, rng) in enumerate(polls):
            provider = providers[provider_id]
            if provider.state is not online or order_id in provider.open_bids:
                continue
            free = provider.free
            if free in left:
                less = left[free]
            else:
                less = left[free] = free - needs if needs.fits_in(free) else None
            if less is None:
                continue
            alike = alike_of.get(id(strategy))
            if alike is None:
                alike = alike_of[id(strategy)] = prices_alike(strategy)
            if alike:
                key = (id(strategy), provider.capacity, free)
                price = known.get(key, 0)
            else:
                price = 0
            if price == 0:  # not known yet (0 is never a price)
                price = auto_bid_price(
                    strategy,
                    PricingContext(
                        order_id, needs, max_price, created_at, height, provider.capacity,
                        free, best,
                    ),
                    rng,
                )  # fmt: skip
                if alike:
                    known[key] = price
            if price is None:
                continue
            reserved = provider.reserved
            more = plus.get(reserved)
            if more is None:
                more = plus[reserved] = reserved + needs
            bid_id = next_id
            next_id += 1
            next_ids["bid"] = next_id
            self._make_bid(bid_id, order, provider, price, height, more, less)
            bid_ids.append(bid_id)
            provider_ids.append(provider_id)
            prices.append(price)
            heights.append(height)
            placed[i] = True
            if best is None or price < best:
                best = price
        if bid_ids:
            events.append(
                BidsPlaced(
                    height=heights[-1],
                    order_id=order_id,
                    bid_ids=tuple(bid_ids),
                    provider_ids=tuple(provider_ids),
                    prices=tuple(prices),
                    heights=tuple(heights),
                )
            )
        return events, placed

    def fail_provider(self, provider_id: int, height: int) -> list[Event]:
        """A provider is lost: its open bids are withdrawn and each of its leases fails
        (``provider_lost``, against its reputation) and its order reopens.

        Raises :class:`UnknownEntity`, :class:`IllegalTransition` (already lost),
        :class:`InvalidHeight`.
        """
        provider = self._provider(provider_id)
        self._advance(height)
        provider.state = transition("provider", provider.id, provider.state, "fail")
        events = self._take()
        events.append(ProviderLost(height=height, provider_id=provider.id))
        for order_id in sorted(provider.open_bids):
            events.append(self._withdraw(self.bids[provider.open_bids[order_id]], height))
        for lease_id in sorted(provider.leases):
            events += self._fail_lease(self.leases[lease_id], height, CloseReason.PROVIDER_LOST)
        return events

    def recover_provider(self, provider_id: int, height: int) -> list[Event]:
        """A lost provider is back online and may bid again.

        Raises :class:`UnknownEntity`, :class:`IllegalTransition` (not lost),
        :class:`InvalidHeight`.
        """
        provider = self._provider(provider_id)
        self._advance(height)
        provider.state = transition("provider", provider.id, provider.state, "recover")
        events = self._take()
        events.append(ProviderRecovered(height=height, provider_id=provider.id))
        return events

    # ------------------------------------------------------------------ time and settlement

    def tick(self, height: int) -> list[Event]:
        """Advance to ``height``: run every settlement round and job deadline up to it.

        Raises :class:`InvalidHeight` if ``height`` is before the market's current height.
        """
        self._advance(height)
        return self._take()

    def flush(self) -> list[Event]:
        """With ``defer_rounds``: move the money the rounds so far owe (every deferred payment),
        so that balances, the ledger and each lease's totals are up to date. Otherwise nothing."""
        events = self._take()
        for dep_id in sorted(self._tallies):
            events += self._materialize(self.deployments[dep_id], self.last_round)
        return events

    # ------------------------------------------------------------------ memory and restoring

    def forget_closed(self) -> list[int]:
        """Drop the deployments closed since the last call from memory, with their orders,
        bids and leases (a driver that has stored them calls it, so that memory grows with what
        is live, not with history); return their ids. Commands naming them then raise
        :class:`UnknownEntity`. A provider's record (completed and failed leases) stays."""
        gone, self._closed = self._closed, []
        orders: set[int] = set()
        for dep_id in gone:
            dep = self.deployments.pop(dep_id, None)
            if dep is None:
                continue
            for order_id in dep.order_ids:
                self.orders.pop(order_id, None)
                orders.add(order_id)
            for lease_id in dep.lease_ids:
                self.leases.pop(lease_id, None)
            if not self._balances.get(escrow_account(dep_id)):
                self._balances.pop(escrow_account(dep_id), None)
        if orders and not self.forget_closed_bids:  # closed bids are kept: drop theirs
            for bid_id in [b.id for b in self.bids.values() if b.order_id in orders]:
                del self.bids[bid_id]
        return gone

    @classmethod
    def restore(
        cls,
        *,
        height: int,
        last_round: int,
        balances: Mapping[str, int],
        credited: int,
        withdrawn: int,
        tenants: Iterable[Tenant] = (),
        providers: Iterable[Provider] = (),
        deployments: Iterable[Deployment] = (),
        orders: Iterable[Order] = (),
        bids: Iterable[Bid] = (),
        leases: Iterable[Lease] = (),
        next_ids: Mapping[str, int] | None = None,
        **settings: object,
    ) -> Market:
        """A market rebuilt from a driver's records (rows it stored): what the market keeps
        about each entity as given, and what follows from them (a provider's held and
        reserved resources and its free capacity, an order's open bids, the open orders, the
        deployments that pay each round, each job's next deadline) worked out again. Closed
        deployments may be left out (see :meth:`forget_closed`), and so may bids that are not
        open. ``settings`` are the constructor's (``defer_rounds`` is refused: tallies are not
        records). ``next_ids``: the next id of each kind, if the driver knows more than the
        records show. Raises ``ValueError`` for records that do not fit together.
        """
        if settings.get("defer_rounds"):
            raise ValueError("a market with deferred rounds cannot be restored from records")
        market = cls(**settings)  # type: ignore[arg-type]
        market.height, market.last_round = height, last_round
        market.credited, market.withdrawn = credited, withdrawn
        market._balances = {k: v for k, v in balances.items() if v}
        market.tenants = {t.id: t for t in tenants}
        market.providers = {p.id: p for p in providers}
        market.deployments = {d.id: d for d in deployments}
        market.orders = {o.id: o for o in sorted(orders, key=lambda o: o.id)}
        market.leases = {lease.id: lease for lease in sorted(leases, key=lambda x: x.id)}
        for provider in market.providers.values():
            provider.used, provider.reserved = Resources(), Resources()
            provider.open_bids, provider.leases = {}, set()
        for dep in market.deployments.values():
            dep.order_ids, dep.lease_ids = [], []
        try:
            for order in market.orders.values():
                market.deployments[order.deployment_id].order_ids.append(order.id)
                order.open_bids = {}
                if order.state is OrderState.OPEN:
                    market._open_orders[order.id] = order
            for lease in market.leases.values():
                market.deployments[lease.deployment_id].lease_ids.append(lease.id)
                market.orders[lease.order_id].lease_id = lease.id
                if lease.state is not LeaseState.CLOSED:
                    provider = market.providers[lease.provider_id]
                    provider.leases.add(lease.id)
                    provider.used += lease.resources
            for bid in sorted(bids, key=lambda b: b.id):
                if bid.state is BidState.OPEN:
                    order = market.orders[bid.order_id]
                    provider = market.providers[bid.provider_id]
                    order.open_bids[bid.id] = bid.price
                    provider.open_bids[order.id] = bid.id
                    provider.reserved += order.resources
                elif market.forget_closed_bids:
                    continue
                market.bids[bid.id] = bid
        except KeyError as exc:
            raise ValueError(f"the records name {exc.args[0]!r}, which they do not hold") from None
        for provider in market.providers.values():
            provider.free = provider.capacity - provider.used - provider.reserved
            market._grow_largest(provider.capacity)
        lifetime = market.limits.order_lifetime
        for order in market._open_orders.values():
            tenant_id = market.deployments[order.deployment_id].tenant_id
            market._open_by_tenant[tenant_id] = market._open_by_tenant.get(tenant_id, 0) + 1
            if lifetime is not None:  # from the block it opened: created, or its lease closed
                last = market.leases.get(order.lease_id) if order.lease_id is not None else None
                opened = order.created_at if last is None else last.closed_at or order.created_at
                market._lives(order.id, max(opened, order.created_at) + lifetime)
        if market._shares:
            for provider in market.providers.values():
                for order_id in provider.open_bids:
                    market._reserve_for(provider.id, market.orders[order_id], +1)
        for dep in market.deployments.values():
            if dep.state is DeploymentState.CLOSED:
                continue
            if dep.is_job:
                market._schedule_job(dep)
            elif dep.state is DeploymentState.ACTIVE and any(
                market.leases[i].state is LeaseState.ACTIVE for i in dep.lease_ids
            ):
                market._billing.add(dep.id)
        known = {
            "tenant": market.tenants, "provider": market.providers,
            "deployment": market.deployments, "order": market.orders, "bid": market.bids,
            "lease": market.leases,
        }  # fmt: skip
        for kind, table in known.items():
            after = max(table, default=0) + 1
            market._next_id[kind] = max(after, (next_ids or {}).get(kind, 1))
        return market

    def settle_deployment(self, deployment_id: int, height: int) -> list[Event]:
        """Settle one deployment's active leases up to ``height`` now, as a round would.

        Rounds call this for every billing deployment; a driver may call it between rounds
        (settling ``[a, c]`` at once pays exactly what ``[a, b]`` then ``[b, c]`` pays when
        escrow covers both). Escrow short: nothing is paid and the leases pause.
        Raises :class:`UnknownEntity`, :class:`InvalidHeight`.
        """
        dep = self._deployment(deployment_id)
        self._advance(height)
        events = self._take()
        if dep.id in self._billing:
            events += self._untally(dep, self.last_round)
            events += self._settle(dep, height)[0]
            self._tally(dep)
        return events

    # ------------------------------------------------------------------ internals: time

    def _take(self) -> list[Event]:
        events, self._outbox = self._outbox, []
        return events

    def _advance(self, height: int) -> None:
        if isinstance(height, bool) or not isinstance(height, int) or height < 0:
            raise InvalidHeight(f"height must be a non-negative integer, got {height!r}")
        if height < self.height:
            raise InvalidHeight(f"height {height} is before the market's height {self.height}")
        events = self._outbox
        interval = self.settlement_interval
        while True:
            next_round = self.last_round + interval
            deadline = self._next_deadline()
            expiry = self._next_expiry() if self._lifetime_heap else None
            if (
                expiry is not None
                and expiry <= height
                and expiry <= next_round
                and (deadline is None or expiry <= deadline[0])
            ):
                order_id = heapq.heappop(self._lifetime_heap)[1]
                self.height = max(self.height, expiry)
                order = self.orders[order_id]
                events += self._close_order(order, expiry, CloseReason.EXPIRED, "expire")
            elif deadline is not None and deadline[0] <= height and deadline[0] <= next_round:
                block, job_id = deadline
                self.height = max(self.height, block)
                events += self._job_deadline_reached(self.deployments[job_id], block)
            elif next_round <= height:
                self.height = next_round
                self.last_round = next_round
                events += self._round(next_round)
            else:
                break
        self.height = height

    def _round(self, height: int) -> list[Event]:
        events: list[Event] = []
        paid = paused = amount = 0
        if self.defer_rounds:
            due = self._due(height)
            for dep_id in due:  # settled through the round before, then checked like any other
                events += self._untally(self.deployments[dep_id], height - self.settlement_interval)
            owed = self._rate * self.settlement_interval - self._short_of_full.pop(height, 0)
            self.accrued += owed
            paid, amount = len(self._tallies), owed
            settle = due
        else:
            settle = sorted(self._billing)
        for dep_id in settle:
            dep = self.deployments[dep_id]
            dep_events, moved = self._settle(dep, height)
            events += dep_events
            if moved is None:
                paused += 1
            else:
                paid += 1
                amount += moved
                self._tally(dep)
        events.append(
            SettlementRound(
                height=height, deployments_paid=paid, deployments_paused=paused, amount_paid=amount
            )
        )
        return events

    # ------------------------------------------------------------------ internals: deferred rounds

    def _tally(self, dep: Deployment) -> None:
        """Defer a billing deployment's rounds until the first at which its escrow may fall
        short (it must be untallied, with every lease settled to the last round or started
        since)."""
        if not self.defer_rounds or dep.id not in self._billing or dep.id in self._tallies:
            return
        running = [
            self.leases[i] for i in dep.lease_ids if self.leases[i].state is LeaseState.ACTIVE
        ]
        rate = sum(lease.price for lease in running)
        last = self.last_round
        # leases that started since the last round owe only part of the next one
        gap = sum(lease.price * (lease.last_settled - last) for lease in running)
        paid_through = job_deadline(
            self.escrow(dep.id), [(lease.last_settled, lease.price) for lease in running]
        )
        assert paid_through is not None  # a billing deployment has an active lease
        interval = self.settlement_interval
        check = (paid_through // interval + 1) * interval  # the first round it cannot pay
        self._tallies[dep.id] = _Tally(rate=rate, first_round=last + interval, gap=gap, check=check)
        self._rate += rate
        if gap:
            self._short_of_full[last + interval] = self._short_of_full.get(last + interval, 0) + gap
        heapq.heappush(self._checks, (check, dep.id))

    def _untally(self, dep: Deployment, through: int) -> list[Event]:
        """Settle a tallied deployment's deferred rounds up to ``through`` and drop its tally."""
        tally = self._tallies.get(dep.id)
        if tally is None:
            return []
        events = self._materialize(dep, through)
        del self._tallies[dep.id]
        self._rate -= tally.rate
        if tally.gap and tally.first_round > through:  # its first round has not been counted
            left = self._short_of_full[tally.first_round] - tally.gap
            if left:
                self._short_of_full[tally.first_round] = left
            else:
                del self._short_of_full[tally.first_round]
        return events

    def _materialize(self, dep: Deployment, through: int) -> list[Event]:
        """Pay a tallied deployment's leases for their deferred rounds up to ``through``: one
        settlement transfer per lease, dated ``through``."""
        leases = [
            self.leases[i]
            for i in dep.lease_ids
            if self.leases[i].state is LeaseState.ACTIVE and self.leases[i].last_settled < through
        ]
        if not leases:
            return []
        claims = [self._claim(lease, through) for lease in leases]
        plan = plan_round(self.escrow(dep.id), claims, self.fee_bps)
        assert plan is not None, f"deployment {dep.id}: deferred rounds it could not pay"
        events: list[Event] = []
        for lease, payment in zip(leases, plan, strict=True):
            events += self._pay(
                dep, lease, payment, through, TransferReason.SETTLEMENT, dated=through
            )
            lease.last_settled = through
            self.accrued -= payment.gross
        return events

    def _due(self, height: int) -> list[int]:
        """The tallied deployments whose escrow may fall short at this round, by id."""
        due = []
        checks = self._checks
        while checks and checks[0][0] <= height:
            check, dep_id = heapq.heappop(checks)
            tally = self._tallies.get(dep_id)
            if tally is not None and tally.check == check:
                due.append(dep_id)
        return sorted(set(due))

    def _settle(self, dep: Deployment, height: int) -> tuple[list[Event], int | None]:
        """Settle a billing deployment to ``height``; returns events and the amount paid
        (``None`` if it paused)."""
        leases = [
            self.leases[i] for i in dep.lease_ids if self.leases[i].state is LeaseState.ACTIVE
        ]
        claims = [self._claim(lease, height) for lease in leases]
        plan = plan_round(self.escrow(dep.id), claims, self.fee_bps)
        events: list[Event] = []
        if plan is not None:
            for lease, payment in zip(leases, plan, strict=True):
                events += self._pay(dep, lease, payment, height, TransferReason.SETTLEMENT)
                lease.last_settled = height
            return events, sum(p.gross for p in plan)
        debt = 0
        for lease, claim in zip(leases, claims, strict=True):
            lease.state = transition("lease", lease.id, lease.state, "pause")
            lease.debt, lease.debt_start, lease.debt_end = claim.amount, claim.start, claim.end
            lease.last_settled = height
            debt += claim.amount
            events.append(
                LeasePaused(
                    height=height,
                    lease_id=lease.id,
                    deployment_id=dep.id,
                    provider_id=lease.provider_id,
                    debt=claim.amount,
                )
            )
        dep.state = transition("deployment", dep.id, dep.state, "pause")
        self._billing.discard(dep.id)
        events.append(DeploymentPaused(height=height, deployment_id=dep.id, debt=debt))
        return events, None

    def _try_resume(self, dep: Deployment, height: int) -> list[Event]:
        paused = [
            self.leases[i]
            for i in dep.lease_ids
            if self.leases[i].state is LeaseState.INSUFFICIENT_FUNDS
        ]
        claims = [self._claim(lease, height) for lease in paused]
        plan = plan_round(self.escrow(dep.id), claims, self.fee_bps)
        if plan is None:
            return []
        events: list[Event] = []
        for lease, payment in zip(paused, plan, strict=True):
            events += self._pay(dep, lease, payment, height, TransferReason.DEBT)
            lease.debt = 0
            lease.state = transition("lease", lease.id, lease.state, "resume")
            lease.last_settled = height
            events.append(
                LeaseResumed(
                    height=height,
                    lease_id=lease.id,
                    deployment_id=dep.id,
                    provider_id=lease.provider_id,
                )
            )
        dep.state = transition("deployment", dep.id, dep.state, "resume")
        if paused:
            self._billing.add(dep.id)
        events.append(DeploymentResumed(height=height, deployment_id=dep.id))
        return events

    # ------------------------------------------------------------------ internals: jobs

    def _schedule_job(self, dep: Deployment) -> None:
        """Recompute a job's next deadline: the earlier of escrow running out and a lease
        reaching the job's max runtime."""
        running = [
            self.leases[i] for i in dep.lease_ids if self.leases[i].state is LeaseState.ACTIVE
        ]
        deadline = job_next_deadline(
            self.escrow(dep.id),
            [(lease.created_at, lease.last_settled, lease.price) for lease in running],
            dep.max_runtime,
        )
        if deadline is None:
            self._job_deadlines.pop(dep.id, None)
            return
        if self._job_deadlines.get(dep.id) != deadline:
            self._job_deadlines[dep.id] = deadline
            heapq.heappush(self._deadline_heap, (deadline, dep.id))

    def _next_deadline(self) -> tuple[int, int] | None:
        heap = self._deadline_heap
        while heap:
            block, job_id = heap[0]
            if self._job_deadlines.get(job_id) == block:
                return block, job_id
            heapq.heappop(heap)  # stale: the job's deadline moved or it stopped running
        return None

    def _job_deadline_reached(self, dep: Deployment, height: int) -> list[Event]:
        running = [
            self.leases[i] for i in dep.lease_ids if self.leases[i].state is LeaseState.ACTIVE
        ]
        if job_out_of_funds(
            self.escrow(dep.id), [(lease.last_settled, lease.price) for lease in running], height
        ):
            # the escrow pays for no block beyond this one: stop the whole job
            events = self._close_deployment(dep, height, CloseReason.JOB_OUT_OF_FUNDS)
        else:
            events = []
            assert dep.max_runtime is not None
            for lease in running:
                if lease.created_at + dep.max_runtime <= height:
                    events += self._close_leases(dep, [lease], height, CloseReason.JOB_TIMED_OUT)
                    events += self._close_order(
                        self.orders[lease.order_id], height, CloseReason.JOB_TIMED_OUT
                    )
            events += self._maybe_finish_job(dep, height)  # closes the job or reschedules it
        return events

    def _maybe_finish_job(self, dep: Deployment, height: int) -> list[Event]:
        if dep.state is DeploymentState.CLOSED:
            return []
        if any(self.orders[i].state is not OrderState.CLOSED for i in dep.order_ids):
            self._schedule_job(dep)
            return []
        reason = job_outcome(self.leases[i].close_reason for i in dep.lease_ids)
        return self._close_deployment(dep, height, reason)

    # ------------------------------------------------------------------ internals: closing

    def _close_deployment(self, dep: Deployment, height: int, reason: CloseReason) -> list[Event]:
        live = [
            self.leases[i] for i in dep.lease_ids if self.leases[i].state is not LeaseState.CLOSED
        ]
        events = self._close_leases(dep, live, height, reason)
        for order_id in dep.order_ids:
            order = self.orders[order_id]
            if order.state is not OrderState.CLOSED:
                events += self._close_order(order, height, reason)
        dep.state = transition("deployment", dep.id, dep.state, "close")
        dep.closed_at, dep.close_reason = height, reason
        self._billing.discard(dep.id)
        self._job_deadlines.pop(dep.id, None)
        self._closed.append(dep.id)
        left = self.escrow(dep.id)
        if left:
            events.append(
                self._move(
                    escrow_account(dep.id),
                    tenant_account(dep.tenant_id),
                    left,
                    TransferReason.REFUND,
                )
            )
        events.append(DeploymentClosed(height=height, deployment_id=dep.id, reason=reason))
        return events

    def _close_order(
        self, order: Order, height: int, reason: CloseReason, command: str = "close"
    ) -> list[Event]:
        order.state = transition("order", order.id, order.state, command)
        self._not_open(order, self.deployments[order.deployment_id].tenant_id)
        order.closed_at, order.close_reason = height, reason
        events = self._lose_open_bids(order, height)
        events.append(
            OrderClosed(
                height=height, order_id=order.id, deployment_id=order.deployment_id, reason=reason
            )
        )
        return events

    def _not_open(self, order: Order, tenant_id: int) -> None:
        """The order is no longer open (matched or closed)."""
        if self._open_orders.pop(order.id, None) is None:
            return
        left = self._open_by_tenant[tenant_id] - 1
        if left:
            self._open_by_tenant[tenant_id] = left
        else:
            del self._open_by_tenant[tenant_id]
        if self._lifetimes:
            self._lifetimes.pop(order.id, None)

    def _lives(self, order_id: int, until: int) -> None:
        """An open order closes at block ``until`` unless it is matched or closed first
        (``Limits.order_lifetime``)."""
        self._lifetimes[order_id] = until
        heapq.heappush(self._lifetime_heap, (until, order_id))

    def _next_expiry(self) -> int | None:
        """The block at which the next open order's lifetime ends (stale entries dropped)."""
        heap, lifetimes = self._lifetime_heap, self._lifetimes
        while heap and lifetimes.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _close_leases(
        self, dep: Deployment, leases: list[Lease], height: int, reason: CloseReason
    ) -> list[Event]:
        """Final settlement of some leases of one deployment, then close them."""
        events = self._untally(dep, self.last_round)
        claims = [self._claim(lease, height) for lease in leases]
        for lease, payment in zip(
            leases, plan_close(self.escrow(dep.id), claims, self.fee_bps), strict=True
        ):
            events += self._pay(dep, lease, payment, height, TransferReason.CLOSE)
            if payment.written_off:
                lease.written_off += payment.written_off
                dep.written_off += payment.written_off
                events.append(
                    DebtWrittenOff(
                        height=height,
                        lease_id=lease.id,
                        deployment_id=dep.id,
                        provider_id=lease.provider_id,
                        amount=payment.written_off,
                    )
                )
            lease.debt = 0
            if lease.state is LeaseState.ACTIVE:
                lease.last_settled = height
            lease.state = transition("lease", lease.id, lease.state, "close")
            lease.closed_at, lease.close_reason = height, reason
            provider = self.providers[lease.provider_id]
            provider.used -= lease.resources
            provider.free += lease.resources
            provider.leases.discard(lease.id)
            if reason.counts_as_completed:
                provider.completed += 1
            elif reason.provider_at_fault:
                provider.failed += 1
            events.append(
                LeaseClosed(
                    height=height,
                    lease_id=lease.id,
                    deployment_id=dep.id,
                    provider_id=lease.provider_id,
                    reason=reason,
                )
            )
        if not any(self.leases[i].state is LeaseState.ACTIVE for i in dep.lease_ids):
            self._billing.discard(dep.id)
        self._tally(dep)
        return events

    def _fail_lease(self, lease: Lease, height: int, reason: CloseReason) -> list[Event]:
        dep = self.deployments[lease.deployment_id]
        events = self._close_leases(dep, [lease], height, reason)
        order = self.orders[lease.order_id]
        order.state = transition("order", order.id, order.state, "reopen")
        self._open_orders[order.id] = order
        self._open_by_tenant[dep.tenant_id] = self._open_by_tenant.get(dep.tenant_id, 0) + 1
        if self.limits.order_lifetime is not None:
            self._lives(order.id, height + self.limits.order_lifetime)
        events.append(OrderReopened(height=height, order_id=order.id, deployment_id=dep.id))
        if dep.is_job:
            self._schedule_job(dep)
        return events

    # ------------------------------------------------------------------ internals: money and bids

    def _claim(self, lease: Lease, height: int) -> Claim:
        """What a lease is owed at ``height``: an active lease, its blocks since it was last
        settled; a paused one, the debt recorded when it paused (paused blocks are never billed)."""
        if lease.state is LeaseState.ACTIVE:
            amount, start, end = (
                owed(lease.price, lease.last_settled, height),
                lease.last_settled,
                height,
            )
        else:
            amount, start, end = lease.debt, lease.debt_start, lease.debt_end
        return Claim(
            lease_id=lease.id,
            provider_id=lease.provider_id,
            amount=amount,
            start=start,
            end=end,
            paid_before=lease.total_paid,
        )

    def _pay(
        self,
        dep: Deployment,
        lease: Lease,
        payment: Payment,
        height: int,
        reason: str,
        *,
        dated: int | None = None,
    ) -> list[Event]:
        """Move a payment out of escrow; ``dated`` dates its transfers (default: now)."""
        events: list[Event] = []
        claim = payment.claim
        escrow = escrow_account(dep.id)
        if payment.net:
            events.append(
                self._move(
                    escrow,
                    provider_account(lease.provider_id),
                    payment.net,
                    reason,
                    lease.id,
                    claim.start,
                    claim.end,
                    dated,
                )
            )
        if payment.fee:
            events.append(
                self._move(
                    escrow,
                    NETWORK,
                    payment.fee,
                    TransferReason.FEE,
                    lease.id,
                    claim.start,
                    claim.end,
                    dated,
                )
            )
        lease.total_paid += payment.gross
        lease.blocks_paid += payment.blocks_paid(lease.price)
        return events

    def _move(
        self,
        source: str,
        destination: str,
        amount: int,
        reason: str,
        lease_id: int | None = None,
        start: int | None = None,
        end: int | None = None,
        dated: int | None = None,
    ) -> Transfer:
        if source != EXTERNAL:
            held = self._balances.get(source, 0)
            if held < amount:
                raise InsufficientBalance(source, held, amount)
            self._balances[source] = held - amount
        if destination != EXTERNAL:
            self._balances[destination] = self._balances.get(destination, 0) + amount
        entry = Transfer(
            height=self.height if dated is None else dated,
            source=source,
            destination=destination,
            amount=amount,
            reason=reason,
            lease_id=lease_id,
            start=start,
            end=end,
        )
        if self.keep_ledger:
            self.ledger.append(entry)
        return entry

    def _place_bid(self, order: Order, provider: Provider, price: int, height: int) -> BidPlaced:
        needs = order.resources
        bid_id = self._new_id("bid")
        self._make_bid(
            bid_id, order, provider, price, height, provider.reserved + needs, provider.free - needs
        )
        return BidPlaced(
            height=height,
            bid_id=bid_id,
            order_id=order.id,
            provider_id=provider.id,
            price=price,
            response_time=height - order.created_at,
        )

    def _make_bid(
        self,
        bid_id: int,
        order: Order,
        provider: Provider,
        price: int,
        height: int,
        reserved: Resources,
        free: Resources,
    ) -> None:
        """Record bid ``bid_id`` (a new id), list it on its order and its provider, and reserve
        its resources: ``reserved`` and ``free`` are the provider's once it is made (a caller
        placing many bids looks them up)."""
        order_id = order.id
        # Bid(id, order_id, provider_id, price, height, response_time)
        self.bids[bid_id] = Bid(
            bid_id, order_id, provider.id, price, height, height - order.created_at
        )
        order.open_bids[bid_id] = price
        provider.open_bids[order_id] = bid_id
        provider.reserved, provider.free = reserved, free
        if self._shares:
            self._reserve_for(provider.id, order, +1)

    def _reserve_for(self, provider_id: int, order: Order, sign: int) -> None:
        """Keep what the provider's open bids reserve on the order's tenant's orders, and how
        many they are (``Limits.tenant_share_bps``): ``sign`` +1 for a new bid, -1 for one no
        longer open. A tenant with no open bid left is forgotten: its next bid is a first."""
        tenant_id = self.deployments[order.deployment_id].tenant_id
        mine = self._reserved_for.setdefault(provider_id, {})
        count, held = mine.get(tenant_id, (0, _NOTHING))
        if sign > 0:
            mine[tenant_id] = (count + 1, held + order.resources)
        elif count > 1:
            mine[tenant_id] = (count - 1, held - order.resources)
        else:
            del mine[tenant_id]

    def _release(
        self, bid: Bid, reserved: Resources | None = None, free: Resources | None = None
    ) -> None:
        """A bid is no longer open: unlist it and release the resources it reserved
        (``reserved`` and ``free``: the provider's after, if the caller looked them up)."""
        order = self.orders[bid.order_id]
        provider = self.providers[bid.provider_id]
        del order.open_bids[bid.id]
        del provider.open_bids[order.id]
        if reserved is None or free is None:
            reserved = provider.reserved - order.resources
            free = provider.free + order.resources
        provider.reserved, provider.free = reserved, free
        if self._shares:
            self._reserve_for(provider.id, order, -1)

    def _withdraw(self, bid: Bid, height: int) -> Event:
        """A provider's open bid is withdrawn, releasing its reservation."""
        bid.state = transition("bid", bid.id, bid.state, "withdraw")
        self._release(bid)
        if self.forget_closed_bids:
            del self.bids[bid.id]
        return BidWithdrawn(
            height=height, bid_id=bid.id, order_id=bid.order_id, provider_id=bid.provider_id
        )

    def _lose_open_bids(self, order: Order, height: int) -> list[Event]:
        """Every open bid on the order is lost (by id), releasing its reservation through
        :meth:`_release`; the same resources come back to many providers, so each sum and
        difference is made once."""
        open_bids = order.open_bids
        if not open_bids:
            open_bids.clear()  # it may keep the table of bids withdrawn one by one
            return []
        bid_ids = sorted(open_bids)
        bids, providers, needs, order_id = self.bids, self.providers, order.resources, order.id
        forget = self.forget_closed_bids
        is_open = BidState.OPEN
        lost = transition("bid", None, is_open, "lose")
        provider_ids = []
        less: dict[Resources, Resources] = {}
        more: dict[Resources, Resources] = {}
        for bid_id in bid_ids:
            bid = bids[bid_id]
            if bid.state is not is_open:  # never: a bid listed on its order is open
                transition("bid", bid_id, bid.state, "lose")
            bid.state = lost
            provider_id = bid.provider_id
            provider_ids.append(provider_id)
            provider = providers[provider_id]
            reserved, free = provider.reserved, provider.free
            fewer = less.get(reserved)
            if fewer is None:
                fewer = less[reserved] = reserved - needs
            freer = more.get(free)
            if freer is None:
                freer = more[free] = free + needs
            self._release(bid, fewer, freer)
            if forget:
                del bids[bid_id]
        open_bids.clear()  # empty already; this frees its table, which deletions keep
        return [
            BidsLost(
                height=height,
                order_id=order_id,
                bid_ids=tuple(bid_ids),
                provider_ids=tuple(provider_ids),
            )
        ]

    def _given_id(self, kind: str, wanted: int | None, taken: Mapping[int, object]) -> int:
        if wanted is None:
            return self._new_id(kind)
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
            raise InvalidAmount(f"{kind} id must be a positive integer, got {wanted!r}")
        if wanted in taken:
            raise InvalidAmount(f"{kind} {wanted} exists already")
        self._next_id[kind] = max(self._next_id.get(kind, 1), wanted + 1)
        return wanted

    def _new_id(self, kind: str) -> int:
        value = self._next_id.get(kind, 1)
        self._next_id[kind] = value + 1
        return value

    def _get(self, table: Mapping[int, E], entity: str, entity_id: int) -> E:
        try:
            return table[entity_id]
        except (KeyError, TypeError):
            raise UnknownEntity(entity, entity_id) from None

    def _tenant(self, i: int) -> Tenant:
        return self._get(self.tenants, "tenant", i)

    def _provider(self, i: int) -> Provider:
        return self._get(self.providers, "provider", i)

    def _deployment(self, i: int) -> Deployment:
        return self._get(self.deployments, "deployment", i)

    def _order(self, i: int) -> Order:
        return self._get(self.orders, "order", i)

    def _bid(self, i: int) -> Bid:
        return self._get(self.bids, "bid", i)

    def _lease(self, i: int) -> Lease:
        return self._get(self.leases, "lease", i)

"""The market's records. The market owns and mutates them; drivers read them, never write.

Ids are small integers the market hands out in order (1, 2, 3 … per kind), so runs are
reproducible and a driver with its own store can persist them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from ._reputation import reputation_score
from ._resources import Resources
from ._specs import OrderSpec
from ._state import (
    BidState,
    CloseReason,
    DeploymentState,
    LeaseState,
    OrderState,
    ProviderState,
)

__all__ = ["Bid", "Deployment", "Lease", "Order", "Provider", "Tenant"]


@dataclass(slots=True, kw_only=True)
class Tenant:
    """An account that buys compute; its balance is the ledger account ``tenant:<id>``."""

    id: int
    name: str


@dataclass(slots=True, kw_only=True)
class Provider:
    """An account that sells compute: a node's capacity, placement attributes and reputation.

    ``used`` is held by its leases that are not closed (paused containers still hold theirs);
    ``reserved`` by its open bids. ``free`` is what is left for new bids.
    """

    id: int
    name: str
    capacity: Resources
    attributes: Mapping[str, str]
    auditors: frozenset[str] = frozenset()
    gpu_models: frozenset[str] = frozenset()  # "vendor/model" keys
    state: ProviderState = ProviderState.ONLINE
    used: Resources = field(default_factory=Resources)
    reserved: Resources = field(default_factory=Resources)
    completed: int = 0
    failed: int = 0
    open_bids: dict[int, int] = field(default_factory=dict)  # order id -> bid id
    leases: set[int] = field(default_factory=set)  # ids of its leases that are not closed
    # Capacity not held by leases or open bids: capacity - used - reserved, kept up to date by
    # the market whenever it changes either (read often, by every poll and bid)
    free: Resources = field(init=False)

    def __post_init__(self) -> None:
        self.free = self.capacity - self.used - self.reserved

    @property
    def reputation(self) -> Fraction:
        """Completed versus failed leases as a score in (0, 1), with a prior."""
        return reputation_score(self.completed, self.failed)


@dataclass(slots=True, kw_only=True)
class Deployment:
    """A deployment (long-running service) or job (``kind == "job"``) with its escrow.

    The escrow balance is the ledger account ``escrow:<id>``.
    """

    id: int
    tenant_id: int
    kind: str  # "deployment" | "job"
    created_at: int
    max_runtime: int | None = None  # jobs: blocks a lease may run
    state: DeploymentState = DeploymentState.ACTIVE
    order_ids: list[int] = field(default_factory=list)
    lease_ids: list[int] = field(default_factory=list)
    closed_at: int | None = None
    close_reason: CloseReason | None = None
    written_off: int = 0

    @property
    def is_job(self) -> bool:
        """True for a one-time computation, charged at completion rather than per round."""
        return self.kind == "job"


@dataclass(slots=True, kw_only=True)
class Order:
    """One service replica's request: resources, placement and a maximum price per block."""

    id: int
    deployment_id: int
    spec: OrderSpec
    created_at: int
    state: OrderState = OrderState.OPEN
    open_bids: dict[int, int] = field(default_factory=dict)  # bid id -> price
    lease_id: int | None = None  # the current (or last) lease
    closed_at: int | None = None
    close_reason: CloseReason | None = None

    @property
    def resources(self) -> Resources:
        """The resources one replica needs."""
        return self.spec.resources

    @property
    def max_price(self) -> int:
        """The most the tenant pays per block, in micro-units."""
        return self.spec.max_price


@dataclass(slots=True)
class Bid:
    """A provider's offer on an order: ``price`` per block, placed at ``height``.

    ``response_time`` is ``height - order.created_at`` in blocks. Its fields may be given by
    position (the market makes one per bid placed, so it does, in this order).
    """

    id: int
    order_id: int
    provider_id: int
    price: int
    height: int
    response_time: int
    state: BidState = BidState.OPEN


@dataclass(slots=True, kw_only=True)
class Lease:
    """The contract made when a bid is accepted.

    ``last_settled`` is the block up to which the lease has been settled (exclusive): blocks
    before it are paid or recorded as ``debt``, never billed again. ``total_paid`` is gross (fee
    included); ``blocks_paid`` counts whole blocks paid.
    """

    id: int
    deployment_id: int
    order_id: int
    provider_id: int
    bid_id: int
    price: int
    resources: Resources
    created_at: int
    last_settled: int
    state: LeaseState = LeaseState.ACTIVE
    debt: int = 0
    debt_start: int = 0
    debt_end: int = 0
    blocks_paid: int = 0
    total_paid: int = 0
    written_off: int = 0
    closed_at: int | None = None
    close_reason: CloseReason | None = None

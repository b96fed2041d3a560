"""Events: what the core decided, for the driver to carry out or record.

Every command of :class:`~kova_core.Market` returns the list of events it caused, in order.
A driver acts on the ones it cares about (``LeaseStarted`` -> start a container,
``LeasePaused`` -> pause it, ``LeaseClosed`` -> remove it) and records the rest. Each
:class:`Transfer` is also a ledger entry.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ._state import CloseReason

__all__ = [
    "BidPlaced",
    "BidWithdrawn",
    "BidsLost",
    "BidsPlaced",
    "DebtWrittenOff",
    "DeploymentClosed",
    "DeploymentCreated",
    "DeploymentPaused",
    "DeploymentResumed",
    "Event",
    "LeaseClosed",
    "LeasePaused",
    "LeaseResumed",
    "LeaseStarted",
    "OrderClosed",
    "OrderOpened",
    "OrderReopened",
    "ProviderLost",
    "ProviderRecovered",
    "SettlementRound",
    "Transfer",
    "TransferReason",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event: ``height`` is the block at which it happened.

    ``str(event)`` is one compact line, ``@<height> <Kind>(field=value, ...)``, leaving out
    fields that are not set: for logs, CLIs and documentation.
    """

    height: int

    def __str__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "height" and value is not None:
                shown.append(f"{f.name}={value}")
        return f"@{self.height} {type(self).__name__}({', '.join(shown)})"


class TransferReason:
    """The reasons a :class:`Transfer` records (plain strings, so ledgers stay simple columns)."""

    CREDIT = "credit"  # an operator credited a tenant (money enters the system)
    WITHDRAWAL = "withdrawal"  # an account holder took money out of the system
    DEPOSIT = "deposit"  # tenant -> escrow
    SETTLEMENT = "settlement"  # escrow -> provider, a settlement round
    DEBT = "debt"  # escrow -> provider, paying a recorded debt on resume
    CLOSE = "close"  # escrow -> provider, settling up to a lease's close
    FEE = "fee"  # escrow -> network, the network's share of a payment
    REFUND = "refund"  # escrow -> tenant, what is left when a deployment or job closes


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer(Event):
    """A ledger entry: ``amount`` micro-units moved from ``source`` to ``destination``.

    Payments for a lease name it and the half-open range of blocks ``[start, end)`` they pay
    (partly, if a close could not pay in full).
    """

    source: str
    destination: str
    amount: int
    reason: str
    lease_id: int | None = None
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentCreated(Event):
    """A tenant created a deployment (or job, ``kind == "job"``) with an escrow."""

    deployment_id: int
    tenant_id: int
    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentPaused(Event):
    """A settlement round found the escrow short: every active lease is paused."""

    deployment_id: int
    debt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentResumed(Event):
    """A deposit covered the debt: it was paid and the leases run again."""

    deployment_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentClosed(Event):
    """A deployment or job ended; its escrow was settled and the rest refunded."""

    deployment_id: int
    reason: CloseReason


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderOpened(Event):
    """An order is open for bids (one per service replica)."""

    order_id: int
    deployment_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderReopened(Event):
    """A lease failed through its provider; its order is open for bids again."""

    order_id: int
    deployment_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderClosed(Event):
    """An order closed: its deployment closed, its job lease finished, or it expired."""

    order_id: int
    deployment_id: int
    reason: CloseReason


@dataclass(frozen=True, slots=True, kw_only=True)
class BidPlaced(Event):
    """A provider bid ``price`` micro per block on an order; its resources are now reserved."""

    bid_id: int
    order_id: int
    provider_id: int
    price: int
    response_time: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BidsPlaced(Event):
    """Several providers bid on one order, in polls carried out together
    (:meth:`~kova_core.Market.poll_late`): bid ``bid_ids[i]`` is provider ``provider_ids[i]``'s,
    ``prices[i]`` micro per block, placed at ``heights[i]``; each reserves the order's
    resources. ``height`` is the last of ``heights``."""

    order_id: int
    bid_ids: tuple[int, ...]
    provider_ids: tuple[int, ...]
    prices: tuple[int, ...]
    heights: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BidsLost(Event):
    """Another bid on the order was accepted, or the order closed: its open bids (by id, each
    with its provider) are lost, and their reservations released."""

    order_id: int
    bid_ids: tuple[int, ...]
    provider_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BidWithdrawn(Event):
    """The provider took its bid back (or went offline). Reservation released."""

    bid_id: int
    order_id: int
    provider_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseStarted(Event):
    """A bid was accepted: the provider starts the order's work now. Billing starts here."""

    lease_id: int
    deployment_id: int
    order_id: int
    provider_id: int
    price: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LeasePaused(Event):
    """Escrow ran short: the lease's containers are paused; ``debt`` is what it is owed."""

    lease_id: int
    deployment_id: int
    provider_id: int
    debt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseResumed(Event):
    """Its debt was paid: the lease's containers run again."""

    lease_id: int
    deployment_id: int
    provider_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseClosed(Event):
    """The lease ended for ``reason``; its containers are removed, its capacity released."""

    lease_id: int
    deployment_id: int
    provider_id: int
    reason: CloseReason


@dataclass(frozen=True, slots=True, kw_only=True)
class DebtWrittenOff(Event):
    """At close, escrow could not pay all a lease was owed: ``amount`` will never be paid."""

    lease_id: int
    deployment_id: int
    provider_id: int
    amount: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderLost(Event):
    """A provider failed: its leases closed (against its reputation), its bids withdrawn."""

    provider_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderRecovered(Event):
    """A lost provider is back online and may bid again."""

    provider_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementRound(Event):
    """A settlement round ran: how many deployments paid, how many paused, and how much moved."""

    deployments_paid: int
    deployments_paused: int
    amount_paid: int

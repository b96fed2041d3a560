"""Typed errors raised by the core.

Every error the core raises is a :class:`KovaError`. A driver translates them at its one
boundary (an HTTP status, a CLI message, a scenario error) and never needs to parse messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BidRejected",
    "DeploymentNotPayable",
    "DepositTooSmall",
    "DuplicateBid",
    "IllegalTransition",
    "InsufficientBalance",
    "InsufficientCapacity",
    "InvalidAmount",
    "InvalidHeight",
    "KovaError",
    "ManifestError",
    "ManifestProblem",
    "NotAJob",
    "OrderNotOpen",
    "PlacementMismatch",
    "PriceAboveMax",
    "ProviderOffline",
    "StrategyConfigError",
    "TenantShareReached",
    "TooManyOpenOrders",
    "UnknownEntity",
    "UnknownStrategy",
]


class KovaError(Exception):
    """Base class of every error raised by ``kova_core``."""


class IllegalTransition(KovaError):
    """A command asked an entity for a transition its lifecycle table does not have."""

    def __init__(self, entity: str, entity_id: object, state: str, command: str) -> None:
        self.entity = entity
        self.entity_id = entity_id
        self.state = state
        self.command = command
        super().__init__(f"{entity} {entity_id} is {state}: cannot {command}")


class UnknownEntity(KovaError):
    """A command named a tenant, provider, deployment, order, bid or lease that does not exist."""

    def __init__(self, entity: str, entity_id: object) -> None:
        self.entity = entity
        self.entity_id = entity_id
        super().__init__(f"no {entity} with id {entity_id!r}")


class InvalidAmount(KovaError):
    """An amount of money or a price is not a non-negative integer number of micro-units."""


class InvalidHeight(KovaError):
    """A block height goes backwards, or is not a valid height for the command."""


class InsufficientBalance(KovaError):
    """An account does not hold the amount a command would move out of it."""

    def __init__(self, account: str, balance: int, amount: int) -> None:
        self.account = account
        self.balance = balance
        self.amount = amount
        super().__init__(f"account {account} holds {balance} micro, needs {amount}")


class NotAJob(KovaError):
    """A job-only command (finishing a job's run) named a lease of a long-running deployment."""


class DeploymentNotPayable(KovaError):
    """A bid cannot be accepted because the deployment is paused for insufficient funds."""


class DepositTooSmall(KovaError):
    """A new deployment's deposit would not keep it for the network's minimum number of blocks
    at its maximum price (``Limits.min_deposit_blocks``)."""


class TooManyOpenOrders(KovaError):
    """The tenant has as many open orders as the network allows one tenant
    (``Limits.max_open_orders``)."""


class ProviderOffline(KovaError):
    """The provider is lost (failed or missed its heartbeats) and cannot bid."""


class BidRejected(KovaError):
    """Base class of the reasons a bid is refused."""


class OrderNotOpen(BidRejected):
    """The order is matched or closed, so it takes no bids."""


class PriceAboveMax(BidRejected):
    """The bid's price per block is above the order's maximum price per block."""


class InsufficientCapacity(BidRejected):
    """The provider's free capacity (after its leases and open bids) does not fit the order."""


class TenantShareReached(InsufficientCapacity):
    """The provider's open bids on the tenant's orders already reserve the share of its capacity
    that one tenant's may (``Limits.tenant_share_bps``)."""


class DuplicateBid(BidRejected):
    """The provider already has an open bid on the order."""


class PlacementMismatch(BidRejected):
    """The provider lacks an attribute, auditor or GPU model that the order's placement requires."""


class UnknownStrategy(KovaError):
    """No pricing strategy or bid selection policy is registered under that name."""


class StrategyConfigError(KovaError):
    """A strategy or policy was given a parameter it does not take, or a value out of range."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class ManifestProblem:
    """One problem found in a manifest (or one warning about it): the dotted path of the field
    and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestError(KovaError):
    """A manifest is invalid. ``problems`` lists every problem found, each with its field path;
    ``warnings``, what the parser found to say besides (unknown fields it ignored, features the
    network does not honour), as :attr:`kova_core.Manifest.warnings` would have had them."""

    def __init__(
        self, problems: Sequence[ManifestProblem], warnings: Sequence[ManifestProblem] = ()
    ) -> None:
        self.problems = tuple(problems)
        self.warnings = tuple(warnings)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(f"invalid manifest ({count} problem{'s' if count != 1 else ''}):\n{lines}")

"""The network's limits: the rules that make abuse cost money or stop it, as settings of
:class:`~kova_core.Market` (``Market(limits=Limits(...))``).

Each limit is off by default (a research market has none unless its scenario asks); the live
orchestrator turns them on with the values of :meth:`Limits.network`, each a flag of
``kova-live serve``. Both drivers apply them through the same market commands, so a scenario that
sets them sees the market a live network runs.

- ``min_deposit_blocks``: a deployment's first deposit must keep it for that many blocks at its
  maximum price (the sum of its orders' max prices per block). Opening orders is not free: an
  order reserves providers' capacity with every bid it draws.
- ``max_replicas``: the most orders (service replicas) one deployment opens.
- ``max_open_orders``: the most orders one tenant may have open at once.
- ``largest_provider``: an order's resources must fit in the largest capacity of any provider the
  market has (per resource: the most CPU of any provider, the most memory of any…), since no
  provider could bid on more. A market with no provider yet takes any size.
- ``order_lifetime``: an order still open that many blocks after it opened (was created, or
  reopened when its lease failed) closes ``expired``; its open bids are lost, releasing what they
  reserved. With bids nobody accepts, capacity would otherwise stay reserved forever.
- ``tenant_share_bps``: the most of a provider's capacity (basis points, per resource) that its
  open bids on one tenant's orders may reserve. A provider may always hold one open bid on a
  tenant's orders, however large (an order may need a whole machine): the share bounds the rest,
  so one tenant's flood of orders cannot take all of a provider's capacity from the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from ._errors import InvalidAmount
from ._money import MAX_AMOUNT
from ._resources import Resources
from ._specs import OrderSpec

__all__ = ["Limits", "blocks_in", "deposit_for_hours", "max_price_per_block"]

HOUR_MS = 3_600_000

BPS = 10_000


@dataclass(frozen=True, slots=True)
class Limits:
    """A market's limits; ``None`` (or ``0`` blocks of deposit, ``False``) turns one off."""

    min_deposit_blocks: int = 0
    max_replicas: int | None = None
    max_open_orders: int | None = None
    largest_provider: bool = False
    order_lifetime: int | None = None
    tenant_share_bps: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "largest_provider":
                if not isinstance(value, bool):
                    raise InvalidAmount(f"limits.{f.name} must be true or false, got {value!r}")
                continue
            if value is None and f.name != "min_deposit_blocks":
                continue
            low = 0 if f.name == "min_deposit_blocks" else 1
            high = BPS if f.name == "tenant_share_bps" else MAX_AMOUNT
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidAmount(
                    f"limits.{f.name} must be an integer from {low} to {high}, got {value!r}"
                )

    @classmethod
    def network(cls, settlement_interval: int = 60) -> Limits:
        """The live network's defaults: a deposit for one settlement interval, 100 replicas
        per deployment, 1,000 open orders per tenant, orders no larger than the largest
        provider, open orders closed after an hour (3,600 one-second blocks), half a provider's
        capacity for one tenant's bids."""
        return cls(
            min_deposit_blocks=settlement_interval,
            max_replicas=100,
            max_open_orders=1000,
            largest_provider=True,
            order_lifetime=3600,
            tenant_share_bps=5000,
        )

    def min_deposit(self, price_per_block: int) -> int:
        """The least first deposit of a deployment whose orders' maximum prices add up to
        ``price_per_block``: ``min_deposit_blocks`` blocks of it (0 when the limit is off)."""
        return self.min_deposit_blocks * price_per_block

    def share_of(self, capacity: Resources) -> Resources:
        """The part of ``capacity`` one tenant's open bids may reserve (rounded down)."""
        bps = BPS if self.tenant_share_bps is None else self.tenant_share_bps
        return Resources(*(c * bps // BPS for c in capacity))


def max_price_per_block(specs: Iterable[OrderSpec]) -> int:
    """What a deployment's orders may cost together per block at most: the sum of their
    maximum prices (micro-units)."""
    return sum(spec.max_price for spec in specs)


def blocks_in(milliseconds: int, block_ms: int = 1000) -> int:
    """How many blocks of ``block_ms`` it takes to cover ``milliseconds`` (rounded up: a
    started block is billed whole)."""
    if block_ms <= 0 or milliseconds < 0:
        raise InvalidAmount(f"a duration of {milliseconds} ms in blocks of {block_ms} ms")
    return -(-milliseconds // block_ms)


def deposit_for_hours(price_per_block: int, hours: int, block_ms: int = 1000) -> int:
    """The escrow that keeps a deployment running ``hours`` at ``price_per_block`` (micro-units)
    on a network whose blocks last ``block_ms``: the price times the blocks in those hours."""
    return price_per_block * blocks_in(hours * HOUR_MS, block_ms)

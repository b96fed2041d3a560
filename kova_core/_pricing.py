"""Provider pricing strategies: one small interface, several strategies, registered by name.

A strategy reads a read-only :class:`PricingContext` (the order, the provider's capacity, the
best competing bid) and returns a price per block in micro-units, or ``None`` for no bid. The
auto-bidder rule around it (:func:`auto_bid_price`) is the seed's: bid only if the order fits
the free capacity and the price is within the order's maximum. The simulator and the live
provider agent call the same objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np

from ._errors import StrategyConfigError
from ._money import MICRO
from ._registry import build
from ._resources import Resources

__all__ = [
    "PRICING_STRATEGIES",
    "CostPlus",
    "FixedPrice",
    "PricingContext",
    "PricingStrategy",
    "RandomBand",
    "Undercut",
    "UtilisationPrice",
    "auto_bid_price",
    "lowest_ask",
    "prices_alike",
    "pricing_strategy",
]

GIB = 1024**3


class PricingContext(NamedTuple):
    """What a provider sees when it prices one order (read-only; a named tuple, since the
    auto-bidder builds one per order it prices).

    ``free`` is the provider's capacity not held by leases or open bids; ``best_price`` is the
    lowest open bid on the order from another provider (``None`` if there is none).
    """

    order_id: int
    resources: Resources
    max_price: int
    order_created_at: int
    height: int
    capacity: Resources
    free: Resources
    best_price: int | None = None


@runtime_checkable
class PricingStrategy(Protocol):
    """A provider's pricing: ``price`` returns micro-units per block, or ``None`` for no bid.

    A strategy may also say which parts of its input it reads, as a class attribute ``reads``
    (a frozenset of :class:`PricingContext` field names, plus ``"rng"`` if it draws). One that
    reads nothing but ``resources``, ``max_price``, ``capacity`` and ``free`` gives the same
    price for the same values, so a market pricing many polls of one order at once prices each
    such strategy once per capacity and free capacity (:func:`prices_alike`). Without
    ``reads``, a strategy is assumed to read everything.
    """

    name: ClassVar[str]

    def price(self, ctx: PricingContext, rng: np.random.Generator) -> int | None:
        """Price the order in ``ctx``; ``rng`` is the only source of randomness allowed."""
        ...


_ALIKE_READS = frozenset({"resources", "max_price", "capacity", "free"})
_alike: dict[type, bool] = {}


def prices_alike(strategy: PricingStrategy) -> bool:
    """Whether ``strategy`` prices an order the same for the same capacity and free capacity:
    it declares ``reads`` within the order's resources and maximum price, the capacity and the
    free capacity (no generator, no competing bid, no height)."""
    kind = type(strategy)
    known = _alike.get(kind)
    if known is None:
        reads = getattr(kind, "reads", None)
        known = _alike[kind] = reads is not None and frozenset(reads) <= _ALIKE_READS
    return known


def auto_bid_price(
    strategy: PricingStrategy, ctx: PricingContext, rng: np.random.Generator
) -> int | None:
    """The seed's auto-bidder rule for one order: the price to bid, or ``None`` for no bid.

    No bid if the order does not fit the free capacity, or the strategy declines, or its price
    is not a positive integer within the order's maximum price.
    """
    if not ctx.resources.fits_in(ctx.free):
        return None
    price = strategy.price(ctx, rng)
    if price is None or price <= 0 or price > ctx.max_price:
        return None
    return int(price)


def lowest_ask(strategy: PricingStrategy, ctx: PricingContext) -> int | None:
    """The least ``strategy`` could ask for the order in ``ctx`` (its free capacity and
    ``best_price`` as they are now), or ``None`` if that cannot be known.

    A strategy may say so itself with a ``lowest_price(ctx)`` method (a random band: its low
    end; undercutting: its floor); one that declares ``reads`` without ``rng`` asks exactly its
    price. An orchestrator uses this to tell a tenant which providers ask more than its order's
    maximum price.
    """
    lowest = getattr(strategy, "lowest_price", None)
    if lowest is not None:
        return lowest(ctx)  # type: ignore[no-any-return]
    reads = getattr(type(strategy), "reads", None)
    if reads is None or "rng" in reads:
        return None
    return strategy.price(ctx, np.random.default_rng(0))  # reads no generator: never draws


@dataclass(frozen=True, slots=True, kw_only=True)
class FixedPrice:
    """Always the same price per block: the seed's default, $1/block."""

    name: ClassVar[str] = "fixed"
    reads: ClassVar[frozenset[str]] = frozenset()
    price_per_block: int = MICRO

    def price(self, ctx: PricingContext, rng: np.random.Generator) -> int | None:
        """Return ``price_per_block``."""
        return self.price_per_block


@dataclass(frozen=True, slots=True, kw_only=True)
class CostPlus:
    """Unit costs per block (per core, per GiB of memory and storage, per GPU) plus a margin.

    Price = ceil(cost x (1 + margin_bps / 10^4)), computed exactly in integers.
    """

    name: ClassVar[str] = "cost-plus"
    reads: ClassVar[frozenset[str]] = frozenset({"resources"})
    cpu_cost: int = 0  # micro per core per block
    memory_cost: int = 0  # micro per GiB per block
    storage_cost: int = 0  # micro per GiB per block
    gpu_cost: int = 0  # micro per GPU per block
    margin_bps: int = 2_000

    def __post_init__(self) -> None:
        if not (self.cpu_cost or self.memory_cost or self.storage_cost or self.gpu_cost):
            raise StrategyConfigError("cpu_cost", "cost-plus needs at least one unit cost > 0")

    def price(self, ctx: PricingContext, rng: np.random.Generator) -> int | None:
        """Return the order's cost at the unit costs, marked up by the margin, rounded up."""
        r = ctx.resources
        # common denominator: millicores (1000) x bytes per GiB
        cost = (
            r.cpu * self.cpu_cost * GIB
            + r.memory * self.memory_cost * 1000
            + r.storage * self.storage_cost * 1000
            + r.gpu * self.gpu_cost * 1000 * GIB
        )
        denominator = 1000 * GIB * 10_000
        return max(1, -(-cost * (10_000 + self.margin_bps) // denominator))


@dataclass(frozen=True, slots=True, kw_only=True)
class UtilisationPrice:
    """Price rises from ``base`` (idle) to ``peak`` (full) with the provider's utilisation.

    Utilisation is that of the provider's most used resource once the order is taken.
    """

    name: ClassVar[str] = "utilisation"
    reads: ClassVar[frozenset[str]] = frozenset({"resources", "capacity", "free"})
    base: int = MICRO // 2
    peak: int = 2 * MICRO

    def __post_init__(self) -> None:
        if self.peak < self.base:
            raise StrategyConfigError("peak", "must be >= base")

    def price(self, ctx: PricingContext, rng: np.random.Generator) -> int | None:
        """Return ``base + (peak - base) x utilisation``, utilisation in parts per million."""
        after = ctx.capacity - ctx.free + ctx.resources
        ppm = 0
        for used, cap in (
            (after.cpu, ctx.capacity.cpu),
            (after.memory, ctx.capacity.memory),
            (after.storage, ctx.capacity.storage),
            (after.gpu, ctx.capacity.gpu),
        ):
            if cap > 0:
                ppm = max(ppm, min(used, cap) * 1_000_000 // cap)
        return self.base + (self.peak - self.base) * ppm // 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Undercut:
    """Beat the best competing bid on the order by ``step``, never below ``floor``.

    With no competing bid it asks ``start`` (the order's maximum price when unset).
    """

    name: ClassVar[str] = "undercut"
    reads: ClassVar[frozenset[str]] = frozenset({"best_price", "max_price"})
    floor: int = MICRO // 2
    step: int = 10_000
    start: int | None = None

    def price(self, ctx: PricingContext, rng: np.random.Generator) -> int | None:
        """Return ``max(floor, best - step)``, or ``start`` if nobody else has bid."""
        if ctx.best_price is None:
            return self.start if self.start is not None else ctx.max_price
        return max(self.floor, ctx.best_price - self.step)

    def lowest_price(self, ctx: PricingContext) -> int:
        """The least it may ask for the order: ``floor`` once someone else bids; with nobody
        yet, what it asks now (``start``, or the order's maximum) if that is lower."""
        if ctx.best_price is None:
            first = self.start if self.start is not None else ctx.max_price
            return min(first, self.floor)
        return self.floor


@dataclass(frozen=True, slots=True, kw_only=True)
class RandomBand:
    """A price drawn uniformly from ``[low, high]`` with the generator it is given."""

    name: ClassVar[str] = "random-band"
    reads: ClassVar[frozenset[str]] = frozenset({"rng"})
    low: int = MICRO // 2
    high: int = 3 * MICRO // 2

    def __post_init__(self) -> None:
        if self.high < self.low:
            raise StrategyConfigError("high", "must be >= low")

    def lowest_price(self, ctx: PricingContext) -> int:
        """The least it ever asks: ``low``."""
        return self.low

    def price(self, ctx: PricingContext, rng: np.random.Generator) -> int | None:
        """Return an integer drawn from ``[low, high]``."""
        # int64 is the default dtype: naming it draws the same numbers a third quicker
        return int(rng.integers(self.low, self.high, endpoint=True, dtype=np.int64))


PRICING_STRATEGIES: Mapping[str, type[PricingStrategy]] = {
    cls.name: cls for cls in (FixedPrice, CostPlus, UtilisationPrice, Undercut, RandomBand)
}
"""Pricing strategies by registered name."""


def pricing_strategy(name: str, **params: object) -> PricingStrategy:
    """Build the pricing strategy registered as ``name`` with ``params``.

    Raises :class:`UnknownStrategy` or :class:`StrategyConfigError` (naming the parameter).
    """
    return build(PRICING_STRATEGIES, "pricing strategy", name, params)

"""One provider's poll: which open orders it bids on, at what price, and which of its bids it
can no longer honour. The simulator's provider poll (:meth:`~kova_core.Market.poll`) and the
live provider agent call this same function, so an auto-bidder decides the same way in both.

The poll is the seed's auto-bidder rule: visit the open orders by id; an order gets a bid if
the provider has no open bid on it, the order's resources fit the free capacity (each bid
reserves some, so later orders see less), the provider matches its placement (attributes,
auditors, GPU models), and the strategy prices it within its maximum price, seeing the lowest
competing bid. Before that, bids the machine cannot honour any more (its capacity shrank below
what its leases hold and its bids reserve) are withdrawn, newest first, until the rest fit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from ._pricing import PricingContext, PricingStrategy, auto_bid_price
from ._resources import Resources
from ._specs import OrderSpec, provider_matches

__all__ = ["PollOrder", "PollPlan", "ProviderView", "plan_poll"]

_NOTHING = Resources()


class PollOrder(NamedTuple):
    """An open order as a polling provider sees it: ``best_price`` is the lowest open bid on it
    (``None``: no bid yet). A provider never polls an order it has bid on, so every open bid
    it sees there is a competitor's."""

    id: int
    spec: OrderSpec
    created_at: int
    best_price: int | None = None


class ProviderView(NamedTuple):
    """What a provider knows of itself when it polls: its machine's ``capacity``, what its
    leases that are not closed hold (``used``), and its open bids, ``bids``: order id -> (bid
    id, the resources the bid reserves). ``reserved`` is the sum of the bids' resources and
    ``free`` the capacity left (given by a caller that keeps them, else worked out); when
    ``free`` is given and not short, nothing is withdrawn and only the keys of ``bids`` are
    read."""

    capacity: Resources
    used: Resources
    bids: Mapping[int, tuple[int, Resources]]
    attributes: Mapping[str, str]
    auditors: frozenset[str] = frozenset()
    gpu_models: frozenset[str] = frozenset()
    reserved: Resources | None = None
    free: Resources | None = None


class PollPlan(NamedTuple):
    """What one poll decided: the bids to withdraw (by id, newest first) and the bids to place,
    each ``(order id, price)``, in order."""

    withdraw: tuple[int, ...]
    bids: tuple[tuple[int, int], ...]


def plan_poll(
    provider: ProviderView,
    orders: Iterable[Any],
    strategy: PricingStrategy,
    rng: np.random.Generator,
    height: int,
    best_price: Callable[[Any], int | None] | None = None,
    admit: Callable[[Any], bool] | None = None,
    admitted: Callable[[Any], None] | None = None,
) -> PollPlan:
    """Decide one poll of ``orders`` (open orders, by id) at ``height`` (see the module).

    ``orders`` are :class:`PollOrder` records, or any objects with ``id``, ``spec`` and
    ``created_at`` given with ``best_price(order)``, which is asked only for the orders the
    strategy prices (the simulator passes its own orders: a poll visits every open order).

    ``admit(order)``, if given, is asked before an order that fits and matches is priced, and
    ``admitted(order)`` told of each bid planned: a market rule the plan cannot see from the
    provider alone (one tenant's share of its capacity, ``Limits.tenant_share_bps``) passes
    over orders beyond it, and their resources stay free for the orders after them."""
    bids = provider.bids
    free = provider.free
    withdraw: list[int] = []
    if free is None or not _NOTHING.fits_in(free):
        reserved = provider.reserved
        if reserved is None:
            reserved = sum((needs for _, needs in bids.values()), Resources())
        room = provider.capacity - provider.used
        if not reserved.fits_in(room):
            # newest bid first, until what the rest reserve fits what the leases leave
            for order_id in sorted(bids, key=lambda o: bids[o][0], reverse=True):
                bid_id, needs = bids[order_id]
                withdraw.append(bid_id)
                reserved = reserved - needs
                if reserved.fits_in(room):
                    break
        free = room - reserved
    capacity = provider.capacity
    attributes, auditors, gpu_models = provider.attributes, provider.auditors, provider.gpu_models
    placed: list[tuple[int, int]] = []
    for order in orders:
        order_id = order.id
        if order_id in bids:  # bid on already (a bid withdrawn now is not placed again at once)
            continue
        spec = order.spec
        needs = spec.resources
        if not needs.fits_in(free):
            continue
        if provider_matches(spec, attributes, auditors, gpu_models):
            continue
        if admit is not None and not admit(order):
            continue
        best = order.best_price if best_price is None else best_price(order)
        ctx = PricingContext(
            order_id, needs, spec.max_price, order.created_at, height, capacity, free, best
        )
        price = auto_bid_price(strategy, ctx, rng)
        if price is None:
            continue
        placed.append((order_id, price))
        free = free - needs
        if admitted is not None:
            admitted(order)
    return PollPlan(tuple(withdraw), tuple(placed))

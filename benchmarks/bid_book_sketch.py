#!/usr/bin/env python3
"""What one order's bids would cost if the core priced all of its bidders at once with numpy.

A sketch for a design decision, not the simulator's code: ``docs/simulator.md`` ("How fast, and
what is left") explains why the per-bid core cannot meet the research-scale targets, and this
measures the step that would replace it. One order, ``--bidders`` providers in
``bench-large``'s five strategy groups (fixed, cost-plus, utilisation, undercut, random-band;
an equal share each), integer arrays throughout:

- which bidders have the free capacity (one comparison over the capacity array);
- each group's price: fixed and cost-plus as constants, utilisation from the capacity array,
  random-band one draw from each bidder's own generator (as the core's strategies must), and
  undercut as a running minimum in poll order (a Python loop over the bidders, since each
  undercutter sees the bids placed before its poll);
- the per-order aggregates the recorder keeps (count, min, median, max), the cheapest bid, and
  the reservations made and released.

Prints microseconds per order and per bid (best of three), and what that would come to for
``bench-large``'s orders and ``mid.yaml``'s. Asserts nothing.

It also prints why today's core looks fit checks and reservations up instead: with providers
kept as the core's records, reserving an order's resources on its bidders and releasing them
again, once by a numpy gather, check and write-back, once by looking each result up by free
capacity (as ``Market.poll_late`` and a lost order's bids do), bidders sharing four free
capacities.

    .venv/bin/python benchmarks/bid_book_sketch.py [--bidders 100]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GROUPS = 5  # fixed, cost-plus, utilisation, undercut, random-band


def sketch(bidders: int) -> float:
    """Seconds for one order's bidding, best of three."""
    rng = np.random.default_rng(1)
    capacity = np.tile(np.array([16_000, 64 * 2**30, 2**40, 0], dtype=np.int64), (bidders, 1))
    free = capacity - rng.integers(0, 12_000, size=(bidders, 1)) * np.array(
        [1, 4 * 2**20, 64 * 2**20, 0], dtype=np.int64
    )
    needs = np.array([1_000, 2 * 2**30, 10 * 2**30, 0], dtype=np.int64)
    group = np.arange(bidders) % GROUPS
    band = np.flatnonzero(group == 4)
    generators = [np.random.default_rng(i) for i in range(len(band))]
    poll_order = np.lexsort((np.arange(bidders), rng.integers(0, 15, size=bidders)))
    undercut = group == 3
    fixed, cost_plus, utilisation = group == 0, group == 1, group == 2
    has = capacity > 0

    def one_order() -> None:
        fits = (free >= needs).all(axis=1)
        used = capacity - free + needs
        ppm = np.where(has, np.minimum(used, capacity) * 1_000_000 // np.maximum(capacity, 1), 0)
        price = np.empty(bidders, dtype=np.int64)
        price[fixed] = 1_000_000
        price[cost_plus] = 937_500
        price[utilisation] = 600_000 + 1_000_000 * ppm.max(axis=1)[utilisation] // 1_000_000
        price[band] = [g.integers(700_000, 1_300_000, endpoint=True) for g in generators]
        best = None
        for i in poll_order:  # undercutters see the bids placed before their poll
            if undercut[i]:
                price[i] = 1_500_000 if best is None else max(700_000, best - 10_000)
            if fits[i]:
                best = price[i] if best is None else min(best, price[i])
        placed = price[fits]
        if placed.size:
            (placed.size, placed.min(), np.median(placed), placed.max())
            np.argmin(np.where(fits, price, np.iinfo(np.int64).max))
        free[fits] -= needs  # reserve
        free[fits] += needs  # release (the order is leased or closed)

    n = 2_000
    return min(timeit.repeat(one_order, number=n, repeat=3)) / n


def records(bidders: int) -> tuple[float, float]:
    """Seconds to reserve and release one order's resources on its bidders' records: (numpy
    gather and write-back, lookup by free capacity), best of five."""
    from kova_core import Resources
    from kova_core._entities import Provider

    capacity = Resources(16_000, 64 * 2**30, 2**40, 0)
    providers = [Provider(id=i, name="p", capacity=capacity, attributes={}) for i in range(bidders)]
    for i, provider in enumerate(providers):
        provider.free = capacity - Resources(1_000 * (i % 4), 2**30 * (i % 4), 0, 0)
    needs = Resources(1_000, 2 * 2**30, 10 * 2**30, 0)
    vector = np.array(needs, dtype=np.int64)

    def gathered() -> None:
        free = np.array([p.free for p in providers], dtype=np.int64)
        fits = (free >= vector).all(axis=1).tolist()
        rows = (free - vector).tolist()
        for provider, fit, row in zip(providers, fits, rows, strict=True):
            if fit:
                provider.free = Resources(*row)
        for provider, fit in zip(providers, fits, strict=True):
            if fit:
                provider.free = provider.free + needs

    def looked_up() -> None:
        left: dict[Resources, Resources | None] = {}
        more: dict[Resources, Resources] = {}
        reserved = []
        for provider in providers:
            free = provider.free
            less = left.get(free, needs)  # needs: not looked up yet (never a result here)
            if less is needs:
                less = left[free] = free - needs if needs.fits_in(free) else None
            if less is not None:
                provider.free = less
                reserved.append(provider)
        for provider in reserved:
            free = provider.free
            freer = more.get(free)
            if freer is None:
                freer = more[free] = free + needs
            provider.free = freer

    n = 2_000
    return tuple(  # type: ignore[return-value]
        min(timeit.repeat(f, number=n, repeat=5)) / n for f in (gathered, looked_up)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bidders", type=int, default=100)
    args = parser.parse_args()
    if args.bidders < GROUPS:
        parser.error(f"--bidders must be at least {GROUPS}")
    seconds = sketch(args.bidders)
    print(
        f"one order, {args.bidders} bidders: {seconds * 1e6:.1f} us"
        f" ({seconds * 1e6 / args.bidders:.2f} us a bid)"
    )
    for name, orders in (("bench-large", 252_341), ("mid.yaml", 10_077)):
        print(f"  x {orders:,} orders ({name}): {orders * seconds:.1f} s of bidding")
    gathered, looked_up = records(args.bidders)
    print(
        f"reserving and releasing on {args.bidders} provider records: numpy gather and"
        f" write-back {gathered * 1e6:.1f} us, lookup by free capacity {looked_up * 1e6:.1f} us"
    )


if __name__ == "__main__":
    main()

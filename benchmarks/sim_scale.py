#!/usr/bin/env python3
"""The simulator at research scale: the fast engine against its targets. Prints figures (and
writes them to a JSON file); asserts nothing.

    .venv/bin/python benchmarks/sim_scale.py [--parts floor,solo,mid,growth,large,large-solo]
                                              [--json FILE]
                                              [--large-limit SECONDS]

Each run is one fresh spawned process (never two at once), so its peak memory is its own
(``ru_maxrss``, MiB). Parts:

- ``mid``: ``benchmarks/scenarios/mid.yaml`` (500 providers, about 10,000 orders, 7 days)
  under the exact and the fast engine: wall time of each, the ratio, and whether every table
  and the summary are identical (SHA-256 of each table's Arrow IPC bytes).
- ``solo``: ``mid.yaml`` with one provider per group (100 times the capacity), under the fast
  engine: the same orders, each leased with about one bid, so its wall time is the order-level
  work alone; next to ``mid`` it says how much of the 50x target is left for the bids.
- ``growth``: the fast engine on ``mid.yaml`` cut to one day, at three sizes that double
  providers and arrivals together (so providers x orders grows 4x a step): wall time per size
  and the exponent of a least-squares fit of log(wall) on log(providers x orders). 1 means
  cost grows linearly in providers x orders.
- ``large``: ``scenarios/bench-large.yaml`` (10,000 providers, about 252,000 orders over 30
  days) under the fast engine, stopped after ``--large-limit`` wall seconds (default 600) if
  not done: the simulated time reached, orders and leases so far, the peak of concurrently
  active leases, peak memory, and, if stopped, a straight-line projection of the full run's
  wall time (a lower bound: the per-block cost grows as leases accumulate).
- ``large-solo`` (not in the default parts): ``bench-large.yaml`` with one provider per region
  (its first group's, 100 times the capacity, so no failures), under the fast engine: the same
  orders, each leased with one bid, so its wall time is bench-large's order-level work
  (arrivals, deposits and top-ups, reviews, leases, closes, rounds) without the bids.
- ``floor``: what one bid costs at the least in the core's model, where every bid is a ``Bid``
  record listed on its order and its provider, reserving and releasing its resources (each sum
  and difference looked up, as ``Market.poll_late`` and a lost order's bids do), with events made
  per order, not per bid: that much done once per bid, nothing else (no pricing, no scheduling,
  no recording), in microseconds. Times the bids of ``mid`` and ``large`` it is a
  lower bound of any engine over this core, printed next to their targets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MID = ROOT / "benchmarks" / "scenarios" / "mid.yaml"
LARGE = ROOT / "scenarios" / "bench-large.yaml"


class _Stop(Exception):
    pass


def measure(
    path: str, engine: str, changes: dict[str, Any] | None = None, limit: float | None = None
) -> dict[str, Any]:
    """Run one scenario in this (fresh) process; return its figures."""
    import resource

    import pyarrow as pa

    from kova_sim.engine import make_simulation
    from kova_sim.outputs import summarise
    from kova_sim.scenario import load_scenario

    scenario = load_scenario(path)
    if changes:
        scenario = scenario.model_copy(update=changes)
    sim = make_simulation(scenario, engine)
    started = time.perf_counter()
    reached = {"now": 0}

    def progress(now: int, duration: int) -> None:
        reached["now"] = now
        if limit is not None and time.perf_counter() - started > limit and now < duration:
            raise _Stop

    stopped = False
    try:
        sim.run(progress, step=3600)
    except _Stop:
        stopped = True
    wall = time.perf_counter() - started
    rows = sim.recorder.rows
    figures: dict[str, Any] = {
        "scenario": scenario.name,
        "engine": engine,
        "providers": len(sim.market.providers),
        "duration": scenario.duration,
        "simulated": reached["now"],
        "stopped": stopped,
        "wall": wall,
        "orders": len(sim.market.orders),
        "bids": sum(len(prices) for prices in sim.recorder.bid_prices.values()),  # placed
        "leases": len(sim.market.leases),
        "peak_active_leases": max(rows["active_leases"], default=0),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if not stopped:
        tables = sim.recorder.tables()
        summary = summarise(scenario, tables, money_drift=sim.market.money_drift(), engine="-")
        digests = {}
        for name, table in tables.items():
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            digests[name] = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
        text = json.dumps(summary, sort_keys=True).encode()
        digests["summary"] = hashlib.sha256(text).hexdigest()
        figures["digests"] = digests
        figures["money_drift"] = summary["money_drift"]
    return figures


def in_child(*args: Any, function: Any = measure) -> dict[str, Any]:
    """``function`` (``measure`` by default) in a fresh spawned process."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def mid() -> dict[str, Any]:
    _say(f"mid: fast engine on {MID.name} ...")
    fast = in_child(str(MID), "fast")
    _say(f"  {fast['wall']:.1f} s; now the exact engine (minutes) ...")
    exact = in_child(str(MID), "exact")
    same = fast["digests"] == exact["digests"]
    return {
        "fast": fast,
        "exact": exact,
        "ratio": exact["wall"] / fast["wall"],
        "identical": same,
        "differing_tables": sorted(
            k for k in fast["digests"] if fast["digests"][k] != exact["digests"][k]
        ),
    }


def growth() -> dict[str, Any]:
    from kova_sim.scenario import load_scenario

    base = load_scenario(MID).model_copy(update={"duration": 86_400})
    sizes = []
    for factor in (1, 2, 4):
        groups = [g.model_copy(update={"count": g.count * factor // 4}) for g in base.providers]
        streams = []
        for s in base.demand:
            arrivals = s.arrivals.model_copy(update={"rate": s.arrivals.rate * factor / 4})
            streams.append(s.model_copy(update={"arrivals": arrivals}))
        _say(f"growth: size x{factor} ...")
        changes = {"duration": 86_400, "providers": groups, "demand": streams}
        figures = in_child(str(MID), "fast", changes)
        figures["size"] = figures["providers"] * figures["orders"]
        sizes.append(figures)
    xs = [math.log(s["size"]) for s in sizes]
    ys = [math.log(s["wall"]) for s in sizes]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    return {"sizes": sizes, "exponent": slope}


def solo() -> dict[str, Any]:
    """``mid.yaml`` with one bidder per order: each group one provider, 100 times the capacity,
    so the same orders arrive and are leased with about one bid each. Its wall time is the
    order-level work (arrivals, reviews, leases, closes, rounds) without the bids."""
    from kova_sim.scenario import load_scenario

    _say("solo: fast engine on mid.yaml with one provider per group ...")
    base = load_scenario(MID)
    groups = [_one_hundredfold(g) for g in base.providers]
    return in_child(str(MID), "fast", {"providers": groups})


def _one_hundredfold(group: Any) -> Any:
    """A provider group as one provider with 100 times the capacity of each of its own."""
    capacity = group.capacity.model_copy(
        update={k: getattr(group.capacity, k) * 100 for k in ("cpu", "memory", "storage")}
    )
    return group.model_copy(update={"count": 1, "capacity": capacity})


def large_solo_changes() -> dict[str, Any]:
    """The changes that make ``bench-large.yaml`` the ``large-solo`` part's scenario: each
    region's first group alone, one provider with 100 times the capacity (the region's)."""
    from kova_sim.scenario import load_scenario

    base = load_scenario(LARGE)
    groups, regions = [], set()
    for g in base.providers:
        region = g.attributes.get("region")
        if region in regions:
            continue
        regions.add(region)
        groups.append(_one_hundredfold(g))
    return {"providers": groups}


def large_solo(limit: float) -> dict[str, Any]:
    """``bench-large.yaml`` with one bidder per order (see the docstring)."""
    _say(f"large-solo: fast engine on {LARGE.name} with one provider per region ...")
    return in_child(str(LARGE), "fast", large_solo_changes(), limit)


def large(limit: float) -> dict[str, Any]:
    _say(f"large: fast engine on {LARGE.name}, at most {limit:.0f} s ...")
    figures = in_child(str(LARGE), "fast", None, limit)
    if figures["stopped"] and figures["simulated"]:
        figures["projected_wall"] = figures["wall"] * figures["duration"] / figures["simulated"]
    return figures


def floor() -> dict[str, Any]:
    """Microseconds per bid of what the core does for every bid (see the docstring)."""
    import timeit

    from kova_core import Resources
    from kova_core._entities import Bid

    _say("floor: the core's work per bid ...")
    needs, free = Resources(1000, 2**31, 10 * 2**30, 0), Resources(16_000, 2**36, 2**40, 0)
    less, more = {free: free - needs}, {free - needs: free}
    bids: dict[int, Bid] = {}
    order_bids: dict[int, int] = {}
    provider_bids: dict[int, int] = {}

    def one_bid() -> None:
        bids[1] = Bid(id=1, order_id=2, provider_id=3, price=4, height=5, response_time=6)
        order_bids[1] = 4
        provider_bids[2] = 1
        reserved = less[free]
        more[reserved]
        del bids[1], order_bids[1], provider_bids[2]

    n = 200_000
    best = min(timeit.repeat(one_bid, number=n, repeat=5)) / n
    return {"per_bid_us": best * 1e6}


def _floor_line(results: dict[str, Any], bids: int, target: float) -> str:
    per_bid = results["floor"]["per_bid_us"]
    bound = bids * per_bid / 1e6
    return (
        f"  the core's objects alone for {bids:,} bids: {bound:.1f} s"
        f" ({per_bid:.2f} us a bid; the target allows {target:.1f} s in all)"
    )


def report(results: dict[str, Any]) -> str:
    out = []
    if "floor" in results:
        out.append(
            f"floor: {results['floor']['per_bid_us']:.2f} us a bid for the core's objects alone"
        )
    if "mid" in results:
        m = results["mid"]
        out += [
            "mid (500 providers, 7 days):",
            f"  exact {m['exact']['wall']:.1f} s, fast {m['fast']['wall']:.1f} s:"
            f" fast is {m['ratio']:.1f}x quicker (target >= 50x)",
            f"  orders {m['fast']['orders']:,}, bids {m['fast']['bids']:,},"
            f" leases {m['fast']['leases']:,}; peak RSS exact {m['exact']['peak_rss']:.0f} MiB,"
            f" fast {m['fast']['peak_rss']:.0f} MiB",
            "  outputs identical: "
            + ("yes" if m["identical"] else f"NO ({', '.join(m['differing_tables'])})"),
        ]
        if "floor" in results:
            out.append(_floor_line(results, m["fast"]["bids"], m["exact"]["wall"] / 50))
        if "solo" in results:
            target, alone = m["exact"]["wall"] / 50, results["solo"]["wall"]
            left = (target - alone) / m["fast"]["bids"] * 1e6
            out.append(
                f"  the same orders with one bidder each ({results['solo']['bids']:,} bids):"
                f" {alone:.1f} s; the target leaves {left:.2f} us for each of mid's bids"
            )
    if "growth" in results:
        g = results["growth"]
        out.append("growth (fast engine, 1 day):")
        for s in g["sizes"]:
            out.append(
                f"  {s['providers']:>6,} providers x {s['orders']:>6,} orders"
                f" = {s['size']:>12,}: {s['wall']:7.2f} s"
            )
        out.append(
            f"  fitted exponent of wall time in providers x orders: {g['exponent']:.2f}"
            " (target <= 1)"
        )
    if "large" in results:
        r = results["large"]
        done = r["simulated"] / r["duration"]
        out += [
            "large (bench-large: 10,000 providers, 30 days):",
            f"  simulated {r['simulated'] / 86_400:.2f} of {r['duration'] / 86_400:.0f} days"
            f" ({100 * done:.1f}%) in {r['wall']:.1f} s; peak RSS {r['peak_rss']:.0f} MiB",
            f"  orders {r['orders']:,}, bids {r['bids']:,}, leases {r['leases']:,},"
            f" peak active leases {r['peak_active_leases']:,}",
        ]
        if "floor" in results and not r["stopped"]:
            out.append(_floor_line(results, r["bids"], 60.0))
        if r["stopped"]:
            out.append(
                f"  stopped; full run projected at >= {r['projected_wall']:,.0f} s (target <= 60 s)"
            )
    if "large-solo" in results:
        r = results["large-solo"]
        out.append(
            f"large-solo (bench-large's orders, one bidder each: {r['providers']} providers):"
        )
        if r["stopped"]:
            out.append(f"  stopped after {r['wall']:.1f} s at day {r['simulated'] / 86_400:.2f}")
        else:
            out.append(
                f"  {r['orders']:,} orders, {r['bids']:,} bids, {r['leases']:,} leases in"
                f" {r['wall']:.1f} s ({r['wall'] / r['orders'] * 1e6:.0f} us an order)"
            )
            if r["wall"] >= 60.0:
                out.append("  over the 60 s target already, before the other bids")
            elif "large" in results:
                bids = results["large"]["bids"]
                left = (60.0 - r["wall"]) / bids * 1e6
                out.append(
                    f"  the 60 s target leaves {60.0 - r['wall']:.1f} s: {left:.2f} us for each"
                    f" of bench-large's {bids:,} bids"
                )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="floor,solo,mid,growth,large")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "sim_scale.json")
    parser.add_argument("--large-limit", type=float, default=600.0)
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    known = ("floor", "solo", "mid", "growth", "large", "large-solo")
    unknown = set(parts) - set(known)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))} ({', '.join(known)})")
    results: dict[str, Any] = {}
    if "floor" in parts:
        results["floor"] = in_child(function=floor)
    if "solo" in parts:
        results["solo"] = solo()
    if "mid" in parts:
        results["mid"] = mid()
    if "growth" in parts:
        results["growth"] = growth()
    if "large" in parts:
        results["large"] = large(args.large_limit)
    if "large-solo" in parts:
        results["large-solo"] = large_solo(args.large_limit)
    args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(report(results))
    print(f"(figures written to {args.json})")


if __name__ == "__main__":
    main()

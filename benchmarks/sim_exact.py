#!/usr/bin/env python3
"""How fast the exact engine (the reference) runs scenarios. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/sim_exact.py [SCENARIO ...] (default: scenarios/*.yaml but bench-*)

Each scenario runs in a fresh Python process (multiprocessing "spawn", one after another, never
two at once), through ``kova_sim.run.run_scenario`` with no output folder: the simulation, then
the tables and the summary, as ``kova-sim run`` does before it writes files. For each it prints:

- ``wall s``: the simulation's wall time (``RunResult.wall_seconds``: the engine's run, without
  building tables); ``total s``: the whole ``run_scenario`` call, tables and summary included;
- ``peak RSS``: the child process's ``ru_maxrss`` (its high-water resident set, in MiB), and
  ``base RSS``: the same figure just before the run, once Python, numpy, pyarrow, SimPy and the
  scenario are loaded. A fresh process per scenario keeps one run's peak from hiding the next;
  the difference is what the run itself added;
- ``SimPy events`` processed, and per wall second (see :func:`simpy_events_processed`);
- ``commands``: core ``Market`` commands issued (polls, bids accepted, settlement ticks, …),
  counted by wrapping the ``Market`` command methods in the child (see
  :func:`count_market_commands`; ``--no-commands`` runs without the wrapper, whose cost is a
  few percent of the wall time), and per wall second;
- ``core events``: the events those commands returned (transfers included);
- ``blocks/s``: simulated blocks (seconds of market time) per wall second;
- ``drift``: the summary's money drift, which must be 0.
"""

from __future__ import annotations

import argparse
import functools
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The Market methods a driver calls to change the market (docs/design.md, "its commands").
# Queries (bid_views, balance, debt …) and registration (add_tenant, add_provider) are not counted.
COMMANDS = (
    "credit", "withdraw", "create_deployment", "deposit", "close_deployment", "expire_order",
    "place_bid", "withdraw_bid", "accept_bid", "poll", "finish_job", "fail_lease",
    "fail_provider", "recover_provider", "tick", "settle_deployment",
)  # fmt: skip


def count_market_commands() -> dict[str, int]:
    """Wrap every ``Market`` command method so each call is counted; return the live counts.

    It patches the class, so it is meant for a throwaway process (the benchmark's child). A
    command the core issues to itself is an internal method call, never one of these, so each
    count is a call a driver made.
    """
    from kova_core import Market

    counts: dict[str, int] = dict.fromkeys(COMMANDS, 0)
    for name in COMMANDS:
        original = getattr(Market, name)

        def counted(self: Any, *args: Any, _name: str = name, _f: Any = original, **kw: Any) -> Any:
            counts[_name] += 1
            return _f(self, *args, **kw)

        setattr(Market, name, functools.wraps(original)(counted))
    return counts


def simpy_events_processed(env: Any) -> int:
    """How many events a finished SimPy environment processed.

    ``Environment.schedule`` pushes every event onto the heap ``env._queue`` with a sequence
    number drawn from ``env._eid`` (an ``itertools.count`` starting at 0), and ``step`` pops
    exactly one entry per call. So events processed = entries ever pushed - entries still
    queued. ``next(env._eid)`` is the number pushed so far (it consumes one number, harmless
    once the run is over). This costs nothing during the run, unlike wrapping ``env.step``, and
    gives the same count: each processed event is one step. Processes' start-up events,
    timeouts and processes ending are all events; so are the two bookkeeping events SimPy adds
    per ``env.run(until=...)`` call (``run_scenario`` runs in at most 200 such chunks, to report
    progress): at most a few hundred, negligible here.
    """
    pushed = next(env._eid)
    return pushed - len(env._queue)


def measure(path: str, count_commands: bool) -> dict[str, Any]:
    """Run one scenario in this (fresh) process and return its figures."""
    import resource
    import time

    from kova_sim.run import run_scenario
    from kova_sim.scenario import load_scenario

    counts = count_market_commands() if count_commands else None
    scenario = load_scenario(path)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    result = run_scenario(scenario, None, engine="exact", plots=False)
    total = time.perf_counter() - started
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sim = result.simulation
    return {
        "scenario": scenario.name,
        "providers": len(sim.market.providers),
        "blocks": scenario.duration,
        "wall": result.wall_seconds,
        "total": total,
        "simpy_events": simpy_events_processed(sim.env),
        "commands": None if counts is None else sum(counts.values()),
        "polls": None if counts is None else counts["poll"],
        "core_events": getattr(sim.recorder, "events", None),
        "base_rss": base_rss / 1024,
        "peak_rss": peak_rss / 1024,
        "drift": result.summary["money_drift"],
    }


def run_in_child(path: str, count_commands: bool) -> dict[str, Any]:
    """``measure`` in a fresh spawned process, so its peak RSS is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure, path, count_commands).result()


def _rate(count: int | None, seconds: float) -> str:
    return "-" if count is None else f"{count / seconds:,.0f}"


def _count(count: int | None) -> str:
    return "-" if count is None else f"{count:,}"


def table(rows: list[dict[str, Any]]) -> str:
    """The figures as an aligned text table."""
    header = (
        "scenario", "providers", "blocks", "wall s", "total s", "peak RSS MiB", "base RSS MiB",
        "SimPy events", "events/s", "commands", "commands/s", "polls", "core events",
        "blocks/s", "drift",
    )  # fmt: skip
    lines = [header]
    for r in rows:
        row = (
            r["scenario"], f"{r['providers']:,}", f"{r['blocks']:,}", f"{r['wall']:.2f}",
            f"{r['total']:.2f}", f"{r['peak_rss']:.0f}", f"{r['base_rss']:.0f}",
            f"{r['simpy_events']:,}", _rate(r["simpy_events"], r["wall"]),
            _count(r["commands"]), _rate(r["commands"], r["wall"]), _count(r["polls"]),
            _count(r["core_events"]), f"{r['blocks'] / r['wall']:,.0f}", str(r["drift"]),
        )  # fmt: skip
        lines.append(row)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help="scenario files (default: scenarios/*.yaml but bench-*.yaml)",
    )
    parser.add_argument(
        "--no-commands", action="store_true", help="do not wrap Market commands to count them"
    )
    args = parser.parse_args()
    paths = args.scenarios or sorted(
        str(p)
        for p in (ROOT / "scenarios").glob("*.yaml")
        if not p.name.startswith("bench-")  # research scale: for sim_scale.py and the fast engine
    )
    if not paths:
        parser.error("no scenario files given or found in scenarios/")
    from kova_sim.scenario import ScenarioError, load_scenario

    for path in paths:  # report a bad file before spending minutes on the others
        try:
            load_scenario(path)
        except ScenarioError as exc:
            parser.error(str(exc))
    rows = []
    for path in paths:
        print(f"running {path} ...", file=sys.stderr, flush=True)
        rows.append(run_in_child(path, not args.no_commands))
    print(table(rows))


if __name__ == "__main__":
    main()

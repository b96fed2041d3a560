"""Run a scenario end to end: simulate with an engine, build the tables, summarise, write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from .engine import ENGINES, Simulation, make_simulation
from .outputs import summarise, write_run
from .scenario import Scenario

__all__ = ["DEFAULT_ENGINE", "RunResult", "default_out", "run_scenario"]

DEFAULT_ENGINE = "auto"
"""The engine ``kova-sim run`` and ``kova-sim sweep`` use unless told otherwise."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished run: the simulation, its tables and its summary."""

    simulation: Simulation
    tables: dict[str, pa.Table]
    summary: dict[str, Any]

    @property
    def wall_seconds(self) -> float:
        """How long the simulation took (not written to the outputs, which must not vary)."""
        return self.simulation.wall_seconds


def default_out(scenario: Scenario) -> Path:
    """``runs/<scenario name>-<seed>``."""
    return Path("runs") / f"{scenario.name}-{scenario.seed}"


def run_scenario(
    scenario: Scenario,
    out: Path | None = None,
    *,
    engine: str = DEFAULT_ENGINE,
    progress: Callable[[int, int], None] | None = None,
    plots: bool = True,
    keep_events: bool = False,
) -> RunResult:
    """Simulate ``scenario``; write its run folder to ``out`` unless it is ``None``.

    ``progress(now, duration)`` is called as simulated time passes. Raises ``ValueError`` for
    an engine that is not built.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
    sim = make_simulation(scenario, engine, keep_events=keep_events)
    step = max(scenario.settlement_interval, scenario.duration // 200)
    sim.run(progress, step=step)
    tables = sim.recorder.tables()
    summary = summarise(scenario, tables, money_drift=sim.market.money_drift(), engine=sim.engine)
    if out is not None:
        write_run(out, scenario, tables, summary, plots=plots)
    return RunResult(sim, tables, summary)

"""Run a scenario end to end: simulate with an engine, build the tables, summarise, write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from .commands import FILE_NAME, CommandLog
from .engine import ENGINES, Simulation, make_simulation
from .outputs import summarise, write_run
from .scenario import Scenario

__all__ = ["DEFAULT_ENGINE", "RunResult", "default_out", "recording_engine", "run_scenario"]

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


def recording_engine(engine: str) -> str:
    """The engine a run that records its commands uses: ``auto`` picks ``exact``, the one
    engine whose commands can be recorded; ``fast`` raises ``ValueError``."""
    if engine == "auto":
        return "exact"
    if engine == "fast":
        raise ValueError(
            "the fast engine's commands cannot be recorded: it carries polls out late, at"
            " heights already passed; use the exact engine"
        )
    return engine


def run_scenario(
    scenario: Scenario,
    out: Path | None = None,
    *,
    engine: str = DEFAULT_ENGINE,
    progress: Callable[[int, int], None] | None = None,
    plots: bool = True,
    keep_events: bool = False,
    commands: Path | None = None,
) -> RunResult:
    """Simulate ``scenario``; write its run folder to ``out`` unless it is ``None``.

    ``progress(now, duration)`` is called as simulated time passes. ``commands``: write the
    run's command log to this file (``kova-sim run --record-commands`` writes
    ``<out>/commands.jsonl``; see :mod:`kova_sim.commands`); the engine is then
    :func:`recording_engine`'s. The log is written to ``<commands>.partial`` and renamed when
    the run ends; a run that raises leaves the partial file. A ``commands.jsonl`` in ``out``
    that this run did not write (an earlier run's) is removed: it is not this run's history.
    Raises ``ValueError`` for an engine that is not built, or that cannot record.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
    if commands is None:
        sim = make_simulation(scenario, engine, keep_events=keep_events)
        _run(sim, scenario, progress)
    else:
        engine = recording_engine(engine)
        commands.parent.mkdir(parents=True, exist_ok=True)
        partial = commands.with_name(commands.name + ".partial")
        with partial.open("w", encoding="utf-8", newline="\n") as file:
            log = CommandLog(file)
            sim = make_simulation(scenario, engine, keep_events=keep_events, commands=log)
            _run(sim, scenario, progress)
        partial.replace(commands)
    tables = sim.recorder.tables()
    summary = summarise(
        scenario, tables, money_drift=sim.market.money_drift(), engine=sim.engine,
        refused=sim.recorder.refused_arrivals,
    )  # fmt: skip
    if out is not None:
        write_run(out, scenario, tables, summary, plots=plots)
        if commands is None or commands.resolve() != (out / FILE_NAME).resolve():
            (out / FILE_NAME).unlink(missing_ok=True)
    return RunResult(sim, tables, summary)


def _run(sim: Simulation, scenario: Scenario, progress: Callable[[int, int], None] | None) -> None:
    step = max(scenario.settlement_interval, scenario.duration // 200)
    sim.run(progress, step=step)

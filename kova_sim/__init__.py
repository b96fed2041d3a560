"""kova_sim: the Kova core driven by a simulated clock, for economics research (``kova-sim``).

- :mod:`kova_sim.scenario`: scenario files, validated (:func:`load_scenario`).
- :mod:`kova_sim.engine`: the engines: ``exact``, in which every provider poll and settlement
  round is a SimPy event, and ``fast``, which skips what changes nothing, with the same
  outputs (:func:`make_simulation`).
- :mod:`kova_sim.recorder` and :mod:`kova_sim.outputs`: the run's tables, summary and files.
- :mod:`kova_sim.commands`: command logs (``kova-sim run --record-commands``): the exact
  engine's commands to the core, in order, for another driver to replay; read back and replayed
  into a fresh market.
- :mod:`kova_sim.run`: all of it end to end (:func:`run_scenario`); :mod:`kova_sim.cli`: the
  ``kova-sim`` command.
- :mod:`kova_sim.analysis` and :mod:`kova_sim.plots`: reading run folders, for the notebooks.
- :mod:`kova_sim.sweep`: grids of parameters x replications on Dask (``kova-sim sweep``).

``kova_core`` imports nothing from here: the simulator is one driver of the core among two.
"""

from .engine import ENGINES, Simulation, make_simulation, simulate
from .run import RunResult, run_scenario
from .scenario import Scenario, ScenarioError, load_scenario, parse_scenario

__all__ = [
    "ENGINES",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "Simulation",
    "load_scenario",
    "make_simulation",
    "parse_scenario",
    "run_scenario",
    "simulate",
]

"""Shared fixtures for the simulator's tests: small real runs, each simulated once a session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kova_sim.run import RunResult, run_scenario
from kova_sim.scenario import parse_scenario

SMALL = {
    "name": "small",
    "seed": 1,
    "duration": "6h",
    "providers": [
        {
            "name": "fixed",
            "count": 3,
            "capacity": {"cpu": 8, "memory": "32Gi", "storage": "500Gi"},
            "pricing": {"strategy": "fixed", "price_per_block": 1},
        },
        {
            "name": "undercutters",
            "count": 2,
            "capacity": {"cpu": 8, "memory": "32Gi", "storage": "500Gi"},
            "pricing": {"strategy": "undercut", "floor": 0.5, "step": 0.05},
            "failures": {"mtbf": "4h", "mttr": "30m"},
        },
    ],
    "demand": [
        {
            "name": "web",
            "arrivals": {"process": "poisson", "rate": "40/h"},
            "resources": {"cpu": 1, "memory": "2Gi", "storage": "10Gi"},
            "max_price": 1.5,
            "lifetime": {"distribution": "exponential", "mean": "1h"},
            "deposit": {"blocks": "20m"},
            "top_up": {"policy": "when-paused", "probability": 0.5, "delay": "5m"},
        },
        {
            "name": "batch",
            "kind": "job",
            "arrivals": {"process": "poisson", "rate": "10/h"},
            "resources": {"cpu": 2, "memory": "4Gi", "storage": "10Gi"},
            "max_price": 2,
            "runtime": {"distribution": "uniform", "low": "10m", "high": "1h"},
        },
    ],
}
"""Six hours of a small market: paused deployments, top-ups, write-offs, provider failures."""

MIXED = {
    "name": "mixed",
    "seed": 6,
    "duration": "3h",
    "fee_bps": 100,
    "providers": [
        {
            "name": "fixed",
            "count": 2,
            "capacity": {"cpu": 8, "memory": "32Gi", "storage": "500Gi"},
            "pricing": {"strategy": "fixed", "price_per_block": 1},
        },
        {
            "name": "band",
            "count": 2,
            "capacity": {"cpu": 8, "memory": "32Gi", "storage": "500Gi"},
            "pricing": {"strategy": "random-band", "low": 0.7, "high": 1.4},
            "failures": {"mtbf": "90m", "mttr": "20m"},
        },
        {
            "name": "busy-pricing",
            "count": 2,
            "capacity": {"cpu": 8, "memory": "32Gi", "storage": "500Gi"},
            "pricing": {"strategy": "utilisation", "base": 0.6, "peak": 1.8},
        },
    ],
    "demand": [
        {
            "name": "web",
            "arrivals": {"process": "poisson", "rate": "40/h"},
            "resources": {"cpu": 1, "memory": "2Gi", "storage": "10Gi"},
            "max_price": 2,
            "lifetime": {"distribution": "exponential", "mean": "1h"},
            "deposit": {"blocks": "30m"},
            "top_up": {"policy": "when-paused", "probability": 0.7, "delay": "2m"},
        },
    ],
}
"""Three hours with a different strategy mix (fixed, random-band, utilisation) and a fee.

With this seed a paused deployment loses its only lease to a provider failure and is then
topped up: it resumes owing nothing, without a ``debt`` transfer."""

NO_LEASES = {
    "name": "no-leases",
    "seed": 3,
    "duration": "1h",
    "providers": [
        {
            "name": "dear",
            "count": 2,
            "capacity": {"cpu": 4, "memory": "16Gi", "storage": "100Gi"},
            "pricing": {"strategy": "fixed", "price_per_block": 1},
        },
    ],
    "demand": [
        {
            "name": "cheap",
            "arrivals": {"process": "poisson", "rate": "20/h"},
            "resources": {"cpu": 1, "memory": "1Gi", "storage": "1Gi"},
            "max_price": 0.5,  # below every provider's price: nobody bids, no lease starts
            "lifetime": {"distribution": "fixed", "value": "30m"},
        },
    ],
}
"""An hour in which no lease starts."""


@dataclass(frozen=True)
class SimRun:
    """A run folder written by ``run_scenario``, with the result (and every core event)."""

    path: Path
    result: RunResult

    @property
    def summary(self) -> dict[str, Any]:
        return self.result.summary

    @property
    def events(self) -> list[Any]:
        return self.result.simulation.events


def _run(factory: pytest.TempPathFactory, data: dict[str, Any]) -> SimRun:
    out = factory.mktemp("runs") / f"{data['name']}-{data['seed']}"
    result = run_scenario(parse_scenario(data), out, plots=False, keep_events=True)
    return SimRun(out, result)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> SimRun:
    """The small scenario's run folder (``small-1``), simulated once per session."""
    return _run(tmp_path_factory, SMALL)


@pytest.fixture(scope="session")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> SimRun:
    """A run with another strategy mix (``mixed-6``), for comparing runs."""
    return _run(tmp_path_factory, MIXED)


@pytest.fixture(scope="session")
def no_lease_run(tmp_path_factory: pytest.TempPathFactory) -> SimRun:
    """A run in which no lease started (``no-leases-3``)."""
    return _run(tmp_path_factory, NO_LEASES)

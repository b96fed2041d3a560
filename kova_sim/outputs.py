"""A run's outputs: Parquet tables, ``summary.json``, the resolved ``scenario.yaml`` and plots.

Same scenario and seed give byte-identical Parquet files and summary: tables are written from
fixed schemas without pandas metadata or timestamps, and the summary's keys are sorted.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from .scenario import Scenario, resolved

__all__ = ["TABLES", "gini", "summarise", "write_run"]

TABLES = ("deployments", "orders", "bids", "leases", "ledger", "providers", "timeseries")
"""The Parquet tables of a run folder, each ``<name>.parquet``."""


def gini(values: Any) -> float:
    """The Gini coefficient of non-negative values (0: all equal; near 1: one holds all).

    0 for an empty array or one whose values are all zero.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0 or x.sum() == 0:
        return 0.0
    index = np.arange(1, n + 1)
    return float((2 * (index * x).sum()) / (n * x.sum()) - (n + 1) / n)


def _col(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def summarise(
    scenario: Scenario,
    tables: dict[str, pa.Table],
    *,
    money_drift: int,
    engine: str,
    refused: int = 0,
) -> dict[str, Any]:
    """The run's headline figures. Money in integer micro-units; times in blocks.

    - ``fill_rate``: orders that got a lease / orders that got one or were given up (orders
      still waiting at the end are left out and counted in ``orders_waiting_at_end``);
    - ``time_to_lease_*``: blocks from an order opening to its first lease;
    - ``mean_clearing_price``: mean price per block of all leases (micro-units, rounded);
    - ``provider_revenue_gini``: inequality of what providers earned;
    - ``utilisation``: the time-averaged share of all CPU held by leases;
    - ``insufficient_funds_events``: deployments paused by a settlement round;
    - ``money_drift``: Σ balances − (credited − withdrawn); 0 means money was conserved;
    - ``deployments_refused``: arrivals the network's limits refused (``refused``; see the
      scenario's ``limits``): they are in no table.
    """
    orders, leases, providers, ledger = (
        tables["orders"], tables["leases"], tables["providers"], tables["ledger"]
    )  # fmt: skip
    leased = orders.column("first_lease_at").is_valid().to_numpy(zero_copy_only=False)
    state = _col(orders, "state")
    expired = (_col(orders, "close_reason") == "expired") & ~leased
    waiting = (state == "open") & ~leased
    resolved_orders = int(leased.sum() + expired.sum())
    ttl = pc.drop_null(orders.column("time_to_lease")).to_numpy().astype(np.int64)
    prices = _col(leases, "price").astype(np.int64)
    revenue = _col(providers, "revenue").astype(np.int64)
    cpu = _col(providers, "cpu").astype(np.int64)
    utilisation = _col(providers, "utilisation")
    reasons = _col(ledger, "reason")
    amounts = _col(ledger, "amount").astype(np.int64)
    kinds = _col(orders, "kind")
    deployments = _col(orders, "deployment_id")
    dep_kinds = dict(zip(deployments.tolist(), kinds.tolist(), strict=True))
    timeseries = tables["timeseries"]
    paused_per_round = _col(timeseries, "deployments_paused").astype(np.int64)

    def total(*names: str) -> int:
        mask = np.isin(reasons, names)
        return int(amounts[mask].sum())

    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "engine": engine,
        "duration_blocks": scenario.duration,
        "providers": int(providers.num_rows),
        "deployments": sum(1 for k in dep_kinds.values() if k == "deployment"),
        "jobs": sum(1 for k in dep_kinds.values() if k == "job"),
        "deployments_refused": refused,
        "orders": int(orders.num_rows),
        "orders_leased": int(leased.sum()),
        "orders_given_up": int(expired.sum()),
        "orders_waiting_at_end": int(waiting.sum()),
        "fill_rate": round(float(leased.sum() / resolved_orders), 6) if resolved_orders else None,
        "time_to_lease_median": float(np.median(ttl)) if ttl.size else None,
        "time_to_lease_p95": float(np.percentile(ttl, 95)) if ttl.size else None,
        "leases": int(leases.num_rows),
        "mean_clearing_price": round(Fraction(int(prices.sum()), prices.size))
        if prices.size
        else None,
        "provider_revenue": int(revenue.sum()),
        "provider_revenue_gini": round(gini(revenue), 6),
        "utilisation": round(float((utilisation * cpu).sum() / cpu.sum()), 6) if cpu.sum() else 0.0,
        "insufficient_funds_events": int(paused_per_round.sum()),
        "debt_written_off": int(_col(leases, "written_off").astype(np.int64).sum()),
        "tenant_spend": total("settlement", "debt", "close", "fee"),
        "network_fees": total("fee"),
        "credited": total("credit"),
        "refunded": total("refund"),
        "money_drift": money_drift,
        "money_conserved": money_drift == 0,
    }


def write_run(
    out: Path,
    scenario: Scenario,
    tables: dict[str, pa.Table],
    summary: dict[str, Any],
    *,
    plots: bool = True,
) -> None:
    """Write a run folder: the tables, ``summary.json``, ``scenario.yaml`` and ``plots/``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        pq.write_table(tables[name], out / f"{name}.parquet", compression="zstd")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    header = f"# {scenario.name}, as resolved by kova-sim: every default filled in, the seed used\n"
    (out / "scenario.yaml").write_text(
        header + yaml.safe_dump(resolved(scenario), sort_keys=False, allow_unicode=True)
    )
    if plots:
        from .plots import write_plots

        write_plots(out)

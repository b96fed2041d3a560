"""Reading run folders for analysis: the helpers the notebooks in ``notebooks/`` call.

A run folder (written by :func:`kova_sim.outputs.write_run`) holds seven Parquet tables, its
``summary.json`` and the resolved ``scenario.yaml``. :func:`load_run` reads one into a
:class:`Run`; the other helpers take a :class:`Run` and return :class:`pandas.DataFrame` tables.

Money stays exact: the tables keep the int64 micro-unit columns as they were written, and the
helpers add float ``*_units`` columns (1 unit = 1,000,000 micro, "$1") for display only. Blocks
are seconds; ``*_hours`` columns are blocks / 3600. Integer columns that have nulls (an order
never leased has no ``first_lease_at``) are read as pandas' nullable ``Int64``, so no integer is
turned into a float.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from kova_core import MICRO

from .outputs import TABLES, gini
from .recorder import SCHEMAS

__all__ = [
    "Run",
    "compare_runs",
    "escrow_exhaustion",
    "gini",
    "load_run",
    "lorenz",
    "pauses",
    "price_dynamics",
    "revenue_by_provider",
    "revenue_by_strategy",
    "strategy_comparison",
    "units",
    "written_off_by_stream",
]

RUN_FILES = (*(f"{name}.parquet" for name in TABLES), "summary.json", "scenario.yaml")
"""The files every run folder has (``plots/`` is optional)."""

MONEY_SUMMARY_KEYS = (
    "mean_clearing_price",
    "provider_revenue",
    "debt_written_off",
    "tenant_spend",
    "network_fees",
    "credited",
    "refunded",
)
"""Summary keys in micro-units; :func:`compare_runs` adds each in units too."""


_STRATEGY_COLUMNS = (
    "strategy", "providers", "revenue", "revenue_units", "mean_revenue_units", "share",
    "mean_utilisation", "leases_won", "mean_price", "mean_price_units",
)  # fmt: skip
_PAUSE_COLUMNS = (
    "deployment_id", "stream", "tenant_id", "paused_at", "resumed_at", "ended", "ended_at",
    "paused_blocks", "leases",
)  # fmt: skip
_PAUSE_DTYPES = {"stream": object, "ended": object, "resumed_at": "Int64", "tenant_id": "Int64"}
_EXHAUSTION_COLUMNS = (
    "deployment_id", "stream", "tenant_id", "first_pause_block", "first_pause_hours", "pauses",
    "resumes", "resumed", "ended_paused", "paused_blocks", "debt_written_off",
    "debt_written_off_units", "closed_at", "close_reason",
)  # fmt: skip
_WRITTEN_OFF_COLUMNS = (
    "stream", "kind", "deployments", "paused", "leases", "leases_written_off", "written_off",
    "written_off_units", "billed", "written_off_share",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class Run:
    """One run folder, read: its seven tables, summary and resolved scenario.

    ``name`` is the folder's name (``baseline-1``: scenario name and seed, as ``kova-sim run``
    names it), which tells runs of the same scenario with different seeds apart.
    """

    path: Path
    name: str
    summary: dict[str, Any] = field(repr=False)
    scenario: dict[str, Any] = field(repr=False)
    deployments: pd.DataFrame = field(repr=False)
    orders: pd.DataFrame = field(repr=False)
    bids: pd.DataFrame = field(repr=False)
    leases: pd.DataFrame = field(repr=False)
    ledger: pd.DataFrame = field(repr=False)
    providers: pd.DataFrame = field(repr=False)
    timeseries: pd.DataFrame = field(repr=False)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The seven tables by name."""
        return {name: getattr(self, name) for name in TABLES}

    @property
    def duration(self) -> int:
        """The run's length in blocks."""
        return int(self.scenario.get("duration", self.summary.get("duration_blocks", 0)))

    @property
    def settlement_interval(self) -> int:
        """Blocks between settlement rounds (60 unless the scenario says otherwise)."""
        return int(self.scenario.get("settlement_interval", 60))


def units(micro: Any) -> Any:
    """Micro-units as float units ($), for display: a number, array or Series divided by 10⁶.

    Nulls stay nulls (as NaN)."""
    if isinstance(micro, pd.Series):
        return micro.astype("float64") / MICRO
    return np.asarray(micro, dtype=np.float64) / MICRO if np.ndim(micro) else micro / MICRO


# --------------------------------------------------------------------------- loading


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """A table as a DataFrame with int64 columns kept as integers (nullable where needed)."""
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_integer(column.type) and column.null_count == 0:
            frame[name] = frame[name].astype("int64")
    return frame


def load_run(path: str | os.PathLike[str] | Run) -> Run:
    """Read a run folder.

    Raises ``FileNotFoundError`` if ``path`` is not a folder or lacks any of the run files (the
    message names every missing file), and ``ValueError`` if a file is there but is not what a
    run writes (a table without its columns, a summary or scenario that is not a mapping).
    A :class:`Run` is returned as it is.
    """
    if isinstance(path, Run):
        return path
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"no run folder at {str(folder)!r}: it is not a directory")
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{str(folder)!r} is not a run folder: missing {', '.join(missing)}"
            " (a run folder is what `kova-sim run` writes)"
        )
    frames: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        file = folder / f"{name}.parquet"
        try:
            table = pq.read_table(file)
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"{file}: not a readable Parquet table ({exc})") from exc
        absent = [f.name for f in SCHEMAS[name] if f.name not in table.column_names]
        if absent:
            raise ValueError(f"{file}: not a {name} table, missing columns {', '.join(absent)}")
        frames[name] = _to_pandas(table)
    summary = _read_mapping(folder / "summary.json", json.loads)
    scenario = _read_mapping(folder / "scenario.yaml", yaml.safe_load)
    name = folder.resolve().name
    return Run(path=folder, name=name, summary=summary, scenario=scenario, **frames)


def _read_mapping(file: Path, parse: Any) -> dict[str, Any]:
    try:
        data = parse(file.read_text())
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"{file}: cannot be parsed ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a mapping, got {type(data).__name__}")
    return data


def _runs(paths_or_runs: Iterable[str | os.PathLike[str] | Run]) -> list[Run]:
    runs = [load_run(p) for p in paths_or_runs]
    if not runs:
        raise ValueError("no runs given")
    return runs


def _labels(runs: Sequence[Run]) -> list[str]:
    """Column labels for runs: their names, or their paths where two names collide."""
    names = [run.name for run in runs]
    return [run.name if names.count(run.name) == 1 else str(run.path) for run in runs]


# --------------------------------------------------------------------------- inequality


def lorenz(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """The Lorenz curve of non-negative values: ``(x, y)``, each ``n + 1`` points from 0 to 1.

    ``x[k]`` is the share of holders among the ``k`` smallest, ``y[k]`` their share of the
    total. For no values, or values that are all zero, the curve is the equality line
    ``([0, 1], [0, 1])`` (matching ``gini`` = 0). ``gini(values) == 1 - 2 × area under it``.
    Raises ``ValueError`` for negative or non-finite values.
    """
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if v.size and (not np.isfinite(v).all() or v[0] < 0):
        raise ValueError("lorenz needs finite, non-negative values")
    total = v.sum()
    if v.size == 0 or total == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    x = np.arange(v.size + 1, dtype=np.float64) / v.size
    y = np.concatenate(([0.0], np.cumsum(v) / total))
    y[-1] = 1.0  # exactly, whatever the rounding of the cumulative sum
    return x, y


# --------------------------------------------------------------------------- revenue


def revenue_by_provider(run: Run) -> pd.DataFrame:
    """One row per provider, highest revenue first.

    Columns: ``rank`` (1 = earned most; ties by provider id), ``provider_id``, ``name``,
    ``group``, ``strategy``, ``revenue`` (micro), ``revenue_units``, ``share`` (of all provider
    revenue; 0 if nobody earned), ``cumulative_share``, ``leases_won``, ``utilisation`` (share
    of its CPU held by leases over the run), ``cpu_cores``, ``failures``, ``reputation``.
    ``revenue`` sums to the summary's ``provider_revenue``.
    """
    p = run.providers
    total = int(p["revenue"].sum())
    out = pd.DataFrame(
        {
            "provider_id": p["provider_id"],
            "name": p["name"],
            "group": p["group"],
            "strategy": p["strategy"],
            "revenue": p["revenue"],
            "revenue_units": units(p["revenue"]),
            "share": p["revenue"] / total if total else 0.0,
            "leases_won": p["leases_won"],
            "utilisation": p["utilisation"],
            "cpu_cores": p["cpu"] / 1000,
            "failures": p["failures"],
            "reputation": p["reputation"],
        }
    )
    out = out.sort_values(["revenue", "provider_id"], ascending=[False, True], kind="stable")
    out.insert(0, "rank", np.arange(1, len(out) + 1, dtype=np.int64))
    out["cumulative_share"] = out["share"].cumsum()
    return out.reset_index(drop=True)


def revenue_by_strategy(run: Run, by: str = "strategy") -> pd.DataFrame:
    """One row per pricing strategy (or per provider group, ``by="group"``), most revenue first.

    Columns: ``strategy`` (or ``group``), ``providers``, ``revenue`` (micro, total),
    ``revenue_units``, ``mean_revenue_units`` (per provider), ``share`` (of all provider
    revenue; 0 if nobody earned), ``mean_utilisation`` (CPU-weighted over its providers: the
    share of their CPU held by leases over the run), ``leases_won``, ``mean_price`` (micro per
    block, over the leases its providers won; NaN if none) and ``mean_price_units``.
    Two groups with the same strategy (``undercut`` with two floors) make one strategy row.
    """
    if by not in ("strategy", "group"):
        raise ValueError(f"by must be 'strategy' or 'group', got {by!r}")
    p = run.providers
    total = int(p["revenue"].sum())
    grouped = p.assign(_held=p["utilisation"] * p["cpu"]).groupby(by, sort=True)
    out = pd.DataFrame(
        {
            "providers": grouped["provider_id"].count(),
            "revenue": grouped["revenue"].sum().astype("int64"),
            "_cpu": grouped["cpu"].sum(),
            "_held": grouped["_held"].sum(),
            "leases_won": grouped["leases_won"].sum().astype("int64"),
        }
    )
    key_of = p.set_index("provider_id")[by]
    leases = run.leases
    prices = leases["price"].groupby(leases["provider_id"].map(key_of)).mean()
    out["revenue_units"] = units(out["revenue"])
    out["mean_revenue_units"] = out["revenue_units"] / out["providers"]
    out["share"] = out["revenue"] / total if total else 0.0
    out["mean_utilisation"] = (out["_held"] / out["_cpu"]).where(out["_cpu"] > 0, 0.0)
    out["mean_price"] = prices.reindex(out.index).astype("float64")
    out["mean_price_units"] = units(out["mean_price"])
    out = out.reset_index()[[by, *_STRATEGY_COLUMNS[1:]]]
    out = out.sort_values(["revenue", by], ascending=[False, True])
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- escrow and debt


def pauses(run: Run) -> pd.DataFrame:
    """Every time a deployment was paused for insufficient funds, one row each.

    The run folder has no table of pause events, so they are rebuilt from the ledger and the
    leases, using the core's settlement rules (docs/design.md): a round at block ``R`` either
    pays an active lease of a deployment up to ``R`` (a ``settlement`` transfer with
    ``end == R``) or pauses all of the deployment's active leases, recording each one's debt for
    ``[last settled, R)``. So, per lease of a deployment (jobs never pause):

    - a ``debt`` transfer pays a paused lease's debt when the deployment resumes: its ``end`` is
      the round that paused it and its ``block`` the resume;
    - after the lease's last settlement or resume ``s`` (or its start), the next round is
      ``R = (s // interval + 1) × interval``. If the lease was still open at ``R`` (closed after
      it, or at it: a command at a round's block sees the round done first, or still open at
      the run's end, whose last round runs), that round did not pay it, so it paused it there
      and it never resumed.

    A deployment's pause at ``R`` is the union of its leases' pauses at ``R``. The rebuild
    matches the timeseries (its ``deployments_paused`` per round are the counts of this table by
    ``paused_at``) and so the summary's ``insufficient_funds_events``. It assumes a network fee
    below 100 % (every payment has a transfer to the provider). A paused deployment whose every
    paused lease was closed (its provider lost) owes nothing, so the next deposit into its
    escrow resumes it without a ``debt`` transfer: that deposit's block is its ``resumed_at``.
    Checked against the core's ``DeploymentPaused``/``DeploymentResumed`` events in the tests.

    Columns: ``deployment_id``, ``stream``, ``tenant_id``, ``paused_at`` (block),
    ``resumed_at`` (block, null unless resumed), ``ended``: ``resumed``, ``closed`` (its leases
    were closed while paused) or ``run_end`` (still paused when the run ended), ``ended_at``
    (block), ``paused_blocks`` and ``leases`` (how many of its leases it paused), sorted by
    ``paused_at`` then ``deployment_id``.
    """
    interval = run.settlement_interval
    leases = run.leases[run.leases["kind"] == "deployment"]
    ledger = run.ledger
    columns = list(_PAUSE_COLUMNS)
    if leases.empty:
        return _empty(columns, _PAUSE_DTYPES)

    lease_ids = leases["lease_id"]
    paid = ledger[ledger["lease_id"].isin(lease_ids)]
    settled = paid[paid["reason"] == "settlement"]
    debts = paid[paid["reason"] == "debt"]

    # pauses that a resume ended
    resumed = pd.DataFrame(
        {
            "lease_id": debts["lease_id"].astype("int64"),
            "paused_at": debts["end"].astype("int64"),
            "resumed_at": debts["block"].astype("int64"),
        }
    ).drop_duplicates()

    # the last pause of each lease, if nothing ended it but a close or the run's end
    last = pd.concat(
        [
            leases[["lease_id", "created_at"]].rename(columns={"created_at": "s"}),
            settled[["lease_id", "end"]].rename(columns={"end": "s"}),
            debts[["lease_id", "block"]].rename(columns={"block": "s"}),
        ],
        ignore_index=True,
    )
    last["lease_id"] = last["lease_id"].astype("int64")
    last["s"] = last["s"].astype("int64")
    last_settled = last.groupby("lease_id")["s"].max()
    info = leases.set_index("lease_id")
    next_round = (last_settled // interval + 1) * interval
    stop = info["closed_at"].fillna(run.duration).astype("int64").reindex(last_settled.index)
    hit = next_round[next_round <= stop]
    final = pd.DataFrame(
        {
            "lease_id": hit.index.to_numpy(dtype=np.int64),
            "paused_at": hit.to_numpy(dtype=np.int64),
            "resumed_at": pd.array([pd.NA] * len(hit), dtype="Int64"),
        }
    )
    per_lease = pd.concat([resumed.astype({"resumed_at": "Int64"}), final], ignore_index=True)
    if per_lease.empty:
        return _empty(columns, _PAUSE_DTYPES)
    per_lease = per_lease.join(info[["deployment_id", "stream", "closed_at"]], on="lease_id")
    tenant_of = run.orders.drop_duplicates("deployment_id").set_index("deployment_id")["tenant_id"]

    out = (
        per_lease.groupby(["deployment_id", "paused_at"], sort=True)
        .agg(
            stream=("stream", "first"),
            resumed_at=("resumed_at", "min"),
            closed_at=("closed_at", "max"),
            leases=("lease_id", "nunique"),
        )
        .reset_index()
    )
    out["tenant_id"] = out["deployment_id"].map(tenant_of).astype("Int64")
    _resumes_without_debt(out, per_lease, ledger)
    was_resumed = out["resumed_at"].notna()
    was_closed = ~was_resumed & out["closed_at"].notna()
    out["ended"] = np.where(was_resumed, "resumed", np.where(was_closed, "closed", "run_end"))
    ended_at = out["resumed_at"].astype("Float64").fillna(out["closed_at"]).fillna(run.duration)
    out["ended_at"] = ended_at.astype("int64")
    out["paused_blocks"] = out["ended_at"] - out["paused_at"]
    out["leases"] = out["leases"].astype("int64")
    out = out.sort_values(["paused_at", "deployment_id"], kind="stable")
    return out[columns].reset_index(drop=True)


def _resumes_without_debt(out: pd.DataFrame, per_lease: pd.DataFrame, ledger: pd.DataFrame) -> None:
    """Fill ``resumed_at`` for pauses whose paused leases were all closed before a deposit.

    Such a deployment is still paused but owes nothing, so the next deposit into its escrow
    resumes it without a ``debt`` transfer (``plan_round`` of no claims pays nothing).
    """
    candidates = out.index[out["resumed_at"].isna()]
    if candidates.empty:
        return
    still_open = per_lease.groupby(["deployment_id", "paused_at"])["closed_at"].apply(
        lambda c: bool(c.isna().any())
    )
    deposits = ledger[(ledger["reason"] == "deposit")
                      & ledger["destination"].str.startswith("escrow:")]  # fmt: skip
    blocks_of = (
        deposits.assign(dep=deposits["destination"].str.slice(len("escrow:")).astype("int64"))
        .groupby("dep")["block"]
        .apply(lambda b: np.sort(b.to_numpy(dtype=np.int64)))
    )
    for i in candidates:
        dep, paused_at = int(out.at[i, "deployment_id"]), int(out.at[i, "paused_at"])
        if still_open.get((dep, paused_at), True) or dep not in blocks_of.index:
            continue
        closed = int(out.at[i, "closed_at"])  # its last paused lease to close
        blocks = blocks_of[dep]
        after = blocks[np.searchsorted(blocks, closed) :]
        if after.size:
            out.at[i, "resumed_at"] = int(after[0])


def escrow_exhaustion(run: Run) -> pd.DataFrame:
    """One row per deployment that was ever paused because its escrow could not pay a round.

    Pauses come from :func:`pauses` (rebuilt from the ledger and leases: see there). Columns:
    ``deployment_id``, ``stream``, ``tenant_id``, ``first_pause_block``, ``first_pause_hours``,
    ``pauses``, ``resumes``, ``resumed`` (resumed at least once), ``ended_paused`` (closed, or
    still paused at the run's end, after its last pause), ``paused_blocks`` (in all),
    ``debt_written_off`` (micro: what closing its leases could not pay, summed over all its
    leases) and ``debt_written_off_units``, ``closed_at`` and ``close_reason`` (its last order
    to close, as orders close with their deployment; null if it was open at the run's end),
    sorted by first pause.

    Write-offs also happen without a pause: a deployment closed between rounds with too little
    escrow for the blocks since the last one. Those are in :func:`written_off_by_stream`, not
    here.
    """
    p = pauses(run)
    columns = list(_EXHAUSTION_COLUMNS)
    if p.empty:
        return _empty(columns, {"stream": object, "close_reason": object, "resumed": bool,
                                "ended_paused": bool, "closed_at": "Int64",
                                "tenant_id": "Int64"})  # fmt: skip
    by = p.groupby("deployment_id", sort=False)
    out = by.agg(
        stream=("stream", "first"),
        tenant_id=("tenant_id", "first"),
        first_pause_block=("paused_at", "min"),
        pauses=("paused_at", "size"),
        resumes=("ended", lambda e: int((e == "resumed").sum())),
        last_ended=("ended", "last"),
        paused_blocks=("paused_blocks", "sum"),
    ).reset_index()
    out["first_pause_hours"] = out["first_pause_block"] / 3600
    out["resumed"] = out["resumes"] > 0
    out["ended_paused"] = out["last_ended"] != "resumed"
    written = run.leases.groupby("deployment_id")["written_off"].sum()
    out["debt_written_off"] = out["deployment_id"].map(written).fillna(0).astype("int64")
    out["debt_written_off_units"] = units(out["debt_written_off"])
    closing = _deployment_close(run)
    out["closed_at"] = out["deployment_id"].map(closing["closed_at"]).astype("Int64")
    out["close_reason"] = out["deployment_id"].map(closing["close_reason"])
    out = out.sort_values(["first_pause_block", "deployment_id"], kind="stable")
    return out[columns].reset_index(drop=True)


def _deployment_close(run: Run) -> pd.DataFrame:
    """Per deployment: when and why it closed (its last order to close); null if still open."""
    orders = run.orders
    open_deps = set(orders.loc[orders["closed_at"].isna(), "deployment_id"])
    closed = orders[~orders["deployment_id"].isin(open_deps)]
    last = closed.sort_values(["deployment_id", "closed_at", "order_id"]).groupby("deployment_id")
    return last[["closed_at", "close_reason"]].last()


def written_off_by_stream(run: Run) -> pd.DataFrame:
    """Debt written off per demand stream: what closing leases could not pay from escrow.

    One row per stream (also those with nothing written off), most written off first. Columns:
    ``stream``, ``kind``, ``deployments`` (deployments or jobs created), ``paused`` (how many
    were ever paused, see :func:`escrow_exhaustion`), ``leases``, ``leases_written_off`` (leases
    with some debt written off), ``written_off`` (micro) and ``written_off_units``, ``billed``
    (micro: paid plus written off, what its leases cost) and ``written_off_share`` of it.
    ``written_off`` sums to the summary's ``debt_written_off``.
    """
    orders, leases = run.orders, run.leases
    deps = orders.drop_duplicates("deployment_id")
    out = deps.groupby("stream").agg(kind=("kind", "first"), deployments=("deployment_id", "size"))
    by = leases.assign(_hit=leases["written_off"] > 0).groupby("stream")
    out["leases"] = by.size().reindex(out.index).fillna(0).astype("int64")
    out["leases_written_off"] = by["_hit"].sum().reindex(out.index).fillna(0).astype("int64")
    out["written_off"] = by["written_off"].sum().reindex(out.index).fillna(0).astype("int64")
    paid = by["total_paid"].sum().reindex(out.index).fillna(0).astype("int64")
    out["billed"] = paid + out["written_off"]
    paused = escrow_exhaustion(run).groupby("stream").size()
    out["paused"] = paused.reindex(out.index).fillna(0).astype("int64")
    out["written_off_units"] = units(out["written_off"])
    out["written_off_share"] = (out["written_off"] / out["billed"]).where(out["billed"] > 0, 0.0)
    out = out.reset_index()
    out = out[list(_WRITTEN_OFF_COLUMNS)].sort_values(
        ["written_off", "stream"], ascending=[False, True]
    )
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- prices


def price_dynamics(run: Run, window_rounds: int = 10) -> pd.DataFrame:
    """Prices per settlement round, in units per block, with a rolling mean.

    Columns: ``block``, ``hours``, ``accepted`` (leases started since the previous round),
    ``accepted_mean_price`` (micro; NaN in a round that accepted none) and, in units,
    ``accepted_mean_units``, ``accepted_median_units``, ``rolling_mean_units`` (the mean price
    of the leases accepted in the last ``window_rounds`` rounds, each lease weighted once; NaN
    while none was) and ``active_mean_units`` (mean price of the leases active at the round).
    """
    if window_rounds < 1:
        raise ValueError(f"window_rounds must be at least 1, got {window_rounds}")
    ts = run.timeseries
    count = ts["accepted"].astype("float64")
    mean = ts["accepted_mean_price"].astype("float64")
    amount = (mean * count).fillna(0.0)
    rolled_amount = amount.rolling(window_rounds, min_periods=1).sum()
    rolled_count = count.rolling(window_rounds, min_periods=1).sum()
    rolling = (rolled_amount / rolled_count).where(rolled_count > 0)
    return pd.DataFrame(
        {
            "block": ts["block"],
            "hours": ts["block"] / 3600,
            "accepted": ts["accepted"],
            "accepted_mean_price": mean,
            "accepted_mean_units": units(mean),
            "accepted_median_units": units(ts["accepted_median_price"]),
            "rolling_mean_units": units(rolling),
            "active_mean_units": units(ts["active_mean_price"]),
        }
    )


# --------------------------------------------------------------------------- several runs


def compare_runs(paths_or_runs: Iterable[str | os.PathLike[str] | Run]) -> pd.DataFrame:
    """The runs' summaries side by side: one row per summary metric, one column per run.

    Columns are the runs' names (their paths where two names collide). Rows follow the
    summaries' keys; each money metric (micro) is followed by a ``<key>_units`` row in units.
    A metric a run lacks is null.
    """
    runs = _runs(paths_or_runs)
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.summary if k not in keys]
    rows: list[str] = []
    for key in keys:
        rows.append(key)
        if key in MONEY_SUMMARY_KEYS:
            rows.append(f"{key}_units")
    data: dict[str, list[Any]] = {}
    for label, run in zip(_labels(runs), runs, strict=True):
        column: list[Any] = []
        for row in rows:
            if row.endswith("_units") and row[: -len("_units")] in MONEY_SUMMARY_KEYS:
                value = run.summary.get(row[: -len("_units")])
                column.append(None if value is None else value / MICRO)
            else:
                column.append(run.summary.get(row))
        data[label] = column
    out = pd.DataFrame(data, index=pd.Index(rows, name="metric"), dtype=object)
    return out


def strategy_comparison(
    runs: Iterable[str | os.PathLike[str] | Run], by: str = "strategy"
) -> pd.DataFrame:
    """:func:`revenue_by_strategy` of each run, stacked, with a ``run`` column first (the run's
    name, or its path where two names collide)."""
    loaded = _runs(runs)
    parts = [
        revenue_by_strategy(run, by=by).assign(run=label)
        for label, run in zip(_labels(loaded), loaded, strict=True)
    ]
    out = pd.concat(parts, ignore_index=True)
    return out[["run", *(c for c in out.columns if c != "run")]]


def _empty(columns: list[str], dtypes: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype=dtypes.get(c, "int64")) for c in columns}, columns=columns
    )

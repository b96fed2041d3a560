"""``kova-sim``: run, validate, compare and sweep simulation scenarios.

Bad input (a scenario with errors, a folder that is not a run) is reported with the field or the
file it concerns and exits with status 2; nothing is written.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from kova_core import MICRO

from .commands import FILE_NAME as COMMANDS_FILE
from .engine import ENGINES, resolve_engine
from .run import DEFAULT_ENGINE, default_out, recording_engine, run_scenario
from .scenario import Scenario, ScenarioError, load_scenario
from .sweep import SEED_MODES, SeedMode, SweepError, run_sweep

__all__ = ["main"]

_PROGRESS_AFTER = 2.0  # seconds of wall time before a progress bar appears

stderr = Console(stderr=True, soft_wrap=True)


def _fail(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise SystemExit(2)


def _load(path: str, seed: int | None = None) -> Scenario:
    try:
        return load_scenario(path, seed=seed)
    except ScenarioError as exc:
        stderr.print(
            f"[bold red]error:[/] {exc.source}: the scenario is not valid", highlight=False
        )
        for problem in exc.problems:
            stderr.print(
                f"  [yellow]{problem.path or '(file)'}[/]: {problem.message}", highlight=False
            )
        raise SystemExit(2) from None


def _hours(blocks: int) -> str:
    return f"{blocks / 3600:.1f} h"


def _progress_bar(title: TextColumn, *what: Any) -> Progress:
    """A transient progress bar on stderr: the title, the bar, what is done, time spent and left."""
    return Progress(
        title,
        BarColumn(),
        *what,
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
    )


def _progress_reporter(scenario: Scenario, quiet: bool) -> tuple[Callable[[int, int], None], Any]:
    """A ``progress(now, duration)`` callback that shows a bar once a run takes > 2 s."""
    started = time.perf_counter()
    state: dict[str, Any] = {"bar": None, "task": None}

    def report(now: int, duration: int) -> None:
        if quiet:
            return
        if state["bar"] is None:
            if time.perf_counter() - started < _PROGRESS_AFTER or now >= duration:
                return
            bar = _progress_bar(
                TextColumn(f"[bold]{scenario.name}[/]"),
                TextColumn("{task.fields[sim]} of " + _hours(duration) + " simulated"),
            )
            bar.start()
            state["bar"] = bar
            state["task"] = bar.add_task("run", total=duration, sim="")
        state["bar"].update(state["task"], completed=now, sim=_hours(now))

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].stop()

    return report, close


def _money(micro: int | None) -> str:
    """Exact money for people: ``$20,868,185``, ``$0.936``, ``-$1.5``."""
    if micro is None:
        return "-"
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    decimals = f".{frac:06d}".rstrip("0") if frac else ""
    return f"{sign}${whole:,}{decimals}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _blocks(value: float | None) -> str:
    return "-" if value is None else f"{value:g} blocks"


# (label, summary key, formatter)
SUMMARY_ROWS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("simulated time", "duration_blocks", lambda v: _hours(v)),
    ("providers", "providers", str),
    ("deployments / jobs", "deployments", str),
    ("orders (leased / given up / waiting)", "orders", str),
    ("fill rate", "fill_rate", _pct),
    ("time to lease, median", "time_to_lease_median", _blocks),
    ("time to lease, p95", "time_to_lease_p95", _blocks),
    ("mean clearing price per block", "mean_clearing_price", _money),
    ("provider revenue", "provider_revenue", _money),
    ("provider revenue Gini", "provider_revenue_gini", lambda v: f"{v:.3f}"),
    ("CPU utilisation", "utilisation", _pct),
    ("insufficient-funds events", "insufficient_funds_events", str),
    ("debt written off", "debt_written_off", _money),
    ("tenant spend", "tenant_spend", _money),
    ("network fees", "network_fees", _money),
    ("money drift (must be 0)", "money_drift", lambda v: f"{v} micro"),
]


def _cell(summary: dict[str, Any], key: str, fmt: Callable[[Any], str]) -> str:
    if key == "deployments":
        return f"{summary['deployments']} / {summary['jobs']}"
    if key == "orders":
        return (
            f"{summary['orders']} ({summary['orders_leased']} / {summary['orders_given_up']}"
            f" / {summary['orders_waiting_at_end']})"
        )
    if key not in summary:
        return "-"
    return fmt(summary[key])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kova")
def main() -> None:
    """Kova's market simulator: the core under a SimPy clock."""


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the outputs [default: runs/<scenario name>-<seed>/].",
)
@click.option("--seed", type=int, help="Seed to use instead of the scenario's.")
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=DEFAULT_ENGINE,
    show_default=True,
    help="exact: every poll and settlement round is a SimPy event (the reference); fast: the"
    " same outputs, skipping the polls that change nothing, carrying each order's polls out"
    " together and, with a compact ledger, skipping the per-lease work of rounds; auto: fast"
    " (exact with --record-commands).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary table.")
@click.option("--no-plots", is_flag=True, help="Skip the plots/ folder.")
@click.option(
    "--record-commands",
    is_flag=True,
    help=f"Also write {COMMANDS_FILE} into the run folder: every command the engine issues to"
    " the core's Market, in order, each with its height, for another driver (the live"
    " orchestrator) to replay; see docs/simulator.md. Needs the exact engine: auto picks it,"
    " --engine fast is refused. A run is always one part (one process, one market), so every"
    " run can record.",
)
def run(
    scenario: str,
    out: Path | None,
    seed: int | None,
    engine: str,
    quiet: bool,
    no_plots: bool,
    record_commands: bool,
) -> None:
    """Run SCENARIO (a YAML file) and write its outputs."""
    commands = None
    if record_commands:
        try:
            engine = recording_engine(engine)
        except ValueError as exc:
            _fail(escape(f"--record-commands with --engine {engine}: {exc}"))
    loaded = _load(scenario, seed)
    try:
        resolve_engine(loaded, engine)
    except ValueError as exc:
        _fail(escape(f"--engine {engine}: {exc}"))
    out = out or default_out(loaded)
    if out.exists() and not out.is_dir():
        _fail(f"--out {out}: exists and is not a folder")
    if record_commands:
        commands = out / COMMANDS_FILE
    report, close = _progress_reporter(loaded, quiet)
    started = time.perf_counter()
    try:
        result = run_scenario(
            loaded, out, engine=engine, progress=report, plots=not no_plots, commands=commands
        )
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror or exc}")
        return
    finally:
        close()
    if quiet:
        return
    table = Table(
        title=f"{loaded.name} (seed {loaded.seed}, {result.summary['engine']} engine)",
        show_header=False,
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, key, fmt in SUMMARY_ROWS:
        table.add_row(label, _cell(result.summary, key, fmt))
    console = Console()
    console.print(table)
    console.print(
        f"simulated in {result.wall_seconds:.1f} s ({time.perf_counter() - started:.1f} s with"
        f" the outputs); outputs in [bold]{out}/[/]",
        highlight=False,
    )
    if result.summary["money_drift"] != 0:
        _fail(f"money was not conserved: drift {result.summary['money_drift']} micro-units")


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
def validate(scenario: str) -> None:
    """Check SCENARIO without running it."""
    loaded = _load(scenario)
    providers = sum(g.count for g in loaded.providers)
    click.echo(
        f"{scenario}: ok — {loaded.name}: {_hours(loaded.duration)} simulated, "
        f"{len(loaded.providers)} provider group(s) with {providers} provider(s), "
        f"{len(loaded.demand)} demand stream(s), seed {loaded.seed}"
    )


def _summary(folder: Path) -> dict[str, Any]:
    path = folder / "summary.json"
    if not folder.is_dir():
        _fail(f"{folder}: not a folder")
    if not path.is_file():
        _fail(f"{folder}: no summary.json here; is it a kova-sim run folder?")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        _fail(f"{path}: cannot read: {exc}")
    if not isinstance(data, dict):
        _fail(f"{path}: not a run summary")
    return data


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
def compare(runs: tuple[Path, ...]) -> None:
    """The summaries of several run folders side by side."""
    summaries = [_summary(folder) for folder in runs]
    table = Table(title="kova-sim runs")
    table.add_column("metric")
    for folder, summary in zip(runs, summaries, strict=True):
        table.add_column(
            f"{summary.get('scenario', folder.name)}\nseed {summary.get('seed')}", justify="right"
        )
    for label, key, fmt in SUMMARY_ROWS:
        table.add_row(label, *(_cell(s, key, fmt) for s in summaries))
    Console().print(table)


# --------------------------------------------------------------------------- sweep


def _sweep_progress(name: str, quiet: bool) -> tuple[Callable[[Any], None], Callable[[], None]]:
    """A sweep's ``progress(SweepProgress)`` callback: a bar of runs once it takes > 2 s."""
    started = time.perf_counter()
    state: dict[str, Any] = {"bar": None, "task": None}

    def report(where: Any) -> None:
        if quiet or where.total == 0:
            return
        if state["bar"] is None:
            if time.perf_counter() - started < _PROGRESS_AFTER or where.finished:
                return
            bar = _progress_bar(
                TextColumn(f"[bold]{name}[/] sweep"),
                MofNCompleteColumn(),
                TextColumn("runs, {task.fields[failed]} failed"),
            )
            bar.start()
            state["bar"] = bar
            state["task"] = bar.add_task("sweep", total=where.total, failed=0)
        state["bar"].update(state["task"], completed=where.done + where.failed, failed=where.failed)

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].stop()

    return report, close


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option(
    "--grid",
    "grids",
    multiple=True,
    metavar="PATH=V1,V2,...",
    help="A parameter and its values, e.g. fee_bps=0,250 or providers[0].pricing.floor=0.5,0.7;"
    " repeat for a grid (the cartesian product, in the order given).",
)
@click.option(
    "--replications",
    type=click.IntRange(min=1),
    required=True,
    metavar="N",
    help="Runs per grid point, each with its own seed.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    metavar="DIR",
    help="Folder for the sweep; run the same sweep again on it to resume.",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="A Dask scheduler, e.g. tcp://10.0.0.5:8786, whose workers have Kova installed"
    " [default: a local cluster].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes of the local cluster [default: one per CPU].",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=DEFAULT_ENGINE,
    show_default=True,
    help="The engine every run uses.",
)
@click.option(
    "--seeds",
    type=click.Choice(SEED_MODES),
    default="independent",
    show_default=True,
    help="independent: every run its own seed; common: replication r of every grid point"
    " shares one seed (common random numbers).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary table.")
def sweep(
    scenario: str,
    grids: tuple[str, ...],
    replications: int,
    out: Path,
    scheduler: str | None,
    workers: int | None,
    engine: str,
    seeds: SeedMode,
    quiet: bool,
) -> None:
    """Run SCENARIO at each point of a grid of parameter values, N times each, on Dask.

    Writes runs/<run id>/ for each run, runs.parquet, summary.parquet (mean, standard deviation
    and 95% confidence interval per grid point), plots/ and sweep.json into --out. Exits 1 if
    any run failed (listed, and written to failures.json).
    """
    loaded = _load(scenario)
    if scheduler is not None and workers is not None:
        _fail("--workers sizes the local cluster; with --scheduler the cluster's workers run")
    report, close = _sweep_progress(loaded.name, quiet)
    try:
        result = run_sweep(
            loaded,
            grids,
            replications=replications,
            out=out,
            client=scheduler,
            workers=workers,
            engine=engine,
            seeds=seeds,
            progress=report,
        )
    except SweepError as exc:
        _fail(escape(str(exc)))
        return
    except OSError as exc:
        _fail(escape(f"cannot write {out}: {exc.strerror or exc}"))
        return
    finally:
        close()
    drifted = [
        run_id
        for run_id, conserved in zip(
            result.runs.column("run_id").to_pylist(),
            result.runs.column("money_conserved").to_pylist()
            if "money_conserved" in result.runs.column_names
            else [],
            strict=False,
        )
        if conserved is False
    ]
    if not quiet:
        table = Table(title=f"{loaded.name} sweep ({engine} engine)", show_header=False)
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("grid points × replications", f"{len(result.points)} × {replications}")
        table.add_row("runs done", str(result.done))
        table.add_row("skipped (done before)", str(result.skipped))
        table.add_row("failed", str(len(result.failures)))
        table.add_row("wall time", f"{result.wall_seconds:.1f} s")
        table.add_row("outputs", f"{result.out}/")
        Console().print(table)
    if result.failures:
        stderr.print(
            f"[bold red]{len(result.failures)} run(s) failed[/] (also in"
            f" {result.out / 'failures.json'}):",
            highlight=False,
        )
        for f in result.failures:
            where = ", ".join(f"{p}={v}" for p, v in f.grid.items()) or "no grid"
            stderr.print(
                f"  {f.run_id} ({where}; seed {f.seed}): {f.error_type}: {f.message}",
                highlight=False,
                markup=False,
            )
    if drifted:
        stderr.print(
            f"[bold red]money was not conserved[/] in {', '.join(drifted)}", highlight=False
        )
    if result.failures or drifted:
        raise SystemExit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

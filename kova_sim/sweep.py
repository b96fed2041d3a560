"""Parameter sweeps: one scenario run over a grid of parameter values, many times, on Dask.

Theory of operation
-------------------
A sweep is a scenario, a **grid** and a number of **replications**:

- **grid**: each ``--grid PATH=V1,V2,...`` is an axis (:class:`GridAxis`): a dotted path into the
  scenario, in the syntax of the scenario's own error messages (``fee_bps``,
  ``providers[0].pricing.floor``), and the values it takes, written as in a scenario file
  (``2h``, ``0.5``, ``1Gi``, ``12/h``). The grid's **points** are the cartesian product of the
  axes, in the order given, the first axis varying slowest (:func:`expand_points`). Each point's
  scenario is the resolved scenario with the values set and validated again with
  :func:`kova_sim.scenario.parse_scenario`, all of them before anything runs, so a bad path or a
  value that makes the scenario invalid is refused up front (:class:`GridError`). No axis at
  all is one point: replications only.
- **runs**: each point runs ``replications`` times, each with its own seed derived from the
  scenario's (:func:`run_seed`): ``independent`` seeds are keyed by (point, replication);
  ``common`` seeds by the replication only, so replication *r* of every point sees the same
  random demand and failures (common random numbers: the differences between points are the
  parameter's, not the draws'). A run's id, ``p003-r01``, names its folder ``runs/<run id>/``.
- **execution**: every run is a task on Dask distributed (a local cluster of worker processes by
  default, or an existing cluster's scheduler). A task (:func:`run_task`) calls
  :func:`kova_sim.run.run_scenario` into its folder, writes the run's ``sweep.json`` last and
  returns the small summary only. A task that raises is a failure recorded with its point and
  seed; the other runs go on (``failures.json``).
- **resume**: the sweep folder's ``sweep.json`` holds the sweep's definition. Running the same
  definition on the same folder again skips every run whose folder is complete for the same
  scenario and seed (:func:`completed_run`); a different definition is refused
  (:class:`DefinitionMismatch`).
- **aggregation**: ``runs.parquet`` (a row per successful run, every numeric summary figure a
  column), ``summary.parquet`` (a row per point: mean, standard deviation and Student's t 95%
  confidence interval of each numeric figure) and ``plots/<metric>-vs-<parameter>.png``.

The same sweep definition gives the same seeds, the same run folders and the same tables
(wall-clock seconds aside, which are recorded when a run is made and kept when it is resumed).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from kova_core import MICRO

from .run import DEFAULT_ENGINE, run_scenario
from .scenario import Scenario, ScenarioError, parse_scenario, resolved

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "HEADLINE_METRICS",
    "SEED_MODES",
    "DefinitionMismatch",
    "GridAxis",
    "GridError",
    "Point",
    "RunFailure",
    "RunOutcome",
    "RunTask",
    "SweepError",
    "SweepProgress",
    "SweepResult",
    "completed_run",
    "expand_points",
    "parse_grid",
    "parse_path",
    "plot_sweep",
    "run_id",
    "run_seed",
    "run_sweep",
    "run_task",
    "runs_table",
    "set_path",
    "summary_table",
]

SeedMode = Literal["independent", "common"]
SEED_MODES: tuple[SeedMode, ...] = ("independent", "common")
"""How runs' seeds are derived: independent per (point, replication), or common per replication."""

HEADLINE_METRICS = (
    "fill_rate",
    "time_to_lease_median",
    "mean_clearing_price",
    "provider_revenue",
    "provider_revenue_gini",
    "utilisation",
    "insufficient_funds_events",
    "debt_written_off",
)
"""The summary figures plotted against each grid parameter, in this order."""

_MONEY_METRICS = {"mean_clearing_price", "provider_revenue", "debt_written_off"}
_NOT_METRICS = {"scenario", "seed", "engine"}  # summary keys that are not figures of the run
_BASE_COLUMNS = ("run_id", "point", "replication", "seed", "wall_seconds", "n")
_SEED_MASK = 2**63 - 1
_FORMAT = 1  # version of the sweep.json layout
_POLL_SECONDS = 0.2  # how often the progress callback is called while tasks run
_MAX_LINES = 6  # more combinations of the other parameters than this: one averaged line


class SweepError(ValueError):
    """A sweep that cannot start: the message says why, for the person who asked for it."""


class GridError(SweepError):
    """A ``--grid`` option that names no field, or a value that makes the scenario invalid."""


class DefinitionMismatch(SweepError):
    """The sweep folder holds another sweep: its ``sweep.json`` differs from the one asked for."""


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True, slots=True)
class GridAxis:
    """One ``--grid PATH=V1,V2,...``: a dotted path and its values as given (strings)."""

    path: str
    values: tuple[str, ...]

    @property
    def option(self) -> str:
        """The option as a person writes it: ``--grid fee_bps=0,250``."""
        return f"--grid {self.path}={','.join(self.values)}"

    @property
    def parsed(self) -> tuple[Any, ...]:
        """The values read as YAML scalars (``0.5`` a float, ``2h`` a string)."""
        return tuple(_scalar(v) for v in self.values)

    @property
    def numeric(self) -> bool:
        """Whether every value is a number (a numeric axis on the plots)."""
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in self.parsed)

    @property
    def slug(self) -> str:
        """The path as part of a file name: ``providers[0].pricing.floor`` becomes
        ``providers-0-pricing-floor``."""
        return re.sub(r"[^A-Za-z0-9_]+", "-", self.path).strip("-")


_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])*(?:\.[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])*)*")
_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def parse_path(path: str) -> tuple[str | int, ...]:
    """``providers[0].pricing.floor`` -> ``("providers", 0, "pricing", "floor")``.

    Raises :class:`GridError` for a path not in that syntax.
    """
    if not _PATH.fullmatch(path):
        raise GridError(
            f"{path!r} is not a field path: write fields with dots and list entries with"
            " [index], as in providers[0].pricing.floor"
        )
    return tuple(name if name else int(index) for name, index in _PART.findall(path))


def parse_grid(spec: str) -> GridAxis:
    """One ``PATH=V1,V2,...`` option. Raises :class:`GridError` naming the option and problem."""
    path, sep, values = spec.partition("=")
    path = path.strip()
    option = f"--grid {spec}"
    if not sep or not path:
        raise GridError(f"{option}: expected PATH=V1,V2,... (for example fee_bps=0,250)")
    try:
        parse_path(path)
    except GridError as exc:
        raise GridError(f"{option}: {exc}") from None
    items = tuple(v.strip() for v in values.split(","))
    if any(v == "" for v in items):
        raise GridError(f"{option}: {path}: empty value; give values separated by commas")
    for value in items:
        if items.count(value) > 1:
            raise GridError(f"{option}: {path}: the value {value} is given twice")
    if path == "seed":
        raise GridError(
            f"{option}: the seed cannot be a grid parameter: each run's seed is derived from"
            " the scenario's (use --replications)"
        )
    return GridAxis(path, items)


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_path(data: Any, path: str, value: Any) -> None:
    """Set the field at ``path`` of a resolved scenario mapping to ``value``, in place.

    Every step but the last must exist; the last may be a field the scenario leaves out (an
    optional one; validation refuses a field that does not exist). Raises :class:`GridError`
    naming the step that is missing, out of range or of the wrong kind.
    """
    parts = parse_path(path)
    node = data
    where = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(part, int):
            if not isinstance(node, list):
                raise GridError(f"{where} is not a list: [{part}] names nothing")
            if part >= len(node):
                entries = f"{len(node)} entr{'y' if len(node) == 1 else 'ies'}"
                raise GridError(f"{where}[{part}]: index out of range ({where} has {entries})")
            here = f"{where}[{part}]"
        else:
            if not isinstance(node, dict):
                raise GridError(f"{where} is not a mapping: it has no field {part!r}")
            here = f"{where}.{part}" if where else part
            if part not in node and not last:
                raise GridError(
                    f"{here}: no such field in the scenario (to sweep a field of an optional"
                    " section, write the section in the scenario file)"
                )
        if last:
            node[part] = value
        else:
            node = node[part]
        where = here


@dataclass(frozen=True, slots=True)
class Point:
    """One point of the grid: its index, the values as given, and its validated scenario."""

    index: int
    values: tuple[tuple[str, str], ...]  # (path, value as given), in grid order
    scenario: Scenario

    def label(self) -> str:
        """``fee_bps=250, providers[0].count=3`` (or ``(no grid)``)."""
        return ", ".join(f"{p}={v}" for p, v in self.values) or "(no grid)"


def expand_points(scenario: Scenario, axes: Sequence[GridAxis]) -> list[Point]:
    """The grid's points: the cartesian product of the axes, in order, each validated.

    Raises :class:`GridError`: for a path that names nothing, a value that makes the scenario
    invalid (naming the ``--grid`` option, the path and the problem), two axes on one path, or
    a combination of values that is invalid only together (naming the point).
    """
    seen: set[str] = set()
    for axis in axes:
        if axis.path in seen:
            raise GridError(f"{axis.option}: {axis.path} is already a grid parameter")
        seen.add(axis.path)
        if axis.path in _BASE_COLUMNS:
            raise GridError(f"{axis.option}: {axis.path} is not a scenario field")
    base = resolved(scenario)
    # each path, then each value alone, so the error names the one option at fault
    for axis in axes:
        try:
            set_path(copy.deepcopy(base), axis.path, None)
        except GridError as exc:
            raise GridError(f"{axis.option}: {exc}") from None
        for text, value in zip(axis.values, axis.parsed, strict=True):
            where = f"{axis.option}: {axis.path}={text}"
            _point_scenario(base, [(axis.path, value)], where)
    points = []
    for index, combo in enumerate(itertools.product(*(axis.values for axis in axes))):
        values = tuple((axis.path, text) for axis, text in zip(axes, combo, strict=True))
        label = ", ".join(f"{p}={v}" for p, v in values)
        assigned = [(p, _scalar(v)) for p, v in values]
        where = f"grid point {index} ({label})"
        points.append(Point(index, values, _point_scenario(base, assigned, where)))
    return points


def _point_scenario(base: Mapping[str, Any], assigned: Iterable[tuple[str, Any]], where: str):
    data = copy.deepcopy(dict(base))
    for path, value in assigned:
        try:
            set_path(data, path, value)
        except GridError as exc:
            raise GridError(f"{where}: {exc}") from None
    try:
        return parse_scenario(data, source=where)
    except ScenarioError as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        raise GridError(f"{where} makes the scenario invalid: {problems}") from None


# --------------------------------------------------------------------------- seeds and ids


def run_seed(base_seed: int, point: int, replication: int, mode: SeedMode = "independent") -> int:
    """The seed of one run, a non-negative 63-bit int derived from the scenario's seed.

    ``independent``: from ``SeedSequence(base_seed, spawn_key=(point, replication))``, so every
    run has its own draws; ``common``: from ``spawn_key=(replication,)``, so every point of a
    replication sees the same draws (common random numbers). The sequence's first two 64-bit
    words are combined (xor) and masked to 63 bits. Raises ``ValueError`` for another mode.
    """
    if mode not in SEED_MODES:
        raise ValueError(f"unknown seeds mode {mode!r}; use one of {', '.join(SEED_MODES)}")
    key = (point, replication) if mode == "independent" else (replication,)
    high, low = np.random.SeedSequence(base_seed, spawn_key=key).generate_state(2, np.uint64)
    return (int(low) ^ (int(high) >> 1)) & _SEED_MASK


def run_id(point: int, replication: int, points: int = 1, replications: int = 1) -> str:
    """``p003-r01``: at least three digits for the point and two for the replication."""
    pw = max(3, len(str(max(points - 1, 0))))
    rw = max(2, len(str(max(replications - 1, 0))))
    return f"p{point:0{pw}d}-r{replication:0{rw}d}"


# --------------------------------------------------------------------------- runs as tasks


@dataclass(frozen=True, slots=True)
class RunTask:
    """One run as a Dask task: everything a worker needs, in plain data.

    ``scenario`` is the point's resolved scenario with the run's seed; ``out`` its folder (an
    absolute path, on storage every worker can write).
    """

    run_id: str
    point: int
    replication: int
    seed: int
    grid: tuple[tuple[str, str], ...]
    scenario: dict[str, Any]
    out: str
    engine: str

    def record(self, wall_seconds: float) -> dict[str, Any]:
        """The run's ``sweep.json``: where it sits in the sweep, and how long it took."""
        return {
            "run_id": self.run_id,
            "point": self.point,
            "replication": self.replication,
            "seed": self.seed,
            "grid": dict(self.grid),
            "engine": self.engine,
            "wall_seconds": wall_seconds,
        }


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a task sends back: the run's summary, or the error that stopped it."""

    run_id: str
    summary: dict[str, Any] | None
    wall_seconds: float
    error_type: str | None = None
    message: str | None = None


def run_task(task: RunTask) -> RunOutcome:
    """Run one task (on a worker): the run folder, then its ``sweep.json``; never raises.

    A run that raises comes back as an outcome with the error's type and message; its folder
    is left without ``sweep.json``, so a resumed sweep runs it again.
    """
    started = time.perf_counter()
    try:
        scenario = parse_scenario(task.scenario, source=task.run_id)
        out = Path(task.out)
        result = run_scenario(scenario, out, engine=task.engine, plots=False)
        wall = time.perf_counter() - started
        _write_json(out / "sweep.json", task.record(wall))
    except Exception as exc:  # every error is the run's: it is reported, the others go on
        return RunOutcome(
            task.run_id, None, time.perf_counter() - started, type(exc).__name__, str(exc)
        )
    return RunOutcome(task.run_id, result.summary, wall)


def completed_run(task: RunTask) -> tuple[dict[str, Any], float] | None:
    """The summary and wall seconds of the task's run if its folder already holds it, else None.

    Complete means: ``summary.json`` for the same scenario name and seed, ``scenario.yaml``
    equal to the task's resolved scenario, and the run's ``sweep.json`` for the same run id,
    point, replication, seed, grid values and engine asked for. (The summary names the engine
    that ran, which for ``auto`` is another name.)
    """
    out = Path(task.out)
    try:
        summary = json.loads((out / "summary.json").read_text())
        record = json.loads((out / "sweep.json").read_text())
        ran = yaml.safe_load((out / "scenario.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not (isinstance(summary, dict) and isinstance(record, dict)):
        return None
    same = (
        summary.get("seed") == task.seed
        and summary.get("scenario") == task.scenario["name"]
        and ran == task.scenario
        and {k: v for k, v in record.items() if k != "wall_seconds"}
        == {k: v for k, v in task.record(0.0).items() if k != "wall_seconds"}
    )
    wall = record.get("wall_seconds")
    if not same or not isinstance(wall, int | float):
        return None
    return summary, float(wall)


# --------------------------------------------------------------------------- the sweep


@dataclass(frozen=True, slots=True)
class RunFailure:
    """A run that raised: where it sits in the grid, its seed, and the error."""

    run_id: str
    point: int
    replication: int
    seed: int
    grid: dict[str, str]
    error_type: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        """As written to ``failures.json``."""
        return {
            "run_id": self.run_id,
            "point": self.point,
            "replication": self.replication,
            "seed": self.seed,
            "grid": self.grid,
            "error": self.error_type,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class SweepProgress:
    """Where a sweep is: runs to do this time, done so far, failed so far, skipped (resumed)."""

    total: int
    done: int
    failed: int
    skipped: int

    @property
    def finished(self) -> bool:
        """Every run to do has come back."""
        return self.done + self.failed >= self.total


@dataclass(frozen=True, slots=True)
class SweepResult:
    """A finished sweep: what ran, what was resumed, what failed, and the outputs."""

    out: Path
    points: list[Point]
    replications: int
    done: int
    skipped: int
    failures: list[RunFailure]
    runs: pa.Table
    summary: pa.Table
    plots: list[Path] = field(default_factory=list)
    wall_seconds: float = 0.0


def definition(
    scenario: Scenario,
    axes: Sequence[GridAxis],
    *,
    replications: int,
    seeds: SeedMode,
    engine: str,
) -> dict[str, Any]:
    """The sweep's definition, as ``sweep.json`` holds it (plain JSON data)."""
    return {
        "format": _FORMAT,
        "scenario": resolved(scenario),
        "grids": [{"path": a.path, "values": list(a.values)} for a in axes],
        "replications": replications,
        "seeds": seeds,
        "engine": engine,
    }


def _check_definition(out: Path, wanted: dict[str, Any]) -> None:
    path = out / "sweep.json"
    if not path.exists():
        return
    try:
        held = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DefinitionMismatch(f"{path}: cannot read the sweep held there: {exc}") from None
    if held == wanted:
        return
    if not isinstance(held, dict):
        held = {}
    labels = {"scenario": "the scenario (as resolved)", "grids": "the --grid options"}
    differ = [labels.get(k, k) for k in wanted if held.get(k) != wanted[k]]
    raise DefinitionMismatch(
        f"{out} holds another sweep: {', '.join(differ) or 'its definition'} differ"
        f" from {path}; give a new --out folder, or run the same sweep again to resume it"
    )


def _tasks(
    points: Sequence[Point], replications: int, seeds: SeedMode, engine: str, out: Path
) -> list[RunTask]:
    tasks = []
    for point in points:
        for r in range(replications):
            seed = run_seed(point.scenario.seed, point.index, r, seeds)
            rid = run_id(point.index, r, len(points), replications)
            data = resolved(point.scenario.model_copy(update={"seed": seed}))
            folder = str(out / "runs" / rid)
            tasks.append(RunTask(rid, point.index, r, seed, point.values, data, folder, engine))
    return tasks


def run_sweep(
    scenario: Scenario,
    grids: Sequence[GridAxis | str],
    *,
    replications: int,
    out: Path | str,
    client: Client | str | None = None,
    workers: int | None = None,
    engine: str = DEFAULT_ENGINE,
    seeds: SeedMode = "independent",
    progress: Callable[[SweepProgress], None] | None = None,
    connect_timeout: float = 10.0,
) -> SweepResult:
    """Run ``scenario`` at every point of the grid ``replications`` times, on Dask.

    ``client`` is a ``distributed.Client`` (left open), a scheduler address such as
    ``tcp://10.0.0.5:8786`` (connected to, then closed) or ``None``: a local cluster of
    ``workers`` processes (default: one per CPU), one thread each, closed at the end.
    ``progress`` is called every fraction of a second while runs are out, and at the end.

    Writes into ``out``: ``sweep.json``, ``runs/<run id>/``, ``runs.parquet``,
    ``summary.parquet``, ``plots/`` and, when runs failed, ``failures.json``.

    Raises :class:`GridError` (a bad grid; nothing written), :class:`DefinitionMismatch`
    (``out`` holds another sweep), :class:`SweepError` (an unknown engine or seeds mode, a bad
    replication count, ``out`` not a folder, a scheduler that cannot be reached; nothing
    written), ``OSError`` if ``out`` cannot be written.
    """
    from . import engine as engines  # read at call time: the engines grow

    started = time.perf_counter()
    if engine not in engines.ENGINES:
        raise SweepError(f"unknown engine {engine!r}; available: {', '.join(engines.ENGINES)}")
    if seeds not in SEED_MODES:
        raise SweepError(f"unknown seeds mode {seeds!r}; use one of {', '.join(SEED_MODES)}")
    if replications < 1:
        raise SweepError(f"replications must be at least 1, got {replications}")
    axes = [g if isinstance(g, GridAxis) else parse_grid(g) for g in grids]
    points = expand_points(scenario, axes)
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise SweepError(f"{out}: exists and is not a folder")
    wanted = definition(scenario, axes, replications=replications, seeds=seeds, engine=engine)
    _check_definition(out, wanted)
    tasks = _tasks(points, replications, seeds, engine, out)

    finished: dict[str, tuple[dict[str, Any], float]] = {}
    todo = []
    for task in tasks:
        found = completed_run(task)
        if found is None:
            todo.append(task)
        else:
            finished[task.run_id] = found
    skipped = len(finished)
    failures: list[RunFailure] = []
    if todo:
        with _connected(client, workers, connect_timeout) as dask_client:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / "sweep.json", wanted)
            failures = _execute(dask_client, todo, finished, skipped, progress)

    failures_path = out / "failures.json"
    if failures:
        _write_json(failures_path, [f.as_dict() for f in failures])
    elif failures_path.exists():
        failures_path.unlink()  # from an earlier attempt whose failed runs have now run
    rows = [(task, *finished[task.run_id]) for task in tasks if task.run_id in finished]
    runs = runs_table(rows, axes)
    summary = summary_table(runs, points, axes)
    pq.write_table(runs, out / "runs.parquet", compression="zstd")
    pq.write_table(summary, out / "summary.parquet", compression="zstd")
    plots = plot_sweep(summary, runs, axes, out / "plots", title=scenario.name)
    return SweepResult(
        out=out,
        points=points,
        replications=replications,
        done=len(finished) - skipped,
        skipped=skipped,
        failures=failures,
        runs=runs,
        summary=summary,
        plots=plots,
        wall_seconds=time.perf_counter() - started,
    )


class _connected:
    """A context manager for the Dask client a sweep runs on (and the local cluster it made)."""

    def __init__(self, client: Client | str | None, workers: int | None, timeout: float):
        self.given, self.workers, self.timeout = client, workers, timeout
        self.owned: list[Any] = []

    def __enter__(self) -> Client:
        import os

        from distributed import Client, LocalCluster

        if self.given is not None and not isinstance(self.given, str):
            return self.given
        if isinstance(self.given, str):
            try:
                client = Client(self.given, timeout=self.timeout)
            except (OSError, ValueError, TimeoutError) as exc:
                raise SweepError(
                    f"--scheduler {self.given}: cannot reach the Dask scheduler: {exc}"
                ) from None
            self.owned.append(client)
            return client
        workers = self.workers or os.cpu_count() or 1
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        self.owned.append(cluster)
        client = Client(cluster)
        self.owned.append(client)
        return client

    def __exit__(self, *exc: object) -> None:
        for thing in reversed(self.owned):
            thing.close()


def _execute(
    client: Client,
    todo: Sequence[RunTask],
    finished: dict[str, tuple[dict[str, Any], float]],
    skipped: int,
    progress: Callable[[SweepProgress], None] | None,
) -> list[RunFailure]:
    """Submit the runs, collect their outcomes into ``finished``; return the failures."""
    from distributed import as_completed

    by_key = {}
    futures = []
    token = uuid.uuid4().hex[:8]
    for task in todo:
        future = client.submit(run_task, task, key=f"kova-run-{task.run_id}-{token}", pure=False)
        by_key[future.key] = task
        futures.append(future)
    failures: list[RunFailure] = []
    done = 0

    def report() -> None:
        if progress is not None:
            progress(SweepProgress(len(todo), done, len(failures), skipped))

    report()
    pending = as_completed(futures)
    while not pending.is_empty():
        if not pending.has_ready():
            time.sleep(_POLL_SECONDS)
            report()
            continue
        for future in pending.next_batch(block=False):
            task = by_key[future.key]
            if future.status == "finished":
                outcome: RunOutcome = future.result()
            else:  # the task never returned: its worker died, or it was cancelled
                try:
                    error = future.exception()
                    outcome = RunOutcome(task.run_id, None, 0.0, type(error).__name__, str(error))
                except Exception as exc:  # a cancelled future raises here instead
                    outcome = RunOutcome(task.run_id, None, 0.0, type(exc).__name__, str(exc))
            future.release()
            if outcome.summary is None:
                failures.append(
                    RunFailure(
                        task.run_id, task.point, task.replication, task.seed, dict(task.grid),
                        outcome.error_type or "Error", outcome.message or "",
                    )
                )  # fmt: skip
            else:
                finished[task.run_id] = (outcome.summary, outcome.wall_seconds)
                done += 1
        report()
    report()
    failures.sort(key=lambda f: f.run_id)
    return failures


def _write_json(path: Path, data: object) -> None:
    """Write JSON whole or not at all: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------- the tables


def _metric_names(summaries: Iterable[Mapping[str, Any]]) -> list[str]:
    """Numeric and boolean summary figures: the headline ones first, then the rest by name."""
    kinds: dict[str, set[type]] = {}
    for summary in summaries:
        for key, value in summary.items():
            if key not in _NOT_METRICS and value is not None:
                kinds.setdefault(key, set()).add(type(value))
    names = {k for k, types in kinds.items() if types <= {bool, int, float}}
    names = {k for k in names if not ({bool} < kinds[k])}  # bool mixed with numbers: not a figure
    return [m for m in HEADLINE_METRICS if m in names] + sorted(names - set(HEADLINE_METRICS))


def _metric_type(values: Sequence[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    return pa.float64()


def runs_table(
    rows: Sequence[tuple[RunTask, Mapping[str, Any], float]], axes: Sequence[GridAxis]
) -> pa.Table:
    """One row per successful run: ``run_id, point``, each grid path (its value as given),
    ``replication, seed, wall_seconds``, then every numeric and boolean summary figure.

    ``rows`` are (task, summary, wall seconds), in run id order. Money stays int64 micro-units.
    """
    columns: dict[str, pa.Array] = {
        "run_id": pa.array([t.run_id for t, _, _ in rows], pa.string()),
        "point": pa.array([t.point for t, _, _ in rows], pa.int64()),
    }
    for axis in axes:
        columns[axis.path] = pa.array([dict(t.grid)[axis.path] for t, _, _ in rows], pa.string())
    columns["replication"] = pa.array([t.replication for t, _, _ in rows], pa.int64())
    columns["seed"] = pa.array([t.seed for t, _, _ in rows], pa.int64())
    columns["wall_seconds"] = pa.array([w for _, _, w in rows], pa.float64())
    for name in _metric_names(s for _, s, _ in rows):
        values = [s.get(name) for _, s, _ in rows]
        columns[name] = pa.array(values, _metric_type(values))
    return pa.table(columns)


def _t_quantile(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def _stats(values: np.ndarray) -> tuple[float | None, float | None, float | None, float | None]:
    """Mean, sample standard deviation and the 95% Student's t interval (None where undefined)."""
    values = values[~np.isnan(values)]
    n = values.size
    if n == 0:
        return None, None, None, None
    mean = float(values.mean())
    if n == 1:
        return mean, None, None, None
    std = float(values.std(ddof=1))
    half = _t_quantile(n) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def summary_table(runs: pa.Table, points: Sequence[Point], axes: Sequence[GridAxis]) -> pa.Table:
    """One row per grid point: the grid values, ``n`` (successful runs), and for each numeric
    figure of ``runs`` its ``<figure>_mean``, ``_std``, ``_ci_low`` and ``_ci_high`` (95%,
    Student's t with n-1 degrees of freedom; nulls left out; std and interval null below two
    runs). All floats.
    """
    skip = set(_BASE_COLUMNS) | {a.path for a in axes}
    metrics = [
        f.name
        for f in runs.schema
        if f.name not in skip and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
    ]
    index = runs.column("point").to_numpy()
    data = {
        name: runs.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        for name in metrics
    }
    columns: dict[str, list[Any]] = {"point": [p.index for p in points]}
    for i, axis in enumerate(axes):
        columns[axis.path] = [p.values[i][1] for p in points]
    columns["n"] = [int((index == p.index).sum()) for p in points]
    for name in metrics:
        stats = [_stats(data[name][index == p.index]) for p in points]
        for j, suffix in enumerate(("mean", "std", "ci_low", "ci_high")):
            columns[f"{name}_{suffix}"] = [s[j] for s in stats]
    types = {"point": pa.int64(), "n": pa.int64(), **{a.path: pa.string() for a in axes}}
    return pa.table(
        {name: pa.array(values, types.get(name, pa.float64())) for name, values in columns.items()}
    )


# --------------------------------------------------------------------------- the plots


def plot_sweep(
    summary: pa.Table,
    runs: pa.Table,
    axes: Sequence[GridAxis],
    folder: Path,
    *,
    title: str = "sweep",
) -> list[Path]:
    """``<folder>/<metric>-vs-<parameter>.png`` for each headline figure and grid parameter.

    Each point is the mean with its 95% confidence interval as an error bar. Numeric values
    sit on a numeric axis, others are categories in the order given. With other grid
    parameters, one line per combination of their values, or, past six combinations, the
    mean over them (said in the title). Money in units. No grid, no plots. Returns the files
    written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [m for m in HEADLINE_METRICS if f"{m}_mean" in summary.column_names]
    if not axes or not metrics:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    rows = summary.to_pylist()
    written = []
    for metric in metrics:
        scale = MICRO if metric in _MONEY_METRICS else 1
        for axis in axes:
            fig = Figure(figsize=(7.0, 4.5), dpi=100)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            others = [a for a in axes if a is not axis]
            combos = list(itertools.product(*(a.values for a in others)))
            positions = _positions(axis)
            note = ""
            if len(combos) <= _MAX_LINES:
                for k, combo in enumerate(combos):
                    chosen = dict(zip((a.path for a in others), combo, strict=True))
                    line = [r for r in rows if all(r[p] == v for p, v in chosen.items())]
                    shift = _shift(axis, k, len(combos))
                    x, y, err = [], [], []
                    for r in line:
                        if r[f"{metric}_mean"] is None:
                            continue
                        x.append(positions[r[axis.path]] + shift)
                        y.append(r[f"{metric}_mean"] / scale)
                        high = r[f"{metric}_ci_high"]
                        err.append(0.0 if high is None else (high - r[f"{metric}_mean"]) / scale)
                    label = ", ".join(f"{p}={v}" for p, v in chosen.items()) or None
                    ax.errorbar(x, y, yerr=err, marker="o", capsize=4, label=label)
                if others:
                    ax.legend(fontsize=8)
            else:
                x, y, err = [], [], []
                for value in axis.values:
                    picked = runs.filter(pc.equal(runs.column(axis.path), value))
                    mean, _, _, high = _stats(
                        picked.column(metric).to_numpy(zero_copy_only=False).astype(np.float64)
                    )
                    if mean is None:
                        continue
                    x.append(positions[value])
                    y.append(mean / scale)
                    err.append(0.0 if high is None else (high - mean) / scale)
                ax.errorbar(x, y, yerr=err, marker="o", capsize=4)
                note = f" (mean over {', '.join(a.path for a in others)})"
            if not axis.numeric:
                ax.set_xticks(list(positions.values()), list(positions))
            unit = " ($)" if scale != 1 else ""
            ax.set_xlabel(axis.path)
            ax.set_ylabel(f"{metric}{unit}")
            ax.grid(True, alpha=0.3)
            ax.set_title(
                f"{title}: {metric} vs {axis.path}{note}\nmean and 95% CI over the runs at each"
                " point",
                fontsize=10,
            )
            fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.86)
            path = folder / f"{metric}-vs-{axis.slug}.png"
            fig.savefig(
                path, format="png", metadata={"Software": None}, pil_kwargs={"compress_level": 1}
            )
            written.append(path)
    return written


def _positions(axis: GridAxis) -> dict[str, float]:
    if axis.numeric:
        return {text: float(value) for text, value in zip(axis.values, axis.parsed, strict=True)}
    return {text: float(i) for i, text in enumerate(axis.values)}


def _shift(axis: GridAxis, k: int, lines: int) -> float:
    """A small sideways offset per line on a categorical axis, so error bars do not overlap."""
    if axis.numeric or lines == 1:
        return 0.0
    return (k - (lines - 1) / 2) * 0.06

"""Scenario files: what a simulation run is, validated with pydantic.

A scenario names the network (duration, poll and settlement intervals, fee), the provider groups
(capacity, pricing strategy, unit costs, poll phase, failures) and the demand streams (arrivals,
resources, max price, lifetimes or runtimes, deposits, top-ups, bid selection). Quantities are
written the way people write them and stored as exact integers:

- durations: seconds or ``90s``, ``30m``, ``2h``, ``7d`` (stored in blocks; 1 block = 1 s);
- CPU: cores or millicores (``0.5``, ``500m``; stored in millicores); sizes: ``512Mi``, ``1Gi``
  (stored in bytes);
- money: **units** (``1``, ``0.25``, ``"1.5"``; stored in micro-units, 1 unit = 1,000,000 micro),
  including pricing strategy parameters, except those in basis points (``margin_bps``).

:func:`load_scenario` reads a file and raises :class:`ScenarioError`, which lists every problem
with the dotted path of its field. :func:`resolved` gives the scenario back with every default
filled in, in the same units a person writes, so that the file it writes runs the same scenario.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from kova_core import (
    MICRO,
    PRICING_STRATEGIES,
    SELECTION_POLICIES,
    InvalidAmount,
    KovaError,
    Limits,
    PricingStrategy,
    Resources,
    SelectionPolicy,
    parse_amount,
    parse_cpu,
    parse_duration,
    parse_size,
    pricing_strategy,
    selection_policy,
)

__all__ = [
    "Arrivals",
    "DemandStream",
    "Failures",
    "NetworkLimits",
    "ProviderGroup",
    "Record",
    "Scenario",
    "ScenarioError",
    "ScenarioProblem",
    "load_scenario",
    "parse_scenario",
    "resolved",
]


# --------------------------------------------------------------------------- quantity types


def _strict(parse: Any, *, allow_zero: bool = False) -> Any:
    def check(value: object) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected a quantity, got {value!r}")
        return int(parse(value, allow_zero=allow_zero))

    return check


def _money(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected an amount in units such as 1 or 0.25, got {value!r}")
    try:
        return parse_amount(repr(value) if isinstance(value, float) else value)
    except InvalidAmount as exc:
        raise ValueError(str(exc)) from None


def units(micro: int) -> int | str:
    """Micro-units written back as units: an int when whole, else an exact decimal string."""
    whole, frac = divmod(micro, MICRO)
    if frac == 0:
        return whole
    return f"{whole}.{frac:06d}".rstrip("0")


Blocks = Annotated[int, BeforeValidator(_strict(parse_duration))]
"""A positive duration, in blocks."""
BlocksOrZero = Annotated[int, BeforeValidator(_strict(parse_duration, allow_zero=True))]
Millicores = Annotated[
    int,
    BeforeValidator(_strict(parse_cpu)),
    PlainSerializer(lambda v: f"{v}m" if v % 1000 else v // 1000),
]
Bytes = Annotated[int, BeforeValidator(_strict(parse_size))]
BytesOrZero = Annotated[int, BeforeValidator(_strict(parse_size, allow_zero=True))]
Money = Annotated[int, BeforeValidator(_money), PlainSerializer(units)]
"""An amount of money written in units, held in micro-units."""


def _rate_per_hour(value: object) -> float:
    """``12`` (per hour), ``"12/h"``, ``"0.5/m"``, ``"300/d"`` -> arrivals per hour."""
    per = {"s": 3600.0, "m": 60.0, "h": 1.0, "d": 1 / 24, "w": 1 / 168}
    if isinstance(value, bool):
        raise ValueError(f"expected a rate such as 12/h, got {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), "h"
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*/\s*([smhdw])\s*", value)
        if match is None:
            raise ValueError(f"expected a rate such as 12/h, 0.5/m or 300/d, got {value!r}")
        number, unit = float(match[1]), match[2]
    else:
        raise ValueError(f"expected a rate such as 12/h, got {value!r}")
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"the rate must be greater than 0, got {value!r}")
    return number * per[unit]


RatePerHour = Annotated[float, BeforeValidator(_rate_per_hour)]

Probability = Annotated[float, Field(ge=0, le=1)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- strategies


def _money_fields(cls: type) -> set[str]:
    """The parameters of a pricing strategy that are money (ints not in basis points)."""
    return {
        f.name
        for f in dataclasses.fields(cls)
        if str(f.type).startswith("int") and not f.name.endswith("_bps")
    }


class Pricing(BaseModel):
    """A pricing strategy by registered name, with its parameters (money in units)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    strategy: str = "fixed"

    @property
    def params(self) -> dict[str, Any]:
        """The parameters as written (money in units)."""
        return dict(self.model_extra or {})

    def build(self, costs: UnitCosts | None = None) -> PricingStrategy:
        """The strategy object, with money parameters converted to micro-units.

        ``cost-plus`` takes the group's unit costs for any cost it is not given.
        Raises ``ValueError`` naming the parameter.
        """
        cls = PRICING_STRATEGIES.get(self.strategy)
        if cls is None:
            known = ", ".join(sorted(PRICING_STRATEGIES))
            raise ValueError(f"unknown pricing strategy {self.strategy!r}; registered: {known}")
        money = _money_fields(cls)
        params: dict[str, object] = {}
        for key, value in self.params.items():
            if key in money and value is not None:
                try:
                    value = _money(value)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
            params[key] = value
        if self.strategy == "cost-plus" and costs is not None:
            for key, cost in costs.as_strategy_params().items():
                params.setdefault(key, cost)
        try:
            return pricing_strategy(self.strategy, **params)
        except KovaError as exc:
            raise ValueError(str(exc)) from None


class Selection(BaseModel):
    """A bid selection policy by registered name, with its parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    policy: str = "cheapest"

    def build(self) -> SelectionPolicy:
        """The policy object. Raises ``ValueError`` naming the parameter."""
        if self.policy not in SELECTION_POLICIES:
            known = ", ".join(sorted(SELECTION_POLICIES))
            raise ValueError(f"unknown selection policy {self.policy!r}; registered: {known}")
        try:
            return selection_policy(self.policy, **dict(self.model_extra or {}))
        except KovaError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _check(self) -> Selection:
        self.build()
        return self


# --------------------------------------------------------------------------- providers


class Capacity(_Model):
    """A provider's compute: cpu (cores), memory and storage (sizes), GPUs (a count)."""

    cpu: Millicores
    memory: Bytes
    storage: Bytes
    gpu: Annotated[int, Field(ge=0)] = 0

    def resources(self) -> Resources:
        """As the core's :class:`Resources`."""
        return Resources(cpu=self.cpu, memory=self.memory, storage=self.storage, gpu=self.gpu)


class UnitCosts(_Model):
    """What running resources costs the provider, per block: per core, per GiB, per GPU."""

    cpu: Money = 0
    memory: Money = 0
    storage: Money = 0
    gpu: Money = 0

    def as_strategy_params(self) -> dict[str, int]:
        """The non-zero costs as ``cost-plus`` parameters (micro-units)."""
        named = {
            "cpu_cost": self.cpu,
            "memory_cost": self.memory,
            "storage_cost": self.storage,
            "gpu_cost": self.gpu,
        }
        return {k: v for k, v in named.items() if v}


class Failures(_Model):
    """Exponential failures: mean time between failures and mean time to repair."""

    mtbf: Blocks
    mttr: Blocks


class ProviderGroup(_Model):
    """``count`` identical providers."""

    name: Name = ""
    count: Annotated[int, Field(ge=1, le=100_000)] = 1
    capacity: Capacity
    attributes: dict[str, str] = Field(default_factory=dict)
    pricing: Pricing = Field(default_factory=Pricing)
    costs: UnitCosts = Field(default_factory=UnitCosts)
    poll_phase: Literal["random"] | Annotated[int, Field(ge=0)] = "random"
    failures: Failures | None = None

    @model_validator(mode="after")
    def _check_pricing(self) -> ProviderGroup:
        try:
            self.pricing.build(self.costs)
        except ValueError as exc:
            raise ValueError(f"pricing: {exc}") from None
        return self


# --------------------------------------------------------------------------- demand


class DailyCycle(_Model):
    """The arrival rate swings by ``amplitude`` (0 to 1) around its mean, peaking at ``peak``
    (time of day: ``14h`` is 2 pm)."""

    amplitude: Probability
    peak: BlocksOrZero = 14 * 3600

    @field_validator("peak")
    @classmethod
    def _within_day(cls, value: int) -> int:
        if value >= 86_400:
            raise ValueError("must be a time of day, under 24h")
        return value


class PoissonArrivals(_Model):
    """Poisson arrivals at ``rate`` (per hour, or ``12/h``, ``0.5/m``, ``300/d``)."""

    process: Literal["poisson"]
    rate: RatePerHour
    daily_cycle: DailyCycle | None = None


class ScheduledArrivals(_Model):
    """Arrivals at the given blocks (for hand-made scenarios)."""

    process: Literal["scheduled"]
    at: list[BlocksOrZero] = Field(min_length=1)

    @field_validator("at")
    @classmethod
    def _sorted(cls, value: list[int]) -> list[int]:
        return sorted(value)


Arrivals = Annotated[PoissonArrivals | ScheduledArrivals, Field(discriminator="process")]


class Exponential(_Model):
    """Exponential with the given mean (rounded up to whole blocks)."""

    distribution: Literal["exponential"]
    mean: Blocks


class Fixed(_Model):
    """Always ``value``."""

    distribution: Literal["fixed"]
    value: Blocks


class Uniform(_Model):
    """Uniform on ``[low, high]`` (whole blocks)."""

    distribution: Literal["uniform"]
    low: Blocks
    high: Blocks

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self


class LogNormal(_Model):
    """Log-normal with the given median and shape ``sigma`` (rounded up to whole blocks)."""

    distribution: Literal["lognormal"]
    median: Blocks
    sigma: Annotated[float, Field(gt=0, le=5)]


Distribution = Annotated[
    Exponential | Fixed | Uniform | LogNormal, Field(discriminator="distribution")
]


class Resources_(_Model):
    """What one replica needs."""

    cpu: Millicores
    memory: Bytes
    storage: Bytes
    gpu: Annotated[int, Field(ge=0)] = 0


class Deposit(_Model):
    """Escrow for ``blocks`` blocks at the maximum price of every replica."""

    blocks: Blocks = 3600


class TopUp(_Model):
    """What a tenant does when its deployment is paused for insufficient funds.

    ``never``; or ``when-paused``: with ``probability``, after ``delay``, it deposits the debt
    plus ``blocks`` blocks at the maximum price of every replica.
    """

    policy: Literal["never", "when-paused"] = "never"
    probability: Probability = 1.0
    delay: BlocksOrZero = 300
    blocks: Blocks = 3600


class DemandStream(_Model):
    """Deployments or jobs arriving over time, all alike but for their random draws."""

    name: Name = ""
    kind: Literal["deployment", "job"] = "deployment"
    arrivals: Arrivals
    tenants: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    resources: Resources_
    attributes: dict[str, str] = Field(default_factory=dict)
    max_price: Money
    lifetime: Distribution | None = None
    runtime: Distribution | None = None
    max_runtime: Blocks | None = None
    deposit: Deposit = Field(default_factory=Deposit)
    top_up: TopUp = Field(default_factory=TopUp)
    selection: Selection = Field(default_factory=Selection)
    review_window: Blocks = 30
    patience: Blocks = 600
    on_failure: Literal["redeploy", "close"] = "redeploy"

    @field_validator("max_price")
    @classmethod
    def _positive_price(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> DemandStream:
        if self.kind == "deployment":
            if self.lifetime is None:
                raise ValueError("a deployment stream needs a lifetime distribution")
            if self.runtime is not None or self.max_runtime is not None:
                raise ValueError("runtime and max_runtime are for job streams (kind: job)")
        else:
            if self.runtime is None:
                raise ValueError("a job stream needs a runtime distribution")
            if self.lifetime is not None:
                raise ValueError("lifetime is for deployment streams; jobs have a runtime")
        return self

    def resources_needed(self) -> Resources:
        """One replica's resources, as the core's :class:`Resources`."""
        r = self.resources
        return Resources(cpu=r.cpu, memory=r.memory, storage=r.storage, gpu=r.gpu)


# --------------------------------------------------------------------------- recording


class Record(_Model):
    """What a run writes out, where a full record would be too large.

    ``bids``: ``all`` (every bid); ``top-k`` (per order, its ``top_k`` cheapest bids, ties to
    the earlier bid, and the accepted bid whatever its rank); ``aggregates`` (no bid rows: the
    orders table's ``bids``, ``bid_min_price``, ``bid_median_price`` and ``bid_max_price``
    columns, which every mode writes). Tenants' selection sees every bid in every mode.

    ``ledger``: ``all`` (every transfer, in the order it happened); ``compact`` (each lease's
    settlement transfers over consecutive rounds merged into one row per run, dated at its last
    round, and the rows sorted by block, then accounts, reason and lease): the same money, in
    far fewer rows, and it lets the fast engine defer rounds (with no fee).
    """

    bids: Literal["all", "top-k", "aggregates"] = "all"
    top_k: Annotated[int, Field(ge=1, le=1000)] = 5
    ledger: Literal["all", "compact"] = "all"


# --------------------------------------------------------------------------- the scenario


class NetworkLimits(_Model):
    """The network's limits (``kova_core.Limits``), each off unless set: the rules the live
    orchestrator applies against abuse (``kova-live serve`` turns them all on), for research
    on the market it runs. ``order_lifetime`` and ``tenant_share_bps`` make what a poll reads
    depend on other orders and on time, so the fast engine refuses them (``auto`` runs such a
    scenario on the exact engine)."""

    min_deposit_blocks: BlocksOrZero = 0
    max_replicas: Annotated[int, Field(ge=1, lt=2**63)] | None = None
    max_open_orders: Annotated[int, Field(ge=1, lt=2**63)] | None = None
    largest_provider: bool = False
    order_lifetime: Blocks | None = None
    tenant_share_bps: Annotated[int, Field(ge=1, le=10_000)] | None = None

    def core(self) -> Limits:
        """The core's :class:`kova_core.Limits` of these settings."""
        return Limits(**self.model_dump())

    @property
    def read_by_polls(self) -> list[str]:
        """The limits set that the fast engine cannot defer polls under."""
        return [k for k in ("order_lifetime", "tenant_share_bps") if getattr(self, k) is not None]


class Scenario(_Model):
    """One simulation: the network, its providers and its demand."""

    name: Name
    description: str = ""
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    duration: Blocks
    poll_interval: Blocks = 15
    settlement_interval: Blocks = 60
    fee_bps: Annotated[int, Field(ge=0, le=10_000)] = 0
    limits: NetworkLimits = Field(default_factory=NetworkLimits)
    providers: list[ProviderGroup] = Field(min_length=1)
    demand: list[DemandStream] = Field(min_length=1)
    record: Record = Field(default_factory=Record)

    @model_validator(mode="after")
    def _names_and_phases(self) -> Scenario:
        groups = [
            g.model_copy(update={"name": g.name or f"group-{i}"})
            for i, g in enumerate(self.providers)
        ]
        streams = [
            s.model_copy(update={"name": s.name or f"stream-{i}"})
            for i, s in enumerate(self.demand)
        ]
        for what, items in (("provider group", groups), ("demand stream", streams)):
            names = [x.name for x in items]
            for name in names:
                if names.count(name) > 1:
                    raise ValueError(f"two {what}s are named {name!r}; names must differ")
        for i, group in enumerate(groups):
            phase = group.poll_phase
            if isinstance(phase, int) and phase >= self.poll_interval:
                raise ValueError(
                    f"providers[{i}].poll_phase: must be less than poll_interval"
                    f" ({self.poll_interval}), got {phase}"
                )
        object.__setattr__(self, "providers", groups)
        object.__setattr__(self, "demand", streams)
        return self


# --------------------------------------------------------------------------- loading and errors


@dataclasses.dataclass(frozen=True, slots=True)
class ScenarioProblem:
    """One problem in a scenario: the dotted path of the field and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ScenarioError(Exception):
    """A scenario that cannot run; ``problems`` lists each with its field's path."""

    def __init__(self, source: str, problems: list[ScenarioProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{source}: {count}\n{lines}")


_MESSAGES = {
    "extra_forbidden": "unknown field",
    "string_pattern_mismatch": "use letters, digits, '.', '_' and '-' (it names the run folder)",
    "missing": "required field is missing",
}

# pydantic puts the name of a union member in a location; readers want the field path only
_UNION_TAGS = {
    "poisson", "scheduled", "exponential", "fixed", "uniform", "lognormal",
    "int", "literal['random']",
}  # fmt: skip


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS or part.startswith(("function-", "constrained-")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _problems(error: ValidationError) -> list[ScenarioProblem]:
    problems = []
    for item in error.errors(include_url=False):
        message = _MESSAGES.get(item["type"], item["msg"])
        message = message.removeprefix("Value error, ")
        path = _path(item["loc"])
        # a validator's "field: message" names a field below the one pydantic located
        while (head := re.match(r"([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+)*): ", message)) is not None:
            path = f"{path}.{head[1]}" if path else head[1]
            message = message[head.end() :]
        problems.append(ScenarioProblem(path, message))
    unique = list(dict.fromkeys(problems))
    return unique


def parse_scenario(data: object, source: str = "scenario") -> Scenario:
    """Validate a loaded scenario mapping. Raises :class:`ScenarioError`."""
    if not isinstance(data, Mapping):
        kind = type(data).__name__ if data is not None else "an empty document"
        raise ScenarioError(source, [ScenarioProblem("", f"expected a mapping, got {kind}")])
    try:
        return Scenario.model_validate(dict(data))
    except ValidationError as exc:
        raise ScenarioError(source, _problems(exc)) from None


def load_scenario(path: str | Path, *, seed: int | None = None) -> Scenario:
    """Read and validate a scenario file; ``seed`` overrides the file's.

    Raises :class:`ScenarioError` (also for a missing file or bad YAML).
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(source, [ScenarioProblem("", f"cannot read: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(
            source, [ScenarioProblem("", f"{where}invalid YAML: {problem}")]
        ) from None
    scenario = parse_scenario(data, source)
    if seed is not None:
        if seed < 0 or seed >= 2**63:
            raise ScenarioError(source, [ScenarioProblem("seed", "must be from 0 to 2**63-1")])
        scenario = scenario.model_copy(update={"seed": seed})
    return scenario


def resolved(scenario: Scenario) -> dict[str, Any]:
    """The scenario with every default filled in, as a plain mapping that validates to the
    same scenario (durations in blocks, CPU in cores or millicores, sizes in bytes, money in
    units)."""
    data = scenario.model_dump(mode="json", exclude_none=True)
    for i, group in enumerate(scenario.providers):
        strategy = group.pricing.build(group.costs)
        money = _money_fields(type(strategy))
        params: dict[str, Any] = {"strategy": group.pricing.strategy}
        for f in dataclasses.fields(strategy):  # type: ignore[arg-type]
            value = getattr(strategy, f.name)
            if value is None:
                continue
            params[f.name] = units(value) if f.name in money else _plain(value)
        data["providers"][i]["pricing"] = params
    for i, stream in enumerate(scenario.demand):
        policy = stream.selection.build()
        params = {"policy": stream.selection.policy}
        for f in dataclasses.fields(policy):  # type: ignore[arg-type]
            params[f.name] = _plain(getattr(policy, f.name))
        data["demand"][i]["selection"] = params
    return data


def _plain(value: object) -> object:
    from fractions import Fraction

    if isinstance(value, Fraction):
        return int(value) if value.denominator == 1 else str(value)
    return value
